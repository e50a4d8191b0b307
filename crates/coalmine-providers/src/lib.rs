//! coalmine's metric providers: the I/O edge of the analysis.
//!
//! The judge (`coalmine-analysis`) is pure: it is handed one
//! [`Observed`] per metric and interval. This crate fetches those numbers.
//! A [`MetricSource`] is built from a checked [`MetricPlan`] and asked
//! once per analysis interval to [`MetricSource::collect`]; it answers
//! counts per track, a value, latency counts with histograms, or NoData
//! with a reason a person can act on. It never panics and never returns
//! a guess: whatever cannot be read is NoData, which the judge never
//! counts as a pass.
//!
//! Layout:
//! - [`builtin`]: the proxy's own counters, in process or scraped from
//!   `/metrics` (one proxy, or every replica of one, summed), as
//!   per-interval deltas;
//! - [`prometheus`]: instant queries against Prometheus's HTTP API;
//! - [`webhook`]: an HTTP endpoint answering JSON;
//! - [`template`]: `{{track}}`, `{{interval}}`, `{{name}}`, `{{namespace}}`;
//! - [`textformat`]: a tolerant Prometheus text-format reader;
//! - [`selector`]: `$.a.b[0]` paths into JSON answers;
//! - `client`: the shared hyper client, timeouts and retries.
//!
//! `docs/providers.md` describes each provider for users.

#![forbid(unsafe_code)]

pub mod builtin;
mod client;
pub mod prometheus;
pub mod selector;
pub mod template;
pub mod textformat;
pub mod webhook;

use std::time::Duration;

use coalmine_analysis::judge::Observed;
use coalmine_core::plan::{AnalysisPlan, Check, DEFAULT_PROVIDER_TIMEOUT, MetricPlan, Provider};
use coalmine_core::routes::Track;
use coalmine_core::spec::HttpMethod;

use crate::builtin::BuiltinCollector;
pub use crate::builtin::{BuiltinSource, ListReplicas, Replica};
pub use crate::client::{ATTEMPTS, AddressOverride, BACKOFF, set_address_overrides};
use crate::prometheus::{PrometheusCollector, Queries};
use crate::selector::Selector;
use crate::webhook::{Reads, WebhookCollector};

/// What templates are filled with, and how long an interval is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The Canary's name (`{{name}}`).
    pub name: String,
    /// Its namespace (`{{namespace}}`; empty in local mode).
    pub namespace: String,
    /// The analysis interval (`{{interval}}`, e.g. `10s`); also the time
    /// budget of one collection, retries included.
    pub interval: Duration,
}

/// Why a metric's source could not be built. These are configuration
/// problems, found before the first interval rather than as NoData in
/// every one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A builtin metric, and no proxy to read.
    #[error(
        "metric `{metric}` reads the proxy's counters (builtin), and there is no coalmine proxy to read here: use prometheus or webhook"
    )]
    NoBuiltinSource {
        /// The metric's name.
        metric: String,
    },
    /// An `https://` address.
    #[error(
        "metric `{metric}`: `{url}` uses https, which coalmine's providers do not support yet: give an http:// address (in-cluster, or through a local proxy)"
    )]
    Https {
        /// The metric's name.
        metric: String,
        /// The address as written.
        url: String,
    },
    /// An address that is not a usable URL.
    #[error("metric `{metric}`: `{url}` is not a usable http:// URL: {why}")]
    Url {
        /// The metric's name.
        metric: String,
        /// The address as written.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Something else in the provider's settings.
    #[error("metric `{metric}`: {field}: {why}")]
    Field {
        /// The metric's name.
        metric: String,
        /// The field, e.g. `webhook.total`.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

enum Inner {
    Builtin(BuiltinCollector),
    Prometheus(PrometheusCollector),
    Webhook(WebhookCollector),
}

/// One metric's provider, keeping what it needs between intervals (the
/// builtin baseline, the HTTP connection pool).
pub struct MetricSource {
    name: String,
    inner: Inner,
}

impl std::fmt::Debug for MetricSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Builtin(_) => "builtin",
            Inner::Prometheus(_) => "prometheus",
            Inner::Webhook(_) => "webhook",
        };
        f.debug_struct("MetricSource")
            .field("name", &self.name)
            .field("provider", &kind)
            .finish()
    }
}

impl MetricSource {
    /// The source for `plan`. `builtin` says where the proxy's counters
    /// are; it is needed only by builtin metrics. An in-process builtin
    /// source takes its baseline here.
    pub fn new(
        plan: &MetricPlan,
        builtin: Option<&BuiltinSource>,
    ) -> Result<MetricSource, SourceError> {
        let metric = plan.name.clone();
        let field = |field: &'static str, why: String| SourceError::Field {
            metric: metric.clone(),
            field,
            why,
        };
        let threshold = matches!(plan.check, Check::Threshold { .. });
        let inner = match &plan.provider {
            Provider::Builtin {
                metric: which,
                slower_than,
            } => {
                let source = builtin.ok_or_else(|| SourceError::NoBuiltinSource {
                    metric: metric.clone(),
                })?;
                if let BuiltinSource::Scrape(url) = source {
                    check_url(&metric, url)?;
                }
                Inner::Builtin(BuiltinCollector::new(
                    source.clone(),
                    *which,
                    slower_than.map(|d| d.to_std()),
                    threshold,
                    DEFAULT_PROVIDER_TIMEOUT.to_std(),
                ))
            }
            Provider::Prometheus(p) => {
                check_url(
                    &metric,
                    &format!("{}/api/v1/query", p.address.trim_end_matches('/')),
                )
                .map_err(|e| with_url(e, &p.address))?;
                let queries = if threshold {
                    Queries::Value {
                        query: p.query.clone().ok_or_else(|| {
                            field("prometheus.query", "is required for a threshold".into())
                        })?,
                    }
                } else {
                    let need = |q: &Option<String>, name: &'static str| {
                        q.clone()
                            .ok_or_else(|| field(name, "is required for a comparison".into()))
                    };
                    Queries::Compare {
                        total: need(&p.total, "prometheus.total")?,
                        bad: need(&p.bad, "prometheus.bad")?,
                    }
                };
                let headers = client::header_map(&p.headers)
                    .map_err(|why| field("prometheus.headers", why))?;
                let timeout = p.timeout.unwrap_or(DEFAULT_PROVIDER_TIMEOUT).to_std();
                Inner::Prometheus(PrometheusCollector::new(
                    &p.address, queries, headers, timeout,
                ))
            }
            Provider::Webhook(w) => {
                // The URL is a template: check it as it will be sent.
                let sample = Context {
                    name: "name".into(),
                    namespace: "namespace".into(),
                    interval: Duration::from_secs(10),
                };
                let filled = template::fill(
                    &w.url,
                    template::Vars {
                        context: &sample,
                        track: Track::Canary,
                    },
                    template::percent_encode,
                );
                check_url(&metric, &filled).map_err(|e| with_url(e, &w.url))?;
                let selector = |s: &Option<String>, name: &'static str, what: &str| {
                    let s = s
                        .as_deref()
                        .ok_or_else(|| field(name, format!("is required for a {what}")))?;
                    Selector::parse(s).map_err(|why| field(name, why))
                };
                let reads = if threshold {
                    Reads::Value(selector(&w.value, "webhook.value", "threshold")?)
                } else {
                    Reads::Compare {
                        total: selector(&w.total, "webhook.total", "comparison")?,
                        bad: selector(&w.bad, "webhook.bad", "comparison")?,
                    }
                };
                Inner::Webhook(WebhookCollector {
                    url: w.url.clone(),
                    method: match w.method {
                        Some(HttpMethod::Post) => http::Method::POST,
                        Some(HttpMethod::Get) | None => http::Method::GET,
                    },
                    body: w.body.clone(),
                    headers: client::header_map(&w.headers)
                        .map_err(|why| field("webhook.headers", why))?,
                    timeout: w.timeout.unwrap_or(DEFAULT_PROVIDER_TIMEOUT).to_std(),
                    reads,
                    http: client::Http::new(),
                })
            }
        };
        Ok(MetricSource {
            name: plan.name.clone(),
            inner,
        })
    }

    /// The metric's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the builtin baseline now, if it has none yet (a scraped proxy,
    /// or the replicas listed now); call it when the analysis starts so the
    /// first interval has counts. Does nothing for other providers, or if
    /// the scrape fails (the first collection then takes the baseline).
    pub async fn prime(&mut self) {
        if let Inner::Builtin(b) = &mut self.inner {
            b.prime(DEFAULT_PROVIDER_TIMEOUT.to_std()).await;
        }
    }

    /// This interval's observation. Takes at most `max(timeout,
    /// ctx.interval)` plus a few milliseconds, retries included; every
    /// failure is [`Observed::NoData`] with the reason. The counts'
    /// `canary_share` is `None`: the caller knows the routing weight.
    pub async fn collect(&mut self, ctx: &Context) -> Observed {
        let budget = ctx.interval;
        match &mut self.inner {
            Inner::Builtin(b) => b.collect(budget).await,
            Inner::Prometheus(p) => p.collect(ctx, budget).await,
            Inner::Webhook(w) => w.collect(ctx, budget).await,
        }
    }
}

/// A source for every metric of `plan`, in the plan's order (the judge's
/// metric indexes), or the first configuration problem.
pub fn sources(
    plan: &AnalysisPlan,
    builtin: Option<&BuiltinSource>,
) -> Result<Vec<MetricSource>, SourceError> {
    plan.metrics
        .iter()
        .map(|m| MetricSource::new(m, builtin))
        .collect()
}

/// Accepts `http://host[:port]/...` that hyper can send to.
fn check_url(metric: &str, url: &str) -> Result<(), SourceError> {
    if url
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
    {
        return Err(SourceError::Https {
            metric: metric.to_owned(),
            url: url.to_owned(),
        });
    }
    let bad = |why: String| SourceError::Url {
        metric: metric.to_owned(),
        url: url.to_owned(),
        why,
    };
    let uri: http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("it must start with http://".to_owned()));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host".to_owned()));
    }
    Ok(())
}

/// Reports the address as the user wrote it rather than as checked.
fn with_url(e: SourceError, written: &str) -> SourceError {
    match e {
        SourceError::Https { metric, .. } => SourceError::Https {
            metric,
            url: written.to_owned(),
        },
        SourceError::Url { metric, why, .. } => SourceError::Url {
            metric,
            url: written.to_owned(),
            why,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine_core::spec::{BuiltinMetric, PrometheusProvider, WebhookProvider};

    fn prom(address: &str) -> MetricPlan {
        MetricPlan {
            name: "m".into(),
            provider: Provider::Prometheus(PrometheusProvider {
                address: address.into(),
                total: Some("t{track=\"{{track}}\"}".into()),
                bad: Some("b{track=\"{{track}}\"}".into()),
                query: None,
                timeout: None,
                headers: Default::default(),
            }),
            check: Check::Compare { max_ratio: 1.0 },
        }
    }

    fn hook(url: &str, total: &str) -> MetricPlan {
        MetricPlan {
            name: "w".into(),
            provider: Provider::Webhook(WebhookProvider {
                url: url.into(),
                method: None,
                body: None,
                headers: Default::default(),
                timeout: None,
                total: Some(total.into()),
                bad: Some("$.bad".into()),
                value: None,
            }),
            check: Check::Compare { max_ratio: 1.0 },
        }
    }

    #[test]
    fn construction_errors_are_clear() {
        assert!(MetricSource::new(&prom("http://prom:9090/"), None).is_ok());
        let e = MetricSource::new(&prom("https://prom:9090"), None).expect_err("https");
        assert!(
            matches!(&e, SourceError::Https { url, .. } if url == "https://prom:9090"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("https, which coalmine's providers do not support")
        );
        let e = MetricSource::new(&prom("prom:9090"), None).expect_err("no scheme");
        assert!(matches!(e, SourceError::Url { .. }), "{e}");
        let e = MetricSource::new(&prom("ü://x"), None).expect_err("odd scheme");
        assert!(matches!(e, SourceError::Url { .. }), "{e}");

        assert!(
            MetricSource::new(&hook("http://h/x?t={{track}}&n={{name}}", "$.total"), None).is_ok()
        );
        let e = MetricSource::new(&hook("http://h/x", "$.a[x]"), None).expect_err("selector");
        assert!(e.to_string().contains("webhook.total"), "{e}");
        let e = MetricSource::new(&hook("HTTPS://h/x", "$.a"), None).expect_err("https");
        assert!(matches!(e, SourceError::Https { .. }), "{e}");

        let builtin = MetricPlan {
            name: "errors".into(),
            provider: Provider::Builtin {
                metric: BuiltinMetric::Errors,
                slower_than: None,
            },
            check: Check::Compare { max_ratio: 1.0 },
        };
        let e = MetricSource::new(&builtin, None).expect_err("no proxy");
        assert!(matches!(e, SourceError::NoBuiltinSource { .. }));
        let scrape = BuiltinSource::scrape("https://proxy/metrics");
        assert!(matches!(
            MetricSource::new(&builtin, Some(&scrape)),
            Err(SourceError::Https { .. })
        ));
        let m = coalmine_proxy::metrics::Metrics::new();
        let source = MetricSource::new(&builtin, Some(&BuiltinSource::in_process(m.counters())))
            .expect("in process");
        assert_eq!(source.name(), "errors");
    }
}
