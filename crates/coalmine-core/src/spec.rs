//! The `Canary` resource as users write it, in Kubernetes and for `coalmine run`.
//!
//! Every field is described in `docs/validation.md` and the CRD. They are
//! deliberately permissive in their number types (`i64` weights, say) so
//! that out-of-range values reach [`crate::validate`] and get an error that
//! names the field and the fix, instead of a bare serde message. Everything
//! downstream works on the checked [`crate::Plan`], never on these.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::routes::HeaderMatch;
use crate::status::CanaryStatus;

/// The API group and version of the resource.
pub const API_VERSION: &str = "coalmine.dev/v1alpha1";
/// The resource kind.
pub const KIND: &str = "Canary";

/// A whole `Canary` document: what `coalmine validate` and `coalmine run` read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canary {
    /// Always `coalmine.dev/v1alpha1`.
    pub api_version: String,
    /// Always `Canary`.
    pub kind: String,
    /// Name, namespace, labels; other Kubernetes metadata is kept as is.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the user asks for.
    pub spec: CanarySpec,
    /// What coalmine observed and decided; absent in files users write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CanaryStatus>,
}

/// The part of Kubernetes object metadata coalmine reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name; the stable and canary workloads are named after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Everything else the API server adds (uid, resourceVersion, …), kept
    /// so that `kubectl get -o yaml` output validates as it is.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What a Canary asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanarySpec {
    /// Local mode: the stable and canary servers that already run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<Upstreams>,
    /// Kubernetes: replicas of the stable Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// Kubernetes: which pods belong to this Canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Kubernetes: the pod template; a change starts a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::spec::open_object_schema")]
    pub template: Option<serde_json::Map<String, serde_json::Value>>,
    /// Kubernetes: the Service in front of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePorts>,
    /// Kubernetes: how traffic is split; the replica ratio when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
    /// The rollout, step by step.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Keep a user on the version it first saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// How the canary is judged against stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
    /// What an analysis gate does when it times out without a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_inconclusive: Option<OnInconclusive>,
    /// How long the canary may stay not ready before the rollout fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<Duration>,
    /// Webhooks told about the transitions people care about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationSpec>,
}

/// One webhook for notifications: `{url: …, format: slack, on: [rolledBack]}`,
/// or with the URL in a Secret: `{urlFrom: {secretKeyRef: {name: slack}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationSpec {
    /// Where to POST: an `http://` or `https://` URL, e.g. a Slack incoming
    /// webhook. Set this or `urlFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL read from a Secret in the Canary's namespace (Kubernetes
    /// only), so it is kept out of the Canary. Set this or `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<UrlFrom>,
    /// `json` (coalmine's own payload, the default) or `slack` (Slack's
    /// incoming-webhook message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<NotificationFormat>,
    /// The transitions to send; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<Transition>,
}

/// Where a webhook's URL is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlFrom {
    /// A key of a Secret in the Canary's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the Canary's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key holding the URL; `address` when absent (the key Flagger's
    /// AlertProvider reads, so its Secrets serve unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key holding the URL.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("address")
    }
}

/// The body a notification webhook receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotificationFormat {
    /// coalmine's JSON document (see `docs/notifications.md`).
    #[default]
    Json,
    /// `{"text": …}`, Slack's incoming-webhook format.
    Slack,
}

/// A moment of a rollout people are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Transition {
    /// A rollout of a new revision began (or began again).
    Started,
    /// A step was taken: a weight, a header route, a mirror, a passed gate.
    Step,
    /// The rollout waits for a person.
    Paused,
    /// The canary became stable.
    Promoted,
    /// The canary was rolled back, with the reason and the figures.
    RolledBack,
    /// The rollout cannot go on by itself (stable unreachable, say).
    Stuck,
}

impl Transition {
    /// The transition an event of the state machine (or of the platform)
    /// stands for, by its reason and the phase the decision left the
    /// rollout in; `None` for events nobody is paged for.
    pub fn of_event(reason: &str, phase: crate::status::Phase) -> Option<Transition> {
        use crate::status::Phase;
        if reason == "AnalysisInconclusive" {
            // A gate without a verdict does what `onInconclusive` says.
            return Some(match phase {
                Phase::RollingBack | Phase::RolledBack | Phase::Failed => Transition::RolledBack,
                Phase::Paused => Transition::Paused,
                _ => Transition::Step,
            });
        }
        Some(match reason {
            "RolloutStarted" | "RolloutRestarted" => Transition::Started,
            "WeightSet" | "HeaderRouteSet" | "MirrorSet" | "PromotedStep" | "PromotedFully"
            | "AnalysisPassed" | "Resumed" => Transition::Step,
            "Paused" => Transition::Paused,
            "Promoted" => Transition::Promoted,
            "AnalysisFailed" | "Aborted" | "ProgressDeadlineExceeded" | "CanaryUnreachable" => {
                Transition::RolledBack
            }
            // Local mode pauses when stable stops answering; the controller
            // emits `Stuck` when Promoting or RollingBack outlives its
            // deadline.
            "StableUnreachable" | "Stuck" => Transition::Stuck,
            _ => return None,
        })
    }

    /// The word used in payloads and in `on:` lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Started => "started",
            Transition::Step => "step",
            Transition::Paused => "paused",
            Transition::Promoted => "promoted",
            Transition::RolledBack => "rolledBack",
            Transition::Stuck => "stuck",
        }
    }
}

/// Whether `url` is an `http://` or `https://` URL with a host and no
/// whitespace: what a webhook may be posted to.
pub fn is_http_url(url: &str) -> bool {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    host.is_some_and(|h| !h.is_empty()) && !url.contains(char::is_whitespace)
}

/// Local mode: the servers behind each track.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upstreams {
    /// Base URLs of the stable version, e.g. `http://127.0.0.1:9001`.
    #[serde(default)]
    pub stable: Vec<String>,
    /// Base URLs of the canary version.
    #[serde(default)]
    pub canary: Vec<String>,
    /// Where the proxy listens, e.g. `127.0.0.1:8080` (flags override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// A path every upstream answers with 2xx or 3xx when healthy, e.g.
    /// `/healthz`, checked every second during a rollout; without it a
    /// server counts as healthy when it accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels a pod must carry, all of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based label requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The Service coalmine creates for the Canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePorts {
    /// The port the Service listens on.
    pub port: i64,
    /// The container port (number or name); `port` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<PortRef>,
}

/// A port by number or by name, like Kubernetes' IntOrString.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number.
    Number(i64),
    /// A named container port.
    Name(String),
}

impl JsonSchema for PortRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PortRef".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"x-kubernetes-int-or-string": true})
    }
}

/// The router that splits traffic in Kubernetes; at most one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRouting {
    /// Replica ratio behind one Service (coarse, no header routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Empty>,
    /// Gateway API: weights on an HTTPRoute's backendRefs.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// ingress-nginx canary annotations on a managed second Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxRouting>,
    /// Istio VirtualService route weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
    /// coalmine's own proxy in front of both versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyRouting>,
}

/// The proxy router's settings in Kubernetes (the Deployment `NAME-proxy`
/// the controller runs); `{}` takes the defaults. `coalmine run` ignores
/// them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyRouting {
    /// Proxy pods (default 2, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// The proxy pods' `nodeSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The proxy container's `resources` (requests, limits), passed to the
    /// Deployment as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::spec::open_object_schema")]
    pub resources: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ProxyRouting {
    /// Proxy replicas when `replicas` is not set.
    pub const DEFAULT_REPLICAS: i64 = 2;

    /// The replicas asked for, or the default.
    pub fn replicas(&self) -> i64 {
        self.replicas.unwrap_or(Self::DEFAULT_REPLICAS)
    }
}

/// An object with no fields: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Gateway API router settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayApiRouting {
    /// Name of the HTTPRoute whose backendRefs coalmine weighs.
    pub http_route: String,
}

/// ingress-nginx router settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NginxRouting {
    /// Name of the user's Ingress that the canary Ingress copies.
    pub ingress: String,
}

/// Istio router settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioRouting {
    /// Name of the VirtualService.
    pub virtual_service: String,
    /// Name of the HTTP route inside it to weigh; every HTTP route that
    /// sends to the stable Service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Send to two subsets of this DestinationRule (both versions behind
    /// the Service `NAME`) instead of the Services `NAME` and `NAME-canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<IstioDestinationRule>,
}

/// The DestinationRule subsets the istio router sends to. The user writes
/// the DestinationRule; its subsets select pods by the label
/// `coalmine.dev/track` (`stable` or `canary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioDestinationRule {
    /// The DestinationRule's name.
    pub name: String,
    /// The subset of the stable pods (`coalmine.dev/track: stable`).
    pub stable_subset_name: String,
    /// The subset of the canary pods (`coalmine.dev/track: canary`).
    pub canary_subset_name: String,
}

/// One step of a rollout. Written as a one-key map: `- setWeight: 5`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Step {
    /// Send this percent of traffic to the canary.
    SetWeight(i64),
    /// Wait for a duration, or until promoted when it has none.
    Pause(PauseStep),
    /// Wait for the analysis to PASS; roll back at FAIL.
    Analysis(AnalysisStep),
    /// Send requests matching any of these to the canary, whatever the weight.
    SetHeaderRoute(HeaderRouteStep),
    /// Copy a percentage of stable requests to the canary.
    SetMirror(MirrorStep),
}

/// `pause: {duration: 1m}`, or `pause: {}` to wait for promote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PauseStep {
    /// How long to wait; without it, until `promote` or `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// `analysis: {timeout: 10m}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisStep {
    /// How long to wait for a verdict before `onInconclusive` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// `setHeaderRoute: {match: [...]}`; an empty list removes the routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderRouteStep {
    /// Requests matching any of these go to the canary.
    #[serde(default, rename = "match")]
    pub matches: Vec<HeaderMatch>,
}

/// `setMirror: {percent: 20}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorStep {
    /// Percent of stable requests also sent to the canary (answers dropped).
    pub percent: i64,
}

/// Sticky sessions: a cookie naming the track a user was sent to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionAffinity {
    /// Cookie name, e.g. `coalmine-track`.
    pub cookie: String,
    /// How long the cookie lives; for the browser session when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// How the canary is judged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisSpec {
    /// How often metrics are collected and judged (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// False-rollback budget for the whole run (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// What is measured.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
}

/// One metric: a provider, and either a comparison with stable or a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// A unique name, used in the status and events.
    pub name: String,
    /// The proxy's own counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinMetric>,
    /// A Prometheus server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProvider>,
    /// An HTTP endpoint answering JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookProvider>,
    /// Comparison: the canary fails when its bad rate exceeds this many times stable's (default 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    /// `builtin: latency`: a request slower than this counts as bad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slower_than: Option<Duration>,
    /// Absolute bounds checked each interval instead of a comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    /// Threshold metrics: failed checks that make the metric FAIL (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<i64>,
}

/// The proxy's built-in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BuiltinMetric {
    /// 5xx answers and failed upstream requests.
    Errors,
    /// Requests slower than `slowerThan`.
    Latency,
}

/// Prometheus provider settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusProvider {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// Comparison: requests per track and interval (`{{track}}`, `{{interval}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// Comparison: bad requests per track and interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad: Option<String>,
    /// Threshold: one value per interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Per-query timeout (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra request headers, e.g. authorization.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Webhook provider settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookProvider {
    /// URL to call (`{{track}}`, `{{interval}}`, `{{name}}`, `{{namespace}}` are filled in).
    pub url: String,
    /// `GET` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Body for `POST`, templated like the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-call timeout (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Comparison: selector of the request count in the answer, e.g. `$.total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// Comparison: selector of the bad-request count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad: Option<String>,
    /// Threshold: selector of the value to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Methods a webhook may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// HTTP GET.
    Get,
    /// HTTP POST.
    Post,
}

/// Absolute bounds for a threshold metric; at least one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Threshold {
    /// The value must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The value must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// What an analysis gate does when it times out without PASS or FAIL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnInconclusive {
    /// Pause until a person promotes, resumes or aborts (the default).
    #[default]
    Pause,
    /// Roll back.
    Rollback,
    /// Go on to the next step.
    Promote,
}

/// A schema for an object whose fields Kubernetes knows and coalmine passes on.
pub(crate) fn open_object_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_every_spec_field() {
        let schema = serde_json::to_value(schemars::schema_for!(Canary)).unwrap();
        let text = schema.to_string();
        for field in [
            "upstreams",
            "replicas",
            "selector",
            "template",
            "service",
            "trafficRouting",
            "gatewayAPI",
            "steps",
            "setWeight",
            "setHeaderRoute",
            "setMirror",
            "sessionAffinity",
            "analysis",
            "maxRatio",
            "slowerThan",
            "failureLimit",
            "onInconclusive",
            "progressDeadline",
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-int-or-string",
            "stableRevision",
            "canaryRevision",
            "eValue",
            "ratioInterval",
            "lastTransitionTime",
        ] {
            assert!(
                text.contains(&format!("\"{field}\"")),
                "schema lacks {field}"
            );
        }
    }

    #[test]
    fn stuck_events_of_both_modes_are_the_stuck_transition() {
        use crate::status::Phase;
        // The controller's `Stuck` (Promoting or RollingBack past its
        // deadline) and local mode's `StableUnreachable`.
        for (reason, phase) in [
            ("Stuck", Phase::Promoting),
            ("Stuck", Phase::RollingBack),
            ("StableUnreachable", Phase::Paused),
        ] {
            assert_eq!(
                Transition::of_event(reason, phase),
                Some(Transition::Stuck),
                "{reason} in {phase:?}"
            );
        }
        assert_eq!(Transition::Stuck.as_str(), "stuck");
        assert_eq!(Transition::of_event("Unstuck", Phase::Promoting), None);
    }

    #[test]
    fn a_canary_survives_a_round_trip() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/kubernetes/gateway-api.yaml"
        ))
        .unwrap();
        let canary = crate::load::parse_canary(&text).unwrap();
        let json = serde_json::to_string(&canary).unwrap();
        let back = crate::load::parse_canary(&json).unwrap();
        assert_eq!(canary, back);
    }
}
