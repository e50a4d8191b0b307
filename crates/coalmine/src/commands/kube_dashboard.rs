//! `coalmine dashboard [NAME]`: the web dashboard of local mode (its page
//! and series are `coalmine_local::dashboard`'s) for Canaries in
//! Kubernetes, served on loopback and acting with the user's own
//! kubeconfig, so RBAC decides what the page may read and do.
//!
//! Without a NAME the page at `/` lists the Canaries of a namespace (or,
//! with `--all-namespaces`, of every namespace the user may read), and
//! each links to its own view under `/c/NAMESPACE/NAME/`, which is the
//! single-Canary page below, started on first visit and stopped when no
//! one has looked at it for [`IDLE`].
//!
//! Once a second it reads the Canary (status and spec) and, every other
//! second, its Events; the page's `/status` and `/events` answer from
//! those copies. Each new analysis (`status.analysis.evaluatedAt`) is kept
//! for `/history`, from the moment the dashboard started. The buttons post
//! to the same paths as in local mode and become the `coalmine.dev/command`
//! annotation, as `coalmine promote|abort|… NAME` does; the page sees the
//! outcome in the status and the Events. `/traffic` is derived from the
//! judge's running counts in each analysis (requests and bad events per
//! version, of the first metric that reports them): the Canary carries no
//! finer traffic figures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use coalmine_controller::resource::{COMMAND_ANNOTATION, CanaryResource};
use coalmine_core::Time;
use coalmine_core::rollout::CommandKind;

use coalmine_local::dashboard::{self, Board, PUBLIC_PATHS};

/// Events kept for `/events`, as local mode keeps.
const EVENTS_KEPT: usize = 200;

/// How long a Canary's view in the list mode keeps reading the Canary
/// after its page last asked for anything.
const IDLE: Duration = Duration::from_secs(60);

/// How often the list mode looks again which namespaces it may read, when
/// it may not list Canaries cluster-wide.
const REDISCOVER: Duration = Duration::from_secs(30);

/// Arguments of `coalmine dashboard`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Canary's name; without it the page lists the Canaries you may
    /// read, each linking to its view.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// List the Canaries of every namespace you may read (no NAME).
    #[arg(short = 'A', long, conflicts_with_all = ["name", "namespace"])]
    all_namespaces: bool,
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
    /// When its page last asked for anything (Unix ms).
    last_asked: AtomicI64,
}

/// The list mode: which Canaries the page lists, and the views opened
/// from it.
struct Lister {
    client: kube::Client,
    /// The one namespace listed, or `None` for every namespace.
    namespace: Option<String>,
    addr: String,
    identity: String,
    views: tokio::sync::Mutex<HashMap<(String, String), Arc<Shared>>>,
    /// With `--all-namespaces` and no right to list Canaries cluster-wide:
    /// when the namespaces were last looked at, those whose Canaries may
    /// be listed, and how many there were.
    #[allow(clippy::type_complexity)]
    readable: tokio::sync::Mutex<Option<(std::time::Instant, Vec<String>, usize)>>,
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
    let Some(name) = args.name.clone() else {
        return serve_list(args, client, namespace).await;
    };
    let canary = read_canary(&client, &namespace, &name).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (use --listen ADDR)", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("{}: {e}", args.listen))?;
    let label = format!("{namespace}/{name}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (shared, poller) = watch(
        &client,
        &namespace,
        &name,
        &canary,
        &addr.to_string(),
        identity(),
        None,
        stop_rx.clone(),
    );
    eprintln!("coalmine dashboard: {label} at http://{addr}/ (Ctrl-C to stop)");
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

/// Reads the Canary, or says why not in words for the terminal.
async fn read_canary(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<CanaryResource, String> {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), namespace);
    api.get(name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!("Canary {namespace}/{name} not found (kubectl get canaries -n {namespace})")
        }
        other => format!("Canary {namespace}/{name}: {other}"),
    })
}

/// The view of one Canary and the task that keeps it read, until `stop`
/// (or, in the list mode, until it is idle).
#[allow(clippy::too_many_arguments)]
fn watch(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    canary: &CanaryResource,
    addr: &str,
    identity: String,
    list_url: Option<&str>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<Shared>, tokio::task::JoinHandle<()>) {
    let label = format!("{namespace}/{name}");
    let mut board =
        Board::from_spec(name, &label, &canary.spec, addr, false, true).acting_as(identity);
    if let Some(url) = list_url {
        board = board.listed_at(url);
    }
    let shared = Arc::new(Shared {
        board,
        seen: Mutex::new(Seen::default()),
        api: Api::namespaced(client.clone(), namespace),
        name: name.to_owned(),
        last_asked: AtomicI64::new(Time::now().unix_millis()),
    });
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let idle = list_url.map(|_| IDLE);
    let poller = tokio::spawn(poll(shared.clone(), events, stop, idle));
    (shared, poller)
}

/// Serves the list of Canaries and the views opened from it.
async fn serve_list(args: Args, client: kube::Client, namespace: String) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (use --listen ADDR)", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("{}: {e}", args.listen))?;
    let scope = if args.all_namespaces {
        "every namespace you may read".to_owned()
    } else {
        format!("namespace {namespace}")
    };
    let lister = Arc::new(Lister {
        client,
        namespace: (!args.all_namespaces).then_some(namespace),
        addr: addr.to_string(),
        identity: identity(),
        views: tokio::sync::Mutex::new(HashMap::new()),
        readable: tokio::sync::Mutex::new(None),
    });
    eprintln!("coalmine dashboard: the Canaries of {scope} at http://{addr}/ (Ctrl-C to stop)");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let guard = coalmine_proxy::admin::Guard::new(addr, None).with_public(PUBLIC_PATHS);
    let stop_views = stop_rx.clone();
    let handler = move |req, _peer| answer_list(lister.clone(), stop_views.clone(), req);
    coalmine_proxy::admin::serve(listener, guard, handler, async move {
        super::terminated().await;
    })
    .await;
    let _ = stop_tx.send(true);
    Ok(())
}

/// A row of the list: what the page shows of one Canary.
fn row(c: &CanaryResource) -> Value {
    let status = c.core_status();
    let steps = c.spec["steps"].as_array().map_or(0, Vec::len);
    json!({
        "namespace": c.metadata.namespace.as_deref().unwrap_or_default(),
        "name": c.name(),
        "phase": status.phase,
        "weight": status.weight,
        "step": status.step,
        "steps": steps,
        "verdict": status.analysis.as_ref().map(|a| a.verdict),
        "message": status.message,
    })
}

/// The Canaries the kubeconfig may list: `{canaries: [...], note}`, the
/// rows sorted by namespace and name. For every namespace, a user who
/// may not list Canaries cluster-wide gets those of each namespace they
/// may list them in, as far as they may list namespaces.
async fn list(lister: &Lister) -> Result<Value, (StatusCode, String)> {
    let forbidden = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
    let failed = |e: kube::Error| (StatusCode::BAD_GATEWAY, format!("listing Canaries: {e}"));
    let mut rows = Vec::new();
    let mut note = None;
    match &lister.namespace {
        Some(ns) => {
            let api: Api<CanaryResource> = Api::namespaced(lister.client.clone(), ns);
            match api.list(&ListParams::default()).await {
                Ok(l) => rows.extend(l.items.iter().map(row)),
                Err(e) if forbidden(&e) => {
                    return Err((
                        StatusCode::FORBIDDEN,
                        format!("your kubeconfig may not list Canaries in namespace {ns}"),
                    ));
                }
                Err(e) => return Err(failed(e)),
            }
        }
        None => {
            let api: Api<CanaryResource> = Api::all(lister.client.clone());
            match api.list(&ListParams::default()).await {
                Ok(l) => rows.extend(l.items.iter().map(row)),
                Err(e) if forbidden(&e) => {
                    let (readable, total) = readable_namespaces(lister).await?;
                    for ns in &readable {
                        let api: Api<CanaryResource> = Api::namespaced(lister.client.clone(), ns);
                        match api.list(&ListParams::default()).await {
                            Ok(l) => rows.extend(l.items.iter().map(row)),
                            // Rights taken away since they were looked up.
                            Err(e) if forbidden(&e) => {}
                            Err(e) => return Err(failed(e)),
                        }
                    }
                    note = Some(format!(
                        "{} of {total} namespaces are not readable with your kubeconfig",
                        total - readable.len()
                    ));
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }
    rows.sort_by(|a, b| {
        (a["namespace"].as_str(), a["name"].as_str())
            .cmp(&(b["namespace"].as_str(), b["name"].as_str()))
    });
    Ok(json!({"canaries": rows, "note": note, "identity": lister.identity}))
}

/// The namespaces whose Canaries the kubeconfig may list, and how many
/// namespaces there are: looked up (a list of each) at most every
/// [`REDISCOVER`], so polling costs one request per readable namespace.
async fn readable_namespaces(
    lister: &Lister,
) -> Result<(Vec<String>, usize), (StatusCode, String)> {
    let mut known = lister.readable.lock().await;
    if let Some((at, readable, total)) = known.as_ref()
        && at.elapsed() < REDISCOVER
    {
        return Ok((readable.clone(), *total));
    }
    let forbidden = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
    let namespaces: Api<Namespace> = Api::all(lister.client.clone());
    let all = namespaces
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            if forbidden(&e) {
                (
                    StatusCode::FORBIDDEN,
                    "your kubeconfig may list Canaries in no namespace at once, nor list the namespaces: start with -n NAMESPACE".to_owned(),
                )
            } else {
                (StatusCode::BAD_GATEWAY, format!("listing namespaces: {e}"))
            }
        })?;
    let mut readable = Vec::new();
    for ns in all.items.iter().filter_map(|n| n.metadata.name.as_deref()) {
        let api: Api<CanaryResource> = Api::namespaced(lister.client.clone(), ns);
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => readable.push(ns.to_owned()),
            Err(e) if forbidden(&e) => {}
            Err(e) => return Err((StatusCode::BAD_GATEWAY, format!("listing Canaries: {e}"))),
        }
    }
    let total = all.items.len();
    *known = Some((std::time::Instant::now(), readable.clone(), total));
    Ok((readable, total))
}

/// Answers the list mode: `/`, `/canaries`, and each Canary's view under
/// `/c/NAMESPACE/NAME/`.
async fn answer_list(
    lister: Arc<Lister>,
    stop: tokio::sync::watch::Receiver<bool>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/c/") {
        let mut parts = rest.splitn(3, '/');
        let (Some(ns), Some(name)) = (parts.next(), parts.next()) else {
            return text(
                StatusCode::NOT_FOUND,
                "not found: /c/NAMESPACE/NAME/\n".into(),
            );
        };
        let Some(sub) = parts.next() else {
            // Its page's requests are relative to the trailing slash.
            let mut resp = text(StatusCode::PERMANENT_REDIRECT, String::new());
            if let Ok(to) = HeaderValue::from_str(&format!("{path}/")) {
                resp.headers_mut().insert(http::header::LOCATION, to);
            }
            return resp;
        };
        let (ns, name, sub) = (ns.to_owned(), name.to_owned(), format!("/{sub}"));
        let shared = match view(&lister, &ns, &name, stop).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        shared
            .last_asked
            .store(Time::now().unix_millis(), Ordering::Relaxed);
        let (mut parts, body) = req.into_parts();
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        match format!("{sub}{query}").parse() {
            Ok(uri) => parts.uri = uri,
            Err(_) => return text(StatusCode::BAD_REQUEST, "a malformed path\n".into()),
        }
        return answer(shared, Request::from_parts(parts, body)).await;
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/") => dashboard::asset(
            include_str!("../../assets/dashboard/list.html"),
            "text/html; charset=utf-8",
        ),
        (&Method::GET, "/dashboard/list.js") => dashboard::asset(
            include_str!("../../assets/dashboard/list.js"),
            "text/javascript; charset=utf-8",
        ),
        (&Method::GET, "/canaries") => match list(&lister).await {
            Ok(v) => json_response(&v),
            Err((code, why)) => text(code, why),
        },
        (&Method::GET, p) => dashboard::static_file(p).unwrap_or_else(|| {
            text(
                StatusCode::NOT_FOUND,
                "not found: GET /, /canaries, /c/NAMESPACE/NAME/\n".into(),
            )
        }),
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into()),
    }
}

/// The view of Canary `ns/name`, started if it is not running.
async fn view(
    lister: &Lister,
    ns: &str,
    name: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<Shared>, Response<Full<Bytes>>> {
    let key = (ns.to_owned(), name.to_owned());
    let mut views = lister.views.lock().await;
    if let Some(s) = views.get(&key)
        && !s.board.is_closed()
    {
        return Ok(s.clone());
    }
    let canary = match read_canary(&lister.client, ns, name).await {
        Ok(c) => c,
        Err(why) => return Err(text(StatusCode::NOT_FOUND, why)),
    };
    let (shared, _poller) = watch(
        &lister.client,
        ns,
        name,
        &canary,
        &lister.addr,
        lister.identity.clone(),
        Some("/"),
        stop,
    );
    views.insert(key, shared.clone());
    Ok(shared)
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

/// Reads the Canary every second and its Events every other second,
/// until `stop`, or until its page has asked for nothing for `idle`.
async fn poll(
    shared: Arc<Shared>,
    events: Api<Event>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    idle: Option<Duration>,
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
        if let Some(idle) = idle {
            let asked = shared.last_asked.load(Ordering::Relaxed);
            if Time::now().unix_millis() - asked > idle.as_millis() as i64 {
                shared.board.close();
                return;
            }
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
                        let counts = analysis.metrics.iter().find_map(|m| {
                            Some([
                                m.stable_requests?,
                                m.stable_events?,
                                m.canary_requests?,
                                m.canary_events?,
                            ])
                        });
                        if let Some(counts) = counts {
                            shared.board.counted(at.unix_millis(), counts);
                        }
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
    if let Some(answer) = dashboard::handle(&shared.board, &req) {
        return answer;
    }
    let kind = CommandKind::from_path(req.uri().path());
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
                    let mut resp = json_response(&json!({ "accepted": kind.as_str(), "id": id }));
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
