//! The CRD schema against the Rust types and the examples: structural,
//! strict where the API server can be, and accepting what users write.
//!
//! [`check`] is a small validator for the OpenAPI subset the schema uses
//! (types, nullable, enums, ranges, lengths, patterns, item and property
//! counts, required fields, unknown fields, int-or-string, list-map keys).
//! CEL rules are not evaluated here: their text is checked to name fields
//! the schema has.

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
        weight: 25,
        mirror_percent: 20,
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
        conditions: vec![Condition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: "StepStarted".into(),
            message: "step 3".into(),
            last_transition_time: crate::Time::from_unix_millis(0),
        }],
        message: "step 3/8".into(),
        observed_generation: Some(2),
        replicas: Some(11),
        selector: Some("app=myapp".into()),
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
    assert_eq!(columns, ["Phase", "Step", "Weight", "Verdict", "Age"]);
    for c in version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
    {
        let path = c["jsonPath"].as_str().expect("a path");
        if path.starts_with(".metadata") {
            continue;
        }
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
