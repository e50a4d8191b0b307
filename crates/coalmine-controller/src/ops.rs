//! Operations: the Prometheus metrics of the controller and of each Canary,
//! and the HTTP endpoints `/metrics`, `/healthz` and `/readyz`.
//!
//! `/healthz` answers 200 while the process serves; `/readyz` answers 200
//! once the controller's watches are running (a standby replica that is not
//! the leader is ready too: it is ready to take over).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use coalmine_core::status::{CanaryStatus, Phase};
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Error;

type Labels = Vec<(String, String)>;

/// Every phase, for the one-hot `coalmine_canary_phase` gauge.
const PHASES: [Phase; 8] = [
    Phase::Idle,
    Phase::Progressing,
    Phase::Paused,
    Phase::Promoting,
    Phase::Promoted,
    Phase::RollingBack,
    Phase::RolledBack,
    Phase::Failed,
];

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<Labels, Counter>,
    duration: Histogram,
    weight: Family<Labels, Gauge>,
    phase: Family<Labels, Gauge>,
    e_value: Family<Labels, Gauge<f64, AtomicU64>>,
    leader: Gauge,
    notifications: Family<Labels, Counter>,
    ready: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let errors = Family::<Labels, Counter>::default();
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let weight = Family::<Labels, Gauge>::default();
        let phase = Family::<Labels, Gauge>::default();
        let e_value = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let leader = Gauge::default();
        let notifications = Family::<Labels, Counter>::default();
        registry.register(
            "coalmine_controller_reconciles",
            "Reconciles of Canaries",
            reconciles.clone(),
        );
        registry.register(
            "coalmine_controller_reconcile_errors",
            "Failed reconciles, by cause",
            errors.clone(),
        );
        registry.register(
            "coalmine_controller_reconcile_duration_seconds",
            "How long a reconcile took",
            duration.clone(),
        );
        registry.register(
            "coalmine_controller_leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "coalmine_canary_weight",
            "Percent of traffic sent to the canary",
            weight.clone(),
        );
        registry.register(
            "coalmine_canary_phase",
            "1 for the Canary's current phase, 0 for the others",
            phase.clone(),
        );
        registry.register(
            "coalmine_canary_analysis_e_value",
            "The judge's e-value per metric (evidence that the canary is worse)",
            e_value.clone(),
        );
        registry.register(
            "coalmine_notifications",
            "Notifications of spec.notifications, by Canary and result (sent, failed, dropped, failed_try)",
            notifications.clone(),
        );
        Metrics {
            notifications,
            registry,
            reconciles,
            errors,
            duration,
            weight,
            phase,
            e_value,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts a reconcile and its time, and its error if it failed.
    pub fn reconciled(&self, took: Duration, error: Option<&Error>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors
                .get_or_create(&vec![("reason".into(), e.metric_label().into())])
                .inc();
        }
    }

    /// Records a Canary's weight, phase and e-values.
    pub fn observe_canary(&self, namespace: &str, name: &str, status: &CanaryStatus) {
        let base = vec![
            ("namespace".to_owned(), namespace.to_owned()),
            ("name".to_owned(), name.to_owned()),
        ];
        self.weight
            .get_or_create(&base)
            .set(i64::from(status.weight.get()));
        for p in PHASES {
            let mut l = base.clone();
            l.push(("phase".into(), p.to_string()));
            self.phase
                .get_or_create(&l)
                .set(i64::from(p == status.phase));
        }
        for m in status.analysis.iter().flat_map(|a| &a.metrics) {
            if let Some(e) = m.e_value {
                let mut l = base.clone();
                l.push(("metric".into(), m.name.clone()));
                self.e_value.get_or_create(&l).set(e);
            }
        }
    }

    /// The counters a Canary's notifications are counted in.
    pub fn notification_counts(&self, namespace: &str, name: &str) -> coalmine_notify::Counts {
        let counter = |result: &str| {
            self.notifications
                .get_or_create(&vec![
                    ("namespace".to_owned(), namespace.to_owned()),
                    ("name".to_owned(), name.to_owned()),
                    ("result".to_owned(), result.to_owned()),
                ])
                .clone()
        };
        coalmine_notify::Counts::new(
            counter("sent"),
            counter("failed"),
            counter("dropped"),
            counter("failed_try"),
        )
    }

    /// Drops a deleted Canary's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        let base = vec![
            ("namespace".to_owned(), namespace.to_owned()),
            ("name".to_owned(), name.to_owned()),
        ];
        self.weight.remove(&base);
        for p in PHASES {
            let mut l = base.clone();
            l.push(("phase".into(), p.to_string()));
            self.phase.remove(&l);
        }
        // e-values are keyed by metric names this process may not know
        // any more; they go when the process restarts.
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Marks the controller ready (its watches run).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Connections served at once; more wait in the listener's backlog. The
/// clients are the kubelet's probes and a few scrapers.
const MAX_CONNECTIONS: usize = 64;
/// The time a client has to send a request head once it connected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may finish after `shutdown`.
const GRACE: Duration = Duration::from_secs(1);

/// Serves `/metrics`, `/healthz` and `/readyz` (HTTP/1.1) until `shutdown`;
/// then stops accepting and lets requests in flight finish for up to a
/// second.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    tracing::debug!(error = %e, "operations endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let answer = answer(&metrics, req.uri().path());
            async move { Ok::<_, Infallible>(answer) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away mid-request is not worth a log line.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
}

/// Binds the operations address. The IPv4 wildcard (`0.0.0.0`, the
/// default) binds the IPv6 wildcard instead where the host has IPv6, which
/// on Linux (unless `net.ipv6.bindv6only` is set) takes IPv4 connections
/// too: on an IPv6 single-stack cluster the kubelet's probes and
/// Prometheus come from IPv6 addresses. Without IPv6 it binds `0.0.0.0`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if addr.ip() == std::net::Ipv4Addr::UNSPECIFIED {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, addr.port()));
        if let Ok(l) = TcpListener::bind(v6).await {
            return Ok(l);
        }
    }
    TcpListener::bind(addr).await
}

fn answer(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ready\n".to_owned())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wildcard_listens_on_ipv6_and_ipv4() {
        let l = bind("0.0.0.0:0".parse().expect("an address"))
            .await
            .expect("bound");
        let port = l.local_addr().expect("an address").port();
        for host in ["[::1]", "127.0.0.1"] {
            let to: SocketAddr = format!("{host}:{port}").parse().expect("an address");
            tokio::net::TcpStream::connect(to)
                .await
                .unwrap_or_else(|e| panic!("{to}: {e}"));
        }
    }

    #[test]
    fn canary_series_show_weight_and_phase() {
        let m = Metrics::new();
        let status = CanaryStatus {
            phase: Phase::Progressing,
            weight: coalmine_core::Percent::new(25).expect("a percent"),
            ..CanaryStatus::default()
        };
        m.observe_canary("shop", "web", &status);
        m.reconciled(Duration::from_millis(3), None);
        let text = m.render();
        assert!(
            text.contains(r#"coalmine_canary_weight{namespace="shop",name="web"} 25"#),
            "{text}"
        );
        assert!(text.contains(
            r#"coalmine_canary_phase{namespace="shop",name="web",phase="Progressing"} 1"#
        ));
        assert!(text.contains("coalmine_controller_reconciles_total 1"));
        assert_eq!(
            answer(&m, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        m.set_ready(true);
        assert_eq!(answer(&m, "/readyz").status(), StatusCode::OK);
        assert_eq!(answer(&m, "/healthz").status(), StatusCode::OK);
    }
}
