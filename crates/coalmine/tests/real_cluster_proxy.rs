//! The `proxy` router against a real API server (`scripts/kube-env.sh`),
//! with `coalmine controller` as its own process and the controller's own
//! RBAC (`deploy/rbac.yaml`): the objects of the proxy router's contract
//! (docs/kubernetes.md, "The `proxy` router") with their shape, the
//! ConfigMap's routes after every step, Service `NAME` switched to the
//! proxy pods once kwok makes them Ready (endpoints from the real
//! endpointslice controller), the proxy's own least privilege, turning the
//! router off (stable selected again before the proxies go), a Canary
//! deleted mid-rollout, and proxies that cannot be scheduled (the rollout
//! holds at weight 0, saying why; their Secret, deleted by hand, is made
//! again). A 403 in the controller's log fails a test.

mod kube_env;

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, WatchEvent, WatchParams};
use kube_env::{
    BoxError, Controller, TestResult, command, condition, create, env, eventually, merge_patch,
    namespace, phase, serving, set_image,
};
use serde_json::{Value, json};

const PROXY_IMAGE: &str = concat!("ghcr.io/coalmine-dev/coalmine:", env!("CARGO_PKG_VERSION"));

/// A Canary of two `web:1` pods behind the proxy router (`proxy`: its
/// settings), with these steps.
fn proxy_spec(proxy: Value, steps: Value) -> Value {
    let mut s = kube_env::spec("web:1", 2, steps);
    s["trafficRouting"] = json!({"proxy": proxy});
    s
}

/// The route table in ConfigMap `web-proxy`, if it exists.
async fn routes(client: &Client, ns: &str) -> Result<Option<Value>, BoxError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let Some(cm) = api.get_opt("web-proxy").await? else {
        return Ok(None);
    };
    let text = cm
        .data
        .and_then(|d| d.get("routes.json").cloned())
        .ok_or("ConfigMap web-proxy has no routes.json")?;
    Ok(Some(serde_json::from_str(&text)?))
}

/// Waits until the ConfigMap's routes send `weight` percent to the canary.
async fn routes_at(client: &Client, ns: &str, weight: u64) -> Result<Value, BoxError> {
    eventually(60, &format!("routes.json at {weight}%"), || async {
        Ok(routes(client, ns)
            .await?
            .filter(|r| r["canaryWeight"] == weight))
    })
    .await
}

/// Service `web`'s selector (null while it does not exist).
async fn selector(client: &Client, ns: &str) -> Result<Value, BoxError> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let s = api.get_opt("web").await?;
    Ok(serde_json::to_value(
        s.and_then(|s| s.spec).and_then(|s| s.selector),
    )?)
}

fn owned_by_the_canary(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|v| v == "coalmine");
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Canary" && o.name == "web");
    labelled && owned
}

/// `kubectl auth can-i VERB WHAT` as the proxy's ServiceAccount.
fn proxy_can(verb: &str, what: &str, ns: &str) -> Result<bool, BoxError> {
    let out = env()?
        .kubectl()?
        .args(["auth", "can-i", verb, what, "-n", ns])
        .arg("--as")
        .arg(format!("system:serviceaccount:{ns}:web-proxy"))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
}

/// Every object of the contract, with its shape.
async fn check_objects(client: &Client, ns: &str) -> TestResult {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = deployments.get("web-proxy").await?;
    assert!(owned_by_the_canary(&d.metadata));
    let v = serde_json::to_value(&d)?;
    assert_eq!(v["spec"]["replicas"], 2);
    let t = &v["spec"]["template"];
    assert_eq!(t["metadata"]["labels"]["coalmine.dev/proxy"], "web");
    assert_eq!(
        t["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "coalmine"
    );
    assert_eq!(t["spec"]["serviceAccountName"], "web-proxy");
    let c = &t["spec"]["containers"][0];
    assert_eq!(c["name"], "proxy");
    assert_eq!(c["image"], PROXY_IMAGE);
    let args: Vec<&str> = c["args"]
        .as_array()
        .ok_or("args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args.join(" "),
        format!(
            "proxy --listen 0.0.0.0:8080 --stable http://web-stable.{ns}.svc:80 --canary http://web-canary.{ns}.svc:80 --admin 127.0.0.1:9901 --metrics-listen 0.0.0.0:9902 --routes-configmap web-proxy --namespace {ns} --sticky-secret-file /etc/coalmine/sticky/secret"
        )
    );
    let ports: Vec<(String, i64)> = c["ports"]
        .as_array()
        .ok_or("ports")?
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["containerPort"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(ports, [("http".into(), 8080), ("metrics".into(), 9902)]);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The Secret is mounted read-only where --sticky-secret-file reads it.
    assert_eq!(
        c["volumeMounts"][0],
        json!({"name": "sticky", "mountPath": "/etc/coalmine/sticky", "readOnly": true})
    );
    assert_eq!(t["spec"]["volumes"][0]["secret"]["secretName"], "web-proxy");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets.get("web-proxy").await?;
    assert!(owned_by_the_canary(&secret.metadata));
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("secret"))
        .ok_or("no key `secret`")?;
    assert_eq!(key.0.len(), 32, "32 random bytes");

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let stable = serde_json::to_value(services.get("web-stable").await?)?;
    assert_eq!(
        stable["spec"]["selector"],
        json!({"app": "web", "coalmine.dev/track": "stable"})
    );
    assert_eq!(stable["spec"]["ports"][0]["port"], 80);
    assert_eq!(stable["spec"]["ports"][0]["targetPort"], 8080);
    let headless = services.get("web-proxy").await?;
    assert!(owned_by_the_canary(&headless.metadata));
    let headless = serde_json::to_value(headless)?;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(
        headless["spec"]["selector"],
        json!({"coalmine.dev/proxy": "web"})
    );
    assert_eq!(headless["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(headless["spec"]["ports"][0]["port"], 9902);
    let canary_svc = services.get_opt("web-canary").await?;
    assert!(
        canary_svc.is_none()
            || canary_svc
                .as_ref()
                .is_some_and(|s| owned_by_the_canary(&s.metadata))
    );

    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    assert!(owned_by_the_canary(&sas.get("web-proxy").await?.metadata));
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let role = roles.get("web-proxy").await?;
    assert!(owned_by_the_canary(&role.metadata));
    assert_eq!(
        serde_json::to_value(&role.rules)?,
        json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["web-proxy"], "verbs": ["get", "list", "watch"]}])
    );
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let binding = bindings.get("web-proxy").await?;
    assert!(owned_by_the_canary(&binding.metadata));
    assert_eq!(binding.role_ref.name, "web-proxy");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    assert!(owned_by_the_canary(&cms.get("web-proxy").await?.metadata));

    // The proxy may read and watch its own ConfigMap, and nothing else.
    assert!(proxy_can("get", "configmaps/web-proxy", ns)?);
    assert!(proxy_can("watch", "configmaps/web-proxy", ns)?);
    assert!(proxy_can("list", "configmaps/web-proxy", ns)?);
    for (verb, what) in [
        ("get", "configmaps/other"),
        ("list", "configmaps"),
        ("patch", "configmaps/web-proxy"),
        ("update", "configmaps/web-proxy"),
        ("get", "secrets/web-proxy"),
        ("get", "pods"),
        ("get", "services"),
        ("get", "endpointslices.discovery.k8s.io"),
        ("get", "canaries.coalmine.dev"),
    ] {
        assert!(!proxy_can(verb, what, ns)?, "the proxy may {verb} {what}");
    }
    Ok(())
}

#[tokio::test]
async fn the_proxy_router_rolls_out_through_its_configmap() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "proxy").await?;
    let ctl = Controller::start(env, &ns)?;
    let steps = json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]);
    create(&client, &ns, "web", proxy_spec(json!({}), steps)).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;

    // kwok makes the proxy pods Ready: Service web sends to them.
    eventually(60, "Service web in front of the two proxies", || async {
        Ok((serving(&client, &ns, "web").await? == [PROXY_IMAGE, PROXY_IMAGE]).then_some(()))
    })
    .await?;
    assert_eq!(
        selector(&client, &ns).await?,
        json!({"coalmine.dev/proxy": "web"})
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let front = serde_json::to_value(services.get("web").await?)?;
    assert_eq!(front["spec"]["ports"][0]["port"], 80);
    assert_eq!(front["spec"]["ports"][0]["targetPort"], 8080);
    // The endpointslice controller fills web-stable on its own pace.
    eventually(
        60,
        "Service web-stable in front of the two stable pods",
        || async {
            Ok((serving(&client, &ns, "web-stable").await? == ["web:1", "web:1"]).then_some(()))
        },
    )
    .await?;
    routes_at(&client, &ns, 0).await?;
    check_objects(&client, &ns).await?;

    // The rollout, its routes after every step.
    set_image(&client, &ns, "web", "web:2").await?;
    let s = phase(&client, &ns, "web", "Paused", 90).await?;
    assert_eq!(s["weight"], 20);
    let r = routes_at(&client, &ns, 20).await?;
    assert_eq!(r["mirrorPercent"], 0);
    assert_eq!(
        condition(&s, "RouteAccepted").map(|c| c["status"].clone()),
        Some(json!("True")),
        "the proxies were Ready before the rollout"
    );
    // A steady step writes nothing.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let rv = cms.get("web-proxy").await?.metadata.resource_version;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert_eq!(
        cms.get("web-proxy").await?.metadata.resource_version,
        rv,
        "the ConfigMap was rewritten with nothing to change"
    );
    command(&client, &ns, "web", "promote/1").await?;
    eventually(60, "step 3 at 50%", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok((s["phase"] == "Paused" && s["weight"] == 50).then_some(()))
    })
    .await?;
    routes_at(&client, &ns, 50).await?;
    command(&client, &ns, "web", "promote/2").await?;
    phase(&client, &ns, "web", "Promoted", 120).await?;
    routes_at(&client, &ns, 0).await?;
    eventually(90, "stable runs web:2 behind web-stable", || async {
        Ok((serving(&client, &ns, "web-stable").await? == ["web:2", "web:2"]).then_some(()))
    })
    .await?;
    assert_eq!(
        selector(&client, &ns).await?,
        json!({"coalmine.dev/proxy": "web"}),
        "still behind the proxies"
    );

    // The router turned off: web selects the stable pods again before the
    // proxies go. Each poll reads the Deployment first, so a Deployment at
    // zero with the Service still on the proxies is an order violated.
    merge_patch(
        &client,
        &ns,
        "web",
        json!({"spec": {"trafficRouting": {"proxy": null, "replicas": {}}}}),
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually(60, "web-proxy at 0 replicas", || async {
        let d = deployments.get("web-proxy").await?;
        let replicas = d.spec.and_then(|s| s.replicas);
        let sel = selector(&client, &ns).await?;
        if replicas == Some(0) {
            assert_eq!(
                sel,
                json!({"app": "web"}),
                "web selects the app's pods (replicas router) once the proxies go"
            );
            return Ok(Some(()));
        }
        Ok(None)
    })
    .await?;
    eventually(60, "Service web in front of the stable pods", || async {
        Ok((serving(&client, &ns, "web").await? == ["web:2", "web:2"]).then_some(()))
    })
    .await?;
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_canary_deleted_mid_rollout_leaves_the_routes_all_stable() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "proxy-del").await?;
    let ctl = Controller::start(env, &ns)?;
    let steps = json!([{"setWeight": 30}, {"pause": {}}]);
    create(&client, &ns, "web", proxy_spec(json!({}), steps)).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    eventually(60, "Service web in front of the proxies", || async {
        Ok((selector(&client, &ns).await? == json!({"coalmine.dev/proxy": "web"})).then_some(()))
    })
    .await?;
    set_image(&client, &ns, "web", "web:2").await?;
    phase(&client, &ns, "web", "Paused", 90).await?;
    routes_at(&client, &ns, 30).await?;

    // Every change of the ConfigMap and of Service web from here on.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let cm_rv = cms
        .get("web-proxy")
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let svc_rv = services
        .get("web")
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let wp = |name: &str| WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut cm_events = cms.watch(&wp("web-proxy"), &cm_rv).await?.boxed();
    let mut svc_events = services.watch(&wp("web"), &svc_rv).await?.boxed();
    let canaries: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    canaries
        .delete("web", &kube::api::DeleteParams::default())
        .await?;

    // The last routes the ConfigMap held before the garbage collector
    // took it: all stable.
    let last_routes = tokio::time::timeout(std::time::Duration::from_secs(90), async {
        let mut last = None;
        while let Some(e) = cm_events.next().await {
            match e? {
                WatchEvent::Modified(cm) => {
                    last = cm.data.and_then(|d| d.get("routes.json").cloned());
                }
                WatchEvent::Deleted(_) => return Ok::<_, BoxError>(last),
                _ => {}
            }
        }
        Ok(last)
    })
    .await??;
    let last: Value = serde_json::from_str(&last_routes.ok_or("the routes never changed")?)?;
    assert_eq!(last["canaryWeight"], 0, "{last}");
    // And Service web was pointed back at the stable pods before it went.
    let last_selector = tokio::time::timeout(std::time::Duration::from_secs(90), async {
        let mut last = None;
        while let Some(e) = svc_events.next().await {
            match e? {
                WatchEvent::Modified(s) => last = s.spec.and_then(|s| s.selector),
                WatchEvent::Deleted(_) => return Ok::<_, BoxError>(last),
                _ => {}
            }
        }
        Ok(last)
    })
    .await??;
    assert_eq!(
        last_selector,
        Some(BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("coalmine.dev/track".to_owned(), "stable".to_owned())
        ]))
    );
    eventually(60, "the Canary gone", || async {
        Ok(canaries.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    let log = ctl.finish()?;
    assert!(log.contains("deleted: traffic on stable"), "{log}");
    Ok(())
}

#[tokio::test]
async fn proxies_that_cannot_run_hold_the_rollout_at_weight_zero() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "proxy-pending").await?;
    let ctl = Controller::start(env, &ns)?;
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    let settings = json!({"replicas": 1, "nodeSelector": {"coalmine.dev/test-pool": "nowhere"}});
    create(&client, &ns, "web", proxy_spec(settings, steps)).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    let held = eventually(60, "RouteAccepted=False", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(condition(&s, "RouteAccepted")
            .filter(|c| c["status"] == "False")
            .map(|c| (s, c)))
    })
    .await?;
    let message = held.1["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the proxies are not ready yet"),
        "{message}"
    );
    // The canary's pods run, yet nothing moves past weight 0.
    eventually(60, "the canary's pods Ready", || async {
        Ok((serving(&client, &ns, "web-canary").await? == ["web:2", "web:2"]).then_some(()))
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let s = kube_env::status(&client, &ns, "web").await?;
    assert_eq!(s["weight"], 0, "{s}");
    assert_eq!(s["phase"], "Progressing", "{s}");
    assert_eq!(
        routes(&client, &ns)
            .await?
            .map(|r| r["canaryWeight"].clone()),
        Some(json!(0))
    );
    assert_eq!(
        selector(&client, &ns).await?,
        json!({"app": "web", "coalmine.dev/track": "stable"}),
        "Service web not switched to proxies that do not run"
    );
    assert_eq!(serving(&client, &ns, "web").await?, ["web:1", "web:1"]);
    // The proxy pod is Pending: the Deployment has none available.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments.get("web-proxy").await?;
    assert_eq!(d.status.and_then(|s| s.available_replicas).unwrap_or(0), 0);
    // The sticky-cookie Secret deleted by hand while the proxies are short
    // of pods: a pod that mounts it could never start, so the controller
    // (which may create Secrets but not read them) makes it again.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let first = secrets.get("web-proxy").await?.metadata.uid;
    secrets
        .delete("web-proxy", &kube::api::DeleteParams::default())
        .await?;
    eventually(60, "Secret web-proxy made again", || async {
        Ok(secrets
            .get_opt("web-proxy")
            .await?
            .filter(|s| s.metadata.uid != first && s.metadata.deletion_timestamp.is_none())
            .map(|s| s.data.unwrap_or_default().get("secret").map(|k| k.0.len())))
    })
    .await
    .map(|len| assert_eq!(len, Some(32)))?;
    ctl.finish()?;
    Ok(())
}
