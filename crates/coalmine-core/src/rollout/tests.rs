//! Scenario tests of the state machine with an injected clock.

use super::*;
use crate::status::MetricStatus;

const T0: i64 = 1_795_420_800_000;

/// A rollout under test: the plan, the status as a store would hold it, the
/// world as observed, and a clock.
struct Run {
    plan: Plan,
    status: CanaryStatus,
    obs: Observation,
    now: Time,
    last: Option<Decision>,
}

fn plan_from(spec: &str) -> Plan {
    let text = format!(
        "apiVersion: coalmine.dev/v1alpha1\nkind: Canary\nmetadata: {{name: app}}\nspec:\n  upstreams: {{stable: [http://127.0.0.1:9001], canary: [http://127.0.0.1:9002]}}\n{spec}"
    );
    match crate::validate::load(&text) {
        Ok((_, plan, _)) => plan,
        Err(p) => panic!("bad test plan: {p:?}"),
    }
}

const BRIEF_STEPS: &str = "  steps:
    - setWeight: 5
    - pause: {duration: 1m}
    - setWeight: 25
    - analysis: {timeout: 10m}
    - setHeaderRoute: {match: [{header: x-canary, value: always}]}
    - setMirror: {percent: 20}
    - setWeight: 50
    - pause: {}
  sessionAffinity: {cookie: coalmine-track}
  analysis:
    metrics:
      - {name: errors, builtin: errors}
";

impl Run {
    fn new(spec: &str) -> Run {
        Run {
            plan: plan_from(spec),
            status: CanaryStatus::default(),
            obs: Observation {
                desired_revision: "r1".into(),
                canary_ready: false,
                canary_ready_at: None,
                canary_gone: true,
                canary_down: None,
                stable_ready_revision: Some("r1".into()),
                analysis: None,
                command: None,
            },
            now: Time::from_unix_millis(T0),
            last: None,
        }
    }

    /// A run whose stable is r1, with r2 just asked for and its canary ready.
    fn started(spec: &str) -> Run {
        let mut run = Run::new(spec);
        run.tick();
        run.obs.desired_revision = "r2".into();
        run.obs.canary_ready = true;
        run.obs.canary_gone = false;
        run.tick();
        run
    }

    fn tick(&mut self) -> &Decision {
        let d = decide(&self.plan, &self.status, &self.obs, self.now);
        // Every decision is a fixed point: deciding again changes nothing.
        let again = decide(&self.plan, &d.status, &self.obs, self.now);
        assert_eq!(again.status, d.status, "not idempotent");
        assert_eq!(
            again.events().count(),
            0,
            "events repeated: {:?}",
            again.actions
        );
        // And the status survives a round trip through JSON (a restart).
        let json = serde_json::to_string(&d.status).expect("status serializes");
        let back: CanaryStatus = serde_json::from_str(&json).expect("status parses");
        assert_eq!(back, d.status);
        self.status = d.status.clone();
        self.last = Some(d);
        self.last.as_ref().expect("just set")
    }

    fn wait(&mut self, d: Duration) -> &Decision {
        self.now = self.now.plus(d);
        self.tick()
    }

    fn command(&mut self, id: &str, kind: CommandKind) -> &Decision {
        self.obs.command = Some(Command {
            id: id.into(),
            kind,
        });
        self.tick()
    }

    fn report(&mut self, verdict: Verdict, metrics: Vec<MetricStatus>) {
        self.obs.analysis = Some(AnalysisReport {
            revision: self.status.canary_revision.clone().unwrap_or_default(),
            since: self.status.rollout_started_at.unwrap_or(self.now),
            at: self.now,
            verdict,
            metrics,
        });
    }

    fn routes(&self) -> Routes {
        self.last
            .as_ref()
            .and_then(Decision::routes)
            .cloned()
            .expect("routes every time")
    }

    fn actions(&self) -> &[Action] {
        self.last
            .as_ref()
            .map(|d| d.actions.as_slice())
            .unwrap_or_default()
    }

    fn reasons(&self) -> Vec<&'static str> {
        self.last
            .as_ref()
            .map(|d| d.events().map(|e| e.reason).collect())
            .unwrap_or_default()
    }
}

fn failing_errors() -> Vec<MetricStatus> {
    vec![MetricStatus {
        name: "errors".into(),
        verdict: Verdict::Fail,
        canary_rate: Some(0.011),
        stable_rate: Some(0.005),
        ratio: Some(2.2),
        ratio_interval: Some([1.3, 4.1]),
        e_value: Some(25.3),
        e_threshold: Some(20.0),
        canary_events: Some(41),
        canary_requests: Some(3700),
        ..MetricStatus::default()
    }]
}

#[test]
fn first_sight_adopts_the_revision_as_stable() {
    let mut run = Run::new(BRIEF_STEPS);
    run.tick();
    assert_eq!(run.status.phase, Phase::Idle);
    assert_eq!(run.status.stable_revision.as_deref(), Some("r1"));
    assert_eq!(run.reasons(), vec!["Initialized"]);
    assert_eq!(run.routes(), Routes::all_stable());
    assert!(run.actions().contains(&Action::ScaleDownCanary));
    run.tick();
    assert!(run.reasons().is_empty());
}

#[test]
fn the_brief_rollout_end_to_end() {
    let mut run = Run::new(BRIEF_STEPS);
    run.tick();
    run.obs.desired_revision = "r2".into();
    run.obs.canary_gone = false;
    let d = run.tick().clone();
    assert_eq!(run.status.phase, Phase::Progressing);
    assert_eq!(run.status.canary_revision.as_deref(), Some("r2"));
    assert!(d.actions.contains(&Action::EnsureCanary {
        revision: "r2".into()
    }));
    assert_eq!(
        run.routes().canary_weight,
        0,
        "no traffic before the canary is ready"
    );
    assert!(
        run.status
            .message
            .contains("waiting for the canary to be ready"),
        "{}",
        run.status.message
    );

    run.obs.canary_ready = true;
    run.wait(Duration::from_secs(5));
    assert_eq!(run.status.phase, Phase::Paused, "at the 1m pause");
    assert_eq!((run.status.step, run.status.weight.get()), (1, 5));
    assert_eq!(
        run.routes().sticky_cookie.as_deref(),
        Some("coalmine-track")
    );
    assert_eq!(
        run.last.as_ref().unwrap().requeue_after,
        Some(Duration::from_mins(1))
    );

    run.wait(Duration::from_secs(59));
    assert_eq!(run.status.step, 1, "the pause is not over yet");
    run.wait(Duration::from_secs(1));
    assert_eq!((run.status.step, run.status.weight.get()), (3, 25));
    assert_eq!(run.status.phase, Phase::Progressing);

    // A PASS evaluated before the gate opened does not count.
    let mut metrics = failing_errors();
    metrics[0].verdict = Verdict::Pass;
    run.report(Verdict::Pass, metrics.clone());
    run.tick();
    assert_eq!(run.status.step, 3);
    run.now = run.now.plus(Duration::from_secs(10));
    run.report(
        Verdict::Running,
        vec![MetricStatus {
            verdict: Verdict::Running,
            e_value: Some(7.9),
            e_threshold: Some(20.0),
            ..metrics[0].clone()
        }],
    );
    run.tick();
    assert_eq!(
        run.status.message,
        "step 3/8: weight 25%, waiting for evidence (errors evidence 7.9 of 20)"
    );
    run.now = run.now.plus(Duration::from_secs(10));
    run.report(Verdict::Pass, metrics);
    run.tick();
    assert_eq!(
        run.reasons(),
        vec!["AnalysisPassed", "HeaderRouteSet", "MirrorSet", "WeightSet"]
    );
    assert_eq!(
        (
            run.status.step,
            run.status.weight.get(),
            run.status.mirror_percent.get()
        ),
        (7, 50, 20)
    );
    assert_eq!(
        run.status.phase,
        Phase::Paused,
        "pause {{}} waits for promote"
    );
    let routes = run.routes();
    assert_eq!(routes.header_routes.len(), 1);
    assert_eq!(routes.mirror_percent, 20);

    run.wait(Duration::from_mins(60));
    assert_eq!(run.status.step, 7, "an open pause never times out");
    run.command("c1", CommandKind::Promote);
    assert_eq!(run.status.phase, Phase::Promoting);
    assert!(
        run.last
            .as_ref()
            .unwrap()
            .actions
            .contains(&Action::PromoteStable {
                revision: "r2".into()
            })
    );
    assert_eq!(
        run.routes().canary_weight,
        50,
        "traffic stays while stable rolls out"
    );

    run.obs.stable_ready_revision = Some("r2".into());
    run.tick();
    assert_eq!(run.status.phase, Phase::Promoted);
    assert_eq!(run.status.stable_revision.as_deref(), Some("r2"));
    assert_eq!(run.status.canary_revision, None);
    assert_eq!(run.routes(), Routes::all_stable());
    assert!(run.actions().contains(&Action::ScaleDownCanary));
    assert_eq!(run.reasons(), vec!["Promoted"]);
}

#[test]
fn fail_rolls_back_at_once_with_the_numbers() {
    let mut run = Run::started(BRIEF_STEPS);
    assert_eq!(run.status.weight, 5);
    run.now = run.now.plus(Duration::from_secs(10));
    run.report(Verdict::Fail, failing_errors());
    run.tick();
    assert_eq!(run.status.phase, Phase::RollingBack);
    assert_eq!(run.routes(), Routes::all_stable());
    let d = run.last.as_ref().unwrap();
    assert_eq!(
        d.actions[0],
        Action::SetRoutes(Routes::all_stable()),
        "routes first"
    );
    let msg = &run.status.rollback.as_ref().unwrap().message;
    assert_eq!(
        msg,
        "metric errors failed: canary 1.1% vs stable 0.50%, ratio 2.2 (1.3–4.1), evidence 25 of 20 (41 bad of 3700 canary requests)"
    );
    assert_eq!(run.reasons(), vec!["AnalysisFailed"]);
    run.obs.canary_gone = true;
    run.tick();
    assert_eq!(run.status.phase, Phase::RolledBack);
    assert!(
        run.status
            .message
            .starts_with("rolled back revision r2: metric errors failed")
    );
    let c = run
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "AnalysisFailed")
    );
    // It stays rolled back: the same revision is not tried again by itself.
    run.wait(Duration::from_mins(30));
    assert_eq!(run.status.phase, Phase::RolledBack);
}

#[test]
fn fail_also_rolls_back_a_paused_rollout() {
    let mut run = Run::started(BRIEF_STEPS);
    run.command("p", CommandKind::Pause);
    assert_eq!(run.status.phase, Phase::Paused);
    run.now = run.now.plus(Duration::from_secs(1));
    run.report(Verdict::Fail, failing_errors());
    run.tick();
    assert_eq!(run.status.phase, Phase::RollingBack);
}

#[test]
fn a_report_from_the_instant_a_rollout_starts_is_no_evidence() {
    // Seen by the property tests: a FAIL for r2 collected and evaluated at
    // the very millisecond the r2 rollout (re)starts must not roll it back.
    let mut run = Run::started(BRIEF_STEPS);
    run.now = run.now.plus(Duration::from_secs(5));
    run.obs.desired_revision = "r3".into();
    run.obs.analysis = Some(AnalysisReport {
        revision: "r3".into(),
        since: run.now,
        at: run.now,
        verdict: Verdict::Fail,
        metrics: vec![],
    });
    run.tick();
    assert_eq!(run.status.canary_revision.as_deref(), Some("r3"));
    assert!(run.status.phase.canary_live(), "{:?}", run.status.phase);
}

#[test]
fn a_report_for_another_revision_or_an_older_run_is_ignored() {
    let mut run = Run::started(BRIEF_STEPS);
    run.obs.analysis = Some(AnalysisReport {
        revision: "r9".into(),
        since: run.now,
        at: run.now,
        verdict: Verdict::Fail,
        metrics: vec![],
    });
    run.tick();
    assert_eq!(run.status.phase, Phase::Paused);
    run.obs.analysis = Some(AnalysisReport {
        revision: "r2".into(),
        since: Time::from_unix_millis(T0 - 1),
        at: run.now,
        verdict: Verdict::Fail,
        metrics: vec![],
    });
    run.tick();
    assert_eq!(
        run.status.phase,
        Phase::Paused,
        "collected before this rollout began"
    );
}

#[test]
fn a_newer_revision_restarts_from_the_first_step() {
    let mut run = Run::started(BRIEF_STEPS);
    run.wait(Duration::from_mins(1));
    assert_eq!(run.status.weight, 25);
    run.obs.desired_revision = "r3".into();
    run.obs.canary_ready = false;
    run.wait(Duration::from_secs(1));
    assert_eq!(run.status.canary_revision.as_deref(), Some("r3"));
    assert_eq!((run.status.step, run.status.weight.get()), (0, 0));
    assert_eq!(run.reasons(), vec!["RolloutRestarted"]);
    assert_eq!(run.status.stable_revision.as_deref(), Some("r1"));
}

#[test]
fn going_back_to_the_stable_revision_cancels() {
    let mut run = Run::started(BRIEF_STEPS);
    run.obs.desired_revision = "r1".into();
    run.tick();
    assert_eq!(run.status.phase, Phase::Idle);
    assert_eq!(run.status.canary_revision, None);
    assert_eq!(run.routes(), Routes::all_stable());
    assert_eq!(run.reasons(), vec!["RolloutCancelled"]);
}

#[test]
fn a_command_acts_once() {
    let mut run = Run::started(BRIEF_STEPS);
    assert_eq!(run.status.step, 1);
    run.command("c1", CommandKind::Promote);
    assert_eq!(
        run.status.step, 3,
        "pause ended, weight 25 set, at the gate"
    );
    run.tick();
    run.wait(Duration::from_secs(1));
    assert_eq!(run.status.step, 3, "the same command again does nothing");
    run.command("c2", CommandKind::Promote);
    assert_eq!(run.status.step, 7, "the gate was skipped");
}

/// The `replicas` router: the canary's pods are the weight's share, so
/// readiness is observed at a weight, and a new weight waits for its pods
/// before the next step (a pause, a promotion by a person) is taken.
#[test]
fn a_new_weight_waits_for_the_pods_that_serve_it() {
    let mut run = Run::new(
        "  steps:\n    - setWeight: 25\n    - pause: {}\n    - setWeight: 50\n    - pause: {}\n",
    );
    run.tick();
    run.obs.desired_revision = "r2".into();
    run.obs.canary_gone = false;
    run.obs.canary_ready = true;
    run.obs.canary_ready_at = Some(Percent::ZERO);
    run.tick();
    assert_eq!(
        (run.status.phase, run.status.step, run.status.weight.get()),
        (Phase::Progressing, 1, 25),
        "{}",
        run.status.message
    );
    assert!(
        run.status
            .message
            .contains("waiting for the canary to be ready")
    );
    // Pods at the old weight are still no answer.
    run.wait(Duration::from_secs(1));
    assert_eq!((run.status.phase, run.status.step), (Phase::Progressing, 1));
    run.obs.canary_ready_at = Some(run.status.weight);
    run.wait(Duration::from_secs(1));
    assert_eq!((run.status.phase, run.status.step), (Phase::Paused, 1));
    run.command("c1", CommandKind::Promote);
    assert_eq!(
        (run.status.phase, run.status.step, run.status.weight.get()),
        (Phase::Progressing, 3, 50),
        "a promote passes the pause and sets 50%, then waits"
    );
    run.obs.canary_ready_at = Some(run.status.weight);
    run.wait(Duration::from_secs(1));
    assert_eq!((run.status.phase, run.status.step), (Phase::Paused, 3));
    // A canary that serves any weight goes on at once, as before.
    let mut run = Run::new("  steps:\n    - setWeight: 25\n    - pause: {}\n");
    run.tick();
    run.obs.desired_revision = "r2".into();
    run.obs.canary_gone = false;
    run.obs.canary_ready = true;
    run.tick();
    assert_eq!((run.status.phase, run.status.step), (Phase::Paused, 1));
}

#[test]
fn inconclusive_gates_follow_on_inconclusive() {
    let steps = "  steps:\n    - setWeight: 10\n    - analysis: {timeout: 1m}\n    - setWeight: 20\n  analysis:\n    metrics: [{name: errors, builtin: errors}]\n";
    for (policy, phase) in [
        ("pause", Phase::Paused),
        ("rollback", Phase::RollingBack),
        ("promote", Phase::Promoting),
    ] {
        let mut run = Run::started(&format!("{steps}  onInconclusive: {policy}\n"));
        run.now = run.now.plus(Duration::from_secs(30));
        run.report(Verdict::NoData, vec![]);
        run.tick();
        assert_eq!(run.status.phase, Phase::Progressing, "NoData is not a pass");
        assert_eq!(
            run.last.as_ref().unwrap().requeue_after,
            Some(Duration::from_secs(30))
        );
        run.wait(Duration::from_secs(30));
        assert_eq!(run.status.phase, phase, "{policy}");
        assert!(
            run.reasons().contains(&"AnalysisInconclusive"),
            "{policy}: {:?}",
            run.reasons()
        );
    }
    // After an inconclusive pause, resume gives the gate its whole time again.
    let mut run = Run::started(&format!("{steps}  onInconclusive: pause\n"));
    run.wait(Duration::from_mins(1));
    assert_eq!(
        run.status.pause.as_ref().map(|p| p.reason),
        Some(PauseReason::Inconclusive)
    );
    run.command("r", CommandKind::Resume);
    assert_eq!(run.status.phase, Phase::Progressing);
    run.wait(Duration::from_secs(59));
    assert_eq!(run.status.phase, Phase::Progressing);
    run.wait(Duration::from_secs(1));
    assert_eq!(run.status.phase, Phase::Paused);
}

#[test]
fn a_canary_that_never_gets_ready_fails_at_the_deadline() {
    let mut run = Run::new(&format!("{BRIEF_STEPS}  progressDeadline: 2m\n"));
    run.tick();
    run.obs.desired_revision = "r2".into();
    run.obs.canary_gone = false;
    run.tick();
    assert_eq!(
        run.last.as_ref().unwrap().requeue_after,
        Some(Duration::from_mins(2))
    );
    run.wait(Duration::from_secs(119));
    assert_eq!(run.status.phase, Phase::Progressing);
    run.wait(Duration::from_secs(1));
    assert_eq!(run.status.phase, Phase::RollingBack);
    assert_eq!(run.reasons(), vec!["ProgressDeadlineExceeded"]);
    run.obs.canary_gone = true;
    run.tick();
    assert_eq!(run.status.phase, Phase::Failed);
    // Readiness that comes back in time resets the clock.
    let mut run = Run::started(&format!("{BRIEF_STEPS}  progressDeadline: 2m\n"));
    run.obs.canary_ready = false;
    run.wait(Duration::from_secs(100));
    run.obs.canary_ready = true;
    run.wait(Duration::from_secs(10));
    run.obs.canary_ready = false;
    run.wait(Duration::from_secs(100));
    assert!(run.status.phase.canary_live());
}

#[test]
fn an_unreachable_canary_is_rolled_back_at_once_with_the_reason() {
    let mut run = Run::started(BRIEF_STEPS);
    run.wait(Duration::from_secs(5));
    assert!(run.status.weight > 0);
    run.obs.canary_ready = false;
    run.obs.canary_down = Some("http://127.0.0.1:9002 refuses connections".into());
    run.wait(Duration::from_secs(1));
    assert_eq!(run.status.phase, Phase::RollingBack);
    assert_eq!(run.status.weight, 0);
    assert_eq!(run.reasons(), vec!["CanaryUnreachable"]);
    let rollback = run.status.rollback.clone().expect("a rollback");
    assert_eq!(rollback.reason, RollbackReason::CanaryUnreachable);
    assert_eq!(
        rollback.message,
        "http://127.0.0.1:9002 refuses connections"
    );
    run.obs.canary_gone = true;
    run.tick();
    assert_eq!(run.status.phase, Phase::RolledBack);
    // Once rolled back, a canary still down changes nothing more.
    run.wait(Duration::from_secs(5));
    assert_eq!(run.status.phase, Phase::RolledBack);
}

#[test]
fn abort_then_retry() {
    let mut run = Run::started(BRIEF_STEPS);
    run.command("a", CommandKind::Abort);
    assert_eq!(run.status.phase, Phase::RollingBack);
    assert_eq!(run.routes(), Routes::all_stable());
    run.obs.canary_gone = true;
    run.tick();
    assert_eq!(run.status.phase, Phase::RolledBack);
    run.command("p", CommandKind::Promote);
    assert_eq!(run.reasons(), vec!["CommandIgnored"]);
    run.obs.canary_gone = false;
    run.wait(Duration::from_secs(1));
    run.command("r", CommandKind::Retry);
    assert_eq!(run.status.phase, Phase::Paused);
    assert_eq!((run.status.step, run.status.weight.get()), (1, 5));
    assert_eq!(run.status.rollback, None);
    assert_eq!(run.reasons(), vec!["Retry", "WeightSet"]);
}

#[test]
fn promote_full_skips_everything() {
    let mut run = Run::started(BRIEF_STEPS);
    run.command("f", CommandKind::PromoteFull);
    assert_eq!(run.status.phase, Phase::Promoting);
    assert_eq!(run.status.step, 8);
    run.obs.stable_ready_revision = Some("r2".into());
    run.tick();
    assert_eq!(run.status.phase, Phase::Promoted);
}

#[test]
fn a_person_pause_holds_timers_and_resume_restarts_them() {
    let mut run = Run::started(BRIEF_STEPS);
    run.wait(Duration::from_secs(30));
    run.command("p", CommandKind::Pause);
    run.wait(Duration::from_mins(5));
    assert_eq!(run.status.step, 1, "held");
    assert_eq!(run.last.as_ref().unwrap().requeue_after, None);
    run.command("r", CommandKind::Resume);
    run.wait(Duration::from_secs(59));
    assert_eq!(run.status.step, 1);
    run.wait(Duration::from_secs(1));
    assert_eq!(run.status.step, 3);
}

#[test]
fn only_an_untimed_pause_with_a_ready_canary_waits_for_a_person() {
    let waits = |run: &Run| run.last.as_ref().is_some_and(Decision::waits_for_a_person);
    let steps = "  steps:\n    - setWeight: 10\n    - pause: {duration: 1m}\n    - pause: {}\n    - analysis: {timeout: 1m}\n    - setWeight: 20\n  analysis:\n    metrics: [{name: errors, builtin: errors}]\n";
    let mut run = Run::started(steps);
    assert_eq!(run.status.phase, Phase::Paused, "the timed pause");
    assert!(!waits(&run), "a timed pause has a timer");
    run.wait(Duration::from_mins(1));
    assert_eq!((run.status.phase, run.status.step), (Phase::Paused, 2));
    assert_eq!(run.last.as_ref().unwrap().requeue_after, None);
    assert!(waits(&run), "pause: {{}} moves only on a command");
    // A canary that stops being ready is a wait on the cluster, with the
    // progress deadline's timer.
    run.obs.canary_ready = false;
    run.wait(Duration::from_secs(1));
    assert!(!waits(&run));
    assert!(run.last.as_ref().unwrap().requeue_after.is_some());
    run.obs.canary_ready = true;
    run.wait(Duration::from_secs(1));
    assert!(waits(&run));
    // The gate after it has its timeout; then an inconclusive pause, which
    // a person ends, waits for that person.
    run.command("p", CommandKind::Promote);
    assert_eq!((run.status.phase, run.status.step), (Phase::Progressing, 3));
    assert!(!waits(&run));
    run.wait(Duration::from_mins(1));
    assert_eq!(run.status.phase, Phase::Paused, "inconclusive, paused");
    assert!(waits(&run));
    // A person's pause in the middle of a gate stops its timer too.
    let mut run = Run::started(steps);
    run.command("go", CommandKind::Promote);
    run.command("go2", CommandKind::Promote);
    assert_eq!(run.status.step, 3, "at the gate");
    assert!(!waits(&run));
    run.command("hold", CommandKind::Pause);
    assert!(waits(&run));
    // Promotion and rollback wait on Deployments, never on a person.
    run.command("abort", CommandKind::Abort);
    assert_eq!(run.status.phase, Phase::RollingBack);
    assert!(!waits(&run));
    let mut run = Run::started(steps);
    run.command("full", CommandKind::PromoteFull);
    assert_eq!(run.status.phase, Phase::Promoting);
    assert!(!waits(&run));
}

#[test]
fn commands_that_do_not_apply_are_reported() {
    let mut run = Run::new(BRIEF_STEPS);
    run.tick();
    run.command("x", CommandKind::Abort);
    assert_eq!(run.status.phase, Phase::Idle);
    let d = run.last.as_ref().unwrap();
    let e = d.events().next().unwrap();
    assert!(
        e.warning && e.message.contains("no rollout is under way"),
        "{e:?}"
    );
}

#[test]
fn sticky_cookie_only_while_the_canary_is_live() {
    let mut run = Run::started(BRIEF_STEPS);
    assert!(run.routes().sticky_cookie.is_some());
    run.command("a", CommandKind::Abort);
    assert!(!run.routes().reaches_canary());
}

#[test]
fn a_restarted_process_reaches_the_same_decision() {
    let mut run = Run::started(BRIEF_STEPS);
    run.wait(Duration::from_secs(61));
    let json = serde_json::to_string(&run.status).unwrap();
    let restored: CanaryStatus = serde_json::from_str(&json).unwrap();
    let later = run.now.plus(Duration::from_secs(7));
    let a = decide(&run.plan, &run.status, &run.obs, later);
    let b = decide(&run.plan, &restored, &run.obs, later);
    assert_eq!(a, b);
}

#[test]
fn numbers_are_short() {
    assert_eq!(short(7.9), "7.9");
    assert_eq!(short(0.011), "0.011");
    assert_eq!(short(25.34), "25.3");
    assert_eq!(short(0.0), "0");
    assert_eq!(short(20.0), "20");
}

#[test]
fn time_spent_down_is_not_bake_time() {
    // BRIEF_STEPS: setWeight 5, then a one-minute pause.
    let mut run = Run::started(BRIEF_STEPS);
    run.wait(Duration::from_secs(20));
    assert_eq!(run.status.step, 1, "in the timed pause");
    // The process stops here and comes back 10 minutes later: the pause
    // has 40 s left, not none.
    let down = Duration::from_mins(10);
    run.status = discount_downtime(&run.status, down);
    run.now = run.now.plus(down);
    run.tick();
    assert_eq!(run.status.step, 1, "still in the pause after a restart");
    assert_eq!(run.status.weight, 5);
    run.wait(Duration::from_secs(39));
    assert_eq!(run.status.step, 1, "1 s of the pause left");
    run.wait(Duration::from_secs(2));
    assert_eq!(run.status.weight, 25, "the pause ended after its minute");
    // Ended rollouts keep their instants.
    let mut done = run.status.clone();
    done.phase = Phase::Promoted;
    assert_eq!(discount_downtime(&done, down), done);
}

#[test]
fn command_words_round_trip() {
    for kind in CommandKind::ALL {
        assert_eq!(kind.as_str().parse::<CommandKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
        assert_eq!(CommandKind::from_path(&format!("/{kind}")), Some(kind));
    }
    let words: Vec<&str> = CommandKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        words,
        [
            "promote",
            "promote-full",
            "abort",
            "pause",
            "resume",
            "retry"
        ]
    );
    assert_eq!(CommandKind::PromoteFull.name(), "promote --full");
    assert_eq!(CommandKind::Abort.name(), "abort");
    assert_eq!(
        "promote--full".parse::<CommandKind>(),
        Ok(CommandKind::PromoteFull)
    );
    assert_eq!(CommandKind::from_path("/promote--full"), None);
    assert_eq!(CommandKind::from_path("promote"), None);
    assert!("Promote".parse::<CommandKind>().is_err());
    assert_eq!(
        "stop".parse::<CommandKind>().map_err(|e| e.to_string()),
        Err("`stop` is not a command (promote, promote-full, abort, pause, resume, retry)".into())
    );
}
