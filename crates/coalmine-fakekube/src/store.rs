//! The object store: every object of every resource, one global
//! resourceVersion counter, the history of watch events, and the write
//! semantics of the API server (creation, updates with optimistic
//! concurrency, status isolation, generation, finalizers and graceful
//! deletion, owner-reference garbage collection, namespace and CRD
//! cleanup, server-side apply).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::patch;
use crate::registry::{CRD_GROUP, Registry, ResourceDef, StorageKey, crd_defs};
use crate::selector::{FieldSelector, LabelSelector};
use crate::time::now_rfc3339;

/// What a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change to the store.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub key: StorageKey,
    pub namespace: String,
    pub typ: EventType,
    /// The object after the change (the last state for deletions).
    pub object: Value,
    /// The object before a modification.
    pub old: Option<Value>,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

type ObjKey = (String, String);
type ObjId = (StorageKey, String, String);

/// Which events a watch wants.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub key: StorageKey,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event type this watch sees for an event, if any: an object that
    /// stops matching the selectors is reported DELETED, one that starts
    /// matching ADDED.
    pub fn translate(&self, ev: &Event) -> Option<&'static str> {
        if ev.key != self.key {
            return None;
        }
        if let Some(ns) = &self.namespace
            && *ns != ev.namespace
        {
            return None;
        }
        let now = self.matches(&ev.object);
        match ev.typ {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }
}

/// A page of a list.
pub(crate) struct Page {
    pub items: Vec<Value>,
    pub next: Option<ObjKey>,
    pub remaining: usize,
}

/// Everything the server keeps.
pub(crate) struct Store {
    pub registry: Registry,
    objects: HashMap<StorageKey, BTreeMap<ObjKey, Value>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    compacted: u64,
    applied: HashMap<ObjId, BTreeMap<String, Value>>,
    tx: broadcast::Sender<Arc<Event>>,
    seed: u64,
    seq: u64,
    next_ip: u32,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn is_qualified_name(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

impl Store {
    /// A store holding the given namespaces.
    pub fn new(history_limit: usize, namespaces: &[String]) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        let mut s = Self {
            registry: Registry::builtin(),
            objects: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            applied: HashMap::new(),
            tx,
            seed,
            seq: 0,
            next_ip: 10,
        };
        if let Some(def) = s.registry.get("", "v1", "namespaces").cloned() {
            for ns in namespaces {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                if let Err(e) = s.create(&def, "", obj, false) {
                    tracing::warn!(namespace = %ns, error = %e.message, "cannot create namespace");
                }
            }
        }
        s
    }

    /// The newest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Events after `rv`, or 410 Expired when some have been compacted.
    pub fn events_since(&self, rv: u64) -> ApiResult<Vec<Arc<Event>>> {
        if rv < self.compacted {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                self.compacted + 1
            )));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    fn random(&mut self) -> u64 {
        self.seq += 1;
        splitmix(self.seed ^ splitmix(self.seq))
    }

    fn new_uid(&mut self) -> String {
        let a = self.random();
        let b = self.random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn with_version(def: &ResourceDef, mut obj: Value) -> Value {
        if def.is_events_v1() {
            return crate::events::from_core(obj);
        }
        if obj.is_object() {
            obj["apiVersion"] = json!(def.api_version());
        }
        obj
    }

    /// A copy of a stored object as seen through one version.
    pub fn versioned(def: &ResourceDef, obj: &Value) -> Value {
        Self::with_version(def, obj.clone())
    }

    fn lookup(&self, key: &StorageKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(key)?
            .get(&(ns.to_owned(), name.to_owned()))
    }

    /// One object.
    pub fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> ApiResult<Value> {
        self.lookup(&def.storage_key(), ns, name)
            .map(|o| Self::with_version(def, o.clone()))
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    /// Objects matching the selectors, in (namespace, name) order, starting
    /// after `after`, at most `limit`.
    pub fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        after: Option<&ObjKey>,
    ) -> Page {
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0;
        if let Some(map) = self.objects.get(&def.storage_key()) {
            for (k, o) in map {
                if ns.is_some_and(|n| n != k.0) || after.is_some_and(|a| k <= a) {
                    continue;
                }
                if !labels.matches(o) || !fields.matches(o) {
                    continue;
                }
                if limit.is_some_and(|l| items.len() >= l) {
                    remaining += 1;
                    continue;
                }
                items.push(Self::with_version(def, o.clone()));
                if limit.is_some_and(|l| items.len() >= l) {
                    next = Some(k.clone());
                }
            }
        }
        if remaining == 0 {
            next = None;
        }
        Page {
            items,
            next,
            remaining,
        }
    }

    /// Stores a write: bumps the resourceVersion and records the event.
    fn commit(
        &mut self,
        key: &StorageKey,
        mut obj: Value,
        typ: EventType,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let ns = meta_str(&obj, "namespace").to_owned();
        let name = meta_str(&obj, "name").to_owned();
        let map = self.objects.entry(key.clone()).or_default();
        if typ == EventType::Deleted {
            map.remove(&(ns.clone(), name));
        } else {
            map.insert((ns.clone(), name), obj.clone());
        }
        let ev = Arc::new(Event {
            rv: self.rv,
            key: key.clone(),
            namespace: ns,
            typ,
            object: obj.clone(),
            old,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        // Nobody listening is fine.
        let _ = self.tx.send(ev);
        obj
    }

    fn check_type(def: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
        let Value::Object(m) = obj else {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        let api = def.api_version();
        match m.get("apiVersion").and_then(Value::as_str) {
            Some("v1") if def.is_events_v1() => {}
            Some(v) if v != api => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api})"
                )));
            }
            _ => {
                m.insert("apiVersion".into(), json!(api));
            }
        }
        match m.get("kind").and_then(Value::as_str) {
            Some(k) if k != def.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    def.kind
                )));
            }
            _ => {
                m.insert("kind".into(), json!(def.kind));
            }
        }
        if m.get("metadata")
            .is_some_and(|v| !v.is_object() && !v.is_null())
        {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        Ok(())
    }

    /// The checks of a write addressed by name (PUT, apply): the type, the
    /// events.k8s.io form stored as core, the name matching the URL (or
    /// taken from it), the namespace.
    fn check_named_write(
        def: &ResourceDef,
        ns: &str,
        name: &str,
        obj: &mut Value,
    ) -> ApiResult<()> {
        Self::check_type(def, obj)?;
        if def.is_events_v1() {
            *obj = crate::events::to_core(std::mem::take(obj));
        }
        match meta_str(obj, "name") {
            "" => {
                meta_mut(obj).insert("name".into(), json!(name));
            }
            n if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        Self::check_namespace(def, obj, ns)
    }

    fn check_namespace(def: &ResourceDef, obj: &mut Value, ns: &str) -> ApiResult<()> {
        let m = meta_mut(obj);
        if def.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    /// Creates an object.
    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        Self::check_type(def, &mut obj)?;
        if def.is_events_v1() {
            obj = crate::events::to_core(obj);
        }
        Self::check_namespace(def, &mut obj, ns)?;
        let mut name = meta_str(&obj, "name").to_owned();
        if name.is_empty() {
            let generate = meta_str(&obj, "generateName").to_owned();
            if generate.is_empty() {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    "",
                    &[(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
            const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let mut r = self.random();
            let mut suffix = String::new();
            for _ in 0..5 {
                suffix.push(char::from(ALPHABET[(r % 27) as usize]));
                r /= 27;
            }
            name = format!("{generate}{suffix}");
            meta_mut(&mut obj).insert("name".into(), json!(name));
        }
        if def.namespaced {
            let nskey = (String::new(), "namespaces".to_owned());
            match self.lookup(&nskey, "", ns) {
                None => return Err(ApiError::not_found("", "namespaces", ns)),
                Some(n) if meta(n).get("deletionTimestamp").is_some() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        crate::error::qualified(&def.group, &def.plural)
                    )));
                }
                Some(_) => {}
            }
        }
        let key = def.storage_key();
        if self.lookup(&key, ns, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        if def.status
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let uid = self.new_uid();
        {
            let m = meta_mut(&mut obj);
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                m.remove(f);
            }
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            if def.generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        self.defaults(def, &mut obj, None);
        self.validate(def, &obj, None)?;
        if def.group == CRD_GROUP && def.plural == "customresourcedefinitions" {
            let defs =
                crd_defs(&obj).map_err(|e| ApiError::invalid(&def.group, &def.kind, &name, &e))?;
            Self::crd_status(&mut obj, &defs);
            if dry_run {
                return Ok(obj);
            }
            let out = self.commit(&key, obj, EventType::Added, None);
            for d in defs {
                self.registry.add(d);
            }
            return Ok(out);
        }
        if dry_run {
            return Ok(Self::with_version(def, obj));
        }
        let out = self.commit(&key, obj, EventType::Added, None);
        Ok(Self::with_version(def, out))
    }

    fn crd_status(obj: &mut Value, defs: &[ResourceDef]) {
        let now = now_rfc3339();
        let mut names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
        if let (Some(d), Some(n)) = (defs.first(), names.as_object_mut()) {
            n.insert("singular".into(), json!(d.singular));
            n.insert("listKind".into(), json!(d.list_kind));
        }
        let stored: Vec<Value> = obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        obj["status"] = json!({
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "acceptedNames": names,
            "storedVersions": stored,
        });
    }

    /// Defaulting of the types that have defaults the controller sees.
    fn defaults(&mut self, def: &ResourceDef, obj: &mut Value, old: Option<&Value>) {
        if def.custom {
            return;
        }
        match (def.group.as_str(), def.plural.as_str()) {
            ("", "namespaces") => {
                let name = meta_str(obj, "name").to_owned();
                let m = meta_mut(obj);
                let labels = m.entry("labels").or_insert(json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
                if obj.get("status").is_none_or(Value::is_null) {
                    obj["status"] = json!({"phase": "Active"});
                }
            }
            ("", "pods") => {
                if obj.get("status").is_none_or(Value::is_null) {
                    obj["status"] = json!({"phase": "Pending"});
                }
                if let Some(spec) = obj.get_mut("spec") {
                    default_pod_spec(spec);
                }
            }
            ("", "services") => self.default_service(obj, old),
            ("apps", "deployments") | ("apps", "replicasets") => {
                let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                    return;
                };
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                if def.plural == "deployments" {
                    spec.entry("progressDeadlineSeconds").or_insert(json!(600));
                    let strategy = spec
                        .entry("strategy")
                        .or_insert(json!({"type": "RollingUpdate"}));
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                        && strategy.get("rollingUpdate").is_none()
                    {
                        strategy["rollingUpdate"] =
                            json!({"maxUnavailable": "25%", "maxSurge": "25%"});
                    }
                }
                if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
                    default_pod_spec(ps);
                }
                if obj.get("status").is_none_or(Value::is_null) {
                    obj["status"] = json!({});
                }
            }
            _ => {}
        }
    }

    fn default_service(&mut self, obj: &mut Value, old: Option<&Value>) {
        let old_spec = old.and_then(|o| o.get("spec")).cloned();
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            obj["spec"] = json!({"type": "ClusterIP"});
            return self.default_service(obj, old);
        };
        let typ = spec
            .entry("type")
            .or_insert(json!("ClusterIP"))
            .as_str()
            .unwrap_or("ClusterIP")
            .to_owned();
        spec.entry("sessionAffinity").or_insert(json!("None"));
        if typ != "ExternalName" {
            let keep = old_spec
                .as_ref()
                .and_then(|s| s.get("clusterIP"))
                .filter(|ip| ip.as_str().is_some_and(|s| !s.is_empty()))
                .cloned();
            let ip = match spec.get("clusterIP").and_then(Value::as_str) {
                Some(ip) if !ip.is_empty() => ip.to_owned(),
                _ => match keep {
                    Some(Value::String(ip)) => ip,
                    _ => {
                        let n = self.next_ip;
                        self.next_ip += 1;
                        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
                    }
                },
            };
            spec.insert("clusterIP".into(), json!(ip));
            spec.entry("clusterIPs").or_insert(json!([ip]));
            if ip != "None" {
                spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
                spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
            }
            spec.entry("internalTrafficPolicy")
                .or_insert(json!("Cluster"));
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if let Some(pm) = p.as_object_mut() {
                    pm.entry("protocol").or_insert(json!("TCP"));
                    if let Some(port) = pm.get("port").cloned() {
                        pm.entry("targetPort").or_insert(port);
                    }
                }
            }
        }
        if obj.get("status").is_none_or(Value::is_null) {
            obj["status"] = json!({"loadBalancer": {}});
        }
    }

    fn validate(&self, def: &ResourceDef, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
        let name = meta_str(obj, "name");
        let mut errs: Vec<(String, String)> = Vec::new();
        let label_name =
            def.plural == "namespaces" || (def.plural == "services" && def.group.is_empty());
        let name_ok = if label_name {
            is_dns_label(name)
        } else {
            is_dns_subdomain(name)
        };
        if !name_ok {
            errs.push((
                "metadata.name".into(),
                format!("Invalid value: {name:?}: a lowercase RFC 1123 {} must consist of lower case alphanumeric characters, '-' or '.'",
                    if label_name { "label" } else { "subdomain" }),
            ));
        }
        if let Some(labels) = meta(obj).get("labels") {
            match labels.as_object() {
                Some(l) => {
                    for (k, v) in l {
                        if !is_qualified_name(k) {
                            errs.push(("metadata.labels".into(), format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'")));
                        }
                        if !v.as_str().is_some_and(is_label_value) {
                            errs.push(("metadata.labels".into(), format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'")));
                        }
                    }
                }
                None if labels.is_null() => {}
                None => errs.push((
                    "metadata.labels".into(),
                    "Invalid value: must be a map".into(),
                )),
            }
        }
        if let Some(old) = old {
            let new_f = finalizers(obj);
            let old_f = finalizers(old);
            if meta(old).get("deletionTimestamp").is_some() {
                let added: Vec<&String> = new_f.iter().filter(|f| !old_f.contains(f)).collect();
                if !added.is_empty() {
                    errs.push(("metadata.finalizers".into(), format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}")));
                }
            }
        }
        match (def.group.as_str(), def.plural.as_str()) {
            ("apps", "deployments") | ("apps", "replicasets") => {
                let spec = obj.get("spec").unwrap_or(&Value::Null);
                let sel = spec.get("selector");
                let match_labels = sel
                    .and_then(|s| s.get("matchLabels"))
                    .and_then(Value::as_object);
                let has_expr = sel
                    .and_then(|s| s.get("matchExpressions"))
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                if match_labels.is_none_or(Map::is_empty) && !has_expr {
                    errs.push(("spec.selector".into(), "Required value".into()));
                } else if let Some(sel) = sel {
                    let tmpl = json!({"metadata": {"labels": spec.pointer("/template/metadata/labels").cloned().unwrap_or(json!({}))}});
                    let s = crate::selector::selector_string(sel);
                    if !LabelSelector::parse(&s).is_ok_and(|ls| ls.matches(&tmpl)) {
                        errs.push((
                            "spec.template.metadata.labels".into(),
                            "Invalid value: `selector` does not match template `labels`".into(),
                        ));
                    }
                }
                if let Some(old) = old
                    && old.pointer("/spec/selector") != spec.get("selector")
                {
                    errs.push((
                        "spec.selector".into(),
                        "Invalid value: field is immutable".into(),
                    ));
                }
                match spec
                    .pointer("/template/spec/containers")
                    .and_then(Value::as_array)
                {
                    Some(cs) if !cs.is_empty() => {
                        for (i, c) in cs.iter().enumerate() {
                            if c.get("name")
                                .and_then(Value::as_str)
                                .is_none_or(str::is_empty)
                            {
                                errs.push((
                                    format!("spec.template.spec.containers[{i}].name"),
                                    "Required value".into(),
                                ));
                            }
                            if c.get("image")
                                .and_then(Value::as_str)
                                .is_none_or(str::is_empty)
                            {
                                errs.push((
                                    format!("spec.template.spec.containers[{i}].image"),
                                    "Required value".into(),
                                ));
                            }
                        }
                    }
                    _ => errs.push((
                        "spec.template.spec.containers".into(),
                        "Required value".into(),
                    )),
                }
                if spec
                    .get("replicas")
                    .and_then(Value::as_i64)
                    .is_some_and(|r| r < 0)
                {
                    errs.push((
                        "spec.replicas".into(),
                        "Invalid value: must be greater than or equal to 0".into(),
                    ));
                }
            }
            ("", "services") => {
                let spec = obj.get("spec").unwrap_or(&Value::Null);
                let typ = spec
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP");
                let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
                let ports = spec.get("ports").and_then(Value::as_array);
                if typ != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
                    errs.push(("spec.ports".into(), "Required value".into()));
                }
                for (i, p) in ports.into_iter().flatten().enumerate() {
                    if !p
                        .get("port")
                        .and_then(Value::as_i64)
                        .is_some_and(|n| (1..=65535).contains(&n))
                    {
                        errs.push((
                            format!("spec.ports[{i}].port"),
                            "Invalid value: must be between 1 and 65535, inclusive".into(),
                        ));
                    }
                }
                if let Some(old) = old {
                    let (a, b) = (old.pointer("/spec/clusterIP"), spec.get("clusterIP"));
                    if a.is_some() && a != b {
                        errs.push((
                            "spec.clusterIP".into(),
                            "Invalid value: field is immutable".into(),
                        ));
                    }
                }
            }
            _ => {}
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&def.group, &def.kind, name, &errs))
        }
    }

    /// Replaces an object (PUT), or its status.
    pub fn update(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        mut new: Value,
        sub: Sub,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        Self::check_named_write(def, ns, name, &mut new)?;
        let key = def.storage_key();
        let Some(old) = self.lookup(&key, ns, name).cloned() else {
            if def.create_on_update && sub == Sub::Main {
                return self.create(def, ns, new, dry_run).map(|o| (o, true));
            }
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        let want_rv = meta_str(&new, "resourceVersion");
        if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(&def.group, &def.plural, name));
        }
        let want_uid = meta_str(&new, "uid");
        if !want_uid.is_empty() && want_uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want_uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        let mut result = match sub {
            Sub::Status => {
                let mut r = old.clone();
                match (new.get("status"), r.as_object_mut()) {
                    (Some(s), Some(m)) => {
                        m.insert("status".into(), s.clone());
                    }
                    (None, Some(m)) => {
                        m.remove("status");
                    }
                    _ => {}
                }
                r
            }
            Sub::Main => {
                let mut r = new;
                if def.status
                    && let Some(m) = r.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
                let om = meta(&old).clone();
                let m = meta_mut(&mut r);
                for f in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    match om.get(f) {
                        Some(v) => m.insert(f.into(), v.clone()),
                        None => m.remove(f),
                    };
                }
                m.remove("managedFields");
                m.remove("selfLink");
                self.defaults(def, &mut r, Some(&old));
                r
            }
        };
        self.validate(def, &result, Some(&old))?;
        let is_crd = def.group == CRD_GROUP && def.plural == "customresourcedefinitions";
        let mut crd_new = None;
        if is_crd && sub == Sub::Main {
            let defs = crd_defs(&result)
                .map_err(|e| ApiError::invalid(&def.group, &def.kind, name, &e))?;
            Self::crd_status(&mut result, &defs);
            crd_new = Some(defs);
        }
        if def.generation && spec_changed(def, &old, &result) {
            let g = meta(&old)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut result).insert("generation".into(), json!(g + 1));
        }
        meta_mut(&mut result).insert(
            "resourceVersion".into(),
            json!(meta_str(&old, "resourceVersion")),
        );
        if result == old {
            return Ok((Self::with_version(def, old), false));
        }
        if dry_run {
            return Ok((result, false));
        }
        if meta(&result).get("deletionTimestamp").is_some() && self.removable(&key, &result) {
            let out = self.remove_now(&key, result, Some(old));
            return Ok((Self::with_version(def, out), false));
        }
        let out = self.commit(&key, result, EventType::Modified, Some(old));
        if let Some(defs) = crd_new {
            self.reregister_crd(&out, defs);
        }
        Ok((Self::with_version(def, out), false))
    }

    fn reregister_crd(&mut self, crd: &Value, defs: Vec<ResourceDef>) {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.registry.remove_custom(&group, &plural);
        for d in defs {
            self.registry.add(d);
        }
    }

    /// Whether an object being deleted may go now: no finalizers, and for a
    /// namespace no content, for a CRD no instances.
    fn removable(&self, key: &StorageKey, obj: &Value) -> bool {
        if !finalizers(obj).is_empty() {
            return false;
        }
        let name = meta_str(obj, "name");
        if key.0.is_empty() && key.1 == "namespaces" {
            return !self
                .objects
                .iter()
                .any(|(k, m)| *k != *key && m.keys().any(|(ns, _)| ns == name));
        }
        if key.0 == CRD_GROUP && key.1 == "customresourcedefinitions" {
            let g = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let p = obj
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return self
                .objects
                .get(&(g.to_owned(), p.to_owned()))
                .is_none_or(BTreeMap::is_empty);
        }
        true
    }

    /// Removes an object for good and cleans up after it.
    fn remove_now(&mut self, key: &StorageKey, obj: Value, old: Option<Value>) -> Value {
        let ns = meta_str(&obj, "namespace").to_owned();
        let name = meta_str(&obj, "name").to_owned();
        let uid = meta_str(&obj, "uid").to_owned();
        let out = self.commit(key, obj, EventType::Deleted, old);
        self.applied
            .retain(|(k, n, m), _| !(k == key && *n == ns && *m == name));
        if key.0 == CRD_GROUP && key.1 == "customresourcedefinitions" {
            let g = out
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let p = out
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            self.registry.remove_custom(&g, &p);
            self.objects.remove(&(g, p));
        }
        // Garbage collection of dependents (background propagation).
        if !uid.is_empty() {
            let dependents: Vec<(StorageKey, String, String)> = self
                .objects
                .iter()
                .flat_map(|(k, m)| {
                    m.iter()
                        .filter(|(_, o)| {
                            meta(o)
                                .get("ownerReferences")
                                .and_then(Value::as_array)
                                .is_some_and(|rs| {
                                    rs.iter().any(|r| {
                                        r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                                    })
                                })
                        })
                        .map(|((n, nm), _)| (k.clone(), n.clone(), nm.clone()))
                })
                .collect();
            for (k, n, nm) in dependents {
                self.delete_internal(&k, &n, &nm);
            }
        }
        // A terminating namespace or CRD may now be empty.
        if !ns.is_empty() {
            let nskey = (String::new(), "namespaces".to_owned());
            if let Some(n) = self.lookup(&nskey, "", &ns).cloned()
                && meta(&n).get("deletionTimestamp").is_some()
                && self.removable(&nskey, &n)
            {
                self.remove_now(&nskey, n, None);
            }
        }
        let crdkey = (CRD_GROUP.to_owned(), "customresourcedefinitions".to_owned());
        if *key != crdkey {
            let crd_name = format!("{}.{}", key.1, key.0);
            if let Some(c) = self.lookup(&crdkey, "", &crd_name).cloned()
                && meta(&c).get("deletionTimestamp").is_some()
                && self.removable(&crdkey, &c)
            {
                self.remove_now(&crdkey, c, None);
            }
        }
        out
    }

    /// Starts the deletion of an object: removes it, or marks it with a
    /// deletionTimestamp while finalizers (or content) remain.
    fn delete_internal(&mut self, key: &StorageKey, ns: &str, name: &str) -> Option<Value> {
        let obj = self.lookup(key, ns, name)?.clone();
        let is_ns = key.0.is_empty() && key.1 == "namespaces";
        let is_crd = key.0 == CRD_GROUP && key.1 == "customresourcedefinitions";
        if meta(&obj).get("deletionTimestamp").is_none()
            && (!self.removable(key, &obj) || is_ns || is_crd)
        {
            let mut marked = obj.clone();
            {
                let m = meta_mut(&mut marked);
                m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if let Some(g) = m.get("generation").and_then(Value::as_i64) {
                    m.insert("generation".into(), json!(g + 1));
                }
            }
            if is_ns {
                marked["status"] = json!({"phase": "Terminating"});
            }
            let out = self.commit(key, marked, EventType::Modified, Some(obj));
            if is_ns {
                let content: Vec<(StorageKey, String)> = self
                    .objects
                    .iter()
                    .filter(|(k, _)| *k != key)
                    .flat_map(|(k, m)| {
                        m.keys()
                            .filter(|(n, _)| n == name)
                            .map(|(_, nm)| (k.clone(), nm.clone()))
                    })
                    .collect();
                for (k, nm) in content {
                    self.delete_internal(&k, name, &nm);
                }
            }
            if is_crd {
                let g = out
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let p = out
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let instances: Vec<ObjKey> = self
                    .objects
                    .get(&(g.clone(), p.clone()))
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for (n, nm) in instances {
                    self.delete_internal(&(g.clone(), p.clone()), &n, &nm);
                }
            }
            // Content may all have gone at once.
            return match self.lookup(key, ns, name).cloned() {
                Some(cur) if self.removable(key, &cur) => Some(self.remove_now(key, cur, None)),
                Some(cur) => Some(cur),
                None => Some(out),
            };
        }
        if self.removable(key, &obj) {
            return Some(self.remove_now(key, obj, None));
        }
        Some(obj)
    }

    /// DELETE of one object, with optional preconditions.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        pre_uid: Option<&str>,
        pre_rv: Option<&str>,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let key = def.storage_key();
        let Some(obj) = self.lookup(&key, ns, name).cloned() else {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        if let Some(u) = pre_uid
            && u != meta_str(&obj, "uid")
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                    meta_str(&obj, "uid")
                ),
            ));
        }
        if let Some(rv) = pre_rv
            && rv != meta_str(&obj, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&obj, "resourceVersion")
                ),
            ));
        }
        if dry_run {
            return Ok(Self::with_version(def, obj));
        }
        let out = self.delete_internal(&key, ns, name).unwrap_or(obj);
        Ok(Self::with_version(def, out))
    }

    /// Server-side apply: creates the object or merges the applied
    /// configuration into it, dropping fields this manager applied before
    /// and no longer does, and reporting conflicts with other appliers.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        mut body: Value,
        manager: &str,
        force: bool,
        sub: Sub,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        Self::check_named_write(def, ns, name, &mut body)?;
        let key = def.storage_key();
        let id: ObjId = (key.clone(), ns.to_owned(), name.to_owned());
        let slot = match sub {
            Sub::Main => manager.to_owned(),
            Sub::Status => format!("{manager}/status"),
        };
        let mut config = body.clone();
        if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "resourceVersion",
                "uid",
                "name",
                "namespace",
                "creationTimestamp",
                "managedFields",
            ] {
                m.remove(f);
            }
        }
        if let Some(m) = config.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
        let Some(old) = self.lookup(&key, ns, name).cloned() else {
            if sub == Sub::Status {
                return Err(ApiError::not_found(&def.group, &def.plural, name));
            }
            let out = self.create(def, ns, body, dry_run)?;
            if !dry_run {
                self.applied.entry(id).or_default().insert(slot, config);
            }
            return Ok((out, true));
        };
        let records = self.applied.get(&id).cloned().unwrap_or_default();
        let mut conflicts = Vec::new();
        for p in patch::leaf_paths(&config) {
            for (m, cfg) in &records {
                if *m == slot {
                    continue;
                }
                if let Some(theirs) = patch::get_path(cfg, &p)
                    && Some(theirs) != patch::get_path(&config, &p)
                {
                    conflicts.push((m.clone(), p.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let text: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": .{}", p.join(".")))
                .collect();
            let mut e = ApiError::conflict(&def.group, &def.plural, name, "");
            e.message = format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                text.join("\n")
            );
            return Err(e);
        }
        let mut base = old.clone();
        if let Some(prev) = records.get(&slot) {
            for p in patch::leaf_paths(prev) {
                let still = patch::get_path(&config, &p).is_some()
                    || records
                        .iter()
                        .any(|(m, c)| *m != slot && patch::get_path(c, &p).is_some());
                if !still {
                    patch::remove_path(&mut base, &p);
                }
            }
        }
        if def.custom {
            patch::deep_merge(&mut base, &config);
        } else {
            patch::strategic_merge(&mut base, &config);
        }
        let want_rv = meta_str(&body, "resourceVersion");
        if !want_rv.is_empty() {
            meta_mut(&mut base).insert("resourceVersion".into(), json!(want_rv));
        }
        let (out, created) = self.update(def, ns, name, base, sub, dry_run)?;
        if !dry_run {
            let rec = self.applied.entry(id).or_default();
            for (m, p) in &conflicts {
                if let Some(c) = rec.get_mut(m) {
                    patch::remove_path(c, p);
                }
            }
            rec.insert(slot, config);
        }
        Ok((out, created))
    }
}

/// Whether anything but metadata (and status, for resources with a status
/// subresource) differs.
fn spec_changed(def: &ResourceDef, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if def.status {
                m.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    s.entry("restartPolicy").or_insert(json!("Always"));
    s.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    s.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    s.entry("securityContext").or_insert(json!({}));
    s.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    for field in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(field).and_then(Value::as_array_mut) {
            for c in cs {
                let Some(c) = c.as_object_mut() else { continue };
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let tagless = !image.rsplit('/').next().unwrap_or_default().contains(':');
                let policy = if image.ends_with(":latest") || (tagless && !image.contains('@')) {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                c.entry("imagePullPolicy").or_insert(json!(policy));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                if let Some(ps) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ps {
                        if let Some(p) = p.as_object_mut() {
                            p.entry("protocol").or_insert(json!("TCP"));
                        }
                    }
                }
            }
        }
    }
}
