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

/// The labels that pick this Canary's pods: `spec.selector.matchLabels`, or
/// the template's labels when there is no selector.
pub fn selector_labels(spec: &CanarySpec) -> BTreeMap<String, String> {
    if let Some(sel) = spec
        .selector
        .as_ref()
        .filter(|s| !s.match_labels.is_empty())
    {
        return sel.match_labels.clone();
    }
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

/// A Deployment of `template` for one track.
pub fn deployment(
    name: &str,
    owner: &OwnerReference,
    selector: &BTreeMap<String, String>,
    template: Value,
    track: Track,
    replicas: i32,
) -> Result<Deployment, Error> {
    let mut match_labels: Map<String, Value> = selector
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    match_labels.insert(TRACK_LABEL.into(), json!(track.as_str()));
    let mut labels = managed_labels(selector);
    labels[TRACK_LABEL] = json!(track.as_str());
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": match_labels},
            "template": template,
        }
    }))?)
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

/// The replicas a Deployment asks for.
pub fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// A Deployment's pod template as JSON.
pub fn template_of(d: &Deployment) -> Option<Value> {
    let t = &d.spec.as_ref()?.template;
    serde_json::to_value(t).ok()
}

/// Creates `desired` if it is missing; otherwise sets its replicas and,
/// when `template` is true, its pod template (when the revision differs).
pub async fn ensure_deployment(
    api: &Api<Deployment>,
    desired: &Deployment,
    template: bool,
) -> Result<Deployment, Error> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let Some(current) = api.get_opt(&name).await? else {
        return Ok(api.create(&PostParams::default(), desired).await?);
    };
    let mut ops = Vec::new();
    let want = replicas_of(desired);
    if replicas_of(&current) != want {
        ops.push(json!({"op": "replace", "path": "/spec/replicas", "value": want}));
    }
    if template {
        let want_t = template_of(desired).unwrap_or(Value::Null);
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
        .patch(&name, &PatchParams::default(), &json_patch(ops)?)
        .await?)
}

/// Sets a Deployment's replicas if it exists.
pub async fn scale(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<(), Error> {
    if let Some(d) = api.get_opt(name).await?
        && replicas_of(&d) != replicas
    {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
    }
    Ok(())
}

/// Creates `desired` if missing, or sets its selector and port.
pub async fn ensure_service(api: &Api<Service>, desired: &Service) -> Result<(), Error> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let Some(current) = api.get_opt(&name).await? else {
        api.create(&PostParams::default(), desired).await?;
        return Ok(());
    };
    let want = desired.spec.clone().unwrap_or_default();
    let have = current.spec.clone().unwrap_or_default();
    let port = |s: &k8s_openapi::api::core::v1::ServiceSpec| {
        s.ports
            .as_ref()
            .and_then(|p| p.first())
            .map(|p| (p.port, p.target_port.clone()))
    };
    let mut ops = Vec::new();
    if want.selector != have.selector {
        ops.push(json!({"op": "replace", "path": "/spec/selector", "value": want.selector}));
    }
    if port(&want) != port(&have) {
        ops.push(json!({"op": "replace", "path": "/spec/ports", "value": want.ports}));
    }
    if !ops.is_empty() {
        api.patch(&name, &PatchParams::default(), &json_patch(ops)?)
            .await?;
    }
    Ok(())
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
        let d = deployment("web-canary", &owner(), &sel, t, Track::Canary, 3).expect("built");
        let v = serde_json::to_value(&d).expect("json");
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
