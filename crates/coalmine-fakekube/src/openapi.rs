//! Just enough OpenAPI v3 for kubectl: the root index of group-versions and,
//! per group-version, the object paths with their operations, tagged with
//! `x-kubernetes-group-version-kind` and listing the `fieldValidation`
//! query parameter. kubectl then leaves validation to the server instead of
//! downloading schemas, and computes client-side apply patches from its
//! compiled-in types (strategic merge) or as JSON merge patches (custom
//! resources), as it does against a real server without schemas. No
//! schemas are served.

use serde_json::{Value, json};

use crate::registry::Registry;

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`.
pub(crate) fn root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let hash = gv_doc(reg, &g, &v)
                .map(|d| fnv(&d.to_string()))
                .unwrap_or_default();
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash:016X}")}),
            );
        }
    }
    json!({ "paths": paths })
}

fn param(name: &str, inn: &str) -> Value {
    json!({"name": name, "in": inn, "schema": {"type": "string", "uniqueItems": true}})
}

/// `GET /openapi/v3/apis/GROUP/VERSION` (or `/openapi/v3/api/v1`).
pub(crate) fn gv_doc(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.resources(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    for d in defs {
        let gvk = json!({"group": d.group, "version": d.version, "kind": d.kind});
        let base = if d.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                d.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), d.plural)
        };
        let mut path_params = vec![param("name", "path")];
        if d.namespaced {
            path_params.push(param("namespace", "path"));
        }
        let op = |action: &str, extra: &[&str]| {
            let mut ps: Vec<Value> = extra.iter().map(|n| param(n, "query")).collect();
            ps.push(param("pretty", "query"));
            json!({
                "operationId": format!("{action}{}", d.kind),
                "parameters": ps,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "parameters": path_params,
                "get": op("get", &[]),
                "put": op("put", &["dryRun", "fieldManager", "fieldValidation"]),
                "patch": op("patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
                "delete": op("delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
            }),
        );
        let mut coll_params = Vec::new();
        if d.namespaced {
            coll_params.push(param("namespace", "path"));
        }
        paths.insert(
            base,
            json!({
                "parameters": coll_params,
                "get": op("list", &["labelSelector", "fieldSelector", "limit", "continue", "watch", "resourceVersion"]),
                "post": op("post", &["dryRun", "fieldManager", "fieldValidation"]),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-fakekube"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
