//! The real Kubernetes of `scripts/kube-env.sh` for the tests: brought up
//! once per test binary (the script finds a running one), one namespace
//! per test (deleted when the test ends), and the controller with the
//! controller ServiceAccount's rights, so RBAC applies to it as in a
//! cluster: `coalmine controller` as its own process ([`Controller`]), or
//! the `coalmine_controller` library in the test ([`InProcess`]). A
//! controller log with a 403 fails the test that ran it.
//!
//! The tests of `coalmine` and of `coalmine-controller` share this file
//! (the latter include it with `#[path]`); [`Controller`] needs the
//! `coalmine` binary, which only the former have.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use coalmine_controller::resource::CanaryResource;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
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

static NAMED: std::sync::Mutex<Vec<(&'static str, &'static Env)>> =
    std::sync::Mutex::new(Vec::new());

/// A cluster of its own named `name` (`COALMINE_KUBE_CLUSTER`), for tests
/// that create the same objects at the same time (the examples all make
/// `shop/myapp`); started on first use, stopped by `kube-env.sh down`.
pub fn env_named(name: &'static str) -> Result<&'static Env, BoxError> {
    let mut named = NAMED
        .lock()
        .map_err(|_| "a test panicked starting a cluster")?;
    if let Some((_, env)) = named.iter().find(|(n, _)| *n == name) {
        return Ok(env);
    }
    let env: &'static Env = Box::leak(Box::new(start_cluster(None, Some(name))?));
    named.push((name, env));
    Ok(env)
}

fn start_env(gateway_api: Option<&str>) -> Result<Env, String> {
    start_cluster(gateway_api, None)
}

fn start_cluster(gateway_api: Option<&str>, name: Option<&str>) -> Result<Env, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/kube-env.sh")).arg("up");
    if let Some(v) = gateway_api {
        cmd.env("COALMINE_GATEWAY_API_VERSION", v);
    }
    if let Some(n) = name {
        cmd.env("COALMINE_KUBE_CLUSTER", n);
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

    /// Runs kubectl as the admin; its stdout, or an error with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String, BoxError> {
        let out = self.kubectl()?.args(args).output()?;
        if !out.status.success() {
            return Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f -` of `doc` (an object or a `List`) as the admin.
    pub fn apply(&self, doc: &Value) -> TestResult {
        let out = self.kubectl_with_input(&["apply", "-f", "-"], &doc.to_string())?;
        if !out.status.success() {
            return Err(format!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    }

    /// Applies `deploy/` (`kubectl apply -k`) and waits for the Canary CRD,
    /// so the cluster has the CRD and the RBAC of the tree.
    pub fn apply_deploy(&self) -> TestResult {
        let deploy = repo_root().join("deploy");
        let deploy = deploy.to_str().ok_or("a utf-8 path")?;
        self.kubectl_ok(&["apply", "-k", deploy])?;
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/canaries.coalmine.dev",
        ])?;
        Ok(())
    }

    /// A client as the cluster admin.
    pub async fn admin(&self) -> Result<Client, BoxError> {
        client_from(Kubeconfig::read_from(self.var("ADMIN_KUBECONFIG")?)?).await
    }

    /// A client as the controller's ServiceAccount
    /// (`coalmine-system/coalmine-controller`, with the RBAC of `deploy/`).
    pub async fn controller_client(&self) -> Result<Client, BoxError> {
        client_from(Kubeconfig::read_from(self.var("CONTROLLER_KUBECONFIG")?)?).await
    }

    /// A kubeconfig (its text) for ServiceAccount `ns/name`, with a token
    /// made for it.
    pub fn service_account_kubeconfig(&self, ns: &str, name: &str) -> Result<String, BoxError> {
        let token = self.kubectl_ok(&["create", "token", name, "-n", ns])?;
        let text = std::fs::read_to_string(self.var("CONTROLLER_KUBECONFIG")?)?;
        Ok(text
            .lines()
            .map(|l| match l.split_once("token:") {
                Some((indent, _)) => format!("{indent}token: {}\n", token.trim()),
                None => format!("{l}\n"),
            })
            .collect())
    }

    /// A client as ServiceAccount `ns/name`, with a token made for it.
    pub async fn service_account_client(&self, ns: &str, name: &str) -> Result<Client, BoxError> {
        let text = self.service_account_kubeconfig(ns, name)?;
        client_from(Kubeconfig::from_yaml(&text)?).await
    }
}

async fn client_from(kc: Kubeconfig) -> Result<Client, BoxError> {
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A namespace of one test, named after a prefix and unique across runs.
/// Dropped, it is deleted with what is in it (Canaries' finalizers
/// removed first: the controller may be gone) and with its controllers'
/// Lease in `coalmine-system`.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubectl: String,
    kubeconfig: String,
}

impl std::ops::Deref for TestNamespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl serde::Serialize for TestNamespace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let kubectl = |args: &[&str]| {
            Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
        };
        let ns = self.name.as_str();
        if let Ok(out) = kubectl(&["get", "canaries.coalmine.dev", "-n", ns, "-o", "name"]) {
            for canary in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = kubectl(&[
                    "patch",
                    canary,
                    "-n",
                    ns,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
            }
        }
        let lease = format!("coalmine-{ns}");
        let _ = kubectl(&["delete", "namespace", ns, "--wait=false"]);
        let _ = kubectl(&[
            "delete",
            "lease",
            &lease,
            "-n",
            "coalmine-system",
            "--ignore-not-found",
        ]);
    }
}

/// A new namespace named after `prefix`, unique across runs, deleted
/// when the returned value is dropped.
pub async fn namespace(client: &Client, prefix: &str) -> Result<TestNamespace, BoxError> {
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
    let env = env()?;
    Ok(TestNamespace {
        name,
        kubectl: env.var("KUBECTL")?.to_owned(),
        kubeconfig: env.var("ADMIN_KUBECONFIG")?.to_owned(),
    })
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
        let bin = option_env!("CARGO_BIN_EXE_coalmine")
            .ok_or("no coalmine binary: only coalmine's tests run it as a process")?;
        let log = Path::new(env.var("KUBE_ENV_RUN")?)
            .join("logs")
            .join(format!("controller-{ns}-{identity}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
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
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]}}}});
    merge_patch(client, ns, name, patch).await
}

/// Merge-patches Canary `name` with `patch`.
pub async fn merge_patch(client: &Client, ns: &str, name: &str, patch: Value) -> TestResult {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), ns);
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

/// The images of the Ready endpoints behind Service `svc`, from its
/// EndpointSlices and their pods, sorted.
pub async fn serving(client: &Client, ns: &str, svc: &str) -> Result<Vec<String>, BoxError> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut images = Vec::new();
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    for slice in slices.list(&lp).await?.items {
        for ep in slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            let pod = ep.target_ref.as_ref().and_then(|r| r.name.clone());
            if let (true, Some(pod)) = (ready, pod)
                && let Some(p) = pods.get_opt(&pod).await?
            {
                let image = p
                    .spec
                    .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
                    .unwrap_or_default();
                images.push(image);
            }
        }
    }
    images.sort();
    Ok(images)
}

/// The HTTPRoutes of namespace `ns`.
pub fn http_routes(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &coalmine_controller::router::gateway::http_route_resource(),
    )
}

/// Creates HTTPRoute `name` in `ns` with these rules, attached to Gateway
/// `gateway`; the route as the API server stored it (with its defaults).
pub async fn create_http_route(
    client: &Client,
    ns: &str,
    name: &str,
    rules: Value,
) -> Result<DynamicObject, BoxError> {
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": rules}
    }))?;
    Ok(http_routes(client, ns)
        .create(&PostParams::default(), &route)
        .await?)
}

/// The controller run in the test from the `coalmine_controller` library
/// (`coalmine_controller::run`), its log kept apart from other tests'.
pub struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    log: LogBuffer,
    /// Its metrics.
    pub metrics: Arc<coalmine_controller::ops::Metrics>,
}

/// Where an in-process controller's log goes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl InProcess {
    /// Starts the controller for namespace `ns` as the controller's
    /// ServiceAccount, without leader election.
    pub async fn start(env: &Env, ns: &str) -> Result<InProcess, BoxError> {
        let client = env.controller_client().await?;
        Ok(InProcess::run(
            &client,
            coalmine_controller::Config {
                namespace: Some(ns.to_owned()),
                ..coalmine_controller::Config::default()
            },
        ))
    }

    /// Runs the controller with `client` and `config`. What it logs (at
    /// the level of the process's `RUST_LOG=info,coalmine_controller=debug`)
    /// is kept for [`InProcess::finish`].
    pub fn run(client: &Client, config: coalmine_controller::Config) -> InProcess {
        use tracing::instrument::WithSubscriber;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let metrics = Arc::new(coalmine_controller::ops::Metrics::new());
        let log = LogBuffer::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,coalmine_controller=debug",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let task = tokio::spawn(
            coalmine_controller::run(client.clone(), config, metrics.clone(), async move {
                let _ = rx.await;
            })
            .with_subscriber(subscriber),
        );
        InProcess {
            stop: Some(tx),
            task,
            log,
            metrics,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.log
            .0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }

    /// Stops it gracefully, and fails when its log has a 403.
    pub async fn finish(mut self) -> Result<String, BoxError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await?;
        let log = self.log();
        forbid_403(&log, Path::new("the in-process controller's log"))?;
        Ok(log)
    }

    /// Stops it gracefully, with no 403 check (a test that expects one).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Aborts it as a crash would: no graceful shutdown, no Lease release.
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deployment `name` of `ns`, if it exists.
pub async fn deployment(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<k8s_openapi::api::apps::v1::Deployment>, BoxError> {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?)
}

/// (spec.replicas, first image) of a Deployment.
pub fn shape(d: &k8s_openapi::api::apps::v1::Deployment) -> (i32, String) {
    let spec = d.spec.clone().unwrap_or_default();
    let image = spec
        .template
        .spec
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
        .unwrap_or_default();
    (spec.replicas.unwrap_or(1), image)
}

/// The Events of namespace `ns`.
pub async fn events(
    client: &Client,
    ns: &str,
) -> Result<Vec<k8s_openapi::api::events::v1::Event>, BoxError> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    Ok(api.list(&ListParams::default()).await?.items)
}

/// Sets the command annotation of Canary `name` (what `coalmine promote`,
/// `abort`, ... do).
pub async fn command(client: &Client, ns: &str, name: &str, cmd: &str) -> TestResult {
    let patch = json!({"metadata": {"annotations": {
        coalmine_controller::resource::COMMAND_ANNOTATION: cmd}}});
    merge_patch(client, ns, name, patch).await
}

/// The status condition of type `type_`, if there is one.
pub fn condition(status: &Value, type_: &str) -> Option<Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}
