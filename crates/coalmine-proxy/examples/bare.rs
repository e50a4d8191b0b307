//! The proxy alone, for profiling the data path without building the whole
//! CLI (a release build of `coalmine` with fat LTO takes many minutes; this
//! one links only the proxy's dependencies).
//!
//! `cargo build --profile profiling -p coalmine-proxy --example bare`, then
//! `bare LISTEN STABLE_URL CANARY_URL WEIGHT`: one thread, no admin API,
//! stops on Ctrl-C or SIGTERM. Numbers that go in docs come from
//! `coalmine proxy` itself (`scripts/bench-proxy.sh`).

use std::time::Duration;

use coalmine_core::routes::Routes;
use coalmine_proxy::{Config, Proxy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, stable, canary, weight] = args.as_slice() else {
        return Err("usage: bare LISTEN STABLE_URL CANARY_URL WEIGHT".into());
    };
    let routes = Routes {
        canary_weight: weight.parse()?,
        ..Routes::default()
    };
    let proxy = Proxy::new(Config {
        stable: vec![stable.clone()],
        canary: vec![canary.clone()],
        routes,
        limits: Default::default(),
        sticky_secret: None,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            Ok::<(), std::io::Error>(())
        };
        proxy
            .serve(
                listener,
                async {
                    let _ = stop.await;
                },
                Duration::from_secs(1),
            )
            .await;
        Ok(())
    })
}
