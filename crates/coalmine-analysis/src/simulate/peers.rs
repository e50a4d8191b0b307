//! The rules coalmine is compared with in `coalmine simulate`, as their
//! projects document them (docs/analysis.md, section 2), each fed the same
//! traffic:
//!
//! - `threshold` (Flagger): every minute the canary's success rate must be
//!   at least 99% (and, in latency scenarios, its p99 at most
//!   `slowerThan`); the 5th failed check rolls back.
//! - `mann-whitney` (Kayenta): every 10 minutes, a Mann–Whitney test of the
//!   canary's per-minute error rates (and p99s) against stable's over the
//!   whole run so far, at 98% confidence; a significant increase rolls back.
//! - `msprt`: the mixture sequential probability ratio test on the
//!   difference of proportions (normal approximation), every interval, on
//!   cumulative counts; alpha split over the metrics like coalmine's.
//! - `flagger`: Flagger's analysis as users run it: the same check a
//!   minute, but a passed check moves the weight a step and the analysis
//!   ends when the schedule does: after [`Flagger::steps`] passed checks
//!   (`maxWeight: 50`, `stepWeight: 10`) the canary is promoted, unless
//!   `threshold` (5) failed checks came first. A promotion race: a
//!   regression must fail 5 checks before 5 pass.
//! - `kayenta`: Kayenta's classifier as users run it: every 10 minutes,
//!   per metric, a Mann–Whitney test of per-minute values at 98%
//!   confidence, and a metric is High only if the increase is also larger
//!   than the effect-size tolerance (`allowedIncrease: 1.1`, the mean
//!   ratio); the score is the share of metrics not High, and a score under
//!   the marginal threshold (75) rolls back.
//! - `coalmine-plain`: coalmine's e-process without the dispersion guard,
//!   to show what the guard buys.

use super::traffic::{Minute, Tick};
use crate::eprocess::{Interval, RatioEProcess};

/// A rule fed one interval at a time.
pub trait Rule {
    /// Takes one interval (and the minute it completed); true to roll back.
    fn observe(&mut self, tick: &Tick, minute: Option<&Minute>) -> bool;

    /// Whether the rule has passed the canary (only coalmine's judge has a
    /// PASS verdict).
    fn passed(&self) -> bool {
        false
    }
}

/// Flagger's rule.
pub struct Threshold {
    /// Largest tolerated error rate per check (1%).
    pub max_error_rate: f64,
    /// Largest tolerated p99 in seconds, in latency scenarios.
    pub max_p99: Option<f64>,
    /// Failed checks that roll back (5).
    pub limit: u32,
    failed: u32,
}

impl Threshold {
    /// Flagger's defaults: 99% success, 5 failed checks.
    pub fn new(max_p99: Option<f64>) -> Self {
        Threshold {
            max_error_rate: 0.01,
            max_p99,
            limit: 5,
            failed: 0,
        }
    }
}

impl Rule for Threshold {
    fn observe(&mut self, _: &Tick, minute: Option<&Minute>) -> bool {
        let Some(m) = minute else { return false };
        // A minute without canary requests has no rate: Flagger's query
        // returns nothing and the check is skipped.
        let errors =
            m.canary_total > 0 && m.canary_bad as f64 / m.canary_total as f64 > self.max_error_rate;
        let slow = matches!((self.max_p99, m.canary_p99), (Some(max), Some(p)) if p > max);
        if errors || slow {
            self.failed += 1;
        }
        self.failed >= self.limit
    }
}

/// Flagger's analysis with its step schedule.
pub struct Flagger {
    check: Threshold,
    /// Passed checks that finish the schedule and promote (5: `maxWeight`
    /// 50 over `stepWeight` 10).
    pub steps: u32,
    passed_checks: u32,
    promoted: bool,
}

impl Flagger {
    /// Flagger's defaults (99% success, `threshold: 5`) over a 10% → 50%
    /// schedule of one-minute steps.
    pub fn new(max_p99: Option<f64>) -> Self {
        Flagger {
            check: Threshold::new(max_p99),
            steps: 5,
            passed_checks: 0,
            promoted: false,
        }
    }
}

impl Rule for Flagger {
    fn observe(&mut self, tick: &Tick, minute: Option<&Minute>) -> bool {
        if self.promoted || minute.is_none() {
            return false;
        }
        let failed_before = self.check.failed;
        if self.check.observe(tick, minute) {
            return true;
        }
        if self.check.failed == failed_before {
            self.passed_checks += 1;
            self.promoted = self.passed_checks >= self.steps;
        }
        false
    }

    fn passed(&self) -> bool {
        self.promoted
    }
}

/// Kayenta's classifier with its effect-size tolerance and score.
pub struct Kayenta {
    rates: MannWhitney,
    /// The mean ratio a significant increase must exceed to be High (1.1).
    pub allowed_increase: f64,
    /// Scores under this roll back (75, Kayenta's marginal threshold).
    pub marginal: f64,
}

impl Kayenta {
    /// Every 10 minutes at 98% confidence, `allowedIncrease: 1.1`,
    /// marginal score 75.
    pub fn new(latency: bool) -> Self {
        Kayenta {
            rates: MannWhitney::new(latency),
            allowed_increase: 1.1,
            marginal: 75.0,
        }
    }

    fn high(&self, canary: &[f64], stable: &[f64]) -> bool {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (c, b) = (mean(canary), mean(stable));
        // A ratio to a zero baseline is unbounded: any significant
        // increase over nothing is large.
        let large = if b > 0.0 {
            c / b > self.allowed_increase
        } else {
            c > 0.0
        };
        large && self.rates.increased(canary, stable)
    }
}

impl Rule for Kayenta {
    fn observe(&mut self, _: &Tick, minute: Option<&Minute>) -> bool {
        let Some(m) = minute else { return false };
        // Collect the per-minute values (the Mann–Whitney rule's own
        // bookkeeping), then classify at its schedule.
        self.rates.record(m);
        let r = &self.rates;
        if !r.minutes.is_multiple_of(r.every_minutes) {
            return false;
        }
        let mut metrics = 1.0;
        let mut high = f64::from(u8::from(self.high(&r.canary_rates, &r.stable_rates)));
        if r.latency {
            metrics += 1.0;
            high += f64::from(u8::from(self.high(&r.canary_p99, &r.stable_p99)));
        }
        let score = 100.0 * (metrics - high) / metrics;
        score < self.marginal
    }
}

/// Kayenta's rule.
pub struct MannWhitney {
    latency: bool,
    every_minutes: usize,
    confidence: f64,
    canary_rates: Vec<f64>,
    stable_rates: Vec<f64>,
    canary_p99: Vec<f64>,
    stable_p99: Vec<f64>,
    minutes: usize,
}

impl MannWhitney {
    /// Every 10 minutes at 98% confidence.
    pub fn new(latency: bool) -> Self {
        MannWhitney {
            latency,
            every_minutes: 10,
            confidence: 0.98,
            canary_rates: Vec::new(),
            stable_rates: Vec::new(),
            canary_p99: Vec::new(),
            stable_p99: Vec::new(),
            minutes: 0,
        }
    }

    /// Adds one minute's error rates and p99s.
    fn record(&mut self, m: &Minute) {
        self.minutes += 1;
        if m.canary_total > 0 && m.stable_total > 0 {
            self.canary_rates
                .push(m.canary_bad as f64 / m.canary_total as f64);
            self.stable_rates
                .push(m.stable_bad as f64 / m.stable_total as f64);
        }
        if let (Some(c), Some(b)) = (m.canary_p99, m.stable_p99) {
            self.canary_p99.push(c);
            self.stable_p99.push(b);
        }
    }

    fn increased(&self, canary: &[f64], stable: &[f64]) -> bool {
        mann_whitney_p(canary, stable)
            .is_some_and(|(p, higher)| higher && p < 1.0 - self.confidence)
    }
}

impl Rule for MannWhitney {
    fn observe(&mut self, _: &Tick, minute: Option<&Minute>) -> bool {
        let Some(m) = minute else { return false };
        self.record(m);
        if !self.minutes.is_multiple_of(self.every_minutes) {
            return false;
        }
        self.increased(&self.canary_rates, &self.stable_rates)
            || (self.latency && self.increased(&self.canary_p99, &self.stable_p99))
    }
}

/// Two-sided p-value of the Mann–Whitney U test (normal approximation with
/// tie and continuity corrections) and whether the first sample ranks
/// higher. `None` when either sample is empty or all values tie.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> Option<(f64, bool)> {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|v| (*v, true))
        .chain(b.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_sum, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|x| x.1).count() as f64 * avg;
        ties += t * t * t - t;
        i = j + 1;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let nn = n1 + n2;
    let var = n1 * n2 / 12.0 * ((nn + 1.0) - ties / (nn * (nn - 1.0)));
    if var <= 0.0 {
        return None;
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / var.sqrt();
    Some(((2.0 * normal_sf(z)).min(1.0), u > mean))
}

/// `P(Z > z)` for a standard normal (erfc, Numerical Recipes' Chebyshev
/// fit; relative error below 1.2e-7).
pub fn normal_sf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = t
        * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    let erfc = if x >= 0.0 { y } else { 2.0 - y };
    erfc / 2.0
}

/// The mixture SPRT on cumulative counts of each metric.
pub struct Msprt {
    alpha: f64,
    // (canary total, canary bad, stable total, stable bad) per metric.
    counts: Vec<[u64; 4]>,
    latency: bool,
}

impl Msprt {
    /// At `alpha`, split over the error metric and, with `latency`, the
    /// slow-request metric.
    pub fn new(alpha: f64, latency: bool) -> Self {
        let metrics = if latency { 2 } else { 1 };
        Msprt {
            alpha: alpha / metrics as f64,
            counts: vec![[0; 4]; metrics],
            latency,
        }
    }
}

/// `ln` of the mSPRT statistic for "canary proportion above stable's":
/// the difference `d = p_c - p_b` is approximately `N(theta, s2)`; mixing
/// `theta ~ N(0, tau^2)` gives
/// `Lambda = sqrt(s2/(s2+tau^2)) exp(d^2 tau^2 / (2 s2 (s2+tau^2)))`.
/// `tau` is the stable rate (an effect the size of the baseline, a
/// doubling), taken from the data. Only increases count (`d > 0`).
pub fn msprt_log_lambda(c: [u64; 4]) -> f64 {
    let [nc, xc, nb, xb] = c.map(|v| v as f64);
    if nc == 0.0 || nb == 0.0 {
        return 0.0;
    }
    let (pc, pb) = (xc / nc, xb / nb);
    let pooled = (xc + xb) / (nc + nb);
    let s2 = pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nb);
    let d = pc - pb;
    if d <= 0.0 || s2 <= 0.0 {
        return 0.0;
    }
    let tau2 = pb.max(1e-4).powi(2);
    0.5 * (s2 / (s2 + tau2)).ln() + d * d * tau2 / (2.0 * s2 * (s2 + tau2))
}

impl Rule for Msprt {
    fn observe(&mut self, tick: &Tick, _: Option<&Minute>) -> bool {
        let add = |c: &mut [u64; 4], v: [u64; 4]| {
            for (a, b) in c.iter_mut().zip(v) {
                *a += b;
            }
        };
        add(
            &mut self.counts[0],
            [
                tick.canary_total,
                tick.canary_bad,
                tick.stable_total,
                tick.stable_bad,
            ],
        );
        if self.latency {
            add(
                &mut self.counts[1],
                [
                    tick.canary_total,
                    tick.canary_slow,
                    tick.stable_total,
                    tick.stable_slow,
                ],
            );
        }
        let level = -self.alpha.ln();
        self.counts.iter().any(|c| msprt_log_lambda(*c) >= level)
    }
}

/// coalmine's e-process without the dispersion guard or the shape check.
pub struct PlainEProcess {
    alpha: f64,
    errors: RatioEProcess,
    slow: Option<RatioEProcess>,
}

impl PlainEProcess {
    /// With tolerance `max_ratio`, alpha split like the judge's.
    pub fn new(alpha: f64, max_ratio: f64, latency: bool) -> Self {
        PlainEProcess {
            alpha: if latency { alpha / 2.0 } else { alpha },
            errors: RatioEProcess::new(max_ratio),
            slow: latency.then(|| RatioEProcess::new(max_ratio)),
        }
    }
}

impl Rule for PlainEProcess {
    fn observe(&mut self, tick: &Tick, _: Option<&Minute>) -> bool {
        self.errors.update(&Interval {
            canary_total: tick.canary_total,
            canary_bad: tick.canary_bad,
            stable_total: tick.stable_total,
            stable_bad: tick.stable_bad,
            canary_share: Some(tick.weight),
        });
        if let Some(slow) = &mut self.slow {
            slow.update(&Interval {
                canary_total: tick.canary_total,
                canary_bad: tick.canary_slow,
                stable_total: tick.stable_total,
                stable_bad: tick.stable_slow,
                canary_share: Some(tick.weight),
            });
        }
        self.errors.rejects(self.alpha) || self.slow.as_ref().is_some_and(|s| s.rejects(self.alpha))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_tail() {
        assert!((normal_sf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_sf(1.959_964) - 0.025).abs() < 1e-6);
        assert!((normal_sf(-1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn mann_whitney_against_a_known_case() {
        // a entirely above b, 5 and 5: U = 25; z = (25 - 12.5 - 0.5)/sqrt(22.9167)
        let (p, higher) = mann_whitney_p(&[6.0, 7.0, 8.0, 9.0, 10.0], &[1.0, 2.0, 3.0, 4.0, 5.0])
            .expect("defined");
        assert!(higher);
        let z = 12.0 / (25.0f64 * 11.0 / 12.0).sqrt();
        assert!((p - 2.0 * normal_sf(z)).abs() < 1e-12);
        assert!(mann_whitney_p(&[1.0, 1.0], &[1.0, 1.0]).is_none());
        assert!(mann_whitney_p(&[], &[1.0]).is_none());
    }

    #[test]
    fn msprt_grows_with_a_difference_and_ignores_improvements() {
        assert_eq!(msprt_log_lambda([1000, 5, 1000, 10]), 0.0);
        let small = msprt_log_lambda([1000, 10, 1000, 5]);
        let large = msprt_log_lambda([10_000, 100, 10_000, 50]);
        assert!(large > small && large > 3.0, "{small} {large}");
    }

    #[test]
    fn flagger_promotes_after_its_schedule_unless_checks_fail_first() {
        let tick = Tick::default();
        let minute = |bad| Minute {
            canary_total: 100,
            canary_bad: bad,
            ..Minute::default()
        };
        let mut f = Flagger::new(None);
        // 4 failed, then 5 passed: promoted, and nothing after counts.
        for _ in 0..4 {
            assert!(!f.observe(&tick, Some(&minute(2))));
        }
        for _ in 0..5 {
            assert!(!f.passed());
            assert!(!f.observe(&tick, Some(&minute(0))));
        }
        assert!(f.passed());
        for _ in 0..10 {
            assert!(!f.observe(&tick, Some(&minute(5))));
        }
        // 5 failed among 4 passed: rolled back.
        let mut f = Flagger::new(None);
        let mut rolled = false;
        for bad in [2, 0, 2, 0, 2, 0, 2, 0, 2] {
            rolled = f.observe(&tick, Some(&minute(bad)));
        }
        assert!(rolled && !f.passed());
    }

    #[test]
    fn kayenta_ignores_significant_increases_within_its_tolerance() {
        let tick = Tick::default();
        let minute = |canary_bad, stable_bad| Minute {
            canary_total: 10_000,
            canary_bad,
            stable_total: 10_000,
            stable_bad,
            ..Minute::default()
        };
        // 5% higher every minute: significant, but within 1.1.
        let mut k = Kayenta::new(false);
        for i in 0..10u64 {
            assert!(!k.observe(&tick, Some(&minute(105 + i % 3, 100 + i % 3))));
        }
        // 50% higher: High, score 0, rolled back at the 10th minute.
        let mut k = Kayenta::new(false);
        let rolled: Vec<bool> = (0..10u64)
            .map(|i| k.observe(&tick, Some(&minute(150 + i % 3, 100 + i % 3))))
            .collect();
        assert_eq!(rolled.iter().filter(|r| **r).count(), 1);
        assert!(rolled[9]);
    }

    #[test]
    fn threshold_counts_failed_minutes() {
        let mut t = Threshold::new(None);
        let bad = Minute {
            canary_total: 100,
            canary_bad: 2,
            ..Minute::default()
        };
        let tick = Tick::default();
        for _ in 0..4 {
            assert!(!t.observe(&tick, Some(&bad)));
        }
        assert!(!t.observe(&tick, None));
        assert!(t.observe(&tick, Some(&bad)));
    }
}
