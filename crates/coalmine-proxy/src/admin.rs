//! The admin API: `GET/PUT /routes`, `GET /healthz`, `GET /metrics`.
//!
//! It listens on its own address (loopback unless told otherwise), so the
//! data port never exposes control. `PUT /routes` checks the whole table
//! first and swaps it in one store: a request sees the old table or the
//! new one, never a mix; an invalid body gets 400 with every reason and
//! changes nothing.

use bytes::Bytes;
use coalmine_core::routes::Routes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::Proxy;

/// Largest `PUT /routes` body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// Answers one admin request.
pub async fn handle(proxy: Proxy, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => {
            let mut resp = Response::new(Full::new(Bytes::from(proxy.metrics().encode())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        (&Method::GET, "/routes") => json(StatusCode::OK, &proxy.routes()),
        (&Method::PUT, "/routes") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("could not read the body: {e}\n"),
                    );
                }
            };
            let mut de = serde_json::Deserializer::from_slice(&body);
            let routes: Routes = match serde_path_to_error::deserialize(&mut de) {
                Ok(r) => r,
                Err(e) => {
                    let path = e.path().to_string();
                    let at = if path == "." {
                        String::new()
                    } else {
                        format!("{path}: ")
                    };
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "invalid routes: {at}{}; expected e.g. {{\"canaryWeight\": 10}}\n",
                            e.into_inner()
                        ),
                    );
                }
            };
            match proxy.set_routes(routes) {
                Ok(()) => json(StatusCode::OK, &proxy.routes()),
                Err(problems) => {
                    let lines: Vec<String> = problems
                        .iter()
                        .map(|p| format!("invalid routes: {p}\n"))
                        .collect();
                    text(StatusCode::BAD_REQUEST, &lines.concat())
                }
            }
        }
        (_, "/healthz" | "/metrics" | "/routes") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /routes, /healthz or /metrics\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}
