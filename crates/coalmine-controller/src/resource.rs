//! The `Canary` custom resource as the controller reads and writes it, and
//! the names (labels, annotations, finalizer) the controller puts on the
//! objects it manages.
//!
//! The spec is kept as raw JSON rather than as `coalmine_core::spec::CanarySpec`:
//! a watcher that cannot decode an object drops it, and an invalid spec must
//! instead reach the reconciler, which names the bad field in a condition.
//! [`CanaryResource::check`] runs the same loader and validator as
//! `coalmine validate`, so the cluster accepts exactly what the CLI does.

use std::borrow::Cow;

use coalmine_core::capability::Capability;
use coalmine_core::plan::{Plan, Provider, Router, Target};
use coalmine_core::spec::{API_VERSION, Canary, KIND};
use coalmine_core::status::CanaryStatus;
use coalmine_core::{Duration, Problem, validate};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// The resource's names come from the CRD generator, so the two never drift.
pub use coalmine_core::crd::{GROUP, PLURAL, VERSION};

/// `app.kubernetes.io/managed-by`, on every object the controller creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`], also the field manager and event reporter.
pub const MANAGER: &str = "coalmine";
/// `stable` or `canary` on pod templates and Deployment selectors, so one
/// Service can select both tracks and another only one.
pub const TRACK_LABEL: &str = "coalmine.dev/track";
/// The revision (pod-template fingerprint) a Deployment's pods run.
pub const REVISION_ANNOTATION: &str = "coalmine.dev/revision";
/// A person's command, `<kind>/<unique id>`, written by the CLI.
pub const COMMAND_ANNOTATION: &str = "coalmine.dev/command";
/// Held on every Canary until its traffic is back on stable.
pub const FINALIZER: &str = "coalmine.dev/cleanup";
/// The condition saying whether the spec could be used.
pub const VALID_CONDITION: &str = "Valid";
/// The condition saying whether the router's object is accepted by what
/// serves it (`False` with the Gateway's reason for an HTTPRoute).
pub const ROUTE_CONDITION: &str = "RouteAccepted";
/// The condition saying a promotion or a rollback waited longer than its
/// deadline (`progressDeadline`) for the Deployments, and for what.
pub const STUCK_CONDITION: &str = "Stuck";
/// The condition saying whether the last cluster writes were accepted
/// (`False` with the API server's refusal: RBAC, validation, quota).
pub const APPLIED_CONDITION: &str = "Applied";
/// The condition saying whether routes send the canary traffic; its
/// `lastTransitionTime` is when traffic left it, the start of the
/// scale-down delay.
pub const TRAFFIC_CONDITION: &str = "CanaryTraffic";
/// The reasons of the controller's own conditions ([`VALID_CONDITION`],
/// [`APPLIED_CONDITION`], [`ROUTE_CONDITION`], [`TRAFFIC_CONDITION`],
/// [`STUCK_CONDITION`]), which are also the reasons of the warning Events
/// that tell of a refusal. The rollout's own conditions take theirs from
/// [`coalmine_core::status::RolloutReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `Valid`: the spec is used.
    Valid,
    /// `Valid=False`: the spec has errors.
    InvalidSpec,
    /// `Valid=False`: a Deployment or Service of the names the Canary
    /// uses belongs to something else.
    NotOwned,
    /// `Valid=False`: a HorizontalPodAutoscaler sizes one of the
    /// Deployments whose replicas coalmine sets.
    AutoscaledDeployment,
    /// `Applied`: the cluster took every write.
    Applied,
    /// `Applied=False`: an object the spec names is missing.
    ReconcileFailed,
    /// `Applied=False`: a resource quota refused a write.
    QuotaExceeded,
    /// `Applied=False`: RBAC refused a write (403).
    Forbidden,
    /// `Applied=False`: the API server's validation refused a write (422).
    Invalid,
    /// `Applied=False`: a malformed write (400).
    BadRequest,
    /// `Applied=False`: a write to something that is not there (404).
    NotFound,
    /// `Applied=False`: any other refusal.
    Refused,
    /// `RouteAccepted`: what serves the route took it.
    Accepted,
    /// `RouteAccepted=False`: what serves the route refused it.
    RouteNotAccepted,
    /// `CanaryTraffic`: routes send the canary traffic.
    Routed,
    /// `CanaryTraffic=False`: everything is back on stable.
    AllOnStable,
    /// `Stuck=False`: the Deployments caught up.
    Converged,
    /// `Stuck`: a promotion or rollback waited past its deadline.
    DeadlineExceeded,
}

impl Reason {
    /// The reason on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Valid => "Valid",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::NotOwned => "NotOwned",
            Reason::AutoscaledDeployment => "AutoscaledDeployment",
            Reason::Applied => "Applied",
            Reason::ReconcileFailed => "ReconcileFailed",
            Reason::QuotaExceeded => "QuotaExceeded",
            Reason::Forbidden => "Forbidden",
            Reason::Invalid => "Invalid",
            Reason::BadRequest => "BadRequest",
            Reason::NotFound => "NotFound",
            Reason::Refused => "Refused",
            Reason::Accepted => "Accepted",
            Reason::RouteNotAccepted => "RouteNotAccepted",
            Reason::Routed => "Routed",
            Reason::AllOnStable => "AllOnStable",
            Reason::Converged => "Converged",
            Reason::DeadlineExceeded => "DeadlineExceeded",
        }
    }
}

/// How long after traffic left the canary (promotion, rollback, abort) its
/// pods stay, as a duration (`30s`, `2m`); [`DEFAULT_SCALE_DOWN_DELAY`]
/// without it. Requests in flight finish, and proxies that pick up route
/// changes late (a gateway's data plane, ingress-nginx's reload) still find
/// the pods. Argo Rollouts' `scaleDownDelaySeconds` is the precedent.
pub const SCALE_DOWN_DELAY_ANNOTATION: &str = "coalmine.dev/scale-down-delay";
/// The scale-down delay when [`SCALE_DOWN_DELAY_ANNOTATION`] is not set.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);

/// A Canary object: Kubernetes metadata, the spec as written, the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryResource {
    /// `coalmine.dev/v1alpha1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// `Canary`.
    #[serde(default)]
    pub kind: String,
    /// Name, namespace, uid, resourceVersion, finalizers, annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec as the user wrote it; checked by [`CanaryResource::check`].
    #[serde(default)]
    pub spec: Value,
    /// What the controller last wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// kubectl's copy of the last applied object, kept as an annotation.
pub(crate) const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the controller's watch cache keeps of a Canary: what names it and
/// what its Events refer to (metadata without managedFields or kubectl's
/// last-applied copy), not its spec or status, which every reconcile reads
/// afresh from the API server.
pub fn trim_for_cache(c: &mut CanaryResource) {
    c.metadata.managed_fields = None;
    if let Some(a) = c.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    c.spec = Value::Null;
    c.status = None;
}

impl kube::Resource for CanaryResource {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A Canary whose spec passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The typed resource.
    pub canary: Canary,
    /// Its plan.
    pub plan: Plan,
    /// The router named by the plan.
    pub router: Router,
    /// How long a canary that no route sends traffic to keeps its pods
    /// ([`SCALE_DOWN_DELAY_ANNOTATION`]).
    pub scale_down_delay: Duration,
}

impl CanaryResource {
    /// A new object with this name, namespace and spec (for tests and tools).
    pub fn new(namespace: &str, name: &str, spec: Value) -> Self {
        CanaryResource {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// The object's name (empty if it has none, which the API server forbids).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The object's namespace.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The document `coalmine validate` would read for this object.
    pub fn document(&self) -> Value {
        json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": self.metadata.name,
                "namespace": self.metadata.namespace,
                "labels": self.metadata.labels.clone().unwrap_or_default(),
                "annotations": self.metadata.annotations.clone().unwrap_or_default(),
            },
            "spec": self.spec,
        })
    }

    /// Loads and validates the spec for the controller: the plan, or every
    /// error (warnings are dropped; `coalmine validate` shows them).
    pub fn check(&self) -> Result<Checked, Vec<Problem>> {
        let text = self.document().to_string();
        let (canary, plan, _warnings) = validate::load(&text)?;
        let router = match &plan.target {
            Target::Kubernetes { router } => router.clone(),
            Target::Local { .. } => {
                return Err(vec![Problem::error(
                    "spec.upstreams",
                    "is for `coalmine run`; the controller needs a pod `template`",
                )]);
            }
        };
        // What the spec asks of the router (header routes, mirroring,
        // sessions) `validate::load` checked against the capability table;
        // what the controller itself runs is the table's too.
        let mut problems = Vec::new();
        if !router.can(Capability::Controller) {
            problems.push(
                Problem::error(
                    format!("spec.trafficRouting.{}", router.name()),
                    format!("the controller has no {} router", router.name()),
                )
                .hint(Capability::Controller.hint()),
            );
        }
        problems.extend(nginx_limits(&router, &plan));
        if canary
            .spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_expressions.is_empty())
        {
            problems.push(
                Problem::error(
                    "spec.selector.matchExpressions",
                    "are not supported: the Service in front of the pods selects by labels only",
                )
                .hint("select with matchLabels"),
            );
        }
        let scale_down_delay = match self.scale_down_delay() {
            Ok(d) => d,
            Err(p) => {
                problems.push(p);
                DEFAULT_SCALE_DOWN_DELAY
            }
        };
        if let Some(analysis) = plan
            .analysis
            .as_ref()
            .filter(|_| !router.can(Capability::BuiltinMetrics))
        {
            for (i, m) in analysis.metrics.iter().enumerate() {
                if matches!(m.provider, Provider::Builtin { .. }) {
                    problems.push(
                        Problem::error(
                            format!("spec.analysis.metrics[{i}].builtin"),
                            format!(
                                "metric `{}` reads coalmine's proxy, which this router does not run",
                                m.name
                            ),
                        )
                        .hint("use a prometheus or webhook metric in Kubernetes"),
                    );
                }
            }
        }
        // Provider settings the loader cannot judge (an https address, a
        // URL hyper cannot send to) are spec errors too, not reconcile
        // failures repeated every few seconds.
        if problems.is_empty()
            && let Some(analysis) = &plan.analysis
            && let Some(p) = provider_problem(analysis, &router)
        {
            problems.push(p);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Checked {
            canary,
            plan,
            router,
            scale_down_delay,
        })
    }

    /// The scale-down delay [`SCALE_DOWN_DELAY_ANNOTATION`] asks for.
    pub fn scale_down_delay(&self) -> Result<Duration, Problem> {
        let Some(text) = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SCALE_DOWN_DELAY_ANNOTATION))
        else {
            return Ok(DEFAULT_SCALE_DOWN_DELAY);
        };
        text.trim().parse::<Duration>().map_err(|e| {
            Problem::error(
                format!("metadata.annotations[{SCALE_DOWN_DELAY_ANNOTATION}]"),
                e.to_string(),
            )
            .hint("a duration such as `30s` or `0s`, or remove the annotation for 30s")
        })
    }

    /// The router `spec.trafficRouting` names, read without validating the
    /// rest of the spec (for cleaning up after a Canary whose spec is
    /// invalid); the replica ratio when none can be read.
    pub fn router_hint(&self) -> Router {
        let tr = self.spec.get("trafficRouting");
        let name = |path: &str| {
            tr.and_then(|t| t.pointer(path))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if let Some(http_route) = name("/gatewayAPI/httpRoute") {
            Router::GatewayApi { http_route }
        } else if let Some(ingress) = name("/nginx/ingress") {
            Router::Nginx { ingress }
        } else if let Some(virtual_service) = name("/istio/virtualService") {
            Router::Istio {
                virtual_service,
                route: name("/istio/route"),
                destination_rule: tr
                    .and_then(|t| t.pointer("/istio/destinationRule"))
                    .and_then(|d| serde_json::from_value(d.clone()).ok()),
            }
        } else if tr
            .and_then(|t| t.get("proxy"))
            .is_some_and(Value::is_object)
        {
            Router::Proxy
        } else {
            Router::Replicas
        }
    }

    /// The stored status; a status that cannot be read starts afresh (with
    /// a warning in the logs), as an object created without one does.
    pub fn core_status(&self) -> CanaryStatus {
        match &self.status {
            None | Some(Value::Null) => CanaryStatus::default(),
            Some(v) => CanaryStatus::from_value(v.clone()).unwrap_or_else(|e| {
                tracing::warn!(canary = self.name(), error = %e, "unreadable status; starting afresh");
                CanaryStatus::default()
            }),
        }
    }

    /// The pending command from [`COMMAND_ANNOTATION`], if it is well formed.
    pub fn command(&self) -> Option<coalmine_core::rollout::Command> {
        let text = self
            .metadata
            .annotations
            .as_ref()?
            .get(COMMAND_ANNOTATION)?;
        parse_command(text)
    }
}

/// Header routes ingress-nginx cannot express (its canary annotations take
/// one header and one cookie, and send a cookie to the canary only when its
/// value is `always`), so that nothing the user asked for is silently
/// ignored.
fn nginx_limits(router: &Router, plan: &Plan) -> Vec<Problem> {
    use coalmine_core::plan::PlanStep;
    let mut problems = Vec::new();
    if let Router::Nginx { .. } = router {
        for (i, step) in plan.steps.iter().enumerate() {
            let PlanStep::SetHeaderRoute(matches) = step else {
                continue;
            };
            let at = format!("spec.steps[{i}].setHeaderRoute.match");
            let headers = matches.iter().filter(|m| m.header.is_some()).count();
            let cookies: Vec<_> = matches.iter().filter(|m| m.cookie.is_some()).collect();
            if headers > 1 || cookies.len() > 1 {
                problems.push(
                    Problem::error(
                        at.clone(),
                        "ingress-nginx takes one header and one cookie per canary",
                    )
                    .hint("keep one header match and at most one cookie match"),
                );
            }
            if cookies
                .iter()
                .any(|c| c.regex.is_some() || c.value.as_deref() != Some("always"))
            {
                problems.push(
                    Problem::error(
                        at,
                        "ingress-nginx sends a cookie to the canary only when its value is `always`",
                    )
                    .hint("write {cookie: NAME, value: always}"),
                );
            }
        }
    }
    problems
}

/// The first metric whose source cannot be built, as a spec problem. A
/// router that serves the builtin metrics (the proxy) gives them its
/// replicas, listed only when a judging session collects.
fn provider_problem(
    analysis: &coalmine_core::plan::AnalysisPlan,
    router: &Router,
) -> Option<Problem> {
    let builtin = router
        .can(Capability::BuiltinMetrics)
        .then(crate::analysis::unlisted_replicas);
    let e = coalmine_providers::sources(analysis, builtin.as_ref()).err()?;
    let metric = source_metric(&e);
    let at = analysis
        .metrics
        .iter()
        .position(|m| m.name == metric)
        .map_or_else(
            || "spec.analysis.metrics".to_owned(),
            |i| format!("spec.analysis.metrics[{i}]"),
        );
    Some(Problem::error(at, e.to_string()))
}

/// The metric a provider problem is about.
fn source_metric(e: &coalmine_providers::SourceError) -> &str {
    use coalmine_providers::SourceError as E;
    match e {
        E::NoBuiltinSource { metric }
        | E::Https { metric, .. }
        | E::Url { metric, .. }
        | E::Field { metric, .. } => metric,
    }
}

/// `promote/ID`, `promote-full/ID`, `abort/ID`, `pause/ID`, `resume/ID`,
/// `retry/ID`; the id makes the command act once.
pub fn parse_command(text: &str) -> Option<coalmine_core::rollout::Command> {
    use coalmine_core::rollout::{Command, CommandKind};
    let (kind, id) = text.trim().split_once('/')?;
    let kind: CommandKind = kind.parse().ok()?;
    (!id.is_empty()).then(|| Command {
        id: text.trim().to_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine_core::rollout::CommandKind;

    fn spec() -> Value {
        json!({
            "replicas": 2,
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            "steps": [{"setWeight": 50}]
        })
    }

    #[test]
    fn the_cached_copy_names_the_canary_and_no_more() {
        let mut c = CanaryResource::new("shop", "web", spec());
        c.metadata.uid = Some("u1".into());
        c.metadata.resource_version = Some("7".into());
        c.metadata.annotations = Some(
            [
                (LAST_APPLIED_ANNOTATION.to_owned(), "{...}".to_owned()),
                (COMMAND_ANNOTATION.to_owned(), "{}".to_owned()),
            ]
            .into(),
        );
        c.metadata.managed_fields = Some(vec![Default::default()]);
        c.status = Some(json!({"phase": "Idle"}));
        let before = kube::Resource::object_ref(&c, &());
        trim_for_cache(&mut c);
        assert_eq!(
            kube::Resource::object_ref(&c, &()),
            before,
            "Events still refer to it"
        );
        assert_eq!((c.spec.clone(), c.status.clone()), (Value::Null, None));
        assert_eq!(c.metadata.managed_fields, None);
        let annotations = c.metadata.annotations.unwrap_or_default();
        assert!(!annotations.contains_key(LAST_APPLIED_ANNOTATION));
        assert!(annotations.contains_key(COMMAND_ANNOTATION));
    }

    #[test]
    fn a_valid_spec_gives_a_plan_with_the_default_router() {
        let c = CanaryResource::new("default", "web", spec());
        let checked = c.check().expect("valid spec");
        assert_eq!(checked.router, Router::Replicas);
        assert_eq!(checked.plan.steps.len(), 1);
    }

    #[test]
    fn an_invalid_spec_names_the_field() {
        let mut s = spec();
        s["steps"] = json!([{"setWeight": 140}]);
        let c = CanaryResource::new("default", "web", s);
        let problems = c.check().expect_err("weight above 100");
        assert!(
            problems.iter().any(|p| p.path == "spec.steps[0].setWeight"),
            "{problems:?}"
        );
    }

    #[test]
    fn builtin_metrics_and_unbuilt_routers_are_refused() {
        let mut s = spec();
        s["analysis"] = json!({"metrics": [{"name": "errors", "builtin": "errors"}]});
        let problems = CanaryResource::new("default", "web", s)
            .check()
            .expect_err("no proxy to read");
        assert_eq!(problems[0].path, "spec.analysis.metrics[0].builtin");
        let mut s = spec();
        s["trafficRouting"] = json!({"istio": {"virtualService": "web"}});
        assert!(CanaryResource::new("default", "web", s).check().is_ok());
        let mut s = spec();
        s["analysis"] = json!({"metrics": [{"name": "p99",
            "webhook": {"url": "https://metrics.example/p99", "value": "$.v"},
            "threshold": {"max": 1.0}}]});
        let problems = CanaryResource::new("default", "web", s)
            .check()
            .expect_err("https is not supported");
        assert_eq!(problems[0].path, "spec.analysis.metrics[0]");
        assert!(problems[0].message.contains("https"), "{problems:?}");
    }

    #[test]
    fn the_proxy_router_gives_builtin_metrics_a_source_and_the_others_none() {
        let mut s = spec();
        s["analysis"] = json!({"metrics": [
            {"name": "p99", "webhook": {"url": "http://metrics.example/p99", "value": "$.v"},
             "threshold": {"max": 1.0}},
            {"name": "errors", "builtin": "errors"},
            {"name": "slow", "builtin": "latency", "slowerThan": "300ms"},
        ]});
        let (_, plan, _) = validate::load(
            &CanaryResource::new("default", "web", s)
                .document()
                .to_string(),
        )
        .expect("a valid spec");
        let analysis = plan.analysis.expect("an analysis");
        assert!(provider_problem(&analysis, &Router::Proxy).is_none());
        let p = provider_problem(&analysis, &Router::Replicas).expect("no proxy to read");
        assert_eq!(p.path, "spec.analysis.metrics[1]");
        assert!(p.message.contains("no coalmine proxy to read"), "{p:?}");
    }

    #[test]
    fn what_a_router_cannot_do_is_refused() {
        let mut s = spec();
        s["trafficRouting"] = json!({"nginx": {"ingress": "web"}});
        s["steps"] = json!([
            {"setWeight": 5},
            {"setHeaderRoute": {"match": [{"cookie": "beta", "value": "yes"}]}}
        ]);
        let problems = CanaryResource::new("default", "web", s.clone())
            .check()
            .expect_err("not for nginx");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["spec.steps[1].setHeaderRoute.match"]);
        // Sessions: no Kubernetes router keeps them (the capability table),
        // refused by the same validation as `coalmine validate`'s.
        for router in [
            json!({"nginx": {"ingress": "web"}}),
            json!({"gatewayAPI": {"httpRoute": "web"}}),
            json!({"istio": {"virtualService": "web"}}),
        ] {
            let mut s = spec();
            s["trafficRouting"] = router;
            s["sessionAffinity"] = json!({"cookie": "coalmine-track"});
            let problems = CanaryResource::new("default", "web", s)
                .check()
                .expect_err("no sessions");
            let paths: Vec<&str> = problems
                .iter()
                .filter(|p| p.is_error())
                .map(|p| p.path.as_str())
                .collect();
            assert_eq!(paths, ["spec.sessionAffinity"]);
        }
        let mut s = spec();
        s["trafficRouting"] = json!({"proxy": {}});
        s["sessionAffinity"] = json!({"cookie": "coalmine-track"});
        let checked = CanaryResource::new("default", "web", s)
            .check()
            .expect("the controller runs the proxy router, sessions included");
        assert_eq!(checked.router, Router::Proxy);
        let mut s = spec();
        s["trafficRouting"] = json!({"proxy": {"replicas": 0}});
        let problems = CanaryResource::new("default", "web", s)
            .check()
            .expect_err("no proxy pod");
        assert_eq!(problems[0].path, "spec.trafficRouting.proxy.replicas");
    }

    #[test]
    fn the_router_is_read_even_from_an_invalid_spec() {
        let mut s = spec();
        s["steps"] = json!([{"setWeight": 140}]);
        s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
        let c = CanaryResource::new("default", "web", s);
        assert!(c.check().is_err());
        assert_eq!(
            c.router_hint(),
            Router::GatewayApi {
                http_route: "web".into()
            }
        );
        assert_eq!(
            CanaryResource::new("default", "web", json!({})).router_hint(),
            Router::Replicas
        );
        // Istio's too, so a deleted Canary's VirtualService is cleaned.
        let mut s = spec();
        s["steps"] = json!([{"setWeight": 140}]);
        s["trafficRouting"] = json!({"istio": {"virtualService": "vs", "route": "primary",
            "destinationRule": {"name": "dr", "stableSubsetName": "a", "canarySubsetName": "b"}}});
        let Router::Istio {
            virtual_service,
            route,
            destination_rule,
        } = CanaryResource::new("default", "web", s).router_hint()
        else {
            panic!("not the istio router");
        };
        assert_eq!(
            (virtual_service.as_str(), route.as_deref()),
            ("vs", Some("primary"))
        );
        assert_eq!(
            destination_rule.map(|d| d.canary_subset_name),
            Some("b".to_owned())
        );
    }

    #[test]
    fn commands_parse_with_their_id() {
        let c = parse_command("promote/42").expect("a command");
        assert_eq!(c.kind, CommandKind::Promote);
        assert_eq!(c.id, "promote/42");
        assert_eq!(
            parse_command("promote-full/a").map(|c| c.kind),
            Some(CommandKind::PromoteFull)
        );
        assert!(parse_command("explode/1").is_none());
        assert!(parse_command("abort/").is_none());
        assert!(parse_command("abort").is_none());
    }
}
