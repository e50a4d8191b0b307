//! Notifications: the webhooks of `spec.notifications`, told about the
//! transitions of a rollout people care about (started, step, paused,
//! promoted, rolled back with the reason and the failing metric's figures,
//! stuck).
//!
//! The rollout never waits for a notification. [`Notifier::notify`] only
//! queues; each webhook has its own task that posts in order, so a slow or
//! hanging webhook delays nothing but its own later messages. A post is
//! tried [`ATTEMPTS`] times, each bounded by [`TIMEOUT`], pausing
//! [`BACKOFF`], then twice and four times that between tries; a 4xx other
//! than 408 and 429 is final at once. A queue that is full (a webhook down
//! for a long time) drops the newest message and counts it. Every outcome
//! is counted in [`Counts`], which the runs show on their status and
//! `/metrics`.
//!
//! Two bodies: coalmine's JSON document ([`Notice`] as JSON) and Slack's
//! incoming-webhook message (`{"text": …}`, [`slack_text`]).
//!
//! A webhook's URL is written in the spec or kept elsewhere (a Secret):
//! [`UrlSource`] is read before every message, and a [`Target`] has a
//! label that logs and the status name it by, so a secret URL is never
//! written anywhere.

#![forbid(unsafe_code)]

pub mod testing;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coalmine_core::Time;
use coalmine_core::human::{evidence, percent, ratio};
use coalmine_core::spec::{NotificationFormat, NotificationSpec, Transition, is_http_url};
use coalmine_core::status::{MetricStatus, Phase};
use http::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::mpsc;

/// Tries per message, at most.
pub const ATTEMPTS: u32 = 4;
/// Bound on one try (connection, request and answer).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before the second try; each later pause doubles.
pub const BACKOFF: Duration = Duration::from_secs(1);
/// Messages waiting per webhook before new ones are dropped.
pub const QUEUE: usize = 64;

/// The help text of `coalmine_notifications_total`, the same in every
/// program that exports it.
pub const NOTIFICATIONS_HELP: &str =
    "Notifications of spec.notifications, by Canary and result (sent, failed, dropped, failed_try)";

/// What happened, as the JSON body says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// The Canary's name.
    pub canary: String,
    /// Its namespace (Kubernetes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The transition: `started`, `step`, `paused`, `promoted`,
    /// `rolledBack` or `stuck`.
    pub transition: &'static str,
    /// The event's reason, e.g. `AnalysisFailed`.
    pub reason: String,
    /// The event's sentence, with the numbers.
    pub message: String,
    /// Whether it is a warning.
    pub warning: bool,
    /// The phase the rollout is in now.
    pub phase: Phase,
    /// The current step's index.
    pub step: u32,
    /// The canary's weight now.
    pub weight: u8,
    /// The stable revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The canary revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// When.
    pub at: Time,
    /// On a rollback, the failing metrics; otherwise every metric's latest
    /// figures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
    /// What kind of transition it is, for filtering.
    #[serde(skip)]
    pub kind: Option<Transition>,
}

/// Slack's message for a notice: one line people read at a glance, then
/// the failing metrics' figures.
pub fn slack_text(n: &Notice) -> String {
    let icon = match n.kind {
        Some(Transition::RolledBack) => ":rotating_light:",
        Some(Transition::Promoted) => ":white_check_mark:",
        Some(Transition::Stuck) => ":warning:",
        Some(Transition::Paused) => ":double_vertical_bar:",
        _ => ":bird:",
    };
    let name = match &n.namespace {
        Some(ns) => format!("{ns}/{}", n.canary),
        None => n.canary.clone(),
    };
    let mut text = format!(
        "{icon} *{name}* {}: {} (canary weight {}%)",
        n.transition, n.message, n.weight
    );
    if n.kind == Some(Transition::RolledBack) {
        for m in n
            .metrics
            .iter()
            .filter(|m| matches!(m.verdict, coalmine_core::status::Verdict::Fail))
        {
            let mut facts = Vec::new();
            if let (Some(c), Some(s)) = (m.canary_rate, m.stable_rate) {
                facts.push(format!("canary {} vs stable {}", percent(c), percent(s)));
            }
            if let Some(r) = m.ratio {
                facts.push(format!("ratio {}", ratio(r)));
            }
            if let (Some(e), Some(t)) = (m.e_value, m.e_threshold) {
                facts.push(format!("evidence {} of {}", evidence(e), evidence(t)));
            }
            text.push_str(&format!("\n• `{}`: {}", m.name, facts.join(", ")));
        }
    }
    text
}

/// The body posted to one webhook.
pub fn body(format: NotificationFormat, n: &Notice) -> String {
    match format {
        NotificationFormat::Json => serde_json::to_string(n).unwrap_or_default(),
        NotificationFormat::Slack => serde_json::json!({ "text": slack_text(n) }).to_string(),
    }
}

/// Outcomes so far, over every webhook. The counters are Prometheus
/// counters, so a program can register them (or clones of its own) on its
/// `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Messages a webhook accepted (2xx).
    pub sent: Counter,
    /// Messages given up on after every try.
    pub failed: Counter,
    /// Messages dropped because a webhook's queue was full.
    pub dropped: Counter,
    /// Tries that failed (including those a later try made good).
    pub failed_tries: Counter,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Counts {
    /// Counts kept in the given counters (clones share their value).
    pub fn new(sent: Counter, failed: Counter, dropped: Counter, failed_tries: Counter) -> Counts {
        Counts {
            sent,
            failed,
            dropped,
            failed_tries,
            last_error: std::sync::Mutex::new(None),
        }
    }

    /// The last failure, as `WEBHOOK: what went wrong` (the webhook by its
    /// target's label).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The counts in Prometheus's text format as the controller exports
    /// them (`coalmine_notifications_total{name, result}`), for a run of
    /// Canary `name` outside a cluster (no `namespace` label).
    pub fn exposition(&self, name: &str) -> String {
        let family = Family::<Vec<(String, String)>, Counter>::default();
        for (result, counter) in [
            ("sent", &self.sent),
            ("failed", &self.failed),
            ("dropped", &self.dropped),
            ("failed_try", &self.failed_tries),
        ] {
            let labels = vec![
                ("name".to_owned(), name.to_owned()),
                ("result".to_owned(), result.to_owned()),
            ];
            family.get_or_create(&labels).inc_by(counter.get());
        }
        let mut registry = Registry::default();
        registry.register("coalmine_notifications", NOTIFICATIONS_HELP, family);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        // OpenMetrics names the family without `_total` and ends in
        // `# EOF`; the classic text format, which this is appended to,
        // does neither.
        text.lines()
            .filter(|l| *l != "# EOF")
            .map(|l| {
                let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                    l.strip_prefix(p)?
                        .strip_prefix("coalmine_notifications ")
                        .map(|rest| format!("{p}coalmine_notifications_total {rest}"))
                });
                renamed.unwrap_or_else(|| l.to_owned()) + "\n"
            })
            .collect()
    }

    fn failed_try(&self, url: &str, why: &str) {
        self.failed_tries.inc();
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(format!("{url}: {why}"));
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A future a [`UrlSource`] answers with: the URL, or why it cannot be
/// had (which must not contain the URL).
pub type UrlFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Where a webhook's URL comes from, read before every message (so a
/// rotated Secret takes effect at the next one).
pub trait UrlSource: Send + Sync + 'static {
    /// The URL to post to.
    fn url(&self) -> UrlFuture<'_>;
}

/// A URL written in the spec.
struct Fixed(String);

impl UrlSource for Fixed {
    fn url(&self) -> UrlFuture<'_> {
        let url = self.0.clone();
        Box::pin(async move { Ok(url) })
    }
}

/// One webhook: where its URL comes from, the name logs and the status
/// give it, its body format and the transitions it wants.
#[derive(Clone)]
pub struct Target {
    /// How logs, `lastError` and metrics name it: the URL when it is
    /// written in the spec, never a URL read from a Secret.
    pub label: String,
    /// Where its URL comes from.
    pub url: Arc<dyn UrlSource>,
    /// The body.
    pub format: NotificationFormat,
    /// The transitions it is told about; all of them when empty.
    pub on: Vec<Transition>,
}

impl Target {
    /// The webhook of a spec whose `url` is written in it; `None` for one
    /// with `urlFrom` (the program that can read it builds the target).
    pub fn written(spec: &NotificationSpec) -> Option<Target> {
        let url = spec.url.clone()?;
        Some(Target {
            label: url.clone(),
            url: Arc::new(Fixed(url)),
            format: spec.format.unwrap_or_default(),
            on: spec.on.clone(),
        })
    }
}

/// The webhooks of one Canary.
#[derive(Clone)]
pub struct Notifier {
    targets: Vec<(Target, mpsc::Sender<Arc<Notice>>)>,
    counts: Arc<Counts>,
}

impl Notifier {
    /// Starts one sending task per webhook written in `specs` (inside a
    /// Tokio runtime).
    pub fn start(specs: &[NotificationSpec]) -> Notifier {
        Notifier::with_timing(specs, TIMEOUT, BACKOFF)
    }

    /// [`Notifier::start`] counting in the given counters.
    pub fn with_counts(specs: &[NotificationSpec], counts: Arc<Counts>) -> Notifier {
        Notifier::build(written(specs), counts, TIMEOUT, BACKOFF)
    }

    /// [`Notifier::start`] with other bounds, for tests.
    pub fn with_timing(
        specs: &[NotificationSpec],
        timeout: Duration,
        backoff: Duration,
    ) -> Notifier {
        Notifier::build(
            written(specs),
            Arc::new(Counts::default()),
            timeout,
            backoff,
        )
    }

    /// One sending task per target, counting in `counts`.
    pub fn with_targets(targets: Vec<Target>, counts: Arc<Counts>) -> Notifier {
        Notifier::build(targets, counts, TIMEOUT, BACKOFF)
    }

    /// [`Notifier::with_targets`] with other bounds, for tests.
    pub fn with_targets_timing(
        targets: Vec<Target>,
        counts: Arc<Counts>,
        timeout: Duration,
        backoff: Duration,
    ) -> Notifier {
        Notifier::build(targets, counts, timeout, backoff)
    }

    fn build(
        targets: Vec<Target>,
        counts: Arc<Counts>,
        timeout: Duration,
        backoff: Duration,
    ) -> Notifier {
        let client = client();
        let targets = targets
            .into_iter()
            .map(|target| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(
                    target.clone(),
                    rx,
                    client.clone(),
                    counts.clone(),
                    timeout,
                    backoff,
                ));
                (target, tx)
            })
            .collect();
        Notifier { targets, counts }
    }

    /// Whether there is any webhook.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Queues the notice for every webhook that wants its transition;
    /// returns at once.
    pub fn notify(&self, notice: Notice) {
        let Some(kind) = notice.kind else {
            return;
        };
        let notice = Arc::new(notice);
        for (target, tx) in &self.targets {
            if !target.on.is_empty() && !target.on.contains(&kind) {
                continue;
            }
            if tx.try_send(notice.clone()).is_err() {
                self.counts.dropped.inc();
                tracing::warn!(webhook = %target.label, "notification dropped: the webhook's queue is full");
            }
        }
    }

    /// The outcomes so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The outcomes so far, as the status shows them.
    pub fn status(&self) -> coalmine_core::status::NotificationStatus {
        let c = &self.counts;
        coalmine_core::status::NotificationStatus {
            sent: c.sent.get(),
            failed: c.failed.get(),
            dropped: c.dropped.get(),
            last_error: c.last_error(),
        }
    }
}

/// The targets of the specs whose URL is written in them.
fn written(specs: &[NotificationSpec]) -> Vec<Target> {
    specs.iter().filter_map(Target::written).collect()
}

/// One client for every webhook: plain HTTP, and HTTPS checked against the
/// system's root certificates (with none found, HTTPS posts fail and say
/// so; HTTP still works).
fn client() -> HttpsClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        tracing::warn!("no root certificates found: https:// notifications will fail");
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = match config {
        Ok(config) => builder.with_tls_config(config),
        // The ring provider supports the default versions; should that
        // ever fail, the process-wide default still serves.
        Err(_) => builder.with_tls_config(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
    .https_or_http()
    .enable_http1()
    .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Posts each queued notice to one webhook, in order.
async fn deliver(
    target: Target,
    mut rx: mpsc::Receiver<Arc<Notice>>,
    client: HttpsClient,
    counts: Arc<Counts>,
    timeout: Duration,
    backoff: Duration,
) {
    while let Some(notice) = rx.recv().await {
        let body = Bytes::from(body(target.format, &notice));
        let mut pause = backoff;
        let mut delivered = false;
        for attempt in 1..=ATTEMPTS {
            let tried = match target.url.url().await {
                Ok(url) if is_http_url(&url) => post(&client, &url, body.clone(), timeout).await,
                // The value is not echoed: it may be a secret gone wrong.
                Ok(_) => Err((
                    "the URL is not an http:// or https:// URL".to_owned(),
                    false,
                )),
                Err(why) => Err((why, true)),
            };
            match tried {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err((why, retry)) => {
                    counts.failed_try(&target.label, &why);
                    tracing::warn!(webhook = %target.label, attempt, "notification not delivered: {why}");
                    if !retry || attempt == ATTEMPTS {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        let counter = if delivered {
            &counts.sent
        } else {
            &counts.failed
        };
        counter.inc();
    }
}

/// One try: `Err((why, whether another try may succeed))`.
async fn post(
    client: &HttpsClient,
    url: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(), (String, bool)> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, HeaderValue::from_static("coalmine-notify"))
        .body(Full::new(body))
        .map_err(|e| (format!("not a usable URL: {e}"), false))?;
    let send = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| (format!("no answer: {}", chain(&e)), true))?;
        let status = resp.status();
        // Read the answer so the connection can be reused.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            let retry =
                status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
            Err((format!("answered {status}"), retry))
        }
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(result) => result,
        Err(_) => Err((
            format!("no answer within {} s", timeout.as_secs_f64()),
            true,
        )),
    }
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// A notice for an event of the state machine (or of the platform), or
/// `None` when the event is not a transition people are told about.
#[allow(clippy::too_many_arguments)]
pub fn notice_for(
    canary: &str,
    namespace: Option<&str>,
    reason: &str,
    message: &str,
    warning: bool,
    status: &coalmine_core::CanaryStatus,
    at: Time,
) -> Option<Notice> {
    let kind = Transition::of_event(reason, status.phase)?;
    let metrics: Vec<MetricStatus> = status
        .analysis
        .iter()
        .flat_map(|a| &a.metrics)
        .filter(|m| {
            kind != Transition::RolledBack
                || matches!(m.verdict, coalmine_core::status::Verdict::Fail)
        })
        .cloned()
        .collect();
    Some(Notice {
        canary: canary.to_owned(),
        namespace: namespace.map(str::to_owned),
        transition: kind.as_str(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        warning,
        phase: status.phase,
        step: status.step,
        weight: status.weight.get(),
        stable_revision: status.stable_revision.clone(),
        canary_revision: status.canary_revision.clone(),
        at,
        metrics,
        kind: Some(kind),
    })
}
