//! Test support: loopback servers the providers talk to, a coalmine proxy in
//! process, and a traffic helper. Everything binds `127.0.0.1:0` and stops
//! when its handle is dropped.

#![allow(dead_code)]

pub mod builtin;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use coalmine_proxy::{Config, Limits, Proxy};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs `f`, failing the test if it takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
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

/// A loopback port nothing listens on: bound, then released.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// One request as a test server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body, as text.
    pub body: String,
}

impl Seen {
    /// The value of query parameter `name`, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        self.uri.query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| decode(v))
        })
    }

    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(b) = hex {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a test server answers: a status and a body, after a delay; or an
/// error, which makes hyper close the connection without an answer.
pub enum Reply {
    /// An answer.
    Answer {
        /// The status.
        status: StatusCode,
        /// The body.
        body: String,
        /// Wait this long first.
        delay: Duration,
    },
    /// Close the connection without answering.
    Drop,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply::status(200, body)
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply::Answer {
            status: StatusCode::from_u16(status).expect("a valid status"),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
}

type Handler = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

/// An HTTP/1.1 + h2c server answering with a closure of the request and
/// its index (0 for the first request), recording every request.
pub struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts a server answering with `handler`.
    pub async fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Server {
        let (listener, addr) = listen().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, log, count) = (handler.clone(), log.clone(), count.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (handler, log, count) = (handler.clone(), log.clone(), count.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let seen = Seen {
                            method: parts.method,
                            uri: parts.uri,
                            headers: parts.headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let reply = handler(&seen, n);
                        log.lock().expect("the log is never poisoned").push(seen);
                        match reply {
                            Reply::Answer {
                                status,
                                body,
                                delay,
                            } => {
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                let mut resp = Response::new(Full::new(Bytes::from(body)));
                                *resp.status_mut() = status;
                                Ok::<_, std::io::Error>(resp)
                            }
                            Reply::Drop => Err(std::io::Error::other("dropped on purpose")),
                        }
                    }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Server { addr, seen, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("the log is never poisoned").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server that accepts connections and never answers, never closes.
pub struct Silent {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Silent {
    /// Starts it.
    pub async fn start() -> Silent {
        let (listener, addr) = listen().await;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Silent { addr, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream application whose path says how to answer:
/// `/status/503`, `/sleep/150`, `/sleep/150/status/500`, `/drop` (closes the
/// connection without an answer); anything else is 200.
pub async fn app() -> Server {
    Server::start(|seen, _| {
        let path = seen.uri.path().to_owned();
        if path == "/drop" {
            return Reply::Drop;
        }
        let mut status = 200;
        let mut delay = Duration::ZERO;
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        for pair in parts.chunks(2) {
            match pair {
                ["status", s] => status = s.parse().expect("a status in the path"),
                ["sleep", ms] => delay = Duration::from_millis(ms.parse().expect("ms in the path")),
                _ => {}
            }
        }
        Reply::Answer {
            status: StatusCode::from_u16(status).expect("a valid status"),
            body: "app".into(),
            delay,
        }
    })
    .await
}

/// A coalmine proxy in process, with its admin API and, as the proxy
/// Deployment runs it, a metrics-only listener, in front of `stable` and
/// `canary`; requests with `x-canary: always` go to the canary, all others
/// to stable (weight 0), so tests choose each request's track.
pub struct TestProxy {
    /// The proxy's handle.
    pub proxy: Proxy,
    /// The data port.
    pub addr: SocketAddr,
    /// The admin port (`/metrics`).
    pub admin: SocketAddr,
    /// The metrics-only port (`/metrics`, as `--metrics-listen` serves it).
    pub metrics: SocketAddr,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts the proxy and its admin API.
    pub async fn start(stable: &Server, canary: &Server) -> TestProxy {
        let (metrics, _) = listen().await;
        TestProxy::start_with(stable, canary, metrics).await
    }

    /// Starts a proxy whose metrics-only listener is at `metrics`, e.g.
    /// the address of one that was stopped: a restarted replica.
    pub async fn start_at(stable: &Server, canary: &Server, metrics: SocketAddr) -> TestProxy {
        let listener = TcpListener::bind(metrics)
            .await
            .expect("bind the stopped proxy's metrics address again");
        TestProxy::start_with(stable, canary, listener).await
    }

    async fn start_with(stable: &Server, canary: &Server, metrics: TcpListener) -> TestProxy {
        let routes = serde_json::from_str(
            r#"{"canaryWeight": 0, "headerRoutes": [{"header": "x-canary", "value": "always"}]}"#,
        )
        .expect("a valid route table");
        let proxy = Proxy::new(Config {
            stable: vec![stable.url()],
            canary: vec![canary.url()],
            routes,
            limits: Limits::default(),
            sticky_secret: None,
        })
        .expect("a valid proxy configuration");
        let (listener, addr) = listen().await;
        let (admin_listener, admin) = listen().await;
        let metrics_addr = metrics
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, _) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let data = proxy.clone();
        let shutdown = stopped(stop.subscribe());
        let mut servers = vec![tokio::spawn(async move {
            data.serve(listener, shutdown, Duration::from_secs(1)).await
        })];
        let control = proxy.clone();
        let shutdown = stopped(stop.subscribe());
        servers.push(tokio::spawn(async move {
            control.serve_admin(admin_listener, shutdown).await
        }));
        let scraped = proxy.clone();
        let shutdown = stopped(stop.subscribe());
        servers.push(tokio::spawn(async move {
            scraped.serve_metrics(metrics, shutdown).await
        }));
        TestProxy {
            proxy,
            addr,
            admin,
            metrics: metrics_addr,
            stop,
            servers,
        }
    }

    /// Stops the proxy and waits until its listeners are closed.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for server in std::mem::take(&mut self.servers) {
            let _ = server.await;
        }
    }

    /// The admin API's `/metrics` URL.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin)
    }

    /// The metrics-only listener's `/metrics` URL.
    pub fn replica_url(&self) -> String {
        format!("http://{}/metrics", self.metrics)
    }

    /// Sends `n` GETs of `path` through the proxy to one track, one after
    /// another, and returns when all are answered.
    pub async fn send(&self, client: &TestClient, canary: bool, path: &str, n: usize) {
        for _ in 0..n {
            let mut req = Request::builder().uri(format!("http://{}{path}", self.addr));
            if canary {
                req = req.header("x-canary", "always");
            }
            let req = req.body(Full::new(Bytes::new())).expect("a request");
            let resp = client.request(req).await.expect("the proxy answers");
            let track = resp
                .headers()
                .get("x-coalmine-track")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            assert_eq!(track, if canary { "canary" } else { "stable" });
            let _ = resp.into_body().collect().await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The client tests send traffic with.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1.1 client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .build_http()
}

/// Answers every request on `/metrics` with whatever `text` holds at the time.
pub async fn text_server(text: Arc<Mutex<String>>) -> Server {
    Server::start(move |_, _| Reply::ok(text.lock().expect("never poisoned").clone())).await
}
