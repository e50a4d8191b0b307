//! Label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) and field
//! selectors (`metadata.name=x,status.phase!=Running`), parsed from query
//! strings and matched against stored objects.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Req>);

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits at commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".to_owned());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_owned());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, got {rest:?}"))?;
    let vals: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(bad) = vals.iter().find(|v| !valid_value(v)) {
        return Err(format!("invalid label value: {bad:?}"));
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s)? {
            let p = part.trim();
            if p.is_empty() {
                return Err(format!("found empty requirement in selector {s:?}"));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().to_owned())
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::NotEq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().to_owned(), parse_set(rest)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Req::In(k.trim().to_owned(), parse_set(rest)?)
            } else if p.contains(char::is_whitespace) || p.contains('(') {
                return Err(format!("unable to parse requirement: {p:?}"));
            } else {
                Req::Exists(p.to_owned())
            };
            let (key, val) = match &req {
                Req::Eq(k, v) | Req::NotEq(k, v) => (k, Some(v)),
                Req::In(k, _) | Req::NotIn(k, _) | Req::Exists(k) | Req::NotExists(k) => (k, None),
            };
            if !valid_key(key) {
                return Err(format!("invalid label key {key:?}"));
            }
            if let Some(v) = val
                && !valid_value(v)
            {
                return Err(format!("invalid label value: {v:?}"));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector; each term compares the string form of a dotted
/// path in the object.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(terms));
        }
        for part in s.split(',') {
            let p = part.trim();
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid selector: {p:?}; can't understand it"));
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("invalid field selector {p:?}"));
            }
            terms.push((k.to_owned(), eq, v.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether the object satisfies every term. A missing field reads as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut cur = Some(obj);
            for seg in path.split('.') {
                cur = cur.and_then(|c| c.get(seg));
            }
            let got = match cur {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

/// The string form of a `LabelSelector` object (`matchLabels` and
/// `matchExpressions`), as the scale subresource reports it.
pub(crate) fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(me) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in me {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let vals: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => parts.push(format!("{key} in ({})", vals.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", vals.join(","))),
                "Exists" => parts.push(key.to_owned()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() -> Result<(), String> {
        let o = json!({"metadata": {"labels": {"app": "web", "track": "canary"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,track=canary", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("track notin (stable)", true),
            ("track notin (canary)", false),
            ("app,!missing", true),
            ("missing", false),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(sel)?.matches(&o), want, "{sel}");
        }
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        Ok(())
    }

    #[test]
    fn field_selectors() -> Result<(), String> {
        let o =
            json!({"metadata": {"name": "x", "namespace": "ns"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=x,metadata.namespace==ns")?.matches(&o));
        assert!(!FieldSelector::parse("status.phase!=Running")?.matches(&o));
        assert!(FieldSelector::parse("nonsense").is_err());
        Ok(())
    }
}
