//! The `nginx` router: a managed Ingress `NAME-canary` that ingress-nginx
//! reads as the canary of the user's Ingress.
//!
//! It copies the user's Ingress class and the rules' paths whose backend is
//! the stable Service, sent to `NAME-canary` instead, and carries
//! `nginx.ingress.kubernetes.io/canary: "true"`, `canary-weight`, and for
//! the first header route `canary-by-header` with `canary-by-header-value`
//! (or `-pattern` for a regex), or `canary-by-cookie` for a cookie
//! (ingress-nginx sends a cookie valued `always` to the canary; other
//! values cannot be expressed). ingress-nginx honours one header and one
//! cookie per canary Ingress, so later header routes are dropped, and it
//! cannot mirror a percentage. With all traffic on stable the canary
//! Ingress is deleted. The user's Ingress is never changed.

use std::collections::BTreeMap;

use coalmine_core::routes::{Routes, whole_value};
use futures_util::future::BoxFuture;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{RouteTarget, TrafficRouter};
use crate::Error;
use crate::resource::{MANAGED_BY_LABEL, MANAGER};

/// The annotation prefix of ingress-nginx.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The ingress-nginx router.
#[derive(Debug, Clone)]
pub struct Nginx {
    /// The user's Ingress.
    pub ingress: String,
}

/// The canary Ingress's annotations for `routes`.
pub fn annotations(routes: &Routes) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        a.insert(format!("{PREFIX}{k}"), v);
    };
    put("canary", "true".into());
    put("canary-weight", routes.canary_weight.min(100).to_string());
    if let Some(h) = routes.header_routes.iter().find(|h| h.header.is_some()) {
        put("canary-by-header", h.header.clone().unwrap_or_default());
        match (&h.value, &h.regex) {
            (Some(v), _) => put("canary-by-header-value", v.clone()),
            (None, Some(r)) => put("canary-by-header-pattern", whole_value(r)),
            (None, None) => {}
        }
    }
    if let Some(c) = routes.header_routes.iter().find_map(|h| h.cookie.clone()) {
        put("canary-by-cookie", c);
    }
    a
}

/// The canary Ingress for the user's Ingress `user` (pure); `None` when no
/// rule sends to the stable Service.
pub fn canary_ingress(user: &Value, target: &RouteTarget, routes: &Routes) -> Option<Value> {
    let stable = target.name.as_str();
    let mut rules = Vec::new();
    for rule in user
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let paths: Vec<Value> = rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.pointer("/backend/service/name").and_then(Value::as_str) == Some(stable))
            .map(|p| {
                let mut p = p.clone();
                p["backend"]["service"]["name"] = json!(target.canary_service);
                p
            })
            .collect();
        if paths.is_empty() {
            continue;
        }
        let mut r = json!({"http": {"paths": paths}});
        if let Some(h) = rule.get("host") {
            r["host"] = h.clone();
        }
        rules.push(r);
    }
    if rules.is_empty() {
        return None;
    }
    let mut spec = json!({"rules": rules});
    if let Some(class) = user.pointer("/spec/ingressClassName") {
        spec["ingressClassName"] = class.clone();
    }
    let mut annotations = annotations(routes);
    // An Ingress class given by the old annotation must match too; the API
    // server refuses an Ingress with both the annotation and the field, so
    // the field, when the user's Ingress has it, is the only one copied.
    if let Some(class) = user
        .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
        .and_then(Value::as_str)
        .filter(|_| spec.get("ingressClassName").is_none())
    {
        annotations.insert("kubernetes.io/ingress.class".into(), class.to_owned());
    }
    Some(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": target.canary_service,
            "namespace": target.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGER},
            "annotations": annotations,
            "ownerReferences": [target.owner],
        },
        "spec": spec,
    }))
}

impl TrafficRouter for Nginx {
    fn canary_service(&self) -> bool {
        true
    }

    fn apply<'a>(
        &'a self,
        target: &'a RouteTarget,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let api: Api<Ingress> = Api::namespaced(target.client.clone(), &target.namespace);
            let name = &target.canary_service;
            if !routes.reaches_canary() {
                if api.get_opt(name).await?.is_some() {
                    match api.delete(name, &DeleteParams::default()).await {
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        r => {
                            r?;
                        }
                    }
                }
                return Ok(());
            }
            let Some(user) = api.get_opt(&self.ingress).await? else {
                return Err(Error::Missing {
                    field: "spec.trafficRouting.nginx.ingress",
                    what: format!(
                        "Ingress {}/{} does not exist",
                        target.namespace, self.ingress
                    ),
                });
            };
            let user = serde_json::to_value(&user)?;
            let Some(wanted) = canary_ingress(&user, target, routes) else {
                return Err(Error::Missing {
                    field: "spec.trafficRouting.nginx.ingress",
                    what: format!(
                        "no path of Ingress {} sends to Service {}",
                        self.ingress, target.name
                    ),
                });
            };
            // The whole object is coalmine's: server-side apply states it.
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(wanted),
            )
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine_core::routes::HeaderMatch;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn target() -> RouteTarget {
        let kc = kube::Config::new("http://127.0.0.1:1".parse().expect("a url"));
        RouteTarget {
            client: kube::Client::try_from(kc).expect("a client"),
            namespace: "shop".into(),
            name: "web".into(),
            canary_service: "web-canary".into(),
            port: 80,
            owner: OwnerReference::default(),
        }
    }

    #[test]
    fn a_header_regex_is_anchored_to_match_the_whole_value() {
        let routes = Routes {
            header_routes: vec![HeaderMatch {
                header: Some("x-user".into()),
                regex: Some("beta|qa".into()),
                ..HeaderMatch::default()
            }],
            ..Routes::default()
        };
        let a = annotations(&routes);
        assert_eq!(
            a.get("nginx.ingress.kubernetes.io/canary-by-header-pattern")
                .map(String::as_str),
            Some("^(?:beta|qa)$")
        );
    }

    #[tokio::test]
    async fn the_canary_ingress_copies_the_stable_paths() {
        let user = json!({
            "metadata": {"name": "web", "annotations": {"kubernetes.io/ingress.class": "nginx"}},
            "spec": {"ingressClassName": "nginx", "rules": [
                {"host": "shop.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": "/admin", "pathType": "Prefix", "backend": {"service": {"name": "admin", "port": {"number": 80}}}}
                ]}},
                {"host": "other.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                ]}}
            ]}
        });
        let routes = Routes {
            canary_weight: 5,
            header_routes: vec![HeaderMatch {
                header: Some("x-canary".into()),
                value: Some("always".into()),
                ..HeaderMatch::default()
            }],
            ..Routes::default()
        };
        let out = canary_ingress(&user, &target(), &routes).expect("a canary ingress");
        assert_eq!(out["metadata"]["name"], "web-canary");
        let a = &out["metadata"]["annotations"];
        assert_eq!(a["nginx.ingress.kubernetes.io/canary"], "true");
        assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "5");
        assert_eq!(
            a["nginx.ingress.kubernetes.io/canary-by-header"],
            "x-canary"
        );
        assert_eq!(
            a["nginx.ingress.kubernetes.io/canary-by-header-value"],
            "always"
        );
        // The API server refuses the class both as a field and annotation.
        assert_eq!(a.get("kubernetes.io/ingress.class"), None);
        assert_eq!(out["spec"]["ingressClassName"], "nginx");
        let rules = out["spec"]["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["host"], "shop.example");
        assert_eq!(
            rules[0]["http"]["paths"],
            json!([{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web-canary", "port": {"number": 80}}}}])
        );
    }

    #[tokio::test]
    async fn a_class_given_by_the_annotation_is_copied_as_the_annotation() {
        let user = json!({
            "metadata": {"name": "web", "annotations": {"kubernetes.io/ingress.class": "nginx"}},
            "spec": {"rules": [{"http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
            ]}}]}
        });
        let routes = Routes {
            canary_weight: 5,
            ..Routes::default()
        };
        let out = canary_ingress(&user, &target(), &routes).expect("a canary ingress");
        assert_eq!(
            out["metadata"]["annotations"]["kubernetes.io/ingress.class"],
            "nginx"
        );
        assert_eq!(out["spec"].get("ingressClassName"), None);
    }
}
