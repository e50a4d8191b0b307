//! Helpers for the end-to-end tests: a fake API server with the Canary CRD,
//! controllers that can be started and killed, a metrics webhook on
//! loopback, and polling until the cluster reaches a state.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coalmine_controller::resource::CanaryResource;
use coalmine_controller::{Config, ops::Metrics};
use coalmine_fakekube::{FakeApiServer, Options};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Result of the tests.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
/// Any error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A fake API server without the Canary CRD, and a client.
pub async fn bare_cluster() -> Result<(FakeApiServer, Client), BoxError> {
    let server = FakeApiServer::start(Options::default()).await?;
    let kc = Kubeconfig::from_yaml(&server.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok((server, Client::try_from(config)?))
}

/// A fake API server with the Canary CRD registered, and a client.
pub async fn cluster() -> Result<(FakeApiServer, Client), BoxError> {
    let mut opts = Options::default();
    opts.deployment_ready_delay = Duration::from_millis(150);
    opts.bookmark_interval = Duration::from_millis(500);
    let server = FakeApiServer::start(opts).await?;
    let kc = Kubeconfig::from_yaml(&server.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(coalmine_core::crd::definition())?;
    crds.create(&PostParams::default(), &crd).await?;
    Ok((server, client))
}

/// A running controller; `kill` stops it as a crash would (no cleanup).
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
}

impl Running {
    /// Stops it gracefully and waits.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }

    /// Aborts its task: no graceful shutdown, no Lease release.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Starts a controller.
pub fn controller(client: &Client, config: Config) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let metrics = Arc::new(Metrics::new());
    let task = tokio::spawn(coalmine_controller::run(
        client.clone(),
        config,
        metrics.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        stop: Some(tx),
        task,
        metrics,
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

/// Creates a Canary.
pub async fn create(client: &Client, name: &str, spec: Value) -> Result<(), BoxError> {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &CanaryResource::new("default", name, spec),
    )
    .await?;
    Ok(())
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs`.
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Canary's status as JSON (null when there is none).
pub async fn status(client: &Client, name: &str) -> Result<Value, BoxError> {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), "default");
    Ok(api.get(name).await?.status.unwrap_or(Value::Null))
}

/// Waits for the status phase.
pub async fn phase(client: &Client, name: &str, want: &str, secs: u64) -> Result<Value, BoxError> {
    eventually(secs, &format!("phase {want}"), || async {
        let s = status(client, name).await?;
        Ok((s["phase"] == want).then_some(s))
    })
    .await
}

/// A Deployment, if it exists.
pub async fn deployment(client: &Client, name: &str) -> Result<Option<Deployment>, BoxError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    Ok(api.get_opt(name).await?)
}

/// (replicas, first image) of a Deployment.
pub fn shape(d: &Deployment) -> (i32, String) {
    let spec = d.spec.clone().unwrap_or_default();
    let image = spec
        .template
        .spec
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
        .unwrap_or_default();
    (spec.replicas.unwrap_or(1), image)
}

/// Sets the Canary's image (a new revision).
pub async fn set_image(client: &Client, name: &str, image: &str) -> Result<(), BoxError> {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), "default");
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

/// A metrics webhook on loopback answering `{"value": V}` with the value
/// currently set (in thousandths), for threshold metrics.
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
