//! The `prometheus` provider: instant queries against Prometheus's HTTP API
//! (`GET {address}/api/v1/query?query=...`).
//!
//! A comparison metric runs its `total` and `bad` queries for each track
//! (four queries, concurrently); a threshold metric runs `query` once, with
//! `{{track}}` filled as `canary`. Each query must answer exactly one
//! number: a one-series vector or a scalar. Everything else is NoData with
//! the reason the user needs to fix the query:
//!
//! - no series: `query returned no series: <query>` (the labels match
//!   nothing, or nothing was scraped in the window);
//! - several: `query returned N series; aggregate it, e.g. sum(...)`;
//! - `NaN` or `±Inf` (`0/0`, a quantile of an empty histogram);
//! - `status: error`: Prometheus's own error text (a syntax error, say);
//! - a range vector (matrix) or a string.
//!
//! Counts may be fractional (`increase()` extrapolates to the window's
//! edges) and are rounded to the nearest integer; a negative count is
//! NoData. HTTP 5xx answers (Prometheus's timeouts and overload) are
//! retried, 4xx (a bad query) are not.
//!
//! The analysis interval must be long enough for the targets' scrape
//! interval: an exact difference (`x - x offset {{interval}}`) needs at
//! least one scrape per interval, and `increase()` or `rate()` two samples
//! in the window. At the first collection the provider asks Prometheus
//! which active targets expose the metrics named in the queries
//! (`/api/v1/targets/metadata`) and at what interval they are scraped
//! (`/api/v1/targets`); a shorter analysis interval is NoData with a
//! message naming `spec.analysis.interval` and the interval that works.
//! When Prometheus cannot tell (no such targets, an older server, a
//! remote-storage front end without those endpoints), nothing is checked.

use std::time::Duration;

use coalmine_analysis::eprocess::Interval;
use coalmine_analysis::judge::Observed;
use coalmine_core::routes::Track;
use http::{HeaderMap, Method};
use serde_json::Value;

use crate::Context;
use crate::client::{Answer, Call, Failure, Http};
use crate::template::{self, Vars};

/// What the metric asks Prometheus.
#[derive(Debug, Clone)]
pub(crate) enum Queries {
    /// Comparison: requests and bad requests per track.
    Compare { total: String, bad: String },
    /// Threshold: one value.
    Value { query: String },
}

/// The Prometheus provider for one metric.
pub(crate) struct PrometheusCollector {
    /// Base URL without a trailing slash.
    address: String,
    queries: Queries,
    headers: HeaderMap,
    timeout: Duration,
    http: Http,
    /// The slowest scrape interval of the targets behind the queries, and
    /// one of those targets, looked up at the first collection.
    scrape: tokio::sync::OnceCell<Option<(Duration, String)>>,
}

impl PrometheusCollector {
    pub fn new(
        address: &str,
        queries: Queries,
        headers: HeaderMap,
        timeout: Duration,
    ) -> PrometheusCollector {
        PrometheusCollector {
            address: address.trim_end_matches('/').to_owned(),
            queries,
            headers,
            timeout,
            http: Http::new(),
            scrape: tokio::sync::OnceCell::new(),
        }
    }

    /// One GET of the HTTP API, as JSON (`None` on any failure: the
    /// lookups it serves are best effort).
    async fn get_json(&self, path_and_query: &str, budget: Duration) -> Option<Value> {
        let call = Call {
            method: Method::GET,
            url: format!("{}{path_and_query}", self.address),
            headers: self.headers.clone(),
            body: None,
        };
        self.http
            .call(&call, self.timeout, budget, |a| {
                if !a.status.is_success() {
                    return Err(Failure::Final(format!("HTTP {}", a.status)));
                }
                serde_json::from_slice::<Value>(&a.body).map_err(|e| Failure::Final(e.to_string()))
            })
            .await
            .ok()
    }

    /// The slowest scrape interval among the active targets that expose
    /// the metrics the queries name.
    async fn lookup_scrape(&self, budget: Duration) -> Option<(Duration, String)> {
        let templates: Vec<&str> = match &self.queries {
            Queries::Compare { total, bad } => vec![total, bad],
            Queries::Value { query } => vec![query],
        };
        let names: std::collections::BTreeSet<String> =
            templates.iter().flat_map(|q| metric_names(q)).collect();
        let mut exposing = std::collections::BTreeSet::new();
        for name in &names {
            let doc = self
                .get_json(
                    &format!(
                        "/api/v1/targets/metadata?metric={}",
                        template::percent_encode(name)
                    ),
                    budget,
                )
                .await?;
            for entry in doc.get("data")?.as_array()? {
                let target = entry.get("target")?;
                let label = |k: &str| target.get(k).and_then(Value::as_str).unwrap_or("");
                exposing.insert((label("job").to_owned(), label("instance").to_owned()));
            }
        }
        let doc = self
            .get_json("/api/v1/targets?state=active", budget)
            .await?;
        let mut slowest: Option<(Duration, String)> = None;
        for target in doc.get("data")?.get("activeTargets")?.as_array()? {
            let labels = target.get("labels");
            let label = |k: &str| {
                labels
                    .and_then(|l| l.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let (job, instance) = (label("job"), label("instance"));
            if !exposing.contains(&(job.clone(), instance.clone())) {
                continue;
            }
            let Some(every) = target
                .get("scrapeInterval")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<coalmine_core::Duration>().ok())
                .map(|d| d.to_std())
            else {
                continue;
            };
            if slowest.as_ref().is_none_or(|(d, _)| every > *d) {
                slowest = Some((every, format!("job=\"{job}\", instance=\"{instance}\"")));
            }
        }
        slowest
    }

    /// Why the analysis interval is too short for the scrape interval, if
    /// it is.
    async fn window_problem(&self, ctx: &Context, budget: Duration) -> Option<String> {
        let (scrape, target) = self
            .scrape
            .get_or_init(|| self.lookup_scrape(budget))
            .await
            .as_ref()?;
        let templates: Vec<&str> = match &self.queries {
            Queries::Compare { total, bad } => vec![total, bad],
            Queries::Value { query } => vec![query],
        };
        window_problem(&templates, ctx.interval, *scrape, target)
    }

    /// The API URL for one (filled-in) query.
    pub fn url(&self, query: &str) -> String {
        format!(
            "{}/api/v1/query?query={}",
            self.address,
            template::percent_encode(query)
        )
    }

    /// One instant query's single value.
    async fn query(&self, query: &str, budget: Duration) -> Result<f64, String> {
        let call = Call {
            method: Method::GET,
            url: self.url(query),
            headers: self.headers.clone(),
            body: None,
        };
        self.http
            .call(&call, self.timeout, budget, |a| interpret(&a, query))
            .await
    }

    async fn count(
        &self,
        template: &str,
        ctx: &Context,
        track: Track,
        budget: Duration,
    ) -> Result<u64, String> {
        let q = template::fill(
            template,
            Vars {
                context: ctx,
                track,
            },
            template::verbatim,
        );
        let v = self.query(&q, budget).await?;
        if v < 0.0 {
            return Err(format!("query returned {v}, a negative count: {q}"));
        }
        Ok(v.round() as u64)
    }

    pub async fn collect(&self, ctx: &Context, budget: Duration) -> Observed {
        if let Some(why) = self.window_problem(ctx, budget).await {
            return Observed::NoData(why);
        }
        match &self.queries {
            Queries::Compare { total, bad } => {
                let (ct, cb, st, sb) = tokio::join!(
                    self.count(total, ctx, Track::Canary, budget),
                    self.count(bad, ctx, Track::Canary, budget),
                    self.count(total, ctx, Track::Stable, budget),
                    self.count(bad, ctx, Track::Stable, budget),
                );
                match (ct, cb, st, sb) {
                    (Ok(canary_total), Ok(canary_bad), Ok(stable_total), Ok(stable_bad)) => {
                        Observed::Counts(Interval {
                            canary_total,
                            canary_bad,
                            stable_total,
                            stable_bad,
                            canary_share: None,
                        })
                    }
                    (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                        Observed::NoData(e)
                    }
                }
            }
            Queries::Value { query } => {
                let q = template::fill(
                    query,
                    Vars {
                        context: ctx,
                        track: Track::Canary,
                    },
                    template::verbatim,
                );
                match self.query(&q, budget).await {
                    Ok(v) => Observed::Value(v),
                    Err(e) => Observed::NoData(e),
                }
            }
        }
    }
}

/// The metric names a PromQL query selects: identifiers followed by a
/// label matcher `{`. Names without matchers are not seen (the check is
/// then made on the others, or not at all). Template fields (`{{track}}`)
/// and quoted strings are skipped.
pub(crate) fn metric_names(query: &str) -> Vec<String> {
    const KEYWORDS: [&str; 10] = [
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
    ];
    // Template fields become a neutral character first.
    let mut text = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        text.push_str(&rest[..start]);
        text.push('0');
        rest = rest[start..]
            .find("}}")
            .map_or("", |end| &rest[start + end + 2..]);
    }
    text.push_str(rest);
    let chars: Vec<char> = text.chars().collect();
    let skip_quoted = |mut i: usize| -> usize {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    let skip_matcher = |mut i: usize| -> usize {
        while i < chars.len() && chars[i] != '}' {
            i = if matches!(chars[i], '"' | '\'' | '`') {
                skip_quoted(i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if chars.get(j) == Some(&'{') {
                if !KEYWORDS.contains(&name.as_str()) {
                    names.push(name);
                }
                i = skip_matcher(j + 1);
            }
        } else if c == '{' {
            i = skip_matcher(i + 1);
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_quoted(i);
        } else {
            i += 1;
        }
    }
    names
}

/// Whether an analysis interval suits queries over targets scraped every
/// `scrape`: an exact difference needs a scrape per interval, `increase()`,
/// `rate()` and `irate()` two samples in their window.
pub(crate) fn window_problem(
    templates: &[&str],
    interval: Duration,
    scrape: Duration,
    target: &str,
) -> Option<String> {
    let extrapolates = templates
        .iter()
        .any(|q| q.contains("increase(") || q.contains("rate("));
    let (needed, why) = if extrapolates {
        (
            2 * scrape,
            "increase() and rate() need two samples in their window",
        )
    } else {
        (scrape, "each interval needs a new sample")
    };
    let show = |d: Duration| coalmine_core::Duration::from_millis(d.as_millis() as u64).to_string();
    (interval < needed).then(|| {
        format!(
            "spec.analysis.interval: {} is shorter than Prometheus's scrape interval allows ({} for {target}; {why}): set spec.analysis.interval to at least {}",
            show(interval),
            show(scrape),
            show(needed)
        )
    })
}

/// The single value of an API answer to `query`, or why there is none.
pub(crate) fn interpret(answer: &Answer, query: &str) -> Result<f64, Failure> {
    let doc: Value = match serde_json::from_slice(&answer.body) {
        Ok(v) => v,
        Err(_) => {
            let why = format!(
                "Prometheus answered HTTP {} that is not JSON: {}",
                answer.status,
                answer.snippet()
            );
            return Err(if answer.retryable_status() {
                Failure::Retry(why)
            } else {
                Failure::Final(why)
            });
        }
    };
    let status = doc.get("status").and_then(Value::as_str).unwrap_or("");
    if status == "error" || !answer.status.is_success() {
        let kind = doc
            .get("errorType")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let text = doc
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| answer.snippet(), str::to_owned);
        let why = format!(
            "Prometheus error ({kind}, HTTP {}): {text}; query: {query}",
            answer.status.as_u16()
        );
        return Err(if answer.retryable_status() {
            Failure::Retry(why)
        } else {
            Failure::Final(why)
        });
    }
    if status != "success" {
        return Err(Failure::Final(format!(
            "Prometheus answered without `status: success`: {}",
            answer.snippet()
        )));
    }
    let data = doc.get("data");
    let kind = data
        .and_then(|d| d.get("resultType"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let result = data.and_then(|d| d.get("result"));
    let sample = match (kind, result) {
        ("vector", Some(Value::Array(series))) => match series.as_slice() {
            [] => return Err(Failure::Final(format!("query returned no series: {query}"))),
            [one] => one.get("value"),
            many => {
                return Err(Failure::Final(format!(
                    "query returned {} series; aggregate it, e.g. sum(...): {query}",
                    many.len()
                )));
            }
        },
        ("scalar", Some(v)) => Some(v),
        ("matrix", _) => {
            return Err(Failure::Final(format!(
                "query returned a range vector; give an instant vector, e.g. sum(increase(x[{{{{interval}}}}])): {query}"
            )));
        }
        ("string", _) => {
            return Err(Failure::Final(format!(
                "query returned a string, not a number: {query}"
            )));
        }
        _ => {
            return Err(Failure::Final(format!(
                "Prometheus answered an unknown result: {}",
                answer.snippet()
            )));
        }
    };
    // A sample is `[unix_time, "value"]`.
    let text = sample
        .and_then(|s| s.get(1))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Failure::Final(format!(
                "Prometheus answered a sample without a value: {}",
                answer.snippet()
            ))
        })?;
    match crate::textformat::parse_value(text) {
        Some(v) if v.is_nan() => Err(Failure::Final(format!("query returned NaN: {query}"))),
        Some(v) if v.is_infinite() => Err(Failure::Final(format!(
            "query returned {}Inf: {query}",
            if v > 0.0 { "+" } else { "-" }
        ))),
        Some(v) => Ok(v),
        None => Err(Failure::Final(format!(
            "Prometheus answered `{text}`, not a number: {query}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("a status"),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn metric_names_are_the_selected_series() {
        assert_eq!(
            metric_names(
                r#"sum(http_requests_total{app="a:b",track="{{track}}"}) - sum(http_requests_total{track="x"} offset {{interval}})"#
            ),
            ["http_requests_total", "http_requests_total"]
        );
        assert_eq!(
            metric_names(r#"sum(increase(errors:total {code=~"5.."}[{{interval}}]))"#),
            ["errors:total"]
        );
        assert!(metric_names("0/0").is_empty());
        assert_eq!(
            metric_names(r#"sum by (code) (rate(y{path="/{a}"}[5m])) / on() z {le="+Inf"}"#),
            ["y", "z"]
        );
    }

    #[test]
    fn the_window_must_fit_the_scrape_interval() {
        let s = Duration::from_secs;
        let exact = [r#"sum(x{track="canary"}) - sum(x{track="canary"} offset 10s)"#];
        let increase = [r#"sum(increase(x{track="canary"}[10s]))"#];
        assert_eq!(window_problem(&exact, s(15), s(15), "t"), None);
        assert_eq!(window_problem(&increase, s(30), s(15), "t"), None);
        let why = window_problem(&exact, s(10), s(15), r#"job="app""#).expect("refused");
        assert_eq!(
            why,
            r#"spec.analysis.interval: 10s is shorter than Prometheus's scrape interval allows (15s for job="app"; each interval needs a new sample): set spec.analysis.interval to at least 15s"#
        );
        let why = window_problem(&increase, s(20), s(15), "t").expect("refused");
        assert!(
            why.contains("two samples") && why.ends_with("at least 30s"),
            "{why}"
        );
    }

    fn value(status: u16, body: &str) -> Result<f64, Failure> {
        interpret(&answer(status, body), "q")
    }

    fn final_reason(r: Result<f64, Failure>) -> String {
        match r {
            Err(Failure::Final(why)) => why,
            other => panic!("expected a final failure, got {other:?}"),
        }
    }

    #[test]
    fn one_series_or_a_scalar() {
        let v = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.123,"42.5"]}]}}"#;
        assert_eq!(value(200, v), Ok(42.5));
        let s = r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}}"#;
        assert_eq!(value(200, s), Ok(7.0));
    }

    #[test]
    fn unusable_answers_say_why() {
        let none = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(
            final_reason(value(200, none)),
            "query returned no series: q"
        );
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert_eq!(
            final_reason(value(200, two)),
            "query returned 2 series; aggregate it, e.g. sum(...): q"
        );
        let nan = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert_eq!(final_reason(value(200, nan)), "query returned NaN: q");
        let inf = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"-Inf"]}]}}"#;
        assert_eq!(final_reason(value(200, inf)), "query returned -Inf: q");
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(final_reason(value(200, matrix)).contains("range vector"));
        let string = r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert!(final_reason(value(200, string)).contains("a string"));
        assert!(final_reason(value(200, "<html>")).contains("not JSON"));
        assert!(final_reason(value(200, r#"{"status":"success"}"#)).contains("unknown result"));
    }

    #[test]
    fn api_errors_keep_prometheus_text() {
        let bad = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis"}"#;
        let why = final_reason(value(400, bad));
        assert!(why.contains("bad_data"), "{why}");
        assert!(why.contains("unclosed left parenthesis"), "{why}");
        let timeout = r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
        assert!(
            matches!(value(503, timeout), Err(Failure::Retry(w)) if w.contains("query timed out"))
        );
        assert!(matches!(value(502, "Bad Gateway"), Err(Failure::Retry(_))));
    }
}
