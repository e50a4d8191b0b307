//! The judge of each rollout under way, fed by its providers once per
//! analysis interval, as `coalmine run` does.
//!
//! The judge's evidence lives in memory, one per Canary, and in the
//! Canary's status (`status.judgeState`, written with the status after
//! each judged interval): a restarted or newly elected controller
//! continues it from there, with the alpha already spent, rather than
//! starting afresh. A report counts for the rollout it was collected in only: a
//! new revision, a retry or an edit of `spec.analysis` gets a new judge
//! (see `rollout::decide`'s report rules). Collection happens inside the
//! reconcile of that Canary, so a slow provider delays only its own Canary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use coalmine_analysis::judge::Judge;
use coalmine_core::Time;
use coalmine_core::plan::Plan;
use coalmine_core::rollout::AnalysisReport;
use coalmine_core::status::{CanaryStatus, JudgeState, Phase};
use coalmine_providers::{Context, MetricSource};
use tokio::time::Instant;

/// One rollout's judge.
struct Judging {
    judge: Judge,
    sources: Vec<MetricSource>,
    revision: String,
    /// The analysis settings it was built from: an edit of the metrics
    /// mid-rollout gets a new judge.
    settings: String,
    since: Time,
    /// The canary's share of requests when the interval being collected
    /// started...
    share: f64,
    /// ...and whether it has changed since (the interval is left out).
    share_changed: bool,
    next: Instant,
    interval: StdDuration,
    report: Option<AnalysisReport>,
    /// Intervals judged, those of a previous controller included.
    intervals: u64,
}

/// The judges of every Canary this controller is rolling out.
#[derive(Default)]
pub struct Analyses {
    judges: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Judging>>>>,
}

impl std::fmt::Debug for Analyses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyses").finish_non_exhaustive()
    }
}

/// What the judge says now, and when it wants to be asked again.
#[derive(Debug, Default)]
pub struct Findings {
    /// The latest report for this rollout.
    pub report: Option<AnalysisReport>,
    /// Time to the next collection.
    pub next_in: Option<StdDuration>,
    /// The judge's evidence after an interval judged in this call, for
    /// `status.judgeState` (see [`keep_evidence`]).
    pub state: Option<JudgeState>,
}

/// Puts the evidence of [`Findings::state`] in the status to be written,
/// and drops it once the rollout is over.
pub fn keep_evidence(next: &mut CanaryStatus, state: Option<JudgeState>) {
    if !matches!(next.phase, Phase::Progressing | Phase::Paused) {
        next.judge_state = None;
    } else if let Some(state) = state {
        next.judge_state = Some(state);
    }
}

impl Analyses {
    /// Forgets a Canary's judge (deleted, or no rollout under way).
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.judges.lock() {
            m.remove(key);
        }
    }

    /// Collects an interval if one is due and returns the latest report.
    /// `share` is the canary's share of requests at the current weight.
    pub async fn observe(
        &self,
        key: &str,
        plan: &Plan,
        status: &CanaryStatus,
        share: f64,
        ctx: Context,
    ) -> Result<Findings, String> {
        let active = matches!(status.phase, Phase::Progressing | Phase::Paused);
        let Some(analysis) = plan.analysis.as_ref().filter(|_| active) else {
            self.forget(key);
            return Ok(Findings::default());
        };
        let existing = self.judges.lock().ok().and_then(|m| m.get(key).cloned());
        let settings = format!("{analysis:?}");
        let stale = |j: &Judging| {
            Some(&j.revision) != status.canary_revision.as_ref()
                || status.rollout_started_at.is_some_and(|t| j.since < t)
                || j.settings != settings
        };
        let entry = match existing {
            Some(e) if !stale(&*e.lock().await) => e,
            _ => {
                let sources = coalmine_providers::sources(analysis, None)
                    .map_err(|e| format!("spec.analysis: {e}"))?;
                let interval = analysis.interval.to_std();
                let revision = status.canary_revision.clone().unwrap_or_default();
                let (judge, since, intervals) = match resumed(key, analysis, status, &revision) {
                    Some(r) => r,
                    None => (Judge::new(analysis), Time::now(), 0),
                };
                let j = Arc::new(tokio::sync::Mutex::new(Judging {
                    judge,
                    sources,
                    revision,
                    settings: settings.clone(),
                    since,
                    share,
                    // The interval under way when the previous controller
                    // stopped is lost; the first one here starts now.
                    share_changed: false,
                    next: Instant::now() + interval,
                    interval,
                    report: None,
                    intervals,
                }));
                if let Ok(mut m) = self.judges.lock() {
                    m.insert(key.to_owned(), j.clone());
                }
                j
            }
        };
        let mut guard = entry.lock().await;
        // Through a plain reference, so the judge and the sources (both
        // fields) can be borrowed at once.
        let j = &mut *guard;
        let mut state = None;
        if Instant::now() >= j.next {
            let interval = j.interval;
            for (i, source) in j.sources.iter_mut().enumerate() {
                let observed = source.collect(&ctx).await.tagged(j.share, j.share_changed);
                j.judge.observe(i, observed);
            }
            j.share = share;
            j.share_changed = false;
            j.intervals += 1;
            match j.judge.save(analysis, &j.revision, j.since, j.intervals) {
                Ok(saved) => state = Some(saved),
                Err(e) => tracing::warn!(canary = key, "{e}"),
            }
            let (verdict, metrics) = j.judge.report();
            j.report = Some(AnalysisReport {
                revision: j.revision.clone(),
                since: j.since,
                at: Time::now(),
                verdict,
                metrics,
            });
            // A controller that fell behind skips the missed intervals
            // rather than collecting several at once.
            j.next = (j.next + interval).max(Instant::now());
        }
        // A weight set after the collection (by this reconcile) is seen at
        // the next call: the interval it falls in is left out, the cost of
        // one interval per step.
        if share.to_bits() != j.share.to_bits() {
            j.share_changed = true;
        }
        Ok(Findings {
            report: j.report.clone(),
            next_in: Some(j.next.saturating_duration_since(Instant::now())),
            state,
        })
    }
}

/// The judge saved in the Canary's status, if it judged the rollout under
/// way, with when it started and the intervals it judged.
fn resumed(
    key: &str,
    analysis: &coalmine_core::plan::AnalysisPlan,
    status: &CanaryStatus,
    revision: &str,
) -> Option<(Judge, Time, u64)> {
    let saved = status.judge_state.as_ref()?;
    match Judge::resume(analysis, saved, revision, status.rollout_started_at) {
        Ok(Some(judge)) => {
            tracing::info!(
                canary = key,
                intervals = saved.intervals,
                "the judge continues the evidence saved in the status"
            );
            Some((judge, saved.since, saved.intervals))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(canary = key, "status.{e}; the judge starts afresh");
            None
        }
    }
}
