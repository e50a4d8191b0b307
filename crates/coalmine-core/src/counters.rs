//! The proxy's counter schema: what the data plane counts per version and
//! how the judge's `builtin` provider reads it back.
//!
//! The proxy (`coalmine-proxy`) writes these counters and exposes them as
//! Prometheus series; the `builtin` provider (`coalmine-providers`) reads
//! them, in process through [`ReadCounters`] or scraped from `/metrics`.
//! Both take the class labels, the series names and the snapshot types from
//! here, so neither depends on the other. The latency bucket edges are
//! [`crate::plan::LATENCY_BUCKETS`].

use crate::routes::Track;

/// The requests counter series (a counter family labelled `track` and
/// `class`), as the proxy exposes it.
pub const REQUESTS: &str = "coalmine_proxy_requests_total";
/// The latency histogram's bucket series (labelled `track` and `le`).
pub const BUCKETS: &str = "coalmine_proxy_request_duration_seconds_bucket";
/// The gauge of the proxy process's start, Unix seconds: a reader that sees
/// it change knows the counters started again from zero, even when they
/// have since grown past the values it read before.
pub const STARTED: &str = "coalmine_proxy_start_time_seconds";

/// How an exchange ended, as the `class` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 1xx and 2xx answers.
    Success,
    /// 3xx.
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx from the upstream.
    ServerError,
    /// No answer from the upstream (refused, reset, timed out), or an
    /// answer that broke off or stalled after its head.
    Error,
}

impl Class {
    /// Every class, in the order of [`TrackCounts::classes`].
    pub const ALL: [Class; 5] = [
        Class::Success,
        Class::Redirect,
        Class::ClientError,
        Class::ServerError,
        Class::Error,
    ];

    /// The class of an upstream status code.
    pub fn of(status: u16) -> Class {
        match status {
            0..=299 => Class::Success,
            300..=399 => Class::Redirect,
            400..=499 => Class::ClientError,
            _ => Class::ServerError,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Success => "2xx",
            Class::Redirect => "3xx",
            Class::ClientError => "4xx",
            Class::ServerError => "5xx",
            Class::Error => "error",
        }
    }

    /// The class with this label value.
    pub fn from_label(label: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == label)
    }

    /// Its position in [`Class::ALL`] and [`TrackCounts::classes`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the judge counts it as a failed request (`5xx` and `error`).
    pub fn is_bad(self) -> bool {
        matches!(self, Class::ServerError | Class::Error)
    }
}

/// One version's cumulative counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrackCounts {
    /// Requests per class, in the order of [`Class::ALL`].
    pub classes: [u64; 5],
    /// Requests per latency bucket (not cumulative), `+Inf` last.
    pub buckets: Vec<u64>,
}

impl TrackCounts {
    /// Requests of one class.
    pub fn class(&self, class: Class) -> u64 {
        self.classes[class.index()]
    }
}

/// Both versions' cumulative counters at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CounterSnapshot {
    /// Finite bucket upper bounds, seconds, increasing.
    pub bounds: Vec<f64>,
    /// The stable version's counters.
    pub stable: TrackCounts,
    /// The canary's counters.
    pub canary: TrackCounts,
    /// When the process that counted started (Unix seconds), where known.
    pub started: Option<f64>,
}

impl CounterSnapshot {
    /// One version's counters.
    pub fn track(&self, track: Track) -> &TrackCounts {
        match track {
            Track::Stable => &self.stable,
            Track::Canary => &self.canary,
        }
    }

    /// One version's counters, to fill in.
    pub fn track_mut(&mut self, track: Track) -> &mut TrackCounts {
        match track {
            Track::Stable => &mut self.stable,
            Track::Canary => &mut self.canary,
        }
    }
}

/// Counters that can be read in process (the proxy's, when the judge runs
/// beside it): a cheap read of atomics, no I/O.
pub trait ReadCounters: Send + Sync {
    /// The counters now.
    fn read(&self) -> CounterSnapshot;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(Class::of(101), Class::Success);
        assert_eq!(Class::of(204), Class::Success);
        assert_eq!(Class::of(304), Class::Redirect);
        assert_eq!(Class::of(404), Class::ClientError);
        assert_eq!(Class::of(503), Class::ServerError);
    }

    #[test]
    fn labels_round_trip_in_order() {
        for (i, c) in Class::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(Class::from_label(c.as_str()), Some(c));
        }
        assert_eq!(Class::from_label("teapot"), None);
        let bad: Vec<_> = Class::ALL.into_iter().filter(|c| c.is_bad()).collect();
        assert_eq!(bad, [Class::ServerError, Class::Error]);
    }
}
