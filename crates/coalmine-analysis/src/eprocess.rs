//! The anytime-valid e-process for a count metric's canary/stable rate ratio.
//!
//! Per interval `s`: the canary's share of the interval's requests
//! `rho_s = n_c,s / (n_c,s + n_b,s)` (see [`Interval::share`]), and the bad
//! events `x_c,s` (canary) and `x_b,s` (stable). Conditioning on which arm each bad
//! event came from removes the load both versions share, however it varies:
//! under a rate ratio `e^d`, a bad event is the canary's with probability
//!
//! ```text
//! theta_s(d) = rho_s e^d / (rho_s e^d + 1 - rho_s)
//! ```
//!
//! The evidence against "canary within tolerance" (`d <= delta_0 =
//! ln maxRatio`) is a mixture of likelihood ratios over a grid of
//! alternatives `d_j` in `(delta_0, delta_0 + 4]`, with prior weights
//! `w_j` (see [`prior_weights`]):
//!
//! ```text
//! E_t = sum_j w_j exp(l_t(d_j)),
//! l_t(d) = sum_s [x_c,s ln(theta_s(d)/theta_s(delta_0)) + x_b,s ln((1-theta_s(d))/(1-theta_s(delta_0)))]
//! ```
//!
//! `E_t` is a non-negative supermartingale under the null (a test
//! martingale at `d = delta_0`, and smaller below by monotone likelihood
//! ratio), so by Ville's inequality it ever reaches `1/alpha` with
//! probability at most `alpha`, however often it is looked at. Because
//! `l_t` is a sum over bad events, it is kept per grid point and updated in
//! `O(grid)` per interval; everything is computed in logs.
//!
//! This assumes bad events are independent given the rates. When one
//! version's rate wobbles between intervals (extra-binomial noise) the
//! guarantee weakens; [`crate::dispersion`] tempers the evidence for that.

/// Alternatives on the grid (spacing 0.1 in log-ratio).
const GRID: usize = 40;
/// The grid spans `(delta_0, delta_0 + SPAN]`.
const SPAN: f64 = 4.0;
/// The prior's main component: a normal on `d - delta_0` centred on
/// `CENTRE` (a canary about 1.8x over the tolerance) with sd `WIDTH`...
const CENTRE: f64 = 0.6;
const WIDTH: f64 = 0.15;
/// ...and its tail: a half-normal with sd `TAIL_SD` from the tolerance,
/// with weight `TAIL`, so that no alternative on the grid is left out.
const TAIL: f64 = 0.1;
const TAIL_SD: f64 = 1.5;

/// The mixture's prior weights over the grid offsets `d_j - delta_0 =
/// 0.1 j` (`j = 1..40`), as logs summing (in exp) to 1:
/// `w_j = 0.9 N_j(0.6, 0.15) + 0.1 H_j(1.5)`, where `N_j` is a normal
/// density centred on 0.6 (a ratio of 1.8x the tolerance) with sd 0.15 and
/// `H_j` a half-normal density with sd 1.5, each normalised over the grid.
///
/// Any fixed prior keeps the e-process valid (a mixture of test
/// martingales is a test martingale); the prior only decides which
/// regressions are caught fastest. Most of its mass is on ratios of about
/// 1.4x to 2.4x, the regressions to catch within
/// minutes; the tail keeps every ratio up to `e^4` in the mixture.
pub fn prior_weights() -> Vec<f64> {
    let offsets: Vec<f64> = (1..=GRID).map(|j| SPAN * j as f64 / GRID as f64).collect();
    let normalised = |f: &dyn Fn(f64) -> f64| -> Vec<f64> {
        let raw: Vec<f64> = offsets.iter().map(|x| f(*x)).collect();
        let sum: f64 = raw.iter().sum();
        raw.into_iter().map(|r| r / sum).collect()
    };
    let main = normalised(&|x| (-((x - CENTRE) / WIDTH).powi(2) / 2.0).exp());
    let tail = normalised(&|x| (-(x / TAIL_SD).powi(2) / 2.0).exp());
    let logs: Vec<f64> = main
        .iter()
        .zip(&tail)
        .map(|(m, t)| ((1.0 - TAIL) * m + TAIL * t).ln())
        .collect();
    let norm = log_sum_exp(&logs);
    logs.into_iter().map(|l| l - norm).collect()
}

/// The PASS test's weights over the grid offsets below the tolerance,
/// `delta_0 - 0.1 j` (`j = 1..40`): `0.9 N_j + 0.1 H_j` as in
/// [`prior_weights`], with the normal centred on the offset of a canary
/// exactly as good as stable (`delta_0`, at least 0.2) and sd 0.15.
///
/// A healthy canary is the one a gate should pass: its ratio is 1, so the
/// evidence that the ratio is below `maxRatio` is largest at the offset
/// `ln maxRatio`. The rollback prior, centred 0.6 above the tolerance,
/// would put most of this test's mass on canaries much better than stable
/// (0.82x at `maxRatio` 1.5) and cost about 1.6 nats of evidence at 1x.
fn pass_weights(delta0: f64) -> Vec<f64> {
    let centre = delta0.max(0.2);
    let offsets: Vec<f64> = (1..=GRID).map(|j| SPAN * j as f64 / GRID as f64).collect();
    let normalised = |f: &dyn Fn(f64) -> f64| -> Vec<f64> {
        let raw: Vec<f64> = offsets.iter().map(|x| f(*x)).collect();
        let sum: f64 = raw.iter().sum();
        raw.into_iter().map(|r| r / sum).collect()
    };
    let main = normalised(&|x| (-((x - centre) / WIDTH).powi(2) / 2.0).exp());
    let tail = normalised(&|x| (-(x / TAIL_SD).powi(2) / 2.0).exp());
    let logs: Vec<f64> = main
        .iter()
        .zip(&tail)
        .map(|(m, t)| ((1.0 - TAIL) * m + TAIL * t).ln())
        .collect();
    let norm = log_sum_exp(&logs);
    logs.into_iter().map(|l| l - norm).collect()
}

/// Width of the share bins of the confidence sequence, in `logit(rho)`.
const SHARE_BIN: f64 = 0.02;

/// The centre of `rho`'s bin. Only the confidence interval uses it (the
/// e-process that rolls back uses each interval's exact share): within a
/// bin `theta` moves by at most `0.01 theta (1 - theta)`, far below the
/// interval's own width, and the bins keep its cost bounded (a few
/// hundred bins between shares of 1% and 99%) however long the run.
fn share_bin(rho: f64) -> f64 {
    let logit = (rho / (1.0 - rho)).ln();
    let centre = (logit / SHARE_BIN).round() * SHARE_BIN;
    1.0 / (1.0 + (-centre).exp())
}

/// One interval's counts for one metric.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// Canary requests.
    pub canary_total: u64,
    /// Canary bad events.
    pub canary_bad: u64,
    /// Stable requests.
    pub stable_total: u64,
    /// Stable bad events.
    pub stable_bad: u64,
    /// The canary's routing share in the interval, in `[0, 1]` (the
    /// weight): used only when the interval has no request counts.
    pub canary_share: Option<f64>,
}

impl Interval {
    /// The share used: the share of the interval's requests that reached
    /// the canary, `n_c / (n_c + n_b)`, or the routing share when the
    /// provider gave no request counts.
    ///
    /// The counts are what reached each version, whatever the weight was:
    /// requests routed by header or cookie, replicas that take unequal
    /// connections, or a weight change all show in them. Given `n_c` and
    /// `n_b`, and per-request bad-event rates `p_c = e^d p_b` that hold
    /// through the interval, a bad event is the canary's with probability
    /// `n_c e^d / (n_c e^d + n_b)`: the e-process is valid conditionally on
    /// the counts, so taking the share from them costs nothing.
    ///
    /// An interval in which one version served no request has a share of
    /// 0 or 1: every bad event's version is known in advance, so it says
    /// nothing about the ratio. The routing share would be wrong there: a
    /// canary pod that got no connection in an interval (the `replicas`
    /// router with few connections) would have each of stable's bad events
    /// counted as one the canary avoided.
    pub fn share(&self) -> Option<f64> {
        let n = self.canary_total + self.stable_total;
        if n > 0 {
            return Some(self.canary_total as f64 / n as f64);
        }
        self.canary_share
    }
}

/// Evidence that the canary's bad-event rate exceeds `max_ratio` × stable's.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RatioEProcess {
    delta0: f64,
    grid: Vec<f64>,
    log_weights: Vec<f64>,
    /// The PASS test's weights over alternatives below the tolerance (see
    /// [`pass_weights`]).
    pass_log_weights: Vec<f64>,
    log_lr: Vec<f64>,
    max_log_e: f64,
    /// Dispersion factor: the log-likelihood is divided by it (see
    /// [`RatioEProcess::set_dispersion`]).
    phi: f64,
    /// The dispersion factor of the PASS test (see
    /// [`RatioEProcess::set_pass_dispersion`]).
    pass_phi: f64,
    totals: Interval,
    /// Bad events per share, for the confidence sequence: the
    /// log-likelihood only depends on the sums at each share (the
    /// split-invariance property). Shares measured from request counts
    /// differ in every interval, so they are pooled in bins of
    /// [`SHARE_BIN`] in `logit(rho)` (see [`share_bin`]).
    by_share: Vec<(f64, f64, f64)>,
}

impl RatioEProcess {
    /// A fresh e-process (E = 1) with tolerance `max_ratio` (> 0).
    pub fn new(max_ratio: f64) -> Self {
        let delta0 = max_ratio.ln();
        let grid: Vec<f64> = (1..=GRID)
            .map(|j| delta0 + SPAN * j as f64 / GRID as f64)
            .collect();
        RatioEProcess {
            delta0,
            log_weights: prior_weights(),
            pass_log_weights: pass_weights(delta0),
            log_lr: vec![0.0; grid.len()],
            grid,
            max_log_e: 0.0,
            phi: 1.0,
            pass_phi: 1.0,
            by_share: Vec::new(),
            totals: Interval {
                canary_total: 0,
                canary_bad: 0,
                stable_total: 0,
                stable_bad: 0,
                canary_share: None,
            },
        }
    }

    /// Adds one interval's counts.
    pub fn update(&mut self, interval: &Interval) {
        let t = &mut self.totals;
        t.canary_total += interval.canary_total;
        t.canary_bad += interval.canary_bad;
        t.stable_total += interval.stable_total;
        t.stable_bad += interval.stable_bad;
        let (xc, xb) = (interval.canary_bad as f64, interval.stable_bad as f64);
        // With no bad events, or a share of 0 or 1 (every event's arm known
        // in advance), the interval says nothing about the ratio.
        let Some(rho) = interval.share().filter(|r| *r > 0.0 && *r < 1.0) else {
            return;
        };
        if xc + xb == 0.0 {
            return;
        }
        let binned = share_bin(rho);
        match self
            .by_share
            .iter_mut()
            .find(|(r, _, _)| r.to_bits() == binned.to_bits())
        {
            Some(entry) => {
                entry.1 += xc;
                entry.2 += xb;
            }
            None => self.by_share.push((binned, xc, xb)),
        }
        let (ln_rho, ln_1m_rho) = (rho.ln(), (1.0 - rho).ln());
        let (ln_th0, ln_1m_th0) = log_theta(ln_rho, ln_1m_rho, self.delta0);
        for (d, lr) in self.grid.iter().zip(self.log_lr.iter_mut()) {
            let (ln_th, ln_1m_th) = log_theta(ln_rho, ln_1m_rho, *d);
            *lr += xc * (ln_th - ln_th0) + xb * (ln_1m_th - ln_1m_th0);
        }
        self.max_log_e = self.max_log_e.max(self.log_e());
    }

    /// Sets the dispersion factor `phi >= 1` by which the whole evidence
    /// is tempered from now on (retroactively: `l_t / phi`). The
    /// log-likelihood is linear in the counts, so this is the e-process of
    /// the counts divided by `phi`, the quasi-likelihood correction for bad
    /// events that arrive in clumps (see [`crate::dispersion`]).
    ///
    /// Whatever `phi >= 1` is, and however it was chosen from the data,
    /// the guarantee under independent bad events is kept: by Jensen's
    /// inequality (`x^(1/phi)` is concave),
    /// `sum_j w_j exp(l_j / phi) <= (sum_j w_j exp(l_j))^(1/phi)`, so the
    /// tempered e-value reaches `1/alpha` only when the untempered one
    /// reaches `(1/alpha)^phi >= 1/alpha`, which by Ville's inequality
    /// happens with probability at most `alpha`.
    pub fn set_dispersion(&mut self, phi: f64) {
        self.phi = if phi.is_finite() { phi.max(1.0) } else { 1.0 };
        self.max_log_e = self.max_log_e.min(self.log_e().max(0.0)).max(0.0);
    }

    /// Sets the dispersion factor of the PASS test alone (at least 1).
    /// The judge gives it the dispersion of one-minute wobbles, where FAIL
    /// also allows for longer ones: a wobble that lasts many minutes can
    /// fake a regression for that long, but a canary whose rate really is
    /// at or above `maxRatio` does not pass because of it unless the wobble
    /// also hides the excess, which the one-minute blocks measure.
    pub fn set_pass_dispersion(&mut self, phi: f64) {
        self.pass_phi = if phi.is_finite() { phi.max(1.0) } else { 1.0 };
    }

    /// Whether `other` tests the same hypothesis with the same mixture
    /// (tolerance, grid and weights): its evidence can be continued here.
    pub fn same_test(&self, other: &RatioEProcess) -> bool {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.delta0.to_bits() == other.delta0.to_bits()
            && bits(&self.grid) == bits(&other.grid)
            && bits(&self.log_weights) == bits(&other.log_weights)
            && bits(&self.pass_log_weights) == bits(&other.pass_log_weights)
            && other.log_lr.len() == self.grid.len()
    }

    /// The dispersion factor in use.
    pub fn dispersion(&self) -> f64 {
        self.phi
    }

    /// `ln E_t`.
    pub fn log_e(&self) -> f64 {
        let terms: Vec<f64> = self
            .log_weights
            .iter()
            .zip(&self.log_lr)
            .map(|(w, l)| w + l / self.phi)
            .collect();
        log_sum_exp(&terms)
    }

    /// `E_t`, the evidence; 1 before any data.
    pub fn e_value(&self) -> f64 {
        self.log_e().exp()
    }

    /// Whether the evidence has reached `1/alpha` (roll back).
    pub fn rejects(&self, alpha: f64) -> bool {
        self.log_e() >= -alpha.ln()
    }

    /// The anytime-valid p-value, `min(1, 1 / max_s E_s)`.
    pub fn p_value(&self) -> f64 {
        (-self.max_log_e).exp().min(1.0)
    }

    /// An anytime-valid confidence interval for the canary/stable ratio at
    /// level `1 - alpha`: the ratios `r` that neither one-sided mixture test
    /// (alternatives above `ln r`, or below it, each at `alpha/2`) rejects.
    /// By Ville's inequality the true ratio is outside it at some time with
    /// probability at most `alpha`. `None` before any bad event; the upper
    /// bound is infinite while the canary has shown too few.
    pub fn confidence_interval(&self, alpha: f64) -> Option<(f64, f64)> {
        if self.by_share.iter().all(|(_, xc, xb)| xc + xb == 0.0) {
            return None;
        }
        let level = (2.0 / alpha).ln();
        const FAR: f64 = 20.0;
        // Largest delta the "above" test still rejects: the lower bound.
        let above = |d: f64| self.mixture_log_e(d, 1.0) >= level;
        let lower = if above(-FAR) {
            boundary(-FAR, FAR, above).exp()
        } else {
            0.0
        };
        // Smallest delta the "below" test rejects: the upper bound.
        let below = |d: f64| self.mixture_log_e(d, -1.0) >= level;
        let upper = if below(FAR) {
            boundary(FAR, -FAR, below).exp()
        } else {
            f64::INFINITY
        };
        Some((lower, upper))
    }

    /// Whether the evidence that the ratio is below the tolerance has
    /// reached `1/alpha`: the one-sided test of "ratio >= maxRatio"
    /// against alternatives below it, with the weights of
    /// [`pass_weights`], tempered like the rest. Under any ratio at or
    /// above `maxRatio` it is a test supermartingale, so a canary that bad
    /// passes with probability at most `alpha`. This is what PASS uses; it
    /// is a different mixture from the interval's upper end, which is
    /// two-sided at `alpha / 2`, so at PASS that end can still be a little
    /// above `maxRatio`.
    pub fn passes(&self, alpha: f64) -> bool {
        if self.by_share.iter().all(|(_, xc, xb)| xc + xb == 0.0) {
            return false;
        }
        let terms: Vec<f64> = self
            .pass_log_weights
            .iter()
            .enumerate()
            .map(|(j, lw)| {
                let d = self.delta0 - SPAN * (j + 1) as f64 / GRID as f64;
                lw + self.log_likelihood(self.delta0, d) / self.pass_phi
            })
            .collect();
        log_sum_exp(&terms) >= -alpha.ln()
    }

    /// `sum_s [x_c ln(theta(d)/theta(d0)) + x_b ln((1-theta(d))/(1-theta(d0)))]`
    /// over the share bins.
    fn log_likelihood(&self, d0: f64, d: f64) -> f64 {
        self.by_share
            .iter()
            .map(|&(rho, xc, xb)| {
                let (lr, l1r) = (rho.ln(), (1.0 - rho).ln());
                let (a, b) = log_theta(lr, l1r, d);
                let (a0, b0) = log_theta(lr, l1r, d0);
                xc * (a - a0) + xb * (b - b0)
            })
            .sum()
    }

    /// `ln E` of the mixture test of `delta_0 = d` against alternatives on
    /// the side `sign` (+1 above, -1 below), from the per-share sums.
    fn mixture_log_e(&self, d0: f64, sign: f64) -> f64 {
        let terms: Vec<f64> = self
            .log_weights
            .iter()
            .enumerate()
            .map(|(j, lw)| {
                let d = d0 + sign * SPAN * (j + 1) as f64 / GRID as f64;
                lw + self.log_likelihood(d0, d) / self.phi
            })
            .collect();
        log_sum_exp(&terms)
    }

    /// The counts so far.
    pub fn totals(&self) -> Interval {
        self.totals
    }

    /// The observed canary/stable rate ratio, when both rates are defined
    /// and stable's is not zero.
    pub fn ratio_estimate(&self) -> Option<f64> {
        let t = &self.totals;
        if t.canary_total == 0 || t.stable_total == 0 || t.stable_bad == 0 {
            return None;
        }
        let c = t.canary_bad as f64 / t.canary_total as f64;
        let b = t.stable_bad as f64 / t.stable_total as f64;
        Some(c / b)
    }
}

/// Bisection between `inside` (where `rejects` holds) and `outside` (where
/// it does not): the point where rejection stops, to 1e-6 in log-ratio.
fn boundary(mut inside: f64, mut outside: f64, rejects: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..60 {
        let mid = (inside + outside) / 2.0;
        if rejects(mid) {
            inside = mid;
        } else {
            outside = mid;
        }
        if (inside - outside).abs() < 1e-6 {
            break;
        }
    }
    (inside + outside) / 2.0
}

/// `(ln theta(d), ln (1 - theta(d)))` for share `rho`, computed stably.
fn log_theta(ln_rho: f64, ln_1m_rho: f64, d: f64) -> (f64, f64) {
    let denom = log_add_exp(ln_rho + d, ln_1m_rho);
    (ln_rho + d - denom, ln_1m_rho - denom)
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interval whose request counts give share `rho`.
    fn iv(xc: u64, xb: u64, rho: f64) -> Interval {
        let canary = (1000.0 * rho).round() as u64;
        Interval {
            canary_total: canary,
            canary_bad: xc,
            stable_total: 1000 - canary,
            stable_bad: xb,
            canary_share: Some(rho),
        }
    }

    fn e_after(max_ratio: f64, intervals: &[Interval]) -> f64 {
        let mut e = RatioEProcess::new(max_ratio);
        for i in intervals {
            e.update(i);
        }
        e.e_value()
    }

    /// Reference values computed independently (plain floating point, no
    /// logs, in Python) from the formulas of docs/analysis.md section 1, over the same 40-point
    /// grid with the weights of [`prior_weights`].
    #[test]
    fn matches_hand_computed_values() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        let e = e_after(1.0, &[iv(3, 1, 0.5)]);
        assert!(close(e, 1.500_585_754_424_114_1), "{e}");
        let e = e_after(1.0, &[iv(5, 20, 0.1), iv(9, 30, 0.25)]);
        assert!(close(e, 0.446_535_426_965_766_76), "{e}");
        let e = e_after(1.5, &[iv(12, 40, 0.2)]);
        assert!(close(e, 0.070_219_003_638_833_31), "{e}");
    }

    #[test]
    fn the_prior_weights_sum_to_one_and_peak_near_1_8x() {
        let w = prior_weights();
        assert_eq!(w.len(), GRID);
        let sum: f64 = w.iter().map(|l| l.exp()).sum();
        assert!((sum - 1.0).abs() < 1e-12, "{sum}");
        let peak = (0..GRID).max_by(|a, b| w[*a].total_cmp(&w[*b]));
        assert_eq!(peak, Some(5), "offset 0.6 is the 6th grid point");
        assert!(
            w.iter().all(|l| l.is_finite()),
            "every alternative has weight"
        );
    }

    #[test]
    fn starts_at_one_and_ignores_uninformative_intervals() {
        let mut e = RatioEProcess::new(1.0);
        assert_eq!(e.e_value(), 1.0);
        assert_eq!(e.p_value(), 1.0);
        e.update(&iv(0, 0, 0.3));
        e.update(&iv(5, 0, 0.0));
        e.update(&iv(0, 5, 1.0));
        assert_eq!(e.e_value(), 1.0);
        assert_eq!(e.totals().canary_bad, 5);
    }

    #[test]
    fn an_interval_one_version_did_not_serve_is_not_judged_by_the_weight() {
        // The canary pod got no connection this interval (the replicas
        // router): stable's 30 bad events are not 30 the canary avoided.
        let no_canary = Interval {
            canary_total: 0,
            canary_bad: 0,
            stable_total: 6000,
            stable_bad: 30,
            canary_share: Some(0.05),
        };
        assert_eq!(no_canary.share(), Some(0.0));
        let no_stable = Interval {
            canary_total: 300,
            canary_bad: 3,
            stable_total: 0,
            stable_bad: 0,
            canary_share: Some(0.05),
        };
        assert_eq!(no_stable.share(), Some(1.0));
        let mut e = RatioEProcess::new(1.0);
        e.update(&no_canary);
        e.update(&no_stable);
        assert_eq!(e.e_value(), 1.0);
        // Evidence gathered before is kept whole.
        let regression: Vec<Interval> = (0..3).map(|_| iv(10, 18, 0.1)).collect();
        let before = e_after(1.0, &regression);
        let mut with_gaps = regression.clone();
        with_gaps.extend([no_canary, no_canary]);
        assert_eq!(e_after(1.0, &with_gaps), before);
        // Without request counts the routing share still stands in.
        let bad_only = Interval {
            canary_total: 0,
            canary_bad: 2,
            stable_total: 0,
            stable_bad: 18,
            canary_share: Some(0.1),
        };
        assert_eq!(bad_only.share(), Some(0.1));
    }

    #[test]
    fn a_clear_regression_is_rejected_and_a_tie_is_not() {
        // Canary at 10% share with 5x the stable rate: 50 vs 90 bad events.
        let bad: Vec<Interval> = (0..5).map(|_| iv(10, 18, 0.1)).collect();
        let mut e = RatioEProcess::new(1.0);
        for i in &bad {
            e.update(i);
        }
        assert!(e.rejects(0.05), "E = {}", e.e_value());
        assert!(e.p_value() <= 0.05);
        let tie: Vec<Interval> = (0..50).map(|_| iv(2, 18, 0.1)).collect();
        let mut e = RatioEProcess::new(1.0);
        for i in &tie {
            e.update(i);
        }
        assert!(!e.rejects(0.05), "E = {}", e.e_value());
    }

    #[test]
    fn the_ratio_estimate_is_the_rate_ratio() {
        let mut e = RatioEProcess::new(1.0);
        e.update(&Interval {
            canary_total: 100,
            canary_bad: 2,
            stable_total: 900,
            stable_bad: 9,
            canary_share: None,
        });
        let r = e.ratio_estimate().unwrap();
        assert!((r - 2.0).abs() < 1e-12, "{r}");
    }

    /// Ville's inequality in practice: a healthy canary (same rate) is
    /// rejected in at most alpha of runs, looked at after every interval;
    /// a canary at 3x is rejected in nearly all.
    #[test]
    fn calibration_with_a_fixed_seed() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let runs = 400;
        let rejections = |canary_rate: f64, rng: &mut XorShift| {
            (0..runs)
                .filter(|_| {
                    let mut e = RatioEProcess::new(1.0);
                    (0..60).any(|_| {
                        let i = Interval {
                            canary_total: 100,
                            canary_bad: rng.binomial(100, canary_rate),
                            stable_total: 900,
                            stable_bad: rng.binomial(900, 0.01),
                            canary_share: Some(0.1),
                        };
                        e.update(&i);
                        e.rejects(0.05)
                    })
                })
                .count()
        };
        let false_rollbacks = rejections(0.01, &mut rng);
        assert!(
            false_rollbacks <= runs * 5 / 100,
            "{false_rollbacks} of {runs}"
        );
        let detections = rejections(0.03, &mut rng);
        assert!(detections >= runs * 95 / 100, "{detections} of {runs}");
    }

    #[test]
    fn the_interval_holds_the_estimate_and_excludes_one_for_a_clear_regression() {
        let five_x = Interval {
            canary_total: 1000,
            canary_bad: 10,
            stable_total: 9000,
            stable_bad: 18,
            canary_share: Some(0.1),
        };
        let mut e = RatioEProcess::new(1.0);
        assert_eq!(e.confidence_interval(0.05), None);
        for _ in 0..5 {
            e.update(&five_x);
        }
        let (lo, hi) = e.confidence_interval(0.05).unwrap();
        let est = e.ratio_estimate().unwrap();
        assert!(lo < est && est < hi, "{lo} < {est} < {hi}");
        assert!(lo > 1.0, "a 5x regression excludes 1: [{lo}, {hi}]");
        // More of the same data narrows it.
        let width = hi / lo;
        for _ in 0..20 {
            e.update(&five_x);
        }
        let (lo2, hi2) = e.confidence_interval(0.05).unwrap();
        assert!(
            hi2 / lo2 < width,
            "[{lo2}, {hi2}] not narrower than [{lo}, {hi}]"
        );
    }

    #[test]
    fn an_equal_canary_passes_and_one_at_the_tolerance_rarely_does() {
        let mut e = RatioEProcess::new(1.5);
        assert!(!e.passes(0.05));
        for _ in 0..40 {
            e.update(&iv(10, 10, 0.5));
        }
        assert!(e.passes(0.05), "400 events split evenly");
        // At exactly 1.5x: a false PASS at most alpha of the time.
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let runs = 400;
        let passed = (0..runs)
            .filter(|_| {
                let mut e = RatioEProcess::new(1.5);
                (0..120).any(|_| {
                    e.update(&Interval {
                        canary_total: 500,
                        canary_bad: rng.binomial(500, 0.015),
                        stable_total: 500,
                        stable_bad: rng.binomial(500, 0.01),
                        canary_share: None,
                    });
                    e.passes(0.05)
                })
            })
            .count();
        assert!(passed <= runs * 5 / 100, "{passed} of {runs}");
    }

    #[test]
    fn the_interval_covers_the_true_ratio() {
        // Canary at 2x stable's rate; checked after every interval.
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let runs = 200;
        let misses = (0..runs)
            .filter(|_| {
                let mut e = RatioEProcess::new(1.0);
                (0..40).any(|_| {
                    e.update(&Interval {
                        canary_total: 200,
                        canary_bad: rng.binomial(200, 0.02),
                        stable_total: 800,
                        stable_bad: rng.binomial(800, 0.01),
                        canary_share: Some(0.2),
                    });
                    e.confidence_interval(0.05)
                        .is_some_and(|(lo, hi)| !(lo <= 2.0 && 2.0 <= hi))
                })
            })
            .count();
        assert!(
            misses <= runs * 5 / 100,
            "{misses} of {runs} runs lost the true ratio"
        );
    }

    struct XorShift(u64);

    impl XorShift {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn binomial(&mut self, n: u64, p: f64) -> u64 {
            (0..n).filter(|_| self.uniform() < p).count() as u64
        }
    }
}
