//! `coalmine controller`: the Kubernetes controller, as deployed by
//! `deploy/` (one Deployment, two replicas, one of them leader).
//!
//! Connects with the usual kubeconfig search (`--kubeconfig`, `KUBECONFIG`,
//! `~/.kube/config`, then the in-cluster service account), serves
//! `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`, and runs the
//! reconciler of `coalmine-controller` until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use coalmine_controller::leader::Election;
use coalmine_controller::ops::{self, Metrics};

/// Arguments of `coalmine controller`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Watch only this namespace (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// A kubeconfig file (default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Act without leader election (only with a single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// The Lease's namespace (default: the pod's, else `default`).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// The Lease's name.
    #[arg(long, default_value = "coalmine-controller")]
    lease_name: String,
    /// Seconds a Lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity (default: the pod name from HOSTNAME).
    #[arg(long)]
    identity: Option<String>,
    /// How many Canaries are reconciled at once.
    #[arg(long, default_value_t = coalmine_controller::DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..))]
    concurrent_reconciles: u16,
    /// Log as text instead of JSON.
    #[arg(long)]
    text_logs: bool,
    /// Connect to IP:PORT whenever a metric provider's URL names
    /// HOST:PORT (repeatable), e.g.
    /// `prometheus.monitoring:9090=127.0.0.1:9090` through a `kubectl
    /// port-forward`, for a controller running outside the cluster.
    #[arg(long, value_name = "HOST:PORT=IP:PORT")]
    resolve: Vec<coalmine_providers::AddressOverride>,
    /// The image of the proxy router's Deployments (`NAME-proxy`); default
    /// this release's `ghcr.io/coalmine-dev/coalmine:VERSION`.
    /// `deploy/deployment.yaml` passes the controller's own image.
    #[arg(long, value_name = "IMAGE", default_value_t = coalmine_controller::router::proxy::default_image())]
    proxy_image: String,
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> ExitCode {
    coalmine_controller::logs::init(!args.text_logs);
    let Some(runtime) = super::runtime("controller") else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        match execute(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // One line, in the log format chosen: stderr stays JSON lines.
                tracing::error!("coalmine controller: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("no cluster found ({e}); set KUBECONFIG, pass --kubeconfig, or run in a pod")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))
}

/// The pod's namespace, from its service account, when in a cluster.
fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

async fn execute(args: Args) -> Result<(), String> {
    for o in &args.resolve {
        tracing::info!(host = %o.host, port = o.port, addr = %o.addr, "provider address overridden (--resolve)");
    }
    coalmine_providers::set_address_overrides(args.resolve.clone());
    let client = client(args.kubeconfig.as_ref()).await?;
    let metrics = Arc::new(Metrics::new());
    let listener = ops::bind(args.metrics_addr).await.map_err(|e| {
        format!(
            "cannot listen on {} (--metrics-addr): {e}",
            args.metrics_addr
        )
    })?;
    let election = (!args.no_leader_election).then(|| Election {
        namespace: args
            .lease_namespace
            .clone()
            .or_else(pod_namespace)
            .unwrap_or_else(|| "default".into()),
        name: args.lease_name.clone(),
        identity: args.identity.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("coalmine-{}", std::process::id()))
        }),
        duration: Duration::from_secs(args.lease_seconds.max(1)),
    });
    let config = coalmine_controller::Config {
        namespace: args.namespace.clone(),
        election,
        concurrency: args.concurrent_reconciles,
        proxy_image: args.proxy_image.clone(),
        ..coalmine_controller::Config::default()
    };
    tracing::info!(metrics = %args.metrics_addr, namespace = ?args.namespace, proxy_image = %args.proxy_image, "coalmine controller starting");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let ops_task = tokio::spawn(ops::serve(listener, metrics.clone(), stopped()));
    let controller = tokio::spawn(coalmine_controller::run(client, config, metrics, stopped()));
    super::terminated().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = controller.await;
    let _ = ops_task.await;
    Ok(())
}
