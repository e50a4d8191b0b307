//! The Deployments and Services a Canary owns: what they should look like
//! (pure builders, unit-tested) and how they are brought there.
//!
//! - `NAME` (stable) and `NAME-canary` are Deployments built from
//!   `spec.template`, each pod template labelled `coalmine.dev/track:
//!   stable|canary` and annotated with its `coalmine.dev/revision`; their
//!   selectors are the Canary's selector plus the track label, so they
//!   never select each other's pods.
//! - Service `NAME` selects the Canary's selector: both tracks under the
//!   `replicas` router (the replica ratio is the traffic split), only
//!   stable under routers that address the canary through its own Service
//!   `NAME-canary`.
//! - Stable's template is written once, at creation, and then only by a
//!   promotion: a spec change starts a canary and leaves stable alone.
//!
//! Updates are JSON patches of exactly the fields coalmine decides
//! (replicas, template, selector), so labels, annotations and fields other
//! tools set on these objects stay.
//!
//! Pod templates travel as JSON, never through the compiled `k8s-openapi`
//! types: those know the fields of one Kubernetes release and would drop
//! newer ones silently. Deployments are created and their templates
//! patched with `fieldValidation=Strict`, so a field the cluster does not
//! know (a typo in `spec.template`) is refused by the API server with its
//! path, and shows on the Canary, instead of vanishing.

use std::collections::BTreeMap;

use coalmine_core::spec::{CanarySpec, PortRef};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::resource::{MANAGED_BY_LABEL, MANAGER, REVISION_ANNOTATION, TRACK_LABEL};

/// Which of the two Deployments (`NAME` or `NAME-canary`); its `as_str` is
/// the [`TRACK_LABEL`] value.
pub use coalmine_core::routes::Track;

/// The canary objects' name: `NAME-canary`.
pub fn canary_name(name: &str) -> String {
    format!("{name}-canary")
}

/// Template labels that change from one release to the next (a chart's
/// or the app's version): never part of a selector coalmine picks itself,
/// or a release would leave the Service selecting none of the running pods.
pub const RELEASE_LABELS: [&str; 4] = [
    "app.kubernetes.io/version",
    "helm.sh/chart",
    "version",
    "pod-template-hash",
];

/// The labels that pick this Canary's pods: `spec.selector.matchLabels`, or
/// the template's labels without [`RELEASE_LABELS`] when there is no
/// selector.
pub fn selector_labels(spec: &CanarySpec) -> BTreeMap<String, String> {
    if let Some(sel) = spec
        .selector
        .as_ref()
        .filter(|s| !s.match_labels.is_empty())
    {
        return sel.match_labels.clone();
    }
    template_labels(spec)
        .into_iter()
        .filter(|(k, _)| !RELEASE_LABELS.contains(&k.as_str()))
        .collect()
}

fn template_labels(spec: &CanarySpec) -> BTreeMap<String, String> {
    spec.template
        .as_ref()
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The selector a Deployment coalmine created was made with, without the
/// track label: fixed for good, as the API server refuses to change a
/// Deployment's selector.
pub fn frozen_selector(d: &Deployment) -> Option<BTreeMap<String, String>> {
    let mut labels = d.spec.as_ref()?.selector.match_labels.clone()?;
    labels.remove(TRACK_LABEL);
    (!labels.is_empty()).then_some(labels)
}

fn show(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

/// The selector of the Canary's Deployments and Service: the one the
/// stable Deployment was created with once it exists (frozen at the first
/// deploy), else [`selector_labels`]. Refused, naming the field, when
/// `spec.selector` asks for another one, or when the template's labels no
/// longer carry it (the new pods would not be selected: an outage).
pub fn selector_for(
    spec: &CanarySpec,
    name: &str,
    stable: Option<&Deployment>,
) -> Result<BTreeMap<String, String>, coalmine_core::Problem> {
    use coalmine_core::Problem;
    let asked = selector_labels(spec);
    let selector = match stable.and_then(frozen_selector) {
        Some(frozen) => {
            let explicit = spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty());
            if explicit && asked != frozen {
                return Err(Problem::error(
                    "spec.selector.matchLabels",
                    format!(
                        "`{}` is not `{}`, the selector Deployment {name} was created with, and a Deployment's selector cannot change",
                        show(&asked),
                        show(&frozen)
                    ),
                )
                .hint(format!(
                    "put back `{}`; to change it, delete the Canary and create it again",
                    show(&frozen)
                )));
            }
            frozen
        }
        None => asked,
    };
    let labels = template_labels(spec);
    let missing: BTreeMap<String, String> = selector
        .iter()
        .filter(|(k, v)| labels.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !missing.is_empty() {
        return Err(Problem::error(
            "spec.template.metadata.labels",
            format!(
                "lack `{}` of the selector `{}`: the Service would select none of the new pods",
                show(&missing),
                show(&selector)
            ),
        )
        .hint("keep the selector's labels on the template; labels that change per release belong outside spec.selector"));
    }
    Ok(selector)
}

/// The spec's template with the track label and the revision annotation.
pub fn pod_template(template: &Map<String, Value>, track: Track, revision: &str) -> Value {
    let mut t = Value::Object(template.clone());
    let meta = t
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    if let Some(Value::Object(meta)) = meta {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Value::Object(l) = labels {
            l.insert(TRACK_LABEL.into(), json!(track.as_str()));
        }
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Value::Object(a) = annotations {
            a.insert(REVISION_ANNOTATION.into(), json!(revision));
        }
    }
    t
}

/// The same pod template moved to another track (a promotion gives stable
/// the canary's template, revision annotation included).
pub fn retrack(template: &Value, track: Track) -> Value {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.insert(TRACK_LABEL.into(), json!(track.as_str()));
    }
    t
}

/// The revision a pod template carries.
pub fn template_revision(template: &Value) -> Option<&str> {
    template
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(Value::as_str)
}

fn managed_labels(selector: &BTreeMap<String, String>) -> Value {
    let mut labels: Map<String, Value> = selector
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGER));
    Value::Object(labels)
}

/// A Deployment of `template` for one track, as the JSON sent to the API
/// server (every field of the template kept).
pub fn deployment(
    name: &str,
    owner: &OwnerReference,
    selector: &BTreeMap<String, String>,
    template: Value,
    track: Track,
    replicas: i32,
) -> Result<Value, Error> {
    let mut match_labels: Map<String, Value> = selector
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    match_labels.insert(TRACK_LABEL.into(), json!(track.as_str()));
    let mut labels = managed_labels(selector);
    labels[TRACK_LABEL] = json!(track.as_str());
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [serde_json::to_value(owner)?]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": match_labels},
            "template": template,
            "strategy": strategy(),
        }
    }))
}

/// The rollout strategy of both Deployments: a template change (a
/// promotion, a newer canary revision) starts new pods before it stops old
/// ones, so a Deployment never has fewer available pods than it asks for
/// (Kubernetes' default lets a quarter of them go first).
pub fn strategy() -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}})
}

/// Whether a Deployment already rolls out as [`strategy`] says.
fn has_strategy(d: &Deployment) -> bool {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let Some(s) = d.spec.as_ref().and_then(|s| s.strategy.as_ref()) else {
        return false;
    };
    let unavailable = s
        .rolling_update
        .as_ref()
        .and_then(|r| r.max_unavailable.as_ref());
    s.type_.as_deref() == Some("RollingUpdate") && matches!(unavailable, Some(IntOrString::Int(0)))
}

/// Ready endpoints behind one Service, per track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Serving {
    /// Ready endpoints of stable pods.
    pub stable: i32,
    /// Ready endpoints of canary pods.
    pub canary: i32,
}

/// The Ready endpoints behind Service `name`, from its EndpointSlices:
/// what the Service really sends traffic to, which lags the pods' own
/// readiness (and the Deployments' status) by the endpoint controller's
/// delay. A canary pod is one whose name starts with `NAME-canary-`: pods
/// are named after their ReplicaSet, `DEPLOYMENT-HASH`, and a template hash
/// has no vowels, so no stable pod (`NAME-HASH-…`) starts that way.
pub async fn serving(
    api: &Api<k8s_openapi::api::discovery::v1::EndpointSlice>,
    name: &str,
) -> Result<Serving, Error> {
    let lp = kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let slices = api.list(&lp).await?.items;
    Ok(count_serving(&slices, name))
}

/// [`serving`]'s count, pure. An endpoint listed twice (in two slices
/// while the endpoint controller moves it) counts once.
pub fn count_serving(
    slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
    name: &str,
) -> Serving {
    let prefix = format!("{}-", canary_name(name));
    let mut pods = std::collections::BTreeSet::new();
    let mut out = Serving::default();
    for ep in slices.iter().flat_map(|s| &s.endpoints) {
        if ep.conditions.as_ref().and_then(|c| c.ready) != Some(true) {
            continue;
        }
        let Some(pod) = ep.target_ref.as_ref().and_then(|t| t.name.as_deref()) else {
            continue;
        };
        if !pods.insert(pod) {
            continue;
        }
        if pod.starts_with(&prefix) {
            out.canary += 1;
        } else {
            out.stable += 1;
        }
    }
    out
}

/// The Service ports: `spec.service`, else the first container port, else 80.
pub fn service_port(spec: &CanarySpec) -> (i32, Value) {
    if let Some(s) = &spec.service {
        let port = i32::try_from(s.port).unwrap_or(80);
        let target = match &s.target_port {
            Some(PortRef::Number(n)) => json!(n),
            Some(PortRef::Name(n)) => json!(n),
            None => json!(port),
        };
        return (port, target);
    }
    let container_port = spec
        .template
        .as_ref()
        .and_then(|t| t.get("spec"))
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.first())
        .and_then(|c| c.get("ports"))
        .and_then(Value::as_array)
        .and_then(|ps| ps.first())
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok());
    match container_port {
        Some(p) => (p, json!(p)),
        None => (80, json!(80)),
    }
}

/// A Service over `selector` (plus the track label when it serves one track).
pub fn service(
    name: &str,
    owner: &OwnerReference,
    selector: &BTreeMap<String, String>,
    track: Option<Track>,
    port: (i32, Value),
) -> Result<Service, Error> {
    let mut sel: Map<String, Value> = selector
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if let Some(t) = track {
        sel.insert(TRACK_LABEL.into(), json!(t.as_str()));
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": managed_labels(selector), "ownerReferences": [owner]},
        "spec": {
            "selector": sel,
            "ports": [{"name": "http", "port": port.0, "targetPort": port.1, "protocol": "TCP"}],
        }
    }))?)
}

/// The revision a Deployment runs once it is rolled out: the current
/// generation observed, every wanted replica updated and available.
pub fn ready_revision(d: &Deployment) -> Option<String> {
    rolled_out(d).then(|| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .cloned()
    })?
}

/// Whether the Deployment's current generation is rolled out and available.
pub fn rolled_out(d: &Deployment) -> bool {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &d.status else {
        return false;
    };
    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && st.updated_replicas.unwrap_or(0) >= wanted
        && st.available_replicas.unwrap_or(0) >= wanted
        && st.replicas.unwrap_or(0) <= wanted.max(st.updated_replicas.unwrap_or(0))
}

/// Whether nothing of the Deployment runs any more (absent counts).
pub fn scaled_down(d: Option<&Deployment>) -> bool {
    d.is_none_or(|d| {
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        wanted == 0
            && st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
            && st.replicas.unwrap_or(0) == 0
    })
}

/// The pods of a Deployment that are available.
pub fn available(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The replicas a Deployment asks for.
pub fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// A Deployment's pod template as JSON, as the compiled types know it:
/// enough for its labels and annotations (the revision), not for copying
/// (see [`Fetched::template`]).
pub fn template_of(d: &Deployment) -> Option<Value> {
    let t = &d.spec.as_ref()?.template;
    serde_json::to_value(t).ok()
}

/// A Deployment read from the API server: typed for its replicas and
/// status, with its pod template exactly as the server returned it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The Deployment, through the compiled types.
    pub deployment: Deployment,
    /// `spec.template` as JSON, with the fields the compiled types lack.
    pub template: Option<Value>,
}

/// Reads Deployment `name`, if it exists, keeping its pod template whole.
pub async fn get_deployment(api: &Api<Deployment>, name: &str) -> Result<Option<Fetched>, Error> {
    let request = kube::core::Request::new(api.resource_url())
        .get(name, &kube::api::GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    let raw: Value = match api.clone().into_client().request(request).await {
        Ok(raw) => raw,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some(Fetched::from_raw(raw)?))
}

impl Fetched {
    /// A Deployment from its JSON as the API server sent it.
    pub fn from_raw(raw: Value) -> Result<Fetched, Error> {
        let template = raw.pointer("/spec/template").cloned();
        Ok(Fetched {
            deployment: serde_json::from_value(raw)?,
            template,
        })
    }
}

/// The field manager of the controller's writes to Deployments: the API
/// server records which manager last set each field, and [`autoscaled`]
/// tells coalmine's `spec.replicas` from anyone else's by it.
pub const FIELD_MANAGER: &str = "coalmine-controller";

/// Patch parameters of the controller's Deployment writes.
fn deployment_patch() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
    .validation_strict()
}

/// Whether a manager other than coalmine set `spec.replicas` last: an
/// update takes a field's ownership, so this holds from another writer's
/// change of the replicas until coalmine's next one.
pub fn replicas_set_by_another(d: &Deployment) -> bool {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
        .filter_map(|m| m.fields_v1.as_ref())
        .any(|f| f.0.pointer("/f:spec/f:replicas").is_some())
}

/// HorizontalPodAutoscalers that size one of the Canary's Deployments
/// (`deployments`, the existing ones): coalmine sets both Deployments'
/// replicas for the traffic split, so an autoscaler on either would undo
/// each step and be undone in turn. Looked up only when another manager
/// set a Deployment's replicas, so a Canary nobody else scales costs no
/// call. The supported way is an autoscaler on the Canary itself (its
/// `scale` subresource), which sizes both tracks together.
pub async fn autoscaled(
    client: &kube::Client,
    namespace: &str,
    canary: &str,
    deployments: &[&Deployment],
) -> Result<Vec<coalmine_core::Problem>, Error> {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let scaled: Vec<&str> = deployments
        .iter()
        .filter(|d| replicas_set_by_another(d))
        .filter_map(|d| d.metadata.name.as_deref())
        .collect();
    if scaled.is_empty() {
        return Ok(Vec::new());
    }
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let list = hpas.list(&kube::api::ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|h| {
            let target = &h.spec.as_ref()?.scale_target_ref;
            let hit = target.kind == "Deployment" && scaled.contains(&target.name.as_str());
            hit.then(|| {
                let hpa = h.metadata.name.as_deref().unwrap_or_default();
                coalmine_core::Problem::error(
                    "spec.replicas",
                    format!(
                        "HorizontalPodAutoscaler {hpa} scales Deployment {}, whose replicas coalmine sets for the traffic split",
                        target.name
                    ),
                )
                .hint(format!(
                    "point the autoscaler at the Canary, which scales both tracks together: `kubectl patch hpa {hpa} --type merge -p '{{\"spec\":{{\"scaleTargetRef\":{{\"apiVersion\":\"coalmine.dev/v1alpha1\",\"kind\":\"Canary\",\"name\":\"{canary}\"}}}}}}'`"
                ))
            })
        })
        .collect())
}

/// Creates Deployment `desired` with `fieldValidation=Strict`.
async fn create_strict(api: &Api<Deployment>, desired: &Value) -> Result<Deployment, Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let mut request = kube::core::Request::new(api.resource_url())
        .create(&params, serde_json::to_vec(desired)?)
        .map_err(kube::Error::BuildRequest)?;
    let uri = request.uri().to_string();
    let sep = if uri.ends_with('?') || uri.ends_with('&') {
        ""
    } else if uri.contains('?') {
        "&"
    } else {
        "?"
    };
    *request.uri_mut() = format!("{uri}{sep}fieldValidation=Strict")
        .parse()
        .map_err(|e: http::uri::InvalidUri| {
            kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e.into()))
        })?;
    Ok(api.clone().into_client().request(request).await?)
}

/// `known` when this reconcile has read the object already (`Some(None)`:
/// it was missing), else the object read now.
async fn read_unless_known<K>(
    api: &Api<K>,
    name: &str,
    known: Option<Option<K>>,
) -> Result<Option<K>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match known {
        Some(k) => Ok(k),
        None => Ok(api.get_opt(name).await?),
    }
}

/// Creates `desired` if it is missing; otherwise sets its replicas and,
/// when `template` is true, its pod template (when the revision differs).
/// `known`: the Deployment as this reconcile read it, if it did.
pub async fn ensure_deployment(
    api: &Api<Deployment>,
    desired: &Value,
    template: bool,
    known: Option<Option<Deployment>>,
) -> Result<Deployment, Error> {
    let name = desired
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(current) = read_unless_known(api, &name, known).await? else {
        return create_strict(api, desired).await;
    };
    let mut ops = Vec::new();
    let want = desired
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(1);
    if replicas_of(&current) != want {
        ops.push(json!({"op": "replace", "path": "/spec/replicas", "value": want}));
    }
    if !has_strategy(&current) {
        ops.push(json!({"op": "add", "path": "/spec/strategy", "value": strategy()}));
    }
    if template {
        let want_t = desired
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        let have_t = template_of(&current).unwrap_or(Value::Null);
        // Compared by revision: the API server fills in defaults, so the
        // stored template never equals the one sent.
        if template_revision(&want_t) != template_revision(&have_t) {
            ops.push(json!({"op": "replace", "path": "/spec/template", "value": want_t}));
        }
    }
    if ops.is_empty() {
        return Ok(current);
    }
    Ok(api
        .patch(&name, &deployment_patch(), &json_patch(ops)?)
        .await?)
}

/// Sets a Deployment's replicas if it exists; the Deployment as written,
/// or as it was when nothing needed writing. `known`: the Deployment as
/// this reconcile read it, if it did.
pub async fn scale(
    api: &Api<Deployment>,
    name: &str,
    replicas: i32,
    known: Option<Option<Deployment>>,
) -> Result<Option<Deployment>, Error> {
    match read_unless_known(api, name, known).await? {
        Some(d) if replicas_of(&d) != replicas => Ok(Some(
            api.patch(
                name,
                &deployment_patch(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await?,
        )),
        d => Ok(d),
    }
}

/// Whether an existing object may be managed for the Canary with uid
/// `owner_uid`: it is owned by it, or a person handed it over with the
/// [`MANAGED_BY_LABEL`] label (`coalmine`) and no other controller owns it.
pub fn ours(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owner_uid: &str,
) -> bool {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    if owners.iter().any(|o| o.uid == owner_uid) {
        return true;
    }
    let handed_over = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGER);
    handed_over && !owners.iter().any(|o| o.controller == Some(true))
}

/// The refusal for Deployments and Services named like the Canary's that
/// coalmine did not create: taking them over would replace a running
/// app's selector, ports or pods.
pub fn not_ours(kind: &str, name: &str) -> coalmine_core::Problem {
    let (what, hint) = if kind == "Service" {
        (
            "its selector would be replaced by the Canary's",
            format!(
                "to hand it over (its ports are kept), label it: `kubectl label service {name} {MANAGED_BY_LABEL}={MANAGER}`; or delete it, or name the Canary differently"
            ),
        )
    } else {
        (
            "coalmine runs its own pods under this name, and a Deployment's selector cannot change to take the track label",
            "name the Canary differently, let its Service send to both apps' pods, then delete the old Deployment (docs/controller.md, \"Adopting a running app\")".to_owned(),
        )
    };
    coalmine_core::Problem::error(
        "metadata.name",
        format!("{kind} {name} exists and was not created by this Canary: {what}"),
    )
    .hint(hint)
}

/// The Service's ports once `want` is in: the existing ports stay (an
/// adopted Service's other ports keep serving); the one with `want`'s port
/// number takes `want`'s target.
fn merged_ports(
    have: &[k8s_openapi::api::core::v1::ServicePort],
    want: &k8s_openapi::api::core::v1::ServicePort,
) -> Vec<k8s_openapi::api::core::v1::ServicePort> {
    let mut out = have.to_vec();
    match out.iter_mut().find(|p| p.port == want.port) {
        Some(p) => {
            p.target_port = want.target_port.clone();
            if p.protocol.is_none() {
                p.protocol = want.protocol.clone();
            }
        }
        None => {
            let mut p = want.clone();
            // Service ports need distinct names once there are several.
            if out.iter().any(|o| o.name == p.name) {
                p.name = Some(format!("coalmine-{}", want.port));
            }
            out.push(p);
        }
    }
    out
}

/// Creates `desired` if missing, or sets its selector and port; the
/// Service as written or found. `known`: the Service as this reconcile
/// read it, if it did.
pub async fn ensure_service(
    api: &Api<Service>,
    desired: &Service,
    known: Option<Option<Service>>,
) -> Result<Service, Error> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let Some(current) = read_unless_known(api, &name, known).await? else {
        return Ok(api.create(&PostParams::default(), desired).await?);
    };
    let want = desired.spec.clone().unwrap_or_default();
    let have = current.spec.clone().unwrap_or_default();
    let mut ops = Vec::new();
    if want.selector != have.selector {
        ops.push(json!({"op": "replace", "path": "/spec/selector", "value": want.selector}));
    }
    if let Some(port) = want.ports.as_ref().and_then(|p| p.first()) {
        let have_ports = have.ports.clone().unwrap_or_default();
        let ports = merged_ports(&have_ports, port);
        if ports != have_ports {
            ops.push(json!({"op": "replace", "path": "/spec/ports", "value": ports}));
        }
    }
    if ops.is_empty() {
        return Ok(current);
    }
    Ok(api
        .patch(&name, &PatchParams::default(), &json_patch(ops)?)
        .await?)
}

/// A JSON patch from its operations.
pub fn json_patch(ops: Vec<Value>) -> Result<Patch<()>, Error> {
    Ok(Patch::Json(serde_json::from_value(Value::Array(ops))?))
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

    fn spec() -> CanarySpec {
        serde_json::from_value(json!({
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]}}
        }))
        .expect("a spec")
    }

    #[test]
    fn deployments_select_their_track_and_carry_the_revision() {
        let s = spec();
        let sel = selector_labels(&s);
        let t = pod_template(s.template.as_ref().expect("template"), Track::Canary, "abc");
        let v = deployment("web-canary", &owner(), &sel, t, Track::Canary, 3).expect("built");
        assert_eq!(v["spec"]["selector"]["matchLabels"][TRACK_LABEL], "canary");
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "web");
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"][TRACK_LABEL],
            "canary"
        );
        assert_eq!(
            v["spec"]["template"]["metadata"]["annotations"][REVISION_ANNOTATION],
            "abc"
        );
        assert_eq!(v["metadata"]["labels"][MANAGED_BY_LABEL], "coalmine");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "u-1");
        let stable = retrack(&v["spec"]["template"], Track::Stable);
        assert_eq!(stable["metadata"]["labels"][TRACK_LABEL], "stable");
        assert_eq!(template_revision(&stable), Some("abc"));
    }

    #[test]
    fn fields_newer_than_the_compiled_types_are_kept() {
        // `fileKeyRef` (env from a file) and container restart rules are
        // fields of Kubernetes releases after the one `k8s-openapi` is
        // built for here: a round trip through `Deployment` drops them.
        let template = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "web", "image": "web:2", "restartPolicy": "Always",
                "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}],
                "env": [{"name": "X", "valueFrom": {"fileKeyRef": {"volumeName": "v", "path": "a.env", "key": "X"}}}]
            }]}
        });
        let sel = selector_labels(&spec());
        let Value::Object(t) = template else {
            panic!("an object")
        };
        let t = pod_template(&t, Track::Canary, "abc");
        let v = deployment("web-canary", &owner(), &sel, t, Track::Canary, 1).expect("built");
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"][0]["valueFrom"]["fileKeyRef"]["key"], "X");
        assert_eq!(c["restartPolicyRules"][0]["action"], "Restart");
        let through_types: Deployment = serde_json::from_value(v).expect("a Deployment");
        let dropped = template_of(&through_types).expect("a template");
        assert_eq!(
            dropped["spec"]["containers"][0].get("restartPolicyRules"),
            None,
            "the compiled types drop it: why templates travel as JSON"
        );
    }

    #[test]
    fn services_default_to_the_container_port() {
        let s = spec();
        let svc = service(
            "web",
            &owner(),
            &selector_labels(&s),
            None,
            service_port(&s),
        )
        .expect("built");
        let v = serde_json::to_value(&svc).expect("json");
        assert_eq!(v["spec"]["ports"][0]["port"], 8080);
        assert_eq!(v["spec"]["selector"], json!({"app": "web"}));
    }

    #[test]
    fn serving_counts_ready_endpoints_per_track_once_each() {
        let ep = |pod: &str, ready: bool| {
            json!({"addresses": ["10.0.0.1"], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "name": pod}})
        };
        let slice = |eps: Vec<Value>| -> k8s_openapi::api::discovery::v1::EndpointSlice {
            serde_json::from_value(json!({"addressType": "IPv4", "endpoints": eps}))
                .expect("a slice")
        };
        let slices = [
            slice(vec![
                ep("web-7d9c5b8f4-abcde", true),
                ep("web-7d9c5b8f4-fghij", false),
                ep("web-canary-5f6d7c9b8-klmno", true),
            ]),
            // Moving between slices: listed twice, counted once.
            slice(vec![ep("web-canary-5f6d7c9b8-klmno", true)]),
        ];
        assert_eq!(
            count_serving(&slices, "web"),
            Serving {
                stable: 1,
                canary: 1
            }
        );
        let d = deployment(
            "web",
            &owner(),
            &selector_labels(&spec()),
            json!({}),
            Track::Stable,
            2,
        )
        .expect("built");
        let d: Deployment = serde_json::from_value(d).expect("a Deployment");
        assert!(has_strategy(&d), "never fewer available pods than wanted");
    }

    #[test]
    fn readiness_needs_the_current_generation_available() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"annotations": {REVISION_ANNOTATION: "r1"}}}},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        }))
        .expect("a deployment");
        assert_eq!(ready_revision(&d), None, "old generation");
        if let Some(s) = d.status.as_mut() {
            s.observed_generation = Some(2);
        }
        assert_eq!(ready_revision(&d).as_deref(), Some("r1"));
        assert!(!scaled_down(Some(&d)));
        assert!(scaled_down(None));
    }
}
