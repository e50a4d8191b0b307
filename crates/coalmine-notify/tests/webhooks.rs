//! Notifications against real HTTP servers on loopback: one that records
//! what it gets, one that fails before it succeeds, one that always fails,
//! and one that accepts connections but never answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coalmine_core::Time;
use coalmine_core::spec::{NotificationFormat, NotificationSpec, Transition};
use coalmine_core::status::{AnalysisStatus, CanaryStatus, MetricStatus, Phase, Verdict};
use coalmine_notify::testing::read_request;
use coalmine_notify::{ATTEMPTS, Notifier, notice_for};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// What a test server does with each request.
#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    /// 500 for the first N requests, then 200.
    FailFirst(usize),
    AlwaysFail,
    Hang,
}

/// A server on a free loopback port; the bodies it received.
async fn server(behaviour: Behaviour) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        let count = Arc::new(Mutex::new(0usize));
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let count = count.clone();
            tokio::spawn(async move {
                loop {
                    let Some(body) = read_request(&mut s).await else {
                        return;
                    };
                    let n = {
                        let mut c = count.lock().expect("lock");
                        *c += 1;
                        *c
                    };
                    let status = match behaviour {
                        Behaviour::Ok => 200,
                        Behaviour::FailFirst(k) if n <= k => 500,
                        Behaviour::FailFirst(_) => 200,
                        Behaviour::AlwaysFail => 503,
                        Behaviour::Hang => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                    };
                    if status == 200 {
                        seen.lock().expect("lock").push(body);
                    }
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, bodies)
}

fn spec(url: &str, format: NotificationFormat, on: &[Transition]) -> NotificationSpec {
    NotificationSpec {
        url: Some(url.to_owned()),
        url_from: None,
        format: Some(format),
        on: on.to_vec(),
    }
}

fn rolled_back() -> CanaryStatus {
    CanaryStatus {
        phase: Phase::RollingBack,
        step: 2,
        weight: coalmine_core::Percent::ZERO,
        stable_revision: Some("r1".into()),
        canary_revision: Some("r2".into()),
        analysis: Some(AnalysisStatus {
            verdict: Verdict::Fail,
            evaluated_at: None,
            metrics: vec![
                MetricStatus {
                    name: "errors".into(),
                    verdict: Verdict::Fail,
                    canary_rate: Some(0.05),
                    stable_rate: Some(0.005),
                    ratio: Some(10.0),
                    e_value: Some(177.0),
                    e_threshold: Some(40.0),
                    ..MetricStatus::default()
                },
                MetricStatus {
                    name: "slow".into(),
                    verdict: Verdict::Running,
                    ..MetricStatus::default()
                },
            ],
        }),
        ..CanaryStatus::default()
    }
}

fn rollback_notice() -> coalmine_notify::Notice {
    notice_for(
        "shop",
        Some("prod"),
        "AnalysisFailed",
        "rolling back: metric errors failed",
        true,
        &rolled_back(),
        Time::from_unix_millis(1_700_000_000_000),
    )
    .expect("a rollback is a transition")
}

async fn until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn json_and_slack_bodies_reach_their_webhooks_filtered_by_transition() {
    let (json_url, json_bodies) = server(Behaviour::Ok).await;
    let (slack_url, slack_bodies) = server(Behaviour::Ok).await;
    let notifier = Notifier::start(&[
        spec(&json_url, NotificationFormat::Json, &[]),
        spec(
            &slack_url,
            NotificationFormat::Slack,
            &[Transition::RolledBack],
        ),
    ]);
    let step = notice_for(
        "shop",
        Some("prod"),
        "WeightSet",
        "step 1 of 6: canary weight 5%",
        false,
        &CanaryStatus {
            phase: Phase::Progressing,
            weight: coalmine_core::Percent::new(5).expect("a percent"),
            ..CanaryStatus::default()
        },
        Time::from_unix_millis(1_700_000_000_000),
    )
    .expect("a step is a transition");
    notifier.notify(step);
    notifier.notify(rollback_notice());
    assert!(
        until(Duration::from_secs(10), || json_bodies
            .lock()
            .expect("lock")
            .len()
            == 2)
        .await
    );
    assert!(
        until(Duration::from_secs(10), || slack_bodies
            .lock()
            .expect("lock")
            .len()
            == 1)
        .await
    );
    let json: Vec<serde_json::Value> = json_bodies
        .lock()
        .expect("lock")
        .iter()
        .map(|b| serde_json::from_str(b).expect("JSON"))
        .collect();
    assert_eq!(json[0]["transition"], "step");
    assert_eq!(json[0]["weight"], 5);
    assert_eq!(json[1]["transition"], "rolledBack");
    assert_eq!(json[1]["reason"], "AnalysisFailed");
    assert_eq!(json[1]["namespace"], "prod");
    // Only the failing metric, with its figures.
    assert_eq!(json[1]["metrics"].as_array().map(Vec::len), Some(1));
    assert_eq!(json[1]["metrics"][0]["name"], "errors");
    assert_eq!(json[1]["metrics"][0]["eValue"], 177.0);
    let slack: serde_json::Value =
        serde_json::from_str(&slack_bodies.lock().expect("lock")[0]).expect("JSON");
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.starts_with(":rotating_light: *prod/shop* rolledBack: rolling back"),
        "{text}"
    );
    assert!(
        text.contains("`errors`: canary 5.0% vs stable 0.50%, ratio 10.0, evidence 177 of 40"),
        "{text}"
    );
    assert_eq!(notifier.counts().sent.get(), 3);
}

#[tokio::test]
async fn failures_are_retried_with_backoff_then_counted() {
    let (flaky, flaky_bodies) = server(Behaviour::FailFirst(2)).await;
    let (down, _) = server(Behaviour::AlwaysFail).await;
    let notifier = Notifier::with_timing(
        &[
            spec(&flaky, NotificationFormat::Json, &[]),
            spec(&down, NotificationFormat::Json, &[]),
        ],
        Duration::from_millis(500),
        Duration::from_millis(50),
    );
    let start = Instant::now();
    notifier.notify(rollback_notice());
    assert!(
        until(Duration::from_secs(10), || flaky_bodies
            .lock()
            .expect("lock")
            .len()
            == 1)
        .await
    );
    // Two failed tries, pauses of 50 and 100 ms before the third.
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    let c = notifier.counts();
    assert!(until(Duration::from_secs(10), || c.failed.get() == 1).await);
    assert_eq!(c.sent.get(), 1);
    assert_eq!(c.failed_tries.get(), 2 + u64::from(ATTEMPTS));
    let last = c.last_error().unwrap_or_default();
    assert!(last.contains("answered 503"), "{last}");
}

#[tokio::test]
async fn a_hanging_webhook_blocks_neither_the_caller_nor_the_others() {
    let (hang, _) = server(Behaviour::Hang).await;
    let (ok, ok_bodies) = server(Behaviour::Ok).await;
    let notifier = Notifier::with_timing(
        &[
            spec(&hang, NotificationFormat::Json, &[]),
            spec(&ok, NotificationFormat::Slack, &[]),
        ],
        Duration::from_millis(300),
        Duration::from_millis(10),
    );
    let start = Instant::now();
    for _ in 0..3 {
        notifier.notify(rollback_notice());
    }
    assert!(start.elapsed() < Duration::from_millis(50), "notify waited");
    assert!(
        until(Duration::from_secs(5), || ok_bodies
            .lock()
            .expect("lock")
            .len()
            == 3)
        .await
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let c = notifier.counts();
    assert!(until(Duration::from_secs(20), || c.failed.get() == 3).await);
    assert!(
        c.last_error()
            .unwrap_or_default()
            .contains("no answer within")
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let (hang, _) = server(Behaviour::Hang).await;
    let notifier = Notifier::with_timing(
        &[spec(&hang, NotificationFormat::Json, &[])],
        Duration::from_secs(30),
        Duration::from_millis(10),
    );
    for _ in 0..(coalmine_notify::QUEUE + 10) {
        notifier.notify(rollback_notice());
    }
    // One is being sent, QUEUE wait; the rest are dropped.
    let dropped = notifier.counts().dropped.get();
    assert!((9..=10).contains(&dropped), "{dropped}");
}

#[test]
fn events_nobody_is_paged_for_make_no_notice() {
    let s = CanaryStatus::default();
    assert!(
        notice_for(
            "x",
            None,
            "Initialized",
            "",
            false,
            &s,
            Time::from_unix_millis(0)
        )
        .is_none()
    );
    assert!(
        notice_for(
            "x",
            None,
            "CommandIgnored",
            "",
            true,
            &s,
            Time::from_unix_millis(0)
        )
        .is_none()
    );
}

/// A URL kept elsewhere: the first read fails (a Secret not there yet),
/// later reads give `url`.
struct Kept {
    url: String,
    reads: Mutex<u32>,
}

impl coalmine_notify::UrlSource for Kept {
    fn url(&self) -> coalmine_notify::UrlFuture<'_> {
        Box::pin(async move {
            let mut n = self.reads.lock().map_err(|_| "poisoned".to_owned())?;
            *n += 1;
            if *n == 1 {
                Err("Secret default/hooks: not found".to_owned())
            } else {
                Ok(self.url.clone())
            }
        })
    }
}

#[tokio::test]
async fn a_url_from_a_source_is_read_per_message_and_never_named() {
    let (ok, bodies) = server(Behaviour::FailFirst(1)).await;
    // The secret part of the URL, which must appear nowhere.
    let secret = format!("{ok}?token=s3cr3t");
    let target = coalmine_notify::Target {
        label: "Secret default/hooks, key address".into(),
        url: Arc::new(Kept {
            url: secret,
            reads: Mutex::new(0),
        }),
        format: NotificationFormat::Json,
        on: vec![],
    };
    let counts = Arc::new(coalmine_notify::Counts::default());
    let notifier = Notifier::with_targets_timing(
        vec![target],
        counts.clone(),
        Duration::from_millis(500),
        Duration::from_millis(20),
    );
    notifier.notify(rollback_notice());
    assert!(until(Duration::from_secs(10), || counts.sent.get() == 1).await);
    // Not readable, then a 500, then delivered.
    assert_eq!(counts.failed_tries.get(), 2);
    assert_eq!(bodies.lock().expect("lock").len(), 1);
    let last = counts.last_error().unwrap_or_default();
    assert!(
        last.starts_with("Secret default/hooks, key address: answered 500"),
        "{last}"
    );
    let status = serde_json::to_string(&notifier.status()).unwrap_or_default();
    assert!(
        !status.contains("s3cr3t") && !status.contains("127.0.0.1"),
        "{status}"
    );
}

#[tokio::test]
async fn a_value_that_is_no_url_is_final_and_not_echoed() {
    let target = coalmine_notify::Target {
        label: "Secret default/hooks, key address".into(),
        url: Arc::new(Kept {
            url: "s3cr3t-not-a-url".into(),
            reads: Mutex::new(1),
        }),
        format: NotificationFormat::Slack,
        on: vec![],
    };
    let counts = Arc::new(coalmine_notify::Counts::default());
    let notifier = Notifier::with_targets_timing(
        vec![target],
        counts.clone(),
        Duration::from_millis(500),
        Duration::from_millis(20),
    );
    notifier.notify(rollback_notice());
    assert!(until(Duration::from_secs(10), || counts.failed.get() == 1).await);
    assert_eq!(counts.failed_tries.get(), 1, "not tried again");
    let last = counts.last_error().unwrap_or_default();
    assert!(!last.contains("s3cr3t"), "{last}");
    assert!(last.contains("not an http:// or https:// URL"), "{last}");
}

#[test]
fn the_counts_are_exported_under_the_controllers_name() {
    let counts = coalmine_notify::Counts::default();
    counts.sent.inc_by(3);
    counts.failed_tries.inc();
    let text = counts.exposition("web");
    assert!(
        text.contains("# TYPE coalmine_notifications_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("coalmine_notifications_total{name=\"web\",result=\"sent\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("coalmine_notifications_total{name=\"web\",result=\"failed_try\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
}
