//! The Prometheus provider against a real Prometheus server (the Debian
//! package's `/usr/bin/prometheus`) scraping a real coalmine proxy on
//! loopback every second.
//!
//! A missing `prometheus` binary fails the test, saying what to install.
//! `COALMINE_PROMETHEUS=/path/to/prometheus` picks another binary.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coalmine_analysis::judge::Observed;
use coalmine_core::plan::{Check, MetricPlan, Provider};
use coalmine_core::spec::PrometheusProvider;
use coalmine_providers::{Context, MetricSource};
use http_body_util::{BodyExt, Full};
use support::{TestProxy, app, bounded, client, free_port};

fn find_prometheus() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COALMINE_PROMETHEUS") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

/// A Prometheus process, killed when dropped (also when the test panics).
struct Prometheus {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: coalmine-proxy\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            // Relative paths, if any, land in the temporary directory too.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Prometheus {
            child,
            address: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Waits for `/-/ready`.
    async fn ready(&mut self, limit: Duration) {
        let c = client();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            let req = http::Request::get(format!("{}/-/ready", self.address))
                .body(Full::new(Bytes::new()))
                .expect("a request");
            if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(1), c.request(req)).await
            {
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                if ok {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider(address: &str) -> PrometheusProvider {
    PrometheusProvider {
        address: address.to_owned(),
        total: None,
        bad: None,
        query: None,
        timeout: Some(coalmine_core::Duration::from_secs(2)),
        headers: BTreeMap::from([("x-scope-orgid".to_owned(), "coalmine-test".to_owned())]),
    }
}

fn compare(address: &str, total: &str, bad: &str) -> MetricSource {
    let plan = MetricPlan {
        name: "prom".into(),
        provider: Provider::Prometheus(PrometheusProvider {
            total: Some(total.into()),
            bad: Some(bad.into()),
            ..provider(address)
        }),
        check: Check::Compare { max_ratio: 1.0 },
    };
    MetricSource::new(&plan, None).expect("a prometheus source")
}

fn threshold(address: &str, query: &str) -> MetricSource {
    let plan = MetricPlan {
        name: "prom".into(),
        provider: Provider::Prometheus(PrometheusProvider {
            query: Some(query.into()),
            ..provider(address)
        }),
        check: Check::Threshold {
            min: None,
            max: Some(1.0),
            failure_limit: 1,
        },
    };
    MetricSource::new(&plan, None).expect("a prometheus source")
}

fn no_data(o: Observed) -> String {
    match o {
        Observed::NoData(why) => why,
        other => panic!("expected NoData, got {other:?}"),
    }
}

const TOTAL: &str = r#"sum(coalmine_proxy_requests_total{track="{{track}}"})"#;
const BAD: &str = r#"sum(coalmine_proxy_requests_total{track="{{track}}",class=~"5xx|error"})"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_against_a_real_prometheus() {
    let binary = find_prometheus().expect(
        "no prometheus binary on PATH or in /usr/bin: install the Debian package `prometheus`, or set COALMINE_PROMETHEUS",
    );
    bounded(Duration::from_secs(90), async {
        let (stable, canary) = (app().await, app().await);
        let proxy = TestProxy::start(&stable, &canary).await;
        let mut prom = Prometheus::start(&binary, &proxy.admin.to_string());
        prom.ready(Duration::from_secs(30)).await;
        let address = prom.address.clone();
        let ctx = Context {
            name: "myapp".into(),
            namespace: "shop".into(),
            interval: Duration::from_secs(90),
        };

        // increase() only sees what happens between scrapes: wait until
        // Prometheus has stored the proxy's counters at zero.
        let mut total = compare(&address, TOTAL, BAD);
        let zero = Observed::Counts(coalmine_analysis::eprocess::Interval {
            canary_total: 0,
            canary_bad: 0,
            stable_total: 0,
            stable_bad: 0,
            canary_share: None,
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let zero_at;
        loop {
            let o = total.collect(&ctx).await;
            if o == zero {
                zero_at = Instant::now();
                break;
            }
            assert!(Instant::now() < deadline, "no first scrape; last {o:?}\n{}", prom.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let c = client();
        proxy.send(&c, false, "/", 20).await;
        proxy.send(&c, false, "/status/500", 5).await;
        proxy.send(&c, true, "/", 10).await;
        proxy.send(&c, true, "/status/503", 4).await;
        proxy.send(&c, true, "/drop", 1).await;

        // Wait until a scrape after the traffic is stored.
        let want = Observed::Counts(coalmine_analysis::eprocess::Interval {
            canary_total: 15,
            canary_bad: 5,
            stable_total: 25,
            stable_bad: 5,
            canary_share: None,
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last;
        loop {
            last = total.collect(&ctx).await;
            if last == want {
                break;
            }
            assert!(Instant::now() < deadline, "counts never reached {want:?}; last {last:?}\n{}", prom.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // The usual per-interval form, with a compound `{{interval}}`
        // (1m30s): increase() extrapolates, so the counts are close, not
        // exact. It needs two scrapes after the traffic.
        let mut increase = compare(
            &address,
            r#"sum(increase(coalmine_proxy_requests_total{track="{{track}}"}[{{interval}}]))"#,
            r#"sum(increase(coalmine_proxy_requests_total{track="{{track}}",class=~"5xx|error"}[{{interval}}]))"#,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match increase.collect(&ctx).await {
                Observed::Counts(i)
                    if i.canary_total >= 15
                        && i.stable_total >= 25
                        && i.canary_bad >= 5
                        && i.stable_bad >= 5 =>
                {
                    // Extrapolation past the last scrape adds at most 1.1
                    // scrape intervals to at least one: a factor below 2.1.
                    assert!(i.canary_total <= 32 && i.stable_total <= 53, "{i:?}");
                    assert!(i.canary_bad <= 11 && i.stable_bad <= 11, "{i:?}");
                    eprintln!("increase() over 1m30s: {i:?}");
                    break;
                }
                other => assert!(
                    Instant::now() < deadline,
                    "increase() never counted the traffic; last {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // An interval shorter than the 1s scrape: refused, naming the
        // field and the fix; increase() needs two scrapes.
        let short = Context {
            interval: Duration::from_millis(500),
            ..ctx.clone()
        };
        let why = no_data(compare(&address, TOTAL, BAD).collect(&short).await);
        assert!(
            why.starts_with("spec.analysis.interval: 500ms is shorter than Prometheus's scrape interval allows (1s for job=\"coalmine-proxy\"")
                && why.ends_with("set spec.analysis.interval to at least 1s"),
            "{why}"
        );
        let one = Context {
            interval: Duration::from_secs(1),
            ..ctx.clone()
        };
        let why = no_data(
            compare(
                &address,
                r#"sum(increase(coalmine_proxy_requests_total{track="{{track}}"}[{{interval}}]))"#,
                BAD,
            )
            .collect(&one)
            .await,
        );
        assert!(why.ends_with("at least 2s"), "{why}");

        // The exact difference over an interval reaching back before the
        // traffic: the counts themselves, not an extrapolation.
        let mut exact = compare(
            &address,
            r#"sum(coalmine_proxy_requests_total{track="{{track}}"}) - sum(coalmine_proxy_requests_total{track="{{track}}"} offset {{interval}})"#,
            r#"sum(coalmine_proxy_requests_total{track="{{track}}",class=~"5xx|error"}) - sum(coalmine_proxy_requests_total{track="{{track}}",class=~"5xx|error"} offset {{interval}})"#,
        );
        // Evaluated at the moment the zeros were seen (to the millisecond):
        // the sample then is a zero, and the traffic came later.
        let back = Context {
            interval: Duration::from_millis(zero_at.elapsed().as_millis() as u64),
            ..ctx.clone()
        };
        assert_eq!(exact.collect(&back).await, want);

        // Several series: the query forgot to aggregate.
        let why = no_data(
            compare(
                &address,
                r#"coalmine_proxy_requests_total{track="{{track}}"}"#,
                BAD,
            )
            .collect(&ctx)
            .await,
        );
        assert!(
            why.starts_with("query returned 5 series; aggregate it, e.g. sum(...): coalmine_proxy_requests_total{track="),
            "{why}"
        );

        // No series: the labels match nothing.
        let why = no_data(
            compare(&address, r#"sum(no_such_metric{track="{{track}}"})"#, BAD)
                .collect(&ctx)
                .await,
        );
        assert_eq!(why, r#"query returned no series: sum(no_such_metric{track="canary"})"#);

        // A threshold value, the canary's error fraction: 5 of 15.
        match threshold(
            &address,
            r#"sum(coalmine_proxy_requests_total{track="{{track}}",class=~"5xx|error"}) / sum(coalmine_proxy_requests_total{track="{{track}}"})"#,
        )
        .collect(&ctx)
        .await
        {
            Observed::Value(v) => assert!((v - 5.0 / 15.0).abs() < 1e-9, "{v}"),
            other => panic!("expected a value, got {other:?}"),
        }
        // A scalar answer.
        assert_eq!(
            threshold(&address, r#"scalar(sum(coalmine_proxy_requests_total{track="stable"}))"#)
                .collect(&ctx)
                .await,
            Observed::Value(25.0)
        );

        // NaN: 0/0, as a vector and as a scalar.
        let why = no_data(
            threshold(
                &address,
                r#"sum(coalmine_proxy_requests_total{track="canary",class="3xx"}) / sum(coalmine_proxy_requests_total{track="canary",class="4xx"})"#,
            )
            .collect(&ctx)
            .await,
        );
        assert!(why.starts_with("query returned NaN: "), "{why}");
        let why = no_data(threshold(&address, "0/0").collect(&ctx).await);
        assert_eq!(why, "query returned NaN: 0/0");
        let why = no_data(threshold(&address, "1/0").collect(&ctx).await);
        assert_eq!(why, "query returned +Inf: 1/0");

        // A syntax error: Prometheus's own message, without retrying.
        let why = no_data(threshold(&address, "sum(rate(x[1m])").collect(&ctx).await);
        assert!(why.contains("Prometheus error (bad_data, HTTP 400)"), "{why}");
        assert!(why.contains("parse error"), "{why}");
        assert!(!why.contains("gave up after"), "a bad query is not retried: {why}");

        // A range vector is not one number.
        let why = no_data(threshold(&address, "coalmine_proxy_route_weight[1m]").collect(&ctx).await);
        assert!(why.contains("range vector"), "{why}");

        drop(prom);
    })
    .await;
}
