//! The `status` of a Canary: everything the rollout state machine needs to
//! go on after a crash, and what users and tools read.
//!
//! There is no state outside this struct: a process that restarts with the
//! last status written reaches the same decisions as the one that died.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Time;
use crate::percent::Percent;
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

impl Phase {
    /// The name on the wire (`status.phase`), also a condition's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoting => "Promoting",
            Phase::Promoted => "Promoted",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

impl Verdict {
    /// The name on the wire (`RUNNING` is `Running`), also the `Analysis`
    /// condition's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Running => "Running",
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::Inconclusive => "Inconclusive",
            Verdict::NoData => "NoData",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the rollout is paused outside a pause step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PauseReason {
    /// A person ran `pause`.
    User,
    /// An analysis gate timed out and `onInconclusive` is `pause`.
    Inconclusive,
}

impl PauseReason {
    /// The name on the wire, also the `Paused` condition's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::User => "User",
            PauseReason::Inconclusive => "Inconclusive",
        }
    }
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

impl RollbackReason {
    /// The name on the wire, also the `Progressing` condition's reason
    /// after a rollback.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::AnalysisFailed => "AnalysisFailed",
            RollbackReason::Aborted => "Aborted",
            RollbackReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            RollbackReason::Inconclusive => "Inconclusive",
            RollbackReason::CanaryUnreachable => "CanaryUnreachable",
        }
    }
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

/// A condition's `status`: `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// It cannot be told (also what any other word reads as).
    #[serde(other)]
    Unknown,
}

impl ConditionStatus {
    /// `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// The reasons of the conditions the rollout state machine keeps
/// (`Progressing`, `Paused`, `Analysis`); each is the name of a phase,
/// a rollback or pause reason, a verdict, or one of two of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutReason {
    /// `Progressing`: the phase (`Progressing`, `Promoted`, …).
    Phase(Phase),
    /// `Progressing` after a rollback: its cause.
    Rollback(RollbackReason),
    /// `Paused`: who paused.
    Pause(PauseReason),
    /// `Paused`: a pause step waits.
    PauseStep,
    /// `Paused` is `False`.
    NotPaused,
    /// `Analysis`: the overall verdict.
    Verdict(Verdict),
}

impl RolloutReason {
    /// The reason on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutReason::Phase(p) => p.as_str(),
            RolloutReason::Rollback(r) => r.as_str(),
            RolloutReason::Pause(r) => r.as_str(),
            RolloutReason::PauseStep => "PauseStep",
            RolloutReason::NotPaused => "NotPaused",
            RolloutReason::Verdict(v) => v.as_str(),
        }
    }
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Progressing`, `Paused` or `Analysis`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(with = "String")]
    pub status: ConditionStatus,
    /// A CamelCase reason.
    // The `as_str` of a `RolloutReason` or of the controller's reasons;
    // text, so that a status any version wrote reads back.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
}

/// A Canary's conditions, one per type, in the order they were first set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Conditions(pub Vec<Condition>);

impl Conditions {
    /// Sets the condition of `type_`, moving its `lastTransitionTime` only
    /// when its status changes; a new type is added at the end.
    pub fn set(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        now: Time,
    ) {
        match self.0.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.status = status;
                    c.last_transition_time = now;
                }
                reason.clone_into(&mut c.reason);
                message.clone_into(&mut c.message);
            }
            None => self.0.push(Condition {
                type_: type_.to_owned(),
                status,
                reason: reason.to_owned(),
                message: message.to_owned(),
                last_transition_time: now,
            }),
        }
    }

    /// The condition of `type_`, if set.
    pub fn get(&self, type_: &str) -> Option<&Condition> {
        self.0.iter().find(|c| c.type_ == type_)
    }

    /// Whether no condition is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The conditions in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Condition> {
        self.0.iter()
    }
}

impl From<Vec<Condition>> for Conditions {
    fn from(v: Vec<Condition>) -> Self {
        Conditions(v)
    }
}

impl<'a> IntoIterator for &'a Conditions {
    type Item = &'a Condition;
    type IntoIter = std::slice::Iter<'a, Condition>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
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
    pub weight: Percent,
    /// Header routes in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_routes: Vec<HeaderMatch>,
    /// Mirror percent in effect.
    #[serde(default)]
    pub mirror_percent: Percent,
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
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
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

impl CanaryStatus {
    /// A stored status (the CR's `status`, a `--state` file), or what is
    /// wrong with it, naming the field: `weight 140 is above 100 (a
    /// percent is 0 to 100)`, `phase: unknown variant …`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        let status = serde_path_to_error::deserialize(&mut de).map_err(located)?;
        de.end().map_err(|e| e.to_string())?;
        Ok(status)
    }

    /// [`CanaryStatus::from_json`] of a JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Self, String> {
        serde_path_to_error::deserialize(value).map_err(located)
    }
}

/// serde's error after the path of the field it is about; a value out of
/// range ([`crate::percent::OutOfRange`], which starts with the number)
/// follows the field's name directly.
fn located(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    if path == "." {
        inner
    } else if inner.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        format!("{path} {inner}")
    } else {
        format!("{path}: {inner}")
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Each word type's `as_str` is what serde writes, and reads back.
    fn round_trips<T>(values: &[T], as_str: fn(&T) -> &'static str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        for v in values {
            let json = serde_json::to_value(v).expect("serializes");
            assert_eq!(json, Value::String(as_str(v).into()));
            assert_eq!(&serde_json::from_value::<T>(json).expect("reads"), v);
        }
    }

    #[test]
    fn words_on_the_wire_are_as_str() {
        use Phase::*;
        round_trips(
            &[
                Idle,
                Progressing,
                Paused,
                Promoting,
                Promoted,
                RollingBack,
                RolledBack,
                Failed,
            ],
            |p| p.as_str(),
        );
        round_trips(
            &[
                Verdict::Running,
                Verdict::Pass,
                Verdict::Fail,
                Verdict::Inconclusive,
                Verdict::NoData,
            ],
            |v| v.as_str(),
        );
        round_trips(&[PauseReason::User, PauseReason::Inconclusive], |r| {
            r.as_str()
        });
        round_trips(
            &[
                RollbackReason::AnalysisFailed,
                RollbackReason::Aborted,
                RollbackReason::ProgressDeadlineExceeded,
                RollbackReason::Inconclusive,
                RollbackReason::CanaryUnreachable,
            ],
            |r| r.as_str(),
        );
        round_trips(
            &[
                ConditionStatus::True,
                ConditionStatus::False,
                ConditionStatus::Unknown,
            ],
            |s| s.as_str(),
        );
        assert_eq!(Phase::RollingBack.to_string(), "RollingBack");
        assert_eq!(Verdict::NoData.to_string(), "NoData");
        assert_eq!(
            serde_json::from_value::<ConditionStatus>(json!("Maybe")).ok(),
            Some(ConditionStatus::Unknown)
        );
        assert_eq!(RolloutReason::Phase(Phase::Promoted).as_str(), "Promoted");
        assert_eq!(
            RolloutReason::Rollback(RollbackReason::Aborted).as_str(),
            "Aborted"
        );
        assert_eq!(RolloutReason::Pause(PauseReason::User).as_str(), "User");
        assert_eq!(RolloutReason::PauseStep.as_str(), "PauseStep");
        assert_eq!(RolloutReason::NotPaused.as_str(), "NotPaused");
        assert_eq!(RolloutReason::Verdict(Verdict::Pass).as_str(), "Pass");
    }

    #[test]
    fn conditions_set_moves_the_transition_time_only_on_a_new_status() {
        let (t0, t1) = (Time::from_unix_millis(0), Time::from_unix_millis(1000));
        let mut c = Conditions::default();
        c.set("Valid", ConditionStatus::True, "Valid", "", t0);
        c.set("Valid", ConditionStatus::True, "Valid", "again", t1);
        let valid = c.get("Valid").expect("set");
        assert_eq!(
            (valid.last_transition_time, valid.message.as_str()),
            (t0, "again")
        );
        c.set("Valid", ConditionStatus::False, "InvalidSpec", "bad", t1);
        c.set("Applied", ConditionStatus::True, "Applied", "", t1);
        let valid = c.get("Valid").expect("set");
        assert_eq!(
            (
                valid.last_transition_time,
                valid.status,
                valid.reason.as_str()
            ),
            (t1, ConditionStatus::False, "InvalidSpec")
        );
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Valid", "Applied"]);
        // On the wire, a plain list.
        let json = serde_json::to_value(&c).expect("serializes");
        assert_eq!(json[1]["status"], "True");
        assert_eq!(json[0]["lastTransitionTime"], "1970-01-01T00:00:01Z");
        let back: Conditions = serde_json::from_value(json).expect("reads");
        assert_eq!(back, c);
    }

    #[test]
    fn a_stored_status_round_trips_and_an_impossible_weight_is_named() {
        let text = r#"{"phase":"Paused","step":2,"weight":25,"mirrorPercent":10,"conditions":[{"type":"Paused","status":"True","reason":"PauseStep","message":"","lastTransitionTime":"1970-01-01T00:00:00Z"}],"message":"m"}"#;
        let status = CanaryStatus::from_json(text).expect("reads");
        assert_eq!((status.weight.get(), status.mirror_percent.get()), (25, 10));
        assert_eq!(serde_json::to_string(&status).expect("writes"), text);
        assert_eq!(
            CanaryStatus::from_value(serde_json::from_str(text).expect("json")).as_ref(),
            Ok(&status)
        );
        let e = CanaryStatus::from_json(&text.replace("\"weight\":25", "\"weight\":140"))
            .expect_err("140 is no percent");
        assert!(
            e.starts_with("weight 140 is above 100 (a percent is 0 to 100)"),
            "{e}"
        );
        let e = CanaryStatus::from_value(
            json!({"phase": "Idle", "step": 0, "weight": 0, "mirrorPercent": 101}),
        )
        .expect_err("101 is no percent");
        assert_eq!(e, "mirrorPercent 101 is above 100 (a percent is 0 to 100)");
        let e = CanaryStatus::from_value(json!({"phase": "Resting"})).expect_err("no such phase");
        assert!(e.starts_with("phase: unknown variant `Resting`"), "{e}");
    }
}
