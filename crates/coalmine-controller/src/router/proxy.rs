//! The `proxy` router: coalmine's own proxy (`coalmine proxy`) runs as the
//! Deployment `NAME-proxy` in front of both versions, and the route table
//! is the ConfigMap `NAME-proxy` (`routes.json`) that every proxy replica
//! watches and puts in effect.
//!
//! For a Canary `NAME` whose Service port is `P` the controller keeps:
//!
//! - Service `NAME-stable` (the stable pods) and `NAME-canary` (the canary
//!   pods), the proxy's two upstreams;
//! - Deployment `NAME-proxy` ([`deployment`]) with its ServiceAccount, Role
//!   and RoleBinding (the proxy may `get, list, watch` its one ConfigMap and
//!   nothing else), the Secret `NAME-proxy` (the sticky-cookie key every
//!   replica shares, made when missing) and the headless Service `NAME-proxy`
//!   (port `metrics`), whose EndpointSlices say which proxy replicas are
//!   Ready;
//! - Service `NAME`, which clients call: it selects the proxy pods only once
//!   `NAME-proxy` has a Ready endpoint ([`switched`]); until then it selects
//!   the stable pods, and the router reports its routes as not in effect
//!   ([`TrafficRouter::refused`]) so the rollout holds at weight 0.
//!
//! Turning the router off points `NAME` back at the stable pods before
//! `NAME-proxy` is scaled to zero (in [`crate::apply::operations`]); a
//! deleted Canary's [`TrafficRouter::cleanup`] does the same, then the
//! garbage collector removes what the Canary owns.

use std::collections::BTreeMap;

use coalmine_core::routes::Routes;
use coalmine_core::spec::ProxyRouting;
use futures_util::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};

use super::{RouteTarget, TrafficRouter};
use crate::resource::{MANAGED_BY_LABEL, MANAGER, REVISION_ANNOTATION};
use crate::{CONFLICT_RETRIES, Error, workload};

/// The label on the proxy pods: `coalmine.dev/proxy: NAME`.
pub const PROXY_LABEL: &str = "coalmine.dev/proxy";
/// Where the proxy takes requests (container port `http`).
pub const HTTP_PORT: i32 = 8080;
/// Where the proxy serves `/metrics`, `/healthz` and `/readyz` (container
/// port `metrics`).
pub const METRICS_PORT: i32 = 9902;
/// The proxy's admin API: loopback inside the pod, so nothing outside the
/// pod can change its routes (they come from the ConfigMap).
pub const ADMIN_ADDR: &str = "127.0.0.1:9901";
/// The ConfigMap key of the route table.
pub const ROUTES_KEY: &str = "routes.json";
/// The Secret key of the sticky-cookie signing key.
pub const SECRET_KEY: &str = "secret";
/// Where the Secret is mounted in the proxy pods.
pub const STICKY_DIR: &str = "/etc/coalmine/sticky";
/// Bytes of the sticky-cookie signing key.
pub const SECRET_BYTES: usize = 32;

/// The proxy's objects' name: `NAME-proxy`.
pub fn proxy_name(name: &str) -> String {
    format!("{name}-proxy")
}

/// The stable pods' own Service under the proxy router: `NAME-stable`.
pub fn stable_name(name: &str) -> String {
    format!("{name}-stable")
}

/// The proxy image when `--proxy-image` is not given: this build's own.
pub fn default_image() -> String {
    format!(
        "ghcr.io/coalmine-dev/coalmine:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The proxy router, with what it runs (from `spec.trafficRouting.proxy`
/// and the controller's `--proxy-image`) and what the cluster says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    /// Proxy pods.
    pub replicas: i32,
    /// The pods' `nodeSelector`.
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The container's `resources`, as written.
    pub resources: Option<Map<String, Value>>,
    /// The proxy's image.
    pub image: String,
    /// Ready endpoints of Service `NAME-proxy` as this reconcile read them.
    pub ready: usize,
}

impl Proxy {
    /// The router for `settings` (checked: `replicas` ≥ 1), running `image`,
    /// with `ready` Ready proxy endpoints.
    pub fn new(settings: &ProxyRouting, image: &str, ready: usize) -> Proxy {
        Proxy {
            replicas: i32::try_from(settings.replicas()).unwrap_or(i32::MAX),
            node_selector: settings.node_selector.clone(),
            resources: settings.resources.clone(),
            image: image.to_owned(),
            ready,
        }
    }

    /// Whether Service `NAME` sends to the proxy pods ([`switched`]).
    pub fn switched(&self) -> bool {
        switched(self.ready)
    }
}

/// Whether Service `NAME` selects the proxy pods: once `NAME-proxy` has a
/// Ready endpoint. Before that (and whenever none is Ready) it selects the
/// stable pods, so clients are never sent to a proxy that cannot answer.
pub fn switched(ready: usize) -> bool {
    ready >= 1
}

/// The Ready endpoints of Service `NAME-proxy` in its EndpointSlices; an
/// endpoint listed in two slices (while the endpoint controller moves it)
/// counts once.
pub fn ready_endpoints(slices: &[EndpointSlice]) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for ep in slices.iter().flat_map(|s| &s.endpoints) {
        if ep.conditions.as_ref().and_then(|c| c.ready) != Some(true) {
            continue;
        }
        let id = ep
            .target_ref
            .as_ref()
            .and_then(|t| t.name.clone())
            .or_else(|| ep.addresses.first().cloned());
        if let Some(id) = id {
            seen.insert(id);
        }
    }
    seen.len()
}

/// Labels of every proxy object: coalmine's, and the proxy's own.
fn labels(name: &str) -> Value {
    json!({MANAGED_BY_LABEL: MANAGER, PROXY_LABEL: name})
}

fn meta(name: &str, owner: &OwnerReference) -> Result<Value, Error> {
    Ok(json!({
        "name": proxy_name(name),
        "labels": labels(name),
        "ownerReferences": [serde_json::to_value(owner)?],
    }))
}

/// The proxy's command line: listen on `0.0.0.0:8080`, send to the two
/// track Services, routes from the ConfigMap, the admin API on loopback.
pub fn args(name: &str, namespace: &str, port: i32) -> Vec<String> {
    let svc = |service: String| format!("http://{service}.{namespace}.svc:{port}");
    [
        "proxy".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--stable".to_owned(),
        svc(stable_name(name)),
        "--canary".to_owned(),
        svc(workload::canary_name(name)),
        "--admin".to_owned(),
        ADMIN_ADDR.to_owned(),
        "--metrics-listen".to_owned(),
        format!("0.0.0.0:{METRICS_PORT}"),
        "--routes-configmap".to_owned(),
        proxy_name(name),
        "--namespace".to_owned(),
        namespace.to_owned(),
        "--sticky-secret-file".to_owned(),
        format!("{STICKY_DIR}/{SECRET_KEY}"),
    ]
    .into()
}

/// The proxy pods' template, annotated with its own fingerprint (the
/// revision [`workload::ensure_deployment`] compares, as the API server's
/// defaults make the stored template differ from the one sent).
pub fn pod_template(name: &str, namespace: &str, proxy: &Proxy, port: i32) -> Value {
    let probe =
        |path: &str| json!({"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": 5});
    let mut container = json!({
        "name": "proxy",
        "image": proxy.image,
        "args": args(name, namespace, port),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": probe("/readyz"),
        "livenessProbe": probe("/healthz"),
        "volumeMounts": [{"name": "sticky", "mountPath": STICKY_DIR, "readOnly": true}],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    if let Some(r) = &proxy.resources {
        container["resources"] = Value::Object(r.clone());
    }
    let mut spec = json!({
        "serviceAccountName": proxy_name(name),
        "containers": [container],
        "volumes": [{"name": "sticky", "secret": {"secretName": proxy_name(name)}}],
        // distroless' `nonroot` user, as the controller's own pod.
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if let Some(n) = &proxy.node_selector {
        spec["nodeSelector"] = json!(n);
    }
    let mut template = json!({"metadata": {"labels": labels(name)}, "spec": spec});
    let revision = coalmine_core::revision::revision_of(&template);
    template["metadata"]["annotations"] = json!({REVISION_ANNOTATION: revision});
    template
}

/// Deployment `NAME-proxy`.
pub fn deployment(
    name: &str,
    namespace: &str,
    owner: &OwnerReference,
    proxy: &Proxy,
    port: i32,
) -> Result<Value, Error> {
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, owner)?,
        "spec": {
            "replicas": proxy.replicas,
            "selector": {"matchLabels": {PROXY_LABEL: name}},
            "template": pod_template(name, namespace, proxy, port),
            "strategy": workload::strategy(),
        }
    }))
}

/// Service `NAME` once it sends to the proxy pods: port `P` → the proxy's
/// `8080`, labelled as the stable Service is.
pub fn front_service(
    name: &str,
    owner: &OwnerReference,
    selector: &BTreeMap<String, String>,
    port: i32,
) -> Result<Service, Error> {
    let mut s = workload::service(name, owner, selector, None, (port, json!(HTTP_PORT)))?;
    if let Some(spec) = s.spec.as_mut() {
        spec.selector = Some(BTreeMap::from([(PROXY_LABEL.to_owned(), name.to_owned())]));
    }
    Ok(s)
}

/// The headless Service `NAME-proxy`: no traffic goes through it; its
/// EndpointSlices list the proxy replicas (their `metrics` port).
pub fn headless_service(name: &str, owner: &OwnerReference) -> Result<Service, Error> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, owner)?,
        "spec": {
            "clusterIP": "None",
            "selector": {PROXY_LABEL: name},
            "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT, "protocol": "TCP"}],
        }
    }))?)
}

/// The ConfigMap `NAME-proxy` holding `routes`.
pub fn config_map(name: &str, owner: &OwnerReference, routes: &Routes) -> Result<Value, Error> {
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name, owner)?,
        "data": {ROUTES_KEY: serde_json::to_string(routes)?},
    }))
}

/// The route table a ConfigMap holds, if it holds a readable one.
pub fn routes_of(cm: &ConfigMap) -> Option<Routes> {
    let text = cm.data.as_ref()?.get(ROUTES_KEY)?;
    serde_json::from_str(text).ok()
}

/// The Secret `NAME-proxy` with the sticky-cookie key `key`.
pub fn secret(name: &str, owner: &OwnerReference, key: &[u8]) -> Result<Value, Error> {
    use k8s_openapi::ByteString;
    let data = serde_json::to_value(ByteString(key.to_vec()))?;
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(name, owner)?,
        "type": "Opaque",
        "data": {SECRET_KEY: data},
    }))
}

/// A fresh sticky-cookie key from the system's random generator.
pub fn new_key() -> Result<Vec<u8>, Error> {
    let mut key = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut key).map_err(|e| Error::Missing {
        field: "spec.trafficRouting.proxy",
        what: format!("no random bytes for the sticky-cookie key: {e}"),
    })?;
    Ok(key)
}

/// The proxy's ServiceAccount `NAME-proxy`.
pub fn service_account(name: &str, owner: &OwnerReference) -> Result<Value, Error> {
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(name, owner)?,
    }))
}

/// The proxy's Role `NAME-proxy`: its own ConfigMap, read and watched
/// (the proxy watches it with a field selector on its name, which
/// `resourceNames` authorizes), and nothing else.
pub fn role(name: &str, owner: &OwnerReference) -> Result<Value, Error> {
    Ok(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta(name, owner)?,
        "rules": [{
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [proxy_name(name)],
            "verbs": ["get", "list", "watch"],
        }],
    }))
}

/// The RoleBinding `NAME-proxy` of the Role to the proxy's ServiceAccount.
pub fn role_binding(name: &str, namespace: &str, owner: &OwnerReference) -> Result<Value, Error> {
    Ok(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta(name, owner)?,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": proxy_name(name)},
        "subjects": [{"kind": "ServiceAccount", "name": proxy_name(name), "namespace": namespace}],
    }))
}

/// The API resource of an object [`crate::apply::Op::Ensure`] creates.
pub fn api_resource(object: &Value) -> Option<ApiResource> {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    Some(match object.get("kind")?.as_str()? {
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Secret" => ApiResource::erase::<Secret>(&()),
        "Role" => ApiResource::erase::<Role>(&()),
        "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
        _ => return None,
    })
}

/// Puts `routes` in ConfigMap `NAME-proxy`: created when missing, written
/// only when the table it holds differs, guarded by the resourceVersion
/// read (a 409 is retried from a fresh read). With `create` false a
/// missing ConfigMap is left missing (a deleted Canary's cleanup).
pub async fn write_routes(
    target: &RouteTarget,
    routes: &Routes,
    create: bool,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(target.client.clone(), &target.namespace);
    let cm_name = proxy_name(&target.name);
    let text = serde_json::to_string(routes)?;
    for _ in 0..CONFLICT_RETRIES {
        let Some(cm) = api.get_opt(&cm_name).await? else {
            if !create {
                return Ok(());
            }
            let desired: ConfigMap =
                serde_json::from_value(config_map(&target.name, &target.owner, routes)?)?;
            match api.create(&PostParams::default(), &desired).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let uid = target.owner.uid.as_str();
        if !workload::ours(&cm.metadata, uid) {
            return Err(Error::Missing {
                field: "spec.trafficRouting.proxy",
                what: format!(
                    "ConfigMap {cm_name} exists and was not created by this Canary; delete it or name the Canary differently"
                ),
            });
        }
        if routes_of(&cm).as_ref() == Some(routes) {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": cm.metadata.resource_version},
            "data": {ROUTES_KEY: text},
        });
        match api
            .patch(&cm_name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(format!("ConfigMap {cm_name}")))
}

/// Service `NAME` pointed back at what `NAME-stable` selects, on its port
/// and target: the stable pods, as under the other routers.
pub fn back_to_stable(name: &str, stable: &Service) -> Service {
    let mut s = stable.clone();
    s.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    };
    s.status = None;
    s
}

impl TrafficRouter for Proxy {
    fn canary_service(&self) -> bool {
        true
    }

    fn apply<'a>(
        &'a self,
        target: &'a RouteTarget,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(write_routes(target, routes, true))
    }

    fn refused<'a>(
        &'a self,
        target: &'a RouteTarget,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        let why = (!self.switched()).then(|| {
            let (name, proxy) = (&target.name, proxy_name(&target.name));
            format!(
                "the proxies are not ready yet: Service {proxy} has no Ready endpoint, so Service {name} still sends everything to the stable pods and the rollout holds at weight 0 (see Deployment {proxy}: its pods' scheduling, image and readiness)"
            )
        });
        Box::pin(async move { Ok(why) })
    }

    fn cleanup<'a>(&'a self, target: &'a RouteTarget) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            write_routes(target, &Routes::all_stable(), false).await?;
            let services: Api<Service> = Api::namespaced(target.client.clone(), &target.namespace);
            match services.get_opt(&stable_name(&target.name)).await? {
                Some(stable) => {
                    let back = back_to_stable(&target.name, &stable);
                    workload::ensure_service(&services, &back, None).await?;
                }
                None => tracing::warn!(
                    canary = %target.name,
                    namespace = %target.namespace,
                    "Service {} is missing: Service {} left as it is",
                    stable_name(&target.name),
                    target.name
                ),
            }
            let deployments: Api<Deployment> =
                Api::namespaced(target.client.clone(), &target.namespace);
            workload::scale(&deployments, &proxy_name(&target.name), 0, None).await?;
            Ok(())
        })
    }

    fn proxy(&self) -> Option<&Proxy> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "coalmine.dev/v1alpha1".into(),
            kind: "Canary".into(),
            name: "web".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn proxy() -> Proxy {
        Proxy::new(
            &ProxyRouting::default(),
            "ghcr.io/coalmine-dev/coalmine:9.9.9",
            0,
        )
    }

    #[test]
    fn the_deployment_runs_the_proxy_as_the_contract_says() {
        let d = deployment("web", "shop", &owner(), &proxy(), 80).expect("built");
        assert_eq!(d["metadata"]["name"], "web-proxy");
        assert_eq!(d["metadata"]["labels"][MANAGED_BY_LABEL], "coalmine");
        assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(d["spec"]["replicas"], 2, "two by default");
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            json!({PROXY_LABEL: "web"})
        );
        let t = &d["spec"]["template"];
        assert_eq!(t["metadata"]["labels"][PROXY_LABEL], "web");
        assert_eq!(t["metadata"]["labels"][MANAGED_BY_LABEL], "coalmine");
        assert_eq!(t["spec"]["serviceAccountName"], "web-proxy");
        let c = &t["spec"]["containers"][0];
        assert_eq!(c["name"], "proxy");
        assert_eq!(c["image"], "ghcr.io/coalmine-dev/coalmine:9.9.9");
        let args: Vec<&str> = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            args.join(" "),
            "proxy --listen 0.0.0.0:8080 --stable http://web-stable.shop.svc:80 --canary http://web-canary.shop.svc:80 --admin 127.0.0.1:9901 --metrics-listen 0.0.0.0:9902 --routes-configmap web-proxy --namespace shop --sticky-secret-file /etc/coalmine/sticky/secret"
        );
        assert_eq!(
            c["ports"][0],
            json!({"name": "http", "containerPort": 8080, "protocol": "TCP"})
        );
        assert_eq!(c["ports"][1]["containerPort"], 9902);
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
        assert_eq!(
            c["volumeMounts"][0],
            json!({"name": "sticky", "mountPath": "/etc/coalmine/sticky", "readOnly": true})
        );
        assert_eq!(t["spec"]["volumes"][0]["secret"]["secretName"], "web-proxy");
        assert!(c.get("resources").is_none());
        assert!(t["spec"].get("nodeSelector").is_none());
        // The template's fingerprint changes with what the pods run.
        let rev =
            |d: &Value| workload::template_revision(&d["spec"]["template"]).map(str::to_owned);
        let other = deployment("web", "shop", &owner(), &proxy(), 8080).expect("built");
        assert!(rev(&d).is_some());
        assert_ne!(rev(&d), rev(&other));
        // And it is a Deployment the compiled types read.
        let _: Deployment = serde_json::from_value(d).expect("a Deployment");
    }

    #[test]
    fn replicas_node_selector_and_resources_come_from_the_spec() {
        let settings: ProxyRouting = serde_json::from_value(json!({
            "replicas": 3,
            "nodeSelector": {"pool": "edge"},
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}}
        }))
        .expect("settings");
        let p = Proxy::new(&settings, "img", 0);
        let d = deployment("web", "shop", &owner(), &p, 80).expect("built");
        assert_eq!(d["spec"]["replicas"], 3);
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["nodeSelector"], json!({"pool": "edge"}));
        assert_eq!(
            spec["containers"][0]["resources"],
            json!({"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}})
        );
    }

    #[test]
    fn the_services_send_to_the_proxy_and_list_its_replicas() {
        let sel = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let front = serde_json::to_value(front_service("web", &owner(), &sel, 80).expect("built"))
            .expect("json");
        assert_eq!(front["metadata"]["name"], "web");
        assert_eq!(front["spec"]["selector"], json!({PROXY_LABEL: "web"}));
        assert_eq!(front["spec"]["ports"][0]["port"], 80);
        assert_eq!(front["spec"]["ports"][0]["targetPort"], 8080);
        let headless =
            serde_json::to_value(headless_service("web", &owner()).expect("built")).expect("json");
        assert_eq!(headless["metadata"]["name"], "web-proxy");
        assert_eq!(headless["metadata"]["labels"][MANAGED_BY_LABEL], "coalmine");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert_eq!(headless["spec"]["selector"], json!({PROXY_LABEL: "web"}));
        assert_eq!(
            headless["spec"]["ports"],
            json!([{"name": "metrics", "port": 9902, "targetPort": 9902, "protocol": "TCP"}])
        );
        // Back to stable: what NAME-stable selects, on its port and target.
        let stable = workload::service(
            "web-stable",
            &owner(),
            &sel,
            Some(workload::Track::Stable),
            (80, json!(8000)),
        )
        .expect("built");
        let back = serde_json::to_value(back_to_stable("web", &stable)).expect("json");
        assert_eq!(back["metadata"]["name"], "web");
        assert_eq!(
            back["spec"]["selector"],
            json!({"app": "web", "coalmine.dev/track": "stable"})
        );
        assert_eq!(back["spec"]["ports"][0]["targetPort"], 8000);
    }

    #[test]
    fn the_configmap_holds_the_routes_as_the_admin_api_does() {
        let routes = Routes {
            canary_weight: 20,
            sticky_cookie: Some("track".into()),
            ..Routes::all_stable()
        };
        let cm = config_map("web", &owner(), &routes).expect("built");
        assert_eq!(cm["metadata"]["name"], "web-proxy");
        let text = cm["data"][ROUTES_KEY].as_str().expect("text");
        let v: Value = serde_json::from_str(text).expect("json");
        assert_eq!(v["canaryWeight"], 20);
        assert_eq!(v["stickyCookie"], "track");
        let cm: ConfigMap = serde_json::from_value(cm).expect("a ConfigMap");
        assert_eq!(routes_of(&cm), Some(routes));
        let broken: ConfigMap =
            serde_json::from_value(json!({"data": {ROUTES_KEY: "{"}})).expect("a ConfigMap");
        assert_eq!(routes_of(&broken), None, "unreadable: written again");
    }

    #[test]
    fn the_proxy_may_read_its_own_configmap_and_nothing_else() {
        let r = role("web", &owner()).expect("built");
        assert_eq!(
            r["rules"],
            json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["web-proxy"], "verbs": ["get", "list", "watch"]}])
        );
        let b = role_binding("web", "shop", &owner()).expect("built");
        assert_eq!(b["roleRef"]["name"], "web-proxy");
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "web-proxy", "namespace": "shop"}])
        );
        let sa = service_account("web", &owner()).expect("built");
        assert_eq!(sa["metadata"]["name"], "web-proxy");
        let key = new_key().expect("random");
        assert_eq!(key.len(), 32);
        let s = secret("web", &owner(), &key).expect("built");
        let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(s).expect("a Secret");
        assert_eq!(
            s.data
                .as_ref()
                .and_then(|d| d.get(SECRET_KEY))
                .map(|b| b.0.clone()),
            Some(key)
        );
        for o in [&r, &b, &sa] {
            assert!(api_resource(o).is_some());
        }
    }

    #[test]
    fn service_name_switches_once_a_proxy_endpoint_is_ready() {
        let ep = |pod: &str, ready: bool| {
            json!({"addresses": ["10.0.0.1"], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "name": pod}})
        };
        let slice = |eps: Vec<Value>| -> EndpointSlice {
            serde_json::from_value(json!({"addressType": "IPv4", "endpoints": eps}))
                .expect("a slice")
        };
        assert_eq!(ready_endpoints(&[]), 0);
        let pending = [slice(vec![ep("web-proxy-a", false)])];
        assert_eq!(ready_endpoints(&pending), 0);
        assert!(!switched(ready_endpoints(&pending)));
        let one = [
            slice(vec![ep("web-proxy-a", true), ep("web-proxy-b", false)]),
            slice(vec![ep("web-proxy-a", true)]),
        ];
        assert_eq!(ready_endpoints(&one), 1, "listed twice, counted once");
        assert!(switched(ready_endpoints(&one)));
        let p = Proxy::new(&ProxyRouting::default(), "img", 0);
        assert!(!p.switched());
    }
}
