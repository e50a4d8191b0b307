//! `coalmine-fakekube`: runs the fake Kubernetes API server until Ctrl-C,
//! optionally writing a kubeconfig for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use coalmine_fakekube::{FakeApiServer, Options};

/// A fake Kubernetes API server on loopback, for tests.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for the server here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Milliseconds before the Deployment stand-in reports readiness.
    #[arg(long, default_value_t = 200)]
    ready_delay_ms: u64,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_secs: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut opts = Options::default();
    opts.listen = args.listen;
    opts.deployment_ready_delay = Duration::from_millis(args.ready_delay_ms);
    opts.bookmark_interval = Duration::from_secs(args.bookmark_secs.max(1));
    let server = FakeApiServer::start(opts).await?;
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path)?;
    }
    println!("{}", server.url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
