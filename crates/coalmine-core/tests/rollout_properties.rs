//! Property tests of the rollout state machine ([`coalmine_core::rollout::decide`]).
//!
//! Random plans (weights, pauses, analysis gates, header routes, mirrors,
//! `onInconclusive`, progress deadlines, session affinity) are driven from
//! `CanaryStatus::default()` through random sequences of observations: time
//! jumps (often zero), changing desired revisions, canary readiness and
//! removal, stable readiness, judge reports (current, foreign or stale;
//! every verdict) and user commands (fresh or repeated ids, every kind).
//! After every decision the tests check that:
//!
//! 1. weights and mirror percentages stay within 0–100 and every decision
//!    asks for routes;
//! 2. a FAIL or an abort sends everything to stable in the very same
//!    decision, and no phase without a live canary routes to it;
//! 3. a promotion makes the promoted canary revision stable, ends with
//!    all-stable routes and a scaled-down canary, after `PromoteStable`;
//! 4. deciding again with the same input changes nothing and repeats no
//!    event (the fixed point);
//! 5. every decision settles (no panic, including the convergence
//!    `debug_assert!`) and never stops at an instant step;
//! 6. a status survives a JSON round trip and a restarted process decides
//!    exactly as the original would;
//! 7. reports for another revision, or from before the current rollout
//!    began, never roll a canary back.
//!
//! `judge_rates_read_back_exactly` checks that the judge's numbers survive
//! the status's JSON exactly (it needs serde_json's `float_roundtrip`: without
//! it the rate 1/11 reads back one ULP off and a resumed decision differs).

use std::collections::HashSet;

use coalmine_core::plan::{AnalysisPlan, Plan, PlanStep, Target};
use coalmine_core::rollout::{
    Action, AnalysisReport, Command, CommandKind, Decision, Observation, decide,
};
use coalmine_core::routes::{HeaderMatch, Routes};
use coalmine_core::spec::{OnInconclusive, SessionAffinity};
use coalmine_core::status::{MetricStatus, Phase, QuantileStatus, RollbackReason, Verdict};
use coalmine_core::{CanaryStatus, Duration, Percent, Time};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

/// The instant every run starts at (2026-11-23T08:00:00Z).
const T0: i64 = 1_795_420_800_000;
/// The revisions the spec may ask for.
const REVISIONS: [&str; 3] = ["r1", "r2", "r3"];
/// Revisions a report may name: the spec's, and one never deployed.
const REPORT_REVISIONS: [&str; 4] = ["r1", "r2", "r3", "r9"];

// ---------------------------------------------------------------------------
// Plans

fn header_match() -> impl Strategy<Value = HeaderMatch> {
    (
        prop::sample::select(vec!["x-canary", "x-beta", "x-user"]),
        prop::sample::select(vec!["always", "yes", "1", "tester"]),
    )
        .prop_map(|(header, value)| HeaderMatch {
            header: Some(header.to_owned()),
            cookie: None,
            value: Some(value.to_owned()),
            regex: None,
        })
}

fn plan_step() -> impl Strategy<Value = PlanStep> {
    prop_oneof![
        4 => (0u8..=100).prop_filter_map("a percent", Percent::new).prop_map(PlanStep::SetWeight),
        1 => Just(PlanStep::Pause(None)),
        2 => (1u64..=600).prop_map(|s| PlanStep::Pause(Some(Duration::from_secs(s)))),
        2 => (1u64..=1200).prop_map(|s| PlanStep::Analysis { timeout: Duration::from_secs(s) }),
        1 => prop::collection::vec(header_match(), 0..3).prop_map(PlanStep::SetHeaderRoute),
        1 => (0u8..=100).prop_filter_map("a percent", Percent::new).prop_map(PlanStep::SetMirror),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        prop::collection::vec(plan_step(), 0..10),
        prop::sample::select(vec![
            OnInconclusive::Pause,
            OnInconclusive::Rollback,
            OnInconclusive::Promote,
        ]),
        60u64..=1200,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(steps, on_inconclusive, deadline, sticky, analysis)| Plan {
                name: "app".to_owned(),
                target: Target::Local {
                    stable: vec!["http://127.0.0.1:9001".to_owned()],
                    canary: vec!["http://127.0.0.1:9002".to_owned()],
                    listen: None,
                },
                steps,
                // The machine never reads the metrics: an empty list will do.
                analysis: analysis.then(|| AnalysisPlan {
                    interval: Duration::from_secs(10),
                    alpha: 0.05,
                    metrics: vec![],
                }),
                on_inconclusive,
                progress_deadline: Duration::from_secs(deadline),
                session_affinity: sticky.then(|| SessionAffinity {
                    cookie: "coalmine-track".to_owned(),
                    max_age: None,
                }),
            },
        )
}

// ---------------------------------------------------------------------------
// Events: abstract, turned into an `Observation` against the running status
// (a report names the canary the status holds, a repeated command reuses an
// id already sent).

#[derive(Debug, Clone)]
struct Event {
    /// How far the clock moves before this observation, in milliseconds.
    advance_ms: u64,
    /// `Some(i)`: the spec now asks for `REVISIONS[i]`.
    desired: Option<usize>,
    canary_ready: bool,
    /// The readiness is of the pods at the stored weight (the `replicas`
    /// router), not of a canary that serves any weight.
    ready_by_weight: bool,
    canary_gone: bool,
    /// Local mode's health checks report the canary unreachable.
    canary_down: bool,
    /// `Some(i)`: stable is ready at `REVISIONS[i]`.
    stable_ready: Option<usize>,
    report: Option<ReportEvent>,
    command: Option<CommandEvent>,
}

#[derive(Debug, Clone)]
struct ReportEvent {
    /// Whether the report names the status's canary revision.
    current: bool,
    /// Otherwise, which revision it names (see [`REPORT_REVISIONS`]).
    other: Index,
    /// How long before the rollout began the judge started collecting.
    earlier_ms: u64,
    verdict: Verdict,
    metric: Option<MetricStatus>,
}

#[derive(Debug, Clone)]
struct CommandEvent {
    /// `Some`: send an id already sent before (if there is one).
    repeat: Option<Index>,
    kind: CommandKind,
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        3 => Just(Verdict::Running),
        3 => Just(Verdict::Pass),
        1 => Just(Verdict::Fail),
        1 => Just(Verdict::Inconclusive),
        1 => Just(Verdict::NoData),
    ]
}

/// The numbers a judge's report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numbers {
    /// Any finite number (the judge never reports NaN).
    Any,
    /// Numbers of at most 15 significant digits, which `serde_json`
    /// reads back exactly (see [`judge_rates_read_back_exactly`]).
    Short,
}

fn number(numbers: Numbers) -> BoxedStrategy<f64> {
    match numbers {
        Numbers::Any => prop_oneof![
            3 => 0.0f64..1.0,
            1 => 0.0f64..1000.0,
            1 => prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        ]
        .boxed(),
        Numbers::Short => prop_oneof![
            (0u32..=1_000_000).prop_map(|k| f64::from(k) / 1000.0),
            (0u32..=1_000_000).prop_map(|k| f64::from(k) / 1024.0),
        ]
        .boxed(),
    }
}

fn metric_status(numbers: Numbers) -> impl Strategy<Value = MetricStatus> {
    let number = move || number(numbers);
    (
        verdict(),
        (
            prop::option::of(number()),
            prop::option::of(number()),
            prop::option::of(number()),
            prop::option::of((number(), number()).prop_map(|(a, b)| [a, b])),
        ),
        (
            prop::option::of(number()),
            prop::option::of(number()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
        ),
        (
            prop::option::of(number()),
            prop::option::of(any::<u32>()),
            prop::option::of(Just("no requests yet".to_owned())),
        ),
    )
        .prop_map(
            |(
                verdict,
                (canary_rate, stable_rate, ratio, ratio_interval),
                (e_value, e_threshold, canary_events, canary_requests),
                (value, failures, message),
            )| MetricStatus {
                name: "errors".to_owned(),
                verdict,
                canary_rate,
                stable_rate,
                ratio,
                ratio_interval,
                e_value,
                e_threshold,
                canary_events,
                canary_requests,
                stable_events: canary_events.map(|n| n / 2),
                stable_requests: canary_requests.map(|n| n / 2),
                value,
                failures,
                dispersion: e_value.map(|e| 1.0 + e.abs().min(10.0)),
                quantiles: ratio
                    .map(|r| QuantileStatus {
                        quantile: 0.99,
                        canary: r,
                        stable: 0.1,
                        shift_interval: [Some(r - 0.1), None],
                    })
                    .into_iter()
                    .collect(),
                message,
            },
        )
}

fn report_event(numbers: Numbers) -> impl Strategy<Value = ReportEvent> {
    (
        prop::bool::weighted(0.85),
        any::<Index>(),
        prop_oneof![4 => Just(0u64), 1 => 1u64..=600_000],
        verdict(),
        prop::option::of(metric_status(numbers)),
    )
        .prop_map(
            |(current, other, earlier_ms, verdict, metric)| ReportEvent {
                current,
                other,
                earlier_ms,
                verdict,
                metric,
            },
        )
}

fn command_event() -> impl Strategy<Value = CommandEvent> {
    (
        prop::option::weighted(0.3, any::<Index>()),
        prop::sample::select(CommandKind::ALL.to_vec()),
    )
        .prop_map(|(repeat, kind)| CommandEvent { repeat, kind })
}

fn event(numbers: Numbers) -> impl Strategy<Value = Event> {
    (
        prop_oneof![
            3 => Just(0u64),
            2 => 1u64..=60_000,
            3 => (1u64..=900).prop_map(|s| s * 1000),
            1 => 1u64..=900_000,
        ],
        prop::option::weighted(0.12, 0usize..REVISIONS.len()),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.5),
        prop::bool::weighted(0.5),
        prop::bool::weighted(0.03),
        prop_oneof![
            1 => Just(None),
            3 => (0usize..REVISIONS.len()).prop_map(Some),
        ],
        prop::option::weighted(0.4, report_event(numbers)),
        prop::option::weighted(0.2, command_event()),
    )
        .prop_map(
            |(
                advance_ms,
                desired,
                canary_ready,
                ready_by_weight,
                canary_gone,
                canary_down,
                stable_ready,
                report,
                command,
            )| {
                Event {
                    advance_ms,
                    desired,
                    canary_ready,
                    ready_by_weight,
                    canary_gone,
                    canary_down,
                    stable_ready,
                    report,
                    command,
                }
            },
        )
}

fn events(numbers: Numbers) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(event(numbers), 1..=60)
}

/// Which reports a run feeds the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reports {
    /// Mostly for the current rollout, sometimes for another revision or
    /// collected before the rollout began.
    Mixed,
    /// Never for the current rollout: another revision than the status's
    /// canary, or collected before the current rollout began.
    Foreign,
}

/// One decision and what led to it.
struct Step<'a> {
    plan: &'a Plan,
    prev: &'a CanaryStatus,
    obs: &'a Observation,
    now: Time,
    d: &'a Decision,
}

/// Drives the machine from `CanaryStatus::default()` through `events`,
/// calling `check` after every decision.
fn simulate(
    plan: &Plan,
    events: &[Event],
    reports: Reports,
    mut check: impl FnMut(&Step<'_>) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut status = CanaryStatus::default();
    let mut now = Time::from_unix_millis(T0);
    let mut desired = REVISIONS[0].to_owned();
    let mut sent_ids: Vec<String> = Vec::new();
    for ev in events {
        now = now.plus(Duration::from_millis(ev.advance_ms));
        if let Some(i) = ev.desired {
            desired = REVISIONS[i].to_owned();
        }
        let analysis = ev
            .report
            .as_ref()
            .map(|r| report(r, &status, &desired, now, reports));
        let command = ev.command.as_ref().map(|c| {
            let id = match c.repeat {
                Some(i) if !sent_ids.is_empty() => i.get(&sent_ids).clone(),
                _ => {
                    let id = format!("c{}", sent_ids.len());
                    sent_ids.push(id.clone());
                    id
                }
            };
            Command { id, kind: c.kind }
        });
        let obs = Observation {
            desired_revision: desired.clone(),
            canary_ready: ev.canary_ready,
            canary_ready_at: ev.ready_by_weight.then_some(status.weight),
            canary_gone: ev.canary_gone,
            canary_down: ev
                .canary_down
                .then(|| "every canary server refuses connections".to_owned()),
            stable_ready_revision: ev.stable_ready.map(|i| REVISIONS[i].to_owned()),
            analysis,
            command,
        };
        let d = decide(plan, &status, &obs, now);
        check(&Step {
            plan,
            prev: &status,
            obs: &obs,
            now,
            d: &d,
        })?;
        status = d.status;
    }
    Ok(())
}

/// The report an event stands for, given the status it is shown to.
fn report(
    r: &ReportEvent,
    status: &CanaryStatus,
    desired: &str,
    now: Time,
    reports: Reports,
) -> AnalysisReport {
    let started = status.rollout_started_at.unwrap_or(now);
    let earlier = |ms: u64| Time::from_unix_millis(started.unix_millis() - ms as i64);
    let canary = status.canary_revision.as_deref();
    let (revision, since) = match reports {
        Reports::Mixed => {
            // With no canary yet, "current" means the revision about to start.
            let revision = match (r.current, canary) {
                (true, Some(c)) => c,
                (true, None) => desired,
                (false, _) => *r.other.get(&REPORT_REVISIONS),
            };
            (revision.to_owned(), earlier(r.earlier_ms))
        }
        Reports::Foreign => match (r.current, canary, status.rollout_started_at) {
            // Stale: the right revision, collected before this rollout began.
            (true, Some(c), Some(_)) => (c.to_owned(), earlier(r.earlier_ms.max(1))),
            _ => {
                let others: Vec<&str> = REPORT_REVISIONS
                    .iter()
                    .copied()
                    .filter(|rev| Some(*rev) != canary)
                    .collect();
                (r.other.get(&others).to_string(), earlier(r.earlier_ms))
            }
        },
    };
    AnalysisReport {
        revision,
        since,
        at: now,
        verdict: r.verdict,
        metrics: r.metric.iter().cloned().collect(),
    }
}

// ---------------------------------------------------------------------------
// Helpers for the checks

fn routes_of(d: &Decision) -> Vec<&Routes> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::SetRoutes(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn non_events(d: &Decision) -> Vec<&Action> {
    d.actions
        .iter()
        .filter(|a| !matches!(a, Action::Event(_)))
        .collect()
}

/// Phases in which nothing may reach the canary.
fn canary_dead(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::RollingBack | Phase::RolledBack | Phase::Failed | Phase::Idle | Phase::Promoted
    )
}

/// Whether `obs` carries a FAIL for the rollout `prev` describes.
fn fails_current_rollout(prev: &CanaryStatus, obs: &Observation) -> bool {
    obs.analysis.as_ref().is_some_and(|r| {
        r.verdict == Verdict::Fail
            && Some(&r.revision) == prev.canary_revision.as_ref()
            && prev.rollout_started_at.is_some_and(|t| r.since >= t)
    })
}

/// Whether `obs` carries an abort not handled before.
fn new_abort(prev: &CanaryStatus, obs: &Observation) -> bool {
    obs.command.as_ref().is_some_and(|c| {
        c.kind == CommandKind::Abort && prev.last_command.as_deref() != Some(c.id.as_str())
    })
}

/// Shows the decision's context when a check fails.
fn context(s: &Step<'_>) -> String {
    format!(
        "\nplan steps: {:?}\nprev: {:?}\nobs: {:?}\nnow: {}\ndecision: {:?}",
        s.plan.steps, s.prev, s.obs, s.now, s.d
    )
}

fn config() -> ProptestConfig {
    ProptestConfig {
        // 256 in CI; `PROPTEST_CASES=20000` for a long sweep.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        // Only this file may change: no `proptest-regressions` next to it.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(config())]

    /// 1. Weights and mirror percentages never leave 0–100, and every
    ///    decision says where traffic goes (actions are level-triggered).
    #[test]
    fn weights_stay_within_0_to_100(plan in plan(), events in events(Numbers::Any)) {
        simulate(&plan, &events, Reports::Mixed, |s| {
            prop_assert!(s.d.status.weight <= 100, "status weight{}", context(s));
            prop_assert!(s.d.status.mirror_percent <= 100, "status mirror{}", context(s));
            let routes = routes_of(s.d);
            prop_assert_eq!(routes.len(), 1, "one SetRoutes per decision{}", context(s));
            for r in routes {
                prop_assert!(r.canary_weight <= 100, "SetRoutes weight{}", context(s));
                prop_assert!(r.mirror_percent <= 100, "SetRoutes mirror{}", context(s));
            }
            Ok(())
        })?;
    }

    /// 2. A FAIL for the current rollout or a new abort takes all traffic
    ///    off the canary in the same decision; phases without a live canary
    ///    never route to it, not even through the status.
    #[test]
    fn rollback_takes_traffic_off_the_canary_at_once(plan in plan(), events in events(Numbers::Any)) {
        simulate(&plan, &events, Reports::Mixed, |s| {
            let phase = s.d.status.phase;
            let was_active = matches!(s.prev.phase, Phase::Progressing | Phase::Paused);
            let trigger = fails_current_rollout(s.prev, s.obs) || new_abort(s.prev, s.obs);
            if was_active && trigger && matches!(phase, Phase::RollingBack | Phase::RolledBack) {
                let routes = routes_of(s.d);
                prop_assert!(
                    routes.contains(&&Routes::all_stable()),
                    "no all-stable routes on rollback{}", context(s)
                );
                prop_assert!(
                    routes.iter().all(|r| !r.reaches_canary()),
                    "routes still reach the canary on rollback{}", context(s)
                );
            }
            if canary_dead(phase) {
                prop_assert!(
                    routes_of(s.d).iter().all(|r| !r.reaches_canary()),
                    "routes reach a dead canary in {phase}{}", context(s)
                );
                prop_assert!(
                    s.d.actions.contains(&Action::ScaleDownCanary),
                    "no ScaleDownCanary in {phase}{}", context(s)
                );
                prop_assert!(
                    !s.d.actions.iter().any(|a| matches!(a, Action::EnsureCanary { .. })),
                    "EnsureCanary in {phase}{}", context(s)
                );
                let st = &s.d.status;
                prop_assert!(
                    st.weight == 0 && st.header_routes.is_empty() && st.mirror_percent == 0,
                    "the status still sends traffic to the canary in {phase}{}", context(s)
                );
            }
            Ok(())
        })?;
    }

    /// 3. Promotion hands the promoted revision to stable: the status
    ///    records it, traffic goes back to (the new) stable, the canary is
    ///    scaled down, and `PromoteStable` was asked for first.
    ///
    /// The revision promoted is the previous status's canary revision when
    /// the decision began in `Promoting`; a decision that starts, runs and
    /// promotes a rollout in one go (all steps instant, stable already
    /// ready at that revision) promotes the revision the spec asks for.
    ///
    /// A decision may also pass through `Promoting` without stopping there
    /// when stable is *already* observed ready at the canary's revision as
    /// the last step ends (say steps `[pause 1s]`, stable ready at `r3`
    /// while the status has stable at `r2` and canary `r3`). Actions are
    /// derived from the final phase only, so that promotion never emits
    /// `PromoteStable`. Nothing needs doing then (stable already runs the
    /// revision), so the check allows it, but only when the `Promoting`
    /// event is in the same decision and stable was observed ready at the
    /// promoted revision.
    #[test]
    fn promotion_makes_the_canary_stable(plan in plan(), events in events(Numbers::Any)) {
        let mut promote_stable_sent: HashSet<String> = HashSet::new();
        simulate(&plan, &events, Reports::Mixed, |s| {
            let phase = s.d.status.phase;
            if phase == Phase::Promoted && s.prev.phase != Phase::Promoted {
                let promoted = if s.prev.phase == Phase::Promoting {
                    s.prev.canary_revision.clone()
                } else {
                    Some(s.obs.desired_revision.clone())
                };
                prop_assert_eq!(
                    &s.d.status.stable_revision, &promoted,
                    "stable is not the promoted revision{}", context(s)
                );
                prop_assert_eq!(
                    &s.d.status.stable_revision, &s.obs.stable_ready_revision,
                    "promoted before stable was ready at the revision{}", context(s)
                );
                prop_assert_eq!(s.d.status.canary_revision.as_ref(), None, "canary left{}", context(s));
                let all_stable = Routes::all_stable();
                prop_assert_eq!(
                    routes_of(s.d), vec![&all_stable],
                    "routes not all-stable after promotion{}", context(s)
                );
                prop_assert!(
                    s.d.actions.contains(&Action::ScaleDownCanary),
                    "canary not scaled down after promotion{}", context(s)
                );
                let rev = promoted.unwrap_or_default();
                let promoted_in_one_go = s.prev.phase != Phase::Promoting
                    && s.d.events().any(|e| e.reason == "Promoting")
                    && s.obs.stable_ready_revision.as_ref() == Some(&rev);
                prop_assert!(
                    promote_stable_sent.contains(&rev) || promoted_in_one_go,
                    "Promoted without PromoteStable {{ revision: {rev} }} in an earlier decision{}",
                    context(s)
                );
            }
            for a in &s.d.actions {
                if let Action::PromoteStable { revision } = a {
                    prop_assert_eq!(phase, Phase::Promoting, "PromoteStable outside Promoting{}", context(s));
                    prop_assert_eq!(
                        Some(revision), s.d.status.canary_revision.as_ref(),
                        "PromoteStable of another revision than the canary's{}", context(s)
                    );
                    promote_stable_sent.insert(revision.clone());
                }
            }
            Ok(())
        })?;
    }

    /// 4. Every decision is a fixed point: deciding again with the same
    ///    observation and time gives the same status, the same actions and
    ///    timer, and no events.
    #[test]
    fn deciding_again_changes_nothing(plan in plan(), events in events(Numbers::Any)) {
        simulate(&plan, &events, Reports::Mixed, |s| {
            let again = decide(s.plan, &s.d.status, s.obs, s.now);
            prop_assert_eq!(&again.status, &s.d.status, "status changed{}", context(s));
            prop_assert_eq!(non_events(&again), non_events(s.d), "actions changed{}", context(s));
            prop_assert_eq!(again.events().count(), 0, "events repeated: {:?}{}", again.actions, context(s));
            prop_assert_eq!(again.requeue_after, s.d.requeue_after, "timer changed{}", context(s));
            Ok(())
        })?;
    }

    /// 5. Every decision settles (`decide` returns: the convergence
    ///    `debug_assert!` holds) in a terminal or a waiting phase, and a
    ///    rollout under way is never left standing at an instant step: with
    ///    the canary ready and no person's or inconclusive pause, it waits
    ///    on a pause step (`Paused`) or an analysis gate (`Progressing`).
    #[test]
    fn decisions_settle_on_something_to_wait_for(plan in plan(), events in events(Numbers::Any)) {
        simulate(&plan, &events, Reports::Mixed, |s| {
            let st = &s.d.status;
            let phase = st.phase;
            let waiting = matches!(
                phase,
                Phase::Paused | Phase::Progressing | Phase::Promoting | Phase::RollingBack
            );
            prop_assert!(phase.is_terminal() || waiting, "phase {phase}{}", context(s));
            prop_assert!(st.step as usize <= s.plan.steps.len(), "step out of range{}", context(s));
            if phase == Phase::Promoting {
                prop_assert_eq!(st.step as usize, s.plan.steps.len(), "promoting before the last step{}", context(s));
            }
            if st.pause.is_some() {
                prop_assert_eq!(phase, Phase::Paused, "a pause outside Paused{}", context(s));
            }
            if matches!(phase, Phase::Progressing | Phase::Paused) && st.pause.is_none() {
                let ready = s.obs.canary_ready
                    && s.obs.canary_ready_at.is_none_or(|w| w == st.weight);
                if ready {
                    let step = s.plan.steps.get(st.step as usize);
                    match step {
                        Some(PlanStep::Pause(_)) => prop_assert_eq!(
                            phase, Phase::Paused, "at a pause step but not Paused{}", context(s)
                        ),
                        Some(PlanStep::Analysis { .. }) => prop_assert_eq!(
                            phase, Phase::Progressing, "at a gate but not Progressing{}", context(s)
                        ),
                        other => prop_assert!(
                            false, "stopped at {other:?} with the canary ready{}", context(s)
                        ),
                    }
                } else {
                    prop_assert_eq!(
                        phase, Phase::Progressing, "waiting for readiness but not Progressing{}", context(s)
                    );
                }
            }
            Ok(())
        })?;
    }

    /// 6. Resuming after a crash: the stored status survives JSON, and the
    ///    decision from the stored copy equals the decision from memory.
    #[test]
    fn a_status_read_back_decides_the_same(plan in plan(), events in events(Numbers::Short)) {
        simulate(&plan, &events, Reports::Mixed, |s| {
            for status in [s.prev, &s.d.status] {
                let json = serde_json::to_string(status).expect("a status serializes");
                let back: CanaryStatus = serde_json::from_str(&json).expect("a status parses back");
                prop_assert_eq!(&back, status, "JSON round trip changed the status: {}{}", json, context(s));
            }
            let json = serde_json::to_string(s.prev).expect("a status serializes");
            let back: CanaryStatus = serde_json::from_str(&json).expect("a status parses back");
            let resumed = decide(s.plan, &back, s.obs, s.now);
            prop_assert_eq!(&resumed, s.d, "the resumed decision differs{}", context(s));
            Ok(())
        })?;
    }

    /// 7. Only the current rollout's reports count: a FAIL for another
    ///    revision than the status's canary, or collected before the
    ///    current rollout began, never rolls back with `AnalysisFailed`.
    ///
    /// One exception is legitimate and allowed: the decision itself starts
    /// a rollout of the report's revision at the instant the report's
    /// collection began (zero time passing), so the report is then for the
    /// rollout under way.
    #[test]
    fn foreign_reports_never_fail_a_rollout(plan in plan(), events in events(Numbers::Any)) {
        simulate(&plan, &events, Reports::Foreign, |s| {
            let rollback = s.d.status.rollback.as_ref();
            let new_failure = rollback.is_some_and(|r| r.reason == RollbackReason::AnalysisFailed)
                && s.d.status.rollback != s.prev.rollback;
            if new_failure {
                let restarted_for_it = s.obs.analysis.as_ref().is_some_and(|r| {
                    s.d.status.canary_revision.as_ref() == Some(&r.revision)
                        && s.d.status.rollout_started_at == Some(s.now)
                        && s.d.status.rollout_started_at != s.prev.rollout_started_at
                        && r.since >= s.now
                });
                prop_assert!(restarted_for_it, "a foreign report rolled back the canary{}", context(s));
            }
            Ok(())
        })?;
    }

    /// 8. A canary is rolled back as unreachable only when the platform
    ///    said so in that very observation, and the rollback takes the
    ///    canary's traffic away at once.
    #[test]
    fn unreachable_rollbacks_come_only_from_the_health_checks(plan in plan(), events in events(Numbers::Any)) {
        simulate(&plan, &events, Reports::Mixed, |s| {
            let new = s.d.status.rollback.as_ref().filter(|r| {
                r.reason == RollbackReason::CanaryUnreachable && s.d.status.rollback != s.prev.rollback
            });
            if new.is_some() {
                prop_assert!(s.obs.canary_down.is_some(), "rolled back as unreachable without a report{}", context(s));
                prop_assert!(
                    matches!(s.d.status.phase, Phase::RollingBack | Phase::RolledBack),
                    "rolled back as unreachable but {:?}{}", s.d.status.phase, context(s)
                );
            }
            Ok(())
        })?;
    }

    /// 9. Where the canary's pods follow the weight, a decision that moves
    ///    the weight goes no further: it waits (`Progressing`) for the
    ///    platform to show the canary ready at the new weight, and never
    ///    pauses, judges or promotes at a weight no pod serves yet.
    #[test]
    fn a_new_weight_waits_for_its_pods(plan in plan(), events in events(Numbers::Any)) {
        simulate(&plan, &events, Reports::Mixed, |s| {
            let st = &s.d.status;
            let live = matches!(st.phase, Phase::Progressing | Phase::Paused);
            if s.obs.canary_ready_at.is_some() && st.weight != s.prev.weight && live && st.pause.is_none() {
                prop_assert_eq!(st.phase, Phase::Progressing, "moved past a new weight{}", context(s));
                prop_assert!(
                    st.message.contains("waiting for the canary to be ready"),
                    "not waiting for the canary: {}{}", st.message, context(s)
                );
            }
            Ok(())
        })?;
    }
}

/// The status stores the judge's numbers; a restarted process must read back
/// exactly what was written, or the resumed decision differs from the one
/// the original process would have made (property 6 with realistic rates).
///
/// `serde_json` without its `float_roundtrip` feature (which the workspace
/// enables for this reason) reads some shortest representations back one ULP
/// off: about one rate `k/n` in ten, e.g. `1/11` is written
/// `0.09090909090909091` and read back as `0.09090909090909093`.
#[test]
fn judge_rates_read_back_exactly() {
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&(0u64..=100_000, 1u64..=100_000), |(k, n)| {
        let rate = k as f64 / n as f64;
        let status = CanaryStatus {
            phase: Phase::RolledBack,
            analysis: Some(coalmine_core::status::AnalysisStatus {
                verdict: Verdict::Fail,
                evaluated_at: Some(Time::from_unix_millis(T0)),
                metrics: vec![MetricStatus {
                    name: "errors".to_owned(),
                    verdict: Verdict::Fail,
                    canary_rate: Some(rate),
                    ..MetricStatus::default()
                }],
            }),
            ..CanaryStatus::default()
        };
        let json = serde_json::to_string(&status).expect("a status serializes");
        let back: CanaryStatus = serde_json::from_str(&json).expect("a status parses back");
        prop_assert_eq!(&back, &status, "{}/{} = {} written as {}", k, n, rate, json);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
