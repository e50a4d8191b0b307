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

use std::time::Duration;

use coalmine_analysis::eprocess::Interval;
use coalmine_analysis::judge::Observed;
use coalmine_proxy::route::Track;
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
        }
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
