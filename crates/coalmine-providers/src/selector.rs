//! A small JSONPath-like selector for webhook answers: `$.total`,
//! `$.data.errors[0].count`, `$['key with.dots']`, and also the short form
//! `data.errors` without `$.`.
//!
//! Only child steps exist (names and array indexes): a metric needs one
//! number, so wildcards, filters and recursive descent, which select
//! several, have no use here. Every failure says which part of the path
//! was missing or of the wrong type, since the user has to fix the path or
//! the endpoint from that message alone.

use std::fmt;

use serde_json::Value;

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    text: String,
    steps: Vec<Step>,
}

impl Selector {
    /// Reads a selector; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let err = |why: &str| Err(format!("`{text}` is not a selector: {why}"));
        let mut steps = Vec::new();
        let mut rest = text.trim();
        if rest.is_empty() {
            return err("it is empty; write e.g. $.data.total");
        }
        if let Some(r) = rest.strip_prefix('$') {
            rest = r;
        } else {
            // The short form starts with a name: `data.total`.
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return err("it must start with `$` or a field name");
            }
            steps.push(Step::Key(rest[..end].to_owned()));
            rest = &rest[end..];
        }
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return err("a `.` must be followed by a field name");
                }
                steps.push(Step::Key(r[..end].to_owned()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let (step, after) = match r.chars().next() {
                    Some(q @ ('\'' | '"')) => {
                        let Some(close) = r[1..].find(q) else {
                            return err("a quoted name in `[...]` is not closed");
                        };
                        (Step::Key(r[1..1 + close].to_owned()), &r[1 + close + 1..])
                    }
                    _ => {
                        let end = r.find(']').unwrap_or(r.len());
                        match r[..end].trim().parse::<usize>() {
                            Ok(i) => (Step::Index(i), &r[end..]),
                            Err(_) => {
                                return err(
                                    "`[...]` holds an array index (0, 1, ...) or a quoted name",
                                );
                            }
                        }
                    }
                };
                let Some(after) = after.strip_prefix(']') else {
                    return err("a `[` is not closed with `]`");
                };
                steps.push(step);
                rest = after;
            } else {
                return err("expected `.name` or `[index]` after each step");
            }
        }
        Ok(Selector {
            text: text.trim().to_owned(),
            steps,
        })
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value this selector points at in `doc`.
    pub fn select<'a>(&self, doc: &'a Value) -> Result<&'a Value, String> {
        let mut at = String::from("$");
        let mut v = doc;
        for step in &self.steps {
            v = match (step, v) {
                (Step::Key(k), Value::Object(map)) => map.get(k).ok_or_else(|| {
                    let mut keys: Vec<&str> = map.keys().map(String::as_str).take(10).collect();
                    keys.sort_unstable();
                    format!(
                        "`{}`: no field `{k}` at `{at}` (fields there: {})",
                        self.text,
                        if keys.is_empty() {
                            "none".to_owned()
                        } else {
                            keys.join(", ")
                        }
                    )
                })?,
                (Step::Index(i), Value::Array(items)) => items.get(*i).ok_or_else(|| {
                    format!(
                        "`{}`: index {i} is out of range at `{at}` (an array of {})",
                        self.text,
                        items.len()
                    )
                })?,
                (Step::Key(k), other) => {
                    return Err(format!(
                        "`{}`: expected an object with field `{k}` at `{at}`, found {}",
                        self.text,
                        kind(other)
                    ));
                }
                (Step::Index(i), other) => {
                    return Err(format!(
                        "`{}`: expected an array to take [{i}] of at `{at}`, found {}",
                        self.text,
                        kind(other)
                    ));
                }
            };
            match step {
                Step::Key(k) if is_plain(k) => {
                    at.push('.');
                    at.push_str(k);
                }
                Step::Key(k) => at.push_str(&format!("['{k}']")),
                Step::Index(i) => at.push_str(&format!("[{i}]")),
            }
        }
        Ok(v)
    }

    /// The number this selector points at: a JSON number, or a string
    /// holding one (some APIs quote numbers to keep 64-bit precision).
    /// NaN and infinities are refused.
    pub fn number(&self, doc: &Value) -> Result<f64, String> {
        let v = self.select(doc)?;
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(x) if x.is_finite() => Ok(x),
            Some(x) => Err(format!("`{}` is {x}, not a finite number", self.text)),
            None => Err(format!("`{}` is {}, not a number", self.text, describe(v))),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_plain(k: &str) -> bool {
    !k.is_empty() && !k.contains(['.', '[', ']', '\'', '"'])
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The kind of a value, with a short rendering of scalars.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            format!("the string {:?}", short)
        }
        Value::Bool(b) => format!("the boolean {b}"),
        other => kind(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn forms_that_parse() {
        let doc = json!({
            "total": 12,
            "data": {"errors": [{"count": 3}, {"count": "4"}], "a.b": {"c d": 7.5}},
            "s": " 42 "
        });
        assert_eq!(sel("$.total").number(&doc), Ok(12.0));
        assert_eq!(sel("total").number(&doc), Ok(12.0));
        assert_eq!(sel("$.data.errors[0].count").number(&doc), Ok(3.0));
        assert_eq!(sel("data.errors[1].count").number(&doc), Ok(4.0));
        assert_eq!(sel("$['data']['a.b'][\"c d\"]").number(&doc), Ok(7.5));
        assert_eq!(sel("$.data[\"a.b\"]['c d']").number(&doc), Ok(7.5));
        assert_eq!(sel("$.s").number(&doc), Ok(42.0));
        assert_eq!(sel(" $.total ").as_str(), "$.total");
        assert_eq!(sel("$").number(&json!(5)), Ok(5.0));
        assert_eq!(sel("$[1]").number(&json!([1, 2])), Ok(2.0));
    }

    #[test]
    fn malformed_selectors_say_why() {
        for (s, why) in [
            ("", "empty"),
            ("$.", "followed by a field name"),
            ("$..a", "followed by a field name"),
            ("$.a[", "array index"),
            ("$.a[x]", "array index"),
            ("$.a[0", "not closed"),
            ("$['a", "not closed"),
            ("$a", "expected `.name`"),
            (".a", "must start with"),
            ("[0]", "must start with"),
        ] {
            let e = Selector::parse(s).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
            assert!(e.contains("is not a selector"), "{s}: {e}");
        }
    }

    #[test]
    fn missing_and_mistyped_values_name_the_place() {
        let doc = json!({"data": {"items": [1], "n": null, "b": true, "t": "abc", "o": {}}});
        let e = sel("$.data.total").number(&doc).expect_err("missing");
        assert_eq!(
            e,
            "`$.data.total`: no field `total` at `$.data` (fields there: b, items, n, o, t)"
        );
        let e = sel("$.data.items[3]").number(&doc).expect_err("range");
        assert!(
            e.contains("index 3 is out of range at `$.data.items` (an array of 1)"),
            "{e}"
        );
        let e = sel("$.data.items.x").number(&doc).expect_err("array");
        assert!(
            e.contains("expected an object with field `x` at `$.data.items`, found an array"),
            "{e}"
        );
        let e = sel("$.data[0]").number(&doc).expect_err("object");
        assert!(
            e.contains("expected an array to take [0] of at `$.data`, found an object"),
            "{e}"
        );
        assert_eq!(
            sel("$.data.n").number(&doc),
            Err("`$.data.n` is null, not a number".into())
        );
        assert_eq!(
            sel("$.data.b").number(&doc),
            Err("`$.data.b` is the boolean true, not a number".into())
        );
        assert_eq!(
            sel("$.data.t").number(&doc),
            Err("`$.data.t` is the string \"abc\", not a number".into())
        );
        assert_eq!(
            sel("$.data.o").number(&doc),
            Err("`$.data.o` is an object, not a number".into())
        );
        let e = sel("$.x").number(&json!({"x": "NaN"})).expect_err("nan");
        assert!(e.contains("not a finite number"), "{e}");
        let e = sel("$.a.b").number(&json!({"a": 1})).expect_err("scalar");
        assert!(e.contains("at `$.a`, found a number"), "{e}");
    }
}
