//! The admin API of a local run, on `--admin`: `GET /status` (with
//! `stateError` while `--state` cannot be written), `GET /events` (the last
//! [`EVENTS_KEPT`], each tagged with the id of the command that caused it),
//! `POST /promote`, `/promote-full`, `/abort`, `/pause`, `/resume`,
//! `/retry` (answered with the command's id), `GET /metrics`, the web
//! dashboard ([`crate::dashboard`]), and the proxy's own admin API
//! (`/routes`) for everything else; and [`Shared`], what it and the
//! rollout loop share.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::sync::mpsc;

use coalmine_core::Time;
use coalmine_core::rollout::{Command, CommandKind};
use coalmine_core::status::CanaryStatus;
use coalmine_proxy::Proxy;

use crate::dashboard::{self, Board};
use crate::view::Screen;

/// Events kept for `GET /events`.
pub(crate) const EVENTS_KEPT: usize = 200;

/// An event as `GET /events` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventRecord {
    pub(crate) at: Time,
    /// `Normal` or `Warning`, as Kubernetes Events.
    #[serde(rename = "type")]
    pub(crate) type_: &'static str,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// The id of the command whose decision emitted it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) command: Option<String>,
}

/// What the admin API and the loop share.
pub(crate) struct Shared {
    pub(crate) status: Mutex<CanaryStatus>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// Numbers the commands, with the start time, so ids never repeat
    /// across restarts with the same `--state`.
    pub(crate) command_seq: std::sync::atomic::AtomicU64,
    pub(crate) started: Time,
    pub(crate) events: Mutex<std::collections::VecDeque<EventRecord>>,
    /// The live block on the terminal, which event lines push down.
    pub(crate) screen: Mutex<Screen>,
    /// Why the last `--state` write failed, until one succeeds.
    pub(crate) state_error: Mutex<Option<String>>,
    /// The web dashboard's series (judged intervals, traffic).
    pub(crate) board: Board,
}

/// The admin API of a run: the proxy's, plus status, commands and the
/// dashboard.
pub(crate) async fn handle(
    proxy: Proxy,
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let command = CommandKind::from_path(req.uri().path());
    if let Some(answer) = dashboard::handle(&shared.board, &req) {
        return answer;
    }
    match (req.method(), req.uri().path(), command) {
        (&Method::GET, "/status", _) => status_json(&shared),
        (&Method::GET, "/metrics", _) => shared.board.metrics(&proxy),
        (&Method::GET, "/events", _) => {
            let events: Vec<EventRecord> = shared
                .events
                .lock()
                .map(|e| e.iter().cloned().collect())
                .unwrap_or_default();
            respond(
                StatusCode::OK,
                serde_json::to_vec(&events).unwrap_or_default(),
                true,
            )
        }
        (&Method::POST, _, Some(kind)) => {
            let seq = shared
                .command_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = format!("{}-{}", shared.started.unix_millis(), seq + 1);
            let command = Command {
                id: id.clone(),
                kind,
            };
            if shared.commands.send(command).is_err() {
                return respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    b"shutting down\n".to_vec(),
                    false,
                );
            }
            let body = serde_json::json!({ "accepted": kind.name(), "id": id });
            respond(StatusCode::ACCEPTED, body.to_string().into_bytes(), true)
        }
        (_, "/status" | "/events", _) | (_, _, Some(_)) => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            b"use GET /status, GET /events and POST /promote, /promote-full, /abort, /pause, /resume, /retry\n"
                .to_vec(),
            false,
        ),
        _ => coalmine_proxy::admin::handle(proxy, req).await,
    }
}

/// `GET /status`: the status, and `stateError` while `--state` cannot be written.
fn status_json(shared: &Shared) -> Response<Full<Bytes>> {
    let status = shared.status.lock().map(|s| s.clone()).unwrap_or_default();
    let mut value = serde_json::to_value(&status).unwrap_or_default();
    let error = shared.state_error.lock().ok().and_then(|e| e.clone());
    if let (Some(error), Some(object)) = (error, value.as_object_mut()) {
        object.insert("stateError".into(), error.into());
    }
    respond(
        StatusCode::OK,
        serde_json::to_vec(&value).unwrap_or_default(),
        true,
    )
}

fn respond(status: StatusCode, body: Vec<u8>, json: bool) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        }),
    );
    resp
}
