//! The builtin provider over several real proxy replicas on loopback, as
//! the controller reads the proxy Deployment: exact sums of every
//! replica's differences, new and gone replicas, a stopped replica (NoData
//! naming it), a restarted one (a new baseline), the list callback failing
//! or empty, duplicates, and `--resolve` overrides for cluster addresses.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coalmine_analysis::judge::Observed;
use coalmine_core::plan::LATENCY_BUCKETS;
use coalmine_core::spec::BuiltinMetric;
use coalmine_providers::{
    AddressOverride, BuiltinSource, Context, MetricSource, Replica, set_address_overrides,
};
use support::builtin::{counts, no_data, plan};
use support::{TestProxy, app, bounded, client};

const LIMIT: Duration = Duration::from_secs(30);

/// A one-second interval: a failed scrape gives up within it.
fn ctx() -> Context {
    Context {
        name: "web".into(),
        namespace: "shop".into(),
        interval: Duration::from_secs(1),
    }
}

/// The replicas a test lists, changed as the test goes.
#[derive(Clone, Default)]
struct Listed(Arc<Mutex<Vec<Replica>>>);

impl Listed {
    fn set(&self, replicas: &[(&str, &TestProxy)]) {
        let list = replicas
            .iter()
            .map(|(id, p)| Replica {
                id: (*id).to_owned(),
                url: p.replica_url(),
            })
            .collect();
        *self.0.lock().expect("never poisoned") = list;
    }

    fn source(&self) -> BuiltinSource {
        let list = self.0.clone();
        BuiltinSource::replicas(Arc::new(move || {
            Ok(list.lock().map_err(|e| e.to_string())?.clone())
        }))
    }
}

#[tokio::test]
async fn three_replicas_are_summed_exactly_and_new_ones_start_from_a_baseline() {
    bounded(LIMIT, async {
        let (stable, canary) = (app().await, app().await);
        let p0 = TestProxy::start(&stable, &canary).await;
        let p1 = TestProxy::start(&stable, &canary).await;
        let p2 = TestProxy::start(&stable, &canary).await;
        let c = client();
        let listed = Listed::default();
        listed.set(&[("r0", &p0), ("r1", &p1), ("r2", &p2)]);
        let builtin = listed.source();
        // Traffic before the analysis starts is not counted.
        p0.send(&c, true, "/status/500", 4).await;
        p2.send(&c, false, "/", 3).await;

        let source = |metric, slower, threshold| {
            MetricSource::new(&plan(metric, slower, threshold), Some(&builtin))
                .expect("a builtin source")
        };
        let mut errors = source(BuiltinMetric::Errors, None, false);
        let mut rate = source(BuiltinMetric::Errors, None, true);
        let mut latency = source(BuiltinMetric::Latency, Some(100), false);
        for s in [&mut errors, &mut rate, &mut latency] {
            s.prime().await;
        }

        p0.send(&c, false, "/", 3).await;
        p0.send(&c, false, "/status/500", 1).await;
        p0.send(&c, true, "/", 2).await;
        p1.send(&c, false, "/", 2).await;
        p1.send(&c, true, "/status/502", 1).await;
        p1.send(&c, true, "/sleep/120", 1).await;
        p2.send(&c, true, "/drop", 1).await;
        p2.send(&c, false, "/sleep/120", 2).await;

        assert_eq!(errors.collect(&ctx()).await, counts((5, 2), (8, 1)));
        assert_eq!(rate.collect(&ctx()).await, Observed::Value(2.0 / 5.0));
        match latency.collect(&ctx()).await {
            Observed::Latency { slow, histograms } => {
                assert_eq!(
                    (
                        slow.canary_total,
                        slow.canary_bad,
                        slow.stable_total,
                        slow.stable_bad
                    ),
                    (5, 1, 8, 2)
                );
                // Bucket by bucket: 120ms requests sit between the 100ms
                // and 150ms edges, the rest below 100ms.
                let h = histograms.expect("histograms");
                assert!(h.is_consistent());
                assert_eq!(h.bounds, LATENCY_BUCKETS);
                let i100 = LATENCY_BUCKETS
                    .iter()
                    .position(|b| *b == 0.1)
                    .expect("an edge");
                let split = |v: &[u64]| {
                    (
                        v[..=i100].iter().sum::<u64>(),
                        v[i100 + 1],
                        v[i100 + 2..].iter().sum::<u64>(),
                    )
                };
                assert_eq!(split(&h.canary), (4, 1, 0), "{:?}", h.canary);
                assert_eq!(split(&h.stable), (6, 2, 0), "{:?}", h.stable);
            }
            other => panic!("expected latency, got {other:?}"),
        }

        // r3 is new: its first scrape is its baseline. r2 is gone from the
        // list: dropped, its requests not counted.
        let p3 = TestProxy::start(&stable, &canary).await;
        p3.send(&c, false, "/", 2).await;
        listed.set(&[("r0", &p0), ("r1", &p1), ("r3", &p3)]);
        p0.send(&c, true, "/", 1).await;
        p2.send(&c, false, "/", 5).await;
        p3.send(&c, false, "/", 4).await;
        assert_eq!(errors.collect(&ctx()).await, counts((1, 0), (0, 0)));
        p3.send(&c, false, "/status/503", 2).await;
        p1.send(&c, false, "/", 1).await;
        assert_eq!(errors.collect(&ctx()).await, counts((0, 0), (3, 2)));
        // A quiet interval is zero counts, not NoData.
        assert_eq!(errors.collect(&ctx()).await, counts((0, 0), (0, 0)));
    })
    .await;
}

#[tokio::test]
async fn a_stopped_replica_is_no_data_and_a_restarted_one_a_new_baseline() {
    bounded(LIMIT, async {
        let (stable, canary) = (app().await, app().await);
        let a = TestProxy::start(&stable, &canary).await;
        let b = TestProxy::start(&stable, &canary).await;
        let c = client();
        let listed = Listed::default();
        listed.set(&[("a", &a), ("b", &b)]);
        let mut errors = MetricSource::new(
            &plan(BuiltinMetric::Errors, None, false),
            Some(&listed.source()),
        )
        .expect("a builtin source");
        errors.prime().await;

        a.send(&c, false, "/", 2).await;
        b.send(&c, false, "/", 3).await;
        b.send(&c, true, "/", 1).await;
        assert_eq!(errors.collect(&ctx()).await, counts((1, 0), (5, 0)));

        // b stops but is still listed: NoData naming it, within the
        // interval, and never the sum of a alone.
        let b_metrics = b.metrics;
        b.stop().await;
        a.send(&c, false, "/", 4).await;
        a.send(&c, true, "/", 1).await;
        let start = Instant::now();
        let o = errors.collect(&ctx()).await;
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
        let why = no_data(&o);
        assert!(
            why.starts_with("proxy replica b: ")
                && why.contains("Connection refused")
                && why.contains("not counted until every replica is read"),
            "{why}"
        );

        // b restarts at the same address with fresh counters (fewer than
        // before): its scrape is its new baseline; a's difference covers
        // the failed interval too.
        let b = TestProxy::start_at(&stable, &canary, b_metrics).await;
        b.send(&c, false, "/", 1).await;
        a.send(&c, true, "/status/500", 2).await;
        assert_eq!(errors.collect(&ctx()).await, counts((3, 2), (4, 0)));
        b.send(&c, false, "/", 2).await;
        b.send(&c, true, "/status/500", 1).await;
        a.send(&c, false, "/", 1).await;
        assert_eq!(errors.collect(&ctx()).await, counts((1, 1), (3, 0)));

        // b restarts again and, before the next read, serves more than it
        // had counted: no counter went down, and its start time alone
        // shows the restart (a difference across two processes would
        // count requests of the old process as this interval's).
        let b_metrics = b.metrics;
        b.stop().await;
        let b = TestProxy::start_at(&stable, &canary, b_metrics).await;
        b.send(&c, false, "/", 20).await;
        b.send(&c, true, "/status/500", 3).await;
        a.send(&c, false, "/", 2).await;
        assert_eq!(errors.collect(&ctx()).await, counts((0, 0), (2, 0)));

        // Both stopped: NoData naming both.
        a.stop().await;
        b.stop().await;
        let o = errors.collect(&ctx()).await;
        let why = no_data(&o);
        assert!(
            why.contains("proxy replica a: ") && why.contains("proxy replica b: "),
            "{why}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_failing_or_empty_list_is_no_data_and_a_replica_listed_twice_counts_once() {
    bounded(LIMIT, async {
        let (stable, canary) = (app().await, app().await);
        let a = TestProxy::start(&stable, &canary).await;
        let c = client();
        let failing = BuiltinSource::replicas(Arc::new(|| {
            Err("the EndpointSlice cache has not synced yet".to_owned())
        }));
        let mut errors =
            MetricSource::new(&plan(BuiltinMetric::Errors, None, false), Some(&failing))
                .expect("a builtin source");
        let o = errors.collect(&ctx()).await;
        assert_eq!(
            no_data(&o),
            "cannot list the proxy replicas: the EndpointSlice cache has not synced yet"
        );

        let listed = Listed::default();
        let mut errors = MetricSource::new(
            &plan(BuiltinMetric::Errors, None, false),
            Some(&listed.source()),
        )
        .expect("a builtin source");
        let o = errors.collect(&ctx()).await;
        assert!(no_data(&o).contains("list of replicas is empty"), "{o:?}");

        listed.set(&[("a", &a), ("a", &a)]);
        let o = errors.collect(&ctx()).await;
        assert_eq!(
            no_data(&o),
            "first read of proxy replica a: baseline taken, counting starts now"
        );
        a.send(&c, false, "/", 3).await;
        assert_eq!(errors.collect(&ctx()).await, counts((0, 0), (3, 0)));
    })
    .await;
}

#[tokio::test]
async fn cluster_addresses_are_reached_through_resolve_overrides() {
    bounded(LIMIT, async {
        let (stable, canary) = (app().await, app().await);
        let v4 = TestProxy::start(&stable, &canary).await;
        let v6 = TestProxy::start(&stable, &canary).await;
        let c = client();
        // The controller's `--resolve`: pod addresses, as EndpointSlices
        // give them, mapped to the loopback proxies.
        let overrides: Vec<AddressOverride> = [
            format!("10.255.0.2:9902={}", v4.metrics),
            format!("[fd00::2]:9902={}", v6.metrics),
        ]
        .iter()
        .map(|o| o.parse().expect("a valid override"))
        .collect();
        assert!(set_address_overrides(overrides), "set once per process");
        let list = vec![
            Replica {
                id: "web-proxy-1 (10.255.0.2)".into(),
                url: "http://10.255.0.2:9902/metrics".into(),
            },
            Replica {
                id: "web-proxy-2 (fd00::2)".into(),
                url: "http://[fd00::2]:9902/metrics".into(),
            },
        ];
        let builtin = BuiltinSource::replicas(Arc::new(move || Ok(list.clone())));
        let mut errors =
            MetricSource::new(&plan(BuiltinMetric::Errors, None, false), Some(&builtin))
                .expect("a builtin source");
        errors.prime().await;
        v4.send(&c, false, "/", 2).await;
        v6.send(&c, true, "/status/500", 1).await;
        assert_eq!(errors.collect(&ctx()).await, counts((1, 1), (2, 0)));
    })
    .await;
}
