//! `coalmine sample-app`: a small HTTP server to put behind the proxy in
//! demos and tests, with a version to tell stable from canary, an error
//! rate and a latency to make one of them worse.
//!
//! This module parses the flags and serves until SIGTERM or Ctrl-C; the
//! server, and what it answers, is `coalmine_local::sample_app`, which the
//! demo also runs in process.

use std::net::SocketAddr;
use std::process::ExitCode;

use http::header::HeaderValue;
use tokio::net::TcpListener;

use coalmine_local::sample_app::{SampleConfig, serve};

/// Arguments of `coalmine sample-app`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Version reported in every answer (JSON `version` and the `x-sample-version` header).
    #[arg(long, value_name = "V", value_parser = parse_version)]
    version: String,
    /// Share of requests answered 500, as `0.05` or `5%` (0 to 1).
    #[arg(long, value_name = "P", default_value = "0", value_parser = parse_error_rate)]
    error_rate: f64,
    /// Delay before each answer, like `20ms`.
    #[arg(long, value_name = "DURATION", default_value = "0")]
    latency: coalmine_core::Duration,
    /// Uniform spread around --latency: each delay is latency ± up to this (never below 0).
    #[arg(long, value_name = "DURATION", default_value = "0")]
    latency_jitter: coalmine_core::Duration,
}

/// Runs the sample app until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> ExitCode {
    crate::commands::init_logs();
    let config = SampleConfig {
        version: args.version,
        error_rate: args.error_rate,
        latency: args.latency.to_std(),
        jitter: args.latency_jitter.to_std(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coalmine sample-app: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "coalmine sample-app: cannot listen on {} (--listen): {e}; pick a free address",
                    args.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let listen = listener.local_addr().unwrap_or(args.listen);
        tracing::info!(
            %listen,
            version = %config.version,
            error_rate = config.error_rate,
            latency = %args.latency,
            jitter = %args.latency_jitter,
            "coalmine sample-app serving"
        );
        serve(listener, config, async {
            crate::commands::terminated().await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
        })
        .await;
        ExitCode::SUCCESS
    })
}

/// `--error-rate`: `0.05` or `5%`, from 0 to 1.
fn parse_error_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    let rate = number
        .parse::<f64>()
        .map_err(|_| format!("`{s}` is not a number; write a share like 0.05 or 5%"))?
        / scale;
    if !rate.is_finite() || !(0.0..=1.0).contains(&rate) {
        return Err(format!(
            "`{s}` is outside 0 to 1 (0% to 100%); write a share like 0.05 or 5%"
        ));
    }
    Ok(rate)
}

/// `--version`: anything that fits in an HTTP header.
fn parse_version(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the version is empty; write one like v1 or 1.4.2".into());
    }
    if HeaderValue::from_str(s).is_err() {
        return Err(format!(
            "`{s}` cannot go in the x-sample-version header; use printable ASCII like v1 or 1.4.2"
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rates_as_shares_or_percents() {
        assert_eq!(parse_error_rate("0.05"), Ok(0.05));
        assert_eq!(parse_error_rate("5%"), Ok(0.05));
        assert_eq!(parse_error_rate("0"), Ok(0.0));
        assert_eq!(parse_error_rate("100%"), Ok(1.0));
        for bad in ["1.5", "-0.1", "101%", "five", "NaN", "inf", ""] {
            assert!(parse_error_rate(bad).is_err(), "{bad}");
        }
    }
}
