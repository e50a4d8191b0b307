//! `coalmine dashboard NAME`: the local-mode web dashboard for a Canary in
//! Kubernetes, served on loopback and acting with the user's own
//! kubeconfig, so RBAC decides what the page may read and do.
//!
//! Once a second it reads the Canary (status and spec) and, every other
//! second, its Events; the page's `/status` and `/events` answer from
//! those copies. Each new analysis (`status.analysis.evaluatedAt`) is kept
//! for `/history`, from the moment the dashboard started. The buttons post
//! to the same paths as in local mode and become the `coalmine.dev/command`
//! annotation, as `coalmine promote|abort|… NAME` does; the page sees the
//! outcome in the status and the Events. There is no `/traffic`: the
//! requests per version are in the router's metrics, not in the Canary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use coalmine_controller::resource::{COMMAND_ANNOTATION, CanaryResource};
use coalmine_core::Time;

use super::dashboard::{Board, PUBLIC_PATHS};

/// Events kept for `/events`, as local mode keeps.
const EVENTS_KEPT: usize = 200;

/// Arguments of `coalmine dashboard`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Canary's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Where to serve the page: a loopback address (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9902")]
    listen: SocketAddr,
}

/// What the server answers from, refreshed by the poller.
#[derive(Default)]
struct Seen {
    status: Option<Value>,
    events: Vec<Value>,
    /// Why the last read of the Canary failed, until one succeeds.
    error: Option<String>,
}

struct Shared {
    board: Board,
    seen: Mutex<Seen>,
    api: Api<CanaryResource>,
    name: String,
}

/// Serves the dashboard until interrupted.
pub fn run(args: Args) -> ExitCode {
    super::init_logs();
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "coalmine dashboard: --listen {} is not a loopback address: the page acts with your kubeconfig, so it is for you alone",
            args.listen
        );
        return ExitCode::FAILURE;
    }
    let Some(runtime) = super::runtime("dashboard") else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        match serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("coalmine dashboard: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn serve(args: Args) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no cluster found ({e}); set KUBECONFIG"))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), &namespace);
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let canary = api.get(&args.name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => format!(
            "Canary {namespace}/{} not found (kubectl get canaries -n {namespace})",
            args.name
        ),
        other => format!("Canary {namespace}/{}: {other}", args.name),
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (use --listen ADDR)", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("{}: {e}", args.listen))?;
    let label = format!("{namespace}/{}", args.name);
    let board = Board::from_spec(
        &args.name,
        &label,
        &canary.spec,
        &addr.to_string(),
        false,
        false,
    )
    .acting_as(identity());
    let shared = Arc::new(Shared {
        board,
        seen: Mutex::new(Seen::default()),
        api,
        name: args.name.clone(),
    });
    eprintln!("coalmine dashboard: {label} at http://{addr}/ (Ctrl-C to stop)");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(poll(shared.clone(), events, stop_rx.clone()));
    let guard = coalmine_proxy::admin::Guard::new(addr, None).with_public(PUBLIC_PATHS);
    let handler = move |req, _peer| answer(shared.clone(), req);
    let mut stop = stop_rx;
    coalmine_proxy::admin::serve(listener, guard, handler, async move {
        tokio::select! {
            _ = super::terminated() => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = poller.await;
    Ok(())
}

/// Who the kubeconfig says acts: its current context's user.
fn identity() -> String {
    let Ok(config) = kube::config::Kubeconfig::read() else {
        return "this process's Kubernetes credentials (RBAC decides what they may do)".into();
    };
    let context = config.current_context.clone().unwrap_or_default();
    let user = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
        .unwrap_or_else(|| "?".into());
    format!("the kubeconfig user `{user}` (context `{context}`; RBAC decides what it may do)")
}

/// Reads the Canary every second and its Events every other second.
async fn poll(
    shared: Arc<Shared>,
    events: Api<Event>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_analysis: Option<Value> = None;
    // Events are extra: a user whom RBAC denies them still sees the
    // status; the reason is logged once.
    let mut events_error: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let read = shared.api.get(&shared.name).await;
        let mut error = None;
        match read {
            Ok(object) => {
                let status = object.core_status();
                if let Some(analysis) = &status.analysis
                    && let Some(at) = analysis.evaluated_at
                {
                    let key = serde_json::to_value(at).unwrap_or_default();
                    if last_analysis.as_ref() != Some(&key) {
                        shared.board.judged(&json!({
                            "at": key,
                            "weight": status.weight,
                            "verdict": analysis.verdict,
                            "metrics": analysis.metrics,
                        }));
                        last_analysis = Some(key);
                    }
                }
                if let Ok(mut seen) = shared.seen.lock() {
                    seen.status = serde_json::to_value(&status).ok();
                }
            }
            Err(e) => error = Some(format!("reading the Canary: {e}")),
        }
        if round % 2 == 0 {
            let selector = format!("involvedObject.name={}", shared.name);
            match events.list(&ListParams::default().fields(&selector)).await {
                Ok(list) => {
                    let mut records: Vec<Value> = list.items.iter().map(record).collect();
                    records.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
                    let skip = records.len().saturating_sub(EVENTS_KEPT);
                    if let Ok(mut seen) = shared.seen.lock() {
                        seen.events = records.split_off(skip);
                    }
                    events_error = None;
                }
                Err(e) => {
                    let why = format!("listing Events: {e}");
                    if events_error.as_ref() != Some(&why) {
                        tracing::warn!("{why}; the page keeps the events last listed");
                    }
                    events_error = Some(why);
                }
            }
        }
        if let Ok(mut seen) = shared.seen.lock() {
            seen.error = error;
        }
    }
}

/// An Event in the shape of local mode's `/events`.
fn record(e: &Event) -> Value {
    let at = e
        .last_timestamp
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .or_else(|| {
            e.event_time
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
        })
        .or_else(|| {
            e.first_timestamp
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
        })
        .unwrap_or(Value::Null);
    json!({
        "at": at,
        "type": e.type_.as_deref().unwrap_or("Normal"),
        "reason": e.reason.as_deref().unwrap_or_default(),
        "message": e.message.as_deref().unwrap_or_default(),
    })
}

async fn answer(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(answer) = super::dashboard::handle(&shared.board, &req) {
        return answer;
    }
    let kind = match req.uri().path() {
        "/promote" | "/promote-full" | "/abort" | "/pause" | "/resume" | "/retry" => {
            Some(req.uri().path().trim_start_matches('/').to_owned())
        }
        _ => None,
    };
    match (req.method(), req.uri().path(), kind) {
        (&Method::GET, "/status" | "/events", _) => {
            let seen = shared.seen.lock().map(|s| {
                (
                    s.error.clone(),
                    s.status.clone(),
                    Value::Array(s.events.clone()),
                )
            });
            match seen {
                Ok((Some(error), _, _)) => text(StatusCode::BAD_GATEWAY, error),
                Ok((None, Some(status), events)) => {
                    json_response(if req.uri().path() == "/status" { &status } else { &events })
                }
                _ => text(StatusCode::SERVICE_UNAVAILABLE, "not read yet".into()),
            }
        }
        (&Method::POST, _, Some(kind)) => {
            let id = format!(
                "{kind}/{}-{}",
                Time::now().unix_millis(),
                std::process::id()
            );
            let patch = json!({"metadata": {"annotations": {COMMAND_ANNOTATION: id}}});
            match shared
                .api
                .patch(&shared.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    let mut resp = json_response(&json!({ "accepted": kind, "id": id }));
                    *resp.status_mut() = StatusCode::ACCEPTED;
                    resp
                }
                Err(kube::Error::Api(s)) if s.code == 403 => text(
                    StatusCode::FORBIDDEN,
                    format!("your kubeconfig may not patch this Canary: {}", s.message),
                ),
                Err(e) => text(StatusCode::BAD_GATEWAY, format!("patching the Canary: {e}")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: GET /, /status, /events, /history; POST /promote, /promote-full, /abort, /pause, /resume, /retry\n".into(),
        ),
    }
}

fn json_response(value: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
