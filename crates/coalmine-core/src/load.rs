//! Reading a Canary from YAML or JSON text, reporting every structural
//! problem (unknown fields, wrong types) with its path, not just the first.
//!
//! serde stops at the first error, so the lists where most mistakes sit,
//! `spec.steps` and `spec.analysis.metrics`, are decoded element by element
//! and the rest of the document separately: a file with a typo in three
//! steps gets three errors.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::{Problem, did_you_mean};
use crate::spec::{Canary, MetricSpec, Step};

/// The metric providers coalmine reads; the keys of a metric that name one.
pub const METRIC_PROVIDERS: [&str; 3] = ["builtin", "prometheus", "webhook"];

/// Parses a Canary document. On failure, every structural problem found.
pub fn parse_canary(text: &str) -> Result<Canary, Vec<Problem>> {
    if text.trim().is_empty() {
        return Err(vec![Problem::error("", "the file is empty").hint(
            "write a Canary: apiVersion: coalmine.dev/v1alpha1, kind: Canary, metadata, spec",
        )]);
    }
    let mut root: Value = serde_saphyr::from_str(text)
        .map_err(|e| vec![Problem::error("", format!("not valid YAML or JSON: {e}"))])?;
    if !root.is_object() {
        return Err(vec![
            Problem::error("", "expected a Canary object at the top")
                .hint("write a map with apiVersion, kind, metadata and spec"),
        ]);
    }
    let mut problems = Vec::new();
    let steps = take_list(&mut root, &["spec", "steps"])
        .map(|list| decode_each::<Step>(list, "spec.steps", Context::Step, &mut problems));
    let metrics = take_list(&mut root, &["spec", "analysis", "metrics"]).map(|list| {
        decode_each::<MetricSpec>(
            list,
            "spec.analysis.metrics",
            Context::Metric,
            &mut problems,
        )
    });
    let canary = decode::<Canary>(root, "", Context::Other, &mut problems);
    match canary {
        Some(mut canary) if problems.is_empty() => {
            if let Some(steps) = steps {
                canary.spec.steps = steps;
            }
            if let (Some(metrics), Some(analysis)) = (metrics, canary.spec.analysis.as_mut()) {
                analysis.metrics = metrics;
            }
            Ok(canary)
        }
        _ => Err(problems),
    }
}

/// Which kind of object is being decoded, for better hints.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    Step,
    Metric,
    Other,
}

/// Replaces the array at `path` by an empty one and returns its elements.
fn take_list(root: &mut Value, path: &[&str]) -> Option<Vec<Value>> {
    let mut node = root;
    for key in path {
        node = node.as_object_mut()?.get_mut(*key)?;
    }
    match node {
        Value::Array(items) => Some(std::mem::take(items)),
        _ => None,
    }
}

fn decode_each<T: DeserializeOwned>(
    items: Vec<Value>,
    base: &str,
    ctx: Context,
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| decode(v, &format!("{base}[{i}]"), ctx, problems))
        .collect()
}

fn decode<T: DeserializeOwned>(
    value: Value,
    base: &str,
    ctx: Context,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let path = join(base, if inner == "." { "" } else { &inner });
            problems.push(explain(base, path, &e.into_inner().to_string(), ctx));
            None
        }
    }
}

fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (_, true) => base.to_owned(),
        (true, false) => rest.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{base}{rest}"),
        (false, false) => format!("{base}.{rest}"),
    }
}

/// Turns a serde message into a problem that names the field and the fix.
/// `base` is the element being decoded; `path` is where serde stopped (for
/// an unknown field, the field itself).
fn explain(base: &str, path: String, msg: &str, ctx: Context) -> Problem {
    if let Some((name, expected)) = split_unknown(msg, "unknown field `") {
        let top_level_of_metric = path == join(base, &name);
        if ctx == Context::Metric
            && top_level_of_metric
            && did_you_mean(&name, expected.iter().map(String::as_str)).is_none()
        {
            return Problem::error(path, format!("unknown metric provider `{name}`"))
                .hint("use one of builtin, prometheus or webhook");
        }
        return unknown(path, "field", &name, &expected);
    }
    if let Some((name, expected)) = split_unknown(msg, "unknown variant `") {
        if ctx == Context::Step && path == base {
            let at = join(&path, &name);
            return unknown(at, "step", &name, &expected);
        }
        return unknown(path, "value", &name, &expected);
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return Problem::error(join(&path, field), "is required but missing");
    }
    if ctx == Context::Step && msg.contains("map with a single key") {
        return Problem::error(path, "a step has exactly one key").hint(
            "write each of setWeight, pause, analysis, setHeaderRoute, setMirror as its own `- ` item",
        );
    }
    let problem = Problem::error(path, msg.to_owned());
    if msg.starts_with("invalid type: boolean") || msg.contains("expected a string") {
        problem.hint("put the value in quotes")
    } else if msg.contains("expected i64") || msg.contains("expected u8") {
        problem.hint("write a whole number")
    } else {
        problem
    }
}

fn unknown(path: String, what: &str, name: &str, expected: &[String]) -> Problem {
    let problem = Problem::error(path, format!("unknown {what} `{name}`"));
    match did_you_mean(name, expected.iter().map(String::as_str)) {
        Some(close) => problem.hint(format!("did you mean `{close}`?")),
        None if expected.is_empty() => problem.hint("this object takes no fields"),
        None => problem.hint(format!("expected one of {}", expected.join(", "))),
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into x and [a, b].
fn split_unknown(msg: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix(prefix)?;
    let (name, tail) = rest.split_once('`')?;
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((name.to_owned(), expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: coalmine.dev/v1alpha1\nkind: Canary\nmetadata: {name: app}\n";

    fn problems(spec: &str) -> Vec<String> {
        match parse_canary(&format!("{HEAD}spec:\n{spec}")) {
            Ok(_) => vec![],
            Err(ps) => ps.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn parses_a_good_file() {
        let c = parse_canary(&format!(
            "{HEAD}spec:\n  upstreams: {{stable: [http://127.0.0.1:1], canary: [http://127.0.0.1:2]}}\n  steps:\n    - setWeight: 5\n    - pause: {{duration: 1m}}\n  analysis:\n    metrics:\n      - {{name: errors, builtin: errors}}\n"
        ))
        .unwrap();
        assert_eq!(c.spec.steps.len(), 2);
        assert_eq!(c.spec.analysis.unwrap().metrics.len(), 1);
    }

    #[test]
    fn reports_every_bad_step_and_metric() {
        let ps = problems(
            "  steps:\n    - setWeigth: 5\n    - pause: {duration: soon}\n    - setWeight: 10\n    - rollback: {}\n  analysis:\n    metrics:\n      - {name: a, datadog: {}}\n      - {name: b, builtin: erors}\n",
        );
        assert_eq!(ps.len(), 5, "{ps:?}");
        assert!(
            ps[0].starts_with(
                "spec.steps[0].setWeigth: unknown step `setWeigth` (did you mean `setWeight`?)"
            ),
            "{}",
            ps[0]
        );
        assert!(
            ps[1].starts_with("spec.steps[1].pause.duration: `soon` is not a duration"),
            "{}",
            ps[1]
        );
        assert!(
            ps[2].starts_with("spec.steps[3].rollback: unknown step"),
            "{}",
            ps[2]
        );
        assert!(
            ps[3].contains("spec.analysis.metrics[0].datadog: unknown metric provider `datadog`"),
            "{}",
            ps[3]
        );
        // serde stops at the first error inside one element; the second metric
        // is still reported because elements are decoded one by one.
        assert!(
            ps[4].contains(
                "spec.analysis.metrics[1].builtin: unknown value `erors` (did you mean `errors`?)"
            ),
            "{ps:?}"
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let ps = problems("  stepz: []\n");
        assert_eq!(
            ps,
            vec!["spec.stepz: unknown field `stepz` (did you mean `steps`?)"]
        );
        let ps = problems("  analysis:\n    metrics:\n      - {builtin: errors}\n");
        assert_eq!(
            ps,
            vec!["spec.analysis.metrics[0].name: is required but missing"]
        );
        let ps = problems("  steps:\n    - {setWeight: 5, pause: {}}\n");
        assert!(
            ps[0].starts_with("spec.steps[0]: a step has exactly one key"),
            "{ps:?}"
        );
    }

    #[test]
    fn wrong_types_get_hints() {
        let ps = problems("  steps:\n    - setWeight: five\n");
        assert!(
            ps[0].starts_with("spec.steps[0].setWeight: invalid type"),
            "{ps:?}"
        );
        assert!(ps[0].ends_with("(write a whole number)"), "{ps:?}");
        let ps = problems(
            "  steps:\n    - setHeaderRoute: {match: [{header: x-canary, value: true}]}\n",
        );
        assert!(
            ps[0].starts_with("spec.steps[0].setHeaderRoute.match[0].value"),
            "{ps:?}"
        );
        assert!(ps[0].ends_with("(put the value in quotes)"), "{ps:?}");
    }

    #[test]
    fn not_yaml_or_not_an_object() {
        assert!(parse_canary("").unwrap_err()[0].message.contains("empty"));
        assert!(
            parse_canary("spec: [unclosed").unwrap_err()[0]
                .message
                .contains("not valid YAML")
        );
        assert!(
            parse_canary("- a\n- b\n").unwrap_err()[0]
                .message
                .contains("Canary object")
        );
    }

    #[test]
    fn json_is_yaml_too() {
        let c = parse_canary(r#"{"apiVersion":"coalmine.dev/v1alpha1","kind":"Canary","metadata":{"name":"x"},"spec":{"steps":[{"setWeight":50}]}}"#).unwrap();
        assert_eq!(c.spec.steps, vec![Step::SetWeight(50)]);
    }
}
