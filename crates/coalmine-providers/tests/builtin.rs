//! The builtin provider against a real coalmine proxy on loopback, with
//! real upstreams: exact per-interval deltas in process and scraped, slow
//! counts and histograms, baselines, restarts and failed scrapes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coalmine_analysis::judge::Observed;
use coalmine_core::counters::{Class, STARTED};
use coalmine_core::plan::LATENCY_BUCKETS;
use coalmine_core::routes::Track;
use coalmine_core::spec::BuiltinMetric;
use coalmine_providers::{BuiltinSource, Context, MetricSource};
use coalmine_proxy::metrics::Metrics;
use support::builtin::{counts, no_data, plan};
use support::{TestProxy, app, bounded, client, free_port, text_server};

const LIMIT: Duration = Duration::from_secs(30);

fn ctx() -> Context {
    Context {
        name: "myapp".into(),
        namespace: "shop".into(),
        interval: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn in_process_error_counts_are_exact_deltas() {
    bounded(LIMIT, async {
        let (stable, canary) = (app().await, app().await);
        let proxy = TestProxy::start(&stable, &canary).await;
        let c = client();
        // Traffic before the analysis starts is not counted.
        proxy.send(&c, false, "/status/500", 5).await;
        proxy.send(&c, true, "/", 2).await;

        let builtin = BuiltinSource::in_process(proxy.proxy.metrics().counters());
        let mut errors =
            MetricSource::new(&plan(BuiltinMetric::Errors, None, false), Some(&builtin))
                .expect("a builtin source");
        let mut rate = MetricSource::new(&plan(BuiltinMetric::Errors, None, true), Some(&builtin))
            .expect("a builtin threshold source");

        proxy.send(&c, false, "/", 7).await;
        proxy.send(&c, false, "/status/500", 3).await;
        proxy.send(&c, false, "/status/404", 1).await;
        proxy.send(&c, false, "/status/302", 1).await;
        proxy.send(&c, true, "/", 4).await;
        proxy.send(&c, true, "/status/502", 2).await;
        // No answer from the upstream: the `error` class, also bad.
        proxy.send(&c, true, "/drop", 1).await;
        assert_eq!(errors.collect(&ctx()).await, counts((7, 3), (12, 3)));
        assert_eq!(rate.collect(&ctx()).await, Observed::Value(3.0 / 7.0));

        proxy.send(&c, false, "/", 2).await;
        proxy.send(&c, true, "/status/503", 1).await;
        assert_eq!(errors.collect(&ctx()).await, counts((1, 1), (2, 0)));

        // A quiet interval is zero counts (data), not NoData; as a rate it
        // has no canary request to divide by.
        assert_eq!(errors.collect(&ctx()).await, counts((0, 0), (0, 0)));
        let _ = rate.collect(&ctx()).await;
        let why = rate.collect(&ctx()).await;
        assert_eq!(no_data(&why), "no canary requests in this interval");
    })
    .await;
}

#[tokio::test]
async fn in_process_latency_slow_counts_and_histograms() {
    bounded(LIMIT, async {
        let (stable, canary) = (app().await, app().await);
        let proxy = TestProxy::start(&stable, &canary).await;
        let c = client();
        let builtin = BuiltinSource::in_process(proxy.proxy.metrics().counters());
        let source = |ms| {
            MetricSource::new(
                &plan(BuiltinMetric::Latency, Some(ms), false),
                Some(&builtin),
            )
            .expect("a builtin latency source")
        };
        // 100ms and 150ms are bucket edges; 120ms is not, so it counts
        // from the edge below it, 100ms.
        let (mut at100, mut at120, mut at150) = (source(100), source(120), source(150));

        proxy.send(&c, true, "/sleep/180", 3).await;
        proxy.send(&c, true, "/sleep/105", 2).await;
        proxy.send(&c, true, "/", 2).await;
        proxy.send(&c, false, "/sleep/180", 1).await;
        proxy.send(&c, false, "/", 4).await;

        let (o100, o120, o150) = (
            at100.collect(&ctx()).await,
            at120.collect(&ctx()).await,
            at150.collect(&ctx()).await,
        );
        let slow = |o: &Observed| match o {
            Observed::Latency { slow, histograms } => (*slow, histograms.clone()),
            other => panic!("expected latency, got {other:?}"),
        };
        let (s100, h100) = slow(&o100);
        assert_eq!(
            (
                s100.canary_total,
                s100.canary_bad,
                s100.stable_total,
                s100.stable_bad
            ),
            (7, 5, 5, 1)
        );
        let (s120, h120) = slow(&o120);
        assert_eq!(
            (s120.canary_bad, s120.stable_bad),
            (5, 1),
            "120ms counts from the 100ms edge"
        );
        let (s150, _) = slow(&o150);
        assert_eq!(
            (
                s150.canary_total,
                s150.canary_bad,
                s150.stable_total,
                s150.stable_bad
            ),
            (7, 3, 5, 1)
        );
        assert_eq!(s100.canary_share, None);

        let h = h100.expect("histograms");
        assert!(h.is_consistent());
        assert_eq!(h.bounds, LATENCY_BUCKETS);
        assert_eq!(h, h120.expect("histograms"));
        let edge = |b: f64| {
            LATENCY_BUCKETS
                .iter()
                .position(|x| *x == b)
                .expect("an edge")
        };
        let (i100, i150, i200) = (edge(0.1), edge(0.15), edge(0.2));
        let sum = |v: &[u64]| v.iter().sum::<u64>();
        assert_eq!(sum(&h.canary[..=i100]), 2, "{:?}", h.canary);
        assert_eq!(sum(&h.canary[i100 + 1..=i150]), 2, "{:?}", h.canary);
        assert_eq!(sum(&h.canary[i150 + 1..=i200]), 3, "{:?}", h.canary);
        assert_eq!(sum(&h.stable[..=i100]), 4, "{:?}", h.stable);
        assert_eq!(sum(&h.stable[i150 + 1..=i200]), 1, "{:?}", h.stable);
        assert_eq!(sum(&h.canary), 7);
        assert_eq!(sum(&h.stable), 5);

        // The next interval holds only what happened since.
        proxy.send(&c, true, "/", 1).await;
        match at100.collect(&ctx()).await {
            Observed::Latency { slow, histograms } => {
                assert_eq!(
                    (slow.canary_total, slow.canary_bad, slow.stable_total),
                    (1, 0, 0)
                );
                let h = histograms.expect("histograms");
                assert_eq!(sum(&h.canary), 1);
                assert_eq!(sum(&h.stable), 0);
            }
            other => panic!("expected latency, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn scraped_counts_match_in_process() {
    bounded(LIMIT, async {
        let (stable, canary) = (app().await, app().await);
        let proxy = TestProxy::start(&stable, &canary).await;
        let c = client();
        let in_process = BuiltinSource::in_process(proxy.proxy.metrics().counters());
        let scrape = BuiltinSource::scrape(proxy.metrics_url());
        let errors = plan(BuiltinMetric::Errors, None, false);
        let latency = plan(BuiltinMetric::Latency, Some(100), false);
        let mut direct = MetricSource::new(&errors, Some(&in_process)).expect("source");
        let mut direct_latency = MetricSource::new(&latency, Some(&in_process)).expect("source");
        let mut primed = MetricSource::new(&errors, Some(&scrape)).expect("source");
        primed.prime().await;
        let mut primed_latency = MetricSource::new(&latency, Some(&scrape)).expect("source");
        primed_latency.prime().await;
        let mut unprimed = MetricSource::new(&errors, Some(&scrape)).expect("source");

        proxy.send(&c, false, "/", 6).await;
        proxy.send(&c, false, "/status/503", 2).await;
        proxy.send(&c, true, "/sleep/120/status/500", 2).await;
        proxy.send(&c, true, "/", 3).await;

        let want = counts((5, 2), (8, 2));
        assert_eq!(direct.collect(&ctx()).await, want);
        assert_eq!(primed.collect(&ctx()).await, want);
        // Without a baseline, the first scrape only takes one.
        let first = unprimed.collect(&ctx()).await;
        assert!(no_data(&first).contains("baseline taken"), "{first:?}");
        proxy.send(&c, true, "/status/500", 1).await;
        assert_eq!(unprimed.collect(&ctx()).await, counts((1, 1), (0, 0)));

        let a = direct_latency.collect(&ctx()).await;
        let b = primed_latency.collect(&ctx()).await;
        assert_eq!(a, b, "the scraped histogram is the in-process one");
        match a {
            Observed::Latency { slow, histograms } => {
                assert_eq!((slow.canary_total, slow.canary_bad), (6, 2));
                assert_eq!((slow.stable_total, slow.stable_bad), (8, 0));
                assert!(histograms.is_some_and(|h| h.is_consistent()));
            }
            other => panic!("expected latency, got {other:?}"),
        }
    })
    .await;
}

/// The exposition of proxy process `process` (its start time) that served
/// `stable` and `canary` requests of the given classes.
fn exposition(process: u32, stable: &[(Class, u64)], canary: &[(Class, u64)]) -> String {
    let m = Metrics::new();
    for (track, classes) in [(Track::Stable, stable), (Track::Canary, canary)] {
        for (class, n) in classes {
            for _ in 0..*n {
                m.track(track).record(*class, Duration::from_millis(20));
            }
        }
    }
    m.encode()
        .lines()
        .map(|l| match l.starts_with(&format!("{STARTED} ")) {
            true => format!("{STARTED} {process}\n"),
            false => format!("{l}\n"),
        })
        .collect()
}

#[tokio::test]
async fn scrape_restarts_and_failures() {
    bounded(LIMIT, async {
        let text = Arc::new(Mutex::new(exposition(
            1,
            &[(Class::Success, 10)],
            &[(Class::Success, 2)],
        )));
        let server = text_server(text.clone()).await;
        let set = |s: String| *text.lock().expect("never poisoned") = s;
        let scrape = BuiltinSource::scrape(format!("{}/metrics", server.url()));
        let mut source =
            MetricSource::new(&plan(BuiltinMetric::Errors, None, false), Some(&scrape))
                .expect("source");
        source.prime().await;

        set(exposition(
            1,
            &[(Class::Success, 15), (Class::ServerError, 1)],
            &[(Class::Success, 4), (Class::Error, 1)],
        ));
        assert_eq!(source.collect(&ctx()).await, counts((3, 1), (6, 1)));

        // A restarted proxy (another start time) starts from zero: NoData,
        // and a new baseline.
        set(exposition(2, &[(Class::Success, 1)], &[]));
        let o = source.collect(&ctx()).await;
        assert!(no_data(&o).contains("restarted"), "{o:?}");
        set(exposition(
            2,
            &[(Class::Success, 4)],
            &[(Class::ServerError, 2)],
        ));
        assert_eq!(source.collect(&ctx()).await, counts((2, 2), (3, 0)));

        // Not a proxy's metrics: NoData, and the baseline is kept, so the
        // next good scrape covers both intervals.
        set("# nothing here\nup 1\n".to_owned());
        let o = source.collect(&ctx()).await;
        assert!(
            no_data(&o).contains("no coalmine_proxy_requests_total samples"),
            "{o:?}"
        );
        set(exposition(
            2,
            &[(Class::Success, 9)],
            &[(Class::ServerError, 3)],
        ));
        assert_eq!(source.collect(&ctx()).await, counts((1, 1), (5, 0)));

        // Nothing listening: NoData with the reason, within the interval.
        let dead = BuiltinSource::scrape(format!("http://127.0.0.1:{}/metrics", free_port()));
        let mut gone = MetricSource::new(&plan(BuiltinMetric::Errors, None, false), Some(&dead))
            .expect("source");
        let short = Context {
            interval: Duration::from_secs(1),
            ..ctx()
        };
        let start = std::time::Instant::now();
        let o = gone.collect(&short).await;
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
        let why = no_data(&o);
        assert!(
            why.contains("Connection refused") && why.contains("gave up after"),
            "{why}"
        );
    })
    .await;
}
