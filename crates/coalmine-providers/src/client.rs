//! The one HTTP client the providers share, and the retry policy.
//!
//! hyper 1's legacy client, plain `http://` only: providers are addressed
//! inside a cluster or on loopback, and TLS would add a large dependency
//! tree for no current user (an `https://` address is refused when the
//! source is built, with that reason).
//!
//! Retries: a call makes at most [`ATTEMPTS`] attempts, pausing
//! [`BACKOFF`] then twice that between them. Each attempt is bounded by the
//! provider's `timeout`, and the whole call by its *budget*, the larger of
//! `timeout` and the analysis interval: a collection that is due once per
//! interval then never runs into the next one, and a timeout longer than
//! the interval still gets one full attempt. Only failures that another
//! attempt can cure are retried: no connection, no answer in time, 5xx,
//! 408 and 429. A 4xx, a malformed answer or an answer that is well-formed
//! but unusable (no series, a missing field) is final at once.
//!
//! Address overrides: a process can tell the client to connect to another
//! address for a provider's `host:port` ([`set_address_overrides`], the
//! controller's `--resolve`), as curl's `--resolve` does. The URL, and so
//! the `Host` header the provider sees, stays as written; only the TCP
//! connection goes elsewhere. A controller running outside the cluster
//! reaches an in-cluster address such as `prometheus.monitoring:9090`
//! this way through a `kubectl port-forward`.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

/// Attempts per call, at most.
pub const ATTEMPTS: u32 = 3;
/// The pause before the second attempt; the third waits twice as long.
pub const BACKOFF: Duration = Duration::from_millis(250);
/// An attempt shorter than this is not started: it could not succeed.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);
/// Largest answer read, so a wrong URL serving a huge file cannot exhaust
/// memory.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Connect to `addr` when a provider URL names `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressOverride {
    /// The host as written in URLs (compared without case).
    pub host: String,
    /// The port as written, or 80 when the URL has none.
    pub port: u16,
    /// Where to connect instead.
    pub addr: SocketAddr,
}

impl std::str::FromStr for AddressOverride {
    type Err = String;

    /// `HOST:PORT=IP:PORT`, e.g. `prometheus.monitoring:9090=127.0.0.1:9090`.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "write HOST:PORT=IP:PORT, e.g. prometheus.monitoring:9090=127.0.0.1:9090";
        let (from, to) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` has no `=`: {usage}"))?;
        let (host, port) = from
            .rsplit_once(':')
            .ok_or_else(|| format!("`{from}` has no port: {usage}"))?;
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(format!("`{host}` is not a host name: {usage}"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port (1-65535): {usage}"))?;
        let addr = to
            .parse::<SocketAddr>()
            .map_err(|_| format!("`{to}` is not an IP:PORT address: {usage}"))?;
        Ok(AddressOverride {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            addr,
        })
    }
}

static OVERRIDES: OnceLock<Vec<AddressOverride>> = OnceLock::new();

/// Sets this process's address overrides, once; `false` when they were
/// already set (the first list stays).
pub fn set_address_overrides(list: Vec<AddressOverride>) -> bool {
    OVERRIDES.set(list).is_ok()
}

/// `uri` aimed at its override's address, and the authority to send as
/// `Host`, when an override names its `host:port`.
fn redirect(list: &[AddressOverride], uri: &Uri) -> Option<(Uri, String)> {
    let authority = uri.authority()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let o = list
        .iter()
        .find(|o| o.port == port && o.host.eq_ignore_ascii_case(host))?;
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(o.addr.to_string().parse().ok()?);
    let target = Uri::from_parts(parts).ok()?;
    Some((target, authority.as_str().to_owned()))
}

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// Another attempt may succeed (no connection, 5xx, 429…).
    Retry(String),
    /// Another attempt would get the same answer.
    Final(String),
}

/// A complete answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as text, cut to a readable length for messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let mut short: String = text.chars().take(200).collect();
        if short.len() < text.len() {
            short.push('…');
        }
        short
    }

    /// Whether the status is worth another attempt.
    pub fn retryable_status(&self) -> bool {
        self.status.is_server_error()
            || self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::REQUEST_TIMEOUT
    }
}

/// One request to make, possibly several times.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Option<String>,
}

/// The shared client.
#[derive(Clone)]
pub(crate) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new() -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Plain http only; see the module docs.
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Http { client }
    }

    /// Makes `call` until `judge` accepts an answer, it says the failure is
    /// final, or the attempts or the budget run out; the error is the last
    /// reason, with how many attempts were made.
    pub async fn call<T>(
        &self,
        call: &Call,
        timeout: Duration,
        budget: Duration,
        judge: impl Fn(Answer) -> Result<T, Failure>,
    ) -> Result<T, String> {
        let start = Instant::now();
        let deadline = start + budget.max(timeout);
        let mut last = String::from("no attempt could be made");
        let mut made = 0;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let pause = BACKOFF * (1 << (attempt - 1));
                if Instant::now() + pause + MIN_ATTEMPT > deadline {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = timeout.min(left);
            if limit < MIN_ATTEMPT && attempt > 0 {
                break;
            }
            made += 1;
            match tokio::time::timeout(limit, self.once(call)).await {
                Err(_) => {
                    last = format!("no answer from {} within {}", call.url, show(limit));
                }
                Ok(Err(failure)) => match failure {
                    Failure::Final(why) => return Err(why),
                    Failure::Retry(why) => last = why,
                },
                Ok(Ok(answer)) => match judge(answer) {
                    Ok(v) => return Ok(v),
                    Err(Failure::Final(why)) => return Err(why),
                    Err(Failure::Retry(why)) => last = why,
                },
            }
        }
        let plural = if made == 1 { "attempt" } else { "attempts" };
        Err(format!(
            "{last} (gave up after {made} {plural} in {})",
            show(start.elapsed())
        ))
    }

    async fn once(&self, call: &Call) -> Result<Answer, Failure> {
        let uri: Uri = call
            .url
            .parse()
            .map_err(|e| Failure::Final(format!("`{}` is not a valid URL: {e}", call.url)))?;
        let (uri, host) = match OVERRIDES.get().and_then(|list| redirect(list, &uri)) {
            Some((target, host)) => (target, Some(host)),
            None => (uri, None),
        };
        let mut req = Request::builder().method(call.method.clone()).uri(uri);
        for (name, value) in &call.headers {
            req = req.header(name, value);
        }
        if let Some(host) = host.filter(|_| !call.headers.contains_key(HOST)) {
            req = req.header(HOST, host);
        }
        let has_type = call.headers.contains_key(CONTENT_TYPE);
        let body = match &call.body {
            Some(b) => {
                if !has_type {
                    req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Bytes::from(b.clone())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| Failure::Final(format!("cannot build a request to {}: {e}", call.url)))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| Failure::Retry(format!("{} failed: {}", call.url, chain(&e))))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                Failure::Retry(format!(
                    "reading the answer from {} failed: {}",
                    call.url,
                    chain(e.as_ref())
                ))
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            body,
        })
    }
}

/// Checks and converts the spec's extra headers.
pub(crate) fn header_map(
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header `{name}` has characters HTTP forbids"))?;
        map.append(n, v);
    }
    Ok(map)
}

/// An error and its causes, `outer: inner: root`, since hyper's own
/// message ("client error (Connect)") hides the useful part.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A duration for messages: `5s`, `1.25s`, `300ms`.
pub(crate) fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_overrides_parse_and_name_the_mistake() {
        let o: AddressOverride = "Prometheus.monitoring:9090=127.0.0.1:19090"
            .parse()
            .expect("valid");
        assert_eq!(o.host, "Prometheus.monitoring");
        assert_eq!(o.port, 9090);
        assert_eq!(o.addr, "127.0.0.1:19090".parse().expect("addr"));
        for (bad, names) in [
            ("prometheus:9090", "no `=`"),
            ("prometheus=127.0.0.1:1", "no port"),
            ("prometheus:x=127.0.0.1:1", "not a port"),
            (":80=127.0.0.1:1", "not a host"),
            ("prometheus:80=localhost:1", "not an IP:PORT"),
        ] {
            let e = bad.parse::<AddressOverride>().expect_err(bad);
            assert!(e.contains(names) && e.contains("HOST:PORT=IP:PORT"), "{e}");
        }
    }

    #[test]
    fn an_override_redirects_only_its_host_and_port_and_keeps_the_host() {
        let list = vec![
            "prometheus.monitoring:9090=127.0.0.1:19090"
                .parse::<AddressOverride>()
                .expect("valid"),
            "stats.shop:80=[::1]:8080".parse().expect("valid"),
        ];
        let uri: Uri = "http://PROMETHEUS.monitoring:9090/api/v1/query?query=up"
            .parse()
            .expect("uri");
        let (to, host) = redirect(&list, &uri).expect("redirected");
        assert_eq!(
            to.to_string(),
            "http://127.0.0.1:19090/api/v1/query?query=up"
        );
        assert_eq!(host, "PROMETHEUS.monitoring:9090");
        let uri: Uri = "http://stats.shop/failures".parse().expect("uri");
        let (to, host) = redirect(&list, &uri).expect("default port 80");
        assert_eq!(to.to_string(), "http://[::1]:8080/failures");
        assert_eq!(host, "stats.shop");
        for other in [
            "http://prometheus.monitoring:9091/",
            "http://prometheus:9090/",
            "http://127.0.0.1:9090/",
        ] {
            let uri: Uri = other.parse().expect("uri");
            assert!(redirect(&list, &uri).is_none(), "{other}");
        }
    }

    #[test]
    fn durations_for_messages() {
        assert_eq!(show(Duration::from_millis(300)), "300ms");
        assert_eq!(show(Duration::from_secs(5)), "5s");
        assert_eq!(show(Duration::from_millis(1250)), "1.25s");
    }

    #[test]
    fn headers_are_checked() {
        let mut h = std::collections::BTreeMap::new();
        h.insert("authorization".to_owned(), "Bearer x".to_owned());
        assert!(header_map(&h).is_ok());
        h.insert("bad name".to_owned(), "x".to_owned());
        assert!(header_map(&h).expect_err("bad name").contains("`bad name`"));
        let mut h = std::collections::BTreeMap::new();
        h.insert("x-a".to_owned(), "line\nbreak".to_owned());
        assert!(header_map(&h).expect_err("bad value").contains("`x-a`"));
    }
}
