//! What the controller knows of the objects it manages without asking the
//! API server: watch caches of the Deployments, Services and EndpointSlices
//! labelled `app.kubernetes.io/managed-by=coalmine`, the label coalmine
//! puts on every object it creates (and a person puts on one they hand
//! over; EndpointSlices inherit it from their Service).
//!
//! A reconcile reads these objects from the caches, so a Canary at rest
//! costs one read of the API server (the Canary itself, whose status the
//! reconcile may write). Where a cache cannot be trusted the reconcile
//! reads the API server instead:
//!
//! - an object missing from the cache may exist without the label (a
//!   running app's Deployment named like the Canary, which must be
//!   refused, not created over), or be too new for the watch: it is read.
//!   A Deployment that read found missing is taken as missing until this
//!   controller creates it (the create then fails with a conflict if
//!   someone made one without the label in between, and the next read
//!   finds it);
//! - a Deployment this controller wrote carries a higher
//!   `metadata.generation` than the cache's copy until the watch brings the
//!   write back: until then it is read, so no step acts on the spec from
//!   before its own write.
//!
//! The caches trim what no reconcile reads: kubectl's last-applied
//! annotation, and every managedFields entry except whether a manager
//! other than coalmine set `spec.replicas` (what the autoscaler check
//! asks).

use std::collections::{HashMap, HashSet};

use futures_util::FutureExt;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};

use crate::Error;
use crate::resource::{LAST_APPLIED_ANNOTATION, MANAGED_BY_LABEL, MANAGER};
use crate::workload::{self, FIELD_MANAGER, Fetched};

/// The label selector of every watch here.
pub fn selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER}")
}

/// `apps/v1` Deployments as untyped objects: the cache keeps every field
/// the cluster knows, also those newer than the compiled types.
pub fn deployment_resource() -> ApiResource {
    ApiResource::erase::<Deployment>(&())
}

/// The watch caches, read by every reconcile.
pub struct Caches {
    deployments: Store<DynamicObject>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    /// The generation of each Deployment as this controller last wrote it
    /// (by namespace and name, with its uid), until the cache has it.
    written: Mutex<HashMap<(String, String), (String, i64)>>,
    /// Deployments a read found missing (by namespace and name), until
    /// this controller creates one of that name or a create meets one.
    absent: Mutex<HashSet<(String, String)>>,
}

/// The write halves of [`Caches`]: each fills its cache from a watch.
pub struct Writers {
    /// Fills the Deployment cache.
    pub deployments: reflector::store::Writer<DynamicObject>,
    /// Fills the Service cache.
    pub services: reflector::store::Writer<Service>,
    /// Fills the EndpointSlice cache.
    pub slices: reflector::store::Writer<EndpointSlice>,
}

impl Caches {
    /// Empty caches and the writers that fill them.
    pub fn new() -> (Caches, Writers) {
        let dw = reflector::store::Writer::new(deployment_resource());
        let (sw, ew) = (
            reflector::store::Writer::default(),
            reflector::store::Writer::default(),
        );
        (
            Caches {
                deployments: dw.as_reader(),
                services: sw.as_reader(),
                slices: ew.as_reader(),
                written: Mutex::default(),
                absent: Mutex::default(),
            },
            Writers {
                deployments: dw,
                services: sw,
                slices: ew,
            },
        )
    }

    /// Caches that stay empty: every read goes to the API server.
    pub fn empty() -> Caches {
        Caches::new().0
    }

    /// Deployment `name` in `api`'s namespace, with its pod template whole.
    pub async fn deployment(
        &self,
        api: &Api<Deployment>,
        name: &str,
    ) -> Result<Option<Fetched>, Error> {
        let namespace = api.namespace().unwrap_or_default();
        let key = ObjectRef::new_with(name, deployment_resource()).within(namespace);
        let id = (namespace.to_owned(), name.to_owned());
        let Some(cached) = self.deployments.get(&key) else {
            if self.absent.lock().is_ok_and(|a| a.contains(&id)) {
                return Ok(None);
            }
            let read = workload::get_deployment(api, name).await?;
            if read.is_none()
                && let Ok(mut a) = self.absent.lock()
            {
                a.insert(id);
            }
            return Ok(read);
        };
        if let Ok(mut a) = self.absent.lock() {
            a.remove(&id);
        }
        let fetched = Fetched::from_raw(serde_json::to_value(&*cached)?)?;
        if self.behind(namespace, name, &fetched.deployment.metadata) {
            return workload::get_deployment(api, name).await;
        }
        Ok(Some(fetched))
    }

    /// Service `name` in `api`'s namespace.
    pub async fn service(&self, api: &Api<Service>, name: &str) -> Result<Option<Service>, Error> {
        let namespace = api.namespace().unwrap_or_default();
        match self.services.get(&ObjectRef::new(name).within(namespace)) {
            Some(s) => Ok(Some((*s).clone())),
            None => Ok(api.get_opt(name).await?),
        }
    }

    /// The EndpointSlices of Service `name` in `namespace`, if the cache
    /// has any (`None`: read them from the API server).
    pub fn endpoint_slices(&self, namespace: &str, name: &str) -> Option<Vec<EndpointSlice>> {
        service_slices(&self.slices, namespace, name)
    }

    /// The EndpointSlice cache itself, for a reader that outlives a
    /// reconcile (the proxy replicas a judging session scrapes).
    pub fn slice_store(&self) -> Store<EndpointSlice> {
        self.slices.clone()
    }

    /// Forgets that Deployment `name` was missing: this controller is
    /// about to create it, or a create found one there.
    pub fn may_exist(&self, namespace: &str, name: &str) {
        if let Ok(mut a) = self.absent.lock() {
            a.remove(&(namespace.to_owned(), name.to_owned()));
        }
    }

    /// Records a Deployment as this controller wrote it.
    pub fn wrote(&self, d: &Deployment) {
        let m = &d.metadata;
        let (Some(ns), Some(name), Some(uid), Some(generation)) = (
            m.namespace.clone(),
            m.name.clone(),
            m.uid.clone(),
            m.generation,
        ) else {
            return;
        };
        if let Ok(mut w) = self.written.lock() {
            w.insert((ns, name), (uid, generation));
        }
    }

    /// Whether `cached` is older than this controller's last write of it;
    /// forgets the write once the cache has caught up.
    fn behind(&self, namespace: &str, name: &str, cached: &ObjectMeta) -> bool {
        let Ok(mut w) = self.written.lock() else {
            return true;
        };
        let key = (namespace.to_owned(), name.to_owned());
        let Some((uid, generation)) = w.get(&key) else {
            return false;
        };
        let same = cached.uid.as_deref() == Some(uid.as_str());
        if same && cached.generation.unwrap_or(0) < *generation {
            return true;
        }
        w.remove(&key);
        false
    }

    /// The name of the Canary that owns Service `service` in `namespace`,
    /// from the Service cache.
    pub fn owner_of_service(&self, namespace: &str, service: &str) -> Option<String> {
        let s = self
            .services
            .get(&ObjectRef::new(service).within(namespace))?;
        s.metadata
            .owner_references
            .as_ref()?
            .iter()
            .find(|o| o.kind == coalmine_core::spec::KIND)
            .map(|o| o.name.clone())
    }
}

/// The EndpointSlices of Service `name` in `namespace` in `store`, if it
/// has any (`None`: the watch has not listed them yet).
pub fn service_slices(
    store: &Store<EndpointSlice>,
    namespace: &str,
    name: &str,
) -> Option<Vec<EndpointSlice>> {
    let slices: Vec<EndpointSlice> = store
        .state_filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == name)
        })
        .into_iter()
        .map(|s| (*s).clone())
        .collect();
    // None found: there are none once the watch has listed them all
    // (a Service with no Ready pod yet), or the watch is not up.
    (!slices.is_empty() || ready(store)).then_some(slices)
}

/// Whether `store` has had its watch's first full list.
fn ready<K: kube::runtime::reflector::Lookup + Clone + 'static>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// The label an EndpointSlice names its Service by.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// [`trim_meta`] for the untyped Deployments.
pub fn trim_deployment(d: &mut DynamicObject) {
    trim_meta(&mut d.metadata);
}

/// Trims a cached object's metadata (see the module docs).
pub fn trim_meta(m: &mut ObjectMeta) {
    if let Some(a) = m.annotations.as_mut() {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    let others_set_replicas = m
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| e.manager.as_deref() != Some(FIELD_MANAGER))
        .filter_map(|e| e.fields_v1.as_ref())
        .any(|f| f.0.pointer("/f:spec/f:replicas").is_some());
    m.managed_fields = others_set_replicas.then(|| {
        vec![ManagedFieldsEntry {
            manager: Some("another".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:replicas": {}}}))),
            ..ManagedFieldsEntry::default()
        }]
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(managed: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json!({
            "name": "web",
            "annotations": {LAST_APPLIED_ANNOTATION: "{}", "keep": "me"},
            "managedFields": managed,
        }))
        .expect("metadata")
    }

    #[test]
    fn trimming_keeps_only_whether_another_manager_set_the_replicas() {
        let mut ours = meta(json!([
            {"manager": FIELD_MANAGER, "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl", "fieldsV1": {"f:spec": {"f:template": {}}}},
        ]));
        trim_meta(&mut ours);
        assert_eq!(ours.managed_fields, None);
        let annotations = ours.annotations.expect("annotations");
        assert!(!annotations.contains_key(LAST_APPLIED_ANNOTATION));
        assert_eq!(annotations.get("keep").map(String::as_str), Some("me"));

        let mut hpa = meta(json!([
            {"manager": FIELD_MANAGER, "fieldsV1": {"f:spec": {"f:template": {}}}},
            {"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]));
        trim_meta(&mut hpa);
        let d = Deployment {
            metadata: hpa,
            ..Deployment::default()
        };
        assert!(workload::replicas_set_by_another(&d));
    }

    #[test]
    fn a_cached_deployment_older_than_our_write_is_behind_until_the_watch_catches_up() {
        let caches = Caches::empty();
        let written: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "generation": 5}
        }))
        .expect("deployment");
        caches.wrote(&written);
        let at = |uid: &str, generation: i64| -> ObjectMeta {
            serde_json::from_value(json!({"name": "web", "uid": uid, "generation": generation}))
                .expect("metadata")
        };
        assert!(caches.behind("ns", "web", &at("u1", 4)));
        assert!(caches.behind("ns", "web", &at("u1", 4)), "still behind");
        assert!(!caches.behind("ns", "web", &at("u1", 5)));
        // Forgotten once caught up: an older copy is not behind any more
        // (nothing this controller wrote is newer than what it saw).
        assert!(!caches.behind("ns", "web", &at("u1", 4)));
        // A Deployment deleted and created again is another object.
        caches.wrote(&written);
        assert!(!caches.behind("ns", "web", &at("u2", 1)));
        // Another namespace's Deployment of the same name is not it.
        caches.wrote(&written);
        assert!(!caches.behind("other", "web", &at("u1", 1)));
    }
}
