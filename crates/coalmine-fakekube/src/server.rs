//! The HTTP side: routing of the Kubernetes REST paths, discovery, content
//! negotiation (JSON, YAML bodies, Table responses), patches, subresources
//! and chunked watch streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, channel::Channel, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::Options;
use crate::error::{ApiError, ApiResult};
use crate::patch;
use crate::registry::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, Filter, Store, Sub};
use crate::table;

/// Response bodies: whole, or streamed for watches.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// State shared by every connection.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub opts: Options,
    pub shutdown: watch::Receiver<bool>,
    pub addr: std::net::SocketAddr,
}

impl Shared {
    /// The store, even if a thread panicked while holding it.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

const MAX_BODY: usize = 16 << 20;

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn text_response(code: u16, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

/// The parsed parts of a request the handlers need.
struct Ctx {
    method: Method,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    body: Bytes,
}

impl Ctx {
    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }

    fn table(&self) -> bool {
        table::wants_table(&self.accept)
    }

    /// The request body as JSON (or YAML for `application/yaml`).
    fn body_value(&self) -> ApiResult<Value> {
        let ct = self
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        match ct {
            "" | "application/json" | "*/*" => serde_json::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}"))),
            "application/yaml" | "application/x-yaml" | "text/yaml" => parse_yaml(&self.body),
            other => Err(ApiError::unsupported_media(other)),
        }
    }
}

fn parse_yaml(b: &[u8]) -> ApiResult<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(b) {
        return Ok(v);
    }
    let text = std::str::from_utf8(b).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("invalid YAML in request body: {e}")))
}

/// Serves one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error_response(&ApiError::too_large())),
    };
    let hdr = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let ctx = Ctx {
        method: parts.method.clone(),
        query: parse_query(parts.uri.query()),
        accept: hdr(header::ACCEPT),
        content_type: hdr(header::CONTENT_TYPE),
        body,
    };
    let path = parts.uri.path().to_owned();
    tracing::debug!(method = %ctx.method, %path, query = ?parts.uri.query(), "request");
    let resp = match route(&shared, &path, &ctx).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(method = %ctx.method, %path, status = resp.status().as_u16(), "response");
    Ok(resp)
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-fakekube",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn only_get(ctx: &Ctx) -> ApiResult<()> {
    if ctx.method == Method::GET {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(ctx.method.as_str()))
    }
}

async fn route(shared: &Arc<Shared>, path: &str, ctx: &Ctx) -> ApiResult<Response<Body>> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => {
            only_get(ctx)?;
            Ok(json_response(200, &version_info()))
        }
        ["healthz"] | ["readyz"] | ["livez"] => Ok(text_response(200, "ok")),
        ["openapi", "v3"] => {
            only_get(ctx)?;
            Ok(json_response(
                200,
                &crate::openapi::root(&shared.lock().registry),
            ))
        }
        ["openapi", "v3", "api", v] | ["openapi", "v3", "apis", "", v] => {
            only_get(ctx)?;
            crate::openapi::gv_doc(&shared.lock().registry, "", v)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::path_not_found)
        }
        ["openapi", "v3", "apis", g, v] => {
            only_get(ctx)?;
            crate::openapi::gv_doc(&shared.lock().registry, g, v)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::path_not_found)
        }
        ["api"] => {
            only_get(ctx)?;
            Ok(json_response(
                200,
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}],
                }),
            ))
        }
        ["apis"] => {
            only_get(ctx)?;
            let store = shared.lock();
            let groups: Vec<Value> = store
                .registry
                .groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| group_json(&g, &vs))
                .collect();
            Ok(json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ))
        }
        ["apis", g] => {
            only_get(ctx)?;
            let store = shared.lock();
            let found = store.registry.groups().into_iter().find(|(n, _)| n == g);
            match found {
                Some((n, vs)) => {
                    let mut v = group_json(&n, &vs);
                    v["kind"] = json!("APIGroup");
                    v["apiVersion"] = json!("v1");
                    Ok(json_response(200, &v))
                }
                None => Err(ApiError::path_not_found()),
            }
        }
        ["api", v, rest @ ..] => resource_route(shared, "", v, rest, ctx).await,
        ["apis", g, v, rest @ ..] => resource_route(shared, g, v, rest, ctx).await,
        _ => Err(ApiError::path_not_found()),
    }
}

fn group_json(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": g,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// Where a request points.
enum Target {
    /// A collection; `ns` is `None` for all namespaces or a cluster scope.
    Collection {
        def: ResourceDef,
        ns: Option<String>,
    },
    /// One object, or one of its subresources.
    Object {
        def: ResourceDef,
        ns: String,
        name: String,
        sub: Option<String>,
    },
}

async fn resource_route(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let (rest, legacy_watch) = match rest.split_first() {
        Some((&"watch", r)) => (r, true),
        _ => (rest, false),
    };
    let target = {
        let store = shared.lock();
        let reg = &store.registry;
        if rest.is_empty() {
            only_get(ctx)?;
            let resources = reg.resources(group, version);
            if resources.is_empty() {
                return Err(ApiError::path_not_found());
            }
            let list: Vec<Value> = resources.iter().flat_map(|d| d.discovery()).collect();
            let gv = if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            };
            return Ok(json_response(
                200,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
            ));
        }
        let get = |p: &str| reg.get(group, version, p).cloned();
        let namespaced_collection = |p: &str| get(p).filter(|d| d.namespaced);
        match rest {
            [p] => {
                let def = get(p).ok_or_else(ApiError::path_not_found)?;
                Target::Collection { def, ns: None }
            }
            ["namespaces", ns, p] if namespaced_collection(p).is_some() => Target::Collection {
                def: namespaced_collection(p).ok_or_else(ApiError::path_not_found)?,
                ns: Some((*ns).to_owned()),
            },
            ["namespaces", ns, p, name] => Target::Object {
                def: namespaced_collection(p).ok_or_else(ApiError::path_not_found)?,
                ns: (*ns).to_owned(),
                name: (*name).to_owned(),
                sub: None,
            },
            ["namespaces", ns, p, name, sub] => Target::Object {
                def: namespaced_collection(p).ok_or_else(ApiError::path_not_found)?,
                ns: (*ns).to_owned(),
                name: (*name).to_owned(),
                sub: Some((*sub).to_owned()),
            },
            [p, name] | [p, name, _] => {
                let def = get(p)
                    .filter(|d| !d.namespaced)
                    .ok_or_else(ApiError::path_not_found)?;
                Target::Object {
                    def,
                    ns: String::new(),
                    name: (*name).to_owned(),
                    sub: rest.get(2).map(|s| (*s).to_owned()),
                }
            }
            _ => return Err(ApiError::path_not_found()),
        }
    };
    match target {
        Target::Collection { def, ns } => {
            let watching = legacy_watch || truthy(&ctx.query, "watch");
            match ctx.method {
                Method::GET if watching => Ok(watch(shared, &def, ns, ctx)?),
                Method::GET => list(shared, &def, ns.as_deref(), ctx),
                Method::POST => {
                    let ns = ns.unwrap_or_default();
                    if def.namespaced && ns.is_empty() {
                        return Err(ApiError::method_not_allowed("POST"));
                    }
                    let obj = ctx.body_value()?;
                    let out = shared.lock().create(&def, &ns, obj, ctx.dry_run())?;
                    Ok(json_response(201, &out))
                }
                Method::DELETE => delete_collection(shared, &def, ns.as_deref(), ctx),
                _ => Err(ApiError::method_not_allowed(ctx.method.as_str())),
            }
        }
        Target::Object { def, ns, name, sub } => {
            if legacy_watch {
                let mut q = ctx.query.clone();
                q.insert("fieldSelector".into(), format!("metadata.name={name}"));
                let c = Ctx {
                    method: ctx.method.clone(),
                    query: q,
                    accept: ctx.accept.clone(),
                    content_type: ctx.content_type.clone(),
                    body: ctx.body.clone(),
                };
                let nso = def.namespaced.then_some(ns);
                return watch(shared, &def, nso, &c);
            }
            match sub.as_deref() {
                None => object(shared, &def, &ns, &name, Sub::Main, ctx),
                Some("status") if def.status => object(shared, &def, &ns, &name, Sub::Status, ctx),
                Some("scale") if def.scale.is_some() => scale(shared, &def, &ns, &name, ctx),
                _ => Err(ApiError::path_not_found()),
            }
        }
    }
}

fn encode_continue(k: &(String, String)) -> String {
    format!("{}\n{}", k.0, k.1)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(s: &str) -> ApiResult<(String, String)> {
    let bad = || ApiError::bad_request("invalid continue token");
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (a, b) = text.split_once('\n').ok_or_else(bad)?;
    Ok((a.to_owned(), b.to_owned()))
}

fn selectors(ctx: &Ctx) -> ApiResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(ctx.query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(ctx.query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn list(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    ns: Option<&str>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let (labels, fields) = selectors(ctx)?;
    let limit = match ctx.query.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => match l.parse::<usize>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => return Err(ApiError::bad_request(format!("invalid limit {l:?}"))),
        },
        None => None,
    };
    let after = match ctx.query.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => Some(decode_continue(c)?),
        None => None,
    };
    let store = shared.lock();
    let page = store.list(def, ns, &labels, &fields, limit, after.as_ref());
    let mut meta = json!({"resourceVersion": store.current_rv().to_string()});
    drop(store);
    if let Some(next) = &page.next {
        meta["continue"] = json!(encode_continue(next));
        meta["remainingItemCount"] = json!(page.remaining);
    }
    if ctx.table() {
        let include = ctx
            .query
            .get("includeObject")
            .map_or("Metadata", String::as_str);
        return Ok(json_response(
            200,
            &table::table(def, &page.items, include, meta),
        ));
    }
    Ok(json_response(
        200,
        &json!({
            "kind": def.list_kind,
            "apiVersion": def.api_version(),
            "metadata": meta,
            "items": page.items,
        }),
    ))
}

fn delete_options(ctx: &Ctx) -> ApiResult<(Option<String>, Option<String>, bool)> {
    let mut dry = ctx.dry_run();
    if ctx.body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None, dry));
    }
    let v = ctx.body_value()?;
    let pre = |k: &str| {
        v.pointer(&format!("/preconditions/{k}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if v.get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == "All"))
    {
        dry = true;
    }
    Ok((pre("uid"), pre("resourceVersion"), dry))
}

fn delete_collection(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    ns: Option<&str>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let (labels, fields) = selectors(ctx)?;
    let (_, _, dry) = delete_options(ctx)?;
    let mut store = shared.lock();
    let page = store.list(def, ns, &labels, &fields, None, None);
    let mut items = Vec::new();
    for o in page.items {
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ons = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match store.delete(def, ons, name, None, None, dry) {
            Ok(d) => items.push(d),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rv = store.current_rv();
    Ok(json_response(
        200,
        &json!({"kind": def.list_kind, "apiVersion": def.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    ))
}

fn object(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Sub,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    if def.namespaced && ns.is_empty() {
        return Err(ApiError::path_not_found());
    }
    match ctx.method {
        Method::GET => {
            let o = shared.lock().get(def, ns, name)?;
            if ctx.table() {
                let include = ctx
                    .query
                    .get("includeObject")
                    .map_or("Metadata", String::as_str);
                let rv = o
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                return Ok(json_response(
                    200,
                    &table::table(
                        def,
                        std::slice::from_ref(&o),
                        include,
                        json!({"resourceVersion": rv}),
                    ),
                ));
            }
            Ok(json_response(200, &o))
        }
        Method::PUT => {
            let obj = ctx.body_value()?;
            let (out, created) = shared
                .lock()
                .update(def, ns, name, obj, sub, ctx.dry_run())?;
            Ok(json_response(if created { 201 } else { 200 }, &out))
        }
        Method::PATCH => {
            let (out, created) = apply_patch(shared, def, ns, name, sub, ctx)?;
            Ok(json_response(if created { 201 } else { 200 }, &out))
        }
        Method::DELETE if sub == Sub::Main => {
            let (uid, rv, dry) = delete_options(ctx)?;
            let out = shared
                .lock()
                .delete(def, ns, name, uid.as_deref(), rv.as_deref(), dry)?;
            Ok(json_response(200, &out))
        }
        _ => Err(ApiError::method_not_allowed(ctx.method.as_str())),
    }
}

/// The patched form of `cur` for a non-apply patch type.
fn patched(def: &ResourceDef, cur: &Value, ctx: &Ctx, strict: bool) -> ApiResult<Value> {
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let body: Value = match ct {
        "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_slice(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in patch: {e}")))?,
        other => return Err(ApiError::unsupported_media(other)),
    };
    let mut out = cur.clone();
    match ct {
        "application/merge-patch+json" => patch::merge_patch(&mut out, &body),
        "application/json-patch+json" => patch::json_patch(&mut out, &body).map_err(|e| {
            let mut err = ApiError::invalid(&def.group, &def.kind, "", &[]);
            err.message =
                format!("the server rejected our request due to an error in our request: {e}");
            err
        })?,
        _ if def.custom && strict => return Err(ApiError::unsupported_media(ct)),
        _ if def.custom => patch::merge_patch(&mut out, &body),
        _ => patch::strategic_merge(&mut out, &body),
    }
    if !out.is_object() {
        return Err(ApiError::bad_request(
            "the patch produced something other than an object",
        ));
    }
    Ok(out)
}

fn apply_patch(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Sub,
    ctx: &Ctx,
) -> ApiResult<(Value, bool)> {
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let mut store = shared.lock();
    if ct == "application/apply-patch+yaml" {
        let manager = ctx.query.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            )
        })?;
        let body = parse_yaml(&ctx.body)?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the apply configuration must be an object",
            ));
        }
        let force = truthy(&ctx.query, "force");
        return store.apply(def, ns, name, body, manager, force, sub, ctx.dry_run());
    }
    if !matches!(
        ct,
        "application/merge-patch+json"
            | "application/json-patch+json"
            | "application/strategic-merge-patch+json"
    ) {
        return Err(ApiError::unsupported_media(ct));
    }
    let cur = store.get(def, ns, name)?;
    let new = patched(def, &cur, ctx, shared.opts.strict_strategic_merge)?;
    store.update(def, ns, name, new, sub, ctx.dry_run())
}

fn scale_of(def: &ResourceDef, o: &Value) -> Value {
    let sd = def
        .scale
        .clone()
        .unwrap_or_else(|| crate::registry::ScaleDef {
            spec_path: ".spec.replicas".into(),
            status_path: ".status.replicas".into(),
            selector_path: None,
        });
    let spec = crate::jsonpath::first(o, &sd.spec_path)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status = crate::jsonpath::first(o, &sd.status_path)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let selector = match &sd.selector_path {
        Some(p) => crate::jsonpath::first(o, p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        None if !def.custom => o
            .pointer("/spec/selector")
            .map(crate::selector::selector_string)
            .unwrap_or_default(),
        None => String::new(),
    };
    let m = o.get("metadata").cloned().unwrap_or(json!({}));
    let mut meta = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = m.get(f) {
            meta[f] = v.clone();
        }
    }
    let mut status_v = json!({"replicas": status});
    if !selector.is_empty() {
        status_v["selector"] = json!(selector);
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
           "spec": {"replicas": spec}, "status": status_v})
}

fn scale(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let mut store = shared.lock();
    let cur = store.get(def, ns, name)?;
    let cur_scale = scale_of(def, &cur);
    let new_scale = match ctx.method {
        Method::GET => return Ok(json_response(200, &cur_scale)),
        Method::PUT => ctx.body_value()?,
        Method::PATCH => {
            let ct = ctx
                .content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            if ct == "application/apply-patch+yaml" {
                let mut s = cur_scale.clone();
                patch::deep_merge(&mut s, &parse_yaml(&ctx.body)?);
                s
            } else {
                let mut scale_def = def.clone();
                scale_def.custom = true;
                patched(&scale_def, &cur_scale, ctx, false)?
            }
        }
        _ => return Err(ApiError::method_not_allowed(ctx.method.as_str())),
    };
    let Some(replicas) = new_scale.pointer("/spec/replicas").and_then(Value::as_i64) else {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            &[("spec.replicas".into(), "Required value".into())],
        ));
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            &[(
                "spec.replicas".into(),
                "Invalid value: must be greater than or equal to 0".into(),
            )],
        ));
    }
    let mut obj = cur;
    let spec_path = def
        .scale
        .as_ref()
        .map_or(".spec.replicas", |s| s.spec_path.as_str());
    crate::jsonpath::set(&mut obj, spec_path, json!(replicas));
    let rv = new_scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    obj["metadata"]["resourceVersion"] = json!(rv);
    let (out, _) = store.update(def, ns, name, obj, Sub::Main, ctx.dry_run())?;
    Ok(json_response(200, &scale_of(def, &out)))
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn watch(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    ns: Option<String>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let (labels, fields) = selectors(ctx)?;
    let filter = Filter {
        key: def.storage_key(),
        namespace: ns.clone(),
        labels: labels.clone(),
        fields: fields.clone(),
    };
    let bookmarks = truthy(&ctx.query, "allowWatchBookmarks");
    let send_initial = truthy(&ctx.query, "sendInitialEvents");
    let timeout = ctx
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let as_table = ctx.table();
    let rv_param = ctx
        .query
        .get("resourceVersion")
        .cloned()
        .unwrap_or_default();
    let mut first: Vec<Bytes> = Vec::new();
    let mut expired = None;
    let (rx, start) = {
        let store = shared.lock();
        let current = store.current_rv();
        let rx = store.subscribe();
        let wrap = |o: &Value| -> Value {
            if as_table {
                table::table(def, std::slice::from_ref(o), "Object", json!({}))
            } else {
                o.clone()
            }
        };
        if send_initial || rv_param.is_empty() || rv_param == "0" {
            let page = store.list(def, ns.as_deref(), &labels, &fields, None, None);
            for o in &page.items {
                first.push(event_line("ADDED", &wrap(o)));
            }
            if send_initial {
                first.push(event_line(
                    "BOOKMARK",
                    &json!({"kind": def.kind, "apiVersion": def.api_version(),
                            "metadata": {"resourceVersion": current.to_string(),
                                         "annotations": {"k8s.io/initial-events-end": "true"}}}),
                ));
            }
        } else {
            let rv: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version {rv_param:?}"))
            })?;
            match store.events_since(rv) {
                Ok(evs) => {
                    for ev in evs {
                        if let Some(t) = filter.translate(&ev) {
                            let o = Store::versioned(def, &ev.object);
                            first.push(event_line(t, &wrap(&o)));
                        }
                    }
                }
                Err(e) => expired = Some(e),
            }
        }
        (rx, current)
    };
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(64);
    let mut shutdown = shared.shutdown.clone();
    let bookmark_every = shared.opts.bookmark_interval;
    let def = def.clone();
    tokio::spawn(async move {
        if let Some(e) = expired {
            let _ = tx.send_data(event_line("ERROR", &e.to_status())).await;
            return;
        }
        for line in first {
            if tx.send_data(line).await.is_err() {
                return;
            }
        }
        stream_events(
            tx,
            rx,
            filter,
            def,
            start,
            bookmarks,
            bookmark_every,
            timeout,
            as_table,
            &mut shutdown,
        )
        .await;
    });
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn stream_events(
    mut tx: http_body_util::channel::Sender<Bytes, Infallible>,
    mut rx: broadcast::Receiver<Arc<Event>>,
    filter: Filter,
    def: ResourceDef,
    mut seen_rv: u64,
    bookmarks: bool,
    every: Duration,
    timeout: Option<Duration>,
    as_table: bool,
    shutdown: &mut watch::Receiver<bool>,
) {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.tick().await;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = until_deadline => return,
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {
                if bookmarks {
                    let bm = json!({"kind": def.kind, "apiVersion": def.api_version(),
                                    "metadata": {"resourceVersion": seen_rv.to_string(), "creationTimestamp": null}});
                    if tx.send_data(event_line("BOOKMARK", &bm)).await.is_err() {
                        return;
                    }
                }
            }
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    seen_rv = seen_rv.max(ev.rv);
                    if let Some(t) = filter.translate(&ev) {
                        let o = Store::versioned(&def, &ev.object);
                        let o = if as_table {
                            table::table(&def, std::slice::from_ref(&o), "Object", json!({}))
                        } else {
                            o
                        };
                        if tx.send_data(event_line(t, &o)).await.is_err() {
                            return;
                        }
                    }
                }
                // A watcher that fell behind ends; the client resumes from
                // the last resourceVersion it saw.
                Err(_) => return,
            },
        }
    }
}
