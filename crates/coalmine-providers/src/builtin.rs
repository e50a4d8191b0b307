//! The `builtin` provider: the proxy's own counters, read in process or
//! scraped from its `/metrics`, turned into per-interval counts.
//!
//! The proxy's counters are cumulative since it started, so each
//! collection reports the difference from the previous snapshot:
//!
//! - **Baseline.** In process, the snapshot is taken when the source is
//!   built, so the first collection already covers the first interval and
//!   traffic from before the analysis started is never counted. A scraped
//!   source cannot read anything while being built: its baseline is the
//!   first scrape, taken by [`crate::MetricSource::prime`] or, failing that,
//!   by the first collection, which then reports NoData ("baseline taken").
//! - **Restarts.** If the proxy's start time (`STARTED`) differs from the
//!   previous snapshot's, or any counter is lower, the proxy restarted (or
//!   the scrape reached another process): that interval is NoData and the
//!   new values become the baseline.
//! - **Failed scrapes** keep the old baseline, so the next good scrape
//!   covers both intervals: nothing is lost and nothing counted twice.
//!
//! `errors`: bad = `5xx` + `error` classes, total = all classes.
//! `latency`: bad = requests above the `slowerThan` bucket edge, total =
//! all requests in the histogram, plus both tracks' histogram deltas for
//! the shape check. The histogram only knows bucket edges, so the
//! threshold used is the **largest bucket edge at or below `slowerThan`**
//! (the smallest edge if `slowerThan` is below all of them): exact when
//! `slowerThan` is an edge (the proxy's edges include 50ms, 100ms, 200ms,
//! 250ms, 300ms, 500ms, 1s), otherwise it also counts the requests between
//! that edge and `slowerThan` as slow. Both tracks are counted against the
//! same edge, so the comparison stays fair; rounding down rather than up
//! means a regression just under the threshold still shows.
//!
//! With a `threshold` check instead of a comparison, the value is the
//! canary's bad fraction in the interval (NoData without canary requests).
//!
//! **Several replicas** ([`BuiltinSource::Replicas`], the controller's
//! proxy Deployment): at each collection a callback lists the replicas (an
//! id and a `/metrics` URL each), all are scraped at once within the
//! interval's budget, and the interval's counts are the sum over replicas
//! of each one's difference since its own previous scrape, bucket by
//! bucket for the histograms. Per replica, by its id:
//!
//! - **New** (not in the previous list): its first scrape is its baseline;
//!   its requests until then are not counted. If every replica is new, the
//!   interval is NoData ("baseline taken").
//! - **Gone** from the list: dropped with its baseline; its requests since
//!   its last scrape are not counted.
//! - **Restarted** (its start time changed, a counter went down, or its
//!   buckets or URL changed):
//!   the scrape is its new baseline and it adds nothing to this interval;
//!   if that leaves no replica with a difference, the interval is NoData.
//! - **Unreadable** while listed at the previous collection too (refused,
//!   timeout, not a proxy's text): the interval is NoData naming it, never
//!   a partial sum, and every replica keeps its baseline so that the next
//!   complete read covers both intervals. A new replica that cannot be read
//!   yet only has no baseline; it fails the next interval if it still
//!   cannot be read.
//! - The callback fails or lists nobody: NoData with the reason (a failed
//!   callback keeps every baseline; an empty list drops them all).
//!
//! Both tracks' counts come from the same replicas in every interval, so
//! the comparison stays fair when one is left out. The same id listed
//! twice is read once. Replicas whose histograms have different buckets
//! cannot be summed: a latency interval with them is NoData.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use coalmine_analysis::eprocess::Interval;
use coalmine_analysis::judge::Observed;
use coalmine_analysis::latency::Histograms;
use std::sync::Arc;

use coalmine_core::counters::{Class, CounterSnapshot, ReadCounters, TrackCounts};
use coalmine_core::routes::Track;
use coalmine_core::spec::BuiltinMetric;
use http::{HeaderMap, Method};

use crate::client::{Call, Failure, Http};
use crate::textformat;

pub use coalmine_core::counters::{BUCKETS, REQUESTS, STARTED};

/// Where the proxy's counters are read.
#[derive(Clone)]
pub enum BuiltinSource {
    /// A proxy in this process (`coalmine run`): read directly, no I/O.
    InProcess(Arc<dyn ReadCounters>),
    /// A proxy elsewhere: `GET` this `/metrics` URL (`http://` only).
    Scrape(String),
    /// Every replica of a proxy, listed anew at each collection and summed
    /// (see the module docs).
    Replicas(ListReplicas),
}

/// One replica of a proxy, to scrape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Replica {
    /// Tells it from the others and names it in NoData reasons, e.g.
    /// `web-proxy-7d9f-abcde (10.0.0.5)`. A replica is followed from one
    /// collection to the next by this id.
    pub id: String,
    /// Its `/metrics` URL (`http://` only), e.g. `http://10.0.0.5:9902/metrics`.
    pub url: String,
}

/// Lists a proxy's replicas now, or says why it cannot.
pub type ListReplicas = Arc<dyn Fn() -> Result<Vec<Replica>, String> + Send + Sync>;

impl BuiltinSource {
    /// Reads the counters of a proxy in this process, e.g.
    /// `BuiltinSource::in_process(proxy.metrics().counters())`.
    pub fn in_process(counters: impl ReadCounters + 'static) -> BuiltinSource {
        BuiltinSource::InProcess(Arc::new(counters))
    }

    /// Scrapes a proxy's `/metrics`, e.g. `http://127.0.0.1:9091/metrics`.
    pub fn scrape(url: impl Into<String>) -> BuiltinSource {
        BuiltinSource::Scrape(url.into())
    }

    /// Scrapes every replica `list` gives at each collection, e.g. the
    /// ready endpoints of the proxy's Service.
    pub fn replicas(list: ListReplicas) -> BuiltinSource {
        BuiltinSource::Replicas(list)
    }
}

impl std::fmt::Debug for BuiltinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuiltinSource::InProcess(_) => f.write_str("InProcess"),
            BuiltinSource::Scrape(url) => f.debug_tuple("Scrape").field(url).finish(),
            BuiltinSource::Replicas(_) => f.write_str("Replicas"),
        }
    }
}

/// Both tracks' cumulative counters at one instant.
pub(crate) type Snapshot = CounterSnapshot;

/// Reading the proxy's `/metrics` text into a [`Snapshot`].
pub(crate) trait FromText: Sized {
    fn from_text(text: &str, url: &str) -> Result<Self, String>;
}

impl FromText for Snapshot {
    /// Reads a `/metrics` text. Series that are absent count zero (a proxy
    /// always writes them all), but a text without any requests counter is
    /// refused: it is not a coalmine proxy's.
    fn from_text(text: &str, url: &str) -> Result<Snapshot, String> {
        let parsed = textformat::parse(text);
        let mut snap = Snapshot::default();
        let mut seen_requests = false;
        // (le, cumulative count) per track.
        let mut cumulative: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
        for s in &parsed.samples {
            if s.name == STARTED {
                snap.started = Some(s.value).filter(|v| v.is_finite());
                continue;
            }
            let track = match s.label("track") {
                Some("stable") => Track::Stable,
                Some("canary") => Track::Canary,
                _ => continue,
            };
            if s.name == REQUESTS {
                let Some(class) = s.label("class").and_then(Class::from_label) else {
                    continue;
                };
                seen_requests = true;
                let n = count(s.value).ok_or_else(|| {
                    format!("{url}: {REQUESTS} has the value {}, not a count", s.value)
                })?;
                let t = snap.track_mut(track);
                t.classes[class.index()] = t.classes[class.index()].saturating_add(n);
            } else if s.name == BUCKETS {
                let le = s
                    .label("le")
                    .and_then(textformat::parse_value)
                    .filter(|le| !le.is_nan())
                    .ok_or_else(|| format!("{url}: a {BUCKETS} sample has no usable `le`"))?;
                let i = usize::from(track == Track::Canary);
                cumulative[i].push((le, s.value));
            }
        }
        if !seen_requests {
            let hint = parsed
                .errors
                .first()
                .map(|e| format!("; first unreadable line: {e}"))
                .unwrap_or_default();
            return Err(format!(
                "{url} has no {REQUESTS} samples: is it a coalmine proxy's /metrics?{hint}"
            ));
        }
        let [stable, canary] = cumulative;
        let stable = buckets(stable, url)?;
        let canary = buckets(canary, url)?;
        let bounds = match (&stable, &canary) {
            (Some((a, _)), Some((b, _))) if a != b => {
                return Err(format!(
                    "{url}: the stable and canary histograms have different buckets"
                ));
            }
            (Some((a, _)), _) | (None, Some((a, _))) => a.clone(),
            (None, None) => Vec::new(),
        };
        let zeros = vec![0; bounds.len() + 1];
        snap.stable.buckets = stable.map_or_else(|| zeros.clone(), |(_, c)| c);
        snap.canary.buckets = canary.map_or(zeros, |(_, c)| c);
        snap.bounds = bounds;
        Ok(snap)
    }
}

/// A sample value as a count: finite, not negative; rounded, since
/// counters are integers written as floats.
fn count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

/// Cumulative `(le, count)` pairs to (finite bounds, per-bucket counts).
type Buckets = Option<(Vec<f64>, Vec<u64>)>;

fn buckets(mut pairs: Vec<(f64, f64)>, url: &str) -> Result<Buckets, String> {
    if pairs.is_empty() {
        return Ok(None);
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(format!("{url}: {BUCKETS} has the same `le` twice"));
    }
    if pairs.last().is_none_or(|p| p.0 != f64::INFINITY) {
        return Err(format!("{url}: {BUCKETS} has no `le=\"+Inf\"` bucket"));
    }
    let mut bounds = Vec::with_capacity(pairs.len() - 1);
    let mut counts = Vec::with_capacity(pairs.len());
    let mut below = 0u64;
    for (le, v) in pairs {
        let c = count(v).ok_or_else(|| format!("{url}: {BUCKETS} has the value {v}"))?;
        let Some(n) = c.checked_sub(below) else {
            return Err(format!(
                "{url}: {BUCKETS} is not cumulative (le={le} has fewer than the bucket below)"
            ));
        };
        counts.push(n);
        below = c;
        if le.is_finite() {
            bounds.push(le);
        }
    }
    Ok(Some((bounds, counts)))
}

/// `now - before` per counter, or why the two cannot be subtracted.
pub(crate) fn delta(before: &Snapshot, now: &Snapshot) -> Result<Snapshot, String> {
    if before.bounds != now.bounds {
        return Err("the proxy's latency buckets changed".to_owned());
    }
    if let (Some(a), Some(b)) = (before.started, now.started)
        && a != b
    {
        return Err("the proxy restarted (its start time changed)".to_owned());
    }
    let track = |b: &TrackCounts, n: &TrackCounts, name: &str| {
        let went_down = || format!("the proxy's {name} counters went down (did it restart?)");
        let mut classes = [0; 5];
        for (i, c) in classes.iter_mut().enumerate() {
            *c = n.classes[i]
                .checked_sub(b.classes[i])
                .ok_or_else(went_down)?;
        }
        if b.buckets.len() != n.buckets.len() {
            return Err("the proxy's latency buckets changed".to_owned());
        }
        let buckets = n
            .buckets
            .iter()
            .zip(&b.buckets)
            .map(|(n, b)| n.checked_sub(*b).ok_or_else(went_down))
            .collect::<Result<Vec<u64>, String>>()?;
        Ok(TrackCounts { classes, buckets })
    };
    Ok(Snapshot {
        bounds: now.bounds.clone(),
        stable: track(&before.stable, &now.stable, "stable")?,
        canary: track(&before.canary, &now.canary, "canary")?,
        started: now.started,
    })
}

/// The index of the first bucket counted as slower than `threshold`: every
/// bucket above the largest edge at or below it (see the module docs).
pub(crate) fn first_slow_bucket(bounds: &[f64], threshold: Duration) -> usize {
    let t = threshold.as_secs_f64();
    // A relative tolerance so that 300ms matches an edge written as 0.3
    // whatever rounding the text format went through.
    match bounds.iter().rposition(|b| *b <= t * (1.0 + 1e-9)) {
        Some(k) => k + 1,
        None => 1,
    }
}

/// Errors or slow requests per track, from one interval's counters.
pub(crate) fn observe(
    d: &Snapshot,
    metric: BuiltinMetric,
    slower_than: Option<Duration>,
    threshold: bool,
) -> Observed {
    let interval = |canary: (u64, u64), stable: (u64, u64)| Interval {
        canary_total: canary.0,
        canary_bad: canary.1,
        stable_total: stable.0,
        stable_bad: stable.1,
        canary_share: None,
    };
    let (counts, histograms) = match (metric, slower_than) {
        (BuiltinMetric::Errors, _) => {
            let tb = |t: &TrackCounts| {
                let bad = Class::ALL
                    .iter()
                    .filter(|c| c.is_bad())
                    .map(|c| t.class(*c));
                (t.classes.iter().sum(), bad.sum())
            };
            (interval(tb(&d.canary), tb(&d.stable)), None)
        }
        (BuiltinMetric::Latency, slower_than) => {
            if d.bounds.is_empty() {
                return Observed::NoData(format!("the proxy's metrics have no {BUCKETS} samples"));
            }
            // Validation requires slowerThan for latency; without one every
            // request above the first edge would be "slow", so say so.
            let Some(t) = slower_than else {
                return Observed::NoData("builtin latency needs slowerThan".to_owned());
            };
            let from = first_slow_bucket(&d.bounds, t);
            let tb = |t: &TrackCounts| {
                (
                    t.buckets.iter().sum(),
                    t.buckets.iter().skip(from).sum::<u64>(),
                )
            };
            let h = Histograms {
                bounds: d.bounds.clone(),
                canary: d.canary.buckets.clone(),
                stable: d.stable.buckets.clone(),
            };
            (interval(tb(&d.canary), tb(&d.stable)), Some(h))
        }
    };
    if threshold {
        return if counts.canary_total == 0 {
            Observed::NoData("no canary requests in this interval".to_owned())
        } else {
            Observed::Value(counts.canary_bad as f64 / counts.canary_total as f64)
        };
    }
    match metric {
        BuiltinMetric::Errors => Observed::Counts(counts),
        BuiltinMetric::Latency => Observed::Latency {
            slow: counts,
            histograms,
        },
    }
}

/// The builtin provider for one metric.
pub(crate) struct BuiltinCollector {
    source: BuiltinSource,
    metric: BuiltinMetric,
    slower_than: Option<Duration>,
    threshold: bool,
    /// The previous snapshot of a single proxy (in process or scraped).
    baseline: Option<Snapshot>,
    /// What is known of each replica of a [`BuiltinSource::Replicas`].
    fleet: Fleet,
    http: Http,
    timeout: Duration,
    warned_edge: bool,
}

impl BuiltinCollector {
    pub fn new(
        source: BuiltinSource,
        metric: BuiltinMetric,
        slower_than: Option<Duration>,
        threshold: bool,
        timeout: Duration,
    ) -> BuiltinCollector {
        let baseline = match &source {
            BuiltinSource::InProcess(c) => Some(c.read()),
            BuiltinSource::Scrape(_) | BuiltinSource::Replicas(_) => None,
        };
        BuiltinCollector {
            source,
            metric,
            slower_than,
            threshold,
            baseline,
            fleet: Fleet::default(),
            http: Http::new(),
            timeout,
            warned_edge: false,
        }
    }

    /// The counters of a single proxy now.
    async fn snapshot(&self, budget: Duration) -> Result<Snapshot, String> {
        match &self.source {
            BuiltinSource::InProcess(c) => Ok(c.read()),
            BuiltinSource::Scrape(url) => scrape(&self.http, url, self.timeout, budget).await,
            BuiltinSource::Replicas(_) => {
                Err("a set of replicas has no single snapshot".to_owned())
            }
        }
    }

    /// Lists the replicas and scrapes them all at once, each within
    /// `budget`, so the whole read takes no longer than one scrape.
    async fn scrape_fleet(
        &self,
        list: &ListReplicas,
        budget: Duration,
    ) -> Result<Vec<(Replica, Result<Snapshot, String>)>, String> {
        let mut replicas =
            list().map_err(|why| format!("cannot list the proxy replicas: {why}"))?;
        // The same replica twice (an address in two EndpointSlices while
        // they are rewritten) would be counted twice.
        let mut ids = HashSet::new();
        replicas.retain(|r| ids.insert(r.id.clone()));
        let reads = replicas
            .iter()
            .map(|r| scrape(&self.http, &r.url, self.timeout, budget));
        let snapshots = futures_util::future::join_all(reads).await;
        Ok(replicas.into_iter().zip(snapshots).collect())
    }

    /// Takes the baseline now if there is none yet.
    pub async fn prime(&mut self, budget: Duration) {
        if let BuiltinSource::Replicas(list) = &self.source {
            if self.fleet.is_empty()
                && let Ok(read) = self.scrape_fleet(list, budget).await
            {
                // Every replica is new: this only records baselines.
                let _ = self.fleet.step(read, self.metric == BuiltinMetric::Latency);
            }
            return;
        }
        if self.baseline.is_none()
            && let Ok(s) = self.snapshot(budget).await
        {
            self.baseline = Some(s);
        }
    }

    pub async fn collect(&mut self, budget: Duration) -> Observed {
        let d = match self.interval(budget).await {
            Ok(d) => d,
            Err(why) => return Observed::NoData(why),
        };
        self.warn_edge(&d);
        observe(&d, self.metric, self.slower_than, self.threshold)
    }

    /// The interval's counter differences, or why there are none.
    async fn interval(&mut self, budget: Duration) -> Result<Snapshot, String> {
        if let BuiltinSource::Replicas(list) = &self.source {
            let read = self.scrape_fleet(list, budget).await?;
            return self.fleet.step(read, self.metric == BuiltinMetric::Latency);
        }
        let now = self.snapshot(budget).await?;
        let Some(before) = self.baseline.replace(now.clone()) else {
            return Err(
                "first read of the proxy's counters: baseline taken, counting starts now"
                    .to_owned(),
            );
        };
        delta(&before, &now)
            .map_err(|why| format!("{why}; counting starts again from the current values"))
    }

    /// Warns once when `slowerThan` is not a bucket edge of the proxy's.
    fn warn_edge(&mut self, d: &Snapshot) {
        let (BuiltinMetric::Latency, Some(t), false) =
            (self.metric, self.slower_than, self.warned_edge)
        else {
            return;
        };
        self.warned_edge = true;
        let from = first_slow_bucket(&d.bounds, t);
        if let Some(edge) = from.checked_sub(1).and_then(|k| d.bounds.get(k)) {
            let wanted = t.as_secs_f64();
            if (edge - wanted).abs() > wanted * 1e-9 {
                tracing::warn!(
                    slower_than = wanted,
                    edge,
                    "slowerThan is not a latency bucket edge; counting requests slower than the edge below it"
                );
            }
        }
    }
}

/// `GET`s a proxy's `/metrics` and reads it.
async fn scrape(
    http: &Http,
    url: &str,
    timeout: Duration,
    budget: Duration,
) -> Result<Snapshot, String> {
    let call = Call {
        method: Method::GET,
        url: url.to_owned(),
        headers: HeaderMap::new(),
        body: None,
    };
    let text = http
        .call(&call, timeout, budget, |a| {
            if a.status.is_success() {
                Ok(String::from_utf8_lossy(&a.body).into_owned())
            } else if a.retryable_status() {
                Err(Failure::Retry(format!("HTTP {} from {url}", a.status)))
            } else {
                Err(Failure::Final(format!(
                    "HTTP {} from {url}: {}",
                    a.status,
                    a.snippet()
                )))
            }
        })
        .await?;
    Snapshot::from_text(&text, url)
}

/// What a [`BuiltinSource::Replicas`] remembers between collections: the
/// replicas listed last time, and each one's last counted snapshot (with
/// the URL it was read from).
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    listed: HashSet<String>,
    baselines: HashMap<String, (String, Snapshot)>,
}

impl Fleet {
    fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.baselines.is_empty()
    }

    /// One collection: `read` holds every replica listed now and what its
    /// scrape gave. Returns the sum of the replicas' differences since
    /// their baselines, or why the interval is NoData (the rules are in
    /// the module docs). `latency` keeps the histograms; without it the
    /// buckets are not summed, so replicas whose buckets differ can still
    /// be counted for `errors`.
    pub(crate) fn step(
        &mut self,
        read: Vec<(Replica, Result<Snapshot, String>)>,
        latency: bool,
    ) -> Result<Snapshot, String> {
        let listed: HashSet<String> = read.iter().map(|(r, _)| r.id.clone()).collect();
        // A replica gone from the list is dropped with its baseline.
        self.baselines.retain(|id, _| listed.contains(id));
        let previously = std::mem::replace(&mut self.listed, listed);
        if read.is_empty() {
            return Err("no proxy replica to read: the list of replicas is empty".to_owned());
        }
        let mut failed = Vec::new();
        let mut fresh = Vec::new();
        let mut restarted = Vec::new();
        let mut counted: Vec<(Replica, Snapshot, Snapshot)> = Vec::new();
        for (replica, result) in read {
            let now = match result {
                Ok(now) => now,
                // A replica seen for the first time has no baseline yet:
                // nothing of it is counted this interval whether it
                // answers or not; if it still fails next time, that fails.
                Err(why) if previously.contains(&replica.id) => {
                    failed.push(format!("proxy replica {}: {why}", replica.id));
                    continue;
                }
                Err(why) => {
                    tracing::debug!(replica = %replica.id, %why, "a new proxy replica could not be read");
                    continue;
                }
            };
            let before = self
                .baselines
                .get(&replica.id)
                .filter(|(url, _)| *url == replica.url)
                .map(|(_, s)| s);
            match before.map(|b| delta(b, &now)) {
                None => {
                    fresh.push(replica.id.clone());
                    self.baselines.insert(replica.id, (replica.url, now));
                }
                Some(Err(why)) => {
                    restarted.push(format!("proxy replica {}: {why}", replica.id));
                    self.baselines.insert(replica.id, (replica.url, now));
                }
                Some(Ok(mut d)) => {
                    if !latency {
                        d.bounds.clear();
                        d.stable.buckets.clear();
                        d.canary.buckets.clear();
                    }
                    counted.push((replica, d, now));
                }
            }
        }
        if !failed.is_empty() {
            // The readable replicas keep their baselines, so the next
            // complete read covers this interval too: no partial sum now,
            // nothing lost or counted twice later.
            return Err(format!(
                "{}; the interval is not counted until every replica is read",
                failed.join("; ")
            ));
        }
        let mut sum: Option<(String, Snapshot)> = None;
        let mut mismatch = None;
        for (replica, d, now) in counted {
            match &mut sum {
                None => sum = Some((replica.id.clone(), d)),
                Some((first, total)) => {
                    if total.bounds != d.bounds {
                        mismatch = Some(format!(
                            "proxy replicas {first} and {} have different latency buckets (different proxy versions?); their histograms cannot be summed",
                            replica.id
                        ));
                    } else {
                        add(total, &d);
                    }
                }
            }
            self.baselines.insert(replica.id, (replica.url, now));
        }
        if let Some(why) = mismatch {
            return Err(why);
        }
        if !fresh.is_empty() || !restarted.is_empty() {
            tracing::debug!(
                new = ?fresh,
                restarted = ?restarted,
                "proxy replicas without a baseline: not counted this interval"
            );
        }
        match sum {
            Some((_, total)) => Ok(total),
            None if !restarted.is_empty() => Err(format!(
                "{}; counting starts again from the current values",
                restarted.join("; ")
            )),
            None => Err(format!(
                "first read of proxy replica{} {}: baseline taken, counting starts now",
                if fresh.len() == 1 { "" } else { "s" },
                fresh.join(", ")
            )),
        }
    }
}

/// Adds `d`'s counts to `total`'s (same buckets).
fn add(total: &mut Snapshot, d: &Snapshot) {
    for (t, d) in [
        (&mut total.stable, &d.stable),
        (&mut total.canary, &d.canary),
    ] {
        for (a, b) in t.classes.iter_mut().zip(&d.classes) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in t.buckets.iter_mut().zip(&d.buckets) {
            *a = a.saturating_add(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine_core::plan::LATENCY_BUCKETS;

    fn snap(stable: [u64; 5], canary: [u64; 5]) -> Snapshot {
        Snapshot {
            bounds: vec![0.1, 0.3, 1.0],
            stable: TrackCounts {
                classes: stable,
                buckets: vec![stable.iter().sum(), 0, 0, 0],
            },
            canary: TrackCounts {
                classes: canary,
                buckets: vec![0, 0, canary.iter().sum(), 0],
            },
            started: None,
        }
    }

    #[test]
    fn a_new_start_time_is_a_restart_even_when_the_counters_grew() {
        let mut a = snap([10, 0, 0, 1, 0], [1, 0, 0, 0, 0]);
        let mut b = snap([20, 0, 0, 2, 0], [4, 0, 0, 1, 0]);
        a.started = Some(1_000.0);
        b.started = Some(1_000.0);
        assert!(delta(&a, &b).is_ok());
        b.started = Some(2_000.5);
        let why = delta(&a, &b).expect_err("another process counted these");
        assert!(why.contains("restarted"), "{why}");
        // A reader that has no start time on one side goes by the counters.
        a.started = None;
        assert!(delta(&a, &b).is_ok());
    }

    #[test]
    fn the_start_time_is_read_from_the_text() {
        let text = "coalmine_proxy_requests_total{track=\"stable\",class=\"2xx\"} 3\n\
                    coalmine_proxy_start_time_seconds 1765000000.25\n";
        let s = Snapshot::from_text(text, "http://p/metrics").expect("a proxy's text");
        assert_eq!(s.started, Some(1_765_000_000.25));
    }

    #[test]
    fn error_deltas() {
        let a = snap([10, 1, 2, 3, 4], [1, 0, 0, 1, 0]);
        let b = snap([20, 1, 3, 5, 4], [4, 0, 1, 2, 2]);
        let d = delta(&a, &b).expect("counters went up");
        match observe(&d, BuiltinMetric::Errors, None, false) {
            Observed::Counts(i) => {
                assert_eq!((i.stable_total, i.stable_bad), (13, 2));
                assert_eq!((i.canary_total, i.canary_bad), (7, 3));
                assert_eq!(i.canary_share, None);
            }
            other => panic!("{other:?}"),
        }
        match observe(&d, BuiltinMetric::Errors, None, true) {
            Observed::Value(v) => assert!((v - 3.0 / 7.0).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
        let still = delta(&b, &b).expect("no change");
        assert!(matches!(
            observe(&still, BuiltinMetric::Errors, None, true),
            Observed::NoData(_)
        ));
    }

    #[test]
    fn a_counter_going_down_is_a_restart() {
        let a = snap([10, 0, 0, 0, 0], [1, 0, 0, 0, 0]);
        let b = snap([3, 0, 0, 0, 0], [1, 0, 0, 0, 0]);
        let e = delta(&a, &b).expect_err("went down");
        assert!(e.contains("stable counters went down"), "{e}");
        let mut c = a.clone();
        c.bounds = vec![0.1, 0.2, 1.0];
        assert!(delta(&a, &c).is_err());
    }

    #[test]
    fn slow_buckets_use_the_edge_at_or_below() {
        let bounds = [0.05, 0.1, 0.3, 1.0];
        let ms = Duration::from_millis;
        assert_eq!(first_slow_bucket(&bounds, ms(300)), 3);
        assert_eq!(first_slow_bucket(&bounds, ms(100)), 2);
        assert_eq!(first_slow_bucket(&bounds, ms(120)), 2);
        assert_eq!(first_slow_bucket(&bounds, ms(299)), 2);
        assert_eq!(first_slow_bucket(&bounds, ms(5000)), 4);
        assert_eq!(first_slow_bucket(&bounds, ms(10)), 1);
        // The proxy's real edges are matched exactly.
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let t = Duration::from_micros((b * 1e6).round() as u64);
            assert_eq!(first_slow_bucket(&LATENCY_BUCKETS, t), i + 1, "{b}");
        }
    }

    #[test]
    fn latency_counts_and_histograms() {
        let before = Snapshot {
            bounds: vec![0.1, 0.3],
            stable: TrackCounts {
                classes: [0; 5],
                buckets: vec![1, 1, 1],
            },
            canary: TrackCounts {
                classes: [0; 5],
                buckets: vec![0, 0, 0],
            },
            started: None,
        };
        let after = Snapshot {
            bounds: vec![0.1, 0.3],
            stable: TrackCounts {
                classes: [0; 5],
                buckets: vec![9, 2, 1],
            },
            canary: TrackCounts {
                classes: [0; 5],
                buckets: vec![2, 3, 4],
            },
            started: None,
        };
        let d = delta(&before, &after).expect("went up");
        match observe(
            &d,
            BuiltinMetric::Latency,
            Some(Duration::from_millis(100)),
            false,
        ) {
            Observed::Latency { slow, histograms } => {
                assert_eq!((slow.stable_total, slow.stable_bad), (9, 1));
                assert_eq!((slow.canary_total, slow.canary_bad), (9, 7));
                let h = histograms.expect("histograms");
                assert!(h.is_consistent());
                assert_eq!(h.stable, [8, 1, 0]);
                assert_eq!(h.canary, [2, 3, 4]);
            }
            other => panic!("{other:?}"),
        }
        match observe(
            &d,
            BuiltinMetric::Latency,
            Some(Duration::from_millis(300)),
            false,
        ) {
            Observed::Latency { slow, .. } => {
                assert_eq!((slow.stable_bad, slow.canary_bad), (0, 4));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scraped_text_to_snapshot() {
        let text = "\
# TYPE coalmine_proxy_requests_total counter
coalmine_proxy_requests_total{track=\"stable\",class=\"2xx\"} 7
coalmine_proxy_requests_total{track=\"stable\",class=\"5xx\"} 2
coalmine_proxy_requests_total{track=\"canary\",class=\"error\"} 1
coalmine_proxy_requests_total{track=\"canary\",class=\"teapot\"} 1
coalmine_proxy_request_duration_seconds_bucket{le=\"0.1\",track=\"stable\"} 8
coalmine_proxy_request_duration_seconds_bucket{le=\"+Inf\",track=\"stable\"} 9
coalmine_proxy_request_duration_seconds_bucket{le=\"0.5\",track=\"stable\"} 9
coalmine_proxy_request_duration_seconds_count{track=\"stable\"} 9
some_other_metric{track=\"stable\"} NaN
";
        let s = Snapshot::from_text(text, "u").expect("a proxy's text");
        assert_eq!(s.stable.classes, [7, 0, 0, 2, 0]);
        assert_eq!(s.canary.classes, [0, 0, 0, 0, 1]);
        assert_eq!(s.bounds, [0.1, 0.5]);
        assert_eq!(s.stable.buckets, [8, 1, 0]);
        assert_eq!(s.canary.buckets, [0, 0, 0]);

        let e = Snapshot::from_text("up 1\n", "u").expect_err("not a proxy");
        assert!(
            e.contains("no coalmine_proxy_requests_total samples"),
            "{e}"
        );
        let no_inf = "coalmine_proxy_requests_total{track=\"stable\",class=\"2xx\"} 1\n\
                      coalmine_proxy_request_duration_seconds_bucket{le=\"0.1\",track=\"stable\"} 1\n";
        assert!(
            Snapshot::from_text(no_inf, "u")
                .expect_err("+Inf")
                .contains("+Inf")
        );
        let not_cumulative = "coalmine_proxy_requests_total{track=\"stable\",class=\"2xx\"} 1\n\
                      coalmine_proxy_request_duration_seconds_bucket{le=\"0.1\",track=\"stable\"} 3\n\
                      coalmine_proxy_request_duration_seconds_bucket{le=\"+Inf\",track=\"stable\"} 2\n";
        assert!(
            Snapshot::from_text(not_cumulative, "u")
                .expect_err("cumulative")
                .contains("not cumulative")
        );
        let negative = "coalmine_proxy_requests_total{track=\"stable\",class=\"2xx\"} -1\n";
        assert!(Snapshot::from_text(negative, "u").is_err());
    }

    #[test]
    fn in_process_snapshot_matches_the_exposition() {
        // The proxy is a dev-dependency: its exposition must read back as
        // the same snapshot as its counters read in process.
        let m = coalmine_proxy::metrics::Metrics::new();
        let c = m.track(Track::Canary);
        c.record(Class::ServerError, Duration::from_millis(120));
        c.record(Class::Success, Duration::from_millis(2));
        m.track(Track::Stable)
            .record(Class::Error, Duration::from_secs(40));
        let BuiltinSource::InProcess(counters) = BuiltinSource::in_process(m.counters()) else {
            panic!("in process");
        };
        let direct = counters.read();
        let scraped = Snapshot::from_text(&m.encode(), "u").expect("the proxy's text");
        assert_eq!(direct, scraped);
    }

    fn replica(id: &str) -> Replica {
        Replica {
            id: id.to_owned(),
            url: format!("http://{id}:9902/metrics"),
        }
    }

    type Read = Vec<(Replica, Result<Snapshot, String>)>;

    fn read(of: &[(&str, Result<Snapshot, &str>)]) -> Read {
        of.iter()
            .map(|(id, r)| (replica(id), r.clone().map_err(str::to_owned)))
            .collect()
    }

    /// Canary `c` requests and stable `s`, all successes.
    fn ok(s: u64, c: u64) -> Result<Snapshot, &'static str> {
        Ok(snap([s, 0, 0, 0, 0], [c, 0, 0, 0, 0]))
    }

    fn totals(d: &Snapshot) -> (u64, u64) {
        (d.stable.classes.iter().sum(), d.canary.classes.iter().sum())
    }

    #[test]
    fn replicas_are_summed_from_their_own_baselines() {
        let mut fleet = Fleet::default();
        let e = fleet
            .step(read(&[("a", ok(10, 1)), ("b", ok(100, 10))]), true)
            .expect_err("baseline");
        assert_eq!(
            e,
            "first read of proxy replicas a, b: baseline taken, counting starts now"
        );
        let d = fleet
            .step(read(&[("a", ok(15, 3)), ("b", ok(107, 10))]), true)
            .expect("both counted");
        assert_eq!(totals(&d), (12, 2));
        // Histograms are summed bucket by bucket.
        assert_eq!(d.stable.buckets, vec![12, 0, 0, 0]);
        assert_eq!(d.canary.buckets, vec![0, 0, 2, 0]);

        // c is new: its baseline only. b is gone: dropped.
        let d = fleet
            .step(read(&[("a", ok(16, 3)), ("c", ok(50, 50))]), true)
            .expect("a counted");
        assert_eq!(totals(&d), (1, 0));
        let d = fleet
            .step(read(&[("a", ok(17, 3)), ("c", ok(52, 51))]), true)
            .expect("a and c");
        assert_eq!(totals(&d), (3, 1));
        // b again: new again, whatever its counters say.
        let d = fleet
            .step(
                read(&[("a", ok(17, 3)), ("b", ok(1000, 1000)), ("c", ok(52, 51))]),
                true,
            )
            .expect("a and c");
        assert_eq!(totals(&d), (0, 0));
    }

    #[test]
    fn an_unreadable_replica_fails_the_interval_and_the_next_read_covers_it() {
        let mut fleet = Fleet::default();
        let _ = fleet.step(read(&[("a", ok(10, 1)), ("b", ok(20, 2))]), false);
        let e = fleet
            .step(read(&[("a", ok(12, 2)), ("b", Err("refused"))]), false)
            .expect_err("b failed");
        assert_eq!(
            e,
            "proxy replica b: refused; the interval is not counted until every replica is read"
        );
        // Both intervals, every replica: nothing lost, nothing twice.
        let d = fleet
            .step(read(&[("a", ok(13, 2)), ("b", ok(25, 4))]), false)
            .expect("all read");
        assert_eq!(totals(&d), (8, 3));
        // Without latency the buckets are not summed.
        assert!(d.bounds.is_empty() && d.stable.buckets.is_empty());

        // A new replica that cannot be read yet has no baseline; it fails
        // the next interval if it still cannot be read.
        let d = fleet
            .step(
                read(&[("a", ok(14, 2)), ("b", ok(25, 4)), ("n", Err("timeout"))]),
                false,
            )
            .expect("n is new");
        assert_eq!(totals(&d), (1, 0));
        let e = fleet
            .step(
                read(&[("a", ok(14, 2)), ("b", ok(25, 4)), ("n", Err("timeout"))]),
                false,
            )
            .expect_err("n listed twice");
        assert!(e.starts_with("proxy replica n: timeout"), "{e}");
        let e = fleet.step(Vec::new(), false).expect_err("empty");
        assert!(e.contains("list of replicas is empty"), "{e}");
        // The empty list dropped everyone: all new again.
        let e = fleet
            .step(read(&[("a", ok(14, 2))]), false)
            .expect_err("baseline");
        assert!(e.contains("first read of proxy replica a:"), "{e}");
    }

    #[test]
    fn a_restarted_replica_is_a_new_baseline() {
        let mut fleet = Fleet::default();
        let _ = fleet.step(read(&[("a", ok(10, 1)), ("b", ok(20, 2))]), true);
        // b restarted: its 3 stable requests since are its new baseline.
        let d = fleet
            .step(read(&[("a", ok(12, 2)), ("b", ok(3, 0))]), true)
            .expect("a counted");
        assert_eq!(totals(&d), (2, 1));
        let d = fleet
            .step(read(&[("a", ok(12, 2)), ("b", ok(5, 1))]), true)
            .expect("b counted from its new baseline");
        assert_eq!(totals(&d), (2, 1));
        // Every replica restarted: nothing to count.
        let e = fleet
            .step(read(&[("a", ok(0, 0)), ("b", ok(1, 0))]), true)
            .expect_err("no difference");
        assert!(
            e.contains("proxy replica a: the proxy's stable counters went down")
                && e.contains("proxy replica b:")
                && e.ends_with("counting starts again from the current values"),
            "{e}"
        );
        // The same id at another URL is another process.
        let _ = fleet.step(read(&[("a", ok(1, 0))]), true);
        let mut moved = read(&[("a", ok(2, 0))]);
        moved[0].0.url = "http://elsewhere:9902/metrics".to_owned();
        assert!(fleet.step(moved, true).is_err());
    }

    #[test]
    fn different_buckets_are_not_summed() {
        let mut other = snap([1, 0, 0, 0, 0], [0; 5]);
        other.bounds = vec![0.1, 0.2, 1.0];
        let mut fleet = Fleet::default();
        let first = read(&[("a", ok(1, 0)), ("b", Ok(other.clone()))]);
        let _ = fleet.step(first, true);
        let mut later = other.clone();
        later.stable.classes[0] = 4;
        later.stable.buckets[0] = 4;
        let e = fleet
            .step(read(&[("a", ok(2, 0)), ("b", Ok(later.clone()))]), true)
            .expect_err("latency");
        assert!(e.contains("different latency buckets"), "{e}");
        // Errors do not read the buckets.
        later.stable.classes[0] = 6;
        later.stable.buckets[0] = 6;
        let d = fleet
            .step(read(&[("a", ok(3, 0)), ("b", Ok(later))]), false)
            .expect("errors");
        assert_eq!(totals(&d), (3, 0));
    }
}
