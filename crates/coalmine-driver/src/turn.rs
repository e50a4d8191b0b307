//! One turn of the rollout loop: observe → decide → persist → act, the same
//! on both platforms.
//!
//! The platform observes the world (readiness, revisions, a pending
//! command) and hands it over with the judging session; a turn collects the
//! interval that ended (if one did), adds the judge's report to the
//! observation, calls [`decide`], keeps the judge's evidence in the new
//! status, lets the platform add what it records beside the decision
//! ([`Actuator::amend`]), stores the status ([`Actuator::persist`]) and only
//! then carries out the actions ([`Actuator::act`]). Because actions are
//! level-triggered, a crash between storing and acting loses nothing.
//!
//! The platforms are the [`Actuator`]s: the local runner's (the in-process
//! proxy and the `--state` file) and the Kubernetes controller's (the
//! Canary's status subresource, Deployments and routers). The clock is
//! passed in, so a turn is tested without sleeping.

use coalmine_core::plan::Plan;
use coalmine_core::rollout::{AnalysisReport, Decision, Observation, decide};
use coalmine_core::status::CanaryStatus;
use coalmine_core::{Percent, Time};
use coalmine_providers::Context;
use tokio::time::Instant;

use crate::session::{Session, Source, keep_evidence};

/// What a platform does with a decision.
pub trait Actuator {
    /// Why storing or acting failed.
    type Error;

    /// The canary's share of requests at `weight` percent (the replicas
    /// router splits in whole pods).
    fn share(&self, weight: Percent) -> f64;

    /// Whether a share set by a decision carries the traffic from the
    /// moment its actions are carried out (the in-process proxy swaps its
    /// table at once). Where it does, a decision right after a collection
    /// sets the next interval's share from its start; where it does not
    /// (Kubernetes: routes propagate, pods start), that interval mixes two
    /// splits and is left out.
    fn shifts_at_once(&self) -> bool {
        true
    }

    /// Adds what this platform records beside the decision (conditions,
    /// counts) before it is stored.
    fn amend(&mut self, _decision: &mut Decision, _now: Time) {}

    /// Stores the status; `changed` says whether it differs from the one
    /// the turn started from.
    fn persist(
        &mut self,
        status: &CanaryStatus,
        changed: bool,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Carries out the decision's actions, after the status is stored.
    fn act(&mut self, decision: &Decision) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The inputs of one turn.
#[derive(Debug)]
pub struct Turn<'a> {
    /// The checked plan.
    pub plan: &'a Plan,
    /// The stored status.
    pub status: &'a CanaryStatus,
    /// What the platform observed (its `analysis` is filled in here).
    pub observation: Observation,
    /// Template values and the interval, for the metric sources.
    pub ctx: &'a Context,
    /// Wall time, for `decide` and reports.
    pub now: Time,
    /// Monotonic time, for the collection schedule.
    pub clock: Instant,
}

/// What one turn did.
#[derive(Debug)]
pub struct Turned {
    /// The decision, as stored (amendments included).
    pub decision: Decision,
    /// The report of the interval judged in this turn, if one was.
    pub judged: Option<AnalysisReport>,
    /// When the judge wants the next turn, if a rollout is judged.
    pub next_collection: Option<Instant>,
}

/// Runs one turn (see the module docs). `session` is the rollout's judging
/// session, kept current by [`crate::session::refresh`] before the turn.
pub async fn turn<S: Source, A: Actuator>(
    t: Turn<'_>,
    session: &mut Option<Session<S>>,
    actuator: &mut A,
) -> Result<Turned, A::Error> {
    let Turn {
        plan,
        status,
        mut observation,
        ctx,
        now,
        clock,
    } = t;
    let judged = match session.as_mut() {
        Some(s) => s.collect_if_due(ctx, now, clock).await,
        None => None,
    };
    observation.analysis = session.as_ref().and_then(|s| s.report().cloned());
    let mut decision = decide(plan, status, &observation, now);
    let (report, state) = match judged {
        Some(j) => (Some(j.report), j.state),
        None => (None, None),
    };
    keep_evidence(&mut decision.status, state);
    actuator.amend(&mut decision, now);
    let changed = decision.status != *status;
    actuator.persist(&decision.status, changed).await?;
    if let Some(s) = session.as_mut() {
        let after = actuator.share(decision.status.weight);
        if report.is_some() {
            let before = actuator.share(status.weight);
            s.start_interval(if actuator.shifts_at_once() {
                after
            } else {
                before
            });
        }
        s.follow_share(after);
    }
    actuator.act(&decision).await?;
    Ok(Turned {
        decision,
        judged: report,
        next_collection: session.as_ref().map(Session::next),
    })
}
