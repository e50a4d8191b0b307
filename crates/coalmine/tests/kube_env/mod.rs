//! The real Kubernetes of `scripts/kube-env.sh` for the tests: brought up
//! once per test binary (the script finds a running one), one namespace
//! per test, and `coalmine controller` run as its own process with the
//! controller ServiceAccount's kubeconfig, so RBAC applies to it as in a
//! cluster. A controller log with a 403 fails the test that ran it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use coalmine_controller::resource::CanaryResource;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Any error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of the tests.
pub type TestResult = Result<(), BoxError>;

/// The running environment: what `scripts/kube-env.sh up` printed.
#[derive(Debug)]
pub struct Env {
    vars: HashMap<String, String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
static ENV_GATEWAY_API_1_2: OnceLock<Result<Env, String>> = OnceLock::new();

/// The environment, started on first use (a build the first time ever).
pub fn env() -> Result<&'static Env, BoxError> {
    ENV.get_or_init(|| start_env(None))
        .as_ref()
        .map_err(|e| e.clone().into())
}

/// A second cluster, with the CRDs of Gateway API v1.2.1 instead of the
/// newest release's.
pub fn env_gateway_api_1_2() -> Result<&'static Env, BoxError> {
    ENV_GATEWAY_API_1_2
        .get_or_init(|| start_env(Some("v1.2.1")))
        .as_ref()
        .map_err(|e| e.clone().into())
}

fn start_env(gateway_api: Option<&str>) -> Result<Env, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/kube-env.sh")).arg("up");
    if let Some(v) = gateway_api {
        cmd.env("COALMINE_GATEWAY_API_VERSION", v);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run scripts/kube-env.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("scripts/kube-env.sh up failed: {}", out.status));
    }
    let vars = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(Env { vars })
}

impl Env {
    /// A variable of the environment (`KUBECTL`, `ADMIN_KUBECONFIG`, ...).
    pub fn var(&self, name: &str) -> Result<&str, BoxError> {
        self.vars
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("kube-env printed no {name}").into())
    }

    /// kubectl of the same release, as the cluster admin.
    pub fn kubectl(&self) -> Result<Command, BoxError> {
        let mut c = Command::new(self.var("KUBECTL")?);
        c.arg("--kubeconfig").arg(self.var("ADMIN_KUBECONFIG")?);
        Ok(c)
    }

    /// Runs kubectl as the admin with `stdin` as its input.
    pub fn kubectl_with_input(&self, args: &[&str], stdin: &str) -> Result<Output, BoxError> {
        let mut child = self
            .kubectl()?
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut input) = child.stdin.take() {
            use std::io::Write;
            input.write_all(stdin.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// A client as the cluster admin.
    pub async fn admin(&self) -> Result<Client, BoxError> {
        let kc = Kubeconfig::read_from(self.var("ADMIN_KUBECONFIG")?)?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }
}

/// A new namespace named after `prefix`, unique across runs.
pub async fn namespace(client: &Client, prefix: &str) -> Result<String, BoxError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let name = format!(
        "{prefix}-{:x}{}",
        nanos % 0xffff_ffff,
        N.fetch_add(1, Ordering::SeqCst)
    );
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    eventually(30, "the namespace's default ServiceAccount", || async {
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        Ok(sa.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    Ok(name)
}

/// `coalmine controller` as its own process, watching one namespace,
/// with the controller ServiceAccount's kubeconfig.
pub struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    /// Starts it for namespace `ns`, with its Lease in `coalmine-system`.
    pub fn start(env: &Env, ns: &str) -> Result<Controller, BoxError> {
        Controller::start_as(env, ns, &format!("test-{ns}"), 15)
    }

    /// Starts replica `identity` for namespace `ns`, its Lease lasting
    /// `lease_seconds`.
    pub fn start_as(
        env: &Env,
        ns: &str,
        identity: &str,
        lease_seconds: u64,
    ) -> Result<Controller, BoxError> {
        Controller::start_with(env, ns, identity, lease_seconds, &[])
    }

    /// Starts replica `identity` for namespace `ns` with `extra` arguments
    /// (e.g. `--resolve`) after the usual ones.
    pub fn start_with(
        env: &Env,
        ns: &str,
        identity: &str,
        lease_seconds: u64,
        extra: &[String],
    ) -> Result<Controller, BoxError> {
        let log = Path::new(env.var("KUBE_ENV_RUN")?)
            .join("logs")
            .join(format!("controller-{ns}-{identity}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_coalmine"))
            .args(["controller", "--text-logs", "--metrics-addr", "127.0.0.1:0"])
            .arg("--kubeconfig")
            .arg(env.var("CONTROLLER_KUBECONFIG")?)
            .args(["--namespace", ns, "--lease-namespace", "coalmine-system"])
            .arg("--lease-name")
            .arg(format!("coalmine-{ns}"))
            .args(["--identity", identity])
            .arg("--lease-seconds")
            .arg(lease_seconds.to_string())
            .args(extra)
            .env("RUST_LOG", "info,coalmine_controller=debug")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Controller { child, log })
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it as a crash would (SIGKILL: no Lease release), and fails
    /// when its log has a 403 (a verb RBAC lacks).
    pub fn finish(mut self) -> Result<String, BoxError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        forbid_403(&log, &self.log)?;
        Ok(log)
    }
}

/// An error when the log shows the API server refusing the controller.
pub fn forbid_403(log: &str, path: &Path) -> TestResult {
    if let Some(line) = log
        .lines()
        .find(|l| has_status_403(l) || l.contains("Forbidden") || l.contains("forbidden"))
    {
        return Err(format!(
            "the controller was refused by RBAC ({}): {line}",
            path.display()
        )
        .into());
    }
    Ok(())
}

/// Whether `line` has `403` standing alone (not inside a longer number,
/// such as a timestamp's fraction).
fn has_status_403(line: &str) -> bool {
    let b = line.as_bytes();
    line.match_indices("403").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(i + 3).copied();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, BoxError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out after {secs}s waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Canary spec: `replicas` pods of `image`, and these steps.
pub fn spec(image: &str, replicas: i64, steps: Value) -> Value {
    json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]}
        },
        "service": {"port": 80, "targetPort": 8080},
        "steps": steps,
    })
}

/// Creates Canary `name` in `ns`.
pub async fn create(client: &Client, ns: &str, name: &str, spec: Value) -> TestResult {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &CanaryResource::new(ns, name, spec))
        .await?;
    Ok(())
}

/// The Canary's status (null when there is none).
pub async fn status(client: &Client, ns: &str, name: &str) -> Result<Value, BoxError> {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), ns);
    Ok(api.get(name).await?.status.unwrap_or(Value::Null))
}

/// Waits for the status phase `want`.
pub async fn phase(
    client: &Client,
    ns: &str,
    name: &str,
    want: &str,
    secs: u64,
) -> Result<Value, BoxError> {
    eventually(secs, &format!("phase {want}"), || async {
        let s = status(client, ns, name).await?;
        Ok((s["phase"] == want).then_some(s))
    })
    .await
}

/// Sets the Canary's image (a new revision).
pub async fn set_image(client: &Client, ns: &str, name: &str, image: &str) -> TestResult {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]}}}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// A metrics webhook on loopback answering `{"value": V}`.
pub struct Webhook {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    value: Arc<AtomicU64>,
}

impl Webhook {
    /// Starts answering `value`.
    pub async fn start(value: f64) -> Result<Webhook, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let cell = Arc::new(AtomicU64::new((value * 1000.0) as u64));
        let v = cell.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let v = v.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let body = format!(
                        "{{\"value\": {}}}",
                        v.load(Ordering::SeqCst) as f64 / 1000.0
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        Ok(Webhook { url, value: cell })
    }
}
