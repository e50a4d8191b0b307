//! The `webhook` provider: an HTTP endpoint answering JSON, read with
//! selectors.
//!
//! A comparison metric calls the endpoint once per track, with
//! `{{track}}` (and the other placeholders) filled into the URL and the
//! body, and reads `total` and `bad` from each answer; a threshold metric
//! calls it once, as `canary`, and reads `value`. Placeholder values are
//! percent-encoded in the URL and inserted as they are in the body. A body
//! is sent only with `method: POST`, as `application/json` unless the
//! headers say otherwise.
//!
//! The answer must be JSON with a 2xx status. Numbers may be JSON numbers or
//! strings holding one; counts must not be negative and are rounded to
//! integers. A missing field or a non-number is NoData naming the selector
//! and where the path broke off. 5xx, 408 and 429 answers and network
//! failures are retried; other statuses and unusable answers are not.

use std::time::Duration;

use coalmine_analysis::eprocess::Interval;
use coalmine_analysis::judge::Observed;
use coalmine_core::routes::Track;
use http::{HeaderMap, Method};
use serde_json::Value;

use crate::Context;
use crate::client::{Call, Failure, Http};
use crate::selector::Selector;
use crate::template::{self, Vars};

/// What the metric reads from an answer.
#[derive(Debug, Clone)]
pub(crate) enum Reads {
    /// Comparison: both counts from each track's answer.
    Compare { total: Selector, bad: Selector },
    /// Threshold: one value.
    Value(Selector),
}

/// The webhook provider for one metric.
pub(crate) struct WebhookCollector {
    pub url: String,
    pub method: Method,
    pub body: Option<String>,
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub reads: Reads,
    pub http: Http,
}

impl WebhookCollector {
    /// One call for `track`, as parsed JSON.
    async fn fetch(&self, ctx: &Context, track: Track, budget: Duration) -> Result<Value, String> {
        let vars = Vars {
            context: ctx,
            track,
        };
        let url = template::fill(&self.url, vars, template::percent_encode);
        let body = match (&self.body, &self.method) {
            (Some(b), &Method::POST) => Some(template::fill(b, vars, template::verbatim)),
            _ => None,
        };
        let call = Call {
            method: self.method.clone(),
            url: url.clone(),
            headers: self.headers.clone(),
            body,
        };
        self.http
            .call(&call, self.timeout, budget, |a| {
                if a.status.is_success() {
                    serde_json::from_slice::<Value>(&a.body).map_err(|e| {
                        Failure::Final(format!(
                            "the answer from {url} is not JSON ({e}): {}",
                            a.snippet()
                        ))
                    })
                } else if a.retryable_status() {
                    Err(Failure::Retry(format!(
                        "HTTP {} from {url}: {}",
                        a.status,
                        a.snippet()
                    )))
                } else {
                    Err(Failure::Final(format!(
                        "HTTP {} from {url}: {}",
                        a.status,
                        a.snippet()
                    )))
                }
            })
            .await
    }

    async fn counts(
        &self,
        ctx: &Context,
        track: Track,
        total: &Selector,
        bad: &Selector,
        budget: Duration,
    ) -> Result<(u64, u64), String> {
        let doc = self.fetch(ctx, track, budget).await?;
        let count = |s: &Selector| -> Result<u64, String> {
            let v = s
                .number(&doc)
                .map_err(|e| format!("{} answer: {e}", track.as_str()))?;
            if v < 0.0 {
                return Err(format!(
                    "{} answer: `{s}` is {v}, a negative count",
                    track.as_str()
                ));
            }
            Ok(v.round() as u64)
        };
        Ok((count(total)?, count(bad)?))
    }

    pub async fn collect(&self, ctx: &Context, budget: Duration) -> Observed {
        match &self.reads {
            Reads::Compare { total, bad } => {
                let (canary, stable) = tokio::join!(
                    self.counts(ctx, Track::Canary, total, bad, budget),
                    self.counts(ctx, Track::Stable, total, bad, budget),
                );
                match (canary, stable) {
                    (Ok(c), Ok(s)) => Observed::Counts(Interval {
                        canary_total: c.0,
                        canary_bad: c.1,
                        stable_total: s.0,
                        stable_bad: s.1,
                        canary_share: None,
                    }),
                    (Err(e), _) | (_, Err(e)) => Observed::NoData(e),
                }
            }
            Reads::Value(sel) => match self.fetch(ctx, Track::Canary, budget).await {
                Ok(doc) => match sel.number(&doc) {
                    Ok(v) => Observed::Value(v),
                    Err(e) => Observed::NoData(e),
                },
                Err(e) => Observed::NoData(e),
            },
        }
    }
}
