//! The rollout state machine: pure, deterministic, resumable.
//!
//! [`decide`] takes the checked [`Plan`], the last [`CanaryStatus`], what
//! was just observed ([`Observation`]: the revision the spec asks for,
//! canary and stable readiness, the judge's latest report, a user command)
//! and the time, and returns the next status and the [`Action`]s to carry
//! out. It never reads a clock or does I/O, so the Kubernetes controller and
//! `coalmine run` share it, and tests drive it through hours in microseconds.
//!
//! Design choices, all so that a crashed process can resume from the status
//! alone and a repeated observation changes nothing:
//!
//! - Decisions run to a fixed point: instant steps (weights, routes) are
//!   taken in one call; the call returns when the rollout waits for time, for
//!   readiness, for evidence or for a person. Calling again with the same
//!   input and time returns the same status and no new events.
//! - Actions are level-triggered: every decision repeats the desired routes
//!   and workload state (`SetRoutes`, `EnsureCanary`, `ScaleDownCanary`,
//!   `PromoteStable`), so an action lost in a crash is carried out on the
//!   next call. Only [`Event`]s are edge-triggered (emitted on transitions).
//! - User commands carry an id; the status remembers the last one handled,
//!   so a command acts once however often it is observed.
//! - Timers (pause steps, gate timeouts, the progress deadline) count from
//!   instants stored in the status, never from process memory.

use crate::human::{evidence, percent, ratio};
use crate::plan::{Plan, PlanStep};
use crate::routes::Routes;
use crate::spec::OnInconclusive;
use crate::status::{
    AnalysisStatus, CanaryStatus, ConditionStatus, MetricStatus, PauseReason, PauseStatus, Phase,
    RollbackReason, RollbackStatus, RolloutReason, Verdict,
};
use crate::{Duration, Percent, Time};

#[cfg(test)]
mod tests;

/// What was observed since the last decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The revision the spec asks the canary to run now
    /// ([`crate::spec::CanarySpec::desired_revision`]).
    pub desired_revision: String,
    /// Whether the canary serves: its pods ready at the stored weight
    /// (Kubernetes), its upstreams answering (local mode).
    pub canary_ready: bool,
    /// The weight `canary_ready` was observed at, where the canary's pods
    /// depend on the weight (the `replicas` router runs the weight's share
    /// of the pods on it): a step that changes the weight is followed by a
    /// wait for the next observation, which sees the new pods start, so
    /// the rollout never pauses or judges at a weight the canary does not
    /// yet serve. `None`: the canary serves every weight as it is (its own
    /// Service at full size; local mode's servers).
    pub canary_ready_at: Option<Percent>,
    /// Whether nothing of the canary is left running or routed to.
    pub canary_gone: bool,
    /// Why the canary cannot serve and waiting will not help, when that is
    /// so: local mode's health checks found every canary server refusing
    /// connections or failing its health path. A rollout under way rolls
    /// back at once with this message; `None` leaves readiness to
    /// `canary_ready` and `progressDeadline`.
    pub canary_down: Option<String>,
    /// The revision stable runs, once fully rolled out and ready.
    pub stable_ready_revision: Option<String>,
    /// The judge's latest report, if there is one.
    pub analysis: Option<AnalysisReport>,
    /// A user command, if one is pending.
    pub command: Option<Command>,
}

/// The judge's findings at one moment, for one rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisReport {
    /// The canary revision judged.
    pub revision: String,
    /// When the judge started collecting; a report from before the current
    /// rollout (or retry) began is ignored.
    pub since: Time,
    /// When it was evaluated.
    pub at: Time,
    /// The overall verdict.
    pub verdict: Verdict,
    /// Per-metric findings.
    pub metrics: Vec<MetricStatus>,
}

/// A person's command, with an id so it acts once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Unique per command issued (e.g. a timestamp or a UUID).
    pub id: String,
    /// What to do.
    pub kind: CommandKind,
}

/// The commands of `coalmine promote|abort|pause|resume|retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// End the current step (pause, gate, …) and go on.
    Promote,
    /// Skip the remaining steps and analysis: promote now.
    PromoteFull,
    /// Roll back now.
    Abort,
    /// Stop advancing until resumed (analysis still rolls back on FAIL).
    Pause,
    /// Undo a pause; also ends a pause step waiting for promote.
    Resume,
    /// Start the rolled-back revision again from the first step.
    Retry,
}

impl CommandKind {
    /// Every command, in the order `coalmine --help` lists them.
    pub const ALL: [CommandKind; 6] = [
        CommandKind::Promote,
        CommandKind::PromoteFull,
        CommandKind::Abort,
        CommandKind::Pause,
        CommandKind::Resume,
        CommandKind::Retry,
    ];

    /// The word on the wire: the admin API's path (`POST /promote-full`)
    /// and the kind in the `coalmine.dev/command` annotation
    /// (`promote-full/ID`).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Promote => "promote",
            CommandKind::PromoteFull => "promote-full",
            CommandKind::Abort => "abort",
            CommandKind::Pause => "pause",
            CommandKind::Resume => "resume",
            CommandKind::Retry => "retry",
        }
    }

    /// The command an admin API path names (`/promote-full`), in the
    /// spelling of [`CommandKind::as_str`] only.
    pub fn from_path(path: &str) -> Option<Self> {
        let word = path.strip_prefix('/')?;
        CommandKind::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// The command as people type it (`promote --full`), for messages and
    /// the admin API's receipt (`{"accepted": "promote --full"}`).
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::PromoteFull => "promote --full",
            other => other.as_str(),
        }
    }
}

impl std::fmt::Display for CommandKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a command (promote, promote-full, abort, pause, resume, retry)")]
pub struct UnknownCommand(pub String);

impl std::str::FromStr for CommandKind {
    type Err = UnknownCommand;

    /// The word of [`CommandKind::as_str`]; `promote--full` (the CLI's
    /// spelling without its space) also means [`CommandKind::PromoteFull`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "promote--full" {
            return Ok(CommandKind::PromoteFull);
        }
        CommandKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownCommand(s.to_owned()))
    }
}

/// Something to carry out. See the module docs for which repeat.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the canary with this revision (create, update or scale it up).
    EnsureCanary {
        /// The canary revision.
        revision: String,
    },
    /// Apply this route table.
    SetRoutes(Routes),
    /// Give stable the canary's revision (its template, or its upstreams).
    PromoteStable {
        /// The revision stable takes.
        revision: String,
    },
    /// Scale the canary to zero (nothing routes to it any more).
    ScaleDownCanary,
    /// Record an event for people and logs.
    Event(Event),
}

/// A transition worth telling people about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Normal or Warning, as Kubernetes Events.
    pub warning: bool,
    /// A CamelCase reason, e.g. `AnalysisFailed`.
    pub reason: &'static str,
    /// A sentence with the numbers.
    pub message: String,
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The next status, to be stored before the actions are carried out.
    pub status: CanaryStatus,
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// When a timer next expires, if one runs: decide again by then.
    pub requeue_after: Option<Duration>,
}

impl Decision {
    /// The routes this decision asks for.
    pub fn routes(&self) -> Option<&Routes> {
        self.actions.iter().find_map(|a| match a {
            Action::SetRoutes(r) => Some(r),
            _ => None,
        })
    }

    /// Whether only a person can move the rollout on: it is paused (a
    /// `pause: {}` step, a person's `pause`, an inconclusive gate under
    /// `onInconclusive: pause`) with its canary ready and no timer running.
    /// The next decision can then only differ after a command or a spec
    /// edit (or a new analysis report, which the judge schedules itself),
    /// so a driver need not poll: `requeue_after` is `None` and, unlike a
    /// wait for Deployments to roll out (`Promoting`, `RollingBack`, an
    /// unready canary), nothing in the cluster is converging either.
    pub fn waits_for_a_person(&self) -> bool {
        self.status.phase == Phase::Paused
            && self.requeue_after.is_none()
            && self.status.canary_unready_since.is_none()
    }

    /// The events this decision records.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.actions.iter().filter_map(|a| match a {
            Action::Event(e) => Some(e),
            _ => None,
        })
    }
}

/// Upper bound on transitions in one decision: each pass either takes a step
/// or changes phase, so steps plus a few phase changes always suffice.
fn max_passes(plan: &Plan) -> usize {
    plan.steps.len() * 2 + 16
}

/// Decides what happens next. Pure: the same inputs give the same output.
pub fn decide(plan: &Plan, status: &CanaryStatus, obs: &Observation, now: Time) -> Decision {
    let mut m = Machine {
        plan,
        obs,
        now,
        s: status.clone(),
        events: Vec::new(),
    };
    m.s.step = m.s.step.min(steps_len(plan));
    m.command();
    let mut converged = false;
    for _ in 0..max_passes(plan) {
        let before = m.s.clone();
        m.pass();
        if m.s == before {
            converged = true;
            break;
        }
    }
    debug_assert!(converged, "rollout did not settle: {:?}", m.s);
    m.describe();
    let actions = m.actions();
    let requeue_after = m.requeue_after();
    Decision {
        status: m.s,
        actions,
        requeue_after,
    }
}

/// The status to go on from when the process that runs the rollout was
/// down for `down` (local mode: `coalmine run` stopped, then restarted
/// from its `--state` file). Nothing served the canary or judged it in
/// that time, so the timers that measure time *under traffic* are moved
/// later by `down`: a timed pause (bake time) and a gate's timeout get the
/// time they had left, and the progress deadline does not fire for a
/// canary that was never checked. The rollout's start and a person's
/// pause keep their instants (they say when something happened, they do
/// not time anything). In Kubernetes the data plane keeps serving while
/// the controller is down, so the controller counts wall-clock time, as
/// Argo Rollouts does with its stored pause start.
pub fn discount_downtime(status: &CanaryStatus, down: Duration) -> CanaryStatus {
    let mut s = status.clone();
    if down.is_zero() || !matches!(s.phase, Phase::Progressing | Phase::Paused) {
        return s;
    }
    s.step_started_at = s.step_started_at.map(|t| t.plus(down));
    s.canary_unready_since = s.canary_unready_since.map(|t| t.plus(down));
    s
}

fn steps_len(plan: &Plan) -> u32 {
    u32::try_from(plan.steps.len()).unwrap_or(u32::MAX)
}

struct Machine<'a> {
    plan: &'a Plan,
    obs: &'a Observation,
    now: Time,
    s: CanaryStatus,
    events: Vec<Event>,
}

impl<'a> Machine<'a> {
    fn event(&mut self, reason: &'static str, message: String) {
        self.events.push(Event {
            warning: false,
            reason,
            message,
        });
    }

    fn warning(&mut self, reason: &'static str, message: String) {
        self.events.push(Event {
            warning: true,
            reason,
            message,
        });
    }

    fn current_step(&self) -> Option<&PlanStep> {
        self.plan.steps.get(self.s.step as usize)
    }

    /// "step 3/8" means three steps are done, the fourth is running.
    fn step_label(&self) -> String {
        format!("step {}/{}", self.s.step, self.plan.steps.len())
    }

    /// The judge's report, if it belongs to the rollout under way.
    fn report(&self) -> Option<&'a AnalysisReport> {
        let obs: &'a Observation = self.obs;
        let r = obs.analysis.as_ref()?;
        let started = self.s.rollout_started_at?;
        // Collected since this rollout began, and evaluated after it began:
        // a report from the very instant a rollout starts holds no evidence
        // about it, whatever revision it names.
        (Some(&r.revision) == self.s.canary_revision.as_ref()
            && r.since >= started
            && r.at > started)
            .then_some(r)
    }

    fn command(&mut self) {
        let Some(cmd) = &self.obs.command else {
            return;
        };
        if self.s.last_command.as_deref() == Some(cmd.id.as_str()) {
            return;
        }
        self.s.last_command = Some(cmd.id.clone());
        let phase = self.s.phase;
        let active = matches!(phase, Phase::Progressing | Phase::Paused);
        match cmd.kind {
            CommandKind::Promote if active => {
                self.s.pause = None;
                if let Some(step) = self.current_step().map(PlanStep::describe) {
                    let label = self.step_label();
                    self.event("PromotedStep", format!("{label} ({step}) ended by promote"));
                    self.advance();
                }
            }
            CommandKind::PromoteFull if active => {
                self.s.pause = None;
                self.event(
                    "PromotedFully",
                    format!(
                        "promote --full at {}: skipping the remaining steps",
                        self.step_label()
                    ),
                );
                self.start_promotion();
            }
            CommandKind::Abort if active => {
                let label = self.step_label();
                self.rollback(
                    RollbackReason::Aborted,
                    format!("aborted by a person at {label}"),
                );
            }
            CommandKind::Pause if active => {
                if self
                    .s
                    .pause
                    .as_ref()
                    .is_none_or(|p| p.reason != PauseReason::User)
                {
                    self.s.pause = Some(PauseStatus {
                        reason: PauseReason::User,
                        since: self.now,
                    });
                    self.event(
                        "Paused",
                        format!("paused by a person at {}", self.step_label()),
                    );
                }
            }
            CommandKind::Resume if active && self.s.pause.is_some() => {
                self.s.pause = None;
                // The step's timer starts again: a pause or a gate gets its
                // whole time after a person resumes it.
                self.s.step_started_at = Some(self.now);
                self.event("Resumed", format!("resumed at {}", self.step_label()));
            }
            CommandKind::Resume
                if active && matches!(self.current_step(), Some(PlanStep::Pause(_))) =>
            {
                self.event(
                    "Resumed",
                    format!("pause at {} ended by resume", self.step_label()),
                );
                self.advance();
            }
            CommandKind::Retry
                if matches!(phase, Phase::RolledBack | Phase::Failed)
                    && self.s.canary_revision.as_ref() == Some(&self.obs.desired_revision) =>
            {
                let rev = self.obs.desired_revision.clone();
                self.start_rollout(rev, "Retry", "retrying");
            }
            kind => {
                let why = match phase {
                    Phase::Promoting => "the canary is already being promoted",
                    Phase::RollingBack => "the canary is being rolled back",
                    Phase::RolledBack | Phase::Failed if kind != CommandKind::Retry => {
                        "the rollout is over; use retry to start it again"
                    }
                    Phase::RolledBack | Phase::Failed => {
                        "a newer revision replaces the one rolled back"
                    }
                    Phase::Idle | Phase::Promoted => "no rollout is under way",
                    Phase::Progressing | Phase::Paused if kind == CommandKind::Retry => {
                        "the rollout is still under way"
                    }
                    Phase::Progressing | Phase::Paused => "the rollout is not paused",
                };
                self.warning(
                    "CommandIgnored",
                    format!("`{}` ignored in phase {phase}: {why}", kind.name()),
                );
            }
        }
    }

    fn pass(&mut self) {
        let desired = self.obs.desired_revision.clone();
        let Some(stable) = self.s.stable_revision.clone() else {
            self.s.stable_revision = Some(desired.clone());
            self.s.phase = Phase::Idle;
            self.event("Initialized", format!("stable runs revision {desired}"));
            return;
        };
        match self.s.phase {
            Phase::Idle | Phase::Promoted => {
                if desired != stable {
                    self.start_rollout(desired, "RolloutStarted", "new revision");
                }
            }
            Phase::RolledBack | Phase::Failed => {
                if desired == stable {
                    self.s.canary_revision = None;
                    self.s.phase = Phase::Idle;
                    self.event(
                        "Reverted",
                        format!("the spec is back at stable revision {stable}"),
                    );
                } else if Some(&desired) != self.s.canary_revision.as_ref() {
                    self.start_rollout(desired, "RolloutStarted", "new revision");
                }
            }
            Phase::Progressing | Phase::Paused => {
                if desired == stable {
                    self.clear_traffic();
                    let old = self.s.canary_revision.take().unwrap_or_default();
                    self.s.phase = Phase::Idle;
                    self.s.pause = None;
                    self.event(
                        "RolloutCancelled",
                        format!(
                            "the spec went back to stable revision {stable}; canary {old} removed"
                        ),
                    );
                } else if Some(&desired) != self.s.canary_revision.as_ref() {
                    let old = self.s.canary_revision.clone().unwrap_or_default();
                    self.start_rollout(desired, "RolloutRestarted", &format!("newer than {old}"));
                } else {
                    self.progress();
                }
            }
            // The analysis is over once promotion starts; revisions that
            // arrive meanwhile start a rollout after it completes.
            Phase::Promoting => {
                if self.obs.stable_ready_revision.is_some()
                    && self.obs.stable_ready_revision == self.s.canary_revision
                {
                    let rev = self.s.canary_revision.take().unwrap_or_default();
                    self.s.stable_revision = Some(rev.clone());
                    self.clear_traffic();
                    self.s.phase = Phase::Promoted;
                    self.event(
                        "Promoted",
                        format!("revision {rev} is stable; canary scaled down"),
                    );
                }
            }
            Phase::RollingBack => {
                if self.obs.canary_gone {
                    let reason = self.s.rollback.as_ref().map(|r| r.reason);
                    self.s.phase = if reason == Some(RollbackReason::ProgressDeadlineExceeded) {
                        Phase::Failed
                    } else {
                        Phase::RolledBack
                    };
                    let rev = self.s.canary_revision.clone().unwrap_or_default();
                    self.event(
                        "RolledBack",
                        format!("canary {rev} scaled down; stable serves everything"),
                    );
                }
            }
        }
    }

    fn start_rollout(&mut self, revision: String, reason: &'static str, why: &str) {
        let stable = self.s.stable_revision.clone().unwrap_or_default();
        self.clear_traffic();
        self.s.phase = Phase::Progressing;
        self.s.step = 0;
        self.s.canary_revision = Some(revision.clone());
        self.s.rollout_started_at = Some(self.now);
        self.s.step_started_at = Some(self.now);
        self.s.canary_unready_since = None;
        self.s.pause = None;
        self.s.rollback = None;
        self.s.analysis = None;
        self.event(
            reason,
            format!("canary {revision} against stable {stable} ({why})"),
        );
    }

    fn clear_traffic(&mut self) {
        self.s.weight = Percent::ZERO;
        self.s.header_routes.clear();
        self.s.mirror_percent = Percent::ZERO;
    }

    fn rollback(&mut self, reason: RollbackReason, message: String) {
        self.clear_traffic();
        self.s.pause = None;
        self.s.phase = Phase::RollingBack;
        self.s.rollback = Some(RollbackStatus {
            reason,
            message: message.clone(),
            at: self.now,
        });
        let event = match reason {
            RollbackReason::AnalysisFailed => "AnalysisFailed",
            RollbackReason::Aborted => "Aborted",
            RollbackReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            RollbackReason::Inconclusive => "AnalysisInconclusive",
            RollbackReason::CanaryUnreachable => "CanaryUnreachable",
        };
        self.warning(event, format!("rolling back: {message}"));
    }

    fn start_promotion(&mut self) {
        self.s.phase = Phase::Promoting;
        self.s.step = steps_len(self.plan);
        self.s.step_started_at = Some(self.now);
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        self.event("Promoting", format!("stable takes revision {rev}"));
    }

    /// Whether the canary serves the weight this decision has reached.
    fn canary_ready(&self) -> bool {
        self.obs.canary_ready && self.obs.canary_ready_at.is_none_or(|w| w == self.s.weight)
    }

    fn advance(&mut self) {
        self.s.step = (self.s.step + 1).min(steps_len(self.plan));
        self.s.step_started_at = Some(self.now);
        if self.s.pause.is_none() {
            self.s.phase = Phase::Progressing;
        }
    }

    /// One move of a rollout under way: judge, check readiness, take a step.
    fn progress(&mut self) {
        if let Some(report) = self.report() {
            let status = AnalysisStatus {
                verdict: report.verdict,
                evaluated_at: Some(report.at),
                metrics: report.metrics.clone(),
            };
            let failed = report.verdict == Verdict::Fail;
            self.s.analysis = Some(status);
            if failed {
                let why = failure_summary(&report.metrics);
                self.rollback(RollbackReason::AnalysisFailed, why);
                return;
            }
        }
        if let Some(why) = &self.obs.canary_down {
            let why = why.clone();
            self.rollback(RollbackReason::CanaryUnreachable, why);
            return;
        }
        if self.canary_ready() {
            self.s.canary_unready_since = None;
        } else {
            let since = *self.s.canary_unready_since.get_or_insert(self.now);
            if self.now.since(since) >= self.plan.progress_deadline {
                let deadline = self.plan.progress_deadline;
                self.rollback(
                    RollbackReason::ProgressDeadlineExceeded,
                    format!("the canary was not ready for {deadline} (progressDeadline)"),
                );
                return;
            }
        }
        if self.s.pause.is_some() {
            self.s.phase = Phase::Paused;
            return;
        }
        if !self.canary_ready() {
            self.s.phase = Phase::Progressing;
            return;
        }
        let Some(step) = self.current_step().cloned() else {
            self.start_promotion();
            return;
        };
        // Events name the step being taken by its ordinal ("step 4 of 8");
        // the status message counts steps done ("step 3/8"), like Argo.
        let label = format!("step {} of {}", self.s.step + 1, self.plan.steps.len());
        let started = self.s.step_started_at.unwrap_or(self.now);
        match step {
            PlanStep::SetWeight(w) => {
                self.s.weight = w;
                self.event("WeightSet", format!("{label}: canary weight {w}%"));
                self.advance();
            }
            PlanStep::SetHeaderRoute(m) => {
                let n = m.len();
                self.s.header_routes = m;
                self.event(
                    "HeaderRouteSet",
                    format!("{label}: {n} header route(s) to the canary"),
                );
                self.advance();
            }
            PlanStep::SetMirror(p) => {
                self.s.mirror_percent = p;
                self.event(
                    "MirrorSet",
                    format!("{label}: mirroring {p}% of stable requests"),
                );
                self.advance();
            }
            PlanStep::Pause(Some(d)) if self.now >= started.plus(d) => self.advance(),
            PlanStep::Pause(_) => self.s.phase = Phase::Paused,
            PlanStep::Analysis { timeout } => {
                let passed = self
                    .report()
                    .is_some_and(|r| r.verdict == Verdict::Pass && r.at > started);
                if passed {
                    self.event(
                        "AnalysisPassed",
                        format!("{label}: every metric within tolerance"),
                    );
                    self.advance();
                } else if self.now >= started.plus(timeout) {
                    self.inconclusive(&label, timeout);
                } else {
                    self.s.phase = Phase::Progressing;
                }
            }
        }
    }

    fn inconclusive(&mut self, label: &str, timeout: Duration) {
        let verdict = self
            .s
            .analysis
            .as_ref()
            .map_or(Verdict::NoData, |a| a.verdict);
        let what = format!("{label}: no verdict within {timeout} (judge says {verdict})");
        match self.plan.on_inconclusive {
            OnInconclusive::Pause => {
                self.s.pause = Some(PauseStatus {
                    reason: PauseReason::Inconclusive,
                    since: self.now,
                });
                self.s.phase = Phase::Paused;
                self.warning(
                    "AnalysisInconclusive",
                    format!("{what}; paused for a person"),
                );
            }
            OnInconclusive::Rollback => self.rollback(RollbackReason::Inconclusive, what),
            OnInconclusive::Promote => {
                self.warning(
                    "AnalysisInconclusive",
                    format!("{what}; going on (onInconclusive: promote)"),
                );
                self.advance();
            }
        }
    }

    /// The message and conditions, from the final state of this decision.
    fn describe(&mut self) {
        let s = &self.s;
        let rev = |r: &Option<String>| r.clone().unwrap_or_default();
        let message = match s.phase {
            Phase::Idle => format!("stable revision {}; no rollout", rev(&s.stable_revision)),
            Phase::Promoted => format!("promoted: revision {} is stable", rev(&s.stable_revision)),
            Phase::Promoting => format!(
                "promoting revision {}: waiting for stable to roll out",
                rev(&s.canary_revision)
            ),
            Phase::RollingBack | Phase::RolledBack | Phase::Failed => {
                let why = s.rollback.as_ref().map_or("", |r| r.message.as_str());
                let state = if s.phase == Phase::RollingBack {
                    "rolling back"
                } else {
                    "rolled back"
                };
                format!("{state} revision {}: {why}", rev(&s.canary_revision))
            }
            Phase::Progressing | Phase::Paused => {
                let waiting = self.waiting_for();
                format!("{}: weight {}%, {waiting}", self.step_label(), s.weight)
            }
        };
        self.s.message = message;
        let phase = self.s.phase;
        let (status, reason) = match phase {
            Phase::Progressing | Phase::Paused | Phase::Promoting | Phase::RollingBack => {
                (ConditionStatus::True, RolloutReason::Phase(phase))
            }
            Phase::RolledBack | Phase::Failed => (
                ConditionStatus::False,
                self.s
                    .rollback
                    .as_ref()
                    .map_or(RolloutReason::Phase(phase), |r| {
                        RolloutReason::Rollback(r.reason)
                    }),
            ),
            Phase::Idle | Phase::Promoted => (ConditionStatus::False, RolloutReason::Phase(phase)),
        };
        let message = self.s.message.clone();
        self.condition("Progressing", status, reason, &message);
        let pause_reason = match &self.s.pause {
            Some(p) => RolloutReason::Pause(p.reason),
            None if phase == Phase::Paused => RolloutReason::PauseStep,
            None => RolloutReason::NotPaused,
        };
        self.condition(
            "Paused",
            ConditionStatus::from(phase == Phase::Paused),
            pause_reason,
            "",
        );
        if let Some(a) = &self.s.analysis {
            let status = match a.verdict {
                Verdict::Pass | Verdict::Running => ConditionStatus::True,
                Verdict::Fail => ConditionStatus::False,
                Verdict::Inconclusive | Verdict::NoData => ConditionStatus::Unknown,
            };
            let reason = RolloutReason::Verdict(a.verdict);
            let msg = analysis_summary(&a.metrics);
            self.condition("Analysis", status, reason, &msg);
        }
    }

    fn waiting_for(&self) -> String {
        if let Some(p) = &self.s.pause {
            return match p.reason {
                PauseReason::User => "paused by a person; resume or promote to go on".into(),
                PauseReason::Inconclusive => {
                    "paused: the analysis gate timed out without a verdict; promote, resume or abort".into()
                }
            };
        }
        if !self.canary_ready() {
            let since = self.s.canary_unready_since.unwrap_or(self.now);
            return format!(
                "waiting for the canary to be ready (deadline {})",
                since.plus(self.plan.progress_deadline)
            );
        }
        let started = self.s.step_started_at.unwrap_or(self.now);
        match self.current_step() {
            Some(PlanStep::Pause(Some(d))) => format!("paused for {d} until {}", started.plus(*d)),
            Some(PlanStep::Pause(None)) => "paused until promoted".into(),
            Some(PlanStep::Analysis { .. }) => {
                let evidence = self
                    .s
                    .analysis
                    .as_ref()
                    .map(|a| analysis_summary(&a.metrics));
                match evidence.filter(|e| !e.is_empty()) {
                    Some(e) => format!("waiting for evidence ({e})"),
                    None => "waiting for evidence".into(),
                }
            }
            _ => "stepping".into(),
        }
    }

    fn condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: RolloutReason,
        message: &str,
    ) {
        self.s
            .conditions
            .set(type_, status, reason.as_str(), message, self.now);
    }

    fn actions(&mut self) -> Vec<Action> {
        let s = &self.s;
        let mut actions = Vec::with_capacity(4 + self.events.len());
        if s.phase.canary_live() {
            let revision = s.canary_revision.clone().unwrap_or_default();
            let affinity = self.plan.session_affinity.as_ref();
            actions.push(Action::EnsureCanary {
                revision: revision.clone(),
            });
            actions.push(Action::SetRoutes(Routes {
                canary_weight: s.weight.get(),
                header_routes: s.header_routes.clone(),
                mirror_percent: s.mirror_percent.get(),
                sticky_cookie: affinity.map(|a| a.cookie.clone()),
                sticky_max_age: affinity.and_then(|a| a.max_age),
            }));
            if s.phase == Phase::Promoting {
                actions.push(Action::PromoteStable { revision });
            }
        } else {
            // Built from nothing rather than from the status, so that no
            // path through the machine can leave traffic on a dead canary.
            actions.push(Action::SetRoutes(Routes::all_stable()));
            actions.push(Action::ScaleDownCanary);
        }
        actions.extend(self.events.drain(..).map(Action::Event));
        actions
    }

    fn requeue_after(&self) -> Option<Duration> {
        if !matches!(self.s.phase, Phase::Progressing | Phase::Paused) {
            return None;
        }
        let mut due: Vec<Time> = Vec::new();
        if let Some(since) = self.s.canary_unready_since {
            due.push(since.plus(self.plan.progress_deadline));
        }
        if self.s.pause.is_none() && self.canary_ready() {
            let started = self.s.step_started_at.unwrap_or(self.now);
            match self.current_step() {
                Some(PlanStep::Pause(Some(d))) => due.push(started.plus(*d)),
                Some(PlanStep::Analysis { timeout }) => due.push(started.plus(*timeout)),
                _ => {}
            }
        }
        due.into_iter().min().map(|t| t.since(self.now))
    }
}

/// `errors evidence 7.9 of 20, slow evidence 1.2 of 20` for the metrics
/// with evidence.
fn analysis_summary(metrics: &[MetricStatus]) -> String {
    metrics
        .iter()
        .filter_map(|m| {
            let e = evidence(m.e_value?);
            Some(match m.e_threshold {
                Some(t) => format!("{} evidence {e} of {}", m.name, evidence(t)),
                None => format!("{} evidence {e}", m.name),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The failing metrics with their numbers, for the status and the event:
/// `metric errors failed: canary 1.1% vs stable 0.50%, ratio 2.20
/// (1.30–4.10), evidence 25 of 20 (41 bad of 3700 canary requests)`.
fn failure_summary(metrics: &[MetricStatus]) -> String {
    let failed: Vec<String> = metrics
        .iter()
        .filter(|m| m.verdict == Verdict::Fail)
        .map(|m| {
            let mut facts = Vec::new();
            if let (Some(c), Some(b)) = (m.canary_rate, m.stable_rate) {
                facts.push(format!("canary {} vs stable {}", percent(c), percent(b)));
            }
            if let Some(r) = m.ratio {
                let mut f = format!("ratio {}", ratio(r));
                if let Some([lo, hi]) = m.ratio_interval {
                    f.push_str(&format!(" ({}–{})", ratio(lo), ratio(hi)));
                }
                facts.push(f);
            }
            if let Some(e) = m.e_value {
                facts.push(match m.e_threshold {
                    Some(t) => format!("evidence {} of {}", evidence(e), evidence(t)),
                    None => format!("evidence {}", evidence(e)),
                });
            }
            if let Some(v) = m.value {
                facts.push(format!("value {}", short(v)));
            }
            let mut s = format!("metric {} failed", m.name);
            if !facts.is_empty() {
                s.push_str(&format!(": {}", facts.join(", ")));
            }
            if let (Some(x), Some(n)) = (m.canary_events, m.canary_requests) {
                s.push_str(&format!(" ({x} bad of {n} canary requests)"));
            }
            if let Some(msg) = &m.message {
                s.push_str(&format!(" ({msg})"));
            }
            s
        })
        .collect();
    if failed.is_empty() {
        "the analysis failed".into()
    } else {
        failed.join("; ")
    }
}

/// Two significant decimals, without noise: 7.9, 0.011, 2.2.
fn short(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let digits = if x.abs() >= 10.0 {
        1
    } else if x.abs() >= 1.0 {
        2
    } else {
        (2 - x.abs().log10().floor() as i32).clamp(2, 8) as usize
    };
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}
