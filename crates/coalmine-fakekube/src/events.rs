//! `events.k8s.io/v1` Events are stored as core `v1` Events, as on a real
//! server, so that what kube-rs's event recorder writes shows in `kubectl
//! get events`. These are the field renames between the two forms.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core v1 field).
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(obj: &mut Value, to_core: bool) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let mut out = Map::new();
    for (k, v) in std::mem::take(m) {
        let new_key = RENAMES
            .iter()
            .find(|(e, c)| if to_core { e == &k } else { c == &k })
            .map(|(e, c)| if to_core { *c } else { *e })
            .unwrap_or(k.as_str())
            .to_owned();
        out.insert(new_key, v);
    }
    *m = out;
}

/// An events.k8s.io/v1 Event in its stored (core v1) form.
pub(crate) fn to_core(mut obj: Value) -> Value {
    rename(&mut obj, true);
    if let Some(m) = obj.as_object_mut() {
        if !m.contains_key("source")
            && let Some(c) = m.get("reportingComponent").cloned()
        {
            m.insert("source".into(), serde_json::json!({ "component": c }));
        }
        m.insert("apiVersion".into(), Value::from("v1"));
    }
    obj
}

/// A stored (core v1) Event as events.k8s.io/v1 shows it.
pub(crate) fn from_core(mut obj: Value) -> Value {
    rename(&mut obj, false);
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::from("events.k8s.io/v1"));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "regarding": {"name": "x"},
                       "note": "hi", "reportingController": "coalmine", "reason": "R"});
        let core = to_core(e.clone());
        assert_eq!(core["involvedObject"]["name"], "x");
        assert_eq!(core["message"], "hi");
        assert_eq!(core["source"]["component"], "coalmine");
        let back = from_core(core);
        assert_eq!(back["note"], "hi");
        assert_eq!(back["reportingController"], "coalmine");
    }
}
