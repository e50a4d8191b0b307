//! Revisions: short, stable fingerprints of what the canary runs.
//!
//! In Kubernetes the revision is that of the pod template; in local mode,
//! that of the upstream list. A rollout starts when the revision the spec
//! asks for differs from the one stable runs. The hash covers a canonical
//! form (object keys sorted) so that key order in a file never matters.

use serde_json::Value;

use crate::spec::CanarySpec;

/// FNV-1a over the canonical JSON of `value`, as 10 hex digits.
pub fn revision_of(value: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(value, &mut canonical);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl CanarySpec {
    /// The revision the spec asks the canary to run: the pod template's in
    /// Kubernetes, the canary upstreams' in local mode.
    pub fn desired_revision(&self) -> String {
        match (&self.template, &self.upstreams) {
            (Some(t), _) => revision_of(&Value::Object(t.clone())),
            (None, Some(u)) => revision_of(&serde_json::json!({ "upstreams": u.canary })),
            (None, None) => revision_of(&Value::Null),
        }
    }

    /// Local mode: the revision of the stable upstreams, which stable runs
    /// before any rollout.
    pub fn local_stable_revision(&self) -> Option<String> {
        self.upstreams
            .as_ref()
            .map(|u| revision_of(&serde_json::json!({ "upstreams": u.stable })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter_but_content_does() {
        let a = json!({"spec": {"containers": [{"name": "a", "image": "app:1"}]}, "metadata": {}});
        let b: Value = serde_json::from_str(
            r#"{"metadata":{},"spec":{"containers":[{"image":"app:1","name":"a"}]}}"#,
        )
        .unwrap();
        assert_eq!(revision_of(&a), revision_of(&b));
        let c = json!({"spec": {"containers": [{"name": "a", "image": "app:2"}]}, "metadata": {}});
        assert_ne!(revision_of(&a), revision_of(&c));
        assert_eq!(revision_of(&a).len(), 10);
    }

    #[test]
    fn local_revisions_differ_by_track() {
        let spec = CanarySpec {
            upstreams: Some(crate::spec::Upstreams {
                stable: vec!["http://127.0.0.1:1".into()],
                canary: vec!["http://127.0.0.1:2".into()],
                listen: None,
                health_path: None,
            }),
            ..CanarySpec::default()
        };
        assert_ne!(Some(spec.desired_revision()), spec.local_stable_revision());
    }
}
