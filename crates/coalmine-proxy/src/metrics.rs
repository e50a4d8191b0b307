//! The proxy's Prometheus metrics (names in docs/proxy.md), and an
//! in-process view of the same counters for the judge.
//!
//! Every counter the request path touches is created at start-up and held
//! as a handle, so counting a request is a few relaxed atomic additions: no
//! label lookup, no lock. The latency histogram is coalmine's own lock-free
//! one (prometheus-client's takes a mutex per observation).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::route::Track;

pub use coalmine_core::counters::Class;
use coalmine_core::counters::{CounterSnapshot, ReadCounters, TrackCounts};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrackClass {
    track: &'static str,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrackLabel {
    track: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    track: &'static str,
    upstream: String,
    class: &'static str,
}

pub use coalmine_core::plan::LATENCY_BUCKETS;

/// A lock-free histogram with [`LATENCY_BUCKETS`] (plus +Inf).
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for HistogramInner {
    fn default() -> Self {
        HistogramInner {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|b| *b < secs);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Count per bucket (not cumulative); the last is +Inf.
    pub fn counts(&self) -> Vec<u64> {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.counts();
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Handles to one track's counters.
#[derive(Clone)]
pub struct TrackMetrics {
    classes: [Counter; 5],
    latency: LatencyHistogram,
    weight: Gauge,
}

impl TrackMetrics {
    /// Counts an answered (or failed) request and its time to answer.
    pub fn record(&self, class: Class, elapsed: Duration) {
        self.count(class);
        self.latency.observe(elapsed);
    }

    /// Counts a request whose time to answer was observed before.
    pub fn count(&self, class: Class) {
        self.classes[class.index()].inc();
    }

    /// Requests so far per class, in the order 2xx, 3xx, 4xx, 5xx, error.
    pub fn counts(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.classes[i].get())
    }

    /// The latency histogram.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }
}

/// Handles to both tracks' request counters (cheap clones of the
/// atomics), for reading them in process: the judge's `builtin` provider
/// takes them as a [`ReadCounters`].
#[derive(Clone)]
pub struct Counters {
    stable: TrackMetrics,
    canary: TrackMetrics,
    started: f64,
}

impl ReadCounters for Counters {
    fn read(&self) -> CounterSnapshot {
        let track = |t: &TrackMetrics| TrackCounts {
            classes: t.counts(),
            buckets: t.latency().counts(),
        };
        CounterSnapshot {
            bounds: LATENCY_BUCKETS.to_vec(),
            stable: track(&self.stable),
            canary: track(&self.canary),
            started: Some(self.started),
        }
    }
}

/// Counters for one upstream server, by class (one allocation, so a
/// handle costs one reference count to copy).
#[derive(Clone)]
pub struct UpstreamMetrics(Arc<[Counter; 5]>);

impl UpstreamMetrics {
    /// Counts one exchange with this upstream.
    pub fn record(&self, class: Class) {
        self.0[class.index()].inc();
    }
}

/// All of the proxy's metrics.
pub struct Metrics {
    registry: Registry,
    stable: TrackMetrics,
    canary: TrackMetrics,
    upstreams: Family<UpstreamLabels, Counter>,
    /// Requests copied to the canary.
    pub mirrored: Counter,
    /// Mirror copies not sent because too many were in flight or the body was too large.
    pub mirror_dropped: Counter,
    /// Mirror copies that got no answer or a 5xx.
    pub mirror_failed: Counter,
    /// Route tables refused from the routes source (a ConfigMap): missing,
    /// not JSON, or failing the checks; the routes in effect stayed.
    pub routes_source_errors: Counter,
    /// Failed reads of the routes source (the API server refused or could
    /// not be reached); retried, the routes in effect stayed.
    pub routes_watch_errors: Counter,
    /// When these counters started (Unix seconds).
    started: f64,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<TrackClass, Counter>::default();
        let durations = Family::<TrackLabel, LatencyHistogram>::default();
        let weights = Family::<TrackLabel, Gauge>::default();
        let upstreams = Family::<UpstreamLabels, Counter>::default();
        let mirrored = Counter::default();
        let mirror_dropped = Counter::default();
        let mirror_failed = Counter::default();
        let routes_source_errors = Counter::default();
        let routes_watch_errors = Counter::default();
        // Readers of the counters (the judge, over several replicas) tell a
        // restart from this, not only from a counter going down.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        registry.register(
            coalmine_core::counters::STARTED,
            "When this proxy's counters started (the process's start), Unix seconds",
            prometheus_client::metrics::gauge::ConstGauge::new(started),
        );
        registry.register(
            "coalmine_proxy_requests",
            "Requests answered, by track and class (2xx, 3xx, 4xx, 5xx, error = no answer from the upstream, or one that broke off)",
            requests.clone(),
        );
        registry.register(
            "coalmine_proxy_request_duration_seconds",
            "Time from receiving a request to the upstream's response headers, by track",
            durations.clone(),
        );
        registry.register(
            "coalmine_proxy_route_weight",
            "Percent of weighted traffic routed to each track",
            weights.clone(),
        );
        registry.register(
            "coalmine_proxy_upstream_requests",
            "Exchanges with each upstream server, by track and class",
            upstreams.clone(),
        );
        registry.register(
            "coalmine_proxy_mirrored_requests",
            "Stable requests also sent to the canary",
            mirrored.clone(),
        );
        registry.register(
            "coalmine_proxy_mirror_dropped",
            "Mirror copies not sent: too many in flight, or a body too large to copy",
            mirror_dropped.clone(),
        );
        registry.register(
            "coalmine_proxy_mirror_failed",
            "Mirror copies that got no answer or a 5xx",
            mirror_failed.clone(),
        );
        registry.register(
            "coalmine_proxy_routes_source_errors",
            "Route tables refused from the routes source (ConfigMap): routes.json missing, not JSON, or invalid; the routes in effect stayed",
            routes_source_errors.clone(),
        );
        registry.register(
            "coalmine_proxy_routes_watch_errors",
            "Failed reads of the routes source (ConfigMap watch errors: refused, API server unreachable), retried with backoff",
            routes_watch_errors.clone(),
        );
        let track = |t: Track| TrackMetrics {
            classes: Class::ALL.map(|c| {
                requests
                    .get_or_create(&TrackClass {
                        track: t.as_str(),
                        class: c.as_str(),
                    })
                    .clone()
            }),
            latency: durations
                .get_or_create(&TrackLabel { track: t.as_str() })
                .clone(),
            weight: weights
                .get_or_create(&TrackLabel { track: t.as_str() })
                .clone(),
        };
        Metrics {
            stable: track(Track::Stable),
            canary: track(Track::Canary),
            registry,
            upstreams,
            mirrored,
            mirror_dropped,
            mirror_failed,
            routes_source_errors,
            routes_watch_errors,
            started,
        }
    }

    /// One track's counters.
    pub fn track(&self, track: Track) -> &TrackMetrics {
        match track {
            Track::Stable => &self.stable,
            Track::Canary => &self.canary,
        }
    }

    /// Both tracks' request counters, to read in process.
    pub fn counters(&self) -> Counters {
        Counters {
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            started: self.started,
        }
    }

    /// Counters for one upstream (created once per pool, not per request).
    pub fn upstream(&self, track: Track, url: &str) -> UpstreamMetrics {
        UpstreamMetrics(Arc::new(Class::ALL.map(|c| {
            self.upstreams
                .get_or_create(&UpstreamLabels {
                    track: track.as_str(),
                    upstream: url.to_owned(),
                    class: c.as_str(),
                })
                .clone()
        })))
    }

    /// Sets the weight gauges from the canary's weight.
    pub fn set_weight(&self, canary_weight: u8) {
        self.canary.weight.set(i64::from(canary_weight));
        self.stable
            .weight
            .set(100 - i64::from(canary_weight.min(100)));
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        openmetrics_to_prometheus(&out)
    }
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has
/// samples `x_total`. The classic text format (what `promtool check metrics`
/// and every Prometheus version read) names the family `x_total` in its
/// `# HELP`/`# TYPE` lines and has no `# EOF`.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_brief_names() {
        let m = Metrics::new();
        m.track(Track::Canary)
            .record(Class::ServerError, Duration::from_millis(120));
        m.track(Track::Stable)
            .record(Class::Success, Duration::from_millis(3));
        m.set_weight(10);
        m.mirrored.inc();
        let text = m.encode();
        for line in [
            "coalmine_proxy_requests_total{track=\"canary\",class=\"5xx\"} 1",
            "coalmine_proxy_requests_total{track=\"stable\",class=\"2xx\"} 1",
            "coalmine_proxy_requests_total{track=\"stable\",class=\"error\"} 0",
            "coalmine_proxy_request_duration_seconds_bucket{le=\"0.15\",track=\"canary\"} 1",
            "coalmine_proxy_request_duration_seconds_bucket{le=\"0.1\",track=\"canary\"} 0",
            "coalmine_proxy_request_duration_seconds_count{track=\"stable\"} 1",
            "coalmine_proxy_route_weight{track=\"canary\"} 10",
            "coalmine_proxy_route_weight{track=\"stable\"} 90",
            "coalmine_proxy_mirrored_requests_total 1",
            "coalmine_proxy_routes_source_errors_total 0",
            "coalmine_proxy_routes_watch_errors_total 0",
            "# TYPE coalmine_proxy_requests_total counter",
            "# HELP coalmine_proxy_requests_total Requests answered",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}
