//! The CRD and the `deploy/` base: `coalmine crd` matches the committed
//! file; kubectl applies the CRD and an example Canary to the real API
//! server of `scripts/kube-env.sh` and shows the printer columns; `kubectl
//! kustomize deploy` renders a locked-down controller. kubectl is the
//! cluster's own release, from the environment.

mod kube_env;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_committed_crd_is_current() {
    let out = Command::new(env!("CARGO_BIN_EXE_coalmine"))
        .arg("crd")
        .output()
        .expect("coalmine runs");
    assert!(
        out.status.success(),
        "coalmine crd failed: {}",
        text(&out.stderr)
    );
    let generated = text(&out.stdout);
    let committed =
        std::fs::read_to_string(root().join("deploy/crd.yaml")).expect("deploy/crd.yaml exists");
    assert!(
        generated == committed,
        "deploy/crd.yaml is not what `coalmine crd` prints now; regenerate it with\n\
         \n    cargo run -p coalmine -- crd > deploy/crd.yaml\n"
    );
    let crd: Value = serde_saphyr::from_str(&generated).expect("the CRD is YAML");
    assert!(
        crd == coalmine_core::crd::definition(),
        "the YAML does not read back"
    );
}

/// kubectl of the test cluster's release, as its admin.
fn kubectl_command() -> Command {
    kube_env::env()
        .and_then(|e| e.kubectl())
        .expect("the test cluster (scripts/kube-env.sh up)")
}

/// Runs kubectl as the test cluster's admin; panics with its output when
/// it fails.
fn kubectl(args: &[&str]) -> String {
    let out = kubectl_command()
        .arg("--request-timeout=20s")
        .args(args)
        .current_dir(root())
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn kubectl_applies_the_crd_and_a_canary_and_shows_the_columns() {
    // The example's namespace, made unique so that no test shares it.
    let ns = format!("crd-{}", std::process::id());
    let out = kubectl(&["create", "namespace", &ns]);
    assert!(out.contains("created"), "{out}");
    // The environment applied `deploy/` already: the file applies again.
    let out = kubectl(&["apply", "-f", "deploy/crd.yaml"]);
    assert!(out.contains("canaries.coalmine.dev"), "{out}");
    let example = std::fs::read_to_string(root().join("examples/kubernetes/replicas.yaml"))
        .expect("the example exists")
        .replace("namespace: shop", &format!("namespace: {ns}"));
    let scratch = std::env::temp_dir().join(format!("coalmine-crd-{ns}.yaml"));
    std::fs::write(&scratch, example).expect("a scratch file");
    let file = scratch.to_str().expect("a UTF-8 path");
    let out = kubectl(&["apply", "-f", file]);
    let _ = std::fs::remove_file(&scratch);
    assert!(out.contains("canary.coalmine.dev/myapp created"), "{out}");

    let table = kubectl(&["get", "canaries", "-n", &ns]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "STEP", "WEIGHT", "VERDICT", "ERROR", "AGE"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("myapp ")),
        "{table}"
    );

    // The short name and the category reach the same objects.
    for name in ["cmc", "coalmine", "canaries.coalmine.dev"] {
        let out = kubectl(&["get", name, "-n", &ns, "-o", "name"]);
        assert_eq!(
            out.trim(),
            "canary.coalmine.dev/myapp",
            "kubectl get {name}"
        );
    }

    // A status written through the subresource shows in the columns.
    kubectl(&[
        "patch",
        "canary",
        "myapp",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Progressing","step":1,"weight":10,"analysis":{"verdict":"Running"}}}"#,
    ]);
    let table = kubectl(&["get", "cmc", "myapp", "-n", &ns]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row.get(..5),
        Some(&["myapp", "Progressing", "1", "10", "Running"][..]),
        "{table}"
    );

    // The scale subresource reads and writes spec.replicas.
    kubectl(&["scale", "cmc/myapp", "-n", &ns, "--replicas=6"]);
    let replicas = kubectl(&[
        "get",
        "cmc",
        "myapp",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas.trim(), "6");
    kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

/// The objects `kubectl kustomize deploy` renders.
fn rendered() -> Option<Vec<Value>> {
    let out = kubectl_command()
        .args(["kustomize", "deploy"])
        .current_dir(root())
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy: {}",
        text(&out.stderr)
    );
    Some(serde_saphyr::from_str_multiple(&text(&out.stdout)).expect("the rendering is YAML"))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("kubectl kustomize deploy renders no {kind} {name}"))
}

#[test]
fn the_kustomize_base_renders_a_locked_down_controller() {
    let Some(objects) = rendered() else {
        return;
    };
    let crd = find(
        &objects,
        "CustomResourceDefinition",
        "canaries.coalmine.dev",
    );
    assert!(
        crd["spec"] == coalmine_core::crd::definition()["spec"],
        "the rendered CRD is not `coalmine crd`'s"
    );
    assert!(
        crd["metadata"]["namespace"].is_null(),
        "a CRD has no namespace"
    );
    find(&objects, "Namespace", "coalmine-system");
    let sa = find(&objects, "ServiceAccount", "coalmine-controller");
    assert_eq!(sa["metadata"]["namespace"], "coalmine-system");

    let deploy = find(&objects, "Deployment", "coalmine-controller");
    assert_eq!(deploy["metadata"]["namespace"], "coalmine-system");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "coalmine-controller");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    // The proxy router's pods run the controller's own image.
    assert_eq!(
        c["args"],
        serde_json::json!(["controller", "--proxy-image", c["image"]])
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "no {kind}.{resource}"
            );
        }
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    let env: Vec<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter(|e| e.get("valueFrom").is_some())
        .map(|e| e["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
}

/// `(apiGroup, resource)` → verbs granted by the rendered roles.
fn grants(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|s| s.as_str().expect("a string").to_owned())
            .collect()
    };
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.push((group.clone(), resource, strings(&rule["verbs"])));
            }
        }
    }
    out
}

#[test]
fn the_controller_gets_what_it_needs_and_no_more() {
    let Some(objects) = rendered() else {
        return;
    };
    let cluster = grants(find(&objects, "ClusterRole", "coalmine-controller"));
    let expected: &[(&str, &str, &[&str])] = &[
        (
            "coalmine.dev",
            "canaries",
            &["get", "list", "watch", "patch"],
        ),
        ("coalmine.dev", "canaries/status", &["update"]),
        ("coalmine.dev", "canaries/finalizers", &["update"]),
        (
            "apps",
            "deployments",
            &["get", "list", "watch", "create", "patch"],
        ),
        ("", "services", &["get", "list", "watch", "create", "patch"]),
        // The proxy router: its ConfigMap (list and watch only so that it
        // may grant them to the proxy's Role), its Secret (never read),
        // its identity and rights.
        (
            "",
            "configmaps",
            &["get", "list", "watch", "create", "patch"],
        ),
        ("", "secrets", &["create"]),
        ("", "serviceaccounts", &["get", "create"]),
        ("rbac.authorization.k8s.io", "roles", &["get", "create"]),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            &["get", "create"],
        ),
        ("autoscaling", "horizontalpodautoscalers", &["list"]),
        ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
        ("gateway.networking.k8s.io", "httproutes", &["get", "patch"]),
        (
            "networking.k8s.io",
            "ingresses",
            &["get", "create", "patch", "delete"],
        ),
        ("networking.istio.io", "virtualservices", &["get", "patch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    let expected: Vec<(String, String, Vec<String>)> = expected
        .iter()
        .map(|(g, r, v)| {
            (
                (*g).to_owned(),
                (*r).to_owned(),
                v.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect();
    assert_eq!(cluster, expected);
    for (_, resource, verbs) in &cluster {
        assert!(!resource.contains('*') && !verbs.iter().any(|v| v == "*"));
        assert!(resource != "pods");
        if resource == "secrets" {
            assert_eq!(verbs, &["create"], "Secrets are never read");
        }
    }

    // Leader election: leases in the controller's namespace only.
    let role = find(&objects, "Role", "coalmine-controller-leader-election");
    assert_eq!(role["metadata"]["namespace"], "coalmine-system");
    let leases = grants(role);
    assert_eq!(leases.len(), 1);
    assert_eq!(
        (leases[0].0.as_str(), leases[0].1.as_str()),
        ("coordination.k8s.io", "leases")
    );

    for (kind, name, role_kind, role_name) in [
        (
            "ClusterRoleBinding",
            "coalmine-controller",
            "ClusterRole",
            "coalmine-controller",
        ),
        (
            "RoleBinding",
            "coalmine-controller-leader-election",
            "Role",
            "coalmine-controller-leader-election",
        ),
    ] {
        let b = find(&objects, kind, name);
        assert_eq!(b["roleRef"]["kind"], role_kind);
        assert_eq!(b["roleRef"]["name"], role_name);
        assert_eq!(b["subjects"][0]["name"], "coalmine-controller");
        assert_eq!(b["subjects"][0]["namespace"], "coalmine-system");
    }
}
