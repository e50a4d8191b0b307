//! `coalmine get | promote | abort | pause | resume | retry`: a person's
//! view of a rollout and their commands to it.
//!
//! With `--admin URL` they talk to a running `coalmine run` (or `coalmine
//! demo`) through its admin API: `GET /status`, `GET /events`, `POST
//! /promote` and the rest. A command is acknowledged with an id; the
//! client then waits until the rollout has handled that id (the status's
//! `lastCommand`) and reports what it did, from the events tagged with the
//! id. A command the rollout ignores (e.g. `resume` when nothing is
//! paused) exits 1 with the reason, so scripts can tell.
//!
//! Without `--admin` they address a Canary in Kubernetes by NAME through
//! the current kubeconfig ([`super::kube_control`]).

use std::process::ExitCode;
use std::time::Duration;

use http::{Method, StatusCode};
use serde::Deserialize;

use coalmine_core::Time;
use coalmine_core::rollout::CommandKind;
use coalmine_core::status::CanaryStatus;

use super::status_text::{Output, headline, render};
use coalmine_local::http::{Base, call};

/// How long one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command may wait to be handled.
const HANDLED_WITHIN: Duration = Duration::from_secs(10);
/// `get --watch` polls this often.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Which rollout to address.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The Canary's name (Kubernetes); not needed with --admin.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The admin API of a running `coalmine run` or `coalmine demo`, like http://127.0.0.1:9901.
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// Namespace (Kubernetes).
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,
    /// With --admin: a file whose first line is the admin API's token (the
    /// one given to `coalmine run --admin-token-file`).
    #[arg(long, value_name = "FILE", requires = "admin")]
    admin_token_file: Option<std::path::PathBuf>,
}

/// The admin API at `url`, with the target's token if it names one.
async fn admin_base(url: &str, target: &Target) -> Result<Base, String> {
    let mut base = Base::parse(url, "--admin").await?;
    if let Some(path) = &target.admin_token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--admin-token-file {}: cannot read: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(format!(
                "--admin-token-file {}: the first line is empty; write the token there",
                path.display()
            ));
        }
        base.token = Some(token.to_owned());
    }
    Ok(base)
}

/// Arguments of `coalmine get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    target: Target,
    /// Keep printing the status whenever it changes, until the run ends.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Output: text, or json (the status document).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Arguments of `coalmine promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    target: Target,
    /// Skip every remaining step and promote now (default: end the current step).
    #[arg(long)]
    full: bool,
}

/// Arguments of `coalmine abort|pause|resume|retry`.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    #[command(flatten)]
    target: Target,
}

/// `coalmine promote`.
pub fn promote(args: &PromoteArgs) -> ExitCode {
    let kind = if args.full {
        CommandKind::PromoteFull
    } else {
        CommandKind::Promote
    };
    command(&args.target, kind)
}

/// `coalmine abort|pause|resume|retry`.
pub fn command_with(args: &CommandArgs, kind: CommandKind) -> ExitCode {
    command(&args.target, kind)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Finishes a command: prints the error and picks the exit code.
fn finish(word: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coalmine {word}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where a command goes: a running `coalmine run`, or a Canary in Kubernetes.
enum Destination {
    Admin(String),
    Kubernetes {
        name: String,
        namespace: Option<String>,
    },
}

fn destination(target: &Target, word: &str) -> Result<Destination, String> {
    match (&target.admin, &target.name) {
        (Some(url), _) => Ok(Destination::Admin(url.clone())),
        (None, Some(name)) => Ok(Destination::Kubernetes {
            name: name.clone(),
            namespace: target.namespace.clone(),
        }),
        (None, None) => Err(format!(
            "name the Canary (coalmine {word} NAME [-n NAMESPACE]) or, for a running `coalmine run` or `coalmine demo`, pass its admin address: coalmine {word} --admin http://127.0.0.1:9901"
        )),
    }
}

fn command(target: &Target, kind: CommandKind) -> ExitCode {
    let word = kind.name();
    let result = destination(target, word).and_then(|dest| {
        runtime()?.block_on(async {
            match dest {
                Destination::Admin(url) => {
                    let base = admin_base(&url, target).await?;
                    send(&base, kind).await
                }
                Destination::Kubernetes { name, namespace } => {
                    super::kube_control::Addressed::connect(&name, namespace.as_deref())
                        .await?
                        .send(kind)
                        .await
                }
            }
        })
    });
    finish(word, result)
}

/// What `POST /<command>` answers.
#[derive(Debug, Deserialize)]
struct Accepted {
    id: String,
}

/// One event from `GET /events`.
#[derive(Debug, Deserialize)]
struct EventRecord {
    #[serde(rename = "type")]
    type_: String,
    reason: String,
    message: String,
    #[serde(default)]
    command: Option<String>,
}

async fn send(base: &Base, kind: CommandKind) -> Result<(), String> {
    let path = format!("/{kind}");
    let (code, body) = call(base, Method::POST, &path, CALL_TIMEOUT).await?;
    if code != StatusCode::ACCEPTED {
        return Err(format!(
            "the admin API answered {code}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let accepted: Accepted = serde_json::from_slice(&body).map_err(|e| {
        format!("the admin API's answer is not a command receipt ({e}); is --admin the address of `coalmine run`?")
    })?;
    let deadline = tokio::time::Instant::now() + HANDLED_WITHIN;
    let status = loop {
        let status = fetch_status(base).await?;
        if status.last_command.as_deref() == Some(accepted.id.as_str()) {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "sent, but not handled within {}s (command {})",
                HANDLED_WITHIN.as_secs(),
                accepted.id
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, body) = call(base, Method::GET, "/events", CALL_TIMEOUT).await?;
    let events: Vec<EventRecord> = if code == StatusCode::OK {
        serde_json::from_slice(&body).unwrap_or_default()
    } else {
        Vec::new()
    };
    let mine: Vec<&EventRecord> = events
        .iter()
        .filter(|e| e.command.as_deref() == Some(accepted.id.as_str()))
        .collect();
    if let Some(ignored) = mine.iter().find(|e| e.reason == "CommandIgnored") {
        return Err(format!("ignored: {}", ignored.message));
    }
    println!("{}: done", kind.name());
    for e in mine {
        println!("  {} {}: {}", e.type_, e.reason, e.message);
    }
    println!("  now: {}", headline(&status));
    Ok(())
}

async fn fetch_status(base: &Base) -> Result<CanaryStatus, String> {
    let (code, body) = call(base, Method::GET, "/status", CALL_TIMEOUT).await?;
    if code != StatusCode::OK {
        return Err(format!(
            "GET /status answered {code}: {}; is --admin the address of `coalmine run`?",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        format!("GET /status did not return a rollout status ({e}); is --admin the address of `coalmine run`?")
    })
}

/// `coalmine get`.
pub fn get(args: &GetArgs) -> ExitCode {
    let result = destination(&args.target, "get").and_then(|dest| {
        runtime()?.block_on(async {
            let url = match dest {
                Destination::Admin(url) => url,
                Destination::Kubernetes { name, namespace } => {
                    return super::kube_control::Addressed::connect(&name, namespace.as_deref())
                        .await?
                        .get(args.watch, args.output)
                        .await;
                }
            };
            let base = admin_base(&url, &args.target).await?;
            let mut last = String::new();
            let mut seen = false;
            loop {
                let status = match fetch_status(&base).await {
                    Ok(s) => s,
                    // The run ended while being watched: that is the end.
                    Err(_) if seen && args.watch => {
                        println!("({url} is gone: the run has ended)");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                seen = true;
                let shown = match args.output {
                    Output::Text => render(&status),
                    Output::Json => serde_json::to_string(&status).unwrap_or_default() + "\n",
                };
                if shown != last {
                    if args.watch && args.output == Output::Text {
                        println!("--- {}", Time::now());
                    }
                    print!("{shown}");
                    last = shown;
                }
                if !args.watch {
                    return Ok(());
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
        })
    });
    finish("get", result)
}
