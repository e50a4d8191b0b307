//! The web dashboard of local mode, served on the admin address.
//!
//! `GET /` is a single page (HTML, its script and stylesheet, and the
//! uPlot chart library, all compiled into the binary) that polls the
//! admin API once a second: `/status`, `/events`, and the two series kept
//! here, `/history` (the judged intervals) and `/traffic` (requests and
//! failures per second per version, sampled from the proxy's counters).
//! Its buttons post to the same command paths as the CLI, so the admin
//! API's guard applies to them as to any other client.
//!
//! The page and its static files carry no data, so they are served
//! without the token (a browser cannot attach a bearer token to a
//! navigation); everything they fetch goes through the guard as usual.
//!
//! `coalmine dashboard` (the binary's `kube_dashboard`) serves the same page
//! for a Canary in Kubernetes, with a [`Board`] made by
//! [`Board::from_spec`] and fed from the Canary's status.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use coalmine_core::Time;
use coalmine_core::plan::Plan;
use coalmine_core::spec::Canary;
use coalmine_proxy::Proxy;
use coalmine_proxy::route::Track;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// Judged intervals kept for `GET /history`: at the demo's 2 s interval,
/// more than an hour.
const HISTORY_KEPT: usize = 2000;

/// Traffic samples kept for `GET /traffic`: one a second, an hour.
const TRAFFIC_KEPT: usize = 3600;

/// The paths served without the admin token: static files, no data.
pub const PUBLIC_PATHS: &[&str] = &[
    "/",
    "/dashboard/app.js",
    "/dashboard/style.css",
    "/dashboard/uPlot.js",
    "/dashboard/uPlot.css",
];

/// What the page needs to know once: the plan it draws.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    name: String,
    label: String,
    steps: serde_json::Value,
    metrics: Vec<MetricInfo>,
    /// Whether the admin API requires a bearer token (who acts is then
    /// whoever holds it).
    token_required: bool,
    admin: String,
    /// Whether `/traffic` has samples (local mode: the proxy's counters).
    traffic: bool,
    /// Who the buttons act as, when it is not the admin API's token or its
    /// absence (Kubernetes: the kubeconfig's user).
    #[serde(skip_serializing_if = "Option::is_none")]
    acting_as: Option<String>,
    /// Where the list of Canaries this page was opened from is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    list_url: Option<String>,
}

/// A metric as the charts show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricInfo {
    name: String,
    /// The ratio canary/stable above which a comparison fails; `None` for
    /// threshold metrics.
    max_ratio: Option<f64>,
}

/// One second of traffic through the proxy, per version.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct TrafficSample {
    seq: u64,
    /// Unix milliseconds.
    at: i64,
    stable_rps: f64,
    stable_failures: f64,
    canary_rps: f64,
    canary_failures: f64,
}

/// A series with the sequence numbers the page asks "after".
struct Series<T> {
    next: u64,
    items: VecDeque<(u64, T)>,
    cap: usize,
}

impl<T: Clone> Series<T> {
    fn new(cap: usize) -> Self {
        Series {
            next: 1,
            items: VecDeque::new(),
            cap,
        }
    }

    fn push(&mut self, make: impl FnOnce(u64) -> T) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        let seq = self.next;
        self.next += 1;
        self.items.push_back((seq, make(seq)));
    }

    fn after(&self, seq: u64) -> Vec<T> {
        self.items
            .iter()
            .filter(|(s, _)| *s > seq)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

/// The dashboard's own state: what it serves beyond `/status` and `/events`.
pub struct Board {
    info: Info,
    /// Set when nobody reads it any more (a view of the Kubernetes list).
    closed: std::sync::atomic::AtomicBool,
    /// The run's notification outcomes, also exported on `/metrics`.
    notifications: std::sync::Arc<coalmine_notify::Counts>,
    history: Mutex<Series<serde_json::Value>>,
    traffic: Mutex<Series<TrafficSample>>,
    /// The judge's running counts at its last report, where `/traffic` is
    /// derived from them ([`Board::counted`]).
    last_counts: Mutex<Option<(i64, [u64; 4])>>,
}

impl Board {
    /// The board of a run of `canary`, with the traffic through its proxy.
    pub fn new(
        canary: &Canary,
        plan: &Plan,
        label: &str,
        admin: std::net::SocketAddr,
        token_required: bool,
    ) -> Self {
        let spec = serde_json::to_value(&canary.spec).unwrap_or_default();
        Board::from_spec(
            &plan.name,
            label,
            &spec,
            &admin.to_string(),
            token_required,
            true,
        )
    }

    /// The board of a Canary's `spec` (its JSON form); `traffic` when
    /// `/traffic` will have samples.
    pub fn from_spec(
        name: &str,
        label: &str,
        spec: &serde_json::Value,
        admin: &str,
        token_required: bool,
        traffic: bool,
    ) -> Self {
        let metrics = spec["analysis"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| MetricInfo {
                name: m["name"].as_str().unwrap_or_default().to_owned(),
                // A threshold metric has no ratio; a comparison's default is 1.
                max_ratio: m
                    .get("threshold")
                    .is_none_or(serde_json::Value::is_null)
                    .then(|| m["maxRatio"].as_f64().unwrap_or(1.0)),
            })
            .collect();
        Board {
            info: Info {
                name: name.to_owned(),
                label: label.to_owned(),
                steps: spec
                    .get("steps")
                    .cloned()
                    .unwrap_or_else(|| serde_json::Value::Array(Vec::new())),
                metrics,
                token_required,
                admin: admin.to_owned(),
                traffic,
                acting_as: None,
                list_url: None,
            },
            closed: std::sync::atomic::AtomicBool::new(false),
            history: Mutex::new(Series::new(HISTORY_KEPT)),
            traffic: Mutex::new(Series::new(TRAFFIC_KEPT)),
            last_counts: Mutex::new(None),
            notifications: Default::default(),
        }
    }

    /// The counters the run's notifier counts in.
    pub fn notification_counts(&self) -> std::sync::Arc<coalmine_notify::Counts> {
        self.notifications.clone()
    }

    /// `GET /metrics` of a run: the proxy's metrics and the notifications'
    /// counts (`coalmine_notifications_total`, as the controller names
    /// them).
    pub fn metrics(&self, proxy: &Proxy) -> Response<Full<Bytes>> {
        let mut text = proxy.metrics().encode();
        text.push_str(&self.notifications.exposition(&self.info.name));
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    /// The same board, saying the buttons act as `who`.
    pub fn acting_as(mut self, who: String) -> Self {
        self.info.acting_as = Some(who);
        self
    }

    /// The same board, linking back to the list at `url`.
    pub fn listed_at(mut self, url: &str) -> Self {
        self.info.list_url = Some(url.to_owned());
        self
    }

    /// Marks the board as no longer kept up to date.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`Board::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps a judged interval (a `--report` history entry) for `/history`.
    pub fn judged(&self, entry: &impl Serialize) {
        let Ok(value) = serde_json::to_value(entry) else {
            return;
        };
        if let Ok(mut h) = self.history.lock() {
            h.push(|seq| {
                let mut v = value;
                if let Some(o) = v.as_object_mut() {
                    o.insert("seq".into(), seq.into());
                }
                v
            });
        }
    }

    /// Where no proxy is at hand (a Canary in Kubernetes), traffic comes
    /// from the judge's running counts at each report, `[stable requests,
    /// stable bad events, canary requests, canary bad events]` since the
    /// analysis began: a sample is the rate between two reports. Counts
    /// that go down belong to a new judge (a new revision, a retry) and
    /// start afresh.
    pub fn counted(&self, at_millis: i64, counts: [u64; 4]) {
        let Ok(mut last) = self.last_counts.lock() else {
            return;
        };
        if let Some((then, before)) = *last {
            let secs = (at_millis - then) as f64 / 1000.0;
            let grew = counts.iter().zip(before).all(|(n, b)| *n >= b);
            if secs > 0.0 && grew {
                let rate = |i: usize| (counts[i] - before[i]) as f64 / secs;
                if let Ok(mut t) = self.traffic.lock() {
                    t.push(|seq| TrafficSample {
                        seq,
                        at: at_millis,
                        stable_rps: rate(0),
                        stable_failures: rate(1),
                        canary_rps: rate(2),
                        canary_failures: rate(3),
                    });
                }
            }
        }
        *last = Some((at_millis, counts));
    }

    /// Samples the proxy's counters every second until `stop` turns true.
    pub async fn sample_traffic(&self, proxy: Proxy, mut stop: tokio::sync::watch::Receiver<bool>) {
        // Requests answered, and those that failed: a 5xx or no answer.
        let read = |t| {
            let c = proxy.metrics().track(t).counts();
            (c.iter().sum::<u64>(), c[3] + c[4])
        };
        let mut last = (
            std::time::Instant::now(),
            read(Track::Stable),
            read(Track::Canary),
        );
        let mut tick = tokio::time::interval(StdDuration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = (
                std::time::Instant::now(),
                read(Track::Stable),
                read(Track::Canary),
            );
            let secs = now.0.duration_since(last.0).as_secs_f64().max(0.001);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let sample = |seq| TrafficSample {
                seq,
                at: Time::now().unix_millis(),
                stable_rps: rate(now.1.0, last.1.0),
                stable_failures: rate(now.1.1, last.1.1),
                canary_rps: rate(now.2.0, last.2.0),
                canary_failures: rate(now.2.1, last.2.1),
            };
            if let Ok(mut t) = self.traffic.lock() {
                t.push(sample);
            }
            last = now;
        }
    }
}

/// Answers the dashboard's requests; `None` for any other path.
pub fn handle<B>(board: &Board, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let path = req.uri().path();
        let ours = PUBLIC_PATHS.contains(&path)
            || matches!(path, "/history" | "/traffic" | "/dashboard/info");
        return ours.then(|| plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"));
    }
    let after = after(req.uri().query());
    let answer = match req.uri().path() {
        "/" => asset(
            include_str!("../assets/dashboard/index.html"),
            "text/html; charset=utf-8",
        ),
        path @ ("/dashboard/app.js"
        | "/dashboard/style.css"
        | "/dashboard/uPlot.js"
        | "/dashboard/uPlot.css") => return static_file(path),
        "/dashboard/info" => json(&board.info),
        "/history" => {
            let items = board
                .history
                .lock()
                .map(|h| h.after(after))
                .unwrap_or_default();
            json(&items)
        }
        "/traffic" => {
            let items = board
                .traffic
                .lock()
                .map(|t| t.after(after))
                .unwrap_or_default();
            json(&items)
        }
        _ => return None,
    };
    Some(answer)
}

/// The page's script, stylesheet and chart library, shared by every page.
pub fn static_file(path: &str) -> Option<Response<Full<Bytes>>> {
    Some(match path {
        "/dashboard/app.js" => asset(
            include_str!("../assets/dashboard/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/dashboard/style.css" => asset(
            include_str!("../assets/dashboard/style.css"),
            "text/css; charset=utf-8",
        ),
        "/dashboard/uPlot.js" => asset(
            include_str!("../assets/dashboard/vendor/uPlot.iife.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "/dashboard/uPlot.css" => asset(
            include_str!("../assets/dashboard/vendor/uPlot.min.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    })
}

/// `?after=N`: only items numbered above N (0 when absent or malformed).
fn after(query: Option<&str>) -> u64 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A static file, with headers that keep other sites from framing the
/// page (its buttons change the rollout) and the page from loading
/// anything but its own files.
pub fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn json<T: Serialize + ?Sized>(value: &T) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(value).unwrap_or_default(),
    )));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_keeps_its_cap_and_answers_after_a_number() {
        let mut s = Series::new(3);
        for i in 0..5u32 {
            s.push(|_| i);
        }
        assert_eq!(s.after(0), vec![2, 3, 4]);
        assert_eq!(s.after(4), vec![4]);
        assert_eq!(s.after(5), Vec::<u32>::new());
    }

    #[test]
    fn traffic_from_running_counts_is_the_rate_between_reports() {
        let board = Board::from_spec("web", "web", &serde_json::json!({}), "", false, true);
        board.counted(10_000, [100, 1, 10, 0]);
        assert!(
            board
                .traffic
                .lock()
                .map(|t| t.after(0))
                .unwrap_or_default()
                .is_empty()
        );
        // Ten seconds later: 500 more stable requests, 50 more canary ones.
        board.counted(20_000, [600, 6, 60, 5]);
        // A new judge counts from zero: no sample, a new baseline.
        board.counted(30_000, [10, 0, 1, 0]);
        board.counted(32_000, [210, 2, 21, 4]);
        let samples = board.traffic.lock().map(|t| t.after(0)).unwrap_or_default();
        let rates: Vec<[f64; 4]> = samples
            .iter()
            .map(|s| {
                [
                    s.stable_rps,
                    s.stable_failures,
                    s.canary_rps,
                    s.canary_failures,
                ]
            })
            .collect();
        assert_eq!(rates, vec![[50.0, 0.5, 5.0, 0.5], [100.0, 1.0, 10.0, 2.0]]);
        assert_eq!(samples[1].at, 32_000);
    }

    #[test]
    fn after_reads_the_query() {
        assert_eq!(after(Some("after=12")), 12);
        assert_eq!(after(Some("x=1&after=7")), 7);
        assert_eq!(after(Some("after=-1")), 0);
        assert_eq!(after(None), 0);
    }
}
