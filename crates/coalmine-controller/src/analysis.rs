//! The judge of each rollout under way, fed by its providers once per
//! analysis interval, as `coalmine run` does.
//!
//! The judge's evidence lives in memory, one per Canary: a restarted (or
//! newly elected) controller starts judging afresh from its first
//! interval, which only delays a verdict (the e-process is valid from any
//! start). A report counts for the rollout it was collected in only: a
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
use coalmine_core::status::{CanaryStatus, Phase};
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
                let j = Arc::new(tokio::sync::Mutex::new(Judging {
                    judge: Judge::new(analysis),
                    sources,
                    revision: status.canary_revision.clone().unwrap_or_default(),
                    settings: settings.clone(),
                    since: Time::now(),
                    share,
                    share_changed: false,
                    next: Instant::now() + interval,
                    interval,
                    report: None,
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
        if Instant::now() >= j.next {
            let interval = j.interval;
            for (i, source) in j.sources.iter_mut().enumerate() {
                let observed = source.collect(&ctx).await.tagged(j.share, j.share_changed);
                j.judge.observe(i, observed);
            }
            j.share = share;
            j.share_changed = false;
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
        })
    }
}
