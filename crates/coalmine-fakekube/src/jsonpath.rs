//! The small subset of JSONPath that printer columns and scale subresources
//! use: `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(String, String),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut steps = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    j += 1;
                }
                if j > start {
                    steps.push(Step::Field(p[start..j].to_owned()));
                }
                i = j;
            }
            b'[' => {
                let end = p[i..].find(']')? + i;
                let inner = p[i + 1..end].trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|x| x.strip_suffix(')')) {
                    let (l, r) = f.split_once("==")?;
                    let key = l.trim().strip_prefix("@.")?.to_owned();
                    let val = r.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
                    steps.push(Step::Filter(key, val));
                } else if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|x| x.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                {
                    steps.push(Step::Field(q.to_owned()));
                } else {
                    steps.push(Step::Index(inner.parse().ok()?));
                }
                i = end + 1;
            }
            _ => {
                let start = i;
                let mut j = i;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    j += 1;
                }
                steps.push(Step::Field(p[start..j].to_owned()));
                i = j;
            }
        }
    }
    Some(steps)
}

/// Every value the path selects (none if it is malformed).
pub(crate) fn find<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut cur = vec![obj];
    for s in &steps {
        let mut next = Vec::new();
        for v in cur {
            match s {
                Step::Field(f) => next.extend(v.get(f.as_str())),
                Step::Index(n) => next.extend(v.get(*n)),
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(k, want) => {
                    if let Value::Array(a) = v {
                        next.extend(a.iter().filter(|e| match e.get(k.as_str()) {
                            Some(Value::String(s)) => s == want,
                            Some(other) => want.as_str() == other.to_string().as_str(),
                            None => false,
                        }));
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// The first value the path selects.
pub(crate) fn first<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    find(obj, path).into_iter().next()
}

/// Sets a plain dotted path (`.spec.replicas`), creating objects on the way.
pub(crate) fn set(obj: &mut Value, path: &str, value: Value) -> bool {
    let Some(steps) = parse(path) else {
        return false;
    };
    let mut cur = obj;
    for (i, s) in steps.iter().enumerate() {
        let Step::Field(f) = s else {
            return false;
        };
        if !cur.is_object() {
            *cur = Value::Object(serde_json::Map::new());
        }
        let Some(map) = cur.as_object_mut() else {
            return false;
        };
        if i + 1 == steps.len() {
            map.insert(f.clone(), value);
            return true;
        }
        cur = map.entry(f.clone()).or_insert(Value::Null);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}], "n": 3}});
        assert_eq!(first(&o, ".status.n"), Some(&json!(3)));
        assert_eq!(
            first(&o, ".status.conditions[1].type"),
            Some(&json!("Ready"))
        );
        assert_eq!(
            first(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(find(&o, ".status.conditions[*].type").len(), 2);
        let mut x = json!({});
        assert!(set(&mut x, ".spec.replicas", json!(2)));
        assert_eq!(x, json!({"spec": {"replicas": 2}}));
    }
}
