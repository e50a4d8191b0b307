//! Reading a Canary from YAML or JSON text, reporting every structural
//! problem (unknown fields, wrong types) with its path, not just the first.
//!
//! serde stops at the first error, so decoding is repeated: the lists where
//! most mistakes sit, `spec.steps` and `spec.analysis.metrics`, are decoded
//! element by element, and after each error the offending field is left out
//! and the rest decoded again. What remains is a Canary that the semantic
//! checks can still read, so one run of `coalmine validate` names structural
//! and semantic problems together.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::{Problem, did_you_mean};
use crate::spec::{BuiltinMetric, Canary, MetricSpec, PauseStep, Step};

/// The metric providers coalmine reads; the keys of a metric that name one.
pub const METRIC_PROVIDERS: [&str; 3] = ["builtin", "prometheus", "webhook"];

/// [`METRIC_PROVIDERS`] as people read a choice: `builtin, prometheus or
/// webhook`.
pub fn metric_providers_list() -> String {
    match METRIC_PROVIDERS.split_last() {
        Some((last, init)) if !init.is_empty() => format!("{} or {last}", init.join(", ")),
        _ => METRIC_PROVIDERS.join(""),
    }
}

/// How many fields one element may lose before decoding gives up on it.
const MAX_REPAIRS: usize = 64;

/// A Canary decoded as far as its problems allow.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The document with every undecodable part left out; `None` when not
    /// even that could be decoded.
    pub canary: Option<Canary>,
    /// Every structural problem, in document order of discovery.
    pub problems: Vec<Problem>,
    /// Indexes of `spec.steps` elements that could not be decoded at all. A
    /// placeholder holds each such place so later indexes stay right.
    pub broken_steps: BTreeSet<usize>,
    /// Paths of objects left out because a required field was missing or
    /// undecodable: checks of the objects around them would only report
    /// the consequence.
    pub left_out: Vec<String>,
}

/// Parses a Canary document. On failure, every structural problem found.
pub fn parse_canary(text: &str) -> Result<Canary, Vec<Problem>> {
    let parsed = parse(text);
    match parsed.canary {
        Some(canary) if parsed.problems.is_empty() => Ok(canary),
        _ => Err(parsed.problems),
    }
}

/// Parses a Canary document as far as it can be decoded: the problems, and
/// the Canary without the parts they concern.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    if text.trim().is_empty() {
        out.problems
            .push(Problem::error("", "the file is empty").hint(
                "write a Canary: apiVersion: coalmine.dev/v1alpha1, kind: Canary, metadata, spec",
            ));
        return out;
    }
    let mut root: Value = match serde_saphyr::from_str(text) {
        Ok(root) => root,
        Err(e) => {
            let msg = shorten(&format!("not valid YAML or JSON: {e}"));
            out.problems.push(Problem::error("", msg));
            return out;
        }
    };
    if !root.is_object() {
        out.problems.push(
            Problem::error("", "expected a Canary object at the top")
                .hint("write a map with apiVersion, kind, metadata and spec"),
        );
        return out;
    }
    let steps = take_list(&mut root, &["spec", "steps"]).map(|list| {
        let (steps, broken) = decode_each(list, "spec.steps", Context::Step, &mut out, || {
            Step::Pause(PauseStep::default())
        });
        out.broken_steps = broken;
        steps
    });
    let metrics = take_list(&mut root, &["spec", "analysis", "metrics"]).map(|list| {
        decode_each(
            list,
            "spec.analysis.metrics",
            Context::Metric,
            &mut out,
            placeholder_metric,
        )
        .0
    });
    out.canary = decode::<Canary>(root, "", Context::Other, &mut out).map(|mut canary| {
        if let Some(steps) = steps {
            canary.spec.steps = steps;
        }
        if let (Some(metrics), Some(analysis)) = (metrics, canary.spec.analysis.as_mut()) {
            analysis.metrics = metrics;
        }
        canary
    });
    out
}

/// Stands in for a metric that could not be decoded; its problems are
/// already reported, so the checks' findings about it are not shown.
fn placeholder_metric() -> MetricSpec {
    MetricSpec {
        name: String::new(),
        builtin: Some(BuiltinMetric::Errors),
        prometheus: None,
        webhook: None,
        max_ratio: None,
        slower_than: None,
        threshold: None,
        failure_limit: None,
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

/// Decodes each element; an element that cannot be decoded at all is
/// replaced by `placeholder()` and its index returned.
fn decode_each<T: DeserializeOwned>(
    items: Vec<Value>,
    base: &str,
    ctx: Context,
    out: &mut Parsed,
    placeholder: impl Fn() -> T,
) -> (Vec<T>, BTreeSet<usize>) {
    let mut broken = BTreeSet::new();
    let list = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            decode(v, &format!("{base}[{i}]"), ctx, out).unwrap_or_else(|| {
                broken.insert(i);
                placeholder()
            })
        })
        .collect();
    (list, broken)
}

/// One step of a path inside a JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Index(usize),
    Name(String),
}

/// Decodes `value`, leaving out each field serde stops at (and reporting
/// it) until the rest decodes. `None` when the value itself is unusable.
fn decode<T: DeserializeOwned>(
    mut value: Value,
    base: &str,
    ctx: Context,
    out: &mut Parsed,
) -> Option<T> {
    let mut removed: Vec<Vec<Key>> = Vec::new();
    for _ in 0..MAX_REPAIRS {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let keys: Option<Vec<Key>> = error
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Key::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Key::Name(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Key::Name(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = error.path().to_string();
        let path = join(base, if inner == "." { "" } else { &inner });
        let msg = error.into_inner().to_string();
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let keys = keys.unwrap_or_default();
        // An error that an earlier removal caused is not the user's: a
        // required field left out, or the object around it now empty.
        let caused = match &missing {
            Some(field) => {
                let mut at = keys.clone();
                at.push(Key::Name(field.clone()));
                removed.contains(&at)
            }
            None => removed
                .iter()
                .any(|r| r.len() > keys.len() && r.starts_with(&keys)),
        };
        if !caused {
            out.problems.push(explain(base, path.clone(), &msg, ctx));
        }
        if keys.is_empty() || !remove(&mut value, &keys) {
            return None;
        }
        if missing.is_some() || caused {
            out.left_out.push(path);
        }
        removed.push(keys);
    }
    None
}

/// Removes the value at `keys`; false when there is none.
fn remove(value: &mut Value, keys: &[Key]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut node = value;
    for key in parents {
        let next = match (key, node) {
            (Key::Name(k), Value::Object(map)) => map.get_mut(k),
            (Key::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node) {
        (Key::Name(k), Value::Object(map)) => map.remove(k).is_some(),
        (Key::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// Cuts a message that quotes a huge value down to a readable length.
fn shorten(msg: &str) -> String {
    const MAX: usize = 300;
    if msg.len() <= MAX {
        return msg.to_owned();
    }
    let mut end = MAX;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &msg[..end], msg.len())
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
                .hint(format!("use one of {}", metric_providers_list()));
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
    let problem = Problem::error(path, shorten(msg));
    if msg.starts_with("invalid type: boolean") || msg.contains("expected a string") {
        problem.hint("put the value in quotes")
    } else if msg.contains("expected i64") || msg.contains("expected u8") {
        problem.hint("write a whole number")
    } else {
        problem
    }
}

fn unknown(path: String, what: &str, name: &str, expected: &[String]) -> Problem {
    let problem = Problem::error(path, format!("unknown {what} `{}`", shorten(name)));
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
    fn decoding_goes_on_past_each_bad_field() {
        let parsed = parse(&format!(
            "{HEAD}spec:\n  stepz: []\n  progressDeadline: soon\n  steps:\n    - setWeight: 5\n    - bogus: 1\n    - pause: {{duration: 1m, extra: 2}}\n"
        ));
        let paths: Vec<&str> = parsed.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.steps[1].bogus",
                "spec.steps[2].pause.extra",
                "spec.progressDeadline",
                "spec.stepz"
            ]
        );
        let canary = parsed.canary.expect("the rest decodes");
        // The broken step keeps its place, so later indexes stay right.
        assert_eq!(canary.spec.steps.len(), 3);
        assert_eq!(parsed.broken_steps, BTreeSet::from([1]));
        assert_eq!(
            canary.spec.steps[2],
            Step::Pause(PauseStep {
                duration: Some(crate::Duration::from_secs(60))
            })
        );
        assert_eq!(canary.spec.progress_deadline, None);
    }

    #[test]
    fn an_object_missing_a_required_field_is_left_out_once() {
        let parsed = parse(&format!(
            "{HEAD}spec:\n  upstreams: {{stable: [http://a], canray: [http://b]}}\n  service: {{targetPort: 80}}\n"
        ));
        let shown: Vec<String> = parsed.problems.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|p| p.starts_with("spec.upstreams.canray: unknown field")),
            "{shown:?}"
        );
        assert!(parsed.canary.is_some(), "{shown:?}");
        assert!(
            parsed.left_out.iter().all(|p| p.starts_with("spec.")),
            "{:?}",
            parsed.left_out
        );
    }

    #[test]
    fn huge_values_are_not_echoed_whole() {
        let big = "x".repeat(1_000_000);
        let ps = problems(&format!("  steps:\n    - setWeight: {big}\n"));
        assert_eq!(ps.len(), 1);
        assert!(ps[0].len() < 1_000, "{} bytes", ps[0].len());
        let ps = problems(&format!("  {big}: 1\n"));
        assert!(ps[0].len() < 1_000, "{} bytes", ps[0].len());
    }

    #[test]
    fn json_is_yaml_too() {
        let c = parse_canary(r#"{"apiVersion":"coalmine.dev/v1alpha1","kind":"Canary","metadata":{"name":"x"},"spec":{"steps":[{"setWeight":50}]}}"#).unwrap();
        assert_eq!(c.spec.steps, vec![Step::SetWeight(50)]);
    }
}
