//! The `gatewayAPI` router: weights on the backendRefs of the user's
//! HTTPRoute (`gateway.networking.k8s.io/v1`).
//!
//! Only the rules that send to the stable Service `NAME` are touched: the
//! stable backendRef gets weight `100 - w`, a backendRef to `NAME-canary`
//! (same port) is added with weight `w`, and a `RequestMirror` filter to the
//! canary carries `setMirror`'s percent. Header routes become one extra
//! rule per stable rule, named `coalmine-canary-headers` (then `-2`, `-3`,
//! …) and placed first, in the stable rules' order: each is a copy of its
//! stable rule (its filters, such as rewrites and header modifiers, its
//! timeouts and retries) whose matches are the stable rule's matches
//! (paths, methods, query parameters) combined with each header (cookies
//! as a regular expression on the `Cookie` header), sending to the canary
//! only. So a tester's request takes the same path through the route as
//! a user's, only to the canary. All stable removes every trace: the
//! canary backendRefs, the mirror filters and the header rules. The rest
//! of the route (other rules, parents, hostnames, other filters) is left
//! alone.

use coalmine_core::routes::{HeaderMatch, Routes, whole_value};
use futures_util::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use super::{RouteTarget, TrafficRouter};
use crate::Error;

/// The name of the rule coalmine adds for header routes.
pub const HEADER_RULE: &str = "coalmine-canary-headers";

/// The Gateway API router.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    /// The HTTPRoute's name.
    pub http_route: String,
}

/// The HTTPRoute resource.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

fn refers_to(backend: &Value, service: &str) -> bool {
    backend.get("name").and_then(Value::as_str) == Some(service)
        && backend
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(|k| k == "Service")
        && backend
            .get("group")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
}

fn is_canary_mirror(filter: &Value, canary: &str) -> bool {
    filter.get("type").and_then(Value::as_str) == Some("RequestMirror")
        && filter
            .pointer("/requestMirror/backendRef")
            .is_some_and(|b| refers_to(b, canary))
}

/// An HTTPRoute header match for one of coalmine's header routes.
fn header_match(m: &HeaderMatch) -> Value {
    match (&m.header, &m.cookie, &m.value, &m.regex) {
        (Some(h), _, Some(v), _) => json!({"type": "Exact", "name": h, "value": v}),
        (Some(h), _, None, Some(r)) => {
            json!({"type": "RegularExpression", "name": h, "value": whole_value(r)})
        }
        (None, Some(c), value, regex) => {
            let v = match (value, regex) {
                (Some(v), _) => regex_escape(v),
                (None, Some(r)) => format!("(?:{r})"),
                (None, None) => String::new(),
            };
            json!({"type": "RegularExpression", "name": "Cookie",
                   "value": format!("(^|;\\s*){}={v}(;|$)", regex_escape(c))})
        }
        _ => json!({"type": "Exact", "name": "x-coalmine-never", "value": "never"}),
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `name` is one of coalmine's header rules' names.
fn is_header_rule_name(name: &str) -> bool {
    name == HEADER_RULE
        || name
            .strip_prefix(HEADER_RULE)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| n.parse::<u32>().is_ok())
}

/// Whether `rule` is one of coalmine's header rules: named so, or, where
/// the installed CRD prunes `rules[].name` (Gateway API before v1.3), a
/// rule that sends only to the canary Service, which only coalmine writes.
fn is_header_rule(rule: &Value, canary: &str) -> bool {
    if rule
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(is_header_rule_name)
    {
        return true;
    }
    rule.get("backendRefs")
        .and_then(Value::as_array)
        .is_some_and(|refs| !refs.is_empty() && refs.iter().all(|b| refers_to(b, canary)))
}

/// `spec` without what the API server adds or drops on its own: backendRef
/// defaults (`group: ""`, `kind: Service`, `weight: 1`) and the header
/// rule's name. Two specs equal after this need no write.
pub fn normalized(spec: &Value) -> Value {
    fn backend(b: &mut Value) {
        if let Some(o) = b.as_object_mut() {
            if o.get("group").and_then(Value::as_str) == Some("") {
                o.remove("group");
            }
            if o.get("kind").and_then(Value::as_str) == Some("Service") {
                o.remove("kind");
            }
            if o.get("weight").and_then(Value::as_i64) == Some(1) {
                o.remove("weight");
            }
        }
    }
    let mut spec = spec.clone();
    for rule in spec
        .get_mut("rules")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(r) = rule.as_object_mut() else {
            continue;
        };
        if r.get("name")
            .and_then(Value::as_str)
            .is_some_and(is_header_rule_name)
        {
            r.remove("name");
        }
        for b in r
            .get_mut("backendRefs")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            backend(b);
        }
        for f in r
            .get_mut("filters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(b) = f.pointer_mut("/requestMirror/backendRef") {
                backend(b);
            }
        }
    }
    spec
}

/// Whether any rule of the route's spec sends to Service `service`.
pub fn sends_to(spec: &Value, service: &str) -> bool {
    spec.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("backendRefs").and_then(Value::as_array))
        .flatten()
        .any(|b| refers_to(b, service))
}

/// The route's spec with `routes` in effect (pure).
pub fn rewrite(spec: &Value, stable: &str, canary: &str, routes: &Routes) -> Value {
    let mut spec = spec.clone();
    let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) else {
        return spec;
    };
    rules.retain(|r| !is_header_rule(r, canary));
    let live = routes.reaches_canary();
    let w = i64::from(routes.canary_weight.min(100));
    // Each stable rule as the header rules copy it: without the canary
    // mirror (a request routed to the canary is not mirrored to it).
    let mut carried: Vec<(Value, Option<Value>)> = Vec::new();
    for rule in rules.iter_mut() {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
            continue;
        };
        let Some(stable_ref) = refs.iter_mut().find(|b| refers_to(b, stable)) else {
            continue;
        };
        let p = stable_ref.get("port").cloned();
        if live {
            stable_ref["weight"] = json!(100 - w);
        } else if let Some(o) = stable_ref.as_object_mut() {
            // All stable: the weight coalmine set goes too (default 1).
            o.remove("weight");
        }
        refs.retain(|b| !refers_to(b, canary));
        if live {
            let mut c = json!({"name": canary, "weight": w});
            if let Some(p) = &p {
                c["port"] = p.clone();
            }
            refs.push(c);
        }
        if let Some(filters) = rule.get_mut("filters").and_then(Value::as_array_mut) {
            filters.retain(|f| !is_canary_mirror(f, canary));
        }
        carried.push((rule.clone(), p.clone()));
        if live && routes.mirror_percent > 0 {
            let mut backend = json!({"name": canary});
            if let Some(p) = &p {
                backend["port"] = p.clone();
            }
            let filter = json!({"type": "RequestMirror",
                "requestMirror": {"backendRef": backend, "percent": routes.mirror_percent}});
            match rule.get_mut("filters").and_then(Value::as_array_mut) {
                Some(f) => f.push(filter),
                None => rule["filters"] = json!([filter]),
            }
        }
        drop_empty_filters(rule);
    }
    if live && !routes.header_routes.is_empty() {
        let header_rules = carried
            .into_iter()
            .enumerate()
            .map(|(i, (stable_rule, port))| header_rule(i, stable_rule, port, canary, routes));
        rules.splice(0..0, header_rules);
    }
    spec
}

/// Removes a rule's `filters` once coalmine's took the last one out (the
/// route as the user wrote it had none).
fn drop_empty_filters(rule: &mut Value) {
    if rule
        .get("filters")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && let Some(o) = rule.as_object_mut()
    {
        o.remove("filters");
    }
}

/// The `i`-th header rule: `stable_rule` sending only to the canary, for
/// requests that match it and one of the header routes.
fn header_rule(
    i: usize,
    stable_rule: Value,
    port: Option<Value>,
    canary: &str,
    routes: &Routes,
) -> Value {
    let mut rule = stable_rule;
    let base: Vec<Value> = rule
        .get("matches")
        .and_then(Value::as_array)
        .cloned()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec![json!({})]);
    let mut matches = Vec::new();
    for b in &base {
        for h in &routes.header_routes {
            let mut m = b.clone();
            let mut headers = m
                .get("headers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            headers.push(header_match(h));
            m["headers"] = Value::Array(headers);
            matches.push(m);
        }
    }
    let mut backend = json!({"name": canary, "weight": 1});
    if let Some(p) = port {
        backend["port"] = p;
    }
    let name = if i == 0 {
        HEADER_RULE.to_owned()
    } else {
        format!("{HEADER_RULE}-{}", i + 1)
    };
    rule["name"] = json!(name);
    rule["matches"] = Value::Array(matches);
    rule["backendRefs"] = json!([backend]);
    drop_empty_filters(&mut rule);
    rule
}

/// The merge patch that writes `spec` onto `route`: the whole spec (lists
/// are replaced whole by a merge patch), guarded by the resourceVersion read,
/// so a concurrent change is a 409 rather than lost. A patch, because the
/// controller's RBAC grants `patch` on HTTPRoutes and not `update`.
pub fn spec_patch(route: &DynamicObject, spec: Value) -> Value {
    json!({
        "metadata": {"resourceVersion": route.metadata.resource_version},
        "spec": spec,
    })
}

impl TrafficRouter for GatewayApi {
    fn canary_service(&self) -> bool {
        true
    }

    fn refused<'a>(
        &'a self,
        target: &'a RouteTarget,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move {
            let api: Api<DynamicObject> = Api::namespaced_with(
                target.client.clone(),
                &target.namespace,
                &http_route_resource(),
            );
            let Some(route) = api.get_opt(&self.http_route).await? else {
                return Ok(None);
            };
            Ok(refusal(&self.http_route, &route.data))
        })
    }

    fn apply<'a>(
        &'a self,
        target: &'a RouteTarget,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let api: Api<DynamicObject> = Api::namespaced_with(
                target.client.clone(),
                &target.namespace,
                &http_route_resource(),
            );
            for _ in 0..crate::CONFLICT_RETRIES {
                let Some(route) = api.get_opt(&self.http_route).await? else {
                    return Err(Error::Missing {
                        field: "spec.trafficRouting.gatewayAPI.httpRoute",
                        what: format!(
                            "HTTPRoute {}/{} does not exist",
                            target.namespace, self.http_route
                        ),
                    });
                };
                let spec = route.data.get("spec").cloned().unwrap_or(json!({}));
                if routes.reaches_canary() && !sends_to(&spec, &target.name) {
                    return Err(Error::Missing {
                        field: "spec.trafficRouting.gatewayAPI.httpRoute",
                        what: format!(
                            "no rule of HTTPRoute {} sends to Service {}",
                            self.http_route, target.name
                        ),
                    });
                }
                let wanted = rewrite(&spec, &target.name, &target.canary_service, routes);
                if normalized(&wanted) == normalized(&spec) {
                    return Ok(());
                }
                // Gateway API before v1.3 has no `requestMirror.percent`: the
                // API server prunes it and the mirror copies every request.
                // Asked first with a dry run, so such a mirror is never written.
                if routes.mirror_percent > 0 && routes.mirror_percent < 100 {
                    let dry = PatchParams {
                        dry_run: true,
                        ..PatchParams::default()
                    };
                    let stored = api
                        .patch(
                            &self.http_route,
                            &dry,
                            &Patch::Merge(spec_patch(&route, wanted.clone())),
                        )
                        .await;
                    match stored {
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        r => {
                            let stored = r?;
                            if !has_mirror_percent(stored.data.get("spec").unwrap_or(&Value::Null))
                            {
                                return Err(Error::Missing {
                                    field: "spec.steps[].setMirror",
                                    what: format!(
                                        "the installed HTTPRoute CRD has no requestMirror.percent (Gateway API before v1.3), so HTTPRoute {} would mirror every request instead of {}%; install Gateway API v1.3 or newer, or remove the setMirror step",
                                        self.http_route, routes.mirror_percent
                                    ),
                                });
                            }
                        }
                    }
                }
                match api
                    .patch(
                        &self.http_route,
                        &PatchParams::default(),
                        &Patch::Merge(spec_patch(&route, wanted)),
                    )
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    r => {
                        r?;
                        return Ok(());
                    }
                }
            }
            Err(Error::Conflict(format!("HTTPRoute {}", self.http_route)))
        })
    }
}

/// Why a parent (a Gateway) refuses the route, from `status.parents`:
/// an `Accepted` or `ResolvedRefs` condition that is `False`.
pub fn refusal(name: &str, route: &Value) -> Option<String> {
    let parents = route.pointer("/status/parents")?.as_array()?;
    parents.iter().find_map(|p| {
        let parent = p
            .pointer("/parentRef/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        p.get("conditions")?.as_array()?.iter().find_map(|c| {
            let t = c.get("type")?.as_str()?;
            let refused = matches!(t, "Accepted" | "ResolvedRefs")
                && c.get("status").and_then(Value::as_str) == Some("False");
            refused.then(|| {
                format!(
                    "HTTPRoute {name} is not in effect: its parent {parent} says {t}=False ({}: {})",
                    c.get("reason").and_then(Value::as_str).unwrap_or(""),
                    c.get("message").and_then(Value::as_str).unwrap_or("")
                )
            })
        })
    })
}

/// Whether some rule of `spec` has a `RequestMirror` filter with a percent.
fn has_mirror_percent(spec: &Value) -> bool {
    spec.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("filters").and_then(Value::as_array))
        .flatten()
        .any(|f| f.pointer("/requestMirror/percent").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_regex_is_anchored_to_match_the_whole_value() {
        let m = HeaderMatch {
            header: Some("x-user".into()),
            regex: Some("beta|qa".into()),
            ..HeaderMatch::default()
        };
        assert_eq!(
            header_match(&m),
            json!({"type": "RegularExpression", "name": "x-user", "value": "^(?:beta|qa)$"})
        );
    }

    #[test]
    fn a_parent_saying_false_is_a_refusal() {
        let cond =
            |t: &str, st: &str| json!({"type": t, "status": st, "reason": "R", "message": "m"});
        let route = |conds: Vec<Value>| json!({"status": {"parents": [{"parentRef": {"name": "gw"}, "conditions": conds}]}});
        assert_eq!(refusal("web", &json!({})), None, "no status: nothing says");
        let ok = route(vec![cond("Accepted", "True"), cond("ResolvedRefs", "True")]);
        assert_eq!(refusal("web", &ok), None);
        let bad = route(vec![
            cond("Accepted", "True"),
            cond("ResolvedRefs", "False"),
        ]);
        let why = refusal("web", &bad).expect("refused");
        assert!(
            why.contains("gw") && why.contains("ResolvedRefs=False (R: m)"),
            "{why}"
        );
        assert!(has_mirror_percent(
            &json!({"rules": [{"filters": [{"requestMirror": {"percent": 5}}]}]})
        ));
        assert!(!has_mirror_percent(
            &json!({"rules": [{"filters": [{"requestMirror": {}}]}]})
        ));
    }

    fn route() -> Value {
        json!({
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["shop.example"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"name": "web", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 80}]}
            ]
        })
    }

    #[test]
    fn weights_go_on_the_stable_rules_only() {
        let routes = Routes {
            canary_weight: 25,
            ..Routes::default()
        };
        let out = rewrite(&route(), "web", "web-canary", &routes);
        assert_eq!(
            out["rules"][0]["backendRefs"],
            json!([{"name": "web", "port": 80, "weight": 75}, {"name": "web-canary", "port": 80, "weight": 25}])
        );
        assert_eq!(out["rules"][1], route()["rules"][1]);
        assert!(sends_to(&route(), "web"));
        assert!(!sends_to(&route(), "shop"));
        assert_eq!(out["parentRefs"], route()["parentRefs"]);
        // Idempotent, and all stable restores the route as it was.
        assert_eq!(rewrite(&out, "web", "web-canary", &routes), out);
        assert_eq!(
            rewrite(&out, "web", "web-canary", &Routes::all_stable()),
            route()
        );
    }

    #[test]
    fn a_header_rule_whose_name_was_pruned_is_still_replaced() {
        let routes = Routes {
            canary_weight: 10,
            header_routes: vec![HeaderMatch {
                header: Some("x-canary".into()),
                value: Some("always".into()),
                ..HeaderMatch::default()
            }],
            ..Routes::default()
        };
        let mut stored = rewrite(&route(), "web", "web-canary", &routes);
        // What a Gateway API v1.2 CRD keeps of it.
        if let Some(r) = stored["rules"][0].as_object_mut() {
            r.remove("name");
        }
        let again = rewrite(&stored, "web", "web-canary", &routes);
        assert_eq!(again["rules"].as_array().map(Vec::len), Some(3));
        assert_eq!(normalized(&again), normalized(&stored));
        assert_eq!(
            rewrite(&stored, "web", "web-canary", &Routes::all_stable()),
            route()
        );
    }

    #[test]
    fn api_server_defaults_are_no_change() {
        let routes = Routes {
            canary_weight: 30,
            header_routes: vec![HeaderMatch {
                header: Some("x-canary".into()),
                value: Some("always".into()),
                ..HeaderMatch::default()
            }],
            ..Routes::default()
        };
        let wanted = rewrite(&route(), "web", "web-canary", &routes);
        // As the API server stores it: every backendRef with its defaults.
        let mut stored = wanted.clone();
        for rule in stored["rules"].as_array_mut().expect("rules") {
            for b in rule["backendRefs"].as_array_mut().expect("refs") {
                b["group"] = json!("");
                b["kind"] = json!("Service");
                if b.get("weight").is_none() {
                    b["weight"] = json!(1);
                }
            }
        }
        assert_ne!(stored, wanted);
        assert_eq!(
            normalized(&rewrite(&stored, "web", "web-canary", &routes)),
            normalized(&stored)
        );
        let changed = Routes {
            canary_weight: 40,
            ..routes
        };
        assert_ne!(
            normalized(&rewrite(&stored, "web", "web-canary", &changed)),
            normalized(&stored)
        );
    }

    #[test]
    fn the_route_is_written_with_a_guarded_merge_patch() {
        let stored: DynamicObject =
            serde_json::from_value(json!({"apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute", "metadata": {"name": "web", "resourceVersion": "42"},
                "spec": route()}))
            .expect("a route");
        let p = spec_patch(&stored, json!({"rules": []}));
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"rules": []}})
        );
    }

    #[test]
    fn each_stable_rule_gets_a_header_rule_with_its_paths_and_filters() {
        let route = json!({
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"}],
                 "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
                 "timeouts": {"request": "5s"},
                 "backendRefs": [{"name": "web", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"name": "web", "port": 80}]}
            ]
        });
        let routes = Routes {
            canary_weight: 10,
            header_routes: vec![HeaderMatch {
                header: Some("x-canary".into()),
                value: Some("always".into()),
                ..HeaderMatch::default()
            }],
            mirror_percent: 5,
            ..Routes::default()
        };
        let out = rewrite(&route, "web", "web-canary", &routes);
        let rules = out["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 4, "{out}");
        let api = &rules[0];
        assert_eq!(api["name"], HEADER_RULE);
        assert_eq!(api["matches"][0]["path"]["value"], "/api");
        assert_eq!(api["matches"][0]["method"], "GET");
        assert_eq!(api["matches"][0]["headers"][0]["name"], "x-canary");
        assert_eq!(api["filters"], route["rules"][0]["filters"], "the rewrite");
        assert_eq!(api["timeouts"], json!({"request": "5s"}));
        assert_eq!(
            api["backendRefs"],
            json!([{"name": "web-canary", "port": 8080, "weight": 1}])
        );
        let root = &rules[1];
        assert_eq!(root["name"], format!("{HEADER_RULE}-2"));
        assert_eq!(root["matches"][0]["path"]["value"], "/");
        assert_eq!(root.get("filters"), None, "no mirror to the canary itself");
        assert_eq!(
            rules[2]["filters"][1]["requestMirror"]["percent"],
            json!(5),
            "the stable rule mirrors"
        );
        // Steady: the same routes again change nothing, also once the API
        // server has pruned the rule names (Gateway API before v1.3).
        assert_eq!(
            normalized(&rewrite(&out, "web", "web-canary", &routes)),
            normalized(&out)
        );
        let mut pruned = out.clone();
        for r in pruned["rules"].as_array_mut().expect("rules") {
            if let Some(o) = r.as_object_mut() {
                o.remove("name");
            }
        }
        assert_eq!(
            normalized(&rewrite(&pruned, "web", "web-canary", &routes)),
            normalized(&pruned)
        );
        assert_eq!(
            rewrite(&out, "web", "web-canary", &Routes::all_stable()),
            route
        );
    }

    #[test]
    fn header_routes_are_a_first_rule_to_the_canary() {
        let routes = Routes {
            canary_weight: 0,
            header_routes: vec![
                HeaderMatch {
                    header: Some("x-canary".into()),
                    value: Some("always".into()),
                    ..HeaderMatch::default()
                },
                HeaderMatch {
                    cookie: Some("beta".into()),
                    value: Some("yes".into()),
                    ..HeaderMatch::default()
                },
            ],
            mirror_percent: 10,
            ..Routes::default()
        };
        let out = rewrite(&route(), "web", "web-canary", &routes);
        let rule = &out["rules"][0];
        assert_eq!(rule["name"], HEADER_RULE);
        assert_eq!(
            rule["backendRefs"],
            json!([{"name": "web-canary", "port": 80, "weight": 1}])
        );
        assert_eq!(rule["matches"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            rule["matches"][0]["headers"][0],
            json!({"type": "Exact", "name": "x-canary", "value": "always"})
        );
        assert_eq!(rule["matches"][0]["path"]["value"], "/");
        assert_eq!(rule["matches"][1]["headers"][0]["name"], "Cookie");
        assert_eq!(
            out["rules"][1]["filters"][0]["requestMirror"]["percent"],
            json!(10)
        );
        assert_eq!(out["rules"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            rewrite(&out, "web", "web-canary", &Routes::all_stable()),
            route()
        );
    }
}
