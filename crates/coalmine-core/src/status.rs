//! The `status` of a Canary: everything the rollout state machine needs to
//! go on after a crash, and what users and tools read.
//!
//! There is no state outside this struct: a process that restarts with the
//! last status written reaches the same decisions as the one that died.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Time;
use crate::routes::HeaderMatch;

/// Where a Canary's rollout is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Stable serves everything; no rollout has happened yet.
    #[default]
    Idle,
    /// A canary is getting traffic and following the steps.
    Progressing,
    /// Waiting: a pause step, a person's pause, or an inconclusive gate.
    Paused,
    /// All steps done: stable is taking the canary's template.
    Promoting,
    /// The canary's revision is now stable; the canary is gone.
    Promoted,
    /// Traffic is back on stable; the canary is being scaled down.
    RollingBack,
    /// The canary was judged bad or aborted; stable serves everything.
    RolledBack,
    /// The canary never became ready in time; stable serves everything.
    Failed,
}

impl Phase {
    /// Phases in which a canary is running and may get traffic.
    pub fn canary_live(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused | Phase::Promoting)
    }

    /// Phases that end a rollout and wait for a new revision (or `retry`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Idle | Phase::Promoted | Phase::RolledBack | Phase::Failed
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The judge's verdict on one metric or on all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// Evidence is still being gathered.
    #[default]
    Running,
    /// The canary is within tolerance, with confidence.
    Pass,
    /// The canary is worse than tolerated: roll back.
    Fail,
    /// Neither PASS nor FAIL by the gate's timeout.
    Inconclusive,
    /// No requests or no series: never a pass.
    NoData,
}

/// Why the rollout is paused outside a pause step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PauseReason {
    /// A person ran `pause`.
    User,
    /// An analysis gate timed out and `onInconclusive` is `pause`.
    Inconclusive,
}

/// A pause that only a person can end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStatus {
    /// Who or what paused.
    pub reason: PauseReason,
    /// Since when.
    pub since: Time,
}

/// Why a rollout was rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RollbackReason {
    /// A gating metric's evidence crossed its threshold.
    AnalysisFailed,
    /// A person ran `abort`.
    Aborted,
    /// The canary was not ready within `progressDeadline`.
    ProgressDeadlineExceeded,
    /// An analysis gate timed out and `onInconclusive` is `rollback`.
    Inconclusive,
    /// The canary's servers stopped answering mid-rollout (local mode: a
    /// refused connection or a failed health check, several times running).
    CanaryUnreachable,
}

/// Why and when the current rollout was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// The cause.
    pub reason: RollbackReason,
    /// The numbers behind it, for people.
    pub message: String,
    /// When.
    pub at: Time,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Progressing`, `Paused` or `Analysis`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
}

/// The judge's latest findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// The overall verdict.
    pub verdict: Verdict,
    /// When the judge last looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<Time>,
    /// One entry per metric.
    #[serde(default)]
    pub metrics: Vec<MetricStatus>,
}

/// The judge's saved evidence (see `coalmine_analysis::judge::Snapshot`).
/// It counts only for the rollout it was gathered in: the same canary
/// revision, from `since` (not before `rolloutStartedAt`), with the same
/// analysis settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JudgeState {
    /// The canary revision judged.
    pub revision: String,
    /// When the judge started collecting.
    pub since: Time,
    /// A fingerprint of the analysis settings it judges by.
    pub settings: String,
    /// Intervals judged so far.
    pub intervals: u64,
    /// The evidence itself, as JSON (a few kilobytes to a few tens).
    pub evidence: String,
}

/// The judge's findings on one metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// The metric's name.
    pub name: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Canary bad events per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_rate: Option<f64>,
    /// Stable bad events per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_rate: Option<f64>,
    /// Estimated canary/stable rate ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Anytime-valid interval for the ratio (finite bounds; a huge upper bound means unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_interval: Option<[f64; 2]>,
    /// The e-value against "canary within tolerance".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
    /// The e-value at which this metric fails (1/alpha_j).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_threshold: Option<f64>,
    /// Canary bad events so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_events: Option<u64>,
    /// Canary requests so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_requests: Option<u64>,
    /// Stable bad events so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_events: Option<u64>,
    /// Stable requests so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_requests: Option<u64>,
    /// Threshold metrics: the last value seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Threshold metrics: failed checks so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Dispersion factor by which the evidence is tempered (1 = bad events
    /// independent; larger when they come in clumps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispersion: Option<f64>,
    /// Latency: quantile shifts, canary minus stable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<QuantileStatus>,
    /// Why there is no data, or other detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One latency quantile of both tracks, in seconds (histogram bucket edges).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuantileStatus {
    /// The quantile, e.g. 0.99.
    pub quantile: f64,
    /// The canary's value.
    pub canary: f64,
    /// Stable's value.
    pub stable: f64,
    /// Anytime-valid interval for canary minus stable; a missing end is
    /// unbounded.
    pub shift_interval: [Option<f64>; 2],
}

/// The whole status of a Canary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Where the rollout is.
    pub phase: Phase,
    /// Index of the current step, which is also the number of steps done.
    pub step: u32,
    /// Percent of traffic the canary gets now.
    pub weight: u8,
    /// Header routes in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_routes: Vec<HeaderMatch>,
    /// Mirror percent in effect.
    #[serde(default)]
    pub mirror_percent: u8,
    /// The revision stable runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The revision under test, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// When the current rollout (or retry) of `canaryRevision` began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_started_at: Option<Time>,
    /// When the current step began: pause and gate timers count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Since when the canary has not been ready (for `progressDeadline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_unready_since: Option<Time>,
    /// A pause that only a person can end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStatus>,
    /// Set when the current rollout was rolled back, with the cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,
    /// Id of the last user command handled, so a command acts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<String>,
    /// The judge's latest findings for this rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// The judge's evidence for this rollout, so that a restarted or
    /// newly elected controller (or `coalmine run` started again with the
    /// same `--state`) continues it rather than starting afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_state: Option<JudgeState>,
    /// Kubernetes-style conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One line for people.
    #[serde(default)]
    pub message: String,
    /// Kubernetes: the `metadata.generation` of the spec this status is
    /// about, so readers can tell a status that has not caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Kubernetes: pods of both tracks, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// Kubernetes: the pods' label selector as text (`app=myapp`), for the
    /// scale subresource (`kubectl scale`, HorizontalPodAutoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Kubernetes: the pod template of `stableRevision` as the stable
    /// Deployment runs it, so that a stable Deployment deleted mid-rollout
    /// (when the spec already holds the canary's template) is recreated as
    /// it was. Written by the controller, never read by the state machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::spec::open_object_schema")]
    pub stable_template: Option<serde_json::Map<String, serde_json::Value>>,
    /// Notifications so far (when `spec.notifications` names webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationStatus>,
}

/// What became of the notifications of `spec.notifications`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    /// Messages a webhook accepted.
    pub sent: u64,
    /// Messages given up on after every try.
    pub failed: u64,
    /// Messages dropped because a webhook was too far behind.
    pub dropped: u64,
    /// The last failure, `URL: what went wrong`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
