//! Latency: per-track histograms of one interval, and the sequential
//! distribution-shift check and quantile shifts built on them.
//!
//! The check compares like with like: latency moves with load and time of
//! day for both versions, and the canary's share of requests moves with
//! the weight, so pooling each version's histograms over a rollout would
//! compare a canary that served mostly late intervals with a stable that
//! served mostly early ones (a Simpson effect). Stable's histogram of each
//! interval is instead weighted by the canary's requests in that interval,
//! `n_c,s / n_b,s` per stable request: the reference is the distribution
//! stable would have shown on the canary's schedule. Intervals in which one
//! version had no requests (weight 0 or 100, header-routed steps) add
//! nothing.

/// One interval's latency histograms for both tracks, over the same bucket
/// bounds. Counts are per bucket (not cumulative); the last count is the
/// `+Inf` bucket, so each count vector has `bounds.len() + 1` entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histograms {
    /// Upper bounds of the finite buckets, in seconds, increasing.
    pub bounds: Vec<f64>,
    /// Canary requests per bucket.
    pub canary: Vec<u64>,
    /// Stable requests per bucket.
    pub stable: Vec<u64>,
}

impl Histograms {
    /// Whether the shape is consistent: increasing bounds, one count per
    /// bucket plus `+Inf` for both tracks.
    pub fn is_consistent(&self) -> bool {
        self.bounds.windows(2).all(|w| w[0] < w[1])
            && self.canary.len() == self.bounds.len() + 1
            && self.stable.len() == self.bounds.len() + 1
    }
}

/// Smallest sample per track before the shape check may fail (`m` of the
/// brief's band).
pub const MIN_SAMPLE: u64 = 100;

/// `C_alpha` of the band: 8.12 at alpha = 0.05 and 9.28 at 0.01 (Howard &
/// Ramdas), linear in `ln(1/alpha)` between and beyond those points.
fn c_alpha(alpha: f64) -> f64 {
    8.12 + (9.28 - 8.12) * (0.05 / alpha).ln() / 5f64.ln()
}

/// The half-width of the sequential Kolmogorov–Smirnov band after `t`
/// observations: `0.85 sqrt((ln(1 + ln(t/m)) + C_alpha) / t)`; infinite
/// below the minimum sample.
pub fn band(t: u64, alpha: f64) -> f64 {
    if t < MIN_SAMPLE || t == 0 {
        return f64::INFINITY;
    }
    let t = t as f64;
    0.85 * (((t / MIN_SAMPLE as f64).ln().ln_1p() + c_alpha(alpha)) / t).sqrt()
}

/// A shift of one quantile, canary minus stable, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileShift {
    /// The quantile, e.g. 0.99.
    pub q: f64,
    /// The canary's value (upper edge of its bucket).
    pub canary: f64,
    /// Stable's value.
    pub stable: f64,
    /// Anytime-valid interval for the shift; `None` ends are unbounded
    /// (the quantile lies beyond the last finite bucket, or too few data).
    pub interval: (Option<f64>, Option<f64>),
}

/// The sequential distribution-shift check: FAIL when the canary's latency
/// distribution is stochastically larger than stable's by more than both
/// tracks' bands allow, i.e. `max_x [F_b(x) - F_c(x)] > eps(n_b) + eps(n_c)`
/// at the histogram's bucket edges (evaluating at fixed edges keeps the
/// band valid). `F_b` is stable's weighted histogram (see the module
/// docs) and `n_b` its effective sample size, `(sum w)^2 / sum w^2` over
/// stable's requests: equal to stable's requests while the split is
/// steady, smaller when it moves. The band for a weighted sample with that
/// effective size is an approximation (exact for a steady split).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShapeCheck {
    alpha: f64,
    bounds: Vec<f64>,
    canary: Vec<f64>,
    /// Stable's requests per bucket, each weighted by `n_c,s / n_b,s`.
    stable: Vec<f64>,
    /// `sum w^2` over stable's requests: `sum_s n_c,s^2 / n_b,s`.
    stable_square_weights: f64,
    failed: bool,
    mismatched: bool,
}

impl ShapeCheck {
    /// A check at level `alpha`.
    pub fn new(alpha: f64) -> Self {
        ShapeCheck {
            alpha,
            bounds: Vec::new(),
            canary: Vec::new(),
            stable: Vec::new(),
            stable_square_weights: 0.0,
            failed: false,
            mismatched: false,
        }
    }

    /// Adds one interval's histograms. Histograms whose bounds differ from
    /// the first ones are ignored (and reported by [`Self::mismatched`]).
    pub fn update(&mut self, h: &Histograms) {
        if !h.is_consistent() {
            self.mismatched = true;
            return;
        }
        let (nc, nb) = (
            h.canary.iter().sum::<u64>() as f64,
            h.stable.iter().sum::<u64>() as f64,
        );
        // Without both versions the interval compares nothing.
        if nc == 0.0 || nb == 0.0 {
            return;
        }
        if self.bounds.is_empty() && self.canary.is_empty() {
            self.bounds = h.bounds.clone();
            self.canary = vec![0.0; h.canary.len()];
            self.stable = vec![0.0; h.stable.len()];
        } else if self.bounds != h.bounds {
            self.mismatched = true;
            return;
        }
        let w = nc / nb;
        for (a, b) in self.canary.iter_mut().zip(&h.canary) {
            *a += *b as f64;
        }
        for (a, b) in self.stable.iter_mut().zip(&h.stable) {
            *a += w * *b as f64;
        }
        self.stable_square_weights += w * w * nb;
        // Once crossed, the check stays failed: the band is time-uniform,
        // so the crossing was already a valid rejection.
        self.failed |= self.crosses();
    }

    /// The canary's requests so far and stable's effective sample size
    /// (its requests while the split is steady).
    pub fn totals(&self) -> (u64, u64) {
        let nc: f64 = self.canary.iter().sum();
        let weighted: f64 = self.stable.iter().sum();
        let nb = if self.stable_square_weights > 0.0 {
            weighted * weighted / self.stable_square_weights
        } else {
            0.0
        };
        (nc.round() as u64, (nb + 1e-6).floor() as u64)
    }

    /// Whether some histogram had other bucket bounds.
    pub fn mismatched(&self) -> bool {
        self.mismatched
    }

    /// `max_x [F_b(x) - F_c(x)]` at the bucket edges (0 before data).
    pub fn statistic(&self) -> f64 {
        let nc: f64 = self.canary.iter().sum();
        let nb: f64 = self.stable.iter().sum();
        if nc == 0.0 || nb == 0.0 {
            return 0.0;
        }
        let (mut cc, mut cb, mut best) = (0.0, 0.0, 0.0f64);
        for (c, b) in self.canary.iter().zip(&self.stable) {
            cc += c;
            cb += b;
            best = best.max(cb / nb - cc / nc);
        }
        best
    }

    /// `eps(n_b) + eps(n_c)`.
    pub fn threshold(&self) -> f64 {
        let (nc, nb) = self.totals();
        band(nc, self.alpha) + band(nb, self.alpha)
    }

    fn crosses(&self) -> bool {
        self.statistic() > self.threshold()
    }

    /// Whether the canary was found slower.
    pub fn fails(&self) -> bool {
        self.failed
    }

    /// p50, p90 and p99 of both tracks and their shifts with intervals
    /// from the same bands.
    pub fn quantile_shifts(&self) -> Vec<QuantileShift> {
        let (nc, nb) = self.totals();
        if nc == 0 || nb == 0 {
            return Vec::new();
        }
        let (ec, eb) = (band(nc, self.alpha), band(nb, self.alpha));
        [0.5, 0.9, 0.99]
            .into_iter()
            .filter_map(|q| {
                let canary = quantile(&self.bounds, &self.canary, q)?;
                let stable = quantile(&self.bounds, &self.stable, q)?;
                let lo = match (
                    lower_quantile(&self.bounds, &self.canary, q - ec),
                    quantile(&self.bounds, &self.stable, q + eb),
                ) {
                    (Some(c), Some(b)) => Some(c - b),
                    _ => None,
                };
                let hi = match (
                    quantile(&self.bounds, &self.canary, q + ec),
                    lower_quantile(&self.bounds, &self.stable, q - eb),
                ) {
                    (Some(c), Some(b)) => Some(c - b),
                    _ => None,
                };
                Some(QuantileShift {
                    q,
                    canary,
                    stable,
                    interval: (lo, hi),
                })
            })
            .collect()
    }
}

/// The upper edge of the bucket holding quantile `q`; `None` when it is
/// the `+Inf` bucket or `q > 1`.
fn quantile(bounds: &[f64], counts: &[f64], q: f64) -> Option<f64> {
    let n: f64 = counts.iter().sum();
    if n <= 0.0 || q > 1.0 {
        return None;
    }
    // Within a rounding error of the target counts as reaching it (the
    // weighted counts are not whole).
    let target = q.max(0.0) * n * (1.0 - 1e-12);
    let mut seen = 0.0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen > 0.0 && seen >= target {
            return bounds.get(i).copied();
        }
    }
    None
}

/// The lower edge of the bucket holding quantile `q` (0 for the first
/// bucket or `q <= 0`).
fn lower_quantile(bounds: &[f64], counts: &[f64], q: f64) -> Option<f64> {
    let n: f64 = counts.iter().sum();
    if n <= 0.0 {
        return None;
    }
    if q <= 0.0 {
        return Some(0.0);
    }
    let target = q.min(1.0) * n * (1.0 - 1e-12);
    let mut seen = 0.0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen > 0.0 && seen >= target {
            return Some(if i == 0 { 0.0 } else { bounds[i - 1] });
        }
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(canary: &[u64], stable: &[u64]) -> Histograms {
        Histograms {
            bounds: vec![0.1, 0.2, 0.3],
            canary: canary.to_vec(),
            stable: stable.to_vec(),
        }
    }

    #[test]
    fn band_matches_the_formula() {
        assert!(band(99, 0.05).is_infinite());
        // t = m: ln(1 + ln 1) = 0, so 0.85 sqrt(8.12 / 100).
        assert!((band(100, 0.05) - 0.85 * (8.12f64 / 100.0).sqrt()).abs() < 1e-12);
        assert!((c_alpha(0.01) - 9.28).abs() < 1e-9);
        assert!(band(10_000, 0.05) < band(1_000, 0.05));
        assert!(band(1_000, 0.01) > band(1_000, 0.05));
    }

    #[test]
    fn same_shape_does_not_fail_and_a_slower_canary_does() {
        let mut same = ShapeCheck::new(0.05);
        let mut slower = ShapeCheck::new(0.05);
        for _ in 0..100 {
            same.update(&hist(&[50, 30, 15, 5], &[50, 30, 15, 5]));
            slower.update(&hist(&[20, 30, 30, 20], &[50, 30, 15, 5]));
        }
        assert!(!same.fails());
        assert_eq!(same.statistic(), 0.0);
        assert!(
            slower.fails(),
            "{} vs {}",
            slower.statistic(),
            slower.threshold()
        );
        // A faster canary is not a regression.
        let mut faster = ShapeCheck::new(0.05);
        for _ in 0..100 {
            faster.update(&hist(&[50, 30, 15, 5], &[20, 30, 30, 20]));
        }
        assert!(!faster.fails());
    }

    #[test]
    fn too_few_requests_never_fail() {
        let mut c = ShapeCheck::new(0.05);
        c.update(&hist(&[0, 0, 0, 50], &[50, 0, 0, 0]));
        assert!(!c.fails());
    }

    #[test]
    fn mismatched_bounds_are_ignored_and_reported() {
        let mut c = ShapeCheck::new(0.05);
        c.update(&hist(&[1, 1, 1, 1], &[1, 1, 1, 1]));
        c.update(&Histograms {
            bounds: vec![0.5],
            canary: vec![1, 1],
            stable: vec![1, 1],
        });
        assert!(c.mismatched());
        assert_eq!(c.totals(), (4, 4));
    }

    #[test]
    fn a_drift_common_to_both_is_not_a_shift_when_the_split_moves() {
        // Both versions slow down from the first bucket to the third while
        // the canary's share grows from 10% to 50%: pooled, the canary's
        // requests are mostly slow ones and stable's mostly fast ones.
        let mut c = ShapeCheck::new(0.05);
        for _ in 0..200 {
            c.update(&hist(&[100, 0, 0, 0], &[900, 0, 0, 0]));
        }
        for _ in 0..200 {
            c.update(&hist(&[0, 0, 500, 0], &[0, 0, 500, 0]));
        }
        assert!(!c.fails(), "{} vs {}", c.statistic(), c.threshold());
        assert!(c.statistic() < 1e-9, "{}", c.statistic());
        // Stable's effective size is below its 280,000 requests.
        let (nc, nb) = c.totals();
        assert_eq!(nc, 120_000);
        assert!(nb < 280_000 && nb > 100_000, "{nb}");
    }

    #[test]
    fn intervals_without_canary_requests_are_skipped() {
        let mut c = ShapeCheck::new(0.05);
        c.update(&hist(&[0, 0, 0, 0], &[0, 0, 0, 900]));
        c.update(&hist(&[50, 0, 0, 0], &[50, 0, 0, 0]));
        assert_eq!(c.totals(), (50, 50));
        assert_eq!(c.statistic(), 0.0);
    }

    #[test]
    fn quantile_shifts_with_intervals() {
        let mut c = ShapeCheck::new(0.05);
        for _ in 0..1000 {
            c.update(&hist(&[0, 90, 10, 0], &[90, 10, 0, 0]));
        }
        let shifts = c.quantile_shifts();
        let p50 = shifts[0];
        assert_eq!((p50.canary, p50.stable), (0.2, 0.1));
        let (lo, hi) = p50.interval;
        // Bucket edges bound the shift: at least 0.1 - 0.1, at most 0.2 - 0.
        assert_eq!((lo, hi), (Some(0.0), Some(0.2)), "{p50:?}");
        // p99 of the canary lies in the 0.3 bucket.
        assert_eq!(shifts[2].canary, 0.3);
    }
}
