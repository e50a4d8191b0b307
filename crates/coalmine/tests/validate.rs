//! `coalmine validate` run as a process on the examples and on bad fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coalmine"))
        .arg("validate")
        .args(args)
        .current_dir(root())
        .output()
        .expect("coalmine runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_example_is_valid() {
    let mut files = vec![root().join("examples/local.yaml")];
    // The Canaries; the objects beside them (`istio/`) are not ones.
    for entry in std::fs::read_dir(root().join("examples/kubernetes")).expect("examples exist") {
        let path = entry.expect("readable").path();
        if path.is_file() {
            files.push(path);
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let out = validate(&[file.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(": valid: "),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn the_brief_example_gets_its_summary() {
    let out = validate(&["examples/kubernetes/gateway-api.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "examples/kubernetes/gateway-api.yaml: valid: 8 steps: 5% → 25% → 50%, 1 analysis gate, 3 metrics\n"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_file_with_many_problems_lists_them_all() {
    let f = "crates/coalmine/tests/fixtures/many-problems.yaml";
    let out = validate(&[f]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    for expected in [
        "spec.upstreams.canary[0]: http://127.0.0.1:9001 is also a stable upstream",
        "spec.analysis.alpha: 0.9 is outside (0, 0.5]",
        "spec.analysis.metrics[1].name: `errors` is used by an earlier metric",
        "spec.analysis.metrics[1].slowerThan: is required for builtin: latency",
        "spec.analysis.metrics[2].name: is empty",
        "spec.analysis.metrics[2].prometheus.query: gives one value",
        "spec.steps[0].setWeight: 140 is above 100 (a weight is a percent from 0 to 100)",
        "spec.steps[1].analysis.timeout: 1s is shorter than the analysis interval 10s",
        "spec.steps[3].setMirror.percent: -3 is below 0",
        "invalid: 9 errors",
    ] {
        assert!(
            err.contains(&format!("{f}: {expected}")),
            "missing {expected:?} in\n{err}"
        );
    }
}

#[test]
fn typos_get_suggestions() {
    let out = validate(&["crates/coalmine/tests/fixtures/typos.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "spec.steps[0].setWeigth: unknown step `setWeigth` (did you mean `setWeight`?)"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "spec.steps[1].pause.duration: `10 minutes` is not a duration: it contains spaces"
        ),
        "{err}"
    );
    assert!(
        err.contains("spec.analysis.metrics[1].datadog: unknown metric provider `datadog`"),
        "{err}"
    );
    assert!(err.contains("invalid: 3 errors"), "{err}");
}

#[test]
fn structural_mistakes_are_named() {
    for (file, expected) in [
        (
            "both-targets.yaml",
            "spec: both `upstreams` and `template` are set",
        ),
        (
            "no-traffic.yaml",
            "spec.steps: no step sends the canary any traffic",
        ),
        ("not-yaml.yaml", "not valid YAML or JSON"),
    ] {
        let path = format!("crates/coalmine/tests/fixtures/{file}");
        let out = validate(&[&path]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        assert!(
            text(&out.stderr).contains(expected),
            "{file}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn warnings_pass_unless_strict() {
    let f = "crates/coalmine/tests/fixtures/decreasing.yaml";
    let out = validate(&[f]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr)
            .contains("warning: spec.steps[2].setWeight: 10 is below the previous weight 50")
    );
    let out = validate(&["--strict", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--strict"));
}

#[test]
fn missing_files_and_usage_errors_exit_1() {
    let out = validate(&["does-not-exist.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does-not-exist.yaml: cannot read the file"));
    let out = validate(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "usage errors are errors, not rollbacks"
    );
    // One bad file among good ones fails the run but all are checked.
    let out = validate(&[
        "examples/local.yaml",
        "crates/coalmine/tests/fixtures/no-traffic.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("examples/local.yaml: valid"));
}

#[test]
fn structural_and_semantic_problems_come_in_one_run() {
    let f = "crates/coalmine/tests/fixtures/structural-and-semantic.yaml";
    let out = validate(&[f]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let expected = [
        // Found while decoding.
        "spec.steps[1].setWeigth: unknown step `setWeigth` (did you mean `setWeight`?)",
        "spec.steps[2].pause.duration: `soon` is not a duration",
        "spec.analysis.metrics[1].slowerThan: `fast` is not a duration",
        "spec.analysis.intervall: unknown field `intervall` (did you mean `interval`?)",
        "spec.progressDeadline: `10 minutes` is not a duration",
        // Found by checking what was decoded.
        "spec: both `upstreams` and `template` are set",
        "spec.steps[0].setWeight: 140 is above 100",
        "spec.analysis.alpha: 2 is outside (0, 0.5]",
    ];
    for e in expected {
        assert!(
            err.contains(&format!("{f}: {e}")),
            "missing {e:?} in\n{err}"
        );
    }
    // Nothing else: no finding about the parts that did not decode (the
    // latency metric without its slowerThan, the gate after a broken step).
    assert!(
        err.contains(&format!("{f}: invalid: {} errors", expected.len())),
        "{err}"
    );
}
