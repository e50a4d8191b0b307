//! The webhook provider against small JSON servers on loopback: GET and
//! POST, templating, selectors, unusable answers, retries, timeouts and
//! refused connections.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coalmine_analysis::eprocess::Interval;
use coalmine_analysis::judge::Observed;
use coalmine_core::plan::{Check, MetricPlan, Provider};
use coalmine_core::spec::{HttpMethod, WebhookProvider};
use coalmine_providers::{Context, MetricSource};
use support::{Reply, Server, Silent, bounded, free_port};

const LIMIT: Duration = Duration::from_secs(30);

fn ctx() -> Context {
    Context {
        name: "myapp".into(),
        namespace: "shop".into(),
        interval: Duration::from_secs(90),
    }
}

fn provider(url: String) -> WebhookProvider {
    WebhookProvider {
        url,
        method: None,
        body: None,
        headers: BTreeMap::new(),
        timeout: None,
        total: None,
        bad: None,
        value: None,
    }
}

fn compare(w: WebhookProvider, total: &str, bad: &str) -> MetricSource {
    let plan = MetricPlan {
        name: "hook".into(),
        provider: Provider::Webhook(WebhookProvider {
            total: Some(total.into()),
            bad: Some(bad.into()),
            ..w
        }),
        check: Check::Compare { max_ratio: 1.0 },
    };
    MetricSource::new(&plan, None).expect("a webhook source")
}

fn threshold(w: WebhookProvider, value: &str) -> MetricSource {
    let plan = MetricPlan {
        name: "hook".into(),
        provider: Provider::Webhook(WebhookProvider {
            value: Some(value.into()),
            ..w
        }),
        check: Check::Threshold {
            min: None,
            max: Some(1.0),
            failure_limit: 1,
        },
    };
    MetricSource::new(&plan, None).expect("a webhook source")
}

fn no_data(o: Observed) -> String {
    match o {
        Observed::NoData(why) => why,
        other => panic!("expected NoData, got {other:?}"),
    }
}

#[tokio::test]
async fn get_per_track_with_templates_and_headers() {
    bounded(LIMIT, async {
        let server = Server::start(|seen, _| match seen.query("track").as_deref() {
            Some("canary") => Reply::ok(r#"{"data": {"total": 100, "bad": [3, 9]}}"#),
            Some("stable") => Reply::ok(r#"{"data": {"total": "200", "bad": [1]}}"#),
            _ => Reply::status(400, "which track?"),
        })
        .await;
        let mut w = provider(format!(
            "{}/stats/{{{{name}}}}?track={{{{track}}}}&window={{{{ interval }}}}&ns={{{{namespace}}}}",
            server.url()
        ));
        w.headers.insert("authorization".into(), "Bearer s3cret".into());
        let mut source = compare(w, "$.data.total", "$.data.bad[0]");
        assert_eq!(
            source.collect(&ctx()).await,
            Observed::Counts(Interval {
                canary_total: 100,
                canary_bad: 3,
                stable_total: 200,
                stable_bad: 1,
                canary_share: None,
            })
        );
        let mut seen = server.seen();
        seen.sort_by_key(|s| s.query("track"));
        assert_eq!(seen.len(), 2);
        for (s, track) in seen.iter().zip(["canary", "stable"]) {
            assert_eq!(s.method, http::Method::GET);
            assert_eq!(s.uri.path(), "/stats/myapp");
            assert_eq!(s.query("track").as_deref(), Some(track));
            assert_eq!(s.query("window").as_deref(), Some("1m30s"));
            assert_eq!(s.query("ns").as_deref(), Some("shop"));
            assert_eq!(s.header("authorization"), "Bearer s3cret");
            assert!(s.body.is_empty());
        }
    })
    .await;
}

#[tokio::test]
async fn post_with_templated_body_and_short_selector() {
    bounded(LIMIT, async {
        let server = Server::start(|seen, _| {
            let req: serde_json::Value =
                serde_json::from_str(&seen.body).unwrap_or(serde_json::Value::Null);
            if req["track"] == "canary" {
                Reply::ok(r#"{"result": {"p99": "0.42"}, "items": [{"v": 1}, {"v": 2.5}]}"#)
            } else {
                Reply::status(400, "threshold calls are for the canary")
            }
        })
        .await;
        let mut w = provider(format!("{}/query", server.url()));
        w.method = Some(HttpMethod::Post);
        w.body = Some(
            r#"{"app": "{{name}}", "ns": "{{namespace}}", "track": "{{track}}", "window": "{{interval}}"}"#
                .into(),
        );
        w.headers.insert("x-api-key".into(), "k".into());
        let mut p99 = threshold(w.clone(), "result.p99");
        assert_eq!(p99.collect(&ctx()).await, Observed::Value(0.42));
        let mut item = threshold(w, "$.items[1].v");
        assert_eq!(item.collect(&ctx()).await, Observed::Value(2.5));

        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        let s = &seen[0];
        assert_eq!(s.method, http::Method::POST);
        assert_eq!(
            s.body,
            r#"{"app": "myapp", "ns": "shop", "track": "canary", "window": "1m30s"}"#
        );
        assert_eq!(s.header("content-type"), "application/json");
        assert_eq!(s.header("x-api-key"), "k");
    })
    .await;
}

#[tokio::test]
async fn unusable_answers_are_no_data_without_retry() {
    bounded(LIMIT, async {
        let server = Server::start(|seen, _| match seen.uri.path() {
            "/html" => Reply::ok("<html>oops</html>"),
            "/missing" => Reply::ok(r#"{"data": {"count": 1}}"#),
            "/text" => Reply::ok(r#"{"data": {"total": "many", "bad": 1}}"#),
            "/negative" => Reply::ok(r#"{"data": {"total": 5, "bad": -1}}"#),
            _ => Reply::status(404, "no such report"),
        })
        .await;
        let hook = |path: &str| provider(format!("{}{path}?t={{{{track}}}}", server.url()));

        let why = no_data(
            compare(hook("/html"), "$.data.total", "$.data.bad")
                .collect(&ctx())
                .await,
        );
        assert!(
            why.contains("is not JSON") && why.contains("<html>oops</html>"),
            "{why}"
        );
        let why = no_data(
            compare(hook("/missing"), "$.data.total", "$.data.bad")
                .collect(&ctx())
                .await,
        );
        assert!(
            why.contains("`$.data.total`: no field `total` at `$.data` (fields there: count)"),
            "{why}"
        );
        let why = no_data(
            compare(hook("/text"), "$.data.total", "$.data.bad")
                .collect(&ctx())
                .await,
        );
        assert!(
            why.contains("`$.data.total` is the string \"many\", not a number"),
            "{why}"
        );
        let why = no_data(
            compare(hook("/negative"), "$.data.total", "$.data.bad")
                .collect(&ctx())
                .await,
        );
        assert!(
            why.contains("`$.data.bad` is -1, a negative count"),
            "{why}"
        );
        let why = no_data(threshold(hook("/nowhere"), "$.value").collect(&ctx()).await);
        assert!(
            why.contains("HTTP 404") && why.contains("no such report"),
            "{why}"
        );
        let why = no_data(
            threshold(hook("/missing"), "$.data.value")
                .collect(&ctx())
                .await,
        );
        assert!(why.contains("`$.data.value`"), "{why}");

        // Each call was made once: 4 comparisons × 2 tracks, 2 thresholds.
        assert_eq!(server.seen().len(), 10);
    })
    .await;
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    bounded(LIMIT, async {
        let server = Server::start(|_, n| match n {
            0 => Reply::status(500, "warming up"),
            1 => Reply::status(503, "still warming up"),
            _ => Reply::ok(r#"{"value": 7}"#),
        })
        .await;
        let mut source = threshold(provider(format!("{}/v", server.url())), "$.value");
        let start = Instant::now();
        assert_eq!(source.collect(&ctx()).await, Observed::Value(7.0));
        assert_eq!(server.seen().len(), 3);
        // Two pauses: 250ms and 500ms.
        assert!(
            start.elapsed() >= Duration::from_millis(750),
            "{:?}",
            start.elapsed()
        );

        let always = Server::start(|_, _| Reply::status(502, "bad gateway")).await;
        let mut source = threshold(provider(format!("{}/v", always.url())), "$.value");
        let why = no_data(source.collect(&ctx()).await);
        assert!(
            why.contains("HTTP 502") && why.contains("gave up after 3 attempts"),
            "{why}"
        );
        assert_eq!(always.seen().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_server_that_never_answers_is_no_data_within_the_bound() {
    bounded(LIMIT, async {
        let silent = Silent::start().await;
        let mut w = provider(format!("{}/v?t={{{{track}}}}", silent.url()));
        w.timeout = Some(coalmine_core::Duration::from_millis(300));
        let mut source = compare(w, "$.total", "$.bad");
        let short = Context {
            interval: Duration::from_secs(1),
            ..ctx()
        };
        let start = Instant::now();
        let why = no_data(source.collect(&short).await);
        let took = start.elapsed();
        // The budget is max(timeout, interval) = 1s; both tracks run at once.
        assert!(took < Duration::from_millis(1300), "{took:?}");
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(
            why.contains("no answer from") && why.contains("within 300ms"),
            "{why}"
        );
        assert!(why.contains("gave up after 2 attempts"), "{why}");

        // A timeout longer than the interval still gets one whole attempt.
        let mut w = provider(format!("{}/v", silent.url()));
        w.timeout = Some(coalmine_core::Duration::from_millis(1200));
        let mut source = threshold(w, "$.v");
        let start = Instant::now();
        let why = no_data(source.collect(&short).await);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1200) && took < Duration::from_millis(1600),
            "{took:?}"
        );
        assert!(why.contains("gave up after 1 attempt in"), "{why}");
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_no_data() {
    bounded(LIMIT, async {
        let url = format!("http://127.0.0.1:{}/v", free_port());
        let mut source = threshold(provider(url.clone()), "$.v");
        let short = Context {
            interval: Duration::from_secs(2),
            ..ctx()
        };
        let start = Instant::now();
        let why = no_data(source.collect(&short).await);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(why.contains(&url), "{why}");
        assert!(why.contains("Connection refused"), "{why}");
        assert!(why.contains("gave up after 3 attempts"), "{why}");
    })
    .await;
}
