//! Against a real API server (`scripts/kube-env.sh`): `deploy/` applies,
//! the CRD's CEL rules run in the API server, and `coalmine controller`,
//! with the ServiceAccount and RBAC of `deploy/`, rolls Canaries through
//! their steps with each router while the real controller-manager makes
//! ReplicaSets, Pods and EndpointSlices. A 403 in a controller's log fails
//! its test.

mod kube_env;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube_env::{
    BoxError, Controller, TestResult, Webhook, condition, create, create_http_route, env, events,
    eventually, http_routes, merge_patch, namespace, phase, serving, set_image, spec,
};
use serde_json::{Value, json};

fn example(file: &str) -> Result<Value, BoxError> {
    let path = format!(
        "{}/../../examples/kubernetes/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    Ok(serde_saphyr::from_str(&std::fs::read_to_string(path)?)?)
}

#[test]
fn deploy_applies_to_the_real_api_server() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    // The ServiceAccount may do what the controller does, and no more.
    let can = |verb: &str, what: &str| -> Result<bool, BoxError> {
        let out = env
            .kubectl()?
            .args(["auth", "can-i", verb, what, "-n", "default"])
            .args([
                "--as",
                "system:serviceaccount:coalmine-system:coalmine-controller",
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    assert!(can("patch", "httproutes.gateway.networking.k8s.io")?);
    // The status subresource is checked with `--subresource` by
    // `rbac_grants_what_the_controller_uses_and_nothing_else`
    // (real_cluster_safety.rs): kubectl reads `a/b` as object b of a.
    assert!(can("patch", "canaries.coalmine.dev")?);
    assert!(!can("delete", "httproutes.gateway.networking.k8s.io")?);
    assert!(!can("get", "secrets")?);
    Ok(())
}

/// `kubectl apply --dry-run=server` of `doc`: (success, stderr).
fn dry_run(doc: &Value) -> Result<(bool, String), BoxError> {
    let out = env()?.kubectl_with_input(
        &["apply", "--dry-run=server", "-f", "-"],
        &serde_json::to_string(doc)?,
    )?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn the_api_server_runs_the_crd_cel_rules() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "cel").await?;
    let base = {
        let mut d = example("replicas.yaml")?;
        d["metadata"]["namespace"] = json!(ns);
        d
    };
    for file in ["replicas.yaml", "nginx.yaml", "gateway-api.yaml"] {
        let mut d = example(file)?;
        d["metadata"]["namespace"] = json!(ns);
        let (ok, err) = dry_run(&d)?;
        assert!(ok, "examples/kubernetes/{file} refused: {err}");
    }
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut d = base.clone();
        edit(&mut d);
        d
    };
    let push = |d: &mut Value, at: &str, v: Value| {
        if let Some(a) = d.pointer_mut(at).and_then(Value::as_array_mut) {
            a.push(v);
        }
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "both targets",
            with(&|d| {
                d["spec"]["upstreams"] = json!({"stable": ["http://a"], "canary": ["http://b"]})
            }),
            "set exactly one of upstreams",
        ),
        (
            "no target",
            with(&|d| {
                if let Some(s) = d["spec"].as_object_mut() {
                    s.remove("template");
                }
            }),
            "set exactly one of upstreams",
        ),
        (
            "no traffic",
            with(&|d| d["spec"]["steps"] = json!([{"setWeight": 0}, {"pause": {}}])),
            "no step sends the canary any traffic",
        ),
        (
            "two routers",
            with(&|d| d["spec"]["trafficRouting"] = json!({"replicas": {}, "proxy": {}})),
            "set at most one router",
        ),
        (
            "header route, replicas router",
            with(&|d| {
                push(
                    d,
                    "/spec/steps",
                    json!({"setHeaderRoute": {"match": [{"header": "x", "value": "y"}]}}),
                )
            }),
            "setHeaderRoute needs",
        ),
        (
            "mirror, nginx",
            with(&|d| {
                d["spec"]["trafficRouting"] = json!({"nginx": {"ingress": "x"}});
                push(d, "/spec/steps", json!({"setMirror": {"percent": 5}}));
            }),
            "setMirror needs",
        ),
        (
            "sessions, replicas router",
            with(&|d| d["spec"]["sessionAffinity"] = json!({"cookie": "c"})),
            "sessionAffinity needs",
        ),
        (
            "pause 0m0s",
            with(&|d| push(d, "/spec/steps", json!({"pause": {"duration": "0m0s"}}))),
            "must be longer than 0s",
        ),
        (
            "deadline 0",
            with(&|d| d["spec"]["progressDeadline"] = json!("0")),
            "must be longer than 0s",
        ),
        (
            "interval 500ms",
            with(&|d| d["spec"]["analysis"]["interval"] = json!("500ms")),
            "the analysis interval must be at least 1s",
        ),
        (
            "two providers",
            with(&|d| d["spec"]["analysis"]["metrics"][0]["builtin"] = json!("errors")),
            "a metric needs exactly one provider",
        ),
        (
            "failureLimit, comparison",
            with(&|d| d["spec"]["analysis"]["metrics"][0]["failureLimit"] = json!(2)),
            "failureLimit only applies to threshold metrics",
        ),
        (
            "latency, no slowerThan",
            with(&|d| {
                push(
                    d,
                    "/spec/analysis/metrics",
                    json!({"name": "s", "builtin": "latency"}),
                )
            }),
            "builtin: latency needs slowerThan",
        ),
        (
            "prometheus threshold with total",
            with(&|d| d["spec"]["analysis"]["metrics"][0]["threshold"] = json!({"max": 1})),
            "prometheus: a comparison needs total and bad",
        ),
        (
            "empty threshold",
            with(&|d| {
                push(
                    d,
                    "/spec/analysis/metrics",
                    json!({"name": "t", "prometheus": {"address": "http://p", "query": "q"}, "threshold": {}}),
                )
            }),
            "a threshold needs min, max or both",
        ),
        (
            "min above max",
            with(&|d| {
                push(
                    d,
                    "/spec/analysis/metrics",
                    json!({"name": "t", "prometheus": {"address": "http://p", "query": "q"}, "threshold": {"min": 2, "max": 1}}),
                )
            }),
            "threshold min must not be above max",
        ),
        (
            "webhook without bad",
            with(&|d| {
                push(
                    d,
                    "/spec/analysis/metrics",
                    json!({"name": "w", "webhook": {"url": "http://w", "total": "$.t"}}),
                )
            }),
            "webhook: a comparison needs total and bad",
        ),
        (
            "header and cookie",
            with(&|d| {
                d["spec"]["trafficRouting"] = json!({"proxy": {}});
                push(
                    d,
                    "/spec/steps",
                    json!({"setHeaderRoute": {"match": [{"header": "x", "cookie": "y", "value": "z"}]}}),
                );
            }),
            "a match needs exactly one of header and cookie",
        ),
        (
            "targetPort 0",
            with(&|d| d["spec"]["service"]["targetPort"] = json!(0)),
            "targetPort is a port number",
        ),
        (
            "a long name",
            with(&|d| d["metadata"]["name"] = json!("x".repeat(54))),
            "metadata.name must have at most 53 characters",
        ),
        (
            "weight 140",
            with(&|d| d["spec"]["steps"][0]["setWeight"] = json!(140)),
            "spec.steps[0].setWeight",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, doc, expected) in cases {
        let (ok, err) = dry_run(&doc)?;
        if ok || !err.contains(expected) {
            wrong.push(format!(
                "{what}: want a refusal naming `{expected}`, got ok={ok}: {err}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// Deployment `name`'s (spec.replicas, first image), if it exists.
async fn shape(client: &Client, ns: &str, name: &str) -> Result<Option<(i32, String)>, BoxError> {
    Ok(kube_env::deployment(client, ns, name)
        .await?
        .map(|d| kube_env::shape(&d)))
}

fn n_of(images: &[String], image: &str) -> usize {
    images.iter().filter(|i| *i == image).count()
}

#[tokio::test]
async fn replicas_router_promotes_through_the_steps_with_real_pods() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "replicas").await?;
    let ctl = Controller::start(env, &ns)?;
    let steps = json!([
        {"setWeight": 25}, {"pause": {"duration": "2s"}},
        {"setWeight": 50}, {"pause": {"duration": "2s"}}
    ]);
    create(&client, &ns, "web", spec("web:1", 4, steps)).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    eventually(60, "4 Ready web:1 endpoints", || async {
        let s = serving(&client, &ns, "web").await?;
        Ok((n_of(&s, "web:1") == 4).then_some(()))
    })
    .await?;

    set_image(&client, &ns, "web", "web:2").await?;
    // What the Service sends to at every moment: (stable pods, canary pods).
    let mut seen: Vec<(usize, usize)> = Vec::new();
    // Every pause at a weight: (weight, the canary's available pods then).
    let mut paused: Vec<(u64, i32)> = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let status = kube_env::status(&client, &ns, "web").await?;
        if status["phase"] == "Paused" {
            let available = kube_env::deployment(&client, &ns, "web-canary")
                .await?
                .and_then(|d| d.status)
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            paused.push((status["weight"].as_u64().unwrap_or(0), available));
        }
        let s = serving(&client, &ns, "web").await?;
        let pair = (n_of(&s, "web:1"), n_of(&s, "web:2"));
        if seen.last() != Some(&pair) {
            seen.push(pair);
        }
        if status["phase"] == "Promoted" {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not Promoted after 120s; serving {seen:?}").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("serving over the rollout (stable, canary): {seen:?}");
    // A pause starts once the weight's pods are up: never at a weight
    // the canary does not serve yet.
    assert!(
        paused.iter().any(|p| p.0 == 25) && paused.iter().any(|p| p.0 == 50),
        "paused at 25% and at 50%: {paused:?}"
    );
    assert!(
        paused
            .iter()
            .all(|&(w, pods)| i64::from(pods) * 100 >= 4 * w as i64),
        "paused with fewer canary pods than the weight's share of 4: {paused:?}"
    );
    assert!(
        seen.contains(&(3, 1)),
        "25%: 3 stable and 1 canary pod behind the Service: {seen:?}"
    );
    assert!(
        seen.contains(&(2, 2)),
        "50%: 2 and 2 behind the Service: {seen:?}"
    );
    eventually(60, "4 Ready web:2 endpoints, canary at 0", || async {
        let s = serving(&client, &ns, "web").await?;
        let canary = shape(&client, &ns, "web-canary").await?;
        Ok((n_of(&s, "web:2") == 4 && canary.is_some_and(|c| c.0 == 0)).then_some(()))
    })
    .await?;
    assert_eq!(
        shape(&client, &ns, "web").await?,
        Some((4, "web:2".to_owned()))
    );
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_failing_webhook_metric_rolls_back_on_a_real_cluster() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "rollback").await?;
    let hook = Webhook::start(0.9).await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec(
        "web:1",
        4,
        json!([{"setWeight": 25}, {"pause": {"duration": "1m"}}, {"setWeight": 50}]),
    );
    s["analysis"] = json!({"interval": "1s", "metrics": [{
        "name": "p99-latency",
        "webhook": {"url": format!("{}/p99?track={{{{track}}}}", hook.url), "value": "$.value"},
        "threshold": {"max": 0.5}
    }]});
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    let done = phase(&client, &ns, "web", "RolledBack", 90).await?;
    let message = done["rollback"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("p99-latency") && message.contains("0.9"),
        "{done}"
    );
    assert_eq!(done["weight"], 0);
    let failed = events(&client, &ns)
        .await?
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("AnalysisFailed"))
        .ok_or("no AnalysisFailed event")?;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert!(failed.note.unwrap_or_default().contains("p99-latency"));
    eventually(60, "4 Ready web:1 endpoints and no canary pod", || async {
        let s = serving(&client, &ns, "web").await?;
        Ok((s == vec!["web:1".to_owned(); 4]).then_some(()))
    })
    .await?;
    assert_eq!(
        shape(&client, &ns, "web").await?,
        Some((4, "web:1".to_owned())),
        "stable untouched, all replicas"
    );
    assert_eq!(
        shape(&client, &ns, "web-canary").await?.map(|c| c.0),
        Some(0),
        "canary scaled to zero"
    );
    ctl.finish()?;
    Ok(())
}

/// (name, weight) of each backendRef of rule `i`.
fn weights(route: &DynamicObject, i: usize) -> Vec<(String, i64)> {
    route.data["spec"]["rules"][i]["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_owned(),
                b["weight"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

#[tokio::test]
async fn gateway_api_router_promotes_on_a_real_http_route() -> TestResult {
    gateway_api_router_promotes(env()?).await
}

#[tokio::test]
async fn gateway_api_router_promotes_with_the_gateway_api_1_2_crds() -> TestResult {
    let env = kube_env::env_gateway_api_1_2()?;
    assert_eq!(env.var("GATEWAY_API_VERSION")?, "v1.2.1");
    gateway_api_router_promotes(env).await
}

async fn gateway_api_router_promotes(env: &kube_env::Env) -> TestResult {
    let client = env.admin().await?;
    let ns = namespace(&client, "gateway").await?;
    let routes = http_routes(&client, &ns);
    // As the API server stored it, with its defaults.
    let stored = create_http_route(
        &client,
        &ns,
        "web",
        json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [{"name": "web", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
             "backendRefs": [{"name": "admin", "port": 80}]}
        ]),
    )
    .await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec(
        "web:1",
        3,
        json!([
            // Long enough for a loaded machine to see the step and its pods.
            {"setWeight": 20}, {"pause": {"duration": "30s"}},
            {"setHeaderRoute": {"match": [{"header": "x-canary", "value": "always"}]}},
            {"setWeight": 60}, {"pause": {"duration": "2s"}}
        ]),
    );
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc = eventually(30, "Service web", || async {
        Ok(services.get_opt("web").await?)
    })
    .await?;
    let sel = svc.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(
        sel.get("coalmine.dev/track").map(String::as_str),
        Some("stable")
    );
    set_image(&client, &ns, "web", "web:2").await?;
    let at20 = eventually(60, "weights 80/20 on the HTTPRoute", || async {
        let r = routes.get("web").await?;
        Ok(
            (weights(&r, 0) == [("web".to_owned(), 80), ("web-canary".to_owned(), 20)])
                .then_some(r),
        )
    })
    .await?;
    assert_eq!(
        at20.data["spec"]["rules"][1], stored.data["spec"]["rules"][1],
        "other rules untouched"
    );
    eventually(60, "3 Ready canary endpoints behind web-canary", || async {
        let s = serving(&client, &ns, "web-canary").await?;
        Ok((n_of(&s, "web:2") == 3).then_some(()))
    })
    .await?;
    // The stable Service selects stable pods only; all three are Ready
    // again once the endpoint controller catches up on a loaded machine.
    let s = eventually(60, "3 Ready stable endpoints behind web", || async {
        let s = serving(&client, &ns, "web").await?;
        Ok((s.len() >= 3 || n_of(&s, "web:2") > 0).then_some(s))
    })
    .await?;
    assert_eq!(
        s,
        vec!["web:1".to_owned(); 3],
        "stable Service: stable pods"
    );
    // A steady step writes the route no more, although the API server
    // stored it with defaults (and, on v1.2, without the header rule's name).
    let before = routes.get("web").await?;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let after = routes.get("web").await?;
    if weights(&after, 0) == weights(&before, 0) {
        assert_eq!(
            before.metadata.resource_version, after.metadata.resource_version,
            "the HTTPRoute was rewritten with nothing to change"
        );
    }
    // The header rule: first, matching the header, sending to the canary.
    let at60 = eventually(60, "header rule and 40/60", || async {
        let r = routes.get("web").await?;
        Ok(
            (weights(&r, 1) == [("web".to_owned(), 40), ("web-canary".to_owned(), 60)])
                .then_some(r),
        )
    })
    .await?;
    let rules = at60.data["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rules.len(), 3, "one header rule, added once: {rules:?}");
    assert_eq!(
        rules[0]["matches"][0]["headers"][0]["value"], "always",
        "{rules:?}"
    );
    assert_eq!(weights(&at60, 0), [("web-canary".to_owned(), 1)]);
    phase(&client, &ns, "web", "Promoted", 120).await?;
    eventually(30, "the route as the user wrote it", || async {
        let r = routes.get("web").await?;
        Ok((r.data["spec"] == stored.data["spec"]).then_some(()))
    })
    .await?;
    let log = ctl.finish()?;
    assert!(!log.is_empty());
    Ok(())
}

#[tokio::test]
async fn nginx_router_promotes_with_a_real_canary_ingress() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "nginx").await?;
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    let user: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]}
    }))?;
    let user = ingresses.create(&PostParams::default(), &user).await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec(
        "web:1",
        2,
        json!([
            {"setWeight": 10}, {"pause": {"duration": "2s"}},
            {"setHeaderRoute": {"match": [{"header": "x-canary", "value": "always"}]}},
            {"setWeight": 40}, {"pause": {"duration": "2s"}}
        ]),
    );
    s["trafficRouting"] = json!({"nginx": {"ingress": "web"}});
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    let annotation = |i: &Ingress, k: &str| {
        i.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&format!("nginx.ingress.kubernetes.io/{k}")).cloned())
    };
    let first = eventually(60, "canary Ingress at 10%", || async {
        Ok(ingresses
            .get_opt("web-canary")
            .await?
            .filter(|i| annotation(i, "canary-weight").as_deref() == Some("10")))
    })
    .await?;
    assert_eq!(annotation(&first, "canary").as_deref(), Some("true"));
    let spec = serde_json::to_value(first.spec.clone())?;
    assert_eq!(spec["ingressClassName"], "nginx");
    assert_eq!(spec["rules"][0]["host"], "shop.example");
    assert_eq!(
        spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "web-canary"
    );
    let second = eventually(60, "canary Ingress at 40% with a header", || async {
        Ok(ingresses.get_opt("web-canary").await?.filter(|i| {
            annotation(i, "canary-weight").as_deref() == Some("40")
                && annotation(i, "canary-by-header").as_deref() == Some("x-canary")
        }))
    })
    .await?;
    assert_eq!(
        annotation(&second, "canary-by-header-value").as_deref(),
        Some("always")
    );
    phase(&client, &ns, "web", "Promoted", 120).await?;
    eventually(30, "canary Ingress deleted", || async {
        Ok(ingresses
            .get_opt("web-canary")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    assert_eq!(
        serde_json::to_value(ingresses.get("web").await?.spec)?,
        serde_json::to_value(user.spec)?,
        "the user's Ingress is never changed"
    );
    ctl.finish()?;
    Ok(())
}

#[test]
fn rbac_subjects_follow_a_namespace_overlay() -> TestResult {
    let env = env()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let overlay = root.join("target/rbac-overlay-test");
    std::fs::create_dir_all(&overlay)?;
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "resources: [../../deploy]\nnamespace: platform\n",
    )?;
    let out = env.kubectl()?.arg("kustomize").arg(&overlay).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut bindings = 0;
    for doc in text.split("\n---\n") {
        let o: Value = serde_saphyr::from_str(doc)?;
        if o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding" {
            bindings += 1;
            assert_eq!(
                o["subjects"][0]["namespace"], "platform",
                "the ServiceAccount is in the overlay's namespace: {o}"
            );
        }
    }
    assert_eq!(bindings, 2);
    Ok(())
}

#[test]
fn a_403_in_a_controller_log_is_found() {
    let path = std::path::Path::new("controller.log");
    let refused = "ERROR reconcile failed: ApiError: httproutes is forbidden (403)";
    assert!(kube_env::forbid_403(refused, path).is_err());
    assert!(kube_env::forbid_403("status 403 Forbidden", path).is_err());
    assert!(kube_env::forbid_403("2026-12-07T02:37:54.640328Z INFO step 1", path).is_ok());
}

#[tokio::test]
async fn a_new_controller_process_resumes_from_the_status() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "resume").await?;
    let first = Controller::start_as(env, &ns, "first", 2)?;
    let steps = json!([
        {"setWeight": 25}, {"pause": {"duration": "3s"}},
        {"setWeight": 50}, {"pause": {"duration": "1s"}}
    ]);
    create(&client, &ns, "web", spec("web:1", 4, steps)).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    let before = eventually(60, "weight 25", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok((s["weight"] == 25 && s["phase"] == "Paused").then_some(s))
    })
    .await?;
    first.finish()?;
    let second = Controller::start_as(env, &ns, "second", 2)?;
    let after = eventually(60, "weight 50 after the restart", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok((s["weight"] == 50).then_some(s))
    })
    .await?;
    assert_eq!(
        after["rolloutStartedAt"], before["rolloutStartedAt"],
        "same rollout, not restarted"
    );
    phase(&client, &ns, "web", "Promoted", 60).await?;
    let started = events(&client, &ns)
        .await?
        .iter()
        .filter(|e| e.reason.as_deref() == Some("RolloutStarted"))
        .count();
    assert_eq!(started, 1, "the rollout began once");
    assert_eq!(
        shape(&client, &ns, "web").await?,
        Some((4, "web:2".to_owned()))
    );
    second.finish()?;
    Ok(())
}

#[tokio::test]
async fn of_two_controller_processes_one_leads_and_the_other_takes_over() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "leader").await?;
    let a = Controller::start_as(env, &ns, "a", 2)?;
    let b = Controller::start_as(env, &ns, "b", 2)?;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "coalmine-system");
    let lease = format!("coalmine-{ns}");
    let holder = eventually(30, "a leader", || async {
        Ok(leases
            .get_opt(&lease)
            .await?
            .and_then(|l| l.spec?.holder_identity))
    })
    .await?;
    create(
        &client,
        &ns,
        "web",
        spec(
            "web:1",
            2,
            json!([{"setWeight": 50}, {"pause": {"duration": "8s"}}]),
        ),
    )
    .await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    phase(&client, &ns, "web", "Paused", 60).await?;
    let instances: Vec<String> = events(&client, &ns)
        .await?
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Canary"))
        .filter_map(|e| e.reporting_instance)
        .collect();
    assert!(!instances.is_empty());
    assert!(
        instances.iter().all(|i| *i == holder),
        "only {holder} acted: {instances:?}"
    );
    // The leader dies without releasing the Lease: the other takes over
    // once it expires, and carries the rollout on.
    let (leader, follower) = if holder == "a" { (a, b) } else { (b, a) };
    leader.finish()?;
    phase(&client, &ns, "web", "Promoted", 60).await?;
    let now = leases
        .get(&lease)
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(now, holder, "leadership moved");
    follower.finish()?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_canary_sends_traffic_back_and_the_garbage_collector_takes_the_rest()
-> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "delete").await?;
    let routes = http_routes(&client, &ns);
    let stored = create_http_route(
        &client,
        &ns,
        "web",
        json!([{"backendRefs": [{"name": "web", "port": 80}]}]),
    )
    .await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec("web:1", 2, json!([{"setWeight": 30}, {"pause": {}}]));
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    eventually(60, "30% on the canary", || async {
        let r = routes.get("web").await?;
        Ok(
            (weights(&r, 0) == [("web".to_owned(), 70), ("web-canary".to_owned(), 30)])
                .then_some(()),
        )
    })
    .await?;
    // Even a spec made invalid meanwhile (a template without the
    // selector's label: the API server takes it, validation does not)
    // names the router to clean up.
    let invalid = json!({"spec": {"template": {"metadata": {"labels": {"app": "other"}}}}});
    merge_patch(&client, &ns, "web", invalid).await?;
    eventually(60, "Valid=False", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(condition(&s, "Valid").filter(|c| c["status"] == "False"))
    })
    .await?;
    let canaries: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    canaries
        .delete("web", &kube::api::DeleteParams::default())
        .await?;
    eventually(60, "the Canary gone", || async {
        Ok(canaries.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    let r = routes.get("web").await?;
    assert_eq!(
        r.data["spec"], stored.data["spec"],
        "all traffic on stable, the route as the user wrote it"
    );
    // What the Canary owned goes with it: Deployments, their ReplicaSets
    // and pods, the Services.
    eventually(
        60,
        "no Deployment, ReplicaSet, Pod or Service left",
        || async {
            let lp = ListParams::default();
            let d: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
                Api::namespaced(client.clone(), &ns);
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
            let left = d.list(&lp).await?.items.len()
                + rs.list(&lp).await?.items.len()
                + pods.list(&lp).await?.items.len()
                + svcs.list(&lp).await?.items.len();
            Ok((left == 0).then_some(()))
        },
    )
    .await?;
    ctl.finish()?;
    Ok(())
}

/// Runs `program` with kubeconfig `kc` and `dir` first on PATH: (code,
/// stdout, stderr).
fn run_cli(
    dir: &std::path::Path,
    kc: &std::path::Path,
    program: &str,
    args: &[&str],
) -> Result<(Option<i32>, String, String), BoxError> {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", kc)
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_kubectl_plugin_drive_a_canary_on_a_real_cluster() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let test_ns = namespace(&client, "cli").await?;
    let ns = test_ns.to_string();
    let ctl = Controller::start(env, &ns)?;
    // A person's kubeconfig: the admin, the test's namespace as default;
    // kubectl of the cluster's release and the plugin first on PATH.
    let dir = std::path::Path::new(env.var("KUBE_ENV_RUN")?).join(format!("cli-{ns}"));
    std::fs::create_dir_all(&dir)?;
    let kc = dir.join("kubeconfig");
    std::fs::copy(env.var("ADMIN_KUBECONFIG")?, &kc)?;
    std::os::unix::fs::symlink(env.var("KUBECTL")?, dir.join("kubectl"))?;
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_coalmine"), dir.join("kubectl-coalmine"))?;
    let d = dir.clone();
    let scenario = tokio::task::spawn_blocking(move || -> TestResult {
        let run = |program: &str, args: &[&str]| run_cli(&d, &kc, program, args);
        let (code, _, err) = run(
            "kubectl",
            &["config", "set-context", "--current", "--namespace", &ns],
        )?;
        assert_eq!(code, Some(0), "{err}");
        let file = d.join("shop.yaml");
        let file_path = file.to_str().ok_or("a utf-8 path")?;
        let canary = |image: &str| {
            let mut c = json!({
                "apiVersion": "coalmine.dev/v1alpha1", "kind": "Canary",
                "metadata": {"name": "shop"},
                "spec": spec(image, 4, json!([
                    {"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}
                ])),
            });
            c["spec"]["trafficRouting"] = json!({"replicas": {}});
            serde_json::to_string(&c)
        };
        let wait = |secs: u64, ok: &dyn Fn(&Value) -> bool| -> Result<Value, BoxError> {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            let mut last = Value::Null;
            while std::time::Instant::now() < end {
                let (code, out, _) = run(
                    env!("CARGO_BIN_EXE_coalmine"),
                    &["get", "shop", "-o", "json"],
                )?;
                if code == Some(0)
                    && let Ok(v) = serde_json::from_str::<Value>(&out)
                {
                    if ok(&v) {
                        return Ok(v);
                    }
                    last = v;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(format!("status not reached in {secs}s; last: {last}").into())
        };
        let bin = env!("CARGO_BIN_EXE_coalmine");
        std::fs::write(&file, canary("shop:1")?)?;
        let (code, _, err) = run("kubectl", &["apply", "-f", file_path])?;
        assert_eq!(code, Some(0), "{err}");
        wait(60, &|s| {
            s["phase"] == "Idle" && s["stableRevision"].is_string()
        })?;
        std::fs::write(&file, canary("shop:2")?)?;
        let (code, _, err) = run("kubectl", &["apply", "-f", file_path])?;
        assert_eq!(code, Some(0), "{err}");
        wait(60, &|s| s["phase"] == "Paused" && s["weight"] == 25)?;
        let (code, out, err) = run(bin, &["get", "shop", "-n", &ns])?;
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains(&format!("{ns}/shop")) && out.contains("weight 25%"),
            "{out}"
        );
        let (code, out, err) = run("kubectl", &["coalmine", "get", "shop"])?;
        assert_eq!(code, Some(0), "kubectl coalmine get: {err}");
        assert!(out.contains("Paused"), "{out}");
        let (code, out, err) = run(bin, &["promote", "shop"])?;
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("promote: done"), "{out}");
        wait(30, &|s| s["weight"] == 50)?;
        let (code, _, err) = run("kubectl", &["coalmine", "retry", "shop"])?;
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("ignored"), "{err}");
        let (code, _, err) = run(bin, &["abort", "shop"])?;
        assert_eq!(code, Some(0), "{err}");
        let s = wait(30, &|s| s["phase"] == "RolledBack")?;
        assert_eq!(s["weight"], 0);
        let (code, _, err) = run(bin, &["get", "nothing"])?;
        assert_eq!(code, Some(1));
        assert!(err.contains("not found"), "{err}");
        let (code, _, err) = run(bin, &["pause"])?;
        assert_eq!(code, Some(1));
        assert!(err.contains("name the Canary"), "{err}");
        Ok(())
    });
    scenario.await??;
    ctl.finish()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn a_canary_that_cannot_be_scheduled_fails_at_the_progress_deadline() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "deadline").await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    s["progressDeadline"] = json!("3s");
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    // The new revision's pods fit no node: the scheduler leaves them
    // Pending, so they never become Ready.
    let api: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    let patch = json!({"spec": {"template": {"spec": {
        "nodeSelector": {"coalmine.dev/no-such-node": "true"},
        "containers": [{"name": "web", "image": "web:2", "ports": [{"containerPort": 8080}]}]}}}});
    api.patch(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await?;
    let failed = phase(&client, &ns, "web", "Failed", 60).await?;
    assert_eq!(failed["rollback"]["reason"], "ProgressDeadlineExceeded");
    assert_eq!(failed["weight"], 0);
    eventually(
        30,
        "the canary at 0 and 2 Ready web:1 endpoints",
        || async {
            let s = serving(&client, &ns, "web").await?;
            let canary = shape(&client, &ns, "web-canary").await?;
            Ok(
                (s == vec!["web:1".to_owned(); 2] && canary.is_some_and(|c| c.0 == 0))
                    .then_some(()),
            )
        },
    )
    .await?;
    assert!(
        events(&client, &ns)
            .await?
            .iter()
            .any(|e| e.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    );
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_spec_the_api_server_accepts_but_validation_refuses_gets_a_condition() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "invalid").await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec("web:1", 2, json!([{"setWeight": 50}]));
    // The CRD's schema takes it; the selector does not select the pods.
    s["selector"] = json!({"matchLabels": {"app": "other"}});
    create(&client, &ns, "web", s).await?;
    let valid = eventually(60, "Valid=False", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        let c = s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Valid").cloned());
        Ok(c.filter(|c| c["status"] == "False"))
    })
    .await?;
    assert!(
        valid["message"]
            .as_str()
            .unwrap_or_default()
            .contains("selector"),
        "{valid}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(shape(&client, &ns, "web").await?, None, "nothing created");
    ctl.finish()?;
    Ok(())
}
