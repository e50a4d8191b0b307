//! Test support for the proxy's integration tests: small upstream servers
//! that answer their name and count what they see, a WebSocket echo server,
//! an in-process proxy harness on loopback ports, and minimal HTTP clients.
//!
//! In the spirit of linkerd2-proxy's `linkerd-app-integration` support:
//! `Upstream::start("stable")` is a running server on `127.0.0.1:<ephemeral>`
//! whose options (`delay`, `status`, `echo_headers`, `grpc`, `http1_only`,
//! extra response headers) are set through [`UpstreamBuilder`]. Everything
//! binds port 0 on 127.0.0.1 and stops when its handle is dropped.
//!
//! Several test binaries include this module and each uses only part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use coalmine_core::routes::Routes;
use coalmine_proxy::{Config, Limits, Proxy};
use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Runs `f`, failing the test if it takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback listener on an ephemeral port.
pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    (listener, addr)
}

/// The URL of a loopback port nothing listens on: bound, then released.
pub fn dead_url() -> String {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    drop(listener);
    format!("http://{addr}")
}

/// One request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The request target (origin form for HTTP/1, with authority for HTTP/2).
    pub uri: Uri,
    /// The protocol version on the proxy→upstream hop.
    pub version: Version,
    /// The headers, as received.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

#[derive(Default)]
struct State {
    count: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// Options of a test upstream; [`UpstreamBuilder::start`] runs it.
#[derive(Clone)]
pub struct UpstreamBuilder {
    name: String,
    delay: Duration,
    status: StatusCode,
    echo_headers: bool,
    grpc: bool,
    http1_only: bool,
    response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl UpstreamBuilder {
    /// Sleeps this long before every answer (after counting the request).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answers with this status instead of 200.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Answers with the request's headers as a JSON object instead of the name.
    pub fn echo_headers(mut self) -> Self {
        self.echo_headers = true;
        self
    }

    /// Answers like a gRPC server: `content-type: application/grpc`, the
    /// request body echoed as data, then trailers `grpc-status: 0` and
    /// `grpc-message: ok`.
    pub fn grpc(mut self) -> Self {
        self.grpc = true;
        self
    }

    /// Speaks HTTP/1.1 only, like most application servers (no h2c).
    pub fn http1_only(mut self) -> Self {
        self.http1_only = true;
        self
    }

    /// Adds a header to every answer.
    pub fn response_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.response_headers.push((
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
        self
    }

    /// Binds a loopback port and serves HTTP/1.1 and h2c (prior knowledge),
    /// or HTTP/1.1 only.
    pub async fn start(self) -> Upstream {
        let (listener, addr) = listen().await;
        let state = Arc::new(State::default());
        let options = Arc::new(self);
        let task = tokio::spawn(accept_loop(listener, state.clone(), options.clone()));
        Upstream {
            name: options.name.clone(),
            addr,
            state,
            task,
        }
    }
}

/// A running test upstream; stops accepting when dropped.
pub struct Upstream {
    name: String,
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Options for an upstream answering `name` with 200.
    pub fn builder(name: &str) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.to_owned(),
            delay: Duration::ZERO,
            status: StatusCode::OK,
            echo_headers: false,
            grpc: false,
            http1_only: false,
            response_headers: Vec::new(),
        }
    }

    /// A running upstream answering every request with 200 and its name.
    pub async fn start(name: &str) -> Upstream {
        Upstream::builder(name).start().await
    }

    /// Its name, the body of its answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (counted once the body is read, before any delay).
    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .expect("the request log is never poisoned")
            .clone()
    }

    /// Waits until the count stops changing for `quiet` (or `limit` passes),
    /// for counting deliveries that happen in the background.
    pub async fn settled_count(&self, quiet: Duration, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = self.count();
        let mut since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = self.count();
            if now != last {
                last = now;
                since = tokio::time::Instant::now();
            } else if since.elapsed() >= quiet || tokio::time::Instant::now() >= deadline {
                return now;
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, options: Arc<UpstreamBuilder>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if options.http1_only {
        builder = builder.http1_only();
    }
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let options = options.clone();
        let service = service_fn(move |req| answer(req, state.clone(), options.clone()));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<State>,
    options: Arc<UpstreamBuilder>,
) -> Result<Response<Frames>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
    };
    let echo = options.echo_headers.then(|| headers_json(&seen.headers));
    let grpc_body = seen.body.clone();
    state
        .seen
        .lock()
        .expect("the request log is never poisoned")
        .push(seen);
    state.count.fetch_add(1, Ordering::SeqCst);
    if !options.delay.is_zero() {
        tokio::time::sleep(options.delay).await;
    }
    let mut frames = VecDeque::new();
    let mut resp = Response::builder().status(options.status);
    if options.grpc {
        resp = resp.header("content-type", "application/grpc");
        frames.push_back(Frame::data(grpc_body));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        frames.push_back(Frame::trailers(trailers));
    } else if let Some(json) = echo {
        resp = resp.header("content-type", "application/json");
        frames.push_back(Frame::data(Bytes::from(json)));
    } else {
        resp = resp.header("content-type", "text/plain");
        frames.push_back(Frame::data(Bytes::from(options.name.clone())));
    }
    for (name, value) in &options.response_headers {
        resp = resp.header(name, value);
    }
    Ok(resp
        .header("x-upstream", options.name.as_str())
        .body(Frames(frames))
        .expect("a response from valid parts"))
}

fn headers_json(headers: &HeaderMap) -> String {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>"))
            .collect();
        map.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    serde_json::Value::Object(map).to_string()
}

/// A response body made of prepared frames (data, then maybe trailers).
pub struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// A WebSocket server echoing every text and binary message.
pub struct WsUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl WsUpstream {
    /// Binds a loopback port and accepts WebSocket handshakes on it.
    pub async fn start() -> WsUpstream {
        let (listener, addr) = listen().await;
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    // Echo data frames; the library answers pings and closes.
                    while let Some(Ok(msg)) = ws.next().await {
                        let data = matches!(msg, Message::Text(_) | Message::Binary(_));
                        if data && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsUpstream {
            addr,
            connections,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, as a proxy upstream URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// WebSocket handshakes completed so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A route table from its admin-API JSON.
pub fn routes(json: &str) -> Routes {
    serde_json::from_str(json).expect("a valid route table")
}

/// The usual set-up: a stable and a canary upstream that answer their
/// names, and a proxy in front of them with `routes` (the admin API's JSON).
pub async fn setup(routes_json: &str) -> (Upstream, Upstream, TestProxy) {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let proxy = TestProxy::start(&stable, &canary, routes(routes_json)).await;
    (stable, canary, proxy)
}

/// A proxy served in process on loopback ports, with its admin API; shut
/// down by [`TestProxy::shutdown`] or when dropped.
pub struct TestProxy {
    /// The proxy's handle.
    pub proxy: Proxy,
    /// The data port.
    pub addr: SocketAddr,
    /// The admin port.
    pub admin: SocketAddr,
    stop: watch::Sender<bool>,
    served: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// A proxy in front of `stable` and `canary` with `routes`.
    pub async fn start(stable: &Upstream, canary: &Upstream, routes: Routes) -> TestProxy {
        TestProxy::start_with(
            Config {
                stable: vec![stable.url()],
                canary: vec![canary.url()],
                routes,
                limits: Limits::default(),
                sticky_secret: None,
            },
            Duration::from_secs(5),
        )
        .await
    }

    /// A proxy for `config`, giving requests `grace` to finish at shutdown.
    pub async fn start_with(config: Config, grace: Duration) -> TestProxy {
        let proxy = Proxy::new(config).expect("a valid proxy configuration");
        let (listener, addr) = listen().await;
        let (admin_listener, admin) = listen().await;
        let (stop, _) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // A dropped sender also stops the proxy.
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let data = proxy.clone();
        let shutdown = stopped(stop.subscribe());
        let served = tokio::spawn(async move { data.serve(listener, shutdown, grace).await });
        let control = proxy.clone();
        let shutdown = stopped(stop.subscribe());
        tokio::spawn(async move { control.serve_admin(admin_listener, shutdown).await });
        TestProxy {
            proxy,
            addr,
            admin,
            stop,
            served: Some(served),
        }
    }

    /// Triggers the shutdown future of both listeners.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// The task running `serve` on the data port, to await its end.
    pub fn served(&mut self) -> JoinHandle<()> {
        self.served.take().expect("served() is called once")
    }

    /// `GET /metrics` from the admin API, as text.
    pub async fn metrics_text(&self) -> String {
        let reply = Conn::open(self.admin).await.get("/metrics", &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET /metrics: {}",
            reply.text()
        );
        reply.text()
    }

    /// `GET /routes` from the admin API.
    pub async fn get_routes(&self) -> Routes {
        let reply = Conn::open(self.admin).await.get("/routes", &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET /routes: {}",
            reply.text()
        );
        serde_json::from_slice(&reply.body).expect("GET /routes answers a route table")
    }

    /// `PUT /routes` with `body` on the admin API.
    pub async fn put_routes(&self, body: &str) -> Reply {
        Conn::open(self.admin)
            .await
            .send(Method::PUT, "/routes", &[], Bytes::from(body.to_owned()))
            .await
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
    /// Trailers, if the body had any.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-coalmine-track` header, or "" when absent.
    pub fn track(&self) -> &str {
        self.header("x-coalmine-track")
    }

    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    async fn read(resp: Response<Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.expect("read the whole answer body");
        let trailers = collected.trailers().cloned();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    }
}

/// One HTTP/1.1 keep-alive connection; requests on it go one after another.
pub struct Conn {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Conn { addr, sender }
    }

    /// `GET path` with extra headers.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    /// A request with `Host` set to the address connected to, unless given.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", self.addr.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .expect("a request from valid parts");
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// Sends a request, reporting failure instead of panicking.
    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        Ok(Reply::read(resp).await)
    }
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_only(true)
        .build_http()
}

/// Sends `req` with `client` and reads the whole answer, trailers included.
pub async fn fetch(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Reply {
    let resp = client
        .request(req)
        .await
        .expect("request through the proxy");
    Reply::read(resp).await
}
