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

#![forbid(unsafe_code)]

pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coalmine_core::Time;
use coalmine_core::human::{evidence, percent, ratio};
use coalmine_core::spec::{NotificationFormat, NotificationSpec, Transition};
use coalmine_core::status::{MetricStatus, Phase};
use http::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
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

    /// The last failure, as `URL: what went wrong`.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn failed_try(&self, url: &str, why: &str) {
        self.failed_tries.inc();
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(format!("{url}: {why}"));
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The webhooks of one Canary.
#[derive(Clone)]
pub struct Notifier {
    targets: Vec<(NotificationSpec, mpsc::Sender<Arc<Notice>>)>,
    counts: Arc<Counts>,
}

impl Notifier {
    /// Starts one sending task per webhook (inside a Tokio runtime).
    pub fn start(specs: &[NotificationSpec]) -> Notifier {
        Notifier::with_timing(specs, TIMEOUT, BACKOFF)
    }

    /// [`Notifier::start`] counting in the given counters.
    pub fn with_counts(specs: &[NotificationSpec], counts: Arc<Counts>) -> Notifier {
        Notifier::build(specs, counts, TIMEOUT, BACKOFF)
    }

    /// [`Notifier::start`] with other bounds, for tests.
    pub fn with_timing(
        specs: &[NotificationSpec],
        timeout: Duration,
        backoff: Duration,
    ) -> Notifier {
        Notifier::build(specs, Arc::new(Counts::default()), timeout, backoff)
    }

    fn build(
        specs: &[NotificationSpec],
        counts: Arc<Counts>,
        timeout: Duration,
        backoff: Duration,
    ) -> Notifier {
        let client = client();
        let targets = specs
            .iter()
            .map(|spec| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(
                    spec.clone(),
                    rx,
                    client.clone(),
                    counts.clone(),
                    timeout,
                    backoff,
                ));
                (spec.clone(), tx)
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
        for (spec, tx) in &self.targets {
            if !spec.on.is_empty() && !spec.on.contains(&kind) {
                continue;
            }
            if tx.try_send(notice.clone()).is_err() {
                self.counts.dropped.inc();
                tracing::warn!(url = %spec.url, "notification dropped: the webhook's queue is full");
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
    spec: NotificationSpec,
    mut rx: mpsc::Receiver<Arc<Notice>>,
    client: HttpsClient,
    counts: Arc<Counts>,
    timeout: Duration,
    backoff: Duration,
) {
    let format = spec.format.unwrap_or_default();
    while let Some(notice) = rx.recv().await {
        let body = Bytes::from(body(format, &notice));
        let mut pause = backoff;
        let mut delivered = false;
        for attempt in 1..=ATTEMPTS {
            match post(&client, &spec.url, body.clone(), timeout).await {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err((why, retry)) => {
                    counts.failed_try(&spec.url, &why);
                    tracing::warn!(url = %spec.url, attempt, "notification not delivered: {why}");
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
        weight: status.weight,
        stable_revision: status.stable_revision.clone(),
        canary_revision: status.canary_revision.clone(),
        at,
        metrics,
        kind: Some(kind),
    })
}
