//! `coalmine run FILE`: local mode, a rollout in front of two HTTP servers
//! that already run. This module reads the flags and the Canary file (which
//! must name `spec.upstreams`) and hands them to the local controller,
//! `coalmine_local::run`, which runs the proxy, the rollout loop, the judge
//! and the admin API until the rollout ends or a signal stops it.
//!
//! Exit codes: 0 promoted, 2 rolled back, 1 error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use coalmine_core::plan::{Plan, Target};
use coalmine_core::spec::Canary;
use coalmine_local::run::{Options, Outcome, View, execute};

/// Arguments of `coalmine run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Canary file, with `spec.upstreams`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Address for traffic (default: `spec.upstreams.listen`, else 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the admin API (status, commands, routes, metrics).
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Save the status here after every change, and resume from it.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on the admin API, TOKEN being
    /// this file's first line.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Also serve GET /metrics (alone) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Sign sticky cookies with the secret in this file (at least 16
    /// bytes), so they stay valid across restarts [default: a random
    /// secret per process].
    #[arg(long, value_name = "FILE")]
    sticky_secret_file: Option<PathBuf>,
    /// Write the final status and the judge's history here as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Exit when the rollout ends instead of serving with the final routes.
    #[arg(long)]
    exit_on_finish: bool,
}

/// Runs a rollout from a file.
pub fn run(args: Args) -> ExitCode {
    super::init_logs();
    let Some(runtime) = super::runtime("run") else {
        return ExitCode::FAILURE;
    };
    let name = args.file.display().to_string();
    let loaded = match load(&args.file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let admin_token = match args
        .admin_token_file
        .as_deref()
        .map(coalmine_proxy::admin::read_token)
    {
        None => None,
        Some(Ok(token)) => Some(token),
        Some(Err(e)) => {
            eprintln!("coalmine run: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sticky_secret = match args.sticky_secret_file.as_deref() {
        None => None,
        Some(path) => match coalmine_proxy::read_sticky_secret(path) {
            Ok(secret) => Some(secret),
            Err(e) => {
                eprintln!("coalmine run: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let options = Options {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        sticky_secret,
        admin: args.admin,
        admin_token,
        state: args.state,
        report: args.report,
        exit_on_finish: args.exit_on_finish,
        on_finish: None,
        view: View::detect(),
        label: name,
    };
    runtime.block_on(async move {
        match execute(loaded.0, loaded.1, options, super::terminated()).await {
            Ok(outcome) => exit_code(outcome),
            Err(e) => {
                eprintln!("coalmine run: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn load(path: &Path) -> Result<(Canary, Plan), String> {
    let name = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read the file: {e}"))?;
    let (canary, plan, warnings) = coalmine_core::validate::load(&text).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| format!("{name}: {p}")).collect();
        lines.join("\n")
    })?;
    for w in warnings {
        eprintln!("{name}: {w}");
    }
    if !matches!(plan.target, Target::Local { .. }) {
        return Err(format!(
            "{name}: spec.template: coalmine run needs `spec.upstreams` (servers that already run); a pod template is for the Kubernetes controller"
        ));
    }
    Ok((canary, plan))
}

/// The exit code of a run that ended: 0 promoted, 2 rolled back, 1 stopped
/// early.
pub fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Promoted => ExitCode::SUCCESS,
        Outcome::RolledBack => ExitCode::from(2),
        Outcome::Stopped => ExitCode::FAILURE,
    }
}
