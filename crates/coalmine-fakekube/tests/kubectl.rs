//! kubectl 1.32 against the fake API server through a kubeconfig: apply
//! (client-side and server-side) of a Deployment, a Service, a CRD and a
//! custom resource, `get` as tables and JSON, `rollout status`, `patch`,
//! `scale`, `delete`; and the `coalmine-fakekube` binary as a process.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use coalmine_fakekube::FakeApiServer;
use common::{TestResult, bounded, fast_options, raw};
use tokio::io::{AsyncBufReadExt, BufReader};

const DEPLOY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: IMAGE
        ports:
        - containerPort: 8080
      - name: sidecar
        image: sidecar:1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: canaries.coalmine.dev
spec:
  group: coalmine.dev
  scope: Namespaced
  names:
    plural: canaries
    singular: canary
    kind: Canary
    shortNames: [cn]
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Weight, type: integer, jsonPath: .status.weight}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const CANARY: &str = r#"apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata:
  name: web
spec:
  target: web
  steps: [STEPS]
"#;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "coalmine-fakekube-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have_kubectl() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("COALMINE_REQUIRE_KUBECTL").is_none(),
            "COALMINE_REQUIRE_KUBECTL is set but kubectl is not on PATH"
        );
        eprintln!("SKIPPED: kubectl is not on PATH; the kubectl tests did not run");
    }
    found
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn kubectl(
    dir: &Path,
    args: &[&str],
) -> Result<Out, Box<dyn std::error::Error + Send + Sync>> {
    let cache = dir.join("cache");
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOME", dir)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await??;
    let o = Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !o.ok {
        eprintln!("kubectl {args:?} failed:\n{}{}", o.stdout, o.stderr);
    }
    Ok(o)
}

async fn must(
    dir: &Path,
    args: &[&str],
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let o = kubectl(dir, args).await?;
    if !o.ok {
        return Err(format!("kubectl {args:?}: {}{}", o.stdout, o.stderr).into());
    }
    Ok(o.stdout)
}

fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.to_string_lossy().into_owned())
}

/// The header row of a table, split into column names.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The cells of the row whose first cell is `name`.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
        .unwrap_or_default()
}

#[tokio::test]
async fn kubectl_apply_get_patch_delete() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    bounded(120, async {
        let server = FakeApiServer::start(fast_options()).await?;
        let scratch = Scratch::new()?;
        let dir = scratch.0.as_path();
        server.write_kubeconfig(dir.join("kubeconfig"))?;

        // Client-side apply creates.
        let deploy = write(
            dir,
            "deploy.yaml",
            &DEPLOY.replace("REPLICAS", "2").replace("IMAGE", "web:1"),
        )?;
        let out = must(dir, &["apply", "-f", &deploy]).await?;
        assert!(out.contains("deployment.apps/web created"), "{out}");
        assert!(out.contains("service/web created"), "{out}");
        must(
            dir,
            &["rollout", "status", "deployment/web", "--timeout=20s"],
        )
        .await?;

        // Tables.
        let t = must(dir, &["get", "deployments"]).await?;
        assert_eq!(
            header(&t),
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            "{t}"
        );
        assert_eq!(row(&t, "web")[1..4], ["2/2", "2", "2"], "{t}");
        let t = must(dir, &["get", "svc", "web"]).await?;
        assert_eq!(
            header(&t),
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE"
            ],
            "{t}"
        );
        assert_eq!(row(&t, "web")[1], "ClusterIP", "{t}");
        assert_eq!(row(&t, "web")[4], "80/TCP", "{t}");
        let t = must(dir, &["get", "deploy", "-o", "wide", "-l", "app=web"]).await?;
        assert!(header(&t).contains(&"IMAGES".to_owned()), "{t}");
        let t = must(dir, &["get", "deploy", "--all-namespaces"]).await?;
        assert_eq!(header(&t)[0], "NAMESPACE", "{t}");

        // Client-side apply of a change: a strategic merge patch.
        let deploy = write(
            dir,
            "deploy.yaml",
            &DEPLOY.replace("REPLICAS", "3").replace("IMAGE", "web:2"),
        )?;
        let out = must(dir, &["apply", "-f", &deploy]).await?;
        assert!(out.contains("deployment.apps/web configured"), "{out}");
        assert!(out.contains("service/web unchanged"), "{out}");
        let j: serde_json::Value =
            serde_json::from_str(&must(dir, &["get", "deployment", "web", "-o", "json"]).await?)?;
        assert_eq!(j["spec"]["replicas"], 3);
        assert_eq!(
            j["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:2"
        );
        assert_eq!(
            j["spec"]["template"]["spec"]["containers"][1]["name"],
            "sidecar"
        );
        assert_eq!(j["metadata"]["generation"], 2);
        assert!(
            j["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .is_string()
        );
        must(
            dir,
            &["rollout", "status", "deployment/web", "--timeout=20s"],
        )
        .await?;

        // Dropping a container from the file removes it (three-way merge).
        let one = DEPLOY
            .replace("REPLICAS", "3")
            .replace("IMAGE", "web:2")
            .replace("      - name: sidecar\n        image: sidecar:1\n", "");
        let deploy = write(dir, "deploy.yaml", &one)?;
        must(dir, &["apply", "-f", &deploy]).await?;
        let j: serde_json::Value =
            serde_json::from_str(&must(dir, &["get", "deployment", "web", "-o", "json"]).await?)?;
        assert_eq!(
            j["spec"]["template"]["spec"]["containers"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "{j}"
        );

        // Server-side apply.
        let deploy = write(
            dir,
            "deploy.yaml",
            &one.replace("replicas: 3", "replicas: 4"),
        )?;
        let out = must(dir, &["apply", "--server-side", "-f", &deploy]).await?;
        assert!(
            out.contains("deployment.apps/web serverside-applied"),
            "{out}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&must(dir, &["get", "deployment", "web", "-o", "json"]).await?)?;
        assert_eq!(j["spec"]["replicas"], 4);

        // kubectl wait watches a single object.
        must(dir, &["wait", "--for=condition=Available", "deployment/web", "--timeout=20s"]).await?;

        // Events written through events.k8s.io/v1 show as core events.
        let ev = write(dir, "event.yaml", "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: web.1}\n\
            regarding: {kind: Deployment, name: web, namespace: default}\nreason: Promoted\nnote: weight 25\n\
            type: Normal\naction: Promote\nreportingController: coalmine\nreportingInstance: coalmine-0\n\
            eventTime: \"2025-01-01T00:00:00.000000Z\"\n")?;
        must(dir, &["create", "-f", &ev]).await?;
        let t = must(dir, &["get", "events"]).await?;
        assert!(t.contains("Promoted") && t.contains("deployment/web") && t.contains("weight 25"), "{t}");

        // Scale and dry runs.
        must(dir, &["scale", "deployment/web", "--replicas=1"]).await?;
        must(
            dir,
            &[
                "apply",
                "--dry-run=server",
                "-f",
                &write(dir, "d2.yaml", &one.replace("replicas: 3", "replicas: 9"))?,
            ],
        )
        .await?;
        let j: serde_json::Value =
            serde_json::from_str(&must(dir, &["get", "deployment", "web", "-o", "json"]).await?)?;
        assert_eq!(j["spec"]["replicas"], 1);

        // A CRD and a custom resource, with printer columns.
        let crd = write(dir, "crd.yaml", CRD)?;
        let out = must(dir, &["apply", "-f", &crd]).await?;
        assert!(
            out.contains(
                "customresourcedefinition.apiextensions.k8s.io/canaries.coalmine.dev created"
            ),
            "{out}"
        );
        let t = must(dir, &["get", "crd"]).await?;
        assert_eq!(header(&t), ["NAME", "CREATED", "AT"], "{t}");
        let canary = write(dir, "canary.yaml", &CANARY.replace("STEPS", "5, 25"))?;
        let out = must(dir, &["apply", "-f", &canary]).await?;
        assert!(out.contains("canary.coalmine.dev/web created"), "{out}");
        must(
            dir,
            &[
                "patch",
                "canary",
                "web",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Progressing","weight":5}}"#,
            ],
        )
        .await?;
        let t = must(dir, &["get", "canaries"]).await?;
        assert_eq!(header(&t), ["NAME", "PHASE", "WEIGHT", "AGE"], "{t}");
        assert_eq!(row(&t, "web")[1..3], ["Progressing", "5"], "{t}");
        let t = must(dir, &["get", "cn", "web"]).await?;
        assert_eq!(row(&t, "web")[1], "Progressing", "{t}");

        // Client-side apply of a custom resource: a JSON merge patch.
        let canary = write(dir, "canary.yaml", &CANARY.replace("STEPS", "5, 50"))?;
        let out = must(dir, &["apply", "-f", &canary]).await?;
        assert!(out.contains("canary.coalmine.dev/web configured"), "{out}");
        let out = must(dir, &["apply", "--server-side", "-f", &canary]).await?;
        assert!(out.contains("serverside-applied"), "{out}");
        let j: serde_json::Value =
            serde_json::from_str(&must(dir, &["get", "canary", "web", "-o", "json"]).await?)?;
        assert_eq!(j["spec"]["steps"], serde_json::json!([5, 50]));
        assert_eq!(
            j["status"]["phase"], "Progressing",
            "status survives spec writes"
        );

        // Delete.
        let out = must(dir, &["delete", "-f", &deploy]).await?;
        assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
        let gone = kubectl(dir, &["get", "deployment", "web"]).await?;
        assert!(
            !gone.ok && gone.stderr.contains("NotFound"),
            "{}",
            gone.stderr
        );
        must(dir, &["delete", "canary", "web"]).await?;
        must(dir, &["delete", "-f", &crd]).await?;
        let gone = kubectl(dir, &["get", "canaries"]).await?;
        assert!(!gone.ok, "canaries still served");
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn binary_serves_and_writes_a_kubeconfig() -> TestResult {
    bounded(60, async {
        let scratch = Scratch::new()?;
        let kc = scratch.0.join("kubeconfig");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coalmine-fakekube"))
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kc)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let url = BufReader::new(stdout)
            .lines()
            .next_line()
            .await?
            .ok_or("no URL printed")?;
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse()?;
        let text = std::fs::read_to_string(&kc)?;
        assert!(text.contains(&format!("server: {url}")), "{text}");
        let (status, body) = raw(addr, "GET", "/api/v1/namespaces", &[], b"").await?;
        assert_eq!(status, 200);
        assert!(body.contains("kube-system"));
        if have_kubectl() {
            let t = must(&scratch.0, &["get", "namespaces"]).await?;
            assert_eq!(row(&t, "default")[1], "Active", "{t}");
        }
        child.kill().await?;
        Ok(())
    })
    .await
}
