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

use coalmine_core::plan::{AnalysisPlan, Check, Provider};
use coalmine_core::spec::BuiltinMetric;
use coalmine_core::status::QuantileStatus;
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

struct Metric {
    name: String,
    state: State,
    /// Why the latest observation gave no data, if it did not.
    no_data: Option<String>,
    /// Whether any observation carried data.
    seen_data: bool,
}

/// Judges one rollout's metrics.
pub struct Judge {
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
