//! The dispersion guard: keeps the ratio e-process honest when bad events
//! come in clumps.
//!
//! The e-process of [`crate::eprocess`] treats every bad event as an
//! independent draw of "canary or stable". When one version's error rate
//! wobbles from minute to minute (one bad pod among few, a noisy
//! dependency), the split of bad events between the versions varies more
//! than a binomial draw, and the plain e-process over-counts the evidence
//! (`coalmine simulate --noise-stable 0.5`: about 9% false rollbacks at
//! 10 req/s and 45% at 100 req/s for a healthy canary, docs/analysis.md).
//!
//! The guard gives a dispersion factor `phi >= 1` by which the e-process's
//! log-likelihood is divided (the quasi-likelihood correction). Whatever
//! `phi` is, and however it depends on the data, the tempered e-process
//! crosses `1/alpha` only where the plain one does (see
//! [`crate::eprocess::RatioEProcess::set_dispersion`]), so under
//! independent bad events the guard never costs the Ville guarantee; it
//! only decides how much evidence clumps are allowed to make. `phi` is
//! recomputed when a block of about a minute (the time scale of such
//! wobbles) completes, as an estimate of the dispersion that starts from a
//! prior and yields to the measured dispersion as blocks accumulate:
//!
//! - **Measured.** For each block with bad events, the canary's bad events
//!   `O_k` against the split expected at the estimated ratio (`E_k`, with
//!   binomial variance `V_k`): the sum of squared residuals
//!   `S = sum (O_k - E_k)^2` against `V = sum V_k (n - 1) / n` (one degree
//!   of freedom spent on the ratio). The sums weigh blocks by their bad
//!   events, as the e-process does. Residuals are taken at the estimated
//!   ratio, not at the tolerance, so a steady regression does not look like
//!   noise.
//! - **Prior.** [`PRIOR_BLOCKS`] pseudo-blocks of the average block's
//!   variance at the assumed dispersion `a`: the dispersion that a wobble
//!   of one version's rate by a factor `Z` with `E Z = 1`, `Var Z = WOBBLE`
//!   per minute would cause, `1 + m WOBBLE / 4`, with `m` the bad events per
//!   minute of both versions. Such a wobble cannot be seen in a handful of
//!   minutes, when the measured part is still blind to it, so it is
//!   assumed at first.
//!
//! `phi = (K a Vbar + S) / (K Vbar + V)`, with `K` the prior blocks and
//! `Vbar` the average block's variance. After `n` blocks of independent bad
//! events (`S ~ V`), `phi ~ (K a + n) / (K + n)`: the prior fades like
//! `K / (K + n)`, so the judge's speed approaches the plain e-process's
//! however high the traffic, where a floor proportional to `m` would slow
//! it in proportion to the traffic for good. Under a real wobble `S / V`
//! stays near the true dispersion and `phi` with it.
//!
//! The assumed part is phased in, from 0 after [`RAMP_START_BLOCKS`]
//! minutes (or [`RAMP_START_EVENTS`] bad events) to full strength six
//! minutes (or 100 bad events) later, whichever comes first, never in the
//! first minute. Before that, the judge relies on independence: that is
//! what lets it catch a doubled error rate within minutes, and the price
//! is that wobbles which mimic a regression within those minutes can fool
//! it (docs/analysis.md, section 5).
//!
//! **Longer wobbles.** One-minute blocks see a wobble that lasts ten
//! minutes only as a tenth of its dispersion. A guard made with
//! [`Dispersion::with_long_scale`] makes the same estimate a second time
//! with blocks of [`LONG_BLOCKS`] minutes ([`SCALES`]), and `phi` is the
//! larger of the two. The judge does not use it: it holds a healthy canary
//! with a ten-minute wobble back, but makes every regression wait for
//! ten-minute blocks, so that a canary failing ten times as often as
//! stable at a few requests a second is promoted before it is caught
//! (docs/analysis.md, section 3). Its assumed part needs no ramp: it is
//! `1 + (sum n_p^2 / sum n_p) W / 4` over the periods `p` of ten minutes
//! so far, the period under way included, so it grows with the bad events
//! as they come, from the first interval (`phi` is recomputed at every
//! interval for it). Its prior is [`LONG_PRIOR_BLOCKS`] ten-minute blocks
//! and its upper bound one-sided 95%: with a handful of ten-minute blocks
//! in an hour the measured part is rough, and an 80% bound would let a
//! real wobble through one time in five. PASS is tempered by the
//! one-minute scale alone ([`Dispersion::short_phi`]).
//!
//! What this buys is measured, not proved: no test on counts alone is
//! valid under every wobble (docs/analysis.md, section 5). Under a clump
//! model (bad events in clumps of at most `phi` that fall in one version
//! together) the tempered e-process is a test supermartingale again.

/// Pseudo-blocks at the assumed dispersion in the estimate.
pub const PRIOR_BLOCKS: f64 = 6.0;
/// Standard normal quantile of the measured dispersion's upper bound
/// (one-sided 80%: chosen on `coalmine simulate --seed 1`, docs/analysis.md).
pub const UPPER_Z: f64 = 0.842;
/// Assumed per-minute variance of one version's rate multiplier
/// (`e^(sigma^2) - 1` for a mean-one lognormal: 0.6 is sigma 0.69).
pub const WOBBLE: f64 = 0.6;
/// Bad events per minute (both versions) from which [`WOBBLE`] is assumed
/// in full...
pub const FULL_WOBBLE_EVENTS: f64 = 4.0;
/// ...and up to which none is: between the two it grows linearly (see
/// [`Dispersion::assumed`]).
pub const NO_WOBBLE_EVENTS: f64 = 1.0;
/// Bad events a block needs to count in the measured part: a block with a
/// single bad event says nothing about clumps (see [`Dispersion::measured`]).
pub const MIN_BLOCK_EVENTS: f64 = 2.0;
/// Minutes before the assumed wobble starts to count...
pub const RAMP_START_BLOCKS: f64 = 5.0;
/// ...and minutes over which it grows to full strength.
pub const RAMP_BLOCKS: f64 = 6.0;
/// Bad events before it starts to count (after the first minute)...
pub const RAMP_START_EVENTS: f64 = 100.0;
/// ...and bad events over which it grows to full strength.
pub const RAMP_EVENTS: f64 = 100.0;

/// A wobble period the guard looks at.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Blocks (minutes) merged into one.
    pub blocks: usize,
    /// Assumed per-period variance of one version's rate multiplier.
    pub wobble: f64,
    /// Pseudo-blocks (of this scale) at the assumed dispersion.
    pub prior_blocks: f64,
    /// Minutes before the assumed wobble starts to count.
    pub ramp_start_blocks: f64,
    /// Standard normal quantile of the measured dispersion's upper bound.
    pub upper_z: f64,
}

/// The long wobble period, in blocks (minutes): the longest wobble the
/// matrix holds the judge to (docs/analysis.md, section 4).
pub const LONG_BLOCKS: usize = 10;
/// Assumed variance of one version's rate multiplier over a long period
/// (`e^(sigma^2) - 1` for a mean-one lognormal: 0.3 is sigma 0.51).
pub const LONG_WOBBLE: f64 = 0.3;
/// Pseudo-blocks of [`LONG_BLOCKS`] minutes at the assumed dispersion.
pub const LONG_PRIOR_BLOCKS: f64 = 3.0;
/// Standard normal quantile of the long period's measured upper bound
/// (one-sided 95%: with two or three ten-minute blocks, the 80% bound of
/// the one-minute scale lets a real wobble through one time in five).
pub const LONG_UPPER_Z: f64 = 1.645;

/// The periods a guard can look at: a minute, and [`LONG_BLOCKS`]
/// minutes. The judge looks at the first alone ([`Dispersion::new`]); the
/// second is there for [`Dispersion::with_long_scale`], measured in
/// docs/analysis.md (section 3, the wobble frontier) and not chosen: it
/// holds ten-minute wobbles back at the price of many minutes on every
/// regression, large ones included.
pub const SCALES: [Scale; 2] = [
    Scale {
        blocks: 1,
        wobble: WOBBLE,
        prior_blocks: PRIOR_BLOCKS,
        ramp_start_blocks: RAMP_START_BLOCKS,
        upper_z: UPPER_Z,
    },
    Scale {
        blocks: LONG_BLOCKS,
        wobble: LONG_WOBBLE,
        prior_blocks: LONG_PRIOR_BLOCKS,
        ramp_start_blocks: 0.0,
        upper_z: LONG_UPPER_Z,
    },
];

/// One interval's bad events and share, as the guard keeps them.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Cell {
    /// The block (minute) it fell in, counted from 0.
    block: usize,
    rho: f64,
    canary: f64,
    total: f64,
}

/// Estimates the dispersion of the canary/stable split of bad events.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Dispersion {
    block_len: usize,
    /// Completed blocks.
    blocks: Vec<Vec<Cell>>,
    /// The block being filled, and how many intervals it has seen.
    current: Vec<Cell>,
    current_intervals: usize,
    phi: f64,
    /// Completed blocks, with or without bad events.
    completed: usize,
    /// Bad events (both versions) in completed blocks.
    events: f64,
    /// Bad events in the block being filled.
    current_events: f64,
    /// Bad events (both versions, with a share) per completed block.
    block_events: Vec<f64>,
    /// The measured residuals `(S, sum V_k, n)` per scale, as of the last
    /// completed block.
    /// Its length is the number of [`SCALES`] looked at.
    measured_at: Vec<Option<(f64, f64, f64)>>,
}

impl Dispersion {
    /// A guard that groups `block_len` (>= 1) intervals into a block and
    /// looks at one-minute wobbles.
    pub fn new(block_len: usize) -> Self {
        Dispersion {
            block_len: block_len.max(1),
            blocks: Vec::new(),
            current: Vec::new(),
            current_intervals: 0,
            phi: 1.0,
            completed: 0,
            events: 0.0,
            current_events: 0.0,
            block_events: Vec::new(),
            measured_at: vec![None; 1],
        }
    }

    /// A guard that also looks at ten-minute wobbles ([`SCALES`]).
    pub fn with_long_scale(block_len: usize) -> Self {
        Dispersion {
            measured_at: vec![None; SCALES.len()],
            ..Dispersion::new(block_len)
        }
    }

    /// The periods this guard looks at.
    fn scales(&self) -> &'static [Scale] {
        &SCALES[..self.measured_at.len().clamp(1, SCALES.len())]
    }

    /// Records one interval: the canary's share and both arms' bad events.
    /// Returns whether `phi` was recomputed: at every interval, since the
    /// assumed wobble of the longer periods grows with the bad events of
    /// the period under way (see [`Dispersion::assumed_at`]).
    pub fn update(&mut self, rho: Option<f64>, canary_bad: u64, stable_bad: u64) -> bool {
        let total = (canary_bad + stable_bad) as f64;
        if let Some(rho) = rho.filter(|r| *r > 0.0 && *r < 1.0)
            && total > 0.0
        {
            self.current_events += total;
            self.current.push(Cell {
                block: self.completed,
                rho,
                canary: canary_bad as f64,
                total,
            });
        }
        self.current_intervals += 1;
        if self.current_intervals >= self.block_len {
            self.current_intervals = 0;
            self.completed += 1;
            let events = std::mem::take(&mut self.current_events);
            self.events += events;
            self.block_events.push(events);
            let block = std::mem::take(&mut self.current);
            if !block.is_empty() {
                self.blocks.push(block);
            }
            let d = self.log_ratio_mle();
            self.measured_at = self
                .scales()
                .iter()
                .map(|scale| {
                    if self.blocks.is_empty() {
                        None
                    } else {
                        self.residuals_at(scale.blocks, d)
                    }
                })
                .collect();
        }
        self.phi = self.estimate();
        true
    }

    /// The current dispersion factor, at least 1.
    pub fn phi(&self) -> f64 {
        self.phi
    }

    /// The dispersion of one-minute wobbles alone (the first scale), at
    /// least 1: what the PASS test is tempered by.
    pub fn short_phi(&self) -> f64 {
        match (SCALES.first(), self.measured_at.first()) {
            (Some(scale), Some(measured)) => self.estimate_at(scale, *measured),
            _ => 1.0,
        }
    }

    /// Completed blocks with bad events.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Completed blocks (minutes), with or without bad events.
    pub fn completed_blocks(&self) -> usize {
        self.completed
    }

    /// The measured dispersion alone, `S / V` (1 before any block with
    /// at least [`MIN_BLOCK_EVENTS`] bad events).
    pub fn measured(&self) -> f64 {
        match self.residuals() {
            Some((squares, variances, n)) if variances > 0.0 && n > 1.0 => {
                (squares / (variances * (n - 1.0) / n)).max(1.0)
            }
            _ => 1.0,
        }
    }

    /// The guard's `phi`, at least 1: the measured dispersion with
    /// [`PRIOR_BLOCKS`] pseudo-blocks at the assumed one, or the measured
    /// dispersion's upper confidence bound if that is lower.
    ///
    /// The bound is what lets high traffic go fast: the assumed dispersion
    /// grows with the bad events a minute (91 at 1,000 req/s), and six
    /// blocks of it would still weigh 9 after an hour of independent
    /// blocks, where the measured value itself is known within 40% (the
    /// spread of a chi-square over its degrees of freedom does not depend
    /// on the counts).
    pub fn estimate(&self) -> f64 {
        self.scales()
            .iter()
            .zip(&self.measured_at)
            .map(|(scale, measured)| self.estimate_at(scale, *measured))
            .fold(1.0, f64::max)
    }

    /// [`Self::estimate`] at one wobble period: blocks merged `scale.blocks`
    /// at a time, with that scale's assumed wobble and prior.
    fn estimate_at(&self, scale: &Scale, measured: Option<(f64, f64, f64)>) -> f64 {
        let assumed = self.assumed_at(scale);
        let Some((squares, variances, n)) = measured else {
            return assumed;
        };
        let mean_variance = variances / n;
        let prior = scale.prior_blocks * mean_variance;
        let dof = n - 1.0;
        let expected = variances * dof / n;
        let shrunk = (prior * assumed + squares) / (prior + expected);
        let upper = upper_bound(squares / expected.max(1e-12), dof, scale.upper_z);
        shrunk.min(upper).max(1.0)
    }

    /// `(S, sum V_k, n)` over the blocks with at least
    /// [`MIN_BLOCK_EVENTS`] bad events (the ratio behind the residuals is
    /// estimated from all of them); `None` when there are none.
    fn residuals(&self) -> Option<(f64, f64, f64)> {
        if self.blocks.is_empty() {
            return None;
        }
        self.residuals_at(1, self.log_ratio_mle())
    }

    /// `(S, sum V_k, n)` with blocks merged `merge` at a time (only merged
    /// blocks whose minutes have all completed), at log ratio `d`.
    fn residuals_at(&self, merge: usize, d: f64) -> Option<(f64, f64, f64)> {
        let merge = merge.max(1);
        let groups = self.completed / merge;
        let mut sums = vec![(0.0f64, 0.0f64, 0.0f64, 0.0f64); groups];
        for c in self.blocks.iter().flatten() {
            let Some(g) = sums.get_mut(c.block / merge) else {
                continue;
            };
            let th = theta(c.rho, d);
            g.0 += c.canary;
            g.1 += th * c.total;
            g.2 += th * (1.0 - th) * c.total;
            g.3 += c.total;
        }
        let (mut squares, mut variances, mut n) = (0.0f64, 0.0f64, 0.0f64);
        for (observed, expected, variance, events) in sums {
            // A lone bad event falls in one version or the other, with or
            // without clumps: its squared residual has the binomial
            // expectation under any dispersion. Such blocks (most of them
            // at 1 req/s) only add noise.
            if events >= MIN_BLOCK_EVENTS && variance > 1e-9 {
                squares += (observed - expected).powi(2);
                variances += variance;
                n += 1.0;
            }
        }
        (n > 0.0).then_some((squares, variances, n))
    }

    /// The assumed part: `1 + ramp m W / 4`, with `m` the bad events per
    /// minute and `W = WOBBLE` from [`FULL_WOBBLE_EVENTS`] a minute, 0 up
    /// to [`NO_WOBBLE_EVENTS`], linear in between.
    ///
    /// `WOBBLE` is larger than the wobble it is meant to withstand
    /// (0.28 for a lognormal sigma of 0.5): it also pays back the first
    /// minutes, in which nothing is assumed. That debt grows with the bad
    /// events seen in those minutes, and with fewer than a few a minute it
    /// is small, so `W` is scaled down there. With at most one bad event a
    /// minute a wobble has nothing to clump: it adds `m^2 Var Z / 4` to a
    /// variance of `m`, and the plain e-process stays within `alpha` at
    /// 1 req/s even with a lognormal wobble of sigma 1, so nothing is
    /// assumed there; any `W` would only delay regressions that are
    /// barely detectable within the hour (docs/analysis.md, section 4).
    pub fn assumed(&self) -> f64 {
        self.assumed_at(&SCALES[0])
    }

    /// The assumed dispersion at one wobble period: `1 + ramp m L W / 4`,
    /// `m L` the bad events in `L` minutes.
    fn assumed_at(&self, scale: &Scale) -> f64 {
        if scale.blocks <= 1 {
            return self.assumed_per_block(scale);
        }
        // Bad events per period of `scale.blocks` minutes, the period
        // under way included: a wobble that lasts the period moves all of
        // them together, so it adds `n_p^2 W / 16` to a variance of
        // `n_p / 4`, and the dispersion of the sum is
        // `1 + (sum n_p^2 / sum n_p) W / 4`.
        let mut periods: Vec<f64> = self
            .block_events
            .chunks(scale.blocks)
            .map(|c| c.iter().sum())
            .collect();
        if self.block_events.len().is_multiple_of(scale.blocks) {
            periods.push(self.current_events);
        } else if let Some(last) = periods.last_mut() {
            *last += self.current_events;
        }
        let sum: f64 = periods.iter().sum();
        if sum <= 0.0 {
            return 1.0;
        }
        let squares: f64 = periods.iter().map(|n| n * n).sum();
        let minutes = self.completed as f64 + self.current_intervals as f64 / self.block_len as f64;
        let per_block = sum / minutes.max(1.0);
        let level = (per_block - NO_WOBBLE_EVENTS) / (FULL_WOBBLE_EVENTS - NO_WOBBLE_EVENTS);
        1.0 + level.clamp(0.0, 1.0) * (squares / sum) * scale.wobble / 4.0
    }

    fn assumed_per_block(&self, scale: &Scale) -> f64 {
        if self.completed == 0 {
            return 1.0;
        }
        let by_time = (self.completed as f64 - scale.ramp_start_blocks) / RAMP_BLOCKS;
        let by_events = (self.events - RAMP_START_EVENTS) / RAMP_EVENTS;
        let ramp = by_time.max(by_events).clamp(0.0, 1.0);
        let per_block = self.events / self.completed as f64;
        let level = (per_block - NO_WOBBLE_EVENTS) / (FULL_WOBBLE_EVENTS - NO_WOBBLE_EVENTS);
        let wobble = scale.wobble * level.clamp(0.0, 1.0);
        1.0 + ramp * per_block * scale.blocks as f64 * wobble / 4.0
    }

    /// The log rate ratio at which the expected canary bad events equal
    /// the observed ones (the conditional maximum-likelihood estimate).
    fn log_ratio_mle(&self) -> f64 {
        let cells = self.blocks.iter().flatten();
        let observed: f64 = cells.clone().map(|c| c.canary).sum();
        let excess = |d: f64| -> f64 {
            cells
                .clone()
                .map(|c| theta(c.rho, d) * c.total)
                .sum::<f64>()
                - observed
        };
        // `excess` increases with d; bisect on a range wide enough for any
        // ratio worth reporting (e^±12).
        let (mut lo, mut hi) = (-12.0, 12.0);
        if excess(lo) >= 0.0 {
            return lo;
        }
        if excess(hi) <= 0.0 {
            return hi;
        }
        for _ in 0..50 {
            let mid = (lo + hi) / 2.0;
            if excess(mid) > 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        (lo + hi) / 2.0
    }
}

/// The upper confidence bound on a dispersion measured as `ratio`, a
/// chi-square with `dof` degrees of freedom over `dof` times the
/// dispersion: `ratio dof / chi2_dof(p)`, `p` the lower tail of
/// [`UPPER_Z`], with the Wilson–Hilferty approximation of the quantile
/// (within 2% from 3 degrees of freedom); infinite below 2.
fn upper_bound(ratio: f64, dof: f64, z: f64) -> f64 {
    if dof < 2.0 {
        return f64::INFINITY;
    }
    let spread = (2.0 / (9.0 * dof)).sqrt();
    let base = 1.0 - 2.0 / (9.0 * dof) - z * spread;
    if base <= 0.0 {
        return f64::INFINITY;
    }
    ratio * dof / (dof * base.powi(3))
}

/// The chance that a bad event is the canary's, at share `rho` and log
/// ratio `d`.
fn theta(rho: f64, d: f64) -> f64 {
    let a = rho * d.exp();
    a / (a + 1.0 - rho)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_splits_leave_phi_near_one() {
        let mut g = Dispersion::new(1);
        // Splits close to their expectation: residuals below 1.
        for (c, s) in [(5, 5), (4, 6), (6, 4), (5, 5), (5, 6), (6, 5)] {
            g.update(Some(0.5), c, s);
        }
        assert_eq!(g.measured(), 1.0);
        assert_eq!(g.blocks(), 6);
    }

    #[test]
    fn clumped_splits_raise_phi() {
        let mut g = Dispersion::new(1);
        // Same overall ratio (1), but each block lopsided.
        for (c, s) in [(18, 2), (2, 18), (17, 3), (3, 17), (19, 1), (1, 19)] {
            g.update(Some(0.5), c, s);
        }
        // Residual per block ~ (8^2)/5 = 12.8; with six prior blocks at 1
        // (nothing is assumed in the first minutes) phi is about 7.5.
        assert!(g.measured() > 5.0, "{}", g.measured());
        assert!(g.phi() > 5.0, "{}", g.phi());
    }

    #[test]
    fn a_steady_regression_is_not_mistaken_for_noise() {
        let mut g = Dispersion::new(1);
        for _ in 0..10 {
            g.update(Some(0.5), 20, 10);
        }
        assert_eq!(g.measured(), 1.0);
    }

    #[test]
    fn the_assumed_wobble_is_phased_in_by_minutes_or_events() {
        // 6 bad events a minute: nothing for 5 minutes, full after 11.
        let mut g = Dispersion::new(1);
        for minute in 1..=12 {
            g.update(Some(0.5), 3, 3);
            let expected = if minute <= 5 {
                1.0
            } else {
                1.0 + ((minute as f64 - 5.0) / 6.0).min(1.0) * 6.0 * WOBBLE / 4.0
            };
            assert!(
                (g.assumed() - expected).abs() < 1e-12,
                "{minute}: {}",
                g.assumed()
            );
        }
        // 60 a minute: from the 100th event, full at the 200th.
        let mut g = Dispersion::new(1);
        g.update(Some(0.5), 30, 30);
        assert_eq!(g.assumed(), 1.0);
        g.update(Some(0.5), 30, 30);
        let part = 1.0 + 0.2 * 60.0 * WOBBLE / 4.0;
        assert!((g.assumed() - part).abs() < 1e-12, "{}", g.assumed());
        g.update(Some(0.5), 30, 30);
        g.update(Some(0.5), 30, 30);
        assert!((g.assumed() - (1.0 + 60.0 * WOBBLE / 4.0)).abs() < 1e-12);
    }

    #[test]
    fn little_or_no_wobble_is_assumed_at_low_counts() {
        // Under one bad event a minute: nothing, however long the run.
        let mut g = Dispersion::new(1);
        for minute in 0..60 {
            g.update(
                Some(0.5),
                u64::from(minute % 3 == 0),
                u64::from(minute % 3 == 1),
            );
        }
        assert_eq!(g.assumed(), 1.0);
        // 2.5 a minute: half of the full wobble, once phased in.
        let mut g = Dispersion::new(1);
        for minute in 0..20 {
            g.update(Some(0.5), 1 + minute % 2, 1);
        }
        let expected = 1.0 + 2.5 * (WOBBLE / 2.0) / 4.0;
        assert!((g.assumed() - expected).abs() < 1e-12, "{}", g.assumed());
    }

    #[test]
    fn blocks_with_a_single_bad_event_are_not_measured() {
        // Lone events, always the canary's: no clump can show in them.
        let mut g = Dispersion::new(1);
        for _ in 0..30 {
            g.update(Some(0.5), 1, 0);
        }
        assert_eq!(g.measured(), 1.0);
        assert_eq!(g.blocks(), 30);
        // Lopsided pairs do count.
        for (c, s) in [(2, 0), (0, 2), (2, 0), (0, 2), (2, 0), (0, 2)].repeat(3) {
            g.update(Some(0.5), c, s);
        }
        assert!(g.measured() > 1.0, "{}", g.measured());
    }

    #[test]
    fn the_prior_yields_to_independent_splits() {
        // 60 bad events a minute, split as a binomial would: the assumed
        // dispersion is 10, but after an hour phi is within the prior's
        // share of it, K / (K + n) of the way.
        let mut g = Dispersion::new(1);
        let splits = [(30, 30), (34, 26), (26, 34), (31, 29), (28, 32)];
        let mut early = 0.0;
        for minute in 0..60 {
            let (c, s) = splits[minute % splits.len()];
            g.update(Some(0.5), c, s);
            if minute == 11 {
                early = g.short_phi();
            }
        }
        let a = g.assumed();
        assert!((a - (1.0 + 60.0 * WOBBLE / 4.0)).abs() < 1e-9, "{a}");
        let fading = 1.0 + (a - 1.0) * PRIOR_BLOCKS / (PRIOR_BLOCKS + 60.0);
        assert!(
            g.short_phi() <= fading + 0.5,
            "{} vs {fading}",
            g.short_phi()
        );
        assert!(g.short_phi() <= early, "{} then {early}", g.short_phi());
    }

    #[test]
    fn at_high_counts_the_measured_bound_takes_over() {
        // 600 bad events a minute, binomial splits: the assumed dispersion
        // is 91, the measured one about 1; after 10 blocks phi is the
        // bound, well under the prior's 1 + 90 * 6 / 16.
        let mut g = Dispersion::new(1);
        let splits = [(300, 300), (312, 288), (288, 312), (305, 295), (293, 307)];
        for minute in 0..10 {
            let (c, s) = splits[minute % splits.len()];
            g.update(Some(0.5), c, s);
        }
        assert!(g.assumed() > 90.0, "{}", g.assumed());
        assert!(g.short_phi() < 3.0, "{}", g.short_phi());
        // chi2 quantiles at 0.2: 6.179 (10 degrees), 23.364 (30).
        assert!((upper_bound(1.0, 10.0, UPPER_Z) - 10.0 / 6.179).abs() < 0.02);
        assert!((upper_bound(1.0, 30.0, UPPER_Z) - 30.0 / 23.364).abs() < 0.01);
        assert!(upper_bound(1.0, 1.0, UPPER_Z).is_infinite());
    }

    #[test]
    fn a_measured_wobble_holds_phi_up() {
        let mut g = Dispersion::new(1);
        for (c, s) in [(45, 15), (15, 45), (40, 20), (20, 40)].repeat(15) {
            g.update(Some(0.5), c, s);
        }
        // Residuals of 15 and 10 against a variance of 15: S / V ~ 10.8.
        assert!(g.measured() > 9.0, "{}", g.measured());
        assert!(
            (g.short_phi() - g.measured()).abs() < 1.5,
            "{}",
            g.short_phi()
        );
    }

    #[test]
    fn a_long_wobble_is_assumed_from_the_first_interval() {
        // 30 bad events a minute: before any block completes, the long
        // period's assumed dispersion already counts the events so far.
        let mut g = Dispersion::with_long_scale(6);
        g.update(Some(0.5), 3, 2);
        let first = 1.0 + 5.0 * LONG_WOBBLE / 4.0;
        assert!((g.phi() - first).abs() < 1e-9, "{}", g.phi());
        for _ in 0..59 {
            g.update(Some(0.5), 3, 2);
        }
        // Ten minutes, 300 events: `1 + 300 W / 4`, less what the measured
        // blocks (one ten-minute block so far, no degrees of freedom) say.
        let full = 1.0 + 300.0 * LONG_WOBBLE / 4.0;
        assert!(
            g.phi() > 0.5 * full && g.phi() <= full + 1e-9,
            "{}",
            g.phi()
        );
        assert!(g.short_phi() < g.phi());
    }

    #[test]
    fn independent_ten_minute_blocks_let_the_long_prior_fade() {
        // 60 bad events a minute split as a binomial would, for an hour:
        // six ten-minute blocks with small residuals pull phi well below
        // the assumed `1 + 600 W / 4`.
        let mut g = Dispersion::with_long_scale(1);
        let splits = [(30, 30), (34, 26), (26, 34), (31, 29), (28, 32), (33, 27)];
        for minute in 0..60 {
            let (c, s) = splits[(minute * 7) % splits.len()];
            g.update(Some(0.5), c, s);
        }
        let assumed = 1.0 + 600.0 * LONG_WOBBLE / 4.0;
        assert!(g.phi() < assumed / 2.0, "{} vs {assumed}", g.phi());
    }

    #[test]
    fn blocks_group_intervals_and_skip_empty_ones() {
        let mut g = Dispersion::new(3);
        g.update(Some(0.5), 1, 0);
        g.update(Some(0.5), 0, 0);
        assert_eq!(g.blocks(), 0);
        g.update(Some(0.5), 0, 1);
        assert_eq!(g.blocks(), 1);
        // A block without bad events, or with no share, adds nothing.
        for _ in 0..3 {
            g.update(Some(0.5), 0, 0);
        }
        for _ in 0..3 {
            g.update(None, 4, 4);
        }
        assert_eq!(g.blocks(), 1);
    }
}
