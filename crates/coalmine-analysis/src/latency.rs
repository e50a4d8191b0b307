//! Latency: per-track histograms of one interval, and (issue 4) the
//! sequential distribution-shift check and quantile shifts built on them.

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
