//! coalmine's data plane: a traffic-splitting HTTP proxy.
//!
//! One listener forwards each request to the `stable` or the `canary` pool
//! (round-robin within a pool), deciding per request by header routes, then
//! the sticky cookie, then the weight ([`route`]). A share of stable requests
//! can be mirrored to the canary. The route table and the pools sit behind
//! one `ArcSwap`, so a change never blocks or splits a request
//! ([`forward`]). The admin API ([`admin`]) changes routes and exposes
//! the proxy's metrics ([`metrics`]), which are also readable in process
//! for the judge. Routes may instead come from elsewhere (a Kubernetes
//! ConfigMap, [`Proxy::with_routes_source`]): then the admin API only reads
//! them, and the proxy is ready once the first table is in effect.
//!
//! Layout: [`route`] is the pure per-request decision; [`upstream`] the
//! pools; [`pool`] the keep-alive connections to each upstream, with
//! [`h1`] the fast path for bodiless `GET`s and `HEAD`s; [`body`] the
//! request bodies that [`forward`] makes and [`pool`] sends; [`forward`] the
//! request path; [`server`] the accept loops and graceful shutdown;
//! [`admin`] the control endpoints.

#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod forward;
pub mod h1;
pub mod metrics;
pub mod pool;
pub mod route;
pub mod server;
pub mod upstream;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coalmine_core::Problem;
use coalmine_core::routes::Routes;
use tokio::net::TcpListener;

pub use forward::Limits;
use forward::{Forwarder, Table};
use metrics::Metrics;
use route::{RouteTable, StickyKey, Track};
use upstream::Pool;

/// What a proxy starts with.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Stable upstream URLs.
    pub stable: Vec<String>,
    /// Canary upstream URLs.
    pub canary: Vec<String>,
    /// The initial route table.
    pub routes: Routes,
    /// Timeouts and limits.
    pub limits: Limits,
    /// The secret that signs sticky cookies ([`read_sticky_secret`]);
    /// random per process when absent (cookies then hold until the proxy
    /// restarts, and only on this proxy).
    pub sticky_secret: Option<Vec<u8>>,
}

/// Fewest bytes a sticky-cookie secret may have (128 bits).
pub const MIN_STICKY_SECRET: usize = 16;

/// The sticky-cookie secret in `path` (`--sticky-secret-file`): the file's
/// bytes, surrounding whitespace trimmed, at least [`MIN_STICKY_SECRET`]
/// of them. Proxies given the same file accept each other's cookies, and
/// a restart keeps them valid.
pub fn read_sticky_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("--sticky-secret-file {}: {e}", path.display()))?;
    let secret = bytes.trim_ascii();
    if secret.len() < MIN_STICKY_SECRET {
        return Err(format!(
            "--sticky-secret-file {}: the secret has {} bytes, fewer than {MIN_STICKY_SECRET}; \
             make one with `head -c 32 /dev/urandom | base64 > {}`",
            path.display(),
            secret.len(),
            path.display()
        ));
    }
    Ok(secret.to_vec())
}

/// Why a proxy could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An upstream URL is unusable.
    #[error("{0}")]
    Upstream(String),
    /// The route table is invalid.
    #[error("invalid routes: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Routes(Vec<Problem>),
    /// No key could be made for the sticky cookie.
    #[error("{0}")]
    Key(String),
}

/// A running proxy's handle: cheap to clone, shared by the data path, the
/// admin API and whoever drives the rollout.
#[derive(Clone)]
pub struct Proxy {
    forwarder: Arc<Forwarder>,
    // Serialises writers so two concurrent PUTs cannot interleave their
    // read-modify-write of the table; readers never take it.
    writer: Arc<Mutex<()>>,
    sticky_key: StickyKey,
    source: Arc<RoutesSource>,
}

/// Where the route table comes from, and whether one was read from there.
#[derive(Debug)]
struct RoutesSource {
    /// What writes the routes, e.g. `ConfigMap NS/NAME`; `None`: the admin
    /// API (`PUT /routes`) and the program itself.
    name: Option<String>,
    /// Whether a table has been put in effect since the proxy started;
    /// true from the start without a source (the initial table is the
    /// one intended).
    read: AtomicBool,
}

impl Proxy {
    /// A proxy for `config`; nothing listens until [`Proxy::serve`].
    pub fn new(config: Config) -> Result<Proxy, Error> {
        let metrics = Arc::new(Metrics::new());
        let connect = config.limits.connect_timeout;
        let sticky_key = match &config.sticky_secret {
            Some(secret) => StickyKey::new(secret),
            None => StickyKey::random().map_err(Error::Key)?,
        };
        let table = Table {
            routes: Arc::new(
                RouteTable::compile(config.routes, &sticky_key).map_err(Error::Routes)?,
            ),
            stable: Arc::new(
                Pool::new(Track::Stable, &config.stable, &metrics, connect)
                    .map_err(Error::Upstream)?,
            ),
            canary: Arc::new(
                Pool::new(Track::Canary, &config.canary, &metrics, connect)
                    .map_err(Error::Upstream)?,
            ),
        };
        Ok(Proxy {
            forwarder: Arc::new(Forwarder::new(table, metrics, config.limits)),
            writer: Arc::new(Mutex::new(())),
            sticky_key,
            source: Arc::new(RoutesSource {
                name: None,
                read: AtomicBool::new(true),
            }),
        })
    }

    /// The same proxy, its routes coming from `source` (named in answers
    /// and logs, e.g. `ConfigMap NS/NAME`): `PUT /routes` is refused
    /// (`409`), and `/readyz` answers `503` until the first
    /// [`Proxy::set_routes`]. Call it before cloning the handle: clones
    /// made earlier keep the previous source.
    pub fn with_routes_source(self, source: impl Into<String>) -> Proxy {
        Proxy {
            source: Arc::new(RoutesSource {
                name: Some(source.into()),
                read: AtomicBool::new(false),
            }),
            ..self
        }
    }

    /// What writes the routes, when not the admin API.
    pub fn routes_source(&self) -> Option<&str> {
        self.source.name.as_deref()
    }

    /// Whether the routes in effect are the ones intended: always without
    /// a source, and with one once a table was read from it.
    pub fn routes_ready(&self) -> bool {
        self.source.read.load(Ordering::Acquire)
    }

    /// The route table in effect.
    pub fn routes(&self) -> Routes {
        self.forwarder.table.load().routes.routes().clone()
    }

    /// Replaces the route table atomically; on error nothing changes. The
    /// first success makes a proxy with a routes source ready.
    pub fn set_routes(&self, routes: Routes) -> Result<(), Vec<Problem>> {
        let compiled = Arc::new(RouteTable::compile(routes, &self.sticky_key)?);
        let weight = compiled.routes().canary_weight;
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.forwarder.table.load();
        self.forwarder.table.store(Arc::new(Table {
            routes: compiled,
            stable: current.stable.clone(),
            canary: current.canary.clone(),
        }));
        self.forwarder.metrics.set_weight(weight);
        self.source.read.store(true, Ordering::Release);
        Ok(())
    }

    /// Replaces the upstream pools atomically (local-mode promotion gives
    /// stable the canary's servers); on error nothing changes.
    pub fn set_upstreams(&self, stable: &[String], canary: &[String]) -> Result<(), Error> {
        let metrics = &self.forwarder.metrics;
        let connect = self.forwarder.limits().connect_timeout;
        let stable =
            Arc::new(Pool::new(Track::Stable, stable, metrics, connect).map_err(Error::Upstream)?);
        let canary =
            Arc::new(Pool::new(Track::Canary, canary, metrics, connect).map_err(Error::Upstream)?);
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.forwarder.table.load();
        self.forwarder.table.store(Arc::new(Table {
            routes: current.routes.clone(),
            stable,
            canary,
        }));
        Ok(())
    }

    /// The upstream URLs of each pool.
    pub fn upstreams(&self) -> (Vec<String>, Vec<String>) {
        let t = self.forwarder.table.load();
        (t.stable.urls(), t.canary.urls())
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.forwarder.metrics
    }

    /// Forwards requests from `listener` until `shutdown`, then drains.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) {
        let fwd = self.forwarder.clone();
        let limits = server::ServeLimits {
            header_timeout: fwd.limits().header_timeout,
            client_write_timeout: fwd.limits().client_write_timeout,
            max_connections: fwd.limits().max_connections,
        };
        let handler = move |req, peer| {
            let fwd = fwd.clone();
            async move { fwd.handle(req, peer).await }
        };
        server::serve_with(listener, handler, shutdown, grace, limits).await;
    }

    /// Serves the admin API from `listener` until `shutdown`, with the
    /// checks of an [`admin::Guard`] without a token.
    pub async fn serve_admin(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let guard = match listener.local_addr() {
            Ok(addr) => admin::Guard::new(addr, None),
            Err(e) => {
                tracing::error!(error = %e, "the admin listener has no address");
                return;
            }
        };
        self.serve_admin_with(listener, guard, shutdown).await;
    }

    /// Serves the admin API from `listener` until `shutdown`, behind `guard`.
    pub async fn serve_admin_with(
        &self,
        listener: TcpListener,
        guard: admin::Guard,
        shutdown: impl Future<Output = ()>,
    ) {
        let proxy = self.clone();
        let handler = move |req, _peer| admin::handle(proxy.clone(), req);
        admin::serve(listener, guard, handler, shutdown).await;
    }

    /// Serves only `GET /metrics`, `/healthz` and `/readyz` from
    /// `listener` until `shutdown`.
    pub async fn serve_metrics(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        admin::serve_metrics(self.clone(), listener, shutdown).await;
    }
}
