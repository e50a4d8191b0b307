//! The judge: per-metric verdicts and the overall one, from per-interval
//! observations, for the rollout state machine's `AnalysisReport`.
//!
//! - Comparison metrics feed a [`RatioEProcess`]; `alpha` is split evenly
//!   over them (a union bound keeps the run's false-rollback rate at most
//!   `alpha`). FAIL when the e-value reaches `1/alpha_j`; PASS when the
//!   anytime-valid interval's upper bound is below `maxRatio`.
//! - Threshold metrics count failed checks; FAIL at `failureLimit`.
//! - A metric with no observation, or whose provider keeps failing, is
//!   NoData, never a pass.
//!
//! Overall: FAIL if any metric fails; PASS if every metric passes; NoData
//! if no metric has data; Running otherwise.

use coalmine_core::Time;
use coalmine_core::plan::{AnalysisPlan, Check, Provider};
use coalmine_core::spec::BuiltinMetric;
use coalmine_core::status::{JudgeState, QuantileStatus};
use coalmine_core::status::{MetricStatus, Verdict};

use crate::dispersion::Dispersion;
use crate::eprocess::{Interval, RatioEProcess};
use crate::latency::{Histograms, ShapeCheck};

/// The time scale of the wobbles the dispersion guard looks for.
const NOISE_BLOCK: std::time::Duration = std::time::Duration::from_secs(60);

/// What a provider gave for one metric in one interval.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Counts per track (comparison metrics).
    Counts(Interval),
    /// One value (threshold metrics).
    Value(f64),
    /// Latency: the slow-request counts (judged like `Counts`) and, where
    /// the provider has them, both tracks' histograms for the shape check.
    Latency {
        /// Requests slower than `slowerThan`, per track.
        slow: Interval,
        /// The interval's histograms.
        histograms: Option<Histograms>,
    },
    /// Nothing usable, with the reason (no series, timeout, NaN, …).
    NoData(String),
}

impl Observed {
    /// Tags an interval's counts with the routing share it started with,
    /// as a fallback for providers without request counts (the share that
    /// the judge uses is measured from the counts, see
    /// [`Interval::share`]), and leaves out the counts of an interval in
    /// which the weight changed.
    ///
    /// Such an interval mixes two splits of the traffic: if the bad-event
    /// rates changed within it too, its measured share does not say which
    /// part of its bad events each version should have had, so it is
    /// dropped. Missing one interval per step costs little evidence.
    pub fn tagged(self, share: f64, weight_changed: bool) -> Observed {
        let left_out = || {
            Observed::NoData(format!(
                "the weight changed during this interval (from {:.0}%): its counts are left out",
                100.0 * share
            ))
        };
        match self {
            Observed::Counts(_) | Observed::Latency { .. } if weight_changed => left_out(),
            Observed::Counts(mut c) => {
                c.canary_share = Some(share);
                Observed::Counts(c)
            }
            Observed::Latency {
                mut slow,
                histograms,
            } => {
                slow.canary_share = Some(share);
                Observed::Latency { slow, histograms }
            }
            other => other,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum State {
    Compare {
        /// The e-process's share of the metric's alpha.
        alpha: f64,
        eprocess: Box<RatioEProcess>,
        guard: Dispersion,
        /// `builtin: latency`: the distribution-shift check, with the other
        /// half of the metric's alpha.
        shape: Option<ShapeCheck>,
    },
    Threshold {
        min: Option<f64>,
        max: Option<f64>,
        failure_limit: u32,
        failures: u32,
        checks: u32,
        last: Option<f64>,
    },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Metric {
    name: String,
    state: State,
    /// Why the latest observation gave no data, if it did not.
    no_data: Option<String>,
    /// Whether any observation carried data.
    seen_data: bool,
}

/// Judges one rollout's metrics.
#[derive(Debug, Clone)]
pub struct Judge {
    metrics: Vec<Metric>,
}

/// The judge's whole evidence, to continue it after a restart (a
/// controller's failover, `coalmine run` started again with its `--state`):
/// per metric, the e-process's log-likelihoods over its grid and its bad
/// events per share, the dispersion guard's blocks, the shape check's
/// histograms, a threshold check's counts. Serialisable; a few kilobytes
/// to a few tens for an hour of 10 s intervals. The alpha each metric
/// spends is fixed by the plan and checked again on restore.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    metrics: Vec<Metric>,
}

impl Judge {
    /// A judge for a checked analysis plan.
    pub fn new(plan: &AnalysisPlan) -> Self {
        let comparisons = plan
            .metrics
            .iter()
            .filter(|m| matches!(m.check, Check::Compare { .. }))
            .count()
            .max(1);
        let alpha_j = plan.alpha / comparisons as f64;
        let block_len = (NOISE_BLOCK.as_secs_f64() / plan.interval.as_secs_f64().max(1e-3))
            .round()
            .max(1.0) as usize;
        let metrics = plan
            .metrics
            .iter()
            .map(|m| Metric {
                name: m.name.clone(),
                no_data: None,
                seen_data: false,
                state: match m.check {
                    Check::Compare { max_ratio } => {
                        let latency = matches!(
                            m.provider,
                            Provider::Builtin {
                                metric: BuiltinMetric::Latency,
                                ..
                            }
                        );
                        // A latency metric spends half its alpha on the
                        // slow-request rate and half on the shape check.
                        let alpha = if latency { alpha_j / 2.0 } else { alpha_j };
                        State::Compare {
                            alpha,
                            eprocess: Box::new(RatioEProcess::new(max_ratio)),
                            guard: Dispersion::new(block_len),
                            shape: latency.then(|| ShapeCheck::new(alpha)),
                        }
                    }
                    Check::Threshold {
                        min,
                        max,
                        failure_limit,
                    } => State::Threshold {
                        min,
                        max,
                        failure_limit,
                        failures: 0,
                        checks: 0,
                        last: None,
                    },
                },
            })
            .collect();
        Judge { metrics }
    }

    /// The judge's evidence so far (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            metrics: self.metrics.clone(),
        }
    }

    /// The judge of `plan` with the evidence of `snapshot`: from here on it
    /// decides exactly as the judge the snapshot was taken of would have.
    /// A snapshot of another plan (other metrics, kinds, tolerances or
    /// alpha) is refused, with the metric that differs.
    pub fn restore(plan: &AnalysisPlan, snapshot: Snapshot) -> Result<Self, String> {
        let fresh = Judge::new(plan);
        if fresh.metrics.len() != snapshot.metrics.len() {
            return Err(format!(
                "the saved evidence has {} metrics, the plan {}",
                snapshot.metrics.len(),
                fresh.metrics.len()
            ));
        }
        for (new, saved) in fresh.metrics.iter().zip(&snapshot.metrics) {
            if !new.same_check(saved) {
                return Err(format!(
                    "metric `{}`: the saved evidence is of another check (`{}`)",
                    new.name, saved.name
                ));
            }
        }
        Ok(Judge {
            metrics: snapshot.metrics,
        })
    }

    /// The evidence as the status keeps it ([`JudgeState`]): the judge of
    /// `revision`, collecting since `since` by `plan`, after `intervals`.
    pub fn save(
        &self,
        plan: &AnalysisPlan,
        revision: &str,
        since: Time,
        intervals: u64,
    ) -> Result<JudgeState, String> {
        let evidence = serde_json::to_string(&self.snapshot())
            .map_err(|e| format!("the judge's evidence cannot be written: {e}"))?;
        Ok(JudgeState {
            revision: revision.to_owned(),
            since,
            settings: fingerprint(plan),
            intervals,
            evidence,
        })
    }

    /// The judge saved in `saved`, if it judged this rollout: `revision`,
    /// rolled out (or retried) at `started`, by `plan`. `Ok(None)` when the
    /// saved evidence is of another rollout or other settings (start
    /// afresh); an error when it is of this one but cannot be read.
    pub fn resume(
        plan: &AnalysisPlan,
        saved: &JudgeState,
        revision: &str,
        started: Option<Time>,
    ) -> Result<Option<Self>, String> {
        if saved.revision != revision
            || started.is_some_and(|t| saved.since < t)
            || saved.settings != fingerprint(plan)
        {
            return Ok(None);
        }
        let snapshot: Snapshot = serde_json::from_str(&saved.evidence)
            .map_err(|e| format!("judgeState.evidence: not the judge's evidence ({e})"))?;
        Judge::restore(plan, snapshot)
            .map(Some)
            .map_err(|e| format!("judgeState.evidence: {e}"))
    }

    /// Records metric `index`'s observation for one interval. An
    /// observation of the wrong kind for the metric counts as no data.
    pub fn observe(&mut self, index: usize, observed: Observed) {
        let Some(metric) = self.metrics.get_mut(index) else {
            return;
        };
        metric.no_data = None;
        match (&mut metric.state, observed) {
            (_, Observed::NoData(why)) => metric.no_data = Some(why),
            (
                State::Compare {
                    eprocess,
                    guard,
                    shape,
                    ..
                },
                observed @ (Observed::Counts(_) | Observed::Latency { .. }),
            ) => {
                let (counts, histograms) = match observed {
                    Observed::Latency { slow, histograms } => (slow, histograms),
                    Observed::Counts(c) => (c, None),
                    _ => return,
                };
                if counts.canary_total > 0 {
                    metric.seen_data = true;
                }
                eprocess.update(&counts);
                if guard.update(counts.share(), counts.canary_bad, counts.stable_bad) {
                    eprocess.set_dispersion(guard.phi());
                    eprocess.set_pass_dispersion(guard.short_phi());
                }
                if let (Some(shape), Some(h)) = (shape, histograms) {
                    shape.update(&h);
                }
            }
            (
                State::Threshold {
                    min,
                    max,
                    failures,
                    checks,
                    last,
                    ..
                },
                Observed::Value(v),
            ) => {
                if v.is_nan() {
                    metric.no_data = Some("the value is NaN".into());
                    return;
                }
                metric.seen_data = true;
                *checks += 1;
                *last = Some(v);
                if min.is_some_and(|lo| v < lo) || max.is_some_and(|hi| v > hi) {
                    *failures += 1;
                }
            }
            (State::Compare { .. }, Observed::Value(_)) => {
                metric.no_data = Some("a single value cannot be compared with stable".into());
            }
            (State::Threshold { .. }, Observed::Counts(_) | Observed::Latency { .. }) => {
                metric.no_data = Some("counts given where a value is checked".into());
            }
        }
    }

    /// Whether any metric has failed: the cheap check for callers that
    /// only need to know when to roll back (the simulator).
    pub fn fails(&self) -> bool {
        self.metrics.iter().any(Metric::fails)
    }

    /// Whether every metric passes: the verdict [`Self::report`] gives as
    /// Pass, without computing the intervals (for callers that ask often,
    /// the simulator).
    pub fn passes(&self) -> bool {
        !self.metrics.is_empty() && self.metrics.iter().all(Metric::passes)
    }

    /// The verdict on every metric and the overall one.
    pub fn report(&self) -> (Verdict, Vec<MetricStatus>) {
        let statuses: Vec<MetricStatus> = self.metrics.iter().map(Metric::status).collect();
        let verdicts: Vec<Verdict> = statuses.iter().map(|s| s.verdict).collect();
        let overall = if verdicts.contains(&Verdict::Fail) {
            Verdict::Fail
        } else if !verdicts.is_empty() && verdicts.iter().all(|v| *v == Verdict::Pass) {
            Verdict::Pass
        } else if verdicts.iter().all(|v| *v == Verdict::NoData) {
            Verdict::NoData
        } else {
            Verdict::Running
        };
        (overall, statuses)
    }
}

impl Metric {
    /// Whether `other` judges the same check: name, kind, alpha and
    /// tolerance (the e-process's grid starts at the tolerance).
    fn same_check(&self, other: &Metric) -> bool {
        if self.name != other.name {
            return false;
        }
        match (&self.state, &other.state) {
            (
                State::Compare {
                    alpha: a,
                    eprocess: e,
                    shape: s,
                    ..
                },
                State::Compare {
                    alpha: b,
                    eprocess: f,
                    shape: t,
                    ..
                },
            ) => a.to_bits() == b.to_bits() && e.same_test(f) && s.is_some() == t.is_some(),
            (
                State::Threshold {
                    min: a,
                    max: b,
                    failure_limit: c,
                    ..
                },
                State::Threshold {
                    min: d,
                    max: e,
                    failure_limit: f,
                    ..
                },
            ) => a == d && b == e && c == f,
            _ => false,
        }
    }

    fn passes(&self) -> bool {
        if self.fails() || !self.seen_data {
            return false;
        }
        match &self.state {
            State::Compare {
                alpha, eprocess, ..
            } => eprocess.passes(*alpha),
            State::Threshold { checks, .. } => *checks > 0,
        }
    }

    fn fails(&self) -> bool {
        match &self.state {
            State::Compare {
                alpha,
                eprocess,
                shape,
                ..
            } => eprocess.rejects(*alpha) || shape.as_ref().is_some_and(ShapeCheck::fails),
            State::Threshold {
                failure_limit,
                failures,
                ..
            } => failures >= failure_limit,
        }
    }

    fn status(&self) -> MetricStatus {
        let mut status = MetricStatus {
            name: self.name.clone(),
            message: self.no_data.clone(),
            ..MetricStatus::default()
        };
        let verdict = match &self.state {
            State::Compare {
                alpha,
                eprocess,
                shape,
                ..
            } => {
                let t = eprocess.totals();
                let rate = |bad: u64, total: u64| (total > 0).then(|| bad as f64 / total as f64);
                status.canary_rate = rate(t.canary_bad, t.canary_total);
                status.stable_rate = rate(t.stable_bad, t.stable_total);
                status.ratio = eprocess.ratio_estimate();
                let interval = eprocess.confidence_interval(*alpha);
                // JSON has no infinity: an unbounded upper end is reported as f64::MAX.
                status.ratio_interval = interval.map(|(lo, hi)| [lo, hi.min(f64::MAX)]);
                status.e_value = Some(eprocess.e_value());
                status.e_threshold = Some(1.0 / alpha);
                status.canary_events = Some(t.canary_bad);
                status.canary_requests = Some(t.canary_total);
                status.stable_events = Some(t.stable_bad);
                status.stable_requests = Some(t.stable_total);
                status.dispersion = Some(eprocess.dispersion());
                if let Some(shape) = shape {
                    status.quantiles = shape
                        .quantile_shifts()
                        .into_iter()
                        .map(|q| QuantileStatus {
                            quantile: q.q,
                            canary: q.canary,
                            stable: q.stable,
                            shift_interval: [q.interval.0, q.interval.1],
                        })
                        .collect();
                    if shape.fails() {
                        status.message = Some(format!(
                            "latency distribution shifted: max(F_stable - F_canary) = {:.3} > band {:.3}",
                            shape.statistic(),
                            shape.threshold()
                        ));
                    }
                }
                if self.fails() {
                    Verdict::Fail
                } else if !self.seen_data {
                    Verdict::NoData
                } else if eprocess.passes(*alpha) {
                    Verdict::Pass
                } else {
                    Verdict::Running
                }
            }
            State::Threshold {
                failures,
                checks,
                last,
                ..
            } => {
                status.value = *last;
                status.failures = Some(*failures);
                if self.fails() {
                    Verdict::Fail
                } else if *checks == 0 {
                    Verdict::NoData
                } else {
                    Verdict::Pass
                }
            }
        };
        status.verdict = verdict;
        status
    }
}

/// A fingerprint of an analysis plan (FNV-1a of its settings), so that
/// saved evidence is continued only under the settings it was gathered by.
pub fn fingerprint(plan: &AnalysisPlan) -> String {
    let text = format!("{plan:?}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine_core::Duration;
    use coalmine_core::plan::{MetricPlan, Provider};
    use coalmine_core::spec::BuiltinMetric;

    fn plan(checks: &[Check]) -> AnalysisPlan {
        AnalysisPlan {
            interval: Duration::from_secs(10),
            alpha: 0.05,
            metrics: checks
                .iter()
                .enumerate()
                .map(|(i, c)| MetricPlan {
                    name: format!("m{i}"),
                    provider: Provider::Builtin {
                        metric: BuiltinMetric::Errors,
                        slower_than: None,
                    },
                    check: c.clone(),
                })
                .collect(),
        }
    }

    fn counts(canary_bad: u64, stable_bad: u64) -> Observed {
        Observed::Counts(Interval {
            canary_total: 1000,
            canary_bad,
            stable_total: 9000,
            stable_bad,
            canary_share: Some(0.1),
        })
    }

    #[test]
    fn nothing_observed_is_no_data_not_a_pass() {
        let judge = Judge::new(&plan(&[Check::Compare { max_ratio: 1.0 }]));
        let (v, m) = judge.report();
        assert_eq!(v, Verdict::NoData);
        assert_eq!(m[0].verdict, Verdict::NoData);
        let mut judge = Judge::new(&plan(&[Check::Compare { max_ratio: 1.0 }]));
        judge.observe(0, Observed::NoData("no series".into()));
        let (v, m) = judge.report();
        assert_eq!(v, Verdict::NoData);
        assert_eq!(m[0].message.as_deref(), Some("no series"));
    }

    #[test]
    fn a_regression_fails_with_its_numbers() {
        let mut judge = Judge::new(&plan(&[Check::Compare { max_ratio: 1.0 }]));
        for _ in 0..5 {
            judge.observe(0, counts(10, 18));
        }
        let (v, m) = judge.report();
        assert_eq!(v, Verdict::Fail);
        assert_eq!(m[0].canary_events, Some(50));
        assert_eq!(m[0].e_threshold, Some(20.0));
        assert!(m[0].e_value.unwrap() >= 20.0);
        let [lo, _] = m[0].ratio_interval.unwrap();
        assert!(lo > 1.0);
    }

    #[test]
    fn a_healthy_canary_passes_once_the_interval_is_below_the_tolerance() {
        let mut judge = Judge::new(&plan(&[Check::Compare { max_ratio: 2.0 }]));
        judge.observe(0, counts(2, 18));
        assert_eq!(judge.report().0, Verdict::Running);
        for _ in 0..200 {
            judge.observe(0, counts(2, 18));
        }
        let (v, m) = judge.report();
        assert_eq!(v, Verdict::Pass, "{m:?}");
        assert!(judge.passes());
    }

    #[test]
    fn alpha_is_split_over_comparisons() {
        let judge = Judge::new(&plan(&[
            Check::Compare { max_ratio: 1.0 },
            Check::Compare { max_ratio: 1.0 },
            Check::Threshold {
                min: None,
                max: Some(1.0),
                failure_limit: 1,
            },
        ]));
        let (_, m) = judge.report();
        assert_eq!(m[0].e_threshold, Some(40.0));
        assert_eq!(m[1].e_threshold, Some(40.0));
    }

    #[test]
    fn intervals_across_a_weight_change_are_left_out() {
        let tagged = counts(3, 9).tagged(0.1, false);
        let Observed::Counts(c) = tagged else {
            panic!("{tagged:?}")
        };
        // Tagged with the weight, judged by the counts (1000 of 10000).
        assert_eq!(c.canary_share, Some(0.1));
        assert_eq!(c.share(), Some(0.1));
        let moved = counts(3, 9).tagged(0.1, true);
        assert!(
            matches!(&moved, Observed::NoData(why) if why.contains("from 10%")),
            "{moved:?}"
        );
        assert_eq!(Observed::Value(1.0).tagged(0.0, true), Observed::Value(1.0));
    }

    #[test]
    fn the_share_is_what_reached_the_canary_not_the_weight() {
        // 5% weight, but testers' header-routed requests take the canary
        // to 8% of requests: at equal rates, bad events split 8/92.
        let mut judge = Judge::new(&plan(&[Check::Compare { max_ratio: 1.0 }]));
        for _ in 0..100 {
            judge.observe(
                0,
                Observed::Counts(Interval {
                    canary_total: 800,
                    canary_bad: 8,
                    stable_total: 9200,
                    stable_bad: 92,
                    canary_share: Some(0.05),
                }),
            );
        }
        let (v, m) = judge.report();
        assert_ne!(v, Verdict::Fail, "{m:?}");
        assert!(m[0].e_value.is_some_and(|e| e < 1.0), "{m:?}");
    }

    #[test]
    fn a_restored_snapshot_decides_exactly_as_the_judge_it_was_taken_of() {
        use crate::latency::Histograms;
        let mut p = plan(&[
            Check::Compare { max_ratio: 1.0 },
            Check::Compare { max_ratio: 1.5 },
            Check::Threshold {
                min: None,
                max: Some(0.5),
                failure_limit: 30,
            },
        ]);
        p.metrics[1].provider = Provider::Builtin {
            metric: BuiltinMetric::Latency,
            slower_than: Some(Duration::from_millis(300)),
        };
        // A wobbling, slowly worsening canary: every part of the state
        // (grid, share bins, dispersion blocks, histograms, failures)
        // moves.
        let observe = |judge: &mut Judge, i: u64| {
            let wobble = [3, 9, 1, 6, 12, 2][(i / 7 % 6) as usize];
            let interval = |bad: u64, stable_bad: u64| Interval {
                canary_total: 500 + i % 13,
                canary_bad: bad,
                stable_total: 4500 - i % 7,
                stable_bad,
                canary_share: Some(0.1),
            };
            judge.observe(0, Observed::Counts(interval(wobble + i / 40, 40 + i % 5)));
            judge.observe(
                1,
                Observed::Latency {
                    slow: interval(2 + i % 3, 20 + i % 4),
                    histograms: Some(Histograms {
                        bounds: vec![0.1, 0.3],
                        canary: vec![400, 90 + i % 5, 10],
                        stable: vec![3600, 800, 100 - i % 9],
                    }),
                },
            );
            judge.observe(2, Observed::Value((i % 10) as f64 / 10.0));
        };
        let mut judge = Judge::new(&p);
        for i in 0..50 {
            observe(&mut judge, i);
        }
        let text = serde_json::to_string(&judge.snapshot()).expect("serialisable");
        let saved: Snapshot = serde_json::from_str(&text).expect("readable");
        let mut restored = Judge::restore(&p, saved).expect("same plan");
        assert_eq!(restored.report(), judge.report());
        let mut decided = false;
        for i in 50..400 {
            observe(&mut judge, i);
            observe(&mut restored, i);
            assert_eq!(restored.report(), judge.report(), "interval {i}");
            assert_eq!(
                (restored.fails(), restored.passes()),
                (judge.fails(), judge.passes())
            );
            decided |= judge.fails();
        }
        assert!(decided, "the run reaches a verdict");
        // Another plan's evidence is refused, naming the metric.
        let other = plan(&[Check::Compare { max_ratio: 1.2 }]);
        let err = Judge::restore(&other, judge.snapshot()).expect_err("other plan");
        assert!(err.contains("3 metrics"), "{err}");
        let mut other = p.clone();
        other.metrics[0].check = Check::Compare { max_ratio: 1.2 };
        let err = Judge::restore(&other, judge.snapshot()).expect_err("other tolerance");
        assert!(err.contains("`m0`"), "{err}");
    }

    #[test]
    fn thresholds_fail_at_the_limit() {
        let mut judge = Judge::new(&plan(&[Check::Threshold {
            min: None,
            max: Some(0.5),
            failure_limit: 3,
        }]));
        assert_eq!(judge.report().0, Verdict::NoData);
        judge.observe(0, Observed::Value(0.4));
        assert_eq!(judge.report().0, Verdict::Pass);
        judge.observe(0, Observed::Value(0.9));
        judge.observe(0, Observed::Value(f64::NAN));
        judge.observe(0, Observed::Value(0.7));
        let (v, m) = judge.report();
        assert_eq!((v, m[0].failures), (Verdict::Pass, Some(2)));
        judge.observe(0, Observed::Value(0.8));
        let (v, m) = judge.report();
        assert_eq!(
            (v, m[0].failures, m[0].value),
            (Verdict::Fail, Some(3), Some(0.8))
        );
    }

    #[test]
    fn one_failing_metric_fails_the_whole() {
        let mut judge = Judge::new(&plan(&[
            Check::Compare { max_ratio: 1.0 },
            Check::Threshold {
                min: Some(10.0),
                max: None,
                failure_limit: 1,
            },
        ]));
        judge.observe(0, counts(1, 9));
        judge.observe(1, Observed::Value(3.0));
        assert_eq!(judge.report().0, Verdict::Fail);
    }
}
