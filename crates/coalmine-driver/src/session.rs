//! The judging session: one rollout's judge, fed by its metric sources once
//! per analysis interval.
//!
//! A session belongs to one rollout: the canary revision it judges, the
//! instant the rollout (or its retry) started, and the analysis settings it
//! was built from. When any of them changes (a new revision, a retry, an
//! edit of `spec.analysis`) the session is replaced by a new one; whether
//! the settings changed is told by comparing the checked
//! [`AnalysisPlan`]s (`PartialEq`), its fingerprint. A new session
//! continues the evidence saved in the status (`status.judgeState`) when
//! that evidence is of the same rollout and settings, so a restarted
//! process keeps the alpha already spent.
//!
//! **Collection schedule.** The first interval ends one `interval` after
//! the session starts; each collection covers the time since the previous
//! one. A process that falls behind (a stalled loop, a slow provider, a
//! reconcile that came late) collects once when it gets to it and then
//! skips the intervals it missed: the next collection is the first instant
//! on the original grid (start + k × interval) after now. A stall never
//! produces a burst of back-to-back collections; the one collection after
//! it covers the whole stall.
//!
//! The clock is passed in (`clock`, a [`tokio::time::Instant`], and `now`,
//! wall time for reports), so the schedule is tested without sleeping.

use std::time::Duration as StdDuration;

use coalmine_analysis::judge::{Judge, Observed};
use coalmine_core::Time;
use coalmine_core::plan::{AnalysisPlan, Plan};
use coalmine_core::rollout::AnalysisReport;
use coalmine_core::status::{CanaryStatus, JudgeState, Phase};
use coalmine_providers::{Context, MetricSource};
use tokio::time::Instant;

/// Where one metric's observations come from, interval by interval
/// ([`MetricSource`] in both runtimes; a stand-in in tests).
pub trait Source: Send {
    /// The metric's observation for the interval that ends now.
    fn collect<'a>(&'a mut self, ctx: &'a Context) -> impl Future<Output = Observed> + Send + 'a;
}

impl Source for MetricSource {
    fn collect<'a>(&'a mut self, ctx: &'a Context) -> impl Future<Output = Observed> + Send + 'a {
        MetricSource::collect(self, ctx)
    }
}

/// One rollout's judge and its sources.
pub struct Session<S = MetricSource> {
    judge: Judge,
    sources: Vec<S>,
    revision: String,
    /// The settings it was built from: different settings, a new session.
    settings: AnalysisPlan,
    since: Time,
    /// The canary's share of requests when the interval being collected
    /// started...
    share: f64,
    /// ...and whether it has changed since (the interval is left out).
    share_changed: bool,
    next: Instant,
    interval: StdDuration,
    report: Option<AnalysisReport>,
    /// Intervals judged, those of a previous process included.
    intervals: u64,
}

impl<S> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("revision", &self.revision)
            .field("since", &self.since)
            .field("intervals", &self.intervals)
            .finish_non_exhaustive()
    }
}

/// One judged interval.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The judge's report after it.
    pub report: AnalysisReport,
    /// The evidence to keep in the status (`None` if it could not be
    /// written; the previous evidence stays).
    pub state: Option<JudgeState>,
}

/// Whether a rollout is under way, i.e. judged.
pub fn judged_phase(phase: Phase) -> bool {
    matches!(phase, Phase::Progressing | Phase::Paused)
}

/// Keeps `slot` holding the session of the rollout under way: none when no
/// rollout is under way or the plan has no analysis; a new one (continuing
/// the evidence in `status.judgeState` where it can) when there is none or
/// the one there judges another rollout or other settings. `share` is the
/// canary's share of requests now; `sources` builds the metric sources;
/// `label` names the rollout in log lines.
#[allow(clippy::too_many_arguments)]
pub fn refresh<S: Source, E>(
    slot: &mut Option<Session<S>>,
    plan: &Plan,
    status: &CanaryStatus,
    share: f64,
    now: Time,
    clock: Instant,
    label: &str,
    sources: impl FnOnce(&AnalysisPlan) -> Result<Vec<S>, E>,
) -> Result<(), E> {
    let Some(analysis) = plan
        .analysis
        .as_ref()
        .filter(|_| judged_phase(status.phase))
    else {
        *slot = None;
        return Ok(());
    };
    if slot.as_ref().is_some_and(|s| s.judges(analysis, status)) {
        return Ok(());
    }
    let sources = sources(analysis)?;
    *slot = Some(Session::start(
        analysis, sources, status, share, now, clock, label,
    ));
    Ok(())
}

impl<S: Source> Session<S> {
    /// A session for the rollout in `status`, continuing the evidence saved
    /// there if it is of this rollout and these settings. The first
    /// interval starts at `clock` (an interval under way when a previous
    /// process stopped is lost).
    pub fn start(
        analysis: &AnalysisPlan,
        sources: Vec<S>,
        status: &CanaryStatus,
        share: f64,
        now: Time,
        clock: Instant,
        label: &str,
    ) -> Session<S> {
        let revision = status.canary_revision.clone().unwrap_or_default();
        let (judge, since, intervals) = match resumed(label, analysis, status, &revision) {
            Some(r) => r,
            None => (Judge::new(analysis), now, 0),
        };
        let interval = analysis.interval.to_std();
        Session {
            judge,
            sources,
            revision,
            settings: analysis.clone(),
            since,
            share,
            share_changed: false,
            next: clock + interval,
            interval,
            report: None,
            intervals,
        }
    }

    /// Whether this session judges the rollout in `status` with these
    /// settings.
    pub fn judges(&self, analysis: &AnalysisPlan, status: &CanaryStatus) -> bool {
        Some(&self.revision) == status.canary_revision.as_ref()
            && status.rollout_started_at.is_none_or(|t| self.since >= t)
            && self.settings == *analysis
    }

    /// When the next interval ends.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// The latest report.
    pub fn report(&self) -> Option<&AnalysisReport> {
        self.report.as_ref()
    }

    /// Intervals judged so far (those of a previous process included).
    pub fn intervals(&self) -> u64 {
        self.intervals
    }

    /// Collects and judges the interval that ended, if one did by `clock`
    /// (see the module docs for missed intervals).
    pub async fn collect_if_due(
        &mut self,
        ctx: &Context,
        now: Time,
        clock: Instant,
    ) -> Option<Judged> {
        if clock < self.next {
            return None;
        }
        for (i, source) in self.sources.iter_mut().enumerate() {
            let observed = source
                .collect(ctx)
                .await
                .tagged(self.share, self.share_changed);
            self.judge.observe(i, observed);
        }
        self.intervals += 1;
        // The next instant on the grid after `clock`: the intervals missed
        // while the process was behind are skipped, not collected.
        self.next += self.interval;
        if self.next <= clock && !self.interval.is_zero() {
            let behind = clock.duration_since(self.next).as_nanos() / self.interval.as_nanos();
            let skip = u32::try_from(behind + 1).unwrap_or(u32::MAX);
            self.next += self.interval.saturating_mul(skip);
        }
        let state =
            match self
                .judge
                .save(&self.settings, &self.revision, self.since, self.intervals)
            {
                Ok(saved) => Some(saved),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            };
        let (verdict, metrics) = self.judge.report();
        let report = AnalysisReport {
            revision: self.revision.clone(),
            since: self.since,
            at: now,
            verdict,
            metrics,
        };
        self.report = Some(report.clone());
        Some(Judged { report, state })
    }

    /// Starts the next interval's share tracking at `share` (right after a
    /// collection).
    pub fn start_interval(&mut self, share: f64) {
        self.share = share;
        self.share_changed = false;
    }

    /// Follows the canary's share of requests: a share other than the one
    /// the interval under way started with makes it one to leave out.
    pub fn follow_share(&mut self, share: f64) {
        if share.to_bits() != self.share.to_bits() {
            self.share_changed = true;
        }
    }
}

/// Puts the evidence of a judged interval in the status to be stored, and
/// drops it once the rollout is over.
pub fn keep_evidence(next: &mut CanaryStatus, state: Option<JudgeState>) {
    if !judged_phase(next.phase) {
        next.judge_state = None;
    } else if let Some(state) = state {
        next.judge_state = Some(state);
    }
}

/// The judge saved in the status, if it judged the rollout under way, with
/// when it started and the intervals it judged.
fn resumed(
    label: &str,
    analysis: &AnalysisPlan,
    status: &CanaryStatus,
    revision: &str,
) -> Option<(Judge, Time, u64)> {
    let saved = status.judge_state.as_ref()?;
    match Judge::resume(analysis, saved, revision, status.rollout_started_at) {
        Ok(Some(judge)) => {
            tracing::info!(
                canary = label,
                intervals = saved.intervals,
                "the judge continues the evidence saved in the status"
            );
            Some((judge, saved.since, saved.intervals))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(canary = label, "status.{e}; the judge starts afresh");
            None
        }
    }
}
