//! `coalmine`: canary deployments for Kubernetes and for any two HTTP servers.
//!
//! This binary is a thin shell: it parses the command line and hands each
//! subcommand to a module under [`commands`], which reads its flags, calls
//! into the library crates (`coalmine-core` for specs and decisions,
//! `coalmine-local` for local mode, `coalmine-controller` for Kubernetes,
//! `coalmine-proxy` for the proxy alone) and prints. Exit codes: 0 success,
//! 1 error (bad input included); `coalmine run` adds 2 for a rollback.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

use coalmine_core::rollout::CommandKind;

/// Canary deployments: shift traffic step by step, judge the canary against
/// stable, promote or roll back.
#[derive(Debug, Parser)]
#[command(
    name = "coalmine",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  coalmine demo                        a canary rollout on this machine, in about a minute\n  coalmine validate canary.yaml        every problem of a Canary file, with the fix\n  coalmine run canary.yaml             a rollout in front of two HTTP servers\n  coalmine get --admin http://127.0.0.1:9901 --watch\n\n`coalmine help COMMAND` shows a command's options and an example."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Canary files and name every bad field.
    #[command(
        after_help = "Example:\n  coalmine validate examples/local.yaml examples/kubernetes/*.yaml"
    )]
    Validate(commands::validate::Args),
    /// Run the traffic-splitting proxy alone, with its admin API.
    #[command(
        after_help = "Example:\n  coalmine proxy --listen 127.0.0.1:8080 --stable http://127.0.0.1:9001 --canary http://127.0.0.1:9002 --weight 10"
    )]
    Proxy(commands::proxy::Args),
    /// Run a canary rollout in front of two HTTP servers (local mode).
    #[command(
        after_help = "Example:\n  coalmine run examples/local.yaml --state shop-rollout.json"
    )]
    Run(commands::run::Args),
    /// The whole story on one machine: two sample apps, traffic, a rollout.
    #[command(after_help = "Example:\n  coalmine demo --scenario faulty --speed 2")]
    Demo(commands::demo::Args),
    /// Show a rollout's status (`--admin URL`: a running `coalmine run`).
    #[command(
        after_help = "Examples:\n  coalmine get --admin http://127.0.0.1:9901 --watch\n  coalmine get shop -n prod              (Kubernetes: the current kubeconfig)"
    )]
    Get(commands::control::GetArgs),
    /// End the current step now (`--full`: skip all remaining steps).
    #[command(
        after_help = "Examples:\n  coalmine promote --admin http://127.0.0.1:9901\n  coalmine promote shop -n prod --full"
    )]
    Promote(commands::control::PromoteArgs),
    /// Roll back now.
    #[command(
        after_help = "Examples:\n  coalmine abort --admin http://127.0.0.1:9901\n  coalmine abort shop -n prod"
    )]
    Abort(commands::control::CommandArgs),
    /// Hold the rollout where it is (the judge keeps watching).
    #[command(
        after_help = "Examples:\n  coalmine pause --admin http://127.0.0.1:9901\n  coalmine pause shop -n prod"
    )]
    Pause(commands::control::CommandArgs),
    /// Continue a paused rollout.
    #[command(
        after_help = "Examples:\n  coalmine resume --admin http://127.0.0.1:9901\n  coalmine resume shop -n prod"
    )]
    Resume(commands::control::CommandArgs),
    /// Start a rolled-back rollout again from its first step.
    #[command(
        after_help = "Examples:\n  coalmine retry --admin http://127.0.0.1:9901\n  coalmine retry shop -n prod"
    )]
    Retry(commands::control::CommandArgs),
    /// The Kubernetes controller: reconciles Canary resources.
    #[command(
        after_help = "Example:\n  coalmine controller --kubeconfig ~/.kube/config --no-leader-election --text-logs"
    )]
    Controller(commands::controller::Args),
    /// A small HTTP app for demos and tests.
    #[command(
        after_help = "Example:\n  coalmine sample-app --listen 127.0.0.1:9002 --version v2 --error-rate 5%"
    )]
    SampleApp(commands::sample_app::Args),
    /// Compare the judge with the peers' rules on simulated traffic.
    #[command(after_help = "Example:\n  coalmine simulate --rps 10 --canary-errors 1% --runs 200")]
    #[cfg(feature = "simulate")]
    Simulate(Box<commands::simulate::Args>),
    /// Serve the web dashboard of a Canary in Kubernetes (or, without NAME,
    /// the list of Canaries you may read) on loopback, acting with your
    /// kubeconfig.
    #[command(
        after_help = "Examples:\n  coalmine dashboard shop -n prod      (then open http://127.0.0.1:9902/)\n  coalmine dashboard -A                (every Canary you may read, by namespace)"
    )]
    Dashboard(commands::kube_dashboard::Args),
    /// Print the Canary CustomResourceDefinition (YAML) for `kubectl apply -f -`.
    #[command(after_help = "Example:\n  coalmine crd | kubectl apply -f -")]
    Crd(commands::crd::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap exits 2 on usage errors; coalmine keeps 2 for "rolled
            // back", so usage errors exit 1 like every other error.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Validate(args) => commands::validate::run(&args),
        Command::Proxy(args) => commands::proxy::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Get(args) => commands::control::get(&args),
        Command::Promote(args) => commands::control::promote(&args),
        Command::Abort(args) => commands::control::command_with(&args, CommandKind::Abort),
        Command::Pause(args) => commands::control::command_with(&args, CommandKind::Pause),
        Command::Resume(args) => commands::control::command_with(&args, CommandKind::Resume),
        Command::Retry(args) => commands::control::command_with(&args, CommandKind::Retry),
        Command::Controller(args) => commands::controller::run(args),
        Command::SampleApp(args) => commands::sample_app::run(args),
        #[cfg(feature = "simulate")]
        Command::Simulate(args) => commands::simulate::run(&args),
        Command::Crd(args) => commands::crd::run(&args),
        Command::Dashboard(args) => commands::kube_dashboard::run(args),
    }
}
