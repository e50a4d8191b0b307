//! `coalmine proxy --routes-configmap NAME`: the proxy's route table read
//! from one Kubernetes ConfigMap, as the controller's `proxy` router
//! writes it (`data["routes.json"]`, the JSON of `GET /routes`).
//!
//! One kube-runtime watcher follows that ConfigMap alone (field selector
//! `metadata.name=NAME`, which is what lets a Role with
//! `resourceNames: [NAME]` authorize the list and the watch). Each valid
//! version is put in effect with the proxy's atomic swap
//! ([`Proxy::set_routes`], the one `PUT /routes` uses). A version that
//! cannot be used (no `routes.json`, not JSON, a failed check, the
//! ConfigMap gone) leaves the routes in effect as they are: the error is
//! logged and counted, never acted on, so a bad write cannot move traffic.
//! Watch errors (refused, API server down) are retried with kube-runtime's
//! default backoff and never change the routes either.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use coalmine_core::routes::Routes;
use coalmine_proxy::Proxy;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

/// The key of the ConfigMap's data that holds the route table.
pub const ROUTES_KEY: &str = "routes.json";

/// Where the pod's namespace is, in a Kubernetes pod.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The ConfigMap the routes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigMap {}/{}", self.namespace, self.name)
    }
}

/// Refuses a `--routes-configmap` (or `--namespace`, the value of `flag`)
/// that is not an object name (a DNS subdomain: lowercase letters,
/// digits, `-` and `.`, at most 253), so the field selector made of it
/// names exactly that object.
pub fn check_name(flag: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && name.split('.').all(|part| {
            part.bytes()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && part
                    .bytes()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{flag} `{name}` is not a Kubernetes name: use lowercase letters, digits, \
             '-' and '.', starting and ending with a letter or digit, e.g. web-proxy"
        ))
    }
}

/// The namespace of `--routes-configmap`: `flag` when given, else the
/// pod's (`service_account`, the contents of the service account's
/// namespace file), else the kubeconfig context's (`kubeconfig`, which
/// kube-rs makes `default` when the context names none).
pub fn namespace(flag: Option<&str>, service_account: Option<&str>, kubeconfig: &str) -> String {
    let given = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    given(flag)
        .or_else(|| given(service_account))
        .or_else(|| given(Some(kubeconfig)))
        .unwrap_or_else(|| "default".to_owned())
}

/// The pod's namespace from its service account, when in a pod.
fn service_account_namespace() -> Option<String> {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok()
}

/// The cluster's connection settings: `--kubeconfig FILE`, else
/// `KUBECONFIG`, `~/.kube/config`, then the in-cluster service account.
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, String> {
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!(
                "--routes-configmap: no cluster found ({e}); set KUBECONFIG, pass --kubeconfig, \
                 or run in a pod"
            )
        }),
    }
}

/// The ConfigMap `name` of `--namespace` (or its default), and a client
/// for the cluster of `--kubeconfig` (or the usual search). Nothing is
/// asked of the API server yet.
pub async fn connect(
    name: &str,
    namespace_flag: Option<&str>,
    kubeconfig: Option<&Path>,
) -> Result<(Source, kube::Client), String> {
    let config = config(kubeconfig).await?;
    let ns = namespace(
        namespace_flag,
        service_account_namespace().as_deref(),
        &config.default_namespace,
    );
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("--routes-configmap: cannot build a Kubernetes client: {e}"))?;
    Ok((
        Source {
            namespace: ns,
            name: name.to_owned(),
        },
        client,
    ))
}

/// The checked route table of a ConfigMap's `data`, or why there is none
/// (the key, the JSON path and what is wrong).
pub fn parse(data: Option<&BTreeMap<String, String>>) -> Result<Routes, String> {
    let text = data.and_then(|d| d.get(ROUTES_KEY)).ok_or_else(|| {
        format!(
            "no key {ROUTES_KEY} in data; it holds the route table as JSON, \
             e.g. {{\"canaryWeight\": 10}}"
        )
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let routes: Routes = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return format!(
                "{ROUTES_KEY}: invalid routes: not JSON: {inner}; expected e.g. \
                 {{\"canaryWeight\": 10}}"
            );
        }
        // `.` is the whole document, `?` a place serde could not name.
        let at = if path == "." || path == "?" {
            String::new()
        } else {
            format!("{path}: ")
        };
        format!("{ROUTES_KEY}: invalid routes: {at}{inner}; expected e.g. {{\"canaryWeight\": 10}}")
    })?;
    let problems = routes.check();
    if !problems.is_empty() {
        let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(format!(
            "{ROUTES_KEY}: invalid routes: {}",
            reasons.join("; ")
        ));
    }
    Ok(routes)
}

/// Puts the ConfigMap's versions in effect, one watch event at a time.
pub struct Follower {
    proxy: Proxy,
    source: Source,
    /// Whether the ConfigMap was listed in the watch's current (re)start;
    /// a start that lists nothing means it does not exist.
    listed: bool,
}

impl Follower {
    /// A follower putting `source`'s routes in effect on `proxy`.
    pub fn new(proxy: Proxy, source: Source) -> Follower {
        Follower {
            proxy,
            source,
            listed: false,
        }
    }

    /// Acts on one watch event.
    pub fn on_event(&mut self, event: Event<ConfigMap>) {
        match event {
            Event::Init => self.listed = false,
            Event::InitApply(cm) => {
                self.listed = true;
                self.apply(&cm);
            }
            Event::Apply(cm) => self.apply(&cm),
            Event::InitDone if !self.listed => self.refuse("the ConfigMap does not exist"),
            Event::InitDone => {}
            Event::Delete(_) => self.refuse("the ConfigMap was deleted"),
        }
    }

    /// Puts one version in effect, when it is valid and differs from the
    /// routes in effect (or none was read yet).
    fn apply(&self, cm: &ConfigMap) {
        let routes = match parse(cm.data.as_ref()) {
            Ok(r) => r,
            Err(e) => return self.refuse(&e),
        };
        let first = !self.proxy.routes_ready();
        if !first && self.proxy.routes() == routes {
            return;
        }
        let summary = Summary(&routes);
        match self.proxy.set_routes(routes.clone()) {
            Ok(()) => tracing::info!(
                weight = routes.canary_weight,
                header_routes = routes.header_routes.len(),
                mirror = routes.mirror_percent,
                sticky = routes.sticky_cookie.as_deref().unwrap_or("off"),
                "{} routes from {}: {summary}",
                if first { "first" } else { "new" },
                self.source,
            ),
            Err(problems) => {
                let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
                self.refuse(&format!(
                    "{ROUTES_KEY}: invalid routes: {}",
                    reasons.join("; ")
                ));
            }
        }
    }

    /// Logs and counts a version that cannot be used; the routes stay.
    fn refuse(&self, why: &str) {
        self.proxy.metrics().routes_source_errors.inc();
        tracing::error!(
            configmap = %format_args!("{}/{}", self.source.namespace, self.source.name),
            key = ROUTES_KEY,
            "routes not changed: {}: {why}; the routes in effect stay{}",
            self.source,
            if self.proxy.routes_ready() {
                ""
            } else {
                " (none read yet: all traffic to stable, /readyz 503)"
            },
        );
    }
}

/// One line of what a table does, for the log.
struct Summary<'a>(&'a Routes);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(
            f,
            "canary weight {}%, {} header route(s), mirror {}%, sticky cookie {}",
            r.canary_weight,
            r.header_routes.len(),
            r.mirror_percent,
            r.sticky_cookie.as_deref().unwrap_or("off"),
        )
    }
}

/// Follows `source` until the task is dropped: every valid version of its
/// `routes.json` goes into effect on `proxy`.
pub async fn follow(proxy: Proxy, client: kube::Client, source: Source) {
    let api: Api<ConfigMap> = Api::namespaced(client, &source.namespace);
    let fields = format!("metadata.name={}", source.name);
    let mut events = std::pin::pin!(
        watcher::watcher(api, watcher::Config::default().fields(&fields)).default_backoff()
    );
    let metrics_proxy = proxy.clone();
    let mut follower = Follower::new(proxy, source.clone());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => follower.on_event(event),
            Err(e) => {
                metrics_proxy.metrics().routes_watch_errors.inc();
                tracing::warn!(
                    configmap = %format_args!("{}/{}", source.namespace, source.name),
                    "cannot read {source}: {e}; retrying with backoff, the routes in effect stay"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ROUTES_KEY.to_owned(), text.to_owned())])
    }

    #[test]
    fn a_valid_table_is_read_whole() {
        let routes = parse(Some(&data(
            r#"{"canaryWeight": 25, "headerRoutes": [{"header": "x-canary", "value": "always"}],
                "mirrorPercent": 5, "stickyCookie": "coalmine-track", "stickyMaxAge": "1h"}"#,
        )))
        .unwrap();
        assert_eq!(routes.canary_weight, 25);
        assert_eq!(routes.header_routes.len(), 1);
        assert_eq!(routes.mirror_percent, 5);
        assert_eq!(routes.sticky_cookie.as_deref(), Some("coalmine-track"));
        assert!(routes.sticky_max_age.is_some());
        // What `GET /routes` answers reads back as the same table.
        let json = serde_json::to_string(&routes).unwrap();
        assert_eq!(parse(Some(&data(&json))).unwrap(), routes);
    }

    #[test]
    fn bad_tables_are_refused_with_the_field_and_the_reason() {
        let cases: &[(&str, &[&str])] = &[
            (
                "not json",
                &["routes.json: invalid routes: not JSON", "expected"],
            ),
            ("{\"canaryWeight\": 1,", &["not JSON", "EOF"]),
            (
                r#"{"canaryWeight": 140}"#,
                &["canaryWeight", "140 is above 100"],
            ),
            (r#"{"canaryWeight": 300}"#, &["canaryWeight"]),
            (
                r#"{"canaryWeight": 10, "mirrorPercent": 101}"#,
                &["mirrorPercent"],
            ),
            (r#"{"canaryWeight": 10, "bogus": 1}"#, &["bogus"]),
            (r#"{"headerRoutes": []}"#, &["canaryWeight"]),
            (
                r#"{"canaryWeight": 1, "headerRoutes": [{"header": "x", "regex": "("}]}"#,
                &["headerRoutes[0].regex", "not a regular expression"],
            ),
            (
                r#"{"canaryWeight": 1, "stickyCookie": "a b"}"#,
                &["stickyCookie"],
            ),
        ];
        for (text, reasons) in cases {
            let e = parse(Some(&data(text))).unwrap_err();
            for reason in *reasons {
                assert!(e.contains(reason), "{text}: `{e}` lacks `{reason}`");
            }
        }
    }

    #[test]
    fn a_missing_key_or_data_is_refused_naming_the_key() {
        let other = BTreeMap::from([("other".to_owned(), "{}".to_owned())]);
        for d in [None, Some(&other)] {
            let e = parse(d).unwrap_err();
            assert!(e.contains("no key routes.json"), "{e}");
        }
    }

    #[test]
    fn the_namespace_is_the_flag_then_the_pod_then_the_kubeconfig() {
        assert_eq!(namespace(Some("a"), Some("b\n"), "c"), "a");
        assert_eq!(namespace(None, Some("b\n"), "c"), "b");
        assert_eq!(namespace(None, Some("  "), "c"), "c");
        assert_eq!(namespace(None, None, "c"), "c");
        assert_eq!(namespace(None, None, ""), "default");
    }

    #[tokio::test]
    async fn the_kubeconfig_namespace_is_the_contexts_else_default() {
        let kubeconfig = |ns: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
                 clusters: [{{name: k, cluster: {{server: 'https://127.0.0.1:1'}}}}]\n\
                 users: [{{name: u, user: {{token: t}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: k, user: u{ns}}}}}]\n"
            )
        };
        let dir = std::env::temp_dir().join(format!("coalmine-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (ns, want) in [(", namespace: shop", "shop"), ("", "default")] {
            let path = dir.join("kubeconfig");
            std::fs::write(&path, kubeconfig(ns)).unwrap();
            let c = config(Some(&path)).await.unwrap();
            assert_eq!(namespace(None, None, &c.default_namespace), want);
        }
        let missing = dir.join("missing");
        let e = config(Some(&missing)).await.unwrap_err();
        assert!(e.starts_with("--kubeconfig "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn proxy() -> Proxy {
        Proxy::new(coalmine_proxy::Config {
            stable: vec!["http://127.0.0.1:1".into()],
            canary: vec!["http://127.0.0.1:2".into()],
            ..coalmine_proxy::Config::default()
        })
        .unwrap()
        .with_routes_source("ConfigMap ns/web-proxy")
    }

    fn configmap(text: Option<&str>) -> ConfigMap {
        ConfigMap {
            data: text.map(data),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn only_valid_versions_change_the_routes() {
        let proxy = proxy();
        let source = Source {
            namespace: "ns".into(),
            name: "web-proxy".into(),
        };
        let errors = || proxy.metrics().routes_source_errors.get();
        let mut f = Follower::new(proxy.clone(), source);
        assert!(!proxy.routes_ready());
        // A start that finds no ConfigMap: an error, still not ready.
        f.on_event(Event::Init);
        f.on_event(Event::InitDone);
        assert_eq!((errors(), proxy.routes_ready()), (1, false));
        // A bad first version: all-stable stays, still not ready.
        f.on_event(Event::Apply(configmap(Some(r#"{"canaryWeight": 140}"#))));
        assert_eq!((errors(), proxy.routes_ready()), (2, false));
        assert_eq!(proxy.routes(), Routes::all_stable());
        // An all-stable first version makes it ready.
        f.on_event(Event::Apply(configmap(Some(r#"{"canaryWeight": 0}"#))));
        assert!(proxy.routes_ready());
        f.on_event(Event::Apply(configmap(Some(r#"{"canaryWeight": 30}"#))));
        assert_eq!(proxy.routes().canary_weight, 30);
        for bad in [
            None,
            Some("{"),
            Some(r#"{"canaryWeight": 10, "mirrorPercent": 101}"#),
        ] {
            f.on_event(Event::Apply(configmap(bad)));
        }
        f.on_event(Event::Delete(configmap(None)));
        assert_eq!((errors(), proxy.routes().canary_weight), (6, 30));
        // A restarted watch lists it again: nothing new, nothing counted.
        f.on_event(Event::Init);
        f.on_event(Event::InitApply(configmap(Some(r#"{"canaryWeight": 30}"#))));
        f.on_event(Event::InitDone);
        assert_eq!((errors(), proxy.routes().canary_weight), (6, 30));
        assert!(proxy.routes_ready());
    }
}
