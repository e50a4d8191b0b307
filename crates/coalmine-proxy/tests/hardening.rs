//! What a careless client or upstream must not be able to do to the proxy
//! or to a rollout: a client's broken upload counted against a version, an
//! answer that breaks after its head counted as a success, a stalled
//! upstream or a silent client holding connections forever, a flood of
//! connections or an oversized head exhausting the process.
//!
//! Everything runs on 127.0.0.1 ports chosen by the kernel, bounded in time.

mod support;

use std::time::{Duration, Instant};

use coalmine_proxy::route::Track;
use coalmine_proxy::{Config, Limits};
use support::{Conn, TestProxy, Upstream, bounded, dead_url, eventually, listen, routes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);

/// A proxy sending everything to `canary` (weight 100), with `limits`.
async fn all_to_canary(canary: String, limits: Limits) -> TestProxy {
    TestProxy::start_with(
        Config {
            stable: vec![dead_url()],
            canary: vec![canary],
            routes: routes(r#"{"canaryWeight": 100}"#),
            limits,
            sticky_secret: None,
        },
        Duration::from_secs(1),
    )
    .await
}

/// Writes `request` on a new connection to `addr`, then reads until the
/// proxy closes it or `wait` passes; what came back.
async fn raw(
    addr: std::net::SocketAddr,
    request: &[u8],
    close_after: bool,
    wait: Duration,
) -> String {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    s.write_all(request).await.expect("write the request");
    if close_after {
        // The client goes away mid-upload.
        drop(s);
        return String::new();
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_clients_broken_upload_is_a_400_and_no_upstream_error() {
    bounded(LIMIT, async {
        let canary = Upstream::start("canary").await;
        let proxy = all_to_canary(canary.url(), Limits::default()).await;

        // A malformed chunked body.
        let got = raw(
            proxy.addr,
            b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
              3\r\nabc\r\nzz\r\nnot a chunk\r\n",
            false,
            Duration::from_secs(3),
        )
        .await;
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 400"),
            "a malformed chunked body: {got}"
        );
        // A client that goes away after part of its body.
        for _ in 0..5 {
            raw(
                proxy.addr,
                b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\npart",
                true,
                Duration::ZERO,
            )
            .await;
        }
        // Give the proxy time to see each failure.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counts = proxy.proxy.metrics().track(Track::Canary).counts();
        assert_eq!(
            (counts[3], counts[4]),
            (0, 0),
            "no 5xx and no error for the canary, whose upstream did nothing wrong: {counts:?}"
        );
        // The canary still serves.
        let r = Conn::open(proxy.addr).await.get("/", &[]).await;
        assert_eq!(r.text(), "canary");
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stalls_mid_upload_is_a_408_and_no_upstream_error() {
    bounded(LIMIT, async {
        let canary = Upstream::start("canary").await;
        let proxy = all_to_canary(
            canary.url(),
            Limits {
                request_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
        )
        .await;
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\npart")
            .await
            .expect("write");
        let mut got = vec![0u8; 200];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        let got = String::from_utf8_lossy(&got[..n]);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert_eq!(
            proxy.proxy.metrics().track(Track::Canary).counts(),
            [0, 0, 1, 0, 0],
            "counted as the client's 4xx, not as an error"
        );
    })
    .await;
}

/// An upstream that answers every request with `head_and_part`, then
/// closes the connection or (`stall`) keeps it open without a byte more.
async fn breaking_upstream(head_and_part: &'static [u8], stall: bool) -> String {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(head_and_part).await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_answer_that_breaks_after_its_head_counts_as_an_error() {
    bounded(LIMIT, async {
        let up = breaking_upstream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
            false,
        )
        .await;
        let proxy = all_to_canary(up, Limits::default()).await;
        let got = raw(
            proxy.addr,
            b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
            false,
            Duration::from_secs(3),
        )
        .await;
        // hyper may drop the client's connection before the head is flushed.
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 200"), "{got}");
        let metrics = proxy.proxy.metrics();
        assert!(
            eventually(Duration::from_secs(2), || {
                metrics.track(Track::Canary).counts() == [0, 0, 0, 0, 1]
            })
            .await,
            "counted {:?}, not as one error",
            metrics.track(Track::Canary).counts()
        );
    })
    .await;
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_off_and_counted_as_an_error() {
    bounded(LIMIT, async {
        let up = breaking_upstream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
            true,
        )
        .await;
        let proxy = all_to_canary(
            up,
            Limits {
                body_idle_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
        )
        .await;
        let start = Instant::now();
        let got = raw(
            proxy.addr,
            b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
            false,
            Duration::from_secs(5),
        )
        .await;
        let took = start.elapsed();
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "the client's connection closed after {took:?}"
        );
        assert_eq!(
            proxy.proxy.metrics().track(Track::Canary).counts(),
            [0, 0, 0, 0, 1]
        );
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_is_cut_off() {
    bounded(LIMIT, async {
        // An upstream with an endless answer; records when its writes fail
        // (the proxy closed the connection).
        let (listener, addr) = listen().await;
        let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<Instant>();
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 64 * 1024];
            while s.write_all(&chunk).await.is_ok() {}
            let _ = cut_tx.send(Instant::now());
        });
        let proxy = all_to_canary(
            format!("http://{addr}"),
            Limits {
                client_write_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
        )
        .await;
        // Asks, then never reads.
        let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
        client
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let start = Instant::now();
        let cut = tokio::time::timeout(Duration::from_secs(10), cut_rx)
            .await
            .expect("the upstream connection was closed within 10 s")
            .expect("the upstream task reports");
        assert!(
            cut.duration_since(start) < Duration::from_secs(8),
            "closed after {:?}",
            cut.duration_since(start)
        );
        drop(client);
    })
    .await;
}

#[tokio::test]
async fn silent_and_idle_clients_are_closed_after_the_header_timeout() {
    bounded(LIMIT, async {
        let canary = Upstream::start("canary").await;
        let proxy = all_to_canary(
            canary.url(),
            Limits {
                header_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
        )
        .await;
        // Never sends a byte.
        let start = Instant::now();
        let got = raw(proxy.addr, b"", false, Duration::from_secs(5)).await;
        let took = start.elapsed();
        assert!(got.is_empty(), "{got}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "a silent connection closed after {took:?}"
        );
        // Half a head.
        let start = Instant::now();
        raw(
            proxy.addr,
            b"GET / HTTP/1.1\r\nhost:",
            false,
            Duration::from_secs(5),
        )
        .await;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "half a head kept open"
        );
        // One answer, then idle.
        let start = Instant::now();
        let got = raw(
            proxy.addr,
            b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
            false,
            Duration::from_secs(5),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "an idle keep-alive connection kept open"
        );
        // One answer, then half a head on the same connection: after a
        // request without a body, and after one with a body.
        for first in [
            &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi",
        ] {
            let start = Instant::now();
            let mut request = first.to_vec();
            request.extend_from_slice(b"GET / HTTP/1.1\r\nhost:");
            let got = raw(proxy.addr, &request, false, Duration::from_secs(5)).await;
            assert!(got.starts_with("HTTP/1.1 200"), "{got}");
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(250) && took < Duration::from_secs(3),
                "half a head after an answer kept open for {took:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_and_are_served_once_a_slot_frees() {
    bounded(LIMIT, async {
        let canary = Upstream::start("canary").await;
        let proxy = all_to_canary(
            canary.url(),
            Limits {
                header_timeout: Duration::from_millis(500),
                max_connections: 2,
                ..Limits::default()
            },
        )
        .await;
        // Two silent connections take both slots.
        let silent: Vec<TcpStream> = vec![
            TcpStream::connect(proxy.addr).await.expect("connect"),
            TcpStream::connect(proxy.addr).await.expect("connect"),
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        let r = Conn::open(proxy.addr).await.get("/", &[]).await;
        let took = start.elapsed();
        assert_eq!(r.text(), "canary");
        assert!(
            took >= Duration::from_millis(300),
            "served after {took:?}, before a slot was free"
        );
        drop(silent);
    })
    .await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    bounded(LIMIT, async {
        let canary = Upstream::start("canary").await;
        let proxy = all_to_canary(canary.url(), Limits::default()).await;
        let mut head = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 100 * 1024));
        head.extend_from_slice(b"\r\n\r\n");
        let got = raw(proxy.addr, &head, false, Duration::from_secs(5)).await;
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 431"),
            "a 100 KiB head: {}",
            &got[..got.len().min(200)]
        );
        assert_eq!(canary.count(), 0, "nothing reached the upstream");
    })
    .await;
}

#[tokio::test]
async fn sticky_cookies_the_proxy_did_not_issue_are_ignored() {
    bounded(LIMIT, async {
        let (stable, canary, proxy) =
            support::setup(r#"{"canaryWeight": 1, "stickyCookie": "coalmine-track"}"#).await;
        let mut conn = Conn::open(proxy.addr).await;
        for forged in [
            "canary",
            "canary.00",
            "canary.0123456789abcdef0123456789abcdef",
        ] {
            for _ in 0..5 {
                let cookie = format!("coalmine-track={forged}");
                let r = conn.get("/", &[("cookie", &cookie)]).await;
                assert_eq!(r.text(), "stable", "{cookie}");
                // A fresh, signed pin replaces the forged one.
                assert!(
                    r.header("set-cookie").starts_with("coalmine-track=stable."),
                    "{}",
                    r.header("set-cookie")
                );
            }
        }
        assert_eq!((stable.count(), canary.count()), (15, 0));
    })
    .await;
}

#[tokio::test]
async fn the_admin_api_refuses_other_hosts_and_cross_site_changes() {
    bounded(LIMIT, async {
        let (_stable, _canary, proxy) = support::setup(r#"{"canaryWeight": 0}"#).await;
        let port = proxy.admin.port();
        let mut c = Conn::open(proxy.admin).await;
        for (host, want) in [
            (format!("evil.example:{port}"), 421),
            ("127.0.0.1:1".to_owned(), 421),
            (format!("localhost:{port}"), 200),
            (format!("127.0.0.1:{port}"), 200),
            (format!("[::1]:{port}"), 200),
        ] {
            let r = c.get("/routes", &[("host", &host)]).await;
            assert_eq!(r.status.as_u16(), want, "Host: {host}");
        }
        let body = bytes::Bytes::from_static(br#"{"canaryWeight": 50}"#);
        let own = format!("http://127.0.0.1:{port}");
        for (method, headers) in [
            (http::Method::PUT, vec![("origin", "http://evil.example")]),
            (http::Method::PUT, vec![("origin", "null")]),
            (http::Method::PUT, vec![("sec-fetch-site", "cross-site")]),
            (http::Method::POST, vec![("content-type", "text/plain")]),
            (
                http::Method::POST,
                vec![("content-type", "application/x-www-form-urlencoded")],
            ),
        ] {
            let r = c.send(method, "/routes", &headers, body.clone()).await;
            assert_eq!(r.status.as_u16(), 403, "{headers:?}");
            assert_eq!(proxy.get_routes().await.canary_weight, 0, "{headers:?}");
        }
        let r = c
            .send(
                http::Method::PUT,
                "/routes",
                &[
                    ("content-type", "application/json"),
                    ("origin", &own),
                    ("sec-fetch-site", "same-origin"),
                ],
                body,
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        assert_eq!(proxy.get_routes().await.canary_weight, 50);
    })
    .await;
}

#[tokio::test]
async fn a_token_guards_the_admin_api_and_metrics_have_their_own_address() {
    bounded(LIMIT, async {
        let canary = Upstream::start("canary").await;
        let proxy = coalmine_proxy::Proxy::new(Config {
            stable: vec![dead_url()],
            canary: vec![canary.url()],
            routes: routes(r#"{"canaryWeight": 0}"#),
            limits: Limits::default(),
            sticky_secret: None,
        })
        .expect("a proxy");
        let (admin, admin_addr) = listen().await;
        let (metrics, metrics_addr) = listen().await;
        let guard = coalmine_proxy::admin::Guard::new(admin_addr, Some("s3cret".into()));
        let p = proxy.clone();
        tokio::spawn(async move {
            p.serve_admin_with(admin, guard, std::future::pending())
                .await
        });
        let p = proxy.clone();
        tokio::spawn(async move { p.serve_metrics(metrics, std::future::pending()).await });

        let mut c = Conn::open(admin_addr).await;
        for (auth, want) in [
            (None, 401),
            (Some("Bearer wrong"), 401),
            (Some("Basic s3cret"), 401),
            (Some("Bearer s3cret"), 200),
        ] {
            let mut headers = vec![("host", "admin.example")];
            headers.extend(auth.map(|a| ("authorization", a)));
            let r = c.get("/routes", &headers).await;
            assert_eq!(r.status.as_u16(), want, "{auth:?}");
        }
        assert_eq!(c.get("/healthz", &[]).await.status.as_u16(), 200);

        let mut m = Conn::open(metrics_addr).await;
        let r = m.get("/metrics", &[]).await;
        assert_eq!(r.status.as_u16(), 200);
        assert!(r.text().contains("coalmine_proxy_requests_total"));
        assert_eq!(m.get("/routes", &[]).await.status.as_u16(), 404);
        let r = m
            .send(
                http::Method::PUT,
                "/routes",
                &[("content-type", "application/json")],
                bytes::Bytes::from_static(br#"{"canaryWeight": 50}"#),
            )
            .await;
        assert_eq!(r.status.as_u16(), 404);
        assert_eq!(proxy.routes().canary_weight, 0);
    })
    .await;
}

#[tokio::test]
async fn ambiguous_request_heads_are_refused_or_made_plain() {
    bounded(LIMIT, async {
        let canary = Upstream::builder("canary").echo_headers().start().await;
        let proxy = all_to_canary(canary.url(), Limits::default()).await;
        for head in [
            &b"GET / HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello",
        ] {
            let got = raw(proxy.addr, head, false, Duration::from_secs(3)).await;
            assert!(
                got.starts_with("HTTP/1.1 400"),
                "{}: {got}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(canary.count(), 0, "neither reached the upstream");

        // Absolute form: the target's authority is the host; forwarding
        // headers are the proxy's own, whatever the client sent.
        raw(
            proxy.addr,
            b"GET http://shop.example/x HTTP/1.1\r\nhost: other.example\r\n\
              x-forwarded-proto: https\r\nx-forwarded-host: evil.example\r\n\
              connection: close\r\n\r\n",
            false,
            Duration::from_secs(3),
        )
        .await;
        let seen = canary.seen();
        let h = &seen
            .last()
            .expect("the request reached the upstream")
            .headers;
        assert_eq!(h["host"], "shop.example");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(seen[0].uri.to_string(), "/x");

        // HTTP/2 cookies in several fields reach an HTTP/1.1 upstream as one.
        let client = support::h2_client();
        let req = http::Request::builder()
            .uri(format!("http://{}/", proxy.addr))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("a request");
        support::fetch(&client, req).await;
        let seen = canary.seen();
        let cookies: Vec<_> = seen
            .last()
            .expect("the h2 request reached the upstream")
            .headers
            .get_all("cookie")
            .iter()
            .cloned()
            .collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    })
    .await;
}

#[tokio::test]
async fn a_sticky_secret_file_makes_cookies_hold_across_replicas_and_restarts() {
    bounded(LIMIT, async {
        let stable = Upstream::start("stable").await;
        let canary = Upstream::start("canary").await;
        let dir = std::env::temp_dir().join(format!("coalmine-sticky-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let file = dir.join("secret");
        std::fs::write(&file, "short\n").expect("write the secret");
        let err = coalmine_proxy::read_sticky_secret(&file).expect_err("too short");
        assert!(
            err.contains("--sticky-secret-file") && err.contains("fewer than 16"),
            "{err}"
        );
        std::fs::write(&file, "  0123456789abcdef0123456789abcdef\n").expect("write the secret");
        let secret = coalmine_proxy::read_sticky_secret(&file).expect("a secret");
        assert_eq!(secret, b"0123456789abcdef0123456789abcdef");
        let _ = std::fs::remove_dir_all(&dir);

        let start = |secret: Option<Vec<u8>>| {
            TestProxy::start_with(
                Config {
                    stable: vec![stable.url()],
                    canary: vec![canary.url()],
                    routes: routes(r#"{"canaryWeight": 50, "stickyCookie": "ct"}"#),
                    limits: Limits::default(),
                    sticky_secret: secret,
                },
                Duration::from_secs(1),
            )
        };
        let a = start(Some(secret.clone())).await;
        // A client pinned to the canary by replica A.
        let mut cookie = None;
        for _ in 0..10 {
            let reply = Conn::open(a.addr).await.get("/", &[]).await;
            if reply.track() == "canary" {
                let set = reply.header("set-cookie");
                cookie = Some(set.split(';').next().unwrap_or_default().to_owned());
                break;
            }
        }
        let cookie = cookie.expect("weight 50 hands out a canary cookie");
        // Replica B (or A restarted) with the same file keeps the pin: 20
        // requests, all to the canary, and no new cookie.
        let b = start(Some(secret)).await;
        let mut conn = Conn::open(b.addr).await;
        for _ in 0..20 {
            let reply = conn.get("/", &[("cookie", cookie.as_str())]).await;
            assert_eq!(reply.track(), "canary");
            assert!(reply.headers.get("set-cookie").is_none());
        }
        // A proxy with a key of its own ignores the cookie: half of the
        // requests go to stable, each with a fresh cookie.
        let c = start(None).await;
        let mut conn = Conn::open(c.addr).await;
        let mut tracks = std::collections::HashSet::new();
        for _ in 0..20 {
            let reply = conn.get("/", &[("cookie", cookie.as_str())]).await;
            assert!(reply.headers.get("set-cookie").is_some());
            tracks.insert(reply.track().to_owned());
        }
        assert_eq!(tracks.len(), 2, "{tracks:?}");
    })
    .await;
}

/// Reads from `s` until `answers` whole chunked answers from the test
/// upstream came (each ends with the last chunk), or fails after 5 s.
async fn read_answers(s: &mut TcpStream, answers: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while String::from_utf8_lossy(&got).matches("0\r\n\r\n").count() < answers {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "{answers} answers expected, got {other:?} after: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn keep_alive_connections_go_on_across_idle_spells_pipelining_and_split_heads() {
    bounded(LIMIT, async {
        let canary = Upstream::start("canary").await;
        let proxy = all_to_canary(canary.url(), Limits::default()).await;
        let get = |n: u32| format!("GET /{n} HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes();
        // Longer than twice the idle time after which a connection lets
        // its buffers go (25 ms).
        let idle = || tokio::time::sleep(Duration::from_millis(600));
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        // One request, an idle spell (the connection lets its buffers
        // go), and another on the same connection.
        for n in 0..3 {
            s.write_all(&get(n)).await.expect("write");
            let got = read_answers(&mut s, 1).await;
            assert!(got.starts_with("HTTP/1.1 200"), "{got}");
            idle().await;
        }
        // A request with the start of the next one behind it: the rest of
        // the next comes after an idle spell.
        let mut two = get(3);
        let next = get(4);
        two.extend_from_slice(&next[..10]);
        s.write_all(&two).await.expect("write");
        read_answers(&mut s, 1).await;
        idle().await;
        s.write_all(&next[10..]).await.expect("write");
        let got = read_answers(&mut s, 1).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        // Three pipelined at once, then a body on the same connection.
        let mut three = get(5);
        three.extend(get(6));
        three.extend(get(7));
        s.write_all(&three).await.expect("write");
        let got = read_answers(&mut s, 3).await;
        assert_eq!(got.matches("HTTP/1.1 200").count(), 3, "{got}");
        idle().await;
        s.write_all(b"POST /8 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .expect("write");
        let got = read_answers(&mut s, 1).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert_eq!(canary.count(), 9, "each request reached the upstream once");
        // After an idle spell, an ambiguous head is still refused, and a
        // `Connection: close` still closes.
        idle().await;
        s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.starts_with("HTTP/1.1 400"), "{rest}");
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        s.write_all(&get(9)).await.expect("write");
        read_answers(&mut s, 1).await;
        idle().await;
        s.write_all(b"GET /10 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.starts_with("HTTP/1.1 200") && rest.ends_with("0\r\n\r\n"),
            "answered, then closed: {rest}"
        );
        assert_eq!(canary.count(), 11);
    })
    .await;
}

/// A request head with one header of `value_len` bytes, and a body of
/// `body` (with its length) when not empty.
fn big_head(path: &str, value_len: usize, body: &[u8]) -> Vec<u8> {
    let method = if body.is_empty() { "GET" } else { "POST" };
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nx-big: ").into_bytes();
    head.extend(std::iter::repeat_n(b'a', value_len));
    if body.is_empty() {
        head.extend_from_slice(b"\r\n\r\n");
    } else {
        head.extend(format!("\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes());
        head.extend_from_slice(body);
    }
    head
}

/// Writes `bytes` in pieces cut at `cuts`, pausing between them so that
/// the proxy reads each piece on its own.
async fn write_in_pieces(s: &mut TcpStream, bytes: &[u8], cuts: &[usize]) {
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        if s.write_all(&bytes[from..cut]).await.is_err() {
            return; // refused, and closed
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        from = cut;
    }
}

#[tokio::test]
async fn large_request_heads_in_pieces_are_served_whole_and_oversized_ones_refused() {
    bounded(LIMIT, async {
        let canary = Upstream::builder("canary").echo_headers().start().await;
        let proxy = all_to_canary(canary.url(), Limits::default()).await;
        let mut served = 0;
        // A 60 KiB head trickled in pieces, its end cut at every place
        // within the empty line that ends it (the proxy holds the head
        // back from 8 KiB on until it sees that line).
        for end in ["\r\n\r\n", "\n\n", "\r\n\n"] {
            let mut head = big_head("/", 60 * 1024, b"");
            head.truncate(head.len() - 4);
            head.extend_from_slice(end.as_bytes());
            for back in 1..=end.len() {
                let cut = head.len() - back;
                let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
                write_in_pieces(&mut s, &head, &[4000, 20_000, 40_000, cut]).await;
                let got = read_answers(&mut s, 1).await;
                assert!(
                    got.starts_with("HTTP/1.1 200"),
                    "end {end:?} cut {back} from it: {got}"
                );
                // (The echo comes back chunked, maybe cut in pieces.)
                let echoed = got.bytes().filter(|&b| b == b'a').count();
                assert!(echoed >= 60 * 1024, "the header went up whole: {echoed}");
                served += 1;
            }
        }
        // On a connection that just had an answer (the same hyper
        // connection), then a head with a body behind it, in one write.
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        s.write_all(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        read_answers(&mut s, 1).await;
        write_in_pieces(
            &mut s,
            &big_head("/second", 30 * 1024, b""),
            &[10_000, 20_000],
        )
        .await;
        let got = read_answers(&mut s, 1).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        let body = vec![b'b'; 20 * 1024];
        s.write_all(&big_head("/third", 30 * 1024, &body))
            .await
            .expect("write");
        let got = read_answers(&mut s, 1).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        served += 3;
        assert_eq!(canary.count(), served);
        let seen = canary.seen();
        let last = seen.last().expect("the last request");
        assert_eq!(last.uri.path(), "/third");
        assert_eq!(last.body.len(), body.len(), "the body went up whole");
        // A head one byte past 64 KiB, trickled and never ended: 431 (all
        // of it read, so the answer is not lost to a reset). Longer ones,
        // trickled or at once: 431, or a reset when the proxy closes with
        // bytes unread.
        let mut head = big_head("/", 64 * 1024, b"");
        head.truncate(64 * 1024 + 1);
        for (head, strict) in [
            (head, true),
            (big_head("/", 70 * 1024, b""), false),
            (big_head("/", 100 * 1024, b""), false),
        ] {
            let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                write_in_pieces(&mut s, &head, &[10_000, 30_000, 50_000, 65_000]),
            )
            .await;
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
            let got = String::from_utf8_lossy(&got);
            assert!(
                got.starts_with("HTTP/1.1 431") || (!strict && got.is_empty()),
                "{} bytes: {got}",
                head.len()
            );
        }
        assert_eq!(canary.count(), served, "nothing more reached the upstream");
    })
    .await;
}
