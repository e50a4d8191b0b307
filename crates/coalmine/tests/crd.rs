//! The CRD and the `deploy/` base: `coalmine crd` matches the committed
//! file; kubectl 1.32 applies the CRD and an example Canary to the fake API
//! server and shows the printer columns; `kubectl kustomize deploy`
//! renders a locked-down controller.
//!
//! The kubectl tests are skipped, saying so, when kubectl is not on PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use coalmine_fakekube::{FakeApiServer, Options};
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

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "coalmine-crd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("a scratch directory");
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have_kubectl() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: kubectl is not on PATH, so this test did not run");
    }
    found
}

/// Runs kubectl against the kubeconfig in `dir`; panics with its output
/// when it fails.
fn kubectl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOME", dir)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
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
    if !have_kubectl() {
        return;
    }
    // The server runs on the runtime's worker while kubectl blocks this
    // thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    // The examples live in `shop`.
    let mut options = Options::default();
    options.namespaces.push("shop".to_owned());
    let server = rt
        .block_on(FakeApiServer::start(options))
        .expect("the fake API server starts");
    let scratch = Scratch::new();
    let dir = scratch.0.as_path();
    server
        .write_kubeconfig(dir.join("kubeconfig"))
        .expect("a kubeconfig");

    let out = kubectl(dir, &["apply", "-f", "deploy/crd.yaml"]);
    assert!(out.contains("canaries.coalmine.dev created"), "{out}");
    let out = kubectl(dir, &["apply", "-f", "examples/kubernetes/replicas.yaml"]);
    assert!(out.contains("canary.coalmine.dev/myapp created"), "{out}");

    let table = kubectl(dir, &["get", "canaries", "-n", "shop"]);
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
        let out = kubectl(dir, &["get", name, "-n", "shop", "-o", "name"]);
        assert_eq!(
            out.trim(),
            "canary.coalmine.dev/myapp",
            "kubectl get {name}"
        );
    }

    // A status written through the subresource shows in the columns.
    kubectl(
        dir,
        &[
            "patch",
            "canary",
            "myapp",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Progressing","step":1,"weight":10,"analysis":{"verdict":"Running"}}}"#,
        ],
    );
    let table = kubectl(dir, &["get", "cmc", "myapp", "-n", "shop"]);
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
    kubectl(dir, &["scale", "cmc/myapp", "-n", "shop", "--replicas=6"]);
    let replicas = kubectl(
        dir,
        &[
            "get",
            "cmc",
            "myapp",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert_eq!(replicas.trim(), "6");
    drop(server);
}

/// The objects `kubectl kustomize deploy` renders.
fn rendered() -> Option<Vec<Value>> {
    if !have_kubectl() {
        return None;
    }
    let out = Command::new("kubectl")
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
    assert_eq!(c["args"], serde_json::json!(["controller"]));
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
        ("", "services", &["get", "create", "patch"]),
        ("discovery.k8s.io", "endpointslices", &["list"]),
        ("gateway.networking.k8s.io", "httproutes", &["get", "patch"]),
        (
            "networking.k8s.io",
            "ingresses",
            &["get", "create", "patch", "delete"],
        ),
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
        assert!(!["secrets", "pods", "configmaps"].contains(&resource.as_str()));
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
