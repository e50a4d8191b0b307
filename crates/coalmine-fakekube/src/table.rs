//! `meta.k8s.io/v1 Table` responses, which `kubectl get` asks for: NAME and
//! AGE for every resource, the usual columns of the built-in types, and the
//! `additionalPrinterColumns` of custom resources.

use serde_json::{Value, json};

use crate::jsonpath;
use crate::registry::{Printer, ResourceDef};
use crate::time::age;

fn coldef(name: &str, typ: &str, format: &str, priority: i64, description: &str) -> Value {
    json!({"name": name, "type": typ, "format": format, "description": description, "priority": priority})
}

fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn n(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn none_if_empty(v: String) -> String {
    if v.is_empty() { "<none>".to_owned() } else { v }
}

fn created(o: &Value) -> String {
    age(s(o, "/metadata/creationTimestamp"))
}

/// A cell as the API server renders a custom column value.
fn cell(v: Option<&Value>, typ: &str) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(t)) if typ == "date" => json!(age(t)),
        Some(Value::String(t)) => json!(t),
        Some(Value::Number(num)) if typ == "integer" => json!(num.as_i64().unwrap_or_default()),
        Some(Value::Number(num)) => json!(num),
        Some(Value::Bool(b)) => json!(b),
        Some(other) => json!(other.to_string()),
    }
}

/// Column definitions and the cells of one row.
fn columns(def: &ResourceDef) -> Vec<Value> {
    let name = coldef(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    );
    let age_col = coldef(
        "Age",
        "string",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    let c = |n: &str, t: &str| coldef(n, t, "", 0, "");
    let wide = |n: &str, t: &str| coldef(n, t, "", 1, "");
    match &def.printer {
        Printer::Default => vec![name, age_col],
        Printer::Namespace => vec![name, c("Status", "string"), age_col],
        Printer::ConfigMap => vec![name, c("Data", "string"), age_col],
        Printer::Secret => vec![name, c("Type", "string"), c("Data", "string"), age_col],
        Printer::Service => vec![
            name,
            c("Type", "string"),
            c("Cluster-IP", "string"),
            c("External-IP", "string"),
            c("Port(s)", "string"),
            age_col,
            wide("Selector", "string"),
        ],
        Printer::Deployment => vec![
            name,
            c("Ready", "string"),
            c("Up-to-date", "string"),
            c("Available", "string"),
            age_col,
            wide("Containers", "string"),
            wide("Images", "string"),
            wide("Selector", "string"),
        ],
        Printer::ReplicaSet => vec![
            name,
            c("Desired", "integer"),
            c("Current", "integer"),
            c("Ready", "integer"),
            age_col,
        ],
        Printer::Pod => vec![
            name,
            c("Ready", "string"),
            c("Status", "string"),
            c("Restarts", "string"),
            age_col,
        ],
        Printer::Lease => vec![name, c("Holder", "string"), age_col],
        Printer::Ingress => vec![
            name,
            c("Class", "string"),
            c("Hosts", "string"),
            c("Address", "string"),
            c("Ports", "string"),
            age_col,
        ],
        Printer::Event => vec![
            c("Last Seen", "string"),
            c("Type", "string"),
            c("Reason", "string"),
            c("Object", "string"),
            c("Message", "string"),
        ],
        Printer::Crd => vec![name, c("Created At", "date")],
        Printer::Custom(cols) => {
            let mut out = vec![name];
            out.extend(
                cols.iter()
                    .map(|k| coldef(&k.name, &k.typ, &k.format, k.priority, &k.description)),
            );
            out
        }
    }
}

fn cells(def: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    match &def.printer {
        Printer::Default => vec![name, json!(created(o))],
        Printer::Namespace => vec![name, json!(s(o, "/status/phase")), json!(created(o))],
        Printer::ConfigMap => {
            let count = ["data", "binaryData"]
                .iter()
                .filter_map(|f| o.get(*f).and_then(Value::as_object))
                .map(serde_json::Map::len)
                .sum::<usize>();
            vec![name, json!(count), json!(created(o))]
        }
        Printer::Secret => {
            let count = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len);
            vec![name, json!(s(o, "/type")), json!(count), json!(created(o))]
        }
        Printer::Service => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                            match p.get("nodePort").and_then(Value::as_i64) {
                                Some(np) => format!("{port}:{np}/{proto}"),
                                None => format!("{port}/{proto}"),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ext: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| {
                            i.get("ip")
                                .or_else(|| i.get("hostname"))
                                .and_then(Value::as_str)
                        })
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let typ = s(o, "/spec/type");
            let ext = if ext.is_empty() {
                if typ == "LoadBalancer" {
                    "<pending>".to_owned()
                } else {
                    "<none>".to_owned()
                }
            } else {
                ext.join(",")
            };
            let sel = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(typ),
                json!(none_if_empty(s(o, "/spec/clusterIP").to_owned())),
                json!(ext),
                json!(none_if_empty(ports.join(","))),
                json!(created(o)),
                json!(none_if_empty(sel)),
            ]
        }
        Printer::Deployment => {
            let containers = o
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let names: Vec<&str> = containers
                .iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            let images: Vec<&str> = containers
                .iter()
                .filter_map(|c| c.get("image").and_then(Value::as_str))
                .collect();
            let sel = o
                .pointer("/spec/selector")
                .map(crate::selector::selector_string)
                .unwrap_or_default();
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    n(o, "/spec/replicas")
                )),
                json!(n(o, "/status/updatedReplicas")),
                json!(n(o, "/status/availableReplicas")),
                json!(created(o)),
                json!(names.join(",")),
                json!(images.join(",")),
                json!(sel),
            ]
        }
        Printer::ReplicaSet => vec![
            name,
            json!(n(o, "/spec/replicas")),
            json!(n(o, "/status/replicas")),
            json!(n(o, "/status/readyReplicas")),
            json!(created(o)),
        ],
        Printer::Pod => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses.map_or(0, |a| {
                a.iter()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count()
            });
            let restarts: i64 = statuses.map_or(0, |a| {
                a.iter()
                    .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                    .sum()
            });
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(s(o, "/status/phase")),
                json!(restarts.to_string()),
                json!(created(o)),
            ]
        }
        Printer::Lease => vec![
            name,
            json!(none_if_empty(s(o, "/spec/holderIdentity").to_owned())),
            json!(created(o)),
        ],
        Printer::Ingress => {
            let hosts: Vec<&str> = o
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| r.get("host").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(none_if_empty(s(o, "/spec/ingressClassName").to_owned())),
                json!(if hosts.is_empty() {
                    "*".to_owned()
                } else {
                    hosts.join(",")
                }),
                json!(""),
                json!(if o.pointer("/spec/tls").is_some() {
                    "80, 443"
                } else {
                    "80"
                }),
                json!(created(o)),
            ]
        }
        Printer::Event => {
            let last = [
                s(o, "/lastTimestamp"),
                s(o, "/eventTime"),
                s(o, "/metadata/creationTimestamp"),
            ]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or_default();
            vec![
                json!(age(last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(format!(
                    "{}/{}",
                    s(o, "/involvedObject/kind").to_ascii_lowercase(),
                    s(o, "/involvedObject/name")
                )),
                json!(s(o, "/message")),
            ]
        }
        Printer::Crd => vec![name, json!(s(o, "/metadata/creationTimestamp"))],
        Printer::Custom(cols) => {
            let mut out = vec![name];
            out.extend(
                cols.iter()
                    .map(|k| cell(jsonpath::first(o, &k.json_path), &k.typ)),
            );
            out
        }
    }
}

/// Whether the Accept header asks for a Table.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A Table of objects. `include` is `None`, `Metadata` (default) or
/// `Object`, as the `includeObject` parameter says.
pub(crate) fn table(def: &ResourceDef, objs: &[Value], include: &str, list_meta: Value) -> Value {
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                }),
            };
            json!({"cells": cells(def, o), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(def),
        "rows": rows,
    })
}
