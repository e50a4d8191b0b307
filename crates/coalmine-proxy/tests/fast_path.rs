//! The fast path for bodiless `GET`s and `HEAD`s (`coalmine_proxy::h1`)
//! against an upstream that writes raw HTTP/1.1 by script: chunked bodies
//! with trailers, bodies that end with the connection, `HEAD`, 204, 1xx
//! heads, garbage, bodies cut short, keep-alive reuse, and an upstream that
//! closes idle connections (the request is sent again on a new one).
//!
//! Everything runs on 127.0.0.1 ports chosen by the kernel, bounded in time.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use coalmine_proxy::{Config, Limits};
use http::{Method, StatusCode};
use support::{Conn, TestProxy, bounded, dead_url, routes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(30);

/// An upstream that answers each request head with the raw bytes its path
/// names; counts connections and requests.
struct Scripted {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, r.clone()));
            }
        });
        Scripted {
            addr,
            connections,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A complete answer an upstream may send where it should send nothing:
/// if it ever reached a client, one user would get another's answer.
const PLANTED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nSet-Cookie: session=stolen\r\n\r\nplanted";

/// Bytes an upstream sends beyond its answer's framing, for a path: the
/// answer, then [`PLANTED`] at once or, for paths ending in `-late`, a
/// moment later (after the proxy has parsed the answer).
fn beyond(method: &str, path: &str) -> Option<(&'static [u8], bool)> {
    let late = path.ends_with("-late");
    let answer: &'static [u8] = match path.trim_end_matches("-late") {
        "/head-body" if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 84\r\n\r\n",
        "/204-body" => b"HTTP/1.1 204 No Content\r\n\r\n",
        "/304-body" => b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n",
        "/extra" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        _ => return None,
    };
    Some((answer, late))
}

/// What to write for a path, and whether to close afterwards.
fn script(path: &str) -> (&'static [u8], bool) {
    match path {
        // Content-Length and chunked together: the coding wins.
        "/both" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        // A transfer coding on an HTTP/1.0 answer, asking for keep-alive.
        "/te10" => (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        "/plus" => (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", false),
        // The head, then the body breaks off: the upstream crashed.
        "/crash" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
            true,
        ),
        "/ok" | "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
              4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nx-sum: 9\r\n\r\n",
            false,
        ),
        "/close" => (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
            true,
        ),
        "/no-content" => (
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        "/hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints",
            false,
        ),
        "/garbage" => (b"NOT HTTP AT ALL\r\n\r\n", true),
        "/many" => (many_headers(), false),
        "/cut" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true),
        "/then-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true),
        _ => (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
    }
}

/// An answer with 60 headers: more than the parser's first, small table.
fn many_headers() -> &'static [u8] {
    static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ANSWER.get_or_init(|| {
        let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n".to_vec();
        for i in 0..59 {
            a.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        a.extend_from_slice(b"\r\nmany");
        a
    })
}

async fn serve(mut stream: TcpStream, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        // A request body (hyper's path): skipped, by its Content-Length.
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        requests.fetch_add(1, Ordering::SeqCst);
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let path = words.next().unwrap_or_default().to_owned();
        if let Some((answer, late)) = beyond(&method, &path) {
            let sent = if late {
                let first = stream.write_all(answer).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                first.and(stream.write_all(PLANTED).await)
            } else {
                stream.write_all(&[answer, PLANTED].concat()).await
            };
            if sent.is_err() {
                return;
            }
            continue;
        }
        let (answer, close) = script(&path);
        let answer = if method == "HEAD" && path == "/head" {
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..]
        } else {
            answer
        };
        if stream.write_all(answer).await.is_err() || close {
            return;
        }
    }
}

async fn proxy_for(up: &Scripted) -> TestProxy {
    TestProxy::start_with(
        Config {
            stable: vec![up.url()],
            canary: vec![dead_url()],
            routes: routes(r#"{"canaryWeight": 0}"#),
            limits: Limits {
                request_timeout: Duration::from_secs(5),
                ..Limits::default()
            },
            sticky_secret: None,
        },
        Duration::from_secs(1),
    )
    .await
}

#[tokio::test]
async fn framings_come_through_and_connections_are_reused() {
    bounded(LIMIT, async {
        let up = Scripted::start().await;
        let proxy = proxy_for(&up).await;
        let mut client = Conn::open(proxy.addr).await;

        for _ in 0..10 {
            let r = client.get("/ok", &[]).await;
            assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"));
        }
        assert_eq!(up.connections(), 1, "ten GETs, one upstream connection");

        let r = client.get("/chunked", &[("te", "trailers")]).await;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "Wikipedia"));
        let trailers = r.trailers.expect("the upstream's trailers");
        assert_eq!(trailers["x-sum"], "9");

        let r = client.send(Method::HEAD, "/head", &[], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-length"), "5");
        assert!(r.body.is_empty());

        let r = client.get("/no-content", &[]).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);

        let r = client.get("/many", &[]).await;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "many"));
        assert_eq!(r.header("x-h58"), "58");

        let r = client.get("/hints", &[]).await;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "hints"));
        assert_eq!(
            up.connections(),
            2,
            "chunked, 204, many-header and 1xx answers leave the connection reusable; \
             a HEAD answer does not"
        );

        let r = client.get("/close", &[]).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::OK, "until the end")
        );
        let r = client.get("/ok", &[]).await;
        assert_eq!(r.text(), "ok");
        assert_eq!(up.connections(), 3, "a body ended by closing is not reused");
    })
    .await;
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_replaced_transparently() {
    bounded(LIMIT, async {
        let up = Scripted::start().await;
        let proxy = proxy_for(&up).await;
        let mut client = Conn::open(proxy.addr).await;
        for round in 0..5 {
            // The upstream answers, then closes; the proxy only finds out
            // when it next uses the connection.
            let r = client.get("/then-close", &[]).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (StatusCode::OK, "ok"),
                "round {round}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            up.requests.load(Ordering::SeqCst),
            5,
            "each GET reached the upstream once"
        );
        let text = proxy.metrics_text().await;
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("coalmine_requests_total")
                    && l.contains("class=\"error\"")
                    && !l.ends_with(" 0")),
            "no request counted as an error:\n{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn garbage_and_cut_bodies_fail_cleanly() {
    bounded(LIMIT, async {
        let up = Scripted::start().await;
        let proxy = proxy_for(&up).await;

        let r = Conn::open(proxy.addr).await.get("/garbage", &[]).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());

        // A body cut short: the client's connection is closed, never left
        // waiting for the 7 bytes that will not come (hyper drops the
        // connection, with whatever it had not yet flushed).
        let mut raw = TcpStream::connect(proxy.addr).await.unwrap();
        raw.write_all(b"GET /cut HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got)).await;
        assert!(ended.is_ok(), "the connection was left open");
        let got = String::from_utf8_lossy(&got);
        assert!(got.len() < 200, "{got}");
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 200"), "{got}");

        // The proxy still serves.
        let r = Conn::open(proxy.addr).await.get("/ok", &[]).await;
        assert_eq!(r.text(), "ok");
    })
    .await;
}

/// Checks that `count` GETs of `/ok`, each on a new client connection, all
/// get the upstream's own answer and nothing of [`PLANTED`].
async fn all_get_their_own_answer(proxy: &TestProxy, count: usize, after: &str) {
    for i in 0..count {
        let r = Conn::open(proxy.addr).await.get("/ok", &[]).await;
        assert_eq!(
            (r.status, r.text().as_str(), r.header("set-cookie")),
            (StatusCode::OK, "ok", ""),
            "request {i} after {after}"
        );
    }
}

#[tokio::test]
async fn bytes_beyond_an_answers_framing_never_reach_another_request() {
    bounded(LIMIT, async {
        for (method, path) in [
            (Method::HEAD, "/head-body"),
            (Method::HEAD, "/head-body-late"),
            (Method::GET, "/204-body"),
            (Method::GET, "/204-body-late"),
            (Method::GET, "/304-body"),
            (Method::GET, "/304-body-late"),
            (Method::GET, "/extra"),
            (Method::GET, "/extra-late"),
        ] {
            let up = Scripted::start().await;
            let proxy = proxy_for(&up).await;
            let r = Conn::open(proxy.addr)
                .await
                .send(method.clone(), path, &[], Bytes::new())
                .await;
            assert!(r.header("set-cookie").is_empty(), "{method} {path}");
            assert!(!r.text().contains("planted"), "{method} {path}");
            // The late bytes arrive while the connection is idle.
            tokio::time::sleep(Duration::from_millis(150)).await;
            all_get_their_own_answer(&proxy, 5, &format!("{method} {path}")).await;
        }
    })
    .await;
}

#[tokio::test]
async fn bytes_beyond_an_answers_framing_on_hypers_path_never_reach_another_request() {
    bounded(LIMIT, async {
        let up = Scripted::start().await;
        let proxy = proxy_for(&up).await;
        for path in ["/extra", "/extra-late"] {
            // A request with a body goes over hyper's client connection.
            let r = Conn::open(proxy.addr)
                .await
                .send(Method::POST, path, &[], Bytes::from_static(b"x"))
                .await;
            assert_eq!(r.text(), "ok", "POST {path}");
            tokio::time::sleep(Duration::from_millis(150)).await;
            for i in 0..5 {
                let r = Conn::open(proxy.addr)
                    .await
                    .send(Method::POST, "/ok", &[], Bytes::from_static(b"y"))
                    .await;
                assert_eq!(
                    (r.status, r.text().as_str(), r.header("set-cookie")),
                    (StatusCode::OK, "ok", ""),
                    "POST {i} after POST {path}"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn faulty_framings_are_read_as_rfc_9112_says_and_close_the_connection() {
    bounded(LIMIT, async {
        let up = Scripted::start().await;
        let proxy = proxy_for(&up).await;
        let mut client = Conn::open(proxy.addr).await;
        assert_eq!(client.get("/ok", &[]).await.text(), "ok");
        for path in ["/both", "/te10"] {
            let before = up.connections();
            let r = client.get(path, &[]).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (StatusCode::OK, "hello"),
                "{path}"
            );
            let r = client.get("/ok", &[]).await;
            assert_eq!(r.text(), "ok");
            assert_eq!(
                up.connections(),
                before + 1,
                "the connection that carried {path} is not reused"
            );
        }
        let r = client.get("/plus", &[]).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "Content-Length: +2");
    })
    .await;
}
