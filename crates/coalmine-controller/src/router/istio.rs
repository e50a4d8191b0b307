//! The `istio` router: weights in the user's VirtualService
//! (`networking.istio.io/v1`).
//!
//! The HTTP routes coalmine weighs are the one named by `route`, or,
//! without it, every HTTP route with a destination on the stable Service
//! `NAME` (written as `NAME`, `NAME.NS`, `NAME.NS.svc` or the full
//! `NAME.NS.svc.cluster.local`). In each, the stable destination gets
//! weight `100 - w` and a destination on `NAME-canary`, written in the
//! same form and with the same port, weight `w`. `setMirror` becomes the
//! route's `mirror` (the canary) with `mirrorPercentage`. Header and
//! cookie routes become one HTTP route named `coalmine-canary-headers`,
//! placed just before the first weighed route: a copy of it (so its
//! rewrites, timeouts, retries, headers and CORS policy apply to the
//! canary's requests too) whose matches are the route's own combined with
//! each header (a cookie as a regular expression on the `cookie` header)
//! and whose only destination is the canary.
//!
//! With `destinationRule`, both versions stay behind the Service `NAME`
//! (no canary Service) and the destinations are its subsets instead: the
//! stable destination gets the stable subset, and the canary destination
//! is the same host and port with the canary subset. The user's
//! DestinationRule defines both subsets by the pods' `coalmine.dev/track`
//! label; coalmine does not write it.
//!
//! All stable (rollback, promotion, deletion) removes every trace: the
//! canary destinations, the mirror and the header route, and the weight
//! coalmine gave the stable destination (alone, it takes all). Other routes, hosts, gateways and fields
//! are left as they are, and nothing is written when nothing changes.
//!
//! Istio's consistent-hash load balancing ignores weights, so a sticky
//! session across a weighted split is not something it can give: the
//! router does not write `sessionAffinity`.

use coalmine_core::routes::{HeaderMatch, Routes};
use futures_util::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::{RouteTarget, TrafficRouter};
use crate::Error;

/// The name of the HTTP route coalmine adds for header routes.
pub const HEADER_ROUTE: &str = "coalmine-canary-headers";

/// The field a missing or unusable VirtualService is reported at.
const FIELD: &str = "spec.trafficRouting.istio.virtualService";

/// The Istio router.
#[derive(Debug, Clone)]
pub struct Istio {
    /// The VirtualService's name.
    pub virtual_service: String,
    /// The HTTP route to weigh; every route sending to stable when `None`.
    pub route: Option<String>,
    /// The (stable, canary) subsets of a DestinationRule, sent to instead
    /// of the Services `NAME` and `NAME-canary`.
    pub subsets: Option<(String, String)>,
}

/// The VirtualService resource.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// The Services of a Canary, as destination hosts are matched against them.
#[derive(Debug, Clone, Copy)]
pub struct Hosts<'a> {
    /// The Canary's namespace.
    pub namespace: &'a str,
    /// The stable Service, `NAME`.
    pub stable: &'a str,
    /// The canary Service, `NAME-canary`.
    pub canary: &'a str,
    /// With a DestinationRule: the (stable, canary) subsets of `NAME`,
    /// and no canary Service.
    pub subsets: Option<(&'a str, &'a str)>,
}

impl Hosts<'_> {
    /// The suffix after the Service name when `host` names Service
    /// `service` of the namespace (`""`, `.NS`, `.NS.svc`, `.NS.svc.…`).
    fn suffix<'h>(&self, host: &'h str, service: &str) -> Option<&'h str> {
        let rest = host.strip_prefix(service)?;
        let ns = format!(".{}", self.namespace);
        let ok = rest.is_empty()
            || rest == ns
            || rest == format!("{ns}.svc")
            || rest.starts_with(&format!("{ns}.svc."));
        ok.then_some(rest)
    }

    fn on_stable_host(&self, destination: &Value) -> bool {
        host_of(destination).is_some_and(|h| self.suffix(h, self.stable).is_some())
    }

    fn is_stable(&self, destination: &Value) -> bool {
        self.on_stable_host(destination) && !self.is_canary(destination)
    }

    fn is_canary(&self, destination: &Value) -> bool {
        match self.subsets {
            Some((_, canary)) => {
                self.on_stable_host(destination)
                    && destination.get("subset").and_then(Value::as_str) == Some(canary)
            }
            None => host_of(destination).is_some_and(|h| self.suffix(h, self.canary).is_some()),
        }
    }

    /// The canary's destination, written as the stable one is.
    fn canary_destination(&self, stable: &Value) -> Value {
        if let Some((_, canary)) = self.subsets {
            let mut d = stable.clone();
            d["subset"] = json!(canary);
            return d;
        }
        let suffix = host_of(stable)
            .and_then(|h| self.suffix(h, self.stable))
            .unwrap_or_default();
        let mut d = json!({"host": format!("{}{suffix}", self.canary)});
        if let Some(port) = stable.get("port") {
            d["port"] = port.clone();
        }
        d
    }
}

fn host_of(destination: &Value) -> Option<&str> {
    destination.get("host").and_then(Value::as_str)
}

/// The `destination` of each weighted destination of an HTTP route.
fn destinations(route: &Value) -> impl Iterator<Item = &Value> {
    route
        .get("route")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("destination"))
}

/// Whether the HTTP route sends to the stable Service.
fn sends_to_stable(route: &Value, hosts: Hosts<'_>) -> bool {
    destinations(route).any(|d| hosts.is_stable(d))
}

fn is_header_route(route: &Value) -> bool {
    route.get("name").and_then(Value::as_str) == Some(HEADER_ROUTE)
}

fn is_ours_mirror(route: &Value, hosts: Hosts<'_>) -> bool {
    route.get("mirror").is_some_and(|m| hosts.is_canary(m))
}

/// An Istio `StringMatch` for one of coalmine's header routes, and the
/// (lower-case) header it applies to.
fn header_match(m: &HeaderMatch) -> (String, Value) {
    match (&m.header, &m.cookie, &m.value, &m.regex) {
        (Some(h), _, Some(v), _) => (h.to_ascii_lowercase(), json!({"exact": v})),
        (Some(h), _, None, Some(r)) => (h.to_ascii_lowercase(), json!({"regex": r})),
        (None, Some(c), value, regex) => {
            let v = match (value, regex) {
                (Some(v), _) => regex_escape(v),
                (None, Some(r)) => format!("(?:{r})"),
                (None, None) => String::new(),
            };
            // Envoy's regular expressions match the whole header value.
            let re = format!("^(.*;\\s*)?{}={v}(;.*)?$", regex_escape(c));
            ("cookie".to_owned(), json!({"regex": re}))
        }
        // Validation admits no other shape; this one matches nothing.
        _ => ("x-coalmine-never".to_owned(), json!({"exact": "never"})),
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

/// The VirtualService's spec with `routes` in effect (pure), or why it
/// cannot be: no HTTP route to weigh, or a weighed route that also sends
/// elsewhere.
pub fn rewrite(
    spec: &Value,
    hosts: Hosts<'_>,
    route_name: Option<&str>,
    routes: &Routes,
) -> Result<Value, String> {
    let mut spec = spec.clone();
    let live = routes.reaches_canary();
    let w = i64::from(routes.canary_weight.min(100));
    let Some(http) = spec.get_mut("http").and_then(Value::as_array_mut) else {
        return if live {
            Err("has no http routes".to_owned())
        } else {
            Ok(spec)
        };
    };
    http.retain(|r| !is_header_route(r));
    let chosen = |r: &Value| match route_name {
        Some(name) => r.get("name").and_then(Value::as_str) == Some(name),
        None => sends_to_stable(r, hosts),
    };
    let Some(first) = http.iter().position(chosen) else {
        if !live {
            return Ok(spec);
        }
        return Err(match route_name {
            Some(name) => format!("has no http route named `{name}`"),
            None => format!("has no http route sending to Service {}", hosts.stable),
        });
    };
    let mut header_route = None;
    for (i, route) in http.iter_mut().enumerate() {
        if !chosen(route) {
            continue;
        }
        let label = route
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("http[{i}]"), |n| format!("http route `{n}`"));
        let Some(list) = route.get_mut("route").and_then(Value::as_array_mut) else {
            return Err(format!("{label} has no destinations"));
        };
        list.retain(|d| !d.get("destination").is_some_and(|d| hosts.is_canary(d)));
        let Some(stable) = list
            .iter()
            .find_map(|d| d.get("destination").filter(|d| hosts.is_stable(d)))
            .cloned()
        else {
            return Err(format!("{label} does not send to Service {}", hosts.stable));
        };
        if list.len() > 1 {
            return Err(format!(
                "{label} sends to Service {} and to other hosts; coalmine weighs a route whose only destination is stable",
                hosts.stable
            ));
        }
        let canary = hosts.canary_destination(&stable);
        if live {
            if let Some((stable_subset, _)) = hosts.subsets {
                // Stable's pods only: the Service selects both versions.
                list[0]["destination"]["subset"] = json!(stable_subset);
            }
            list[0]["weight"] = json!(100 - w);
            list.push(json!({"destination": canary, "weight": w}));
        } else if list[0].get("weight").and_then(Value::as_f64) != Some(100.0)
            && let Some(d) = list[0].as_object_mut()
        {
            // The weight coalmine set goes: a lone destination takes it
            // all. A `weight: 100` the user wrote stays.
            d.remove("weight");
        }
        let Some(obj) = route.as_object_mut() else {
            continue;
        };
        if obj.get("mirror").is_some_and(|m| hosts.is_canary(m)) {
            obj.remove("mirror");
            obj.remove("mirrorPercentage");
        }
        if live && routes.mirror_percent > 0 {
            if obj.contains_key("mirror") || obj.contains_key("mirrors") {
                return Err(format!(
                    "{label} already mirrors elsewhere; setMirror needs its mirror"
                ));
            }
            obj.insert("mirror".into(), canary.clone());
            obj.insert(
                "mirrorPercentage".into(),
                json!({"value": f64::from(routes.mirror_percent)}),
            );
        }
        if live && header_route.is_none() && !routes.header_routes.is_empty() {
            header_route = Some(header_copy(obj, &canary, &routes.header_routes));
        }
    }
    if let Some(r) = header_route {
        http.insert(first, r);
    }
    Ok(spec)
}

/// The header route: a copy of the weighed route `base` whose matches also
/// ask for one of `headers`, and whose only destination is the canary.
fn header_copy(base: &Map<String, Value>, canary: &Value, headers: &[HeaderMatch]) -> Value {
    let mut copy = base.clone();
    let own: Vec<Value> = copy
        .get("match")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![json!({})]);
    let mut matches = Vec::new();
    for m in &own {
        for h in headers {
            let mut m = m.clone();
            let (name, string_match) = header_match(h);
            let mut wanted = m
                .get("headers")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            wanted.insert(name, string_match);
            m["headers"] = Value::Object(wanted);
            matches.push(m);
        }
    }
    copy.insert("name".into(), json!(HEADER_ROUTE));
    copy.insert("match".into(), Value::Array(matches));
    copy.insert("route".into(), json!([{"destination": canary}]));
    copy.remove("mirror");
    copy.remove("mirrorPercentage");
    copy.remove("mirrors");
    Value::Object(copy)
}

/// Whether the spec has anything of coalmine's in it (canary destinations,
/// the canary mirror or the header route).
pub fn has_traces(spec: &Value, hosts: Hosts<'_>) -> bool {
    spec.get("http")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            is_header_route(r)
                || is_ours_mirror(r, hosts)
                || destinations(r).any(|d| hosts.is_canary(d))
        })
}

/// `spec` as the API server stores it: Istio's CRD keeps what it is
/// given, so only number forms differ (`100` and `100.0`).
fn normalized(spec: &Value) -> Value {
    fn walk(v: &Value) -> Value {
        match v {
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map_or_else(|| v.clone(), |f| json!(f as i64)),
            Value::Array(a) => Value::Array(a.iter().map(walk).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), walk(v))).collect())
            }
            other => other.clone(),
        }
    }
    walk(spec)
}

impl TrafficRouter for Istio {
    fn canary_service(&self) -> bool {
        // With subsets, both versions are behind the Service `NAME` and
        // the DestinationRule tells them apart.
        self.subsets.is_none()
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
                &virtual_service_resource(),
            );
            let hosts = Hosts {
                namespace: &target.namespace,
                stable: &target.name,
                canary: &target.canary_service,
                subsets: self.subsets.as_ref().map(|(s, c)| (s.as_str(), c.as_str())),
            };
            for _ in 0..crate::CONFLICT_RETRIES {
                let Some(vs) = api.get_opt(&self.virtual_service).await? else {
                    if !routes.reaches_canary() {
                        // Nothing of coalmine's can be left in what is not there.
                        return Ok(());
                    }
                    return Err(Error::Missing {
                        field: FIELD,
                        what: format!(
                            "VirtualService {}/{} does not exist",
                            target.namespace, self.virtual_service
                        ),
                    });
                };
                let spec = vs.data.get("spec").cloned().unwrap_or(json!({}));
                let wanted =
                    rewrite(&spec, hosts, self.route.as_deref(), routes).map_err(|why| {
                        Error::Missing {
                            field: FIELD,
                            what: format!("VirtualService {} {why}", self.virtual_service),
                        }
                    })?;
                if normalized(&wanted) == normalized(&spec) {
                    return Ok(());
                }
                let patch = json!({
                    "metadata": {"resourceVersion": vs.metadata.resource_version},
                    "spec": wanted,
                });
                match api
                    .patch(
                        &self.virtual_service,
                        &PatchParams::default(),
                        &Patch::Merge(patch),
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
            Err(Error::Conflict(format!(
                "VirtualService {}",
                self.virtual_service
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: Hosts<'static> = Hosts {
        namespace: "shop",
        stable: "web",
        canary: "web-canary",
        subsets: None,
    };

    fn vs() -> Value {
        json!({
            "hosts": ["web.example.com"],
            "gateways": ["public"],
            "http": [
                {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
                 "route": [{"destination": {"host": "admin"}}]},
                {"name": "primary",
                 "match": [{"uri": {"prefix": "/"}}],
                 "rewrite": {"uri": "/v1/"},
                 "timeout": "3s",
                 "retries": {"attempts": 2, "perTryTimeout": "1s"},
                 "route": [{"destination": {"host": "web.shop.svc.cluster.local", "port": {"number": 80}}}]}
            ]
        })
    }

    fn at(weight: u8) -> Routes {
        Routes {
            canary_weight: weight,
            ..Routes::default()
        }
    }

    #[test]
    fn a_weight_goes_to_the_stable_route_with_the_canary_written_alike() {
        let out = rewrite(&vs(), HOSTS, None, &at(20)).expect("rewritten");
        assert_eq!(
            out["http"][0],
            vs()["http"][0],
            "the admin route is the user's"
        );
        assert_eq!(
            out["http"][1]["route"],
            json!([
                {"destination": {"host": "web.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 80},
                {"destination": {"host": "web-canary.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 20}
            ])
        );
        for field in ["match", "rewrite", "timeout", "retries", "name"] {
            assert_eq!(out["http"][1][field], vs()["http"][1][field], "{field}");
        }
        assert_eq!(out["hosts"], vs()["hosts"]);
        assert_eq!(out["gateways"], vs()["gateways"]);
    }

    #[test]
    fn all_stable_removes_every_trace_and_is_stable_under_repetition() {
        let mut r = at(30);
        r.mirror_percent = 10;
        r.header_routes = vec![HeaderMatch {
            header: Some("x-canary".into()),
            value: Some("1".into()),
            ..HeaderMatch::default()
        }];
        let live = rewrite(&vs(), HOSTS, None, &r).expect("rewritten");
        assert!(has_traces(&live, HOSTS));
        let back = rewrite(&live, HOSTS, None, &Routes::all_stable()).expect("rewritten");
        assert!(!has_traces(&back, HOSTS), "{back}");
        assert_eq!(back, vs());
        // Nothing changes when nothing should.
        let again = rewrite(&back, HOSTS, None, &Routes::all_stable()).expect("rewritten");
        assert_eq!(again, back);
        let same = rewrite(&live, HOSTS, None, &r).expect("rewritten");
        assert_eq!(same, live);
        // A VirtualService the user never let coalmine touch stays byte for byte.
        assert_eq!(
            rewrite(&vs(), HOSTS, None, &Routes::all_stable()).expect("rewritten"),
            vs()
        );
    }

    #[test]
    fn header_and_cookie_routes_come_first_carrying_the_routes_settings() {
        let mut r = at(10);
        r.header_routes = vec![
            HeaderMatch {
                header: Some("X-Canary".into()),
                value: Some("always".into()),
                ..HeaderMatch::default()
            },
            HeaderMatch {
                cookie: Some("beta".into()),
                regex: Some("yes|y".into()),
                ..HeaderMatch::default()
            },
        ];
        let out = rewrite(&vs(), HOSTS, None, &r).expect("rewritten");
        let http = out["http"].as_array().expect("http");
        assert_eq!(http.len(), 3);
        assert_eq!(http[0]["name"], "admin");
        let h = &http[1];
        assert_eq!(h["name"], HEADER_ROUTE);
        assert_eq!(h["rewrite"], vs()["http"][1]["rewrite"]);
        assert_eq!(h["timeout"], "3s");
        assert_eq!(h["retries"], vs()["http"][1]["retries"]);
        assert_eq!(
            h["route"],
            json!([{"destination": {"host": "web-canary.shop.svc.cluster.local", "port": {"number": 80}}}])
        );
        assert_eq!(
            h["match"],
            json!([
                {"uri": {"prefix": "/"}, "headers": {"x-canary": {"exact": "always"}}},
                {"uri": {"prefix": "/"}, "headers": {"cookie": {"regex": "^(.*;\\s*)?beta=(?:yes|y)(;.*)?$"}}}
            ])
        );
        assert_eq!(http[2]["name"], "primary");
    }

    #[test]
    fn the_mirror_is_the_canary_with_its_percentage() {
        let mut r = at(0);
        r.mirror_percent = 25;
        let out = rewrite(&vs(), HOSTS, None, &r).expect("rewritten");
        let p = &out["http"][1];
        assert_eq!(
            p["mirror"],
            json!({"host": "web-canary.shop.svc.cluster.local", "port": {"number": 80}})
        );
        assert_eq!(p["mirrorPercentage"], json!({"value": 25.0}));
        // Mirroring only: the canary is in the route with no weight.
        assert_eq!(p["route"][0]["weight"], 100);
        assert_eq!(p["route"][1]["weight"], 0);
        // A mirror of the user's own is kept, and setMirror says why it cannot.
        let mut user = vs();
        user["http"][1]["mirror"] = json!({"host": "shadow"});
        let err = rewrite(&user, HOSTS, None, &r).expect_err("the user's mirror");
        assert!(err.contains("already mirrors"), "{err}");
        let fine = rewrite(&user, HOSTS, None, &at(10)).expect("no mirror asked");
        assert_eq!(fine["http"][1]["mirror"], json!({"host": "shadow"}));
    }

    #[test]
    fn a_named_route_is_the_only_one_weighed() {
        let mut v = vs();
        v["http"]
            .as_array_mut()
            .expect("http")
            .push(json!({"name": "api", "route": [{"destination": {"host": "web"}}]}));
        let out = rewrite(&v, HOSTS, Some("api"), &at(40)).expect("rewritten");
        assert_eq!(out["http"][1], v["http"][1], "primary is not named");
        assert_eq!(
            out["http"][2]["route"],
            json!([
                {"destination": {"host": "web"}, "weight": 60},
                {"destination": {"host": "web-canary"}, "weight": 40}
            ])
        );
        // Without a name, every route sending to stable is weighed.
        let all = rewrite(&v, HOSTS, None, &at(40)).expect("rewritten");
        assert_eq!(all["http"][1]["route"][1]["weight"], 40);
        assert_eq!(all["http"][2]["route"][1]["weight"], 40);
        let err = rewrite(&v, HOSTS, Some("nope"), &at(40)).expect_err("no such route");
        assert!(err.contains("no http route named `nope`"), "{err}");
    }

    #[test]
    fn routes_it_cannot_weigh_are_refused_with_the_reason() {
        let other = json!({"http": [{"route": [{"destination": {"host": "api"}}]}]});
        let err = rewrite(&other, HOSTS, None, &at(10)).expect_err("nothing to stable");
        assert!(
            err.contains("no http route sending to Service web"),
            "{err}"
        );
        // All stable is fine: there is nothing to remove.
        assert_eq!(
            rewrite(&other, HOSTS, None, &Routes::all_stable()).expect("untouched"),
            other
        );
        let split = json!({"http": [{"route": [
            {"destination": {"host": "web"}, "weight": 50},
            {"destination": {"host": "legacy"}, "weight": 50}]}]});
        let err = rewrite(&split, HOSTS, None, &at(10)).expect_err("split already");
        assert!(err.contains("other hosts"), "{err}");
        // Another namespace's `web` is not ours.
        let elsewhere = json!({"http": [{"route": [{"destination": {"host": "web.other.svc.cluster.local"}}]}]});
        assert!(rewrite(&elsewhere, HOSTS, None, &at(10)).is_err());
    }

    #[test]
    fn with_a_destination_rule_the_subsets_split_the_one_service() {
        let hosts = Hosts {
            subsets: Some(("stable", "canary")),
            ..HOSTS
        };
        let mut r = at(30);
        r.mirror_percent = 5;
        let out = rewrite(&vs(), hosts, None, &r).expect("rewritten");
        let dest = json!({"host": "web.shop.svc.cluster.local", "port": {"number": 80}});
        let with = |subset: &str| {
            let mut d = dest.clone();
            d["subset"] = json!(subset);
            d
        };
        assert_eq!(
            out["http"][1]["route"],
            json!([
                {"destination": with("stable"), "weight": 70},
                {"destination": with("canary"), "weight": 30}
            ])
        );
        assert_eq!(out["http"][1]["mirror"], with("canary"));
        assert!(has_traces(&out, hosts));
        let again = rewrite(&out, hosts, None, &r).expect("rewritten");
        assert_eq!(again, out, "nothing changes at the same step");
        // All stable: the canary subset goes, stable's subset stays.
        let back = rewrite(&out, hosts, None, &Routes::all_stable()).expect("rewritten");
        assert_eq!(
            back["http"][1]["route"],
            json!([{"destination": with("stable")}])
        );
        assert!(!has_traces(&back, hosts), "{back}");
        assert_eq!(
            rewrite(&vs(), hosts, None, &Routes::all_stable()).expect("untouched"),
            vs()
        );
    }

    #[test]
    fn number_forms_do_not_count_as_a_change() {
        let a = json!({"http": [{"route": [{"weight": 100}], "mirrorPercentage": {"value": 5}}]});
        let b = json!({"http": [{"route": [{"weight": 100}], "mirrorPercentage": {"value": 5.0}}]});
        assert_eq!(normalized(&a), normalized(&b));
    }
}
