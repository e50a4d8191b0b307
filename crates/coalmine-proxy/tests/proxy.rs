//! Integration tests of the traffic-splitting proxy over real loopback
//! sockets: the proxy runs in process (`Proxy::new` + `serve`), in front of
//! small test upstreams from [`support`], and is driven by real HTTP/1.1,
//! HTTP/2 (h2c) and WebSocket clients.
//!
//! Every test binds ephemeral ports on 127.0.0.1, is bounded by a timeout and
//! stops its servers by itself.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coalmine_core::routes::Routes;
use coalmine_proxy::route::Track;
use coalmine_proxy::{Config, Limits};
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode, Version};
use http_body_util::Full;
use support::{
    Conn, Reply, TestProxy, Upstream, WsUpstream, bounded, dead_url, eventually, fetch, h2_client,
    routes, setup,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(30);

/// What a batch of requests got back.
#[derive(Debug, Default)]
struct Tally {
    /// Answers per `x-coalmine-track` value.
    by_track: HashMap<String, usize>,
    /// Answers whose body (the upstream's name) differs from the track header.
    mismatched: usize,
    /// Answers that were not 2xx, with their status and body.
    failures: Vec<(StatusCode, String)>,
}

impl Tally {
    fn track(&self, track: &str) -> usize {
        self.by_track.get(track).copied().unwrap_or(0)
    }
}

/// Sends `total` GETs over `connections` keep-alive connections, each
/// connection sending its share one after another; `done` counts answers.
async fn load(
    addr: std::net::SocketAddr,
    connections: usize,
    total: usize,
    done: Arc<AtomicUsize>,
) -> Tally {
    let mut tasks = Vec::new();
    for c in 0..connections {
        let share = total / connections + usize::from(c < total % connections);
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut tally = Tally::default();
            for i in 0..share {
                let reply = conn.get(&format!("/load/{c}/{i}"), &[]).await;
                if !reply.status.is_success() {
                    tally.failures.push((reply.status, reply.text()));
                }
                if reply.text() != reply.track() {
                    tally.mismatched += 1;
                }
                *tally.by_track.entry(reply.track().to_owned()).or_default() += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("a load connection panicked");
        for (k, v) in t.by_track {
            *all.by_track.entry(k).or_default() += v;
        }
        all.mismatched += t.mismatched;
        all.failures.extend(t.failures);
    }
    all
}

/// The value of the sample `series` (name and labels) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The series of the upstream counter for one upstream and class.
fn upstream_series(track: &str, url: &str, class: &str) -> String {
    let labels = format!(r#"track="{track}",upstream="{url}",class="{class}""#);
    format!("coalmine_proxy_upstream_requests_total{{{labels}}}")
}

/// A route table sending `x-canary: always` to the canary, at weight 0.
const X_CANARY_ROUTE: &str = r#"{
    "canaryWeight": 0,
    "headerRoutes": [{"header": "x-canary", "value": "always"}]
}"#;

fn percent(part: usize, total: usize) -> f64 {
    part as f64 * 100.0 / total as f64
}

// 1. Weighted share.
// The bound is generous: a debug build on a busy 2-core machine takes
// 35-50 s for the 40,000 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_share_is_within_one_point_over_20000_requests() {
    bounded(Duration::from_secs(150), async {
        for weight in [10u8, 1] {
            let stable = Upstream::start("stable").await;
            let canary = Upstream::start("canary").await;
            let proxy = TestProxy::start(
                &stable,
                &canary,
                routes(&format!(r#"{{"canaryWeight": {weight}}}"#)),
            )
            .await;
            let total = 20_000;
            let tally = load(proxy.addr, 4, total, Arc::default()).await;
            let first = &tally.failures[..3.min(tally.failures.len())];
            assert!(tally.failures.is_empty(), "{first:?}");
            assert_eq!(tally.mismatched, 0, "body and track header disagree");
            assert_eq!(tally.track("stable") + tally.track("canary"), total);
            let by_header = percent(tally.track("canary"), total);
            let by_upstream = percent(canary.count(), total);
            println!(
                "weight {weight}: canary share {by_header:.2}% by header, \
                 {by_upstream:.2}% by upstream count"
            );
            assert!(
                (by_header - f64::from(weight)).abs() <= 1.0,
                "weight {weight}: canary got {by_header:.2}% by x-coalmine-track"
            );
            assert!(
                (by_upstream - f64::from(weight)).abs() <= 1.0,
                "weight {weight}: canary upstream counted {by_upstream:.2}%"
            );
            assert_eq!(stable.count() + canary.count(), total);
            assert_eq!(canary.count(), tally.track("canary"));
            let counts = proxy.proxy.metrics().track(Track::Canary).counts();
            assert_eq!(counts[0] as usize, canary.count(), "canary 2xx in metrics");
        }
    })
    .await;
}

// 2. Header and cookie routes.
#[tokio::test]
async fn header_and_cookie_routes_send_matches_to_the_canary_at_weight_zero() {
    bounded(LIMIT, async {
        let stable = Upstream::start("stable").await;
        let canary = Upstream::start("canary").await;
        let proxy = TestProxy::start(
            &stable,
            &canary,
            routes(
                r#"{"canaryWeight": 0, "headerRoutes": [
                    {"header": "x-canary", "value": "always"},
                    {"header": "x-user", "regex": "^beta-[0-9]+$"},
                    {"cookie": "beta", "value": "yes"},
                    {"cookie": "group", "regex": "^(qa|dev)$"}
                ]}"#,
            ),
        )
        .await;
        let mut conn = Conn::open(proxy.addr).await;
        let matching: &[&[(&str, &str)]] = &[
            &[("x-canary", "always")],
            &[("X-Canary", "always")],
            &[("x-canary", "never"), ("x-canary", "always")],
            &[("x-user", "beta-17")],
            &[("cookie", "beta=yes")],
            &[("cookie", "a=1; beta=yes; b=2")],
            &[("cookie", "group=qa")],
            &[("cookie", "session=xyz"), ("cookie", "group=dev")],
        ];
        for headers in matching {
            let reply = conn.get("/", headers).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                (reply.track(), reply.text().as_str()),
                ("canary", "canary"),
                "{headers:?}"
            );
        }
        let other: &[&[(&str, &str)]] = &[
            &[],
            &[("x-canary", "never")],
            &[("x-canary", "Always")],
            &[("x-canary", "always-not")],
            &[("x-user", "beta-x")],
            &[("x-user", "alpha-1")],
            &[("x-beta", "yes")],
            &[("cookie", "beta=no")],
            &[("cookie", "notbeta=yes")],
            &[("cookie", "group=prod")],
            &[("cookie", "group=qa2")],
        ];
        for headers in other {
            let reply = conn.get("/", headers).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                (reply.track(), reply.text().as_str()),
                ("stable", "stable"),
                "{headers:?}"
            );
        }
        assert_eq!(canary.count(), matching.len());
        assert_eq!(stable.count(), other.len());
    })
    .await;
}

// 3. Sticky cookie.
#[tokio::test]
async fn sticky_cookie_pins_clients_to_the_track_that_first_answered() {
    bounded(LIMIT, async {
        let (stable, canary, proxy) =
            setup(r#"{"canaryWeight": 50, "stickyCookie": "coalmine-track"}"#).await;
        // New clients until one of each track has been handed a cookie.
        let mut cookies: HashMap<String, String> = HashMap::new();
        for _ in 0..10 {
            let reply = Conn::open(proxy.addr).await.get("/", &[]).await;
            assert_eq!(reply.status, StatusCode::OK);
            let set = reply.header("set-cookie");
            let pair = set.split(';').next().unwrap_or_default();
            assert!(
                pair.starts_with(&format!("coalmine-track={}.", reply.track())),
                "first answer sets the signed sticky cookie: {set:?}"
            );
            cookies.insert(reply.track().to_owned(), pair.to_owned());
            if cookies.len() == 2 {
                break;
            }
        }
        assert_eq!(
            cookies.len(),
            2,
            "weight 50 hands out both tracks: {cookies:?}"
        );
        for (track, cookie) in &cookies {
            let (stable_before, canary_before) = (stable.count(), canary.count());
            let mut conn = Conn::open(proxy.addr).await;
            for i in 0..40 {
                let with_others = format!("theme=dark; {cookie}; lang=en");
                let header = if i % 2 == 0 {
                    cookie.as_str()
                } else {
                    with_others.as_str()
                };
                let reply = conn.get("/", &[("cookie", header)]).await;
                assert_eq!(reply.status, StatusCode::OK);
                assert_eq!(
                    (reply.track(), reply.text().as_str()),
                    (track.as_str(), track.as_str())
                );
            }
            let (to_stable, to_canary) = (
                stable.count() - stable_before,
                canary.count() - canary_before,
            );
            match track.as_str() {
                "stable" => assert_eq!((to_stable, to_canary), (40, 0)),
                _ => assert_eq!((to_stable, to_canary), (0, 40)),
            }
        }
    })
    .await;
}

// 4a. Mirroring everything.
#[tokio::test]
async fn mirror_100_copies_every_stable_request_to_the_canary() {
    bounded(LIMIT, async {
        let (stable, canary, proxy) = setup(r#"{"canaryWeight": 0, "mirrorPercent": 100}"#).await;
        let mut conn = Conn::open(proxy.addr).await;
        for i in 0..100 {
            let reply = conn.get(&format!("/m/{i}"), &[]).await;
            assert_eq!((reply.status, reply.track()), (StatusCode::OK, "stable"));
            assert_eq!(reply.text(), "stable", "the client gets the stable answer");
        }
        assert_eq!(stable.count(), 100);
        let mirrored = canary
            .settled_count(Duration::from_millis(300), Duration::from_secs(10))
            .await;
        assert_eq!(mirrored, 100);
        assert_eq!(proxy.proxy.metrics().mirrored.get(), 100);
        let mut paths: Vec<String> = canary
            .seen()
            .iter()
            .map(|s| s.uri.path().to_owned())
            .collect();
        paths.sort();
        let mut expected: Vec<String> = (0..100).map(|i| format!("/m/{i}")).collect();
        expected.sort();
        assert_eq!(
            paths, expected,
            "each request mirrored once, to the same path"
        );
    })
    .await;
}

// 4b. Mirroring half.
#[tokio::test]
async fn mirror_50_copies_exactly_half() {
    bounded(LIMIT, async {
        let (stable, canary, proxy) = setup(r#"{"canaryWeight": 0, "mirrorPercent": 50}"#).await;
        let mut conn = Conn::open(proxy.addr).await;
        for _ in 0..200 {
            let reply = conn.get("/", &[]).await;
            assert_eq!(
                (reply.status, reply.text().as_str()),
                (StatusCode::OK, "stable")
            );
        }
        let mirrored = canary
            .settled_count(Duration::from_millis(300), Duration::from_secs(10))
            .await;
        assert_eq!((stable.count(), mirrored), (200, 100));
    })
    .await;
}

// 4c. The client never waits for mirrors.
#[tokio::test]
async fn a_slow_mirror_target_does_not_slow_the_client() {
    bounded(LIMIT, async {
        let stable = Upstream::start("stable").await;
        let canary = Upstream::builder("canary")
            .delay(Duration::from_secs(2))
            .start()
            .await;
        let proxy = TestProxy::start(
            &stable,
            &canary,
            routes(r#"{"canaryWeight": 0, "mirrorPercent": 100}"#),
        )
        .await;
        let mut conn = Conn::open(proxy.addr).await;
        let all = Instant::now();
        for i in 0..20 {
            let start = Instant::now();
            let reply = conn.get(&format!("/fast/{i}"), &[]).await;
            let took = start.elapsed();
            assert_eq!(
                (reply.status, reply.text().as_str()),
                (StatusCode::OK, "stable")
            );
            assert!(
                took < Duration::from_millis(800),
                "request {i} took {took:?}"
            );
        }
        // Waiting for even one mirror would take 2 s.
        assert!(
            all.elapsed() < Duration::from_secs(2),
            "20 requests took {:?}",
            all.elapsed()
        );
        // The copies did arrive (the canary counts before it sleeps).
        assert!(
            eventually(Duration::from_secs(5), || canary.count() == 20).await,
            "canary saw {} mirrored requests",
            canary.count()
        );
    })
    .await;
}

// 4d. Bodies are mirrored.
#[tokio::test]
async fn a_post_is_mirrored_with_the_same_body() {
    bounded(LIMIT, async {
        let (stable, canary, proxy) = setup(r#"{"canaryWeight": 0, "mirrorPercent": 100}"#).await;
        let body = r#"{"order": 42, "items": ["coal", "canary seed"]}"#;
        let reply = Conn::open(proxy.addr)
            .await
            .send(
                Method::POST,
                "/orders?src=test",
                &[("content-type", "application/json")],
                Bytes::from_static(body.as_bytes()),
            )
            .await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "stable")
        );
        assert!(eventually(Duration::from_secs(5), || canary.count() == 1).await);
        for (who, up) in [("stable", &stable), ("canary", &canary)] {
            let seen = up.seen();
            assert_eq!(seen.len(), 1, "{who}");
            let req = &seen[0];
            assert_eq!(req.method, Method::POST, "{who}");
            assert_eq!(
                req.uri.path_and_query().map(|p| p.as_str()),
                Some("/orders?src=test"),
                "{who}"
            );
            assert_eq!(req.body, body.as_bytes(), "{who} got the body");
            assert_eq!(req.headers["content-type"], "application/json", "{who}");
        }
    })
    .await;
}

// 5. h2c and gRPC-style trailers.
#[tokio::test]
async fn h2c_grpc_exchange_carries_trailers_end_to_end() {
    bounded(LIMIT, async {
        let stable = Upstream::builder("stable").grpc().start().await;
        let canary = Upstream::builder("canary").grpc().start().await;
        let proxy = TestProxy::start(&stable, &canary, routes(X_CANARY_ROUTE)).await;
        let client = h2_client();
        // A gRPC message: uncompressed flag, big-endian length, payload.
        let payload = b"\x0a\x05world";
        let mut message = vec![0u8];
        message.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        message.extend_from_slice(payload);
        for (canary_header, track) in [(None, "stable"), (Some("always"), "canary")] {
            let mut req = Request::builder()
                .method(Method::POST)
                .version(Version::HTTP_2)
                .uri(format!("http://{}/helloworld.Greeter/SayHello", proxy.addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            if let Some(v) = canary_header {
                req = req.header("x-canary", v);
            }
            let req = req.body(Full::new(Bytes::from(message.clone()))).unwrap();
            let reply = fetch(&client, req).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.track(), track);
            assert_eq!(reply.header("content-type"), "application/grpc");
            assert_eq!(reply.body, message, "the data frame comes back");
            let trailers = reply
                .trailers
                .as_ref()
                .expect("the client receives trailers");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["grpc-message"], "ok");
        }
        for up in [&stable, &canary] {
            let seen = up.seen();
            assert_eq!(seen.len(), 1, "{}", up.name());
            assert_eq!(seen[0].version, Version::HTTP_2, "h2c to the upstream");
            assert_eq!(seen[0].headers["te"], "trailers");
            assert_eq!(seen[0].headers["content-type"], "application/grpc");
            assert_eq!(seen[0].uri.path(), "/helloworld.Greeter/SayHello");
            assert_eq!(seen[0].body, message);
        }
    })
    .await;
}

// 5b. h2c clients in front of HTTP/1.1 upstreams.
#[tokio::test]
async fn h2c_client_reaches_an_http1_only_upstream() {
    bounded(LIMIT, async {
        let stable = Upstream::builder("stable").http1_only().start().await;
        let canary = Upstream::builder("canary").http1_only().start().await;
        let proxy = TestProxy::start(&stable, &canary, routes(r#"{"canaryWeight": 0}"#)).await;
        // The same upstream serves an HTTP/1.1 client through the proxy...
        let reply = Conn::open(proxy.addr).await.get("/", &[]).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "stable")
        );
        // ...but not an h2c one.
        let req = Request::builder()
            .uri(format!("http://{}/", proxy.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = fetch(&h2_client(), req).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "stable"),
            "h2c client, HTTP/1.1 upstream"
        );
    })
    .await;
}

// 6. WebSocket.
#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    bounded(LIMIT, async {
        let ws_upstream = WsUpstream::start().await;
        let canary = Upstream::start("canary").await;
        let proxy = TestProxy::start_with(
            Config {
                stable: vec![ws_upstream.url()],
                canary: vec![canary.url()],
                routes: routes(r#"{"canaryWeight": 0}"#),
                limits: Limits::default(),
                sticky_secret: None,
            },
            Duration::from_secs(1),
        )
        .await;
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut ws, resp) =
            tokio_tungstenite::client_async(format!("ws://{}/echo", proxy.addr), stream)
                .await
                .expect("WebSocket handshake through the proxy");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()["x-coalmine-track"], "stable");
        for i in 0..10 {
            let text = format!("hello {i} {}", "x".repeat(i * 100));
            ws.send(Message::text(text.clone())).await.unwrap();
            let echo = ws.next().await.expect("an echo").expect("a frame");
            assert_eq!(echo, Message::text(text));
        }
        let binary = Bytes::from_static(&[0, 1, 2, 254, 255]);
        ws.send(Message::binary(binary.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(binary));
        ws.close(None).await.unwrap();
        assert_eq!(ws_upstream.connections(), 1);
        assert_eq!(canary.count(), 0);
    })
    .await;
}

// 7. Request timeout.
#[tokio::test]
async fn a_slow_upstream_gives_504_counted_as_error() {
    bounded(LIMIT, async {
        let stable = Upstream::builder("stable")
            .delay(Duration::from_secs(2))
            .start()
            .await;
        let canary = Upstream::start("canary").await;
        let proxy = TestProxy::start_with(
            Config {
                stable: vec![stable.url()],
                canary: vec![canary.url()],
                routes: routes(r#"{"canaryWeight": 0}"#),
                limits: Limits {
                    request_timeout: Duration::from_millis(300),
                    ..Limits::default()
                },
                sticky_secret: None,
            },
            Duration::from_secs(1),
        )
        .await;
        let start = Instant::now();
        let reply = Conn::open(proxy.addr).await.get("/slow", &[]).await;
        let took = start.elapsed();
        assert_eq!(
            reply.status,
            StatusCode::GATEWAY_TIMEOUT,
            "{}",
            reply.text()
        );
        assert_eq!(reply.track(), "stable");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "504 after {took:?}"
        );
        let metrics = proxy.proxy.metrics();
        assert_eq!(metrics.track(Track::Stable).counts(), [0, 0, 0, 0, 1]);
        assert_eq!(metrics.track(Track::Canary).counts(), [0, 0, 0, 0, 0]);
        let text = proxy.metrics_text().await;
        let series = r#"coalmine_proxy_requests_total{track="stable",class="error"}"#;
        assert_eq!(sample(&text, series), Some(1.0), "{series} in\n{text}");
        let series = upstream_series("stable", &stable.url(), "error");
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in\n{text}");
    })
    .await;
}

// 8. Dead upstream.
#[tokio::test]
async fn a_dead_upstream_gives_502_counted_as_error() {
    bounded(LIMIT, async {
        let stable = Upstream::start("stable").await;
        let dead = dead_url();
        let proxy = TestProxy::start_with(
            Config {
                stable: vec![stable.url()],
                canary: vec![dead.clone()],
                routes: routes(X_CANARY_ROUTE),
                limits: Limits {
                    connect_timeout: Duration::from_millis(500),
                    ..Limits::default()
                },
                sticky_secret: None,
            },
            Duration::from_secs(1),
        )
        .await;
        let mut conn = Conn::open(proxy.addr).await;
        let reply = conn.get("/", &[("x-canary", "always")]).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
        assert_eq!(reply.track(), "canary");
        // The stable track is unaffected, on the same client connection.
        let reply = conn.get("/", &[]).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "stable")
        );
        let metrics = proxy.proxy.metrics();
        assert_eq!(metrics.track(Track::Canary).counts(), [0, 0, 0, 0, 1]);
        assert_eq!(metrics.track(Track::Stable).counts(), [1, 0, 0, 0, 0]);
        let text = proxy.metrics_text().await;
        let series = upstream_series("canary", &dead, "error");
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in\n{text}");
        let series = r#"coalmine_proxy_requests_total{track="canary",class="error"}"#;
        assert_eq!(sample(&text, series), Some(1.0), "{series} in\n{text}");
    })
    .await;
}

// 9. /metrics passes promtool.
#[tokio::test]
async fn metrics_pass_promtool_and_have_the_brief_names() {
    bounded(LIMIT, async {
        let stable = Upstream::start("stable").await;
        let canary = Upstream::builder("canary")
            .status(StatusCode::CREATED)
            .start()
            .await;
        let proxy = TestProxy::start(
            &stable,
            &canary,
            routes(
                r#"{"canaryWeight": 10, "mirrorPercent": 100,
                    "headerRoutes": [{"header": "x-canary", "value": "always"}]}"#,
            ),
        )
        .await;
        let mut conn = Conn::open(proxy.addr).await;
        for _ in 0..5 {
            assert_eq!(
                conn.get("/", &[("x-canary", "always")]).await.track(),
                "canary"
            );
            assert_eq!(conn.get("/", &[]).await.status, StatusCode::OK);
        }
        let text = proxy.metrics_text().await;
        for needle in [
            "coalmine_proxy_requests_total{track=\"canary\",class=\"2xx\"}",
            "coalmine_proxy_requests_total{track=\"stable\",class=\"2xx\"}",
            "# TYPE coalmine_proxy_request_duration_seconds histogram",
            "coalmine_proxy_request_duration_seconds_bucket{le=\"+Inf\",track=\"canary\"}",
            "coalmine_proxy_request_duration_seconds_sum{track=\"stable\"}",
            "coalmine_proxy_request_duration_seconds_count{track=\"stable\"}",
            "coalmine_proxy_route_weight{track=\"canary\"} 10",
            "coalmine_proxy_route_weight{track=\"stable\"} 90",
            "coalmine_proxy_mirrored_requests_total",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        let series = r#"coalmine_proxy_requests_total{track="canary",class="2xx"}"#;
        let canary_2xx = sample(&text, series).expect("the canary 2xx sample");
        // Five by header route, plus whatever the 10% weight sent.
        assert!(canary_2xx >= 5.0, "{series} {canary_2xx}");
        let promtool = std::path::Path::new("/usr/bin/promtool");
        assert!(
            promtool.exists(),
            "/usr/bin/promtool is missing: install Prometheus's promtool to run this test"
        );
        let mut child = tokio::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}\nstdout: {}\nstderr: {}\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

// 9b. The exposition's Content-Type matches its format.
#[tokio::test]
async fn metrics_content_type_matches_the_exposition_format() {
    bounded(LIMIT, async {
        let (_stable, _canary, proxy) = setup(r#"{"canaryWeight": 0}"#).await;
        let reply = Conn::open(proxy.admin).await.get("/metrics", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        let content_type = reply.header("content-type");
        let text = reply.text();
        let classic =
            content_type.starts_with("text/plain") && content_type.contains("version=0.0.4");
        let openmetrics =
            content_type.starts_with("application/openmetrics-text") && text.ends_with("# EOF\n");
        assert!(
            classic || openmetrics,
            "Content-Type `{content_type}` does not describe the body, which {} with `# EOF`",
            if text.ends_with("# EOF\n") {
                "ends"
            } else {
                "does not end"
            }
        );
    })
    .await;
}

// 10. Admin API.
#[tokio::test]
async fn admin_api_reads_changes_and_refuses_bad_route_tables() {
    bounded(LIMIT, async {
        let stable = Upstream::start("stable").await;
        let canary = Upstream::start("canary").await;
        let initial = routes(r#"{"canaryWeight": 0}"#);
        let proxy = TestProxy::start(&stable, &canary, initial.clone()).await;
        let mut admin = Conn::open(proxy.admin).await;

        let health = admin.get("/healthz", &[]).await;
        assert_eq!(
            (health.status, health.text().as_str()),
            (StatusCode::OK, "ok\n")
        );
        assert_eq!(proxy.get_routes().await, initial);
        let raw = admin.get("/routes", &[]).await;
        assert_eq!(raw.header("content-type"), "application/json");
        let json: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
        assert_eq!(json["canaryWeight"], 0);

        let mut data = Conn::open(proxy.addr).await;
        assert_eq!(data.get("/", &[]).await.track(), "stable");

        let valid = r#"{
            "canaryWeight": 100,
            "headerRoutes": [{"cookie": "beta", "regex": "^yes$"}],
            "mirrorPercent": 0,
            "stickyCookie": "coalmine-track"
        }"#;
        let put = proxy.put_routes(valid).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.text());
        let expected = routes(valid);
        assert_eq!(
            serde_json::from_slice::<Routes>(&put.body).unwrap(),
            expected
        );
        assert_eq!(proxy.get_routes().await, expected);
        assert_eq!(proxy.proxy.routes(), expected);
        for _ in 0..10 {
            let reply = data.get("/", &[]).await;
            assert_eq!((reply.track(), reply.text().as_str()), ("canary", "canary"));
        }

        let bad: &[(&str, &[&str])] = &[
            (
                r#"{"canaryWeight": 140}"#,
                &["canaryWeight", "140 is above 100"],
            ),
            (
                r#"{"canaryWeight": 10, "mirrorPercent": 101}"#,
                &["mirrorPercent"],
            ),
            (r#"{"canaryWeight": 10, "bogus": true}"#, &["bogus"]),
            (
                r#"{"canaryWeight": 10,
                    "headerRoutes": [{"header": "x-canary", "value": "a", "regx": "b"}]}"#,
                &["regx"],
            ),
            (
                r#"{"canaryWeight": 10, "headerRoutes": [{"header": "x-canary", "regex": "("}]}"#,
                &["headerRoutes[0].regex", "not a regular expression"],
            ),
            (
                r#"{"canaryWeight": 10, "headerRoutes": [{"header": "x-canary"}]}"#,
                &["headerRoutes[0]", "value"],
            ),
            (
                r#"{"canaryWeight": 10, "stickyCookie": "a b"}"#,
                &["stickyCookie"],
            ),
            (r#"{"headerRoutes": []}"#, &["canaryWeight"]),
            ("this is not JSON", &["invalid routes"]),
            ("", &["invalid routes"]),
        ];
        for (body, reasons) in bad {
            let reply = proxy.put_routes(body).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "PUT {body}: {}",
                reply.text()
            );
            for reason in *reasons {
                assert!(
                    reply.text().contains(reason),
                    "PUT {body}: `{}` lacks `{reason}`",
                    reply.text()
                );
            }
            assert_eq!(
                proxy.get_routes().await,
                expected,
                "a refused PUT {body} changed nothing"
            );
        }
        // Still routing by the last valid table.
        assert_eq!(data.get("/", &[]).await.track(), "canary");

        let wrong_method = admin
            .send(Method::DELETE, "/routes", &[], Bytes::new())
            .await;
        assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(admin.get("/nope", &[]).await.status, StatusCode::NOT_FOUND);

        // Back to stable through the API.
        let put = proxy.put_routes(r#"{"canaryWeight": 0}"#).await;
        assert_eq!(put.status, StatusCode::OK);
        assert_eq!(data.get("/", &[]).await.track(), "stable");
    })
    .await;
}

// 10b. Type errors name their field.
#[tokio::test]
async fn admin_api_type_errors_name_the_field() {
    bounded(LIMIT, async {
        let (_stable, _canary, proxy) = setup(r#"{"canaryWeight": 0}"#).await;
        let mut unnamed = Vec::new();
        for (body, field) in [
            (r#"{"canaryWeight": 300}"#, "canaryWeight"),
            (r#"{"canaryWeight": -1}"#, "canaryWeight"),
            (r#"{"canaryWeight": "ten"}"#, "canaryWeight"),
            (
                r#"{"canaryWeight": 1, "mirrorPercent": 1000}"#,
                "mirrorPercent",
            ),
            (
                r#"{"canaryWeight": 1, "headerRoutes": [{"header": 7, "value": "a"}]}"#,
                "header",
            ),
        ] {
            let reply = proxy.put_routes(body).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST);
            let text = reply.text();
            // The reason proper, without the trailing example.
            let reason = text.split("; expected e.g.").next().unwrap_or_default();
            if !reason.contains(field) {
                unnamed.push(format!(
                    "PUT {body}: reason `{reason}` does not name `{field}`"
                ));
            }
        }
        assert!(unnamed.is_empty(), "{}", unnamed.join("\n"));
    })
    .await;
}

// 11. Route changes under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_changes_during_load_lose_no_request() {
    bounded(Duration::from_secs(150), async {
        let (stable, canary, proxy) = setup(r#"{"canaryWeight": 0}"#).await;
        let total = 20_000;
        let done = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        let admin = {
            let done = done.clone();
            let finished = finished.clone();
            let admin = proxy.admin;
            tokio::spawn(async move {
                let mut conn = Conn::open(admin).await;
                let mut statuses = Vec::new();
                let mut during_load = 0;
                for i in 0..100usize {
                    let weight = (i * 37) % 101;
                    let body = format!(
                        r#"{{"canaryWeight": {weight}, "mirrorPercent": {}}}"#,
                        i % 3
                    );
                    let reply = conn
                        .send(Method::PUT, "/routes", &[], Bytes::from(body))
                        .await;
                    statuses.push((weight, reply.status, reply.text()));
                    if !finished.load(Ordering::Relaxed) {
                        during_load += 1;
                    }
                    // Spread the changes over the run.
                    let next = (i + 1) * total / 110;
                    while done.load(Ordering::Relaxed) < next && !finished.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                (statuses, during_load)
            })
        };
        let tally = load(proxy.addr, 32, total, done.clone()).await;
        finished.store(true, Ordering::Relaxed);
        let (statuses, during_load) = admin.await.unwrap();
        assert!(
            tally.failures.is_empty(),
            "{} failed, e.g. {:?}",
            tally.failures.len(),
            tally.failures.first()
        );
        assert_eq!(tally.mismatched, 0);
        assert_eq!(tally.track("stable") + tally.track("canary"), total);
        // Mirror copies are delivered in the background; wait for them.
        let mirrored = proxy.proxy.metrics().mirrored.get() as usize;
        assert!(
            eventually(Duration::from_secs(10), || stable.count() + canary.count()
                == total + mirrored)
            .await,
            "upstreams saw {} requests, expected {total} plus {mirrored} mirrored",
            stable.count() + canary.count()
        );
        for (weight, status, text) in &statuses {
            assert_eq!(*status, StatusCode::OK, "PUT weight {weight}: {text}");
        }
        assert_eq!(statuses.len(), 100);
        println!(
            "{} stable, {} canary; {during_load} of 100 PUTs while the load ran",
            tally.track("stable"),
            tally.track("canary")
        );
        assert!(
            during_load >= 90,
            "only {during_load} PUTs overlapped the load"
        );
        assert_eq!(
            proxy.get_routes().await.canary_weight,
            ((99 * 37) % 101) as u8
        );
    })
    .await;
}

// 12. Graceful shutdown.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    bounded(LIMIT, async {
        let stable = Upstream::builder("stable")
            .delay(Duration::from_secs(1))
            .start()
            .await;
        let canary = Upstream::start("canary").await;
        let mut proxy = TestProxy::start_with(
            Config {
                stable: vec![stable.url()],
                canary: vec![canary.url()],
                routes: routes(r#"{"canaryWeight": 0}"#),
                limits: Limits::default(),
                sticky_secret: None,
            },
            Duration::from_secs(10),
        )
        .await;
        let addr = proxy.addr;
        // An idle keep-alive connection, which shutdown must close, not wait for.
        let mut idle = Conn::open(addr).await;
        assert_eq!(idle.get("/warm-up", &[]).await.status, StatusCode::OK);
        let in_flight = tokio::spawn(async move { Conn::open(addr).await.get("/slow", &[]).await });
        assert!(eventually(Duration::from_secs(5), || stable.count() == 2).await);
        let served = proxy.served();
        let shutdown_at = Instant::now();
        proxy.shutdown();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = TcpStream::connect(addr).await;
        assert!(
            matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "a new connection after shutdown: {refused:?}"
        );
        assert!(
            !in_flight.is_finished(),
            "the slow request is still in flight"
        );
        let reply: Reply = in_flight.await.unwrap();
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "stable")
        );
        served.await.unwrap();
        let drained = shutdown_at.elapsed();
        assert!(
            drained < Duration::from_secs(3),
            "serve() returned {drained:?} after shutdown (grace 10 s): \
             idle connections were waited for"
        );
        let after = idle
            .try_send(
                Request::builder()
                    .uri("/late")
                    .header("host", addr.to_string())
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert!(after.is_err(), "the idle connection was closed: {after:?}");
    })
    .await;
}

// 13. Hop-by-hop and forwarding headers.
#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarding_headers_set() {
    bounded(LIMIT, async {
        let stable = Upstream::builder("stable")
            .echo_headers()
            .response_header("x-resp-secret", "1")
            .response_header("connection", "x-resp-secret")
            .response_header("keep-alive", "timeout=5")
            .start()
            .await;
        let canary = Upstream::start("canary").await;
        let proxy = TestProxy::start(&stable, &canary, routes(r#"{"canaryWeight": 0}"#)).await;
        let mut conn = Conn::open(proxy.addr).await;
        let reply = conn
            .get(
                "/hdr",
                &[
                    ("host", "shop.example"),
                    ("connection", "x-secret"),
                    ("x-secret", "1"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"),
                    ("x-kept", "yes"),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.track(), "stable");
        assert_eq!(reply.header("x-upstream"), "stable");
        for gone in ["x-resp-secret", "keep-alive"] {
            assert!(
                !reply.headers.contains_key(gone),
                "response still has {gone}: {:?}",
                reply.headers
            );
        }
        assert!(
            !reply.header("connection").contains("x-resp-secret"),
            "response connection header: {:?}",
            reply.headers
        );
        let echoed: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        for gone in ["x-secret", "keep-alive", "proxy-connection"] {
            assert!(echoed.get(gone).is_none(), "upstream got {gone}: {echoed}");
        }
        let connection = echoed
            .get("connection")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        assert!(
            !connection.contains("x-secret"),
            "upstream got connection: {connection}"
        );
        assert_eq!(echoed["x-kept"], "yes");
        assert_eq!(echoed["x-forwarded-for"], "127.0.0.1");
        assert_eq!(echoed["x-forwarded-proto"], "http");
        assert_eq!(echoed["x-forwarded-host"], "shop.example");

        // An existing chain is extended; the upstream's own log agrees.
        let reply = conn.get("/hdr", &[("x-forwarded-for", "10.1.2.3")]).await;
        assert_eq!(reply.track(), "stable");
        let seen = stable.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
        assert_eq!(seen[1].headers["x-forwarded-host"], proxy.addr.to_string());
        assert!(!seen[0].headers.contains_key("x-secret"));
    })
    .await;
}
