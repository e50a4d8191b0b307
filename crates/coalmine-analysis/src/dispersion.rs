//! The dispersion guard: keeps the ratio e-process honest when bad events
//! come in clumps.
//!
//! The e-process of [`crate::eprocess`] treats every bad event as an
//! independent draw of "canary or stable". When one version's error rate
//! wobbles from minute to minute (one bad pod among few, a noisy
//! dependency), the split of bad events between the versions varies more
//! than a binomial draw, and the plain e-process over-counts the evidence:
//! `coalmine simulate --noise-canary 0.5` measured 8.0% false rollbacks at
//! 10 req/s and 41.6% at 100 req/s for a healthy canary (docs/analysis.md).
//!
//! The guard estimates that excess variation and tempers the evidence by
//! it (the quasi-likelihood correction): bad events are grouped into blocks
//! of about a minute (the time scale on which such wobbles live), and for
//! each block the Pearson residual of the canary's bad events against the
//! split expected at the estimated ratio is computed. Their mean square is
//! the dispersion `phi` (1 for independent events, larger for clumps); the
//! e-process's log-likelihood is divided by it. A prior of `PRIOR_BLOCKS`
//! blocks at `phi = 1` keeps one odd minute from swinging the estimate.
//! Residuals are taken at the estimated ratio, not at the tolerance, so a
//! real regression does not look like noise.
//!
//! Residuals are computed per completed block, so the guard reacts a block
//! late; with a single block the estimated ratio fits it exactly, so it
//! only starts to act after the second block (a known gap: see
//! docs/analysis.md). It covers noise whose time scale is at most a block,
//! and tempering by an estimated `phi` is a heuristic whose calibration is
//! measured, not proved. Choices and
//! measurements: docs/analysis.md.

/// Pseudo-blocks at `phi = 1` in the estimate.
pub const PRIOR_BLOCKS: f64 = 2.0;

/// One interval's bad events and share, as the guard keeps them.
#[derive(Debug, Clone, Copy)]
struct Cell {
    rho: f64,
    canary: f64,
    total: f64,
}

/// Estimates the dispersion of the canary/stable split of bad events.
#[derive(Debug, Clone)]
pub struct Dispersion {
    block_len: usize,
    /// Completed blocks.
    blocks: Vec<Vec<Cell>>,
    /// The block being filled, and how many intervals it has seen.
    current: Vec<Cell>,
    current_intervals: usize,
    phi: f64,
}

impl Dispersion {
    /// A guard that groups `block_len` (>= 1) intervals into a block.
    pub fn new(block_len: usize) -> Self {
        Dispersion {
            block_len: block_len.max(1),
            blocks: Vec::new(),
            current: Vec::new(),
            current_intervals: 0,
            phi: 1.0,
        }
    }

    /// Records one interval: the canary's share and both arms' bad events.
    /// Returns whether the estimate changed (a block completed).
    pub fn update(&mut self, rho: Option<f64>, canary_bad: u64, stable_bad: u64) -> bool {
        let total = (canary_bad + stable_bad) as f64;
        if let Some(rho) = rho.filter(|r| *r > 0.0 && *r < 1.0)
            && total > 0.0
        {
            self.current.push(Cell {
                rho,
                canary: canary_bad as f64,
                total,
            });
        }
        self.current_intervals += 1;
        if self.current_intervals < self.block_len {
            return false;
        }
        self.current_intervals = 0;
        let block = std::mem::take(&mut self.current);
        if block.is_empty() {
            return false;
        }
        self.blocks.push(block);
        self.phi = self.estimate();
        true
    }

    /// The current dispersion factor, at least 1.
    pub fn phi(&self) -> f64 {
        self.phi
    }

    /// Completed blocks with bad events.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    fn estimate(&self) -> f64 {
        let d = self.log_ratio_mle();
        let mut sum = 0.0f64;
        let mut n = 0.0f64;
        for block in &self.blocks {
            let (mut observed, mut expected, mut variance) = (0.0, 0.0, 0.0);
            for c in block {
                let th = theta(c.rho, d);
                observed += c.canary;
                expected += th * c.total;
                variance += th * (1.0 - th) * c.total;
            }
            if variance > 1e-9 {
                sum += (observed - expected).powi(2) / variance;
                n += 1.0;
            }
        }
        // One degree of freedom goes to the estimated ratio.
        let dof = (n - 1.0).max(0.0);
        ((PRIOR_BLOCKS + sum) / (PRIOR_BLOCKS + dof)).max(1.0)
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
        assert_eq!(g.phi(), 1.0);
        assert_eq!(g.blocks(), 6);
    }

    #[test]
    fn clumped_splits_raise_phi() {
        let mut g = Dispersion::new(1);
        // Same overall ratio (1), but each block lopsided.
        for (c, s) in [(18, 2), (2, 18), (17, 3), (3, 17), (19, 1), (1, 19)] {
            g.update(Some(0.5), c, s);
        }
        // Residual per block ~ (8^2)/5 = 12.8.
        assert!(g.phi() > 8.0, "{}", g.phi());
    }

    #[test]
    fn a_steady_regression_is_not_mistaken_for_noise() {
        let mut g = Dispersion::new(1);
        for _ in 0..10 {
            g.update(Some(0.5), 20, 10);
        }
        assert_eq!(g.phi(), 1.0);
    }

    #[test]
    fn blocks_group_intervals_and_skip_empty_ones() {
        let mut g = Dispersion::new(3);
        assert!(!g.update(Some(0.5), 1, 0));
        assert!(!g.update(Some(0.5), 0, 0));
        assert!(g.update(Some(0.5), 0, 1));
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
