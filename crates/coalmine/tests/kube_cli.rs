//! `coalmine get|promote|pause|abort|retry NAME` against Kubernetes: a fake
//! API server on loopback (in process), the real CRD, the real `coalmine
//! controller` as a process, Canaries applied with `kubectl`, and the CLI
//! both as `coalmine …` and as the kubectl plugin `kubectl coalmine …`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coalmine_fakekube::{FakeApiServer, Options};

const BIN: &str = env!("CARGO_BIN_EXE_coalmine");

/// Kills the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl_missing() -> bool {
    let missing = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true);
    if missing {
        assert!(
            std::env::var_os("COALMINE_REQUIRE_KUBECTL").is_none(),
            "kubectl is required (COALMINE_REQUIRE_KUBECTL is set) but missing"
        );
        println!("SKIPPED: kubectl is not on PATH");
    }
    missing
}

/// Runs a command with the test's kubeconfig and PATH; code, stdout, stderr.
fn run(dir: &Path, program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("the command runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn canary(image: &str) -> String {
    format!(
        "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata: {{name: shop, namespace: default}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: shop}}}}
  template:
    metadata: {{labels: {{app: shop}}}}
    spec: {{containers: [{{name: shop, image: \"{image}\", ports: [{{containerPort: 8080}}]}}]}}
  service: {{port: 80, targetPort: 8080}}
  trafficRouting: {{replicas: {{}}}}
  steps:
    - setWeight: 25
    - pause: {{}}
    - setWeight: 50
    - pause: {{}}
"
    )
}

/// Polls `coalmine get -o json` until `ok` holds (at most `secs`).
fn wait_status(
    dir: &Path,
    secs: u64,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut last = serde_json::Value::Null;
    while Instant::now() < end {
        let (code, out, _) = run(dir, BIN, &["get", "shop", "-o", "json"]);
        if code == Some(0)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&out)
        {
            if ok(&v) {
                return v;
            }
            last = v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("status not reached in {secs}s; last: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_kubectl_plugin_drive_a_canary_in_kubernetes() {
    if kubectl_missing() {
        return;
    }
    let mut opts = Options::default();
    opts.deployment_ready_delay = Duration::from_millis(150);
    let server = FakeApiServer::start(opts).await.expect("fake API server");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("coalmine-kube-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    server
        .write_kubeconfig(dir.join("kubeconfig"))
        .expect("kubeconfig");
    // The plugin: kubectl runs `kubectl-coalmine` from PATH.
    std::os::unix::fs::symlink(BIN, dir.join("kubectl-coalmine")).expect("plugin link");
    let d = dir.clone();
    tokio::task::spawn_blocking(move || scenario(&d))
        .await
        .expect("the scenario ran");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn scenario(dir: &Path) {
    let crd = dir.join("crd.yaml");
    let (code, out, err) = run(dir, BIN, &["crd"]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::write(&crd, out).expect("write the CRD");
    let crd_path = crd.to_str().expect("utf-8");
    let (code, _, err) = run(dir, "kubectl", &["apply", "-f", crd_path]);
    assert_eq!(code, Some(0), "{err}");

    let controller = Command::new(BIN)
        .args([
            "controller",
            "--metrics-addr",
            "127.0.0.1:0",
            "--no-leader-election",
        ])
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the controller starts");
    let _controller = Proc(controller);

    let file = dir.join("shop.yaml");
    let file_path = file.to_str().expect("utf-8");
    std::fs::write(&file, canary("shop:1")).expect("write");
    let (code, _, err) = run(dir, "kubectl", &["apply", "-f", file_path]);
    assert_eq!(code, Some(0), "{err}");
    wait_status(dir, 30, |s| {
        s["phase"] == "Idle" && s["stableRevision"].is_string()
    });

    // A new image starts a rollout, which waits at the `pause: {}` step.
    std::fs::write(&file, canary("shop:2")).expect("write");
    let (code, _, err) = run(dir, "kubectl", &["apply", "-f", file_path]);
    assert_eq!(code, Some(0), "{err}");
    wait_status(dir, 30, |s| s["phase"] == "Paused" && s["weight"] == 25);

    let (code, out, err) = run(dir, BIN, &["get", "shop", "-n", "default"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("default/shop") && out.contains("weight 25%"),
        "{out}"
    );
    let (code, out, err) = run(dir, "kubectl", &["coalmine", "get", "shop"]);
    assert_eq!(code, Some(0), "kubectl coalmine get: {err}");
    assert!(out.contains("Paused"), "{out}");

    // promote ends the pause step: on to 50%.
    let (code, out, err) = run(dir, BIN, &["promote", "shop"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("promote: done"), "{out}");
    wait_status(dir, 10, |s| s["weight"] == 50);
    // Nothing to retry while the rollout is under way: ignored, exit 1.
    let (code, _, err) = run(dir, "kubectl", &["coalmine", "retry", "shop"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("ignored"), "{err}");
    let (code, _, err) = run(dir, BIN, &["abort", "shop"]);
    assert_eq!(code, Some(0), "{err}");
    let s = wait_status(dir, 10, |s| s["phase"] == "RolledBack");
    assert_eq!(s["weight"], 0);

    // Clear errors for what is not there.
    let (code, _, err) = run(dir, BIN, &["get", "nothing"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = run(dir, BIN, &["pause"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("name the Canary"), "{err}");
}
