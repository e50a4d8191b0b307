//! The admin API: `GET/PUT /routes`, `GET /healthz`, `GET /readyz`,
//! `GET /metrics`.
//!
//! It listens on its own address (loopback unless told otherwise), so the
//! data port never exposes control. `PUT /routes` checks the whole table
//! first and swaps it in one store: a request sees the old table or the
//! new one, never a mix; an invalid body gets 400 with every reason and
//! changes nothing. When the routes come from a source of their own (a
//! ConfigMap, [`Proxy::with_routes_source`]) `PUT /routes` is refused with
//! 409, so the source and the API never disagree on the table, and
//! `GET /routes` answers 503 until the source has been read.
//!
//! Every request passes the [`Guard`] first: a web page a browser shows
//! must not be able to reach the API, whether by naming it under another
//! host name (DNS rebinding) or by a cross-site form or `fetch`; and an
//! address others can reach can require a bearer token.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coalmine_core::routes::Routes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, ORIGIN, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::Proxy;
use crate::server::{self, Peer, ServeLimits};

/// Who may use an admin API listening on one address.
///
/// - Without a token, the `Host` header (or HTTP/2 `:authority`) must name
///   the listener: its port, and `localhost`, a loopback address or the
///   address it is bound to (any IP literal when bound to all
///   interfaces). A page served from another name that resolves here is
///   refused (`421`).
/// - With a token, every request but `GET /healthz` (and `GET` of the
///   paths given to [`Guard::with_public`]) must carry
///   `Authorization: Bearer TOKEN` (`401` otherwise), and any `Host` is
///   accepted, so the API can sit behind a name.
/// - A request that changes something (any method but `GET`, `HEAD`,
///   `OPTIONS`) is refused (`403`) when it comes from a browser on another
///   site (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin`
///   that is not the listener), and a `POST` is refused when it has a
///   body type an HTML form can send (`application/x-www-form-urlencoded`,
///   `multipart/form-data`, `text/plain`). Command-line clients send none
///   of these.
#[derive(Clone)]
pub struct Guard {
    addr: SocketAddr,
    token: Option<Arc<str>>,
    /// Paths a `GET` may read without the token: static files with no data.
    public: &'static [&'static str],
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Guard {
    /// The guard of a listener bound to `addr`, requiring `token` if given.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Guard {
            addr,
            token: token.map(Into::into),
            public: &[],
        }
    }

    /// The same guard, letting `GET` of `paths` through without the token
    /// (a browser cannot attach one to a page it navigates to). The `Host`
    /// check still applies to them when there is no token.
    pub fn with_public(self, paths: &'static [&'static str]) -> Self {
        Guard {
            public: paths,
            ..self
        }
    }

    /// Says in the log when the address is reachable from elsewhere and no
    /// token protects it.
    pub fn warn_if_open(&self) {
        if self.token.is_none() && !self.addr.ip().is_loopback() {
            tracing::warn!(
                admin = %self.addr,
                "the admin API listens on a non-loopback address without a token: anyone who \
                 can reach it can change routes and stop the rollout; give --admin-token-file"
            );
        }
    }

    /// `Ok` when `req` may proceed; otherwise the refusal to send.
    #[allow(clippy::result_large_err)]
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Response<Full<Bytes>>> {
        let headers = req.headers();
        match &self.token {
            Some(token) => {
                let path = req.uri().path();
                let healthz = req.method() == Method::GET
                    && (path == "/healthz" || self.public.contains(&path));
                let given = headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
                let ok = given.is_some_and(|g| same(g.trim_ascii(), token.as_bytes()));
                if !ok && !healthz {
                    let mut resp = text(
                        StatusCode::UNAUTHORIZED,
                        "this admin API needs `Authorization: Bearer TOKEN`\n",
                    );
                    resp.headers_mut()
                        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return Err(resp);
                }
            }
            None => {
                let host = headers
                    .get(HOST)
                    .map(HeaderValue::as_bytes)
                    .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()));
                if !host.is_some_and(|h| self.names_me(h)) {
                    return Err(text(
                        StatusCode::MISDIRECTED_REQUEST,
                        "unknown Host: use the admin API's address, like 127.0.0.1:PORT\n",
                    ));
                }
            }
        }
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let site = headers
                .get("sec-fetch-site")
                .map(HeaderValue::as_bytes)
                .unwrap_or(b"none");
            let cross_site =
                site.eq_ignore_ascii_case(b"cross-site") || site.eq_ignore_ascii_case(b"same-site");
            let foreign_origin = headers.get(ORIGIN).is_some_and(|o| {
                o.as_bytes()
                    .strip_prefix(b"http://")
                    .is_none_or(|authority| !self.names_me(authority))
            });
            // Only `POST` can come from a form; other methods from another
            // site need a CORS preflight, which this API never grants.
            let form = req.method() == Method::POST
                && headers.get(CONTENT_TYPE).is_some_and(|t| {
                    let t = t.as_bytes();
                    let essence = t.split(|b| *b == b';').next().unwrap_or(t).trim_ascii();
                    [
                        &b"application/x-www-form-urlencoded"[..],
                        b"multipart/form-data",
                        b"text/plain",
                    ]
                    .iter()
                    .any(|f| essence.eq_ignore_ascii_case(f))
                });
            if cross_site || foreign_origin || form {
                return Err(text(
                    StatusCode::FORBIDDEN,
                    "refused: a change from a web page, or with a form's content type; \
                     send JSON (content-type: application/json) or no body\n",
                ));
            }
        }
        Ok(())
    }

    /// Whether `authority` (`host[:port]`) names this listener.
    fn names_me(&self, authority: &[u8]) -> bool {
        let Ok(authority) = std::str::from_utf8(authority) else {
            return false;
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p.parse::<u16>().ok()),
            _ => (authority, Some(80)),
        };
        if port != Some(self.addr.port()) {
            return false;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match bare.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip == self.addr.ip() || self.addr.ip().is_unspecified(),
            Err(_) => false,
        }
    }
}

/// The token in `path`: its first line, whitespace trimmed; not empty.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(format!(
            "--admin-token-file {}: the first line is empty",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves an admin API from `listener` until `shutdown`: every request
/// passes `guard` before `handler` sees it.
pub async fn serve<H, F>(
    listener: TcpListener,
    guard: Guard,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    guard.warn_if_open();
    let guarded = move |req: Request<Incoming>, peer: Peer| {
        let checked = guard.check(&req).map(|()| handler(req, peer));
        async move {
            match checked {
                Ok(answer) => answer.await,
                Err(refusal) => refusal,
            }
        }
    };
    let limits = ServeLimits {
        header_timeout: Duration::from_secs(10),
        client_write_timeout: Duration::from_secs(10),
        max_connections: 64,
    };
    server::serve_with(listener, guarded, shutdown, Duration::from_secs(1), limits).await;
}

/// Serves only `GET /metrics` (and `/healthz`, `/readyz`) from
/// `listener`, for a scraper (and the kubelet's probes) that should not
/// reach the rest of the admin API.
pub async fn serve_metrics(
    proxy: Proxy,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |req: Request<Incoming>, _peer| {
        let proxy = proxy.clone();
        async move {
            match (req.method(), req.uri().path()) {
                (&Method::GET, "/metrics") => metrics(&proxy),
                (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
                (&Method::GET, "/readyz") => readyz(&proxy),
                _ => text(
                    StatusCode::NOT_FOUND,
                    "only GET /metrics, /healthz and /readyz here\n",
                ),
            }
        }
    };
    let limits = ServeLimits {
        header_timeout: Duration::from_secs(10),
        client_write_timeout: Duration::from_secs(10),
        max_connections: 64,
    };
    server::serve_with(listener, handler, shutdown, Duration::from_secs(1), limits).await;
}

/// `200` once the routes in effect are the intended ones; `503` while a
/// proxy whose routes come from a source has not read them yet (it sends
/// everything to stable meanwhile, and `GET /routes` answers the same
/// `503`).
fn readyz(proxy: &Proxy) -> Response<Full<Bytes>> {
    match proxy.routes_source() {
        Some(source) if !proxy.routes_ready() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("routes not yet read from {source}\n"),
        ),
        _ => text(StatusCode::OK, "ok\n"),
    }
}

fn metrics(proxy: &Proxy) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(proxy.metrics().encode())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Largest `PUT /routes` body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// Answers one admin request.
pub async fn handle(proxy: Proxy, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(&proxy),
        (&Method::GET, "/metrics") => metrics(&proxy),
        // Before its source is read the table is a placeholder (all to
        // stable), not one anybody chose: say so rather than show it.
        (&Method::GET, "/routes") if !proxy.routes_ready() => readyz(&proxy),
        (&Method::GET, "/routes") => json(StatusCode::OK, &proxy.routes()),
        (&Method::PUT, "/routes") => {
            if let Some(source) = proxy.routes_source() {
                return text(
                    StatusCode::CONFLICT,
                    &format!(
                        "the routes come from {source}: change its routes.json there, not here\n"
                    ),
                );
            }
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("could not read the body: {e}\n"),
                    );
                }
            };
            let mut de = serde_json::Deserializer::from_slice(&body);
            let routes: Routes = match serde_path_to_error::deserialize(&mut de) {
                Ok(r) => r,
                Err(e) => {
                    let path = e.path().to_string();
                    let at = if path == "." {
                        String::new()
                    } else {
                        format!("{path}: ")
                    };
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "invalid routes: {at}{}; expected e.g. {{\"canaryWeight\": 10}}\n",
                            e.into_inner()
                        ),
                    );
                }
            };
            match proxy.set_routes(routes) {
                Ok(()) => json(StatusCode::OK, &proxy.routes()),
                Err(problems) => {
                    let lines: Vec<String> = problems
                        .iter()
                        .map(|p| format!("invalid routes: {p}\n"))
                        .collect();
                    text(StatusCode::BAD_REQUEST, &lines.concat())
                }
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/routes") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /routes, /healthz, /readyz or /metrics\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}
