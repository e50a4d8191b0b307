//! `coalmine proxy`: the data plane alone, configured by flags or by a
//! Canary file's `upstreams`, with routes changed through the admin API,
//! or read from a Kubernetes ConfigMap (`--routes-configmap`,
//! [`super::proxy_routes`]) when it is the `proxy` router's replica.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use coalmine_core::Duration;
use coalmine_core::routes::Routes;
use coalmine_proxy::{Config, Limits, Proxy, admin};
use tokio::net::TcpListener;

use super::proxy_routes;

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Arguments of `coalmine proxy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve traffic on [default: the file's upstreams.listen, else 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Stable upstream URLs (round-robin).
    #[arg(long, value_name = "URL", num_args = 1..)]
    stable: Vec<String>,
    /// Canary upstream URLs (round-robin).
    #[arg(long, value_name = "URL", num_args = 1..)]
    canary: Vec<String>,
    /// Percent of traffic to the canary at start.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    weight: u8,
    /// Take the routes from this ConfigMap's `routes.json`, following its
    /// changes (PUT /routes is then refused); everything goes to stable,
    /// and /readyz answers 503, until the first valid one is read.
    #[arg(long, value_name = "NAME")]
    routes_configmap: Option<String>,
    /// The ConfigMap's namespace [default: the pod's, else the kubeconfig
    /// context's, else `default`].
    #[arg(long, value_name = "NS", requires = "routes_configmap")]
    namespace: Option<String>,
    /// A kubeconfig file for --routes-configmap [default: KUBECONFIG,
    /// ~/.kube/config, in-cluster].
    #[arg(long, value_name = "FILE", requires = "routes_configmap")]
    kubeconfig: Option<PathBuf>,
    /// Worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
    /// Admin API address (GET/PUT /routes, /healthz, /readyz, /metrics).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on the admin API, TOKEN being
    /// this file's first line.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Also serve GET /metrics, /healthz and /readyz (alone) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Sign sticky cookies with the secret in this file (at least 16
    /// bytes), so they stay valid across restarts and across replicas
    /// given the same file [default: a random secret per process].
    #[arg(long, value_name = "FILE")]
    sticky_secret_file: Option<PathBuf>,
    /// A Canary file: its spec.upstreams give the pools (flags override).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Time allowed to connect to an upstream.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    connect_timeout: Duration,
    /// Time allowed for an upstream's response headers.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    request_timeout: Duration,
    /// On SIGTERM, time given to requests in flight.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    grace: Duration,
}

/// Runs the proxy until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> ExitCode {
    crate::commands::init_logs();
    let (config, listen) = match configure(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("coalmine proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coalmine proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = match args.admin_token_file.as_deref().map(admin::read_token) {
        None => None,
        Some(Ok(token)) => Some(token),
        Some(Err(e)) => {
            eprintln!("coalmine proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addrs = Addrs {
        listen,
        admin: args.admin,
        metrics: args.metrics_listen,
    };
    let routes_from = args.routes_configmap.clone().map(|name| RoutesFrom {
        name,
        namespace: args.namespace.clone(),
        kubeconfig: args.kubeconfig.clone(),
    });
    runtime.block_on(serve(config, addrs, token, routes_from, args.grace))
}

/// `--routes-configmap` and the flags that locate it.
struct RoutesFrom {
    name: String,
    namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
}

/// Where `coalmine proxy` listens.
struct Addrs {
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: Option<SocketAddr>,
}

fn configure(args: &Args) -> Result<(Config, SocketAddr), String> {
    let mut stable = args.stable.clone();
    let mut canary = args.canary.clone();
    let mut listen = args.listen;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the file: {e}", path.display()))?;
        let canary_doc = coalmine_core::load::parse_canary(&text).map_err(|problems| {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect();
            lines.join("\n")
        })?;
        let up = canary_doc.spec.upstreams.ok_or_else(|| {
            format!(
                "{}: spec.upstreams is missing; the proxy needs stable and canary URLs",
                path.display()
            )
        })?;
        if stable.is_empty() {
            stable = up.stable;
        }
        if canary.is_empty() {
            canary = up.canary;
        }
        if let (None, Some(l)) = (listen, up.listen) {
            listen = Some(l.parse().map_err(|_| {
                format!(
                    "{}: spec.upstreams.listen: `{l}` is not an address like 127.0.0.1:8080",
                    path.display()
                )
            })?);
        }
    }
    if let Some(name) = &args.routes_configmap {
        proxy_routes::check_name("--routes-configmap", name)?;
    }
    if let Some(ns) = &args.namespace {
        proxy_routes::check_name("--namespace", ns)?;
    }
    if args.routes_configmap.is_some() && args.weight != 0 {
        return Err(format!(
            "--weight {} and --routes-configmap: the routes come from the ConfigMap; drop --weight",
            args.weight
        ));
    }
    if stable.is_empty() || canary.is_empty() {
        return Err(
            "give --stable URL and --canary URL (or --config FILE with spec.upstreams)".into(),
        );
    }
    let config = Config {
        stable,
        canary,
        routes: Routes {
            canary_weight: args.weight,
            ..Routes::default()
        },
        limits: Limits {
            connect_timeout: args.connect_timeout.to_std(),
            request_timeout: args.request_timeout.to_std(),
            ..Limits::default()
        },
        sticky_secret: args
            .sticky_secret_file
            .as_deref()
            .map(coalmine_proxy::read_sticky_secret)
            .transpose()?,
    };
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    Ok((config, listen.unwrap_or(default_listen)))
}

async fn serve(
    config: Config,
    addrs: Addrs,
    token: Option<String>,
    routes_from: Option<RoutesFrom>,
    grace: Duration,
) -> ExitCode {
    let Addrs {
        listen,
        admin,
        metrics,
    } = addrs;
    let mut proxy = match Proxy::new(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("coalmine proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let routes_watch = match routes_from {
        None => None,
        Some(from) => {
            let connected = proxy_routes::connect(
                &from.name,
                from.namespace.as_deref(),
                from.kubeconfig.as_deref(),
            )
            .await;
            match connected {
                Ok((source, client)) => {
                    proxy = proxy.with_routes_source(source.to_string());
                    Some((source, client))
                }
                Err(e) => {
                    eprintln!("coalmine proxy: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let data = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("coalmine proxy: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = match TcpListener::bind(admin).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("coalmine proxy: cannot listen on {admin} (admin): {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match metrics {
        None => None,
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("coalmine proxy: cannot listen on {addr} (metrics): {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let (stable, canary) = proxy.upstreams();
    tracing::info!(%listen, %admin, ?stable, ?canary, weight = proxy.routes().canary_weight, routes_from = proxy.routes_source().unwrap_or("the admin API"), "coalmine proxy serving");
    // Dropped (aborted) when `serve` returns: the watch ends with the proxy.
    let _watch = routes_watch.map(|(source, client)| {
        AbortOnDrop(tokio::spawn(proxy_routes::follow(
            proxy.clone(),
            client,
            source,
        )))
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin_task = tokio::spawn({
        let proxy = proxy.clone();
        let stop = stopped(stop_rx.clone());
        let guard = admin::Guard::new(admin, token);
        async move { proxy.serve_admin_with(control, guard, stop).await }
    });
    let metrics_task = metrics.map(|listener| {
        let proxy = proxy.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { proxy.serve_metrics(listener, stop).await })
    });
    let signal = async move {
        crate::commands::terminated().await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stop_tx.send(true);
    };
    tokio::join!(proxy.serve(data, signal, grace.to_std()), async {
        let _ = admin_task.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
    });
    let _ = stop_rx;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Args, String> {
        let argv = ["proxy", "--stable", "http://a", "--canary", "http://b"];
        Cli::try_parse_from(argv.iter().chain(args))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn routes_from_a_configmap_take_no_start_weight() {
        let args = parse(&["--routes-configmap", "web-proxy", "--weight", "10"]).unwrap();
        let e = configure(&args).unwrap_err();
        assert!(
            e.contains("--weight 10") && e.contains("--routes-configmap"),
            "{e}"
        );
        let args = parse(&["--routes-configmap", "web-proxy", "--weight", "0"]).unwrap();
        assert!(configure(&args).is_ok());
        for bad in ["", "Web", "a,metadata.namespace=b"] {
            let args = parse(&["--routes-configmap", bad]).unwrap();
            let e = configure(&args).unwrap_err();
            assert!(e.starts_with("--routes-configmap"), "{e}");
        }
        let args = parse(&["--routes-configmap", "c", "--namespace", "a/b"]).unwrap();
        let e = configure(&args).unwrap_err();
        assert!(e.starts_with("--namespace `a/b` is not"), "{e}");
        assert!(configure(&parse(&["--weight", "10"]).unwrap()).is_ok());
    }

    #[test]
    fn namespace_and_kubeconfig_need_routes_configmap() {
        for flag in ["--namespace", "--kubeconfig"] {
            let e = parse(&[flag, "x"]).err().unwrap_or_default();
            assert!(e.contains("--routes-configmap"), "{flag}: {e}");
        }
        let args = parse(&["--routes-configmap", "c", "--namespace", "ns"]).unwrap();
        assert_eq!(args.namespace.as_deref(), Some("ns"));
    }
}
