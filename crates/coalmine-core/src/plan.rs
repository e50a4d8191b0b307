//! The checked form of a Canary: what the rest of coalmine works from.
//!
//! A [`Plan`] exists only when [`crate::validate::check`] found no error, so
//! its types carry the guarantees (weights are [`crate::Percent`]s, 0 to 100, each metric has
//! exactly one provider and one kind of check, defaults are filled in) and
//! the state machine, the proxy and the judge never re-check them.

use crate::Duration;
use crate::percent::Percent;
use crate::routes::HeaderMatch;
use crate::spec::{
    BuiltinMetric, OnInconclusive, PrometheusProvider, SessionAffinity, WebhookProvider,
};

/// Default analysis interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default false-rollback budget.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Default analysis gate timeout.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_mins(10);
/// Default progress deadline.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_mins(10);
/// Upper bounds of the latency histogram buckets, in seconds: the proxy's
/// `coalmine_proxy_request_duration_seconds` and the judge's shape check use
/// these. Dense between 50 ms and 1 s, where `slowerThan` thresholds usually
/// sit; a `slowerThan` on an edge is counted exactly.
pub const LATENCY_BUCKETS: [f64; 22] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
    1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];
/// Default per-query timeout of a metric provider.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated rollout plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The Canary's name (`canary` when a local file has none).
    pub name: String,
    /// Where it runs.
    pub target: Target,
    /// The steps, checked.
    pub steps: Vec<PlanStep>,
    /// How the canary is judged; `None` when nothing is.
    pub analysis: Option<AnalysisPlan>,
    /// What a gate does when it times out.
    pub on_inconclusive: OnInconclusive,
    /// How long the canary may stay not ready.
    pub progress_deadline: Duration,
    /// Sticky sessions, if asked for.
    pub session_affinity: Option<SessionAffinity>,
}

/// Where a rollout runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `coalmine run` in front of servers that already run.
    Local {
        /// Stable base URLs.
        stable: Vec<String>,
        /// Canary base URLs.
        canary: Vec<String>,
        /// Listen address from the file, if any.
        listen: Option<String>,
    },
    /// The Kubernetes controller.
    Kubernetes {
        /// How traffic is split.
        router: Router,
    },
}

/// A Kubernetes traffic router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Router {
    /// Replica ratio behind one Service.
    Replicas,
    /// Gateway API HTTPRoute weights.
    GatewayApi {
        /// The HTTPRoute's name.
        http_route: String,
    },
    /// ingress-nginx canary Ingress.
    Nginx {
        /// The user's Ingress name.
        ingress: String,
    },
    /// Istio VirtualService.
    Istio {
        /// The VirtualService's name.
        virtual_service: String,
        /// The HTTP route's name inside it.
        route: Option<String>,
        /// DestinationRule subsets instead of two Services.
        destination_rule: Option<crate::spec::IstioDestinationRule>,
    },
    /// coalmine's own proxy.
    Proxy,
}

impl Router {
    /// The field name users write for this router.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// One checked step.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanStep {
    /// Canary weight, percent.
    SetWeight(Percent),
    /// Wait this long, or for promote when `None`.
    Pause(Option<Duration>),
    /// Wait for PASS, at most `timeout`.
    Analysis {
        /// Gate timeout.
        timeout: Duration,
    },
    /// Header routes to put in place (replacing earlier ones).
    SetHeaderRoute(Vec<HeaderMatch>),
    /// Mirror percent.
    SetMirror(Percent),
}

impl PlanStep {
    /// A short description for messages: `setWeight 25`, `pause 1m`.
    pub fn describe(&self) -> String {
        match self {
            PlanStep::SetWeight(w) => format!("setWeight {w}%"),
            PlanStep::Pause(Some(d)) => format!("pause {d}"),
            PlanStep::Pause(None) => "pause until promoted".to_owned(),
            PlanStep::Analysis { timeout } => format!("analysis (timeout {timeout})"),
            PlanStep::SetHeaderRoute(m) if m.is_empty() => "clear header routes".to_owned(),
            PlanStep::SetHeaderRoute(m) => format!("{} header route(s)", m.len()),
            PlanStep::SetMirror(p) => format!("mirror {p}%"),
        }
    }
}

/// How the canary is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisPlan {
    /// How often metrics are collected.
    pub interval: Duration,
    /// False-rollback budget for the run, split over the gating metrics.
    pub alpha: f64,
    /// The metrics.
    pub metrics: Vec<MetricPlan>,
}

/// One checked metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPlan {
    /// Unique name.
    pub name: String,
    /// Where numbers come from.
    pub provider: Provider,
    /// How they are judged.
    pub check: Check,
}

/// Where a metric's numbers come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// The proxy's own counters.
    Builtin {
        /// Which counter.
        metric: BuiltinMetric,
        /// For latency: the slow-request threshold.
        slower_than: Option<Duration>,
    },
    /// A Prometheus server.
    Prometheus(PrometheusProvider),
    /// An HTTP endpoint answering JSON.
    Webhook(WebhookProvider),
}

/// How a metric is judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Canary bad-event rate against stable's, with tolerance `max_ratio`.
    Compare {
        /// Largest tolerated canary/stable ratio.
        max_ratio: f64,
    },
    /// An absolute check of one value per interval.
    Threshold {
        /// Lower bound.
        min: Option<f64>,
        /// Upper bound.
        max: Option<f64>,
        /// Failed checks that fail the metric.
        failure_limit: u32,
    },
}

impl Plan {
    /// Number of analysis gates among the steps.
    pub fn gates(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, PlanStep::Analysis { .. }))
            .count()
    }

    /// One line: `8 steps: 5% → 25% → 50%, 2 analysis gates, 3 metrics`.
    pub fn summary(&self) -> String {
        let plural = |n: usize, one: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {one}s")
            }
        };
        let weights: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                PlanStep::SetWeight(w) => Some(format!("{w}%")),
                _ => None,
            })
            .collect();
        let mut line = plural(self.steps.len(), "step");
        if !weights.is_empty() {
            line.push_str(": ");
            line.push_str(&weights.join(" → "));
        }
        let metrics = self.analysis.as_ref().map_or(0, |a| a.metrics.len());
        line.push_str(&format!(
            ", {}, {}",
            plural(self.gates(), "analysis gate"),
            plural(metrics, "metric")
        ));
        line
    }
}
