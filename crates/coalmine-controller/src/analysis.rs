//! The judging session of each rollout under way (`coalmine-driver`'s
//! [`Session`]), one per Canary, fed by its providers once per analysis
//! interval during the Canary's reconcile.
//!
//! The judge's evidence lives in memory and in the Canary's status
//! (`status.judgeState`, written with the status after each judged
//! interval): a restarted or newly elected controller continues it from
//! there, with the alpha already spent, rather than starting afresh. A new
//! revision, a retry or an edit of `spec.analysis` gets a new judge (see
//! [`coalmine_driver::session`]). Collection happens inside the reconcile
//! of that Canary, so a slow provider delays only its own Canary.
//!
//! `builtin` metrics read the proxy router's own counters. Its replicas are
//! the endpoints of the headless Service `NAME-proxy`, taken from the
//! EndpointSlice watch cache at every collection ([`proxy_replicas`]), so
//! the set follows the proxy Deployment as it scales, rolls or restarts;
//! `coalmine_providers` scrapes them all and sums their counters (see
//! `docs/providers.md` for what a new, gone, restarted or unreadable
//! replica does to an interval).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use coalmine_driver::Session;
use coalmine_providers::{BuiltinSource, Replica};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;

use crate::cache::{self, Caches};

/// A Canary's judging session, if a rollout is under way.
pub type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// The judging sessions of every Canary this controller is rolling out.
#[derive(Default)]
pub struct Analyses {
    judges: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for Analyses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyses").finish_non_exhaustive()
    }
}

impl Analyses {
    /// Forgets a Canary's judge (deleted, or no rollout under way).
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.judges.lock() {
            m.remove(key);
        }
    }

    /// The Canary's session slot (empty until a rollout is judged).
    pub fn slot(&self, key: &str) -> Slot {
        match self.judges.lock() {
            Ok(mut m) => m.entry(key.to_owned()).or_default().clone(),
            Err(_) => Slot::default(),
        }
    }
}

/// The name of a proxy Service port the replicas' counters are served on.
pub const METRICS_PORT: &str = "metrics";

/// The headless Service whose endpoints are Canary `name`'s proxy replicas.
fn proxy_service(name: &str) -> String {
    format!("{name}-proxy")
}

/// Where the `builtin` metrics of Canary `name` in `namespace` are read
/// under the proxy router: every replica the EndpointSlice cache lists for
/// Service `NAME-proxy` at the time of each collection.
pub fn proxy_replicas(caches: &Caches, namespace: &str, name: &str) -> BuiltinSource {
    let store = caches.slice_store();
    let (namespace, service) = (namespace.to_owned(), proxy_service(name));
    BuiltinSource::replicas(Arc::new(move || {
        list_replicas(&store, &namespace, &service)
    }))
}

/// The spec check's stand-in for [`proxy_replicas`]: a builtin metric has
/// a proxy to read, whose replicas are listed only when collecting.
pub fn unlisted_replicas() -> BuiltinSource {
    BuiltinSource::replicas(Arc::new(|| {
        Err("the proxy replicas are listed only by a judging session".to_owned())
    }))
}

/// The replicas of `service` in `namespace` that `store` lists now.
fn list_replicas(
    store: &Store<EndpointSlice>,
    namespace: &str,
    service: &str,
) -> Result<Vec<Replica>, String> {
    let slices = cache::service_slices(store, namespace, service)
        .ok_or_else(|| "the controller's EndpointSlice cache has not synced yet".to_owned())?;
    replicas_of(&slices, &format!("{namespace}/{service}"))
}

/// The proxy replicas behind `slices` (the EndpointSlices of Service
/// `service`), each scraped at `http://ADDRESS:PORT/metrics` with PORT its
/// slice's port named [`METRICS_PORT`], or why there are none.
///
/// - An endpoint counts when it is ready or serving (a terminating pod
///   still serving requests is still counted); a missing condition is
///   true, as the EndpointSlice API defines it.
/// - Only an endpoint's first address is used: the API defines an
///   endpoint's addresses as the same endpoint, and reading each would
///   count it twice.
/// - An endpoint in several slices (while the endpoint controller moves
///   it, or an IPv4 and an IPv6 slice of a dual-stack Service) is read
///   once, by its pod (else its address), from the first slice in order of
///   address type (IPv4 first) and name.
/// - The replica's id is `POD (ADDRESS)`, or the address alone for an
///   endpoint without a pod reference; IPv6 addresses go in brackets in
///   the URL.
pub fn replicas_of(slices: &[EndpointSlice], service: &str) -> Result<Vec<Replica>, String> {
    let mut ordered: Vec<&EndpointSlice> = slices.iter().collect();
    ordered.sort_by(|a, b| {
        (a.address_type.as_str(), a.metadata.name.as_deref())
            .cmp(&(b.address_type.as_str(), b.metadata.name.as_deref()))
    });
    let mut found: BTreeMap<String, Replica> = BTreeMap::new();
    let (mut endpoints, mut without_port) = (0, 0);
    for slice in ordered {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(METRICS_PORT))
            .and_then(|p| p.port);
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(true);
            let Some(address) = ep.addresses.first().filter(|_| ready || serving) else {
                continue;
            };
            endpoints += 1;
            let Some(port) = port else {
                without_port += 1;
                continue;
            };
            let host = if slice.address_type == "IPv6" {
                format!("[{address}]")
            } else {
                address.clone()
            };
            let pod = ep.target_ref.as_ref().and_then(|t| t.name.as_deref());
            let key = match pod {
                Some(pod) => format!("pod {pod}"),
                None => format!("address {address}"),
            };
            found.entry(key).or_insert_with(|| Replica {
                id: pod.map_or_else(|| address.clone(), |pod| format!("{pod} ({address})")),
                url: format!("http://{host}:{port}/metrics"),
            });
        }
    }
    // The same address under two keys (with and without a pod reference)
    // is still one replica.
    let mut urls = std::collections::HashSet::new();
    let replicas: Vec<Replica> = found
        .into_values()
        .filter(|r| urls.insert(r.url.clone()))
        .collect();
    if !replicas.is_empty() {
        return Ok(replicas);
    }
    Err(if endpoints == 0 {
        format!("Service {service} has no ready or serving endpoint: no proxy replica to read")
    } else {
        format!(
            "the EndpointSlices of Service {service} have no port named `{METRICS_PORT}` for its {without_port} ready endpoint(s): give the Service a port named `{METRICS_PORT}`"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;
    use serde_json::{Value, json};

    fn slice(name: &str, family: &str, ports: Value, endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {cache::SERVICE_NAME_LABEL: "web-proxy"}},
            "addressType": family,
            "ports": ports,
            "endpoints": endpoints,
        }))
        .expect("an EndpointSlice")
    }

    fn metrics_port(port: i32) -> Value {
        json!([{"name": "metrics", "port": port, "protocol": "TCP"}])
    }

    fn ep(pod: &str, address: &str, conditions: Value) -> Value {
        json!({"addresses": [address], "conditions": conditions,
               "targetRef": {"kind": "Pod", "name": pod, "namespace": "shop"}})
    }

    fn ids_and_urls(r: &[Replica]) -> Vec<(&str, &str)> {
        r.iter().map(|r| (r.id.as_str(), r.url.as_str())).collect()
    }

    #[test]
    fn ready_and_serving_endpoints_are_replicas_terminating_ones_while_serving() {
        let slices = [slice(
            "web-proxy-a",
            "IPv4",
            metrics_port(9902),
            json!([
                ep("p1", "10.0.0.1", json!({"ready": true, "serving": true})),
                ep(
                    "p2",
                    "10.0.0.2",
                    json!({"ready": false, "serving": true, "terminating": true})
                ),
                ep(
                    "p3",
                    "10.0.0.3",
                    json!({"ready": false, "serving": false, "terminating": true})
                ),
                ep("p4", "10.0.0.4", json!({"ready": false, "serving": false})),
                // Conditions the API leaves unset mean ready.
                ep("p5", "10.0.0.5", json!({})),
            ]),
        )];
        let r = replicas_of(&slices, "shop/web-proxy").expect("replicas");
        assert_eq!(
            ids_and_urls(&r),
            [
                ("p1 (10.0.0.1)", "http://10.0.0.1:9902/metrics"),
                ("p2 (10.0.0.2)", "http://10.0.0.2:9902/metrics"),
                ("p5 (10.0.0.5)", "http://10.0.0.5:9902/metrics"),
            ]
        );
    }

    #[test]
    fn several_slices_ipv6_and_duplicates() {
        let ready = json!({"ready": true});
        let slices = [
            slice(
                "web-proxy-v6",
                "IPv6",
                metrics_port(9902),
                json!([
                    ep("p3", "fd00::3", ready.clone()),
                    ep("p1", "fd00::1", ready.clone())
                ]),
            ),
            slice(
                "web-proxy-b",
                "IPv4",
                json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 19902}]),
                json!([
                    ep("p2", "10.0.0.2", ready.clone()),
                    // Moving between slices: listed twice, read once.
                    ep("p1", "10.0.0.1", ready.clone()),
                    // Without a pod reference: by its address.
                    {"addresses": ["10.0.0.9", "10.0.0.10"], "conditions": {"ready": true}},
                ]),
            ),
            slice(
                "web-proxy-a",
                "IPv4",
                metrics_port(9902),
                json!([ep("p1", "10.0.0.1", ready.clone())]),
            ),
        ];
        let r = replicas_of(&slices, "shop/web-proxy").expect("replicas");
        assert_eq!(
            ids_and_urls(&r),
            [
                ("10.0.0.9", "http://10.0.0.9:19902/metrics"),
                ("p1 (10.0.0.1)", "http://10.0.0.1:9902/metrics"),
                ("p2 (10.0.0.2)", "http://10.0.0.2:19902/metrics"),
                ("p3 (fd00::3)", "http://[fd00::3]:9902/metrics"),
            ]
        );
    }

    #[test]
    fn no_replica_says_why() {
        let e = replicas_of(&[], "shop/web-proxy").expect_err("no slices");
        assert!(
            e.contains("Service shop/web-proxy has no ready or serving endpoint"),
            "{e}"
        );
        let not_ready = [slice(
            "s",
            "IPv4",
            metrics_port(9902),
            json!([ep(
                "p1",
                "10.0.0.1",
                json!({"ready": false, "serving": false})
            )]),
        )];
        let e = replicas_of(&not_ready, "shop/web-proxy").expect_err("none ready");
        assert!(e.contains("no ready or serving endpoint"), "{e}");
        let no_port = [slice(
            "s",
            "IPv4",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("p1", "10.0.0.1", json!({"ready": true}))]),
        )];
        let e = replicas_of(&no_port, "shop/web-proxy").expect_err("no metrics port");
        assert!(
            e.contains("no port named `metrics`") && e.contains("1 ready endpoint"),
            "{e}"
        );
        // A slice without the port is skipped; the others are read.
        let mixed = [
            no_port[0].clone(),
            slice(
                "t",
                "IPv4",
                metrics_port(9902),
                json!([ep("p2", "10.0.0.2", json!({"ready": true}))]),
            ),
        ];
        let r = replicas_of(&mixed, "shop/web-proxy").expect("one");
        assert_eq!(
            ids_and_urls(&r),
            [("p2 (10.0.0.2)", "http://10.0.0.2:9902/metrics")]
        );
    }

    #[test]
    fn the_list_follows_the_watch_cache() {
        let (caches, mut writers) = Caches::new();
        let BuiltinSource::Replicas(list) = proxy_replicas(&caches, "shop", "web") else {
            panic!("a replicas source");
        };
        let e = list().expect_err("not synced");
        assert_eq!(e, "the controller's EndpointSlice cache has not synced yet");

        let ready = json!({"ready": true});
        let ours = slice(
            "web-proxy-a",
            "IPv4",
            metrics_port(9902),
            json!([ep("p1", "10.0.0.1", ready.clone())]),
        );
        // Another Service's slice, and the same Service in another namespace.
        let mut other = ours.clone();
        other.metadata.name = Some("web-x".into());
        other
            .metadata
            .labels
            .get_or_insert_default()
            .insert(cache::SERVICE_NAME_LABEL.into(), "web".into());
        let mut elsewhere = ours.clone();
        elsewhere.metadata.namespace = Some("other".into());
        writers.slices.apply_watcher_event(&watcher::Event::Init);
        for s in [&ours, &other, &elsewhere] {
            writers
                .slices
                .apply_watcher_event(&watcher::Event::InitApply(s.clone()));
        }
        writers
            .slices
            .apply_watcher_event(&watcher::Event::InitDone);
        let r = list().expect("listed");
        assert_eq!(
            ids_and_urls(&r),
            [("p1 (10.0.0.1)", "http://10.0.0.1:9902/metrics")]
        );

        // A second replica becomes ready; the first one goes.
        let mut scaled = ours.clone();
        scaled.endpoints = serde_json::from_value(json!([
            ep("p1", "10.0.0.1", json!({"ready": false, "serving": false})),
            ep("p2", "10.0.0.2", ready.clone()),
        ]))
        .expect("endpoints");
        writers
            .slices
            .apply_watcher_event(&watcher::Event::Apply(scaled));
        let r = list().expect("listed");
        assert_eq!(
            ids_and_urls(&r),
            [("p2 (10.0.0.2)", "http://10.0.0.2:9902/metrics")]
        );

        writers
            .slices
            .apply_watcher_event(&watcher::Event::Delete(ours));
        let e = list().expect_err("none");
        assert!(
            e.contains("Service shop/web-proxy has no ready or serving endpoint"),
            "{e}"
        );
    }
}
