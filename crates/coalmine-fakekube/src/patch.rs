//! The patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902),
//! strategic merge patch (an approximation: lists of known Kubernetes fields
//! merge by their merge keys, directives `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList` and `$setElementOrder` are understood), and the
//! helpers of server-side apply.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// RFC 6902 JSON patch, as the API server applies it: a `test` that a
/// path is `null` also passes when the path is absent (kube-runtime's
/// finalizer helper tests `/metadata/finalizers` so before adding the
/// first one).
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    let mut next = target.clone();
    for op in ops.0 {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && next.pointer(t.path.as_str()).is_none_or(Value::is_null)
        {
            continue;
        }
        json_patch::patch(&mut next, &[op]).map_err(|e| e.to_string())?;
    }
    *target = next;
    Ok(())
}

/// The merge key of a list field in built-in types, as their
/// `patchMergeKey` tags give it.
fn merge_key(field: &str, items: &[&Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "imagePullSecrets"
        | "volumes"
        | "env"
        | "resourceClaims"
        | "schedulingGates" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else if items.iter().any(|i| i.get("port").is_some()) {
                Some("port")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Lists of scalars whose patch strategy is `merge` (a union).
fn is_merged_primitive_list(field: &str) -> bool {
    field == "finalizers"
}

/// A copy with every `$`-directive removed.
pub(crate) fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").is_none_or(|p| p != "delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Strategic merge patch of built-in types.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = strip_directives(patch);
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), v.as_array()) {
                list.retain(|e| !del.contains(e));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Object(vm) if vm.get("$patch").and_then(Value::as_str) == Some("delete") => {
                t.remove(k);
            }
            Value::Object(_) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => {
                let refs: Vec<&Value> = items.iter().collect();
                let existing = t.get_mut(k).and_then(Value::as_array_mut);
                match (existing, merge_key(k, &refs)) {
                    (Some(list), Some(mk)) => merge_keyed_list(list, items, mk),
                    (Some(list), None) if is_merged_primitive_list(k) => {
                        for i in items {
                            if !list.contains(i) {
                                list.push(i.clone());
                            }
                        }
                    }
                    _ => {
                        t.insert(k.clone(), strip_directives(v));
                    }
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
}

fn merge_keyed_list(list: &mut Vec<Value>, items: &[Value], mk: &str) {
    for item in items {
        if item.get("$patch").and_then(Value::as_str) == Some("replace") {
            list.clear();
            continue;
        }
        let key = item.get(mk);
        let pos = key.and_then(|k| list.iter().position(|e| e.get(mk) == Some(k)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item),
            (None, false) => list.push(strip_directives(item)),
        }
    }
}

/// Deep merge for server-side apply of custom resources: objects merge,
/// lists and scalars replace.
pub(crate) fn deep_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(tv) => deep_merge(tv, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The paths of the leaves of an object (lists and scalars are leaves).
pub(crate) fn leaf_paths(v: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// The value at a path of object keys.
pub(crate) fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

/// Removes the value at a path of object keys, and objects left empty by it.
pub(crate) fn remove_path(v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(m) = v.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        m.remove(first);
        return;
    }
    if let Some(child) = m.get_mut(first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            m.remove(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_for_null_passes_on_an_absent_path_as_in_the_api_server() {
        let mut o = serde_json::json!({"metadata": {"name": "a"}});
        let add = serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}
        ]);
        json_patch(&mut o, &add).expect("applies");
        assert_eq!(o["metadata"]["finalizers"], serde_json::json!(["x"]));
        // Now present: the same test fails and nothing changes.
        assert!(json_patch(&mut o, &add).is_err());
        assert_eq!(o["metadata"]["finalizers"], serde_json::json!(["x"]));
    }
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "s:1"}
        ], "finalizers": ["a"]}});
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
            "containers": [{"name": "app", "image": "a:2"}, {"name": "side", "$patch": "delete"}],
            "finalizers": ["b"]
        }});
        strategic_merge(&mut t, &p);
        assert_eq!(
            t,
            json!({"spec": {"containers": [{"name": "app", "image": "a:2", "ports": [{"containerPort": 80}]}], "finalizers": ["a", "b"]}})
        );
    }

    #[test]
    fn merge_patch_deletes_nulls() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": {"b": null}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2}, "l": [3]}));
    }

    #[test]
    fn leaves_and_removal() {
        let mut v = json!({"a": {"b": 1, "c": {"d": [1]}}});
        assert_eq!(leaf_paths(&v).len(), 2);
        remove_path(&mut v, &["a".into(), "c".into(), "d".into()]);
        assert_eq!(v, json!({"a": {"b": 1}}));
    }
}
