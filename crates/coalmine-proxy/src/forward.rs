//! The request path: route, rewrite headers, forward, stream the answer
//! back, count it. Mirroring and upgrades (WebSocket) branch off here.
//!
//! Bodies stream in both directions; nothing is buffered except the body of
//! a request that is mirrored, and only when it is small (see
//! [`Limits::mirror_max_body`]).
//!
//! Counting is fair to both sides: an exchange is counted in its track's
//! class when its answer's body has ended, so an answer that breaks off
//! after its head counts as `error`, not as its status; a request whose
//! own body broke off (the client aborted an upload, or sent a malformed
//! chunked body) is the client's fault and is answered and counted as a
//! `400`, never as an upstream error; so is one still sending its body
//! when the request timeout strikes (`408`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use crate::body::{BoxError, ClientBody, RequestBody as Body, UPLOAD_FAILED, UPLOADING};
use crate::metrics::{Class, Metrics, UpstreamMetrics};
use crate::pool::{PooledBody, SendError};
use crate::route::{RouteTable, Track};
use crate::server::Peer;
use crate::upstream::{Pool, Upstream};

/// What the request path reads on every request; swapped whole.
pub struct Table {
    /// The compiled routes.
    pub routes: Arc<RouteTable>,
    /// Stable servers.
    pub stable: Arc<Pool>,
    /// Canary servers.
    pub canary: Arc<Pool>,
}

impl Table {
    fn pool(&self, track: Track) -> &Pool {
        match track {
            Track::Stable => &self.stable,
            Track::Canary => &self.canary,
        }
    }
}

/// Timeouts and limits of the request path.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed to open a connection to an upstream.
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to the upstream's response headers.
    pub request_timeout: Duration,
    /// Mirror copies in flight at most; more are dropped and counted.
    pub mirror_max_in_flight: usize,
    /// Largest request body copied for mirroring; larger ones are not mirrored.
    pub mirror_max_body: usize,
    /// Time an answer's body may go without a byte from the upstream, once
    /// its head has come (HAProxy: `timeout server`).
    pub body_idle_timeout: Duration,
    /// Time a client has to send a request's head, from the connection's
    /// start or the end of the previous answer; so also how long an idle
    /// keep-alive connection stays open (HAProxy: `timeout http-request`
    /// and `timeout http-keep-alive`).
    pub header_timeout: Duration,
    /// Time a client may take no byte of an answer that waits to be
    /// written to it (HAProxy: `timeout client`); then its connection,
    /// and the upstream's, are closed.
    pub client_write_timeout: Duration,
    /// Client connections open at once at most; more wait in the listen
    /// backlog (HAProxy: `maxconn`). Lowered at start to what the process's
    /// file-descriptor limit allows ([`crate::server::fd_budget`]).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            mirror_max_in_flight: 256,
            mirror_max_body: 64 * 1024,
            body_idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            client_write_timeout: Duration::from_secs(30),
            max_connections: 8192,
        }
    }
}

/// The request path's shared state.
pub struct Forwarder {
    /// Routes and pools, swapped atomically.
    pub table: ArcSwap<Table>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    http2: Client<HttpConnector, Body>,
    weight_ticks: AtomicU64,
    mirror_ticks: AtomicU64,
    mirror_slots: Arc<Semaphore>,
    limits: Limits,
}

static TRACK_HEADER: HeaderName = HeaderName::from_static("x-coalmine-track");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

impl Forwarder {
    /// A forwarder over `table`.
    pub fn new(table: Table, metrics: Arc<Metrics>, limits: Limits) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        // HTTP/1.1 goes through the per-upstream pools (`pool.rs`); this
        // client only carries gRPC, which needs HTTP/2 end to end.
        let http2 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .build(connector);
        metrics.set_weight(table.routes.routes().canary_weight);
        Forwarder {
            table: ArcSwap::from_pointee(table),
            metrics,
            http2,
            weight_ticks: AtomicU64::new(0),
            mirror_ticks: AtomicU64::new(0),
            mirror_slots: Arc::new(Semaphore::new(limits.mirror_max_in_flight)),
            limits,
        }
    }

    /// The timeouts and limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Handles one request from `peer`.
    pub async fn handle(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let table = self.table.load_full();
        let choice = table.routes.choose(req.headers(), &self.weight_ticks);
        let upstream = table.pool(choice.track).pick();
        let upgrade = is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mirror =
            choice.track == Track::Stable && !upgrade && table.routes.mirror(&self.mirror_ticks);

        let (mut parts, body) = req.into_parts();
        if let Err(why) = normalise(&mut parts) {
            return self.fail(choice.track, start, StatusCode::BAD_REQUEST, why);
        }
        let body = ClientBody::new(body);
        let upload = body.upload.clone();
        let upload_is = |state: u8| {
            upload
                .as_ref()
                .is_some_and(|u| u.load(Ordering::Relaxed) == state)
        };
        let original_uri = std::mem::take(&mut parts.uri);
        forwarded_headers(&mut parts.headers, &original_uri, &peer, upgrade);
        let client_version = parts.version;
        // gRPC needs HTTP/2 end to end; everything else goes upstream over
        // HTTP/1.1, which every server speaks, whatever the client spoke.
        let h2 = client_version == Version::HTTP_2 && is_grpc(&parts.headers);
        let uri = if h2 {
            upstream.uri_for(&original_uri)
        } else {
            upstream.origin_form(&original_uri)
        };
        parts.uri = match uri {
            Ok(uri) => uri,
            Err(_) => {
                return self.fail(
                    choice.track,
                    start,
                    StatusCode::BAD_REQUEST,
                    "bad request target",
                );
            }
        };
        if !h2 {
            parts.version = Version::HTTP_11;
            if !parts.headers.contains_key(header::HOST) {
                // HTTP/2 carries the host in :authority, HTTP/1.0 may carry
                // none; HTTP/1.1 needs one.
                let host = original_uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                    .unwrap_or_else(|| upstream.host().clone());
                parts.headers.insert(header::HOST, host);
            }
        }
        let body = if mirror {
            // Boxed (like the other rare paths) to keep the request's
            // future small: it is moved a few times per request.
            match Box::pin(self.copy_for_mirror(body, &parts.headers)).await {
                Copy::Copied(bytes, forwarded) => {
                    self.send_mirror(&table, &parts, &original_uri, h2, bytes);
                    forwarded
                }
                Copy::NotCopied(forwarded) => {
                    self.metrics.mirror_dropped.inc();
                    forwarded
                }
                Copy::Failed => {
                    return self.fail(
                        choice.track,
                        start,
                        StatusCode::BAD_REQUEST,
                        "the request body could not be read",
                    );
                }
            }
        } else {
            Either::Left(body)
        };
        let req = Request::from_parts(parts, body);
        let sent = tokio::time::timeout(
            self.limits.request_timeout,
            self.exchange(upstream, req, h2),
        )
        .await;
        let mut resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(_)) if upload_is(UPLOAD_FAILED) => {
                // The client's body broke off: its fault, not the upstream's.
                return self.fail(
                    choice.track,
                    start,
                    StatusCode::BAD_REQUEST,
                    "the request body broke off or was malformed",
                );
            }
            Ok(Err(failure)) => {
                upstream.metrics.record(Class::Error);
                tracing::debug!(upstream = upstream.url(), error = %failure, "upstream request failed");
                let why = if failure.connect {
                    "could not connect to the upstream"
                } else {
                    "the upstream closed the connection without answering"
                };
                return self.fail(choice.track, start, StatusCode::BAD_GATEWAY, why);
            }
            Err(_) if upload_is(UPLOADING) => {
                // The client had not finished sending its body: a slow or
                // stalled client, not a slow upstream.
                return self.fail(
                    choice.track,
                    start,
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                );
            }
            Err(_) => {
                upstream.metrics.record(Class::Error);
                return self.fail(
                    choice.track,
                    start,
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream did not answer in time",
                );
            }
        };
        let class = Class::of(resp.status().as_u16());
        self.metrics
            .track(choice.track)
            .latency()
            .observe(start.elapsed());
        // Counted when the body ends, as `error` if it breaks off.
        resp.body_mut().tally = Some(Tally {
            metrics: self.metrics.clone(),
            upstream: upstream.metrics.clone(),
            track: choice.track,
            class,
        });

        // Answer in the client's protocol version, whatever the upstream spoke
        // (an HTTP/1.0 upstream must not turn a keep-alive client into 1.0).
        *resp.version_mut() = client_version;
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let body = resp.body_mut();
            body.settle(None);
            if let Inner::Pooled(pooled) = &mut body.inner {
                // The connection now belongs to the tunnel.
                pooled.detach();
            }
            if let Some(client_side) = client_upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client_side, upstream_side));
            }
        }
        strip_hop_by_hop(resp.headers_mut(), switching);
        let headers = resp.headers_mut();
        headers.insert(
            TRACK_HEADER.clone(),
            crate::route::header_value(choice.track),
        );
        if let Some(cookie) = table.routes.set_cookie(choice) {
            headers.append(header::SET_COOKIE, cookie.clone());
        }
        resp
    }

    /// One exchange with an upstream: HTTP/1.1 through its pool, gRPC over HTTP/2.
    async fn exchange(
        &self,
        upstream: &Upstream,
        req: Request<Body>,
        h2: bool,
    ) -> Result<Response<ResponseBody>, Failure> {
        let idle = self.limits.body_idle_timeout;
        if h2 {
            match Box::pin(self.http2.request(req)).await {
                Ok(resp) => Ok(resp.map(|b| ResponseBody::new(Inner::Streamed(b), idle))),
                Err(e) => Err(Failure {
                    connect: e.is_connect(),
                    detail: e.to_string(),
                }),
            }
        } else {
            match upstream.pool.send(req).await {
                Ok(resp) => Ok(resp.map(|b| ResponseBody::new(Inner::Pooled(b), idle))),
                Err(e) => Err(Failure {
                    connect: matches!(e, SendError::Connect(_)),
                    detail: e.to_string(),
                }),
            }
        }
    }

    /// An answer made here when the upstream gave none; counted as `error`
    /// (or, for a bad request target, as the 4xx it is).
    fn fail(
        &self,
        track: Track,
        start: Instant,
        status: StatusCode,
        why: &'static str,
    ) -> Response<ResponseBody> {
        let class = if status.is_client_error() {
            Class::ClientError
        } else {
            Class::Error
        };
        self.metrics.track(track).record(class, start.elapsed());
        let mut resp = Response::new(ResponseBody::made(Bytes::from(format!(
            "coalmine: {why} ({} track)\n",
            track.as_str()
        ))));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(TRACK_HEADER.clone(), crate::route::header_value(track));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }

    /// Reads a small body into memory so it can be sent twice.
    async fn copy_for_mirror(&self, body: ClientBody, headers: &HeaderMap) -> Copy {
        if body.is_end_stream() {
            return Copy::Copied(Bytes::new(), Either::Left(body));
        }
        let small = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n <= self.limits.mirror_max_body);
        if !small {
            return Copy::NotCopied(Either::Left(body));
        }
        match Limited::new(body, self.limits.mirror_max_body)
            .collect()
            .await
        {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                Copy::Copied(bytes.clone(), Either::Right(Full::new(bytes)))
            }
            Err(_) => Copy::Failed,
        }
    }

    /// Sends a copy to the canary in the background: never awaited by the
    /// client's request, bounded by `mirror_max_in_flight`.
    fn send_mirror(
        &self,
        table: &Table,
        parts: &http::request::Parts,
        original: &Uri,
        h2: bool,
        body: Bytes,
    ) {
        let Ok(permit) = self.mirror_slots.clone().try_acquire_owned() else {
            self.metrics.mirror_dropped.inc();
            return;
        };
        let upstream = table.canary.pick();
        let uri = if h2 {
            upstream.uri_for(original)
        } else {
            upstream.origin_form(original)
        };
        let Ok(uri) = uri else {
            self.metrics.mirror_dropped.inc();
            return;
        };
        let mut req = Request::new(Either::Right(Full::new(body)));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        let http2 = self.http2.clone();
        let pool = upstream.pool.clone();
        let timeout = self.limits.request_timeout;
        let metrics = self.metrics.clone();
        metrics.mirrored.inc();
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = async {
                let resp = if h2 {
                    http2
                        .request(req)
                        .await
                        .ok()?
                        .map(|b| ResponseBody::new(Inner::Streamed(b), timeout))
                } else {
                    pool.send(req)
                        .await
                        .ok()?
                        .map(|b| ResponseBody::new(Inner::Pooled(b), timeout))
                };
                let ok = !resp.status().is_server_error();
                // Read the answer to the end, which also frees the connection.
                resp.into_body().collect().await.ok()?;
                Some(ok)
            };
            if tokio::time::timeout(timeout, exchange).await.ok().flatten() != Some(true) {
                metrics.mirror_failed.inc();
            }
        });
    }
}

/// Why an exchange failed.
#[derive(Debug)]
struct Failure {
    /// No connection could be made (as opposed to one that broke).
    connect: bool,
    detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// An answer's body: from a pooled HTTP/1.1 connection, streamed over
/// HTTP/2, or made here. It counts its exchange when it ends, and gives up
/// on an upstream that sends nothing for [`Limits::body_idle_timeout`].
pub struct ResponseBody {
    inner: Inner,
    /// The exchange's count, made when the body ends.
    tally: Option<Tally>,
    /// How long the upstream may send nothing.
    idle_timeout: Duration,
    /// Armed the first time the upstream keeps the body waiting (most
    /// bodies are whole at once and never need a timer).
    idle: Option<Pin<Box<Sleep>>>,
}

enum Inner {
    /// From an upstream's keep-alive pool.
    Pooled(PooledBody),
    /// From the HTTP/2 client.
    Streamed(Incoming),
    /// Made by the proxy (errors).
    Made(Full<Bytes>),
}

/// What to count when an answer's body ends.
struct Tally {
    metrics: Arc<Metrics>,
    upstream: UpstreamMetrics,
    track: Track,
    /// The class of the answer's status.
    class: Class,
}

impl ResponseBody {
    fn new(inner: Inner, idle_timeout: Duration) -> Self {
        ResponseBody {
            inner,
            tally: None,
            idle_timeout,
            idle: None,
        }
    }

    fn made(bytes: Bytes) -> Self {
        ResponseBody::new(Inner::Made(Full::new(bytes)), Duration::ZERO)
    }

    /// Counts the exchange, once: as `class`, or as its status's class.
    fn settle(&mut self, class: Option<Class>) {
        if let Some(t) = self.tally.take() {
            let class = class.unwrap_or(t.class);
            t.metrics.track(t.track).count(class);
            t.upstream.record(class);
        }
    }

    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Pooled(b) => Pin::new(b).poll_frame(cx),
            Inner::Streamed(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Made(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Poll::Ready(frame) = this.poll_inner(cx) else {
            if this.idle_timeout.is_zero() {
                return Poll::Pending;
            }
            let timeout = this.idle_timeout;
            let idle = this
                .idle
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            ready!(idle.as_mut().poll(cx));
            // The upstream went quiet: the exchange failed, and dropping
            // its body closes the connection.
            this.settle(Some(Class::Error));
            this.inner = Inner::Made(Full::default());
            this.idle = None;
            return Poll::Ready(Some(Err(format!(
                "the upstream sent nothing for {timeout:?} in the middle of an answer"
            )
            .into())));
        };
        match &frame {
            None => this.settle(None),
            Some(Err(_)) => this.settle(Some(Class::Error)),
            Some(Ok(_)) => {
                if this.inner_end_stream() {
                    this.settle(None);
                } else if let Some(idle) = &mut this.idle {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + this.idle_timeout);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.inner {
            Inner::Pooled(b) => b.size_hint(),
            Inner::Streamed(b) => b.size_hint(),
            Inner::Made(b) => b.size_hint(),
        }
    }
}

impl ResponseBody {
    fn inner_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Pooled(b) => b.is_end_stream(),
            Inner::Streamed(b) => b.is_end_stream(),
            Inner::Made(b) => b.is_end_stream(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Ended without an upstream failure: never polled because it was
        // empty, or the client went away (not the upstream's fault).
        self.settle(None);
    }
}

enum Copy {
    /// The body, and what to forward in its place.
    Copied(Bytes, Body),
    /// Not copied; forward this.
    NotCopied(Body),
    /// The client's body broke off.
    Failed,
}

/// Joins the client's and the upstream's upgraded connections.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let mut a = TokioIo::new(client);
    let mut b = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

/// A gRPC call (`content-type: application/grpc`, `application/grpc+proto`, …).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// An HTTP/1.1 request asking to switch protocols (WebSocket and the like).
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), keeping what an upgrade
/// needs and `te: trailers`, which gRPC needs end to end.
///
/// One pass over the headers that only allocates when something must go:
/// profiling showed ten unconditional `HeaderMap::remove` calls (each a
/// SipHash of the name) costing 8% of the proxy's instructions.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // `Connection` apart: nearly every answer has one, and nothing else
    // to remove, so this list stays empty and unallocated.
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut connection = false;
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            for token in value.to_str().unwrap_or_default().split(',') {
                let token = token.trim();
                let known = ["keep-alive", "close", "upgrade"]
                    .iter()
                    .any(|k| token.eq_ignore_ascii_case(k));
                if !known
                    && !token.is_empty()
                    && let Ok(named) = HeaderName::from_bytes(token.as_bytes())
                {
                    doomed.push(named);
                }
            }
            connection = !upgrade;
        } else if is_hop_by_hop(name, value, upgrade) {
            doomed.push(name.clone());
        }
    }
    if connection {
        headers.remove(header::CONNECTION);
    }
    for name in doomed {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName, value: &HeaderValue, upgrade: bool) -> bool {
    if name == header::TE {
        return !value.as_bytes().eq_ignore_ascii_case(b"trailers");
    }
    if name == header::UPGRADE {
        return !upgrade;
    }
    // Not `Trailer`: it lists the trailer fields end to end (RFC 9110
    // §6.6.2), and hyper sends HTTP/1.1 trailers only for fields it names.
    name == header::TRANSFER_ENCODING
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Hop-by-hop headers out, `x-forwarded-*` in.
fn forwarded_headers(headers: &mut HeaderMap, uri: &Uri, peer: &Peer, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // `entry` hashes each name once where `contains_key` + `insert` would
    // hash it twice.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Occupied(mut prior) => {
            let chained = prior.get().to_str().ok().and_then(|prior| {
                let ip = peer.ip.to_str().unwrap_or_default();
                HeaderValue::from_str(&format!("{prior}, {ip}")).ok()
            });
            prior.insert(chained.unwrap_or_else(|| peer.ip.clone()));
        }
        Entry::Vacant(slot) => {
            slot.insert(peer.ip.clone());
        }
    }
    // Set, not kept: a client's own `x-forwarded-proto: https` or
    // `x-forwarded-host` would otherwise reach the upstream as if this
    // proxy had vouched for it.
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    let host = headers.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    match host {
        Some(host) => headers.insert(&X_FORWARDED_HOST, host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// Refuses a request head RFC 9112 says a server must refuse, and makes
/// the rest unambiguous for the upstream:
/// - more than one `Host`, or a `Content-Length` that is not digits only
///   (`+5`), is a `400` (§3.2, §6.3);
/// - a target in absolute form (`GET http://a.example/ HTTP/1.1`), or an
///   HTTP/2 `:authority`, names the host: `Host` is set to it (§3.2.2);
/// - HTTP/2 cookies sent as several fields are joined into one with `; `
///   for an HTTP/1.1 upstream (RFC 9113 §8.2.3).
fn normalise(parts: &mut http::request::Parts) -> Result<(), &'static str> {
    let headers = &mut parts.headers;
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    if headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| crate::h1::content_length(v.as_bytes()).is_none())
    {
        return Err("a Content-Length that is not a number");
    }
    if let Some(authority) = parts.uri.authority()
        && host.as_ref().map(HeaderValue::as_bytes) != Some(authority.as_str().as_bytes())
    {
        let value =
            HeaderValue::from_str(authority.as_str()).map_err(|_| "a bad request target")?;
        headers.insert(header::HOST, value);
    }
    if parts.version == Version::HTTP_2 {
        let mut cookies = headers.get_all(header::COOKIE).iter();
        if let (Some(_), Some(_)) = (cookies.next(), cookies.next()) {
            let joined: Vec<&[u8]> = headers
                .get_all(header::COOKIE)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            let value =
                HeaderValue::from_bytes(&joined.join(&b"; "[..])).map_err(|_| "a bad cookie")?;
            headers.insert(header::COOKIE, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn peer(addr: &str) -> Peer {
        let addr: SocketAddr = addr.parse().unwrap();
        Peer {
            addr,
            ip: HeaderValue::from_str(&addr.ip().to_string()).unwrap(),
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarded_ones_come() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let uri: Uri = "/".parse().unwrap();
        forwarded_headers(&mut h, &uri, &peer("127.0.0.9:5000"), false);
        assert!(
            !h.contains_key("x-secret")
                && !h.contains_key("keep-alive")
                && !h.contains_key("connection")
        );
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let uri: Uri = "/".parse().unwrap();
        forwarded_headers(&mut h, &uri, &peer("127.0.0.1:1"), true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        let req = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&req));
    }
}
