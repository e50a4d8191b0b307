//! The CRD schema against the Rust types and the examples: structural,
//! strict where the API server can be, and accepting what users write.
//!
//! [`check`] is a small validator for the OpenAPI subset the schema uses
//! (types, nullable, enums, ranges, lengths, patterns, item and property
//! counts, required fields, unknown fields, int-or-string, list-map keys).
//! CEL rules are evaluated by the `cel` crate, node by node as the API
//! server does, on the examples and on the mistakes each rule is for; the
//! API server's CEL has Kubernetes extensions the rules do not use.

use serde_json::{Value, json};

use super::*;

/// Everything wrong with `value` under `schema`; empty when it is valid.
fn check(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check_at(schema, value, "", &mut errors);
    errors
}

fn check_at(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "." } else { path };
    let mut error = |msg: String| errors.push(format!("{at}: {msg}"));
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            error("is null".into());
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_string()) {
            error(format!("{value} is neither an integer nor a string"));
        }
        return;
    }
    let kind = schema.get("type").and_then(Value::as_str);
    let type_ok = match kind {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        error(format!("{value} is not of type {}", kind.unwrap_or("?")));
        return;
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        error(format!(
            "{value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let Some(x) = value.as_f64() {
        let exclusive = schema.get("exclusiveMinimum") == Some(&Value::Bool(true));
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && (x < min || (exclusive && x == min))
        {
            error(format!("{x} is below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && x > max
        {
            error(format!("{x} is above the maximum {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            error(format!("`{s}` is too short"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            error(format!("`{s}` is too long"));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            let re = regex::Regex::new(p).expect("schema patterns compile");
            if !re.is_match(s) {
                error(format!("`{s}` does not match {p}"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        let n = items.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            error(format!("has {n} items, fewer than allowed"));
        }
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            error(format!("has {n} items, more than allowed"));
        }
        if schema.get("x-kubernetes-list-type") == Some(&json!("map")) {
            let keys = schema["x-kubernetes-list-map-keys"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut seen = Vec::new();
            for item in items {
                let key: Vec<Value> = keys
                    .iter()
                    .map(|k| {
                        item.get(k.as_str().unwrap_or_default())
                            .cloned()
                            .unwrap_or(Value::Null)
                    })
                    .collect();
                if seen.contains(&key) {
                    error(format!("duplicate key {key:?}"));
                }
                seen.push(key);
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check_at(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
        return;
    }
    if let Some(obj) = value.as_object() {
        let n = obj.len() as u64;
        if schema
            .get("minProperties")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            error(format!("has {n} fields, fewer than allowed"));
        }
        if schema
            .get("maxProperties")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            error(format!("has {n} fields, more than allowed"));
        }
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = req.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                error(format!("`{name}` is required"));
            }
        }
        let open = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        let props = schema.get("properties").and_then(Value::as_object);
        let extra = schema.get("additionalProperties").filter(|a| a.is_object());
        for (k, v) in obj {
            let child = format!("{path}.{k}");
            if path.is_empty() && k == "metadata" {
                // The API server checks object metadata itself.
                continue;
            }
            match (props.and_then(|p| p.get(k)), extra) {
                (Some(s), _) | (None, Some(s)) => check_at(s, v, &child, errors),
                // The API server prunes unknown fields; for the tests, a
                // field the schema does not know is a mistake in it.
                (None, None) if !open => {
                    errors.push(format!("{child}: unknown field"));
                }
                (None, None) => {}
            }
        }
    }
}

fn yaml_file(relative: &str) -> Value {
    let path = format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the example file is readable");
    serde_saphyr::from_str(&text).expect("the example file is YAML")
}

fn examples() -> Vec<(String, Value)> {
    let dir = format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for sub in ["kubernetes", "."] {
        for entry in std::fs::read_dir(format!("{dir}/{sub}")).expect("examples/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let rel = path
                    .strip_prefix(format!("{}/../../", env!("CARGO_MANIFEST_DIR")))
                    .expect("under the workspace")
                    .display()
                    .to_string();
                files.push((rel.clone(), yaml_file(&rel)));
            }
        }
    }
    assert!(files.len() >= 4, "found only {files:?}");
    files
}

fn replicas_example() -> Value {
    yaml_file("examples/kubernetes/replicas.yaml")
}

#[test]
fn the_schema_is_structural() {
    let problems = structural_problems(&schema());
    assert!(
        problems.is_empty(),
        "not structural:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_structural_check_finds_what_kubernetes_refuses() {
    let bad = json!({
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "b": {"$ref": "#/$defs/B"},
            "c": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "d": {"type": "string", "properties": {"x": {"type": "string"}}},
            "e": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "f": {"type": "array"},
            "g": {"type": ["string", "null"]},
        },
    });
    let problems = structural_problems(&bad);
    for needle in [
        ".a: has no type",
        ".b: has a $ref",
        ".c: has anyOf",
        ".d: has properties but is not an object",
        ".e: has both properties and additionalProperties",
        ".f: an array without items",
        ".g: has no type",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(needle)),
            "missed `{needle}` in {problems:?}"
        );
    }
}

#[test]
fn the_schema_has_no_json_schema_leftovers() {
    let text = schema().to_string();
    for leftover in [
        "\"$ref\"",
        "\"$defs\"",
        "\"oneOf\"",
        "\"anyOf\"",
        "\"const\"",
        "\"default\"",
        "\"title\"",
        "\"uint",
        "\"additionalProperties\":false",
        "\"additionalProperties\":true",
        VALUES_NOTE,
    ] {
        assert!(!text.contains(leftover), "the schema contains {leftover}");
    }
}

#[test]
fn every_example_validates() {
    let schema = schema();
    for (name, doc) in examples() {
        let errors = check(&schema, &doc);
        assert!(errors.is_empty(), "{name}:\n{}", errors.join("\n"));
    }
}

#[test]
fn a_status_written_by_coalmine_validates() {
    use crate::routes::HeaderMatch;
    use crate::status::*;
    let status = CanaryStatus {
        phase: Phase::Paused,
        step: 3,
        weight: crate::Percent::new(25).expect("a percent"),
        mirror_percent: crate::Percent::new(20).expect("a percent"),
        header_routes: vec![HeaderMatch {
            header: Some("x-canary".into()),
            value: Some("always".into()),
            ..HeaderMatch::default()
        }],
        stable_revision: Some("5d8f".into()),
        canary_revision: Some("7c1a".into()),
        rollout_started_at: Some(crate::Time::from_unix_millis(1_795_420_800_000)),
        pause: Some(PauseStatus {
            reason: PauseReason::Inconclusive,
            since: crate::Time::from_unix_millis(1_795_420_800_000),
        }),
        rollback: Some(RollbackStatus {
            reason: RollbackReason::AnalysisFailed,
            message: "errors 2.2x".into(),
            at: crate::Time::from_unix_millis(1_795_420_800_000),
        }),
        analysis: Some(AnalysisStatus {
            verdict: Verdict::Fail,
            evaluated_at: None,
            metrics: vec![MetricStatus {
                name: "slow".into(),
                verdict: Verdict::NoData,
                ratio_interval: Some([1.3, 4.1]),
                canary_requests: Some(3700),
                quantiles: vec![QuantileStatus {
                    quantile: 0.99,
                    canary: 0.3,
                    stable: 0.2,
                    shift_interval: [Some(0.05), None],
                }],
                ..MetricStatus::default()
            }],
        }),
        conditions: Conditions(vec![Condition {
            type_: "Progressing".into(),
            status: ConditionStatus::True,
            reason: "StepStarted".into(),
            message: "step 3".into(),
            last_transition_time: crate::Time::from_unix_millis(0),
        }]),
        message: "step 3/8".into(),
        observed_generation: Some(2),
        replicas: Some(11),
        selector: Some("app=myapp".into()),
        stable_template: serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "myapp", "coalmine.dev/track": "stable"},
                         "annotations": {"coalmine.dev/revision": "5d8f"}},
            "spec": {"containers": [{"name": "myapp", "image": "myapp:1.0"}]}
        }))
        .expect("a template"),
        ..CanaryStatus::default()
    };
    let mut doc = replicas_example();
    doc["status"] = serde_json::to_value(&status).expect("a status serializes");
    let errors = check(&schema(), &doc);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Applies `edit` to the replicas example and returns the schema's errors.
fn errors_after(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut doc = replicas_example();
    edit(&mut doc);
    check(&schema(), &doc)
}

fn assert_rejected(what: &str, expected: &str, edit: impl FnOnce(&mut Value)) {
    let errors = errors_after(edit);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "{what}: expected an error with `{expected}`, got {errors:?}"
    );
}

#[test]
fn out_of_range_values_are_rejected() {
    assert_rejected(
        "weight 150",
        ".spec.steps[0].setWeight: 150 is above",
        |d| {
            d["spec"]["steps"][0] = json!({"setWeight": 150});
        },
    );
    assert_rejected("weight -1", ".spec.steps[0].setWeight: -1 is below", |d| {
        d["spec"]["steps"][0] = json!({"setWeight": -1});
    });
    assert_rejected(
        "mirror 101",
        ".spec.steps[1].setMirror.percent: 101 is above",
        |d| {
            d["spec"]["steps"][1] = json!({"setMirror": {"percent": 101}});
        },
    );
    assert_rejected("replicas -1", ".spec.replicas: -1 is below", |d| {
        d["spec"]["replicas"] = json!(-1);
    });
    assert_rejected("port 0", ".spec.service.port: 0 is below", |d| {
        d["spec"]["service"]["port"] = json!(0);
    });
    assert_rejected("alpha 0", ".spec.analysis.alpha: 0 is below", |d| {
        d["spec"]["analysis"]["alpha"] = json!(0.0);
    });
    assert_rejected("alpha 0.9", ".spec.analysis.alpha: 0.9 is above", |d| {
        d["spec"]["analysis"]["alpha"] = json!(0.9);
    });
    assert_rejected("status weight", ".status.weight: 101 is above", |d| {
        d["status"] = json!({"phase": "Progressing", "step": 0, "weight": 101});
    });
    assert_rejected("a weight as text", "is not of type integer", |d| {
        d["spec"]["steps"][0] = json!({"setWeight": "10"});
    });
}

#[test]
fn unknown_enum_values_are_rejected() {
    assert_rejected(
        "onInconclusive",
        ".spec.onInconclusive: \"wait\" is not one of",
        |d| {
            d["spec"]["onInconclusive"] = json!("wait");
        },
    );
    assert_rejected("builtin", "\"erors\" is not one of", |d| {
        d["spec"]["analysis"]["metrics"][0] = json!({"name": "e", "builtin": "erors"});
    });
    assert_rejected("method", "\"PUT\" is not one of", |d| {
        d["spec"]["analysis"]["metrics"][0]["webhook"] =
            json!({"url": "http://x", "method": "PUT"});
    });
    assert_rejected("phase", ".status.phase: \"Running\" is not one of", |d| {
        d["status"] = json!({"phase": "Running", "step": 0, "weight": 0});
    });
    assert_rejected("verdict", "\"Maybe\" is not one of", |d| {
        d["status"] =
            json!({"phase": "Idle", "step": 0, "weight": 0, "analysis": {"verdict": "Maybe"}});
    });
    assert_rejected("operator", "\"Has\" is not one of", |d| {
        d["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "Has"}]});
    });
}

#[test]
fn other_structural_mistakes_are_rejected() {
    assert_rejected(
        "two keys in a step",
        "has 2 fields, more than allowed",
        |d| {
            d["spec"]["steps"][0] = json!({"setWeight": 10, "pause": {}});
        },
    );
    assert_rejected("an empty step", "has 0 fields, fewer than allowed", |d| {
        d["spec"]["steps"][0] = json!({});
    });
    assert_rejected(
        "a misspelt step",
        ".spec.steps[0].setWeigth: unknown field",
        |d| {
            d["spec"]["steps"][0] = json!({"setWeigth": 10});
        },
    );
    assert_rejected("no steps", "has 0 items", |d| {
        d["spec"]["steps"] = json!([]);
    });
    assert_rejected("a bad duration", "does not match", |d| {
        d["spec"]["progressDeadline"] = json!("10 minutes");
    });
    assert_rejected(
        "an empty duration",
        ".spec.progressDeadline: `` is too short",
        |d| {
            d["spec"]["progressDeadline"] = json!("");
        },
    );
    assert_rejected("a duplicate metric", "duplicate key", |d| {
        let m = d["spec"]["analysis"]["metrics"][0].clone();
        d["spec"]["analysis"]["metrics"] = json!([m.clone(), m]);
    });
    assert_rejected("a null weight", "is null", |d| {
        d["spec"]["steps"][0] = json!({"setWeight": null});
    });
    assert_rejected("no spec", "`spec` is required", |d| {
        d.as_object_mut().expect("a map").remove("spec");
    });
    assert_rejected(
        "a named port as a number",
        "neither an integer nor a string",
        |d| {
            d["spec"]["service"]["targetPort"] = json!(8080.5);
        },
    );
}

#[test]
fn what_the_types_accept_the_schema_accepts() {
    // Optional fields may be written as null: serde reads them as absent.
    let errors = errors_after(|d| {
        d["spec"]["progressDeadline"] = Value::Null;
        d["spec"]["service"]["targetPort"] = json!("http");
        d["spec"]["steps"][1] = json!({"pause": {}});
        d["spec"]["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "myapp"}});
    });
    assert!(errors.is_empty(), "{errors:?}");
    let errors = errors_after(|d| {
        d["spec"]["trafficRouting"] = json!({"proxy": {}});
        d["spec"]["sessionAffinity"] = json!({"cookie": "coalmine-track", "maxAge": "1h"});
    });
    assert!(errors.is_empty(), "{errors:?}");
}

/// Every `self.a.b` and `has(x.a)` in a CEL rule names a field of the node
/// the rule sits on, so a renamed field cannot leave a rule behind that the
/// API server would refuse (it compiles the rules against the schema).
#[test]
fn cel_rules_name_fields_that_exist() {
    let schema = schema();
    let mut found = 0;
    let mut stack = vec![(schema.clone(), String::new())];
    let ident = regex::Regex::new(r"\b(self|s)((?:\.[A-Za-z_]+)+)(\(?)").expect("a regex");
    while let Some((node, path)) = stack.pop() {
        for r in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            found += 1;
            let text = r["rule"].as_str().expect("a rule");
            assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
            for cap in ident.captures_iter(text) {
                // `s` is a step of `self.steps`.
                let base = if &cap[1] == "s" {
                    at_clone(&node, "steps[]")
                } else {
                    node.clone()
                };
                let mut n = base;
                let mut fields: Vec<&str> = cap[2].split('.').filter(|f| !f.is_empty()).collect();
                if !cap[3].is_empty() {
                    fields.pop(); // a method such as `exists(` or `size(`
                }
                // The API server checks metadata itself; the schema has
                // no fields for it.
                if fields.first() == Some(&"metadata") {
                    continue;
                }
                for field in fields {
                    n = n
                        .get("properties")
                        .and_then(|p| p.get(field))
                        .cloned()
                        .unwrap_or_else(|| {
                            panic!("{path}: rule `{text}` names `{field}`, which is not a field")
                        });
                }
            }
        }
        if let Some(Value::Object(props)) = node.get("properties") {
            for (k, v) in props {
                stack.push((v.clone(), format!("{path}.{k}")));
            }
        }
        if let Some(items) = node.get("items") {
            stack.push((items.clone(), format!("{path}[]")));
        }
    }
    assert!(found >= 20, "only {found} rules");
}

fn at_clone(node: &Value, path: &str) -> Value {
    let mut n = node.clone();
    at(&mut n, path).clone()
}

#[test]
fn printer_columns_and_subresources_point_at_fields() {
    let crd = definition();
    let version = &crd["spec"]["versions"][0];
    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        columns,
        ["Phase", "Step", "Weight", "Verdict", "Error", "Age"]
    );
    for c in version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
    {
        let path = c["jsonPath"].as_str().expect("a path");
        if path.starts_with(".metadata") {
            continue;
        }
        // A condition's field, picked by its type.
        let path = path.replace("[?(@.type==\"Applied\")]", "[]");
        let path = path.as_str();
        let node = at(&mut schema, path);
        assert_eq!(node["type"], c["type"], "column {path}");
    }
    let scale = &version["subresources"]["scale"];
    assert_eq!(
        at(
            &mut schema,
            scale["specReplicasPath"].as_str().expect("path")
        )["type"],
        "integer"
    );
    assert_eq!(
        at(
            &mut schema,
            scale["statusReplicasPath"].as_str().expect("path")
        )["type"],
        "integer"
    );
    assert_eq!(
        at(
            &mut schema,
            scale["labelSelectorPath"].as_str().expect("path")
        )["type"],
        "string"
    );
    assert_eq!(crd["metadata"]["name"], format!("{PLURAL}.{GROUP}"));
    assert_eq!(crate::spec::API_VERSION, format!("{GROUP}/{VERSION}"));
}

#[test]
fn enum_values_keep_their_meaning_in_the_description() {
    let mut s = schema();
    let phase = at(&mut s, "status.phase");
    assert_eq!(phase["enum"].as_array().map(Vec::len), Some(8));
    let d = phase["description"].as_str().expect("a description");
    assert!(d.starts_with("Where the rollout is."), "{d}");
    assert!(d.contains("`RolledBack`: "), "{d}");
    let on = at(&mut s, "spec.onInconclusive");
    assert_eq!(on["enum"], json!(["pause", "rollback", "promote"]));
    assert_eq!(on["nullable"], json!(true));
}

#[test]
fn the_yaml_reads_back_as_the_definition() {
    let text = yaml();
    assert!(text.starts_with("# Generated by `coalmine crd`"));
    let back: Value = serde_saphyr::from_str(&text).expect("the YAML parses");
    assert_eq!(back, definition());
}

/// Every CEL rule evaluated where the API server would evaluate it, with
/// `self` the node's value: the messages of the rules that are false, and
/// any rule that does not give a boolean.
fn cel_failures(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    cel_walk(&schema(), doc, "", &mut out);
    out
}

fn cel_walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    let at = if path.is_empty() { "." } else { path };
    for r in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rule = r["rule"].as_str().expect("a rule");
        let program = cel::Program::compile(rule).unwrap_or_else(|e| panic!("`{rule}`: {e}"));
        let mut context = cel::Context::default();
        context
            .add_variable("self", value.clone())
            .expect("a JSON value is a CEL value");
        // Transition rules: as on an update that leaves the node as it is
        // (the API server skips them on create).
        context
            .add_variable("oldSelf", value.clone())
            .expect("a JSON value is a CEL value");
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => out.push(format!(
                "{at}: {}",
                r["message"].as_str().unwrap_or_default()
            )),
            other => out.push(format!("{at}: `{rule}` gave {other:?}")),
        }
    }
    if let (Some(props), Some(obj)) = (schema.get("properties"), value.as_object()) {
        for (k, v) in obj {
            if let Some(s) = props.get(k) {
                cel_walk(s, v, &format!("{path}.{k}"), out);
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            cel_walk(items, v, &format!("{path}[{i}]"), out);
        }
    }
}

#[test]
fn cel_rules_pass_on_every_example_and_a_status() {
    for (name, doc) in examples() {
        let failures = cel_failures(&doc);
        assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
    }
    let mut doc = replicas_example();
    doc["status"] = json!({
        "phase": "Progressing", "step": 1, "weight": 10,
        "headerRoutes": [{"header": "x-canary", "value": "always"}],
    });
    let failures = cel_failures(&doc);
    assert!(failures.is_empty(), "{failures:?}");
}

/// The replicas example with the router and metric fields a case needs.
fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut d = replicas_example();
    edit(&mut d);
    d
}

#[test]
fn cel_rules_reject_what_they_are_for() {
    let metric = |d: &mut Value, m: Value| {
        d["spec"]["analysis"]["metrics"]
            .as_array_mut()
            .expect("metrics")
            .push(m);
    };
    let step = |d: &mut Value, s: Value| {
        d["spec"]["steps"].as_array_mut().expect("steps").push(s);
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "both targets",
            with(|d| {
                d["spec"]["upstreams"] = json!({"stable": ["http://a"], "canary": ["http://b"]})
            }),
            ".spec: set exactly one of upstreams",
        ),
        (
            "no target",
            with(|d| {
                d["spec"].as_object_mut().expect("spec").remove("template");
            }),
            ".spec: set exactly one of upstreams",
        ),
        (
            "no traffic",
            with(|d| d["spec"]["steps"] = json!([{"setWeight": 0}, {"pause": {}}])),
            ".spec: no step sends the canary any traffic",
        ),
        (
            "two routers",
            with(|d| d["spec"]["trafficRouting"] = json!({"replicas": {}, "proxy": {}})),
            ".spec.trafficRouting: set at most one router",
        ),
        (
            "header route, replicas router",
            with(|d| {
                step(
                    d,
                    json!({"setHeaderRoute": {"match": [{"header": "x", "value": "y"}]}}),
                )
            }),
            ".spec: setHeaderRoute needs",
        ),
        (
            "header route, default router",
            with(|d| {
                d["spec"]
                    .as_object_mut()
                    .expect("spec")
                    .remove("trafficRouting");
                step(d, json!({"setHeaderRoute": {"match": []}}));
            }),
            ".spec: setHeaderRoute needs",
        ),
        (
            "mirror, nginx",
            with(|d| {
                d["spec"]["trafficRouting"] = json!({"nginx": {"ingress": "x"}});
                step(d, json!({"setMirror": {"percent": 5}}));
            }),
            ".spec: setMirror needs",
        ),
        (
            "sessions, replicas router",
            with(|d| d["spec"]["sessionAffinity"] = json!({"cookie": "c"})),
            ".spec: sessionAffinity needs",
        ),
        (
            "pause 0m0s",
            with(|d| step(d, json!({"pause": {"duration": "0m0s"}}))),
            ".spec.steps[4].pause.duration: must be longer than 0s",
        ),
        (
            "deadline 0",
            with(|d| d["spec"]["progressDeadline"] = json!("0")),
            ".spec.progressDeadline: must be longer than 0s",
        ),
        (
            "interval 500ms",
            with(|d| d["spec"]["analysis"]["interval"] = json!("500ms")),
            ".spec.analysis.interval: the analysis interval must be at least 1s",
        ),
        (
            "two providers",
            with(|d| d["spec"]["analysis"]["metrics"][0]["builtin"] = json!("errors")),
            ".spec.analysis.metrics[0]: a metric needs exactly one provider",
        ),
        (
            "no provider",
            with(|d| d["spec"]["analysis"]["metrics"][0] = json!({"name": "x"})),
            "a metric needs exactly one provider",
        ),
        (
            "failureLimit, comparison",
            with(|d| d["spec"]["analysis"]["metrics"][0]["failureLimit"] = json!(2)),
            "failureLimit only applies to threshold metrics",
        ),
        (
            "latency, no slowerThan",
            with(|d| metric(d, json!({"name": "s", "builtin": "latency"}))),
            "builtin: latency needs slowerThan",
        ),
        (
            "errors, slowerThan",
            with(|d| {
                metric(
                    d,
                    json!({"name": "s", "builtin": "errors", "slowerThan": "1s"}),
                )
            }),
            "builtin: latency needs slowerThan",
        ),
        (
            "prometheus threshold with total",
            with(|d| d["spec"]["analysis"]["metrics"][0]["threshold"] = json!({"max": 1})),
            "prometheus: a comparison needs total and bad",
        ),
        (
            "empty threshold",
            with(|d| {
                metric(
                    d,
                    json!({"name": "t", "prometheus": {"address": "http://p", "query": "q"}, "threshold": {}}),
                )
            }),
            ".threshold: a threshold needs min, max or both",
        ),
        (
            "min above max",
            with(|d| {
                metric(
                    d,
                    json!({"name": "t", "prometheus": {"address": "http://p", "query": "q"}, "threshold": {"min": 2, "max": 1}}),
                )
            }),
            "threshold min must not be above max",
        ),
        (
            "maxRatio, threshold",
            with(|d| {
                metric(
                    d,
                    json!({"name": "t", "prometheus": {"address": "http://p", "query": "q"}, "threshold": {"max": 1}, "maxRatio": 2}),
                )
            }),
            "maxRatio is for comparisons",
        ),
        (
            "webhook without bad",
            with(|d| {
                metric(
                    d,
                    json!({"name": "w", "webhook": {"url": "http://w", "total": "$.t"}}),
                )
            }),
            "webhook: a comparison needs total and bad",
        ),
        (
            "header and cookie",
            with(|d| {
                d["spec"]["trafficRouting"] = json!({"proxy": {}});
                step(
                    d,
                    json!({"setHeaderRoute": {"match": [{"header": "x", "cookie": "y", "value": "z"}]}}),
                );
            }),
            ".match[0]: a match needs exactly one of header and cookie",
        ),
        (
            "no value",
            with(|d| {
                d["spec"]["trafficRouting"] = json!({"proxy": {}});
                step(d, json!({"setHeaderRoute": {"match": [{"header": "x"}]}}));
            }),
            "a match needs exactly one of value and regex",
        ),
        (
            "targetPort 0",
            with(|d| d["spec"]["service"]["targetPort"] = json!(0)),
            ".spec.service.targetPort: targetPort is a port number",
        ),
        (
            "targetPort empty",
            with(|d| d["spec"]["service"]["targetPort"] = json!("")),
            ".spec.service.targetPort: targetPort is a port number",
        ),
        (
            "a long name",
            with(|d| d["metadata"]["name"] = json!("x".repeat(54))),
            ".: metadata.name must have at most 53 characters",
        ),
    ];
    for (what, doc, expected) in cases {
        let failures = cel_failures(&doc);
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with(expected) || f.contains(expected)),
            "{what}: expected `{expected}`, got {failures:?}"
        );
        assert!(
            failures.iter().all(|f| !f.contains("` gave ")),
            "{what}: a rule did not give a boolean: {failures:?}"
        );
    }
}

#[test]
fn cel_rules_accept_the_good_variants() {
    let cases = [
        (
            "a named targetPort",
            with(|d| d["spec"]["service"]["targetPort"] = json!("http")),
        ),
        (
            "a cookie route with the proxy",
            with(|d| {
                d["spec"]["trafficRouting"] = json!({"proxy": {}});
                d["spec"]["steps"][1] =
                    json!({"setHeaderRoute": {"match": [{"cookie": "beta", "regex": "^y"}]}});
            }),
        ),
        (
            "a webhook threshold",
            with(
                |d| d["spec"]["analysis"]["metrics"][0] = json!({"name": "w", "webhook": {"url": "http://w", "value": "$.v"}, "threshold": {"min": 0}, "failureLimit": 3}),
            ),
        ),
        (
            "builtin latency",
            with(|d| {
                d["spec"]["analysis"]["metrics"][0] =
                    json!({"name": "s", "builtin": "latency", "slowerThan": "300ms"})
            }),
        ),
        (
            "a mirror with istio",
            with(|d| {
                d["spec"]["trafficRouting"] = json!({"istio": {"virtualService": "v"}});
                d["spec"]["steps"][1] = json!({"setMirror": {"percent": 20}});
            }),
        ),
        (
            "sessions with the proxy",
            with(|d| {
                d["spec"]["trafficRouting"] = json!({"proxy": {}});
                d["spec"]["sessionAffinity"] = json!({"cookie": "c", "maxAge": "1h30m"});
            }),
        ),
    ];
    for (what, doc) in cases {
        let failures = cel_failures(&doc);
        assert!(failures.is_empty(), "{what}: {failures:?}");
    }
}

/// Every router × every capability of the spec: `coalmine validate` and
/// the CRD's generated rules refuse exactly what the capability table says
/// the router cannot do, and accept the rest.
#[test]
fn validate_and_the_cel_rules_agree_with_the_capability_table() {
    use crate::capability::{Capability, RouterKind};
    for router in RouterKind::ALL {
        for c in Capability::OF_THE_SPEC {
            let doc = with(|d| {
                let settings = match router {
                    RouterKind::Replicas | RouterKind::Proxy => json!({}),
                    RouterKind::GatewayApi => json!({"httpRoute": "myapp"}),
                    RouterKind::Nginx => json!({"ingress": "myapp"}),
                    RouterKind::Istio => json!({"virtualService": "myapp"}),
                };
                d["spec"]["trafficRouting"] = json!({router.as_str(): settings});
                let steps = d["spec"]["steps"].as_array_mut().expect("steps");
                match c {
                    Capability::HeaderRoutes => steps.insert(
                        1,
                        json!({"setHeaderRoute": {"match": [{"header": "x-canary", "value": "always"}]}}),
                    ),
                    Capability::Mirror => steps.insert(1, json!({"setMirror": {"percent": 10}})),
                    _ => d["spec"]["sessionAffinity"] = json!({"cookie": "coalmine-track"}),
                }
            });
            let can = router.can(c);
            let what = format!("{} × {c:?} (table: {can})", router.as_str());
            let cel = cel_failures(&doc);
            let cel_refuses = cel
                .iter()
                .any(|f| f.contains(&format!("{} needs", c.field())));
            assert_eq!(cel_refuses, !can, "{what}: CEL says {cel:?}");
            assert!(
                cel.iter().all(|f| f.contains(" needs the ")),
                "{what}: other CEL failures {cel:?}"
            );
            let text = serde_json::to_string(&doc).expect("JSON");
            let problems = match crate::validate::load(&text) {
                Ok(_) => Vec::new(),
                Err(problems) => problems,
            };
            let verb = format!("router cannot {}", c.verb());
            let validate_refuses = problems.iter().any(|p| p.message.contains(&verb));
            assert_eq!(validate_refuses, !can, "{what}: validate says {problems:?}");
            assert!(
                problems.iter().all(|p| p.message.contains(&verb)),
                "{what}: other problems {problems:?}"
            );
        }
    }
}
