//! One module per subcommand (`control` serves get, promote, abort, pause,
//! resume and retry): its clap arguments, its entry point returning the
//! exit code, and what it prints. The work is in the library crates: local
//! mode in `coalmine_local`, Kubernetes in `coalmine_controller` (and
//! `kube_control` / `kube_dashboard` here, which talk to the API server as
//! the user). Below: the logging, runtime and signal helpers they share.

pub mod control;
pub mod controller;
pub mod crd;
pub mod demo;
pub mod kube_control;
pub mod kube_dashboard;
pub mod proxy;
pub mod proxy_routes;
pub mod run;
pub mod sample_app;
#[cfg(feature = "simulate")]
pub mod simulate;
pub mod status_text;
pub mod validate;

/// Logs to stderr; `RUST_LOG` sets the level (default `info`).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The runtime of a long-running command: two workers (the proxy, the
/// loop and the admin API share them); `None` after printing why not.
pub fn runtime(command: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("coalmine {command}: cannot start the runtime: {e}");
            None
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
