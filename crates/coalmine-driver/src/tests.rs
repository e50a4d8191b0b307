//! The session's schedule and a turn's order, with an injected clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coalmine_analysis::eprocess::Interval;
use coalmine_analysis::judge::Observed;
use coalmine_core::plan::Plan;
use coalmine_core::rollout::{Action, Decision, Observation};
use coalmine_core::status::{CanaryStatus, Phase};
use coalmine_core::{Percent, Time};
use coalmine_providers::Context;
use tokio::time::Instant;

use crate::session::{self, Session, Source};
use crate::turn::{Actuator, Turn, turn};

/// A source that returns fixed counts and remembers the shares it was
/// tagged with (through the judge's report).
struct Fixed {
    collected: Arc<Mutex<u32>>,
}

impl Source for Fixed {
    async fn collect(&mut self, _ctx: &Context) -> Observed {
        if let Ok(mut n) = self.collected.lock() {
            *n += 1;
        }
        Observed::Counts(Interval {
            canary_total: 100,
            canary_bad: 0,
            stable_total: 900,
            stable_bad: 0,
            canary_share: None,
        })
    }
}

fn plan(interval: &str) -> Plan {
    let text = format!(
        "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata: {{name: t}}
spec:
  upstreams:
    stable: [http://127.0.0.1:1]
    canary: [http://127.0.0.1:2]
  steps:
    - setWeight: 10
    - pause: {{duration: 1h}}
  analysis:
    interval: {interval}
    metrics:
      - name: errors
        builtin: errors
"
    );
    match coalmine_core::validate::load(&text) {
        Ok((_, plan, _)) => plan,
        Err(p) => panic!("{p:?}"),
    }
}

fn ctx() -> Context {
    Context {
        name: "t".into(),
        namespace: String::new(),
        interval: Duration::from_secs(10),
    }
}

fn rolling(revision: &str) -> CanaryStatus {
    CanaryStatus {
        phase: Phase::Progressing,
        canary_revision: Some(revision.to_owned()),
        ..CanaryStatus::default()
    }
}

fn session_for(
    plan: &Plan,
    status: &CanaryStatus,
    clock: Instant,
) -> (Session<Fixed>, Arc<Mutex<u32>>) {
    let collected = Arc::new(Mutex::new(0));
    let mut slot = None;
    let made: Result<(), String> = session::refresh(
        &mut slot,
        plan,
        status,
        0.1,
        Time::from_unix_millis(0),
        clock,
        "t",
        |_| {
            Ok(vec![Fixed {
                collected: collected.clone(),
            }])
        },
    );
    assert!(made.is_ok());
    (slot.expect("a rollout under way gets a session"), collected)
}

#[tokio::test]
async fn a_stalled_loop_skips_the_missed_intervals() {
    let plan = plan("10s");
    let status = rolling("r1");
    let t0 = Instant::now();
    let (mut s, collected) = session_for(&plan, &status, t0);
    let now = Time::from_unix_millis(0);
    let secs = Duration::from_secs;
    assert!(s.collect_if_due(&ctx(), now, t0 + secs(9)).await.is_none());
    assert!(s.collect_if_due(&ctx(), now, t0 + secs(10)).await.is_some());
    assert_eq!(s.next(), t0 + secs(20));
    // Stalled for almost four intervals: one collection, then the next
    // instant on the grid after now.
    let late = t0 + secs(47);
    assert!(s.collect_if_due(&ctx(), now, late).await.is_some());
    assert_eq!(s.next(), t0 + secs(50));
    assert!(s.collect_if_due(&ctx(), now, late).await.is_none());
    assert!(s.collect_if_due(&ctx(), now, t0 + secs(49)).await.is_none());
    assert!(s.collect_if_due(&ctx(), now, t0 + secs(50)).await.is_some());
    assert_eq!(s.next(), t0 + secs(60));
    assert_eq!(s.intervals(), 3);
    assert_eq!(collected.lock().map(|n| *n).unwrap_or(0), 3);
}

#[tokio::test]
async fn a_new_revision_a_retry_or_an_edit_gets_a_new_judge() {
    let plan_a = plan("10s");
    let status = rolling("r1");
    let t0 = Instant::now();
    let (s, _) = session_for(&plan_a, &status, t0);
    let analysis = plan_a.analysis.as_ref().expect("analysis");
    assert!(s.judges(analysis, &status));
    assert!(!s.judges(analysis, &rolling("r2")));
    let retried = CanaryStatus {
        rollout_started_at: Some(Time::from_unix_millis(5_000)),
        ..rolling("r1")
    };
    assert!(!s.judges(analysis, &retried));
    let edited = plan("20s");
    assert!(!s.judges(edited.analysis.as_ref().expect("analysis"), &status));
    // The same settings, loaded again, are the same settings.
    assert!(s.judges(plan("10s").analysis.as_ref().expect("analysis"), &status));
    // No rollout under way: no session.
    let mut slot = Some(s);
    let idle = CanaryStatus {
        phase: Phase::Promoted,
        ..rolling("r1")
    };
    let kept: Result<(), String> = session::refresh(
        &mut slot,
        &plan_a,
        &idle,
        0.1,
        Time::from_unix_millis(0),
        t0,
        "t",
        |_| Ok(Vec::<Fixed>::new()),
    );
    assert!(kept.is_ok());
    assert!(slot.is_none());
}

#[tokio::test]
async fn the_judge_resumes_from_the_saved_evidence() {
    let plan = plan("10s");
    let status = rolling("r1");
    let t0 = Instant::now();
    let (mut s, _) = session_for(&plan, &status, t0);
    let judged = s
        .collect_if_due(
            &ctx(),
            Time::from_unix_millis(0),
            t0 + Duration::from_secs(10),
        )
        .await
        .expect("due");
    let saved = CanaryStatus {
        judge_state: judged.state,
        ..status
    };
    let (resumed, _) = session_for(&plan, &saved, t0);
    assert_eq!(resumed.intervals(), 1);
}

/// Records what the turn asked for, in order.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
}

impl Actuator for Recorder {
    type Error = String;

    fn share(&self, weight: Percent) -> f64 {
        f64::from(weight.get()) / 100.0
    }

    fn amend(&mut self, decision: &mut Decision, _now: Time) {
        self.log.push(format!("amend {:?}", decision.status.phase));
    }

    async fn persist(&mut self, status: &CanaryStatus, changed: bool) -> Result<(), String> {
        self.log.push(format!(
            "persist changed={changed} evidence={}",
            status.judge_state.is_some()
        ));
        Ok(())
    }

    async fn act(&mut self, decision: &Decision) -> Result<(), String> {
        for a in &decision.actions {
            let name = match a {
                Action::SetRoutes(r) => format!("routes {}", r.canary_weight),
                Action::EnsureCanary { .. } => "ensure".to_owned(),
                Action::PromoteStable { .. } => "promote".to_owned(),
                Action::ScaleDownCanary => "scale down".to_owned(),
                Action::Event(e) => format!("event {}", e.reason),
            };
            self.log.push(name);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_turn_stores_before_it_acts_and_keeps_the_evidence() {
    let plan = plan("10s");
    let t0 = Instant::now();
    let now = Time::from_unix_millis(1_000_000);
    let observation = |ready| Observation {
        desired_revision: "r1".into(),
        canary_ready: ready,
        canary_ready_at: None,
        canary_gone: false,
        canary_down: None,
        stable_ready_revision: Some("r0".into()),
        analysis: None,
        command: None,
    };
    let start = CanaryStatus {
        stable_revision: Some("r0".into()),
        ..CanaryStatus::default()
    };
    let mut session: Option<Session<Fixed>> = None;
    let mut actuator = Recorder::default();
    let context = ctx();
    // The first turn starts the rollout; no session yet.
    let first = turn(
        Turn {
            plan: &plan,
            status: &start,
            observation: observation(true),
            ctx: &context,
            now,
            clock: t0,
        },
        &mut session,
        &mut actuator,
    )
    .await
    .expect("local actuator");
    let status = first.decision.status.clone();
    assert!(session::judged_phase(status.phase), "{status:?}");
    let persisted = actuator
        .log
        .iter()
        .position(|l| l.starts_with("persist changed=true"));
    let acted = actuator
        .log
        .iter()
        .position(|l| !l.starts_with("persist") && !l.starts_with("amend"));
    assert!(
        persisted.is_some() && persisted < acted,
        "{:?}",
        actuator.log
    );
    // The rollout under way gets a session; an interval later its report
    // and evidence go into the stored status.
    let collected = Arc::new(Mutex::new(0));
    let made: Result<(), String> =
        session::refresh(&mut session, &plan, &status, 0.1, now, t0, "t", |_| {
            Ok(vec![Fixed {
                collected: collected.clone(),
            }])
        });
    assert!(made.is_ok());
    actuator.log.clear();
    let second = turn(
        Turn {
            plan: &plan,
            status: &status,
            observation: observation(true),
            ctx: &context,
            now,
            clock: t0 + Duration::from_secs(10),
        },
        &mut session,
        &mut actuator,
    )
    .await
    .expect("local actuator");
    assert!(second.judged.is_some());
    assert!(second.decision.status.judge_state.is_some());
    assert_eq!(second.next_collection, Some(t0 + Duration::from_secs(20)));
    assert!(
        actuator
            .log
            .iter()
            .any(|l| l == "persist changed=true evidence=true"),
        "{:?}",
        actuator.log
    );
}

#[tokio::test]
async fn a_share_set_by_a_decision_counts_from_the_next_interval_only_where_it_lands_at_once() {
    let plan = plan("10s");
    let status = rolling("r1");
    let t0 = Instant::now();
    let secs = Duration::from_secs;
    let now = Time::from_unix_millis(0);
    let left_out = |j: &crate::Judged| {
        j.report.metrics[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("weight changed"))
    };
    // The local proxy: the share set right after a collection is the next
    // interval's from its start.
    let (mut s, _) = session_for(&plan, &status, t0);
    assert!(s.collect_if_due(&ctx(), now, t0 + secs(10)).await.is_some());
    s.start_interval(0.2);
    s.follow_share(0.2);
    let next = s
        .collect_if_due(&ctx(), now, t0 + secs(20))
        .await
        .expect("due");
    assert!(!left_out(&next), "{:?}", next.report.metrics);
    // Kubernetes: the interval started with the old share, and the new one
    // lands during it: it is left out.
    let (mut s, _) = session_for(&plan, &status, t0);
    assert!(s.collect_if_due(&ctx(), now, t0 + secs(10)).await.is_some());
    s.start_interval(0.1);
    s.follow_share(0.2);
    let next = s
        .collect_if_due(&ctx(), now, t0 + secs(20))
        .await
        .expect("due");
    assert!(left_out(&next), "{:?}", next.report.metrics);
}
