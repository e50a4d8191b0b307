//! The resource types the fake server serves: the built-in ones and those
//! that `CustomResourceDefinition`s register, with what discovery, the REST
//! paths, the subresources and the table printer need to know of each.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// How the scale subresource maps onto a resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScaleDef {
    /// JSON path of the desired replicas, e.g. `.spec.replicas`.
    pub spec_path: String,
    /// JSON path of the observed replicas, e.g. `.status.replicas`.
    pub status_path: String,
    /// JSON path of the label selector string, if any.
    pub selector_path: Option<String>,
}

/// A table column of a custom resource (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub name: String,
    pub typ: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// Which table layout `kubectl get` receives for a resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Printer {
    /// NAME, AGE.
    Default,
    Namespace,
    ConfigMap,
    Secret,
    Service,
    Deployment,
    ReplicaSet,
    Pod,
    Lease,
    Ingress,
    Event,
    Crd,
    /// A custom resource's printer columns (NAME first).
    Custom(Vec<Column>),
}

/// One resource at one group/version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Has a `/status` subresource: main writes keep the old status.
    pub status: bool,
    pub scale: Option<ScaleDef>,
    /// Keeps `metadata.generation`.
    pub generation: bool,
    /// PUT on a missing object creates it (leases, events, endpoints).
    pub create_on_update: bool,
    /// Registered by a CustomResourceDefinition.
    pub custom: bool,
    pub printer: Printer,
}

impl ResourceDef {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_ascii_lowercase(),
            kind: kind.to_owned(),
            list_kind: format!("{kind}List"),
            short_names: Vec::new(),
            categories: Vec::new(),
            namespaced,
            status: false,
            scale: None,
            generation: false,
            create_on_update: false,
            custom: false,
            printer: Printer::Default,
        }
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn all(mut self) -> Self {
        self.categories = vec!["all".to_owned()];
        self
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn with_generation(mut self) -> Self {
        self.generation = true;
        self
    }

    fn with_scale(mut self) -> Self {
        self.scale = Some(ScaleDef {
            spec_path: ".spec.replicas".to_owned(),
            status_path: ".status.replicas".to_owned(),
            selector_path: None,
        });
        self
    }

    fn printer(mut self, p: Printer) -> Self {
        self.printer = p;
        self
    }

    fn create_on_update(mut self) -> Self {
        self.create_on_update = true;
        self
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Objects are stored once per group and resource, whatever the version.
    pub fn storage_key(&self) -> StorageKey {
        if self.is_events_v1() {
            return (String::new(), "events".to_owned());
        }
        (self.group.clone(), self.plural.clone())
    }

    /// `events.k8s.io` Events, stored as core Events.
    pub fn is_events_v1(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    /// The discovery entries (`APIResource`) of the resource and its
    /// subresources.
    pub fn discovery(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": self.short_names,
            "categories": self.categories,
            "storageVersionHash": format!("{:016x}", fnv(&self.storage_key().1)).get(..12).unwrap_or_default(),
        })];
        if self.status {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.scale.is_some() {
            out.push(json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

/// (group, plural): where objects of a resource are stored.
pub(crate) type StorageKey = (String, String);

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Sort key of Kubernetes version priority: v2 > v1 > v1beta2 > v1beta1 >
/// v1alpha1 > anything else (alphabetical).
fn version_key(v: &str) -> (u8, i64, i64, String) {
    let parse = || -> Option<(u8, i64, i64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let major: i64 = rest.get(..digits)?.parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        for (pre, rank) in [("beta", 2u8), ("alpha", 1u8)] {
            if let Some(n) = tail.strip_prefix(pre) {
                return Some((rank, major, n.parse().ok()?));
            }
        }
        None
    };
    match parse() {
        Some((rank, major, minor)) => (rank, major, minor, String::new()),
        None => (0, 0, 0, v.to_owned()),
    }
}

/// Sorts versions, preferred first.
pub(crate) fn sort_versions(vs: &mut [String]) {
    vs.sort_by(|a, b| {
        let (ka, kb) = (version_key(a), version_key(b));
        (kb.0, kb.1, kb.2)
            .cmp(&(ka.0, ka.1, ka.2))
            .then_with(|| ka.3.cmp(&kb.3))
    });
}

/// The resources served, by (group, version, plural).
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    defs: BTreeMap<(String, String, String), ResourceDef>,
    group_order: Vec<String>,
}

/// The group of CustomResourceDefinitions.
pub(crate) const CRD_GROUP: &str = "apiextensions.k8s.io";

impl Registry {
    /// The built-in resources.
    pub fn builtin() -> Self {
        use Printer as P;
        let defs = vec![
            ResourceDef::builtin("", "v1", "namespaces", "Namespace", false)
                .short(&["ns"])
                .with_status()
                .printer(P::Namespace),
            ResourceDef::builtin("", "v1", "services", "Service", true)
                .short(&["svc"])
                .all()
                .with_status()
                .printer(P::Service),
            ResourceDef::builtin("", "v1", "configmaps", "ConfigMap", true)
                .short(&["cm"])
                .printer(P::ConfigMap),
            ResourceDef::builtin("", "v1", "secrets", "Secret", true).printer(P::Secret),
            ResourceDef::builtin("", "v1", "serviceaccounts", "ServiceAccount", true)
                .short(&["sa"]),
            ResourceDef::builtin("", "v1", "endpoints", "Endpoints", true)
                .short(&["ep"])
                .create_on_update(),
            ResourceDef::builtin("", "v1", "events", "Event", true)
                .short(&["ev"])
                .create_on_update()
                .printer(P::Event),
            ResourceDef::builtin("", "v1", "pods", "Pod", true)
                .short(&["po"])
                .all()
                .with_status()
                .printer(P::Pod),
            ResourceDef::builtin("apps", "v1", "deployments", "Deployment", true)
                .short(&["deploy"])
                .all()
                .with_status()
                .with_generation()
                .with_scale()
                .printer(P::Deployment),
            ResourceDef::builtin("apps", "v1", "replicasets", "ReplicaSet", true)
                .short(&["rs"])
                .all()
                .with_status()
                .with_generation()
                .with_scale()
                .printer(P::ReplicaSet),
            ResourceDef::builtin("events.k8s.io", "v1", "events", "Event", true)
                .short(&["ev"])
                .create_on_update(),
            ResourceDef::builtin("networking.k8s.io", "v1", "ingresses", "Ingress", true)
                .short(&["ing"])
                .with_status()
                .with_generation()
                .printer(P::Ingress),
            ResourceDef::builtin(
                "networking.k8s.io",
                "v1",
                "ingressclasses",
                "IngressClass",
                false,
            )
            .with_generation(),
            ResourceDef::builtin(
                CRD_GROUP,
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )
            .short(&["crd", "crds"])
            .with_status()
            .with_generation()
            .printer(P::Crd),
            ResourceDef::builtin("coordination.k8s.io", "v1", "leases", "Lease", true)
                .create_on_update()
                .printer(P::Lease),
            gateway(
                "httproutes",
                "HTTPRoute",
                true,
                vec![
                    col("Hostnames", "string", ".spec.hostnames"),
                    col("Age", "date", ".metadata.creationTimestamp"),
                ],
            ),
            gateway(
                "gateways",
                "Gateway",
                true,
                vec![
                    col("Class", "string", ".spec.gatewayClassName"),
                    col("Address", "string", ".status.addresses[*].value"),
                    col(
                        "Programmed",
                        "string",
                        ".status.conditions[?(@.type==\"Programmed\")].status",
                    ),
                    col("Age", "date", ".metadata.creationTimestamp"),
                ],
            ),
            gateway(
                "gatewayclasses",
                "GatewayClass",
                false,
                vec![
                    col("Controller", "string", ".spec.controllerName"),
                    col(
                        "Accepted",
                        "string",
                        ".status.conditions[?(@.type==\"Accepted\")].status",
                    ),
                    col("Age", "date", ".metadata.creationTimestamp"),
                ],
            ),
        ];
        let mut r = Self {
            defs: BTreeMap::new(),
            group_order: Vec::new(),
        };
        for d in defs {
            r.add(d);
        }
        r
    }

    /// Adds or replaces one resource version.
    pub fn add(&mut self, def: ResourceDef) {
        if !self.group_order.contains(&def.group) {
            self.group_order.push(def.group.clone());
        }
        self.defs.insert(
            (def.group.clone(), def.version.clone(), def.plural.clone()),
            def,
        );
    }

    /// Removes every version of a custom resource.
    pub fn remove_custom(&mut self, group: &str, plural: &str) {
        self.defs
            .retain(|(g, _, p), d| !(g == group && p == plural && d.custom));
        if !self.defs.keys().any(|(g, _, _)| g == group) {
            self.group_order.retain(|g| g != group);
        }
    }

    /// The resource at group/version/plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
    }

    /// Groups in discovery order, each with its versions, preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.group_order
            .iter()
            .map(|g| {
                let mut vs: Vec<String> = self
                    .defs
                    .keys()
                    .filter(|(dg, _, _)| dg == g)
                    .map(|(_, v, _)| v.clone())
                    .collect();
                vs.dedup();
                sort_versions(&mut vs);
                (g.clone(), vs)
            })
            .collect()
    }

    /// The resources served at one group/version.
    pub fn resources(&self, group: &str, version: &str) -> Vec<&ResourceDef> {
        self.defs
            .values()
            .filter(|d| d.group == group && d.version == version)
            .collect()
    }
}

fn col(name: &str, typ: &str, path: &str) -> Column {
    Column {
        name: name.to_owned(),
        typ: typ.to_owned(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.to_owned(),
    }
}

fn gateway(plural: &str, kind: &str, namespaced: bool, cols: Vec<Column>) -> ResourceDef {
    let mut d = ResourceDef::builtin("gateway.networking.k8s.io", "v1", plural, kind, namespaced)
        .with_status()
        .with_generation()
        .printer(Printer::Custom(cols));
    d.categories = vec!["gateway-api".to_owned()];
    d
}

/// Field errors of a CRD.
pub(crate) type FieldErrors = Vec<(String, String)>;

/// The resource versions a CRD object registers, or its field errors.
pub(crate) fn crd_defs(crd: &Value) -> Result<Vec<ResourceDef>, FieldErrors> {
    let mut errs: FieldErrors = Vec::new();
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let kind = s("/spec/names/kind");
    let name = s("/metadata/name");
    if group.is_empty() {
        errs.push(("spec.group".into(), "Required value".into()));
    } else if !group.contains('.') {
        errs.push((
            "spec.group".into(),
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    }
    if plural.is_empty() {
        errs.push(("spec.names.plural".into(), "Required value".into()));
    } else if !plural
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errs.push((
            "spec.names.plural".into(),
            format!("Invalid value: {plural:?}: a lowercase RFC 1123 label"),
        ));
    }
    if kind.is_empty() {
        errs.push(("spec.names.kind".into(), "Required value".into()));
    }
    if name != format!("{plural}.{group}") {
        errs.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match s("/spec/scope").as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            errs.push((
                "spec.scope".into(),
                format!(
                    "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
            true
        }
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push((
            "spec.versions".into(),
            "Required value: must have exactly one version marked as storage version".into(),
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        errs.push((
            "spec.versions".into(),
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let mut singular = s("/spec/names/singular");
    if singular.is_empty() {
        singular = kind.to_ascii_lowercase();
    }
    let mut list_kind = s("/spec/names/listKind");
    if list_kind.is_empty() {
        list_kind = format!("{kind}List");
    }
    let mut out = Vec::new();
    for v in &versions {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if vname.is_empty() {
            return Err(vec![(
                "spec.versions[].name".into(),
                "Required value".into(),
            )]);
        }
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let sub = v.get("subresources");
        let scale = sub.and_then(|s| s.get("scale")).map(|sc| ScaleDef {
            spec_path: sc
                .get("specReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".spec.replicas")
                .to_owned(),
            status_path: sc
                .get("statusReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".status.replicas")
                .to_owned(),
            selector_path: sc
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
        let mut cols: Vec<Column> = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| {
                        let f = |k: &str| {
                            c.get(k)
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned()
                        };
                        Column {
                            name: f("name"),
                            typ: f("type"),
                            format: f("format"),
                            description: f("description"),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            json_path: f("jsonPath"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        if cols.is_empty() {
            cols.push(col("Age", "date", ".metadata.creationTimestamp"));
        }
        out.push(ResourceDef {
            group: group.clone(),
            version: vname.to_owned(),
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            short_names: strings("/spec/names/shortNames"),
            categories: strings("/spec/names/categories"),
            namespaced,
            status: sub.and_then(|s| s.get("status")).is_some(),
            scale,
            generation: true,
            create_on_update: false,
            custom: true,
            printer: Printer::Custom(cols),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        let mut v: Vec<String> = ["v1alpha1", "v1", "foo", "v2beta1", "v1beta2", "v2"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        sort_versions(&mut v);
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }
}
