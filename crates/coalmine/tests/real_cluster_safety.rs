//! Capacity and failure visibility on a real API server
//! (`scripts/kube-env.sh`): the real controller-manager makes ReplicaSets,
//! Pods and EndpointSlices for what `coalmine controller` writes, and the
//! tests watch the EndpointSlices to see how many Ready pods the Service
//! sends traffic to at every moment of a rollout.

mod kube_env;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube_env::{
    BoxError, Controller, TestResult, command, condition, create, create_http_route, env,
    eventually, http_routes, namespace, phase, set_image, spec,
};
use serde_json::{Value, json};

/// Ready endpoints behind a Service, per track: (stable, canary).
type Ready = (usize, usize);

/// Every (stable, canary) count of Ready endpoints behind Service `svc`,
/// one per EndpointSlice watch event, from the moment it is called.
struct EndpointLog {
    seen: Arc<Mutex<Vec<Ready>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EndpointLog {
    async fn start(client: &Client, ns: &str, svc: &str) -> Result<EndpointLog, BoxError> {
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        let canary_prefix = format!("{svc}-canary-");
        let cfg = watcher::Config::default().labels(&format!("kubernetes.io/service-name={svc}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut started_tx = Some(started_tx);
            let mut by_slice: BTreeMap<String, Ready> = BTreeMap::new();
            let mut stream = std::pin::pin!(watcher(slices, cfg));
            while let Ok(Some(ev)) = stream.try_next().await {
                let count = |s: &EndpointSlice| {
                    let mut r = (0, 0);
                    for ep in &s.endpoints {
                        if ep.conditions.as_ref().and_then(|c| c.ready) != Some(true) {
                            continue;
                        }
                        let pod = ep.target_ref.as_ref().and_then(|t| t.name.as_deref());
                        if pod.is_some_and(|p| p.starts_with(&canary_prefix)) {
                            r.1 += 1;
                        } else {
                            r.0 += 1;
                        }
                    }
                    r
                };
                let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
                match ev {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                        by_slice.insert(name(&s), count(&s));
                    }
                    watcher::Event::Delete(s) => {
                        by_slice.remove(&name(&s));
                    }
                    watcher::Event::Init => {
                        by_slice.clear();
                        continue;
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = started_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                let total = by_slice
                    .values()
                    .fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
                if let Ok(mut v) = out.lock() {
                    v.push(total);
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), started_rx)
            .await
            .map_err(|_| "the EndpointSlice watch did not start in 30s")??;
        Ok(EndpointLog { seen, task })
    }

    /// The counts so far.
    fn seen(&self) -> Vec<Ready> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The counts so far, consecutive repeats folded.
    fn changes(&self) -> Vec<Ready> {
        let mut v = self.seen();
        v.dedup();
        v
    }
}

impl Drop for EndpointLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The canary Deployment's replicas (None when it does not exist).
async fn replicas(client: &Client, ns: &str, name: &str) -> Result<Option<i32>, BoxError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    Ok(api
        .get_opt(name)
        .await?
        .map(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1)))
}

/// Waits until the rollout pauses for a person at `weight`.
async fn paused_at(client: &Client, ns: &str, weight: u64) -> Result<Value, BoxError> {
    eventually(120, &format!("Paused at weight {weight}"), || async {
        let s = kube_env::status(client, ns, "web").await?;
        Ok((s["phase"] == "Paused" && s["weight"] == weight).then_some(s))
    })
    .await
}

/// Waits until the Service sends only to `n` Ready canary endpoints.
async fn all_on_canary(log: &EndpointLog, n: usize) -> TestResult {
    eventually(120, &format!("{n} Ready canary endpoints only"), || async {
        Ok((log.seen().last() == Some(&(0, n))).then_some(()))
    })
    .await
}

/// Waits until the Service has `n` Ready stable endpoints and none of the
/// canary, and the canary Deployment asks for 0 pods.
async fn settled(client: &Client, ns: &str, log: &EndpointLog, n: usize) -> TestResult {
    eventually(120, &format!("{n} Ready stable endpoints"), || async {
        let last = log.seen().last().copied();
        let canary = replicas(client, ns, "web-canary").await?;
        Ok((last == Some((n, 0)) && canary.is_none_or(|r| r == 0)).then_some(()))
    })
    .await
}

#[tokio::test]
async fn replicas_router_never_has_fewer_ready_pods_than_spec_replicas() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "capacity").await?;
    let ctl = Controller::start(env, &ns)?;
    let steps = json!([
        {"setWeight": 25}, {"pause": {"duration": "1s"}},
        {"setWeight": 100}, {"pause": {}}
    ]);
    create(&client, &ns, "web", spec("web:1", 4, steps)).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    let log = EndpointLog::start(&client, &ns, "web").await?;
    settled(&client, &ns, &log, 4).await?;
    let from = log.seen().len();

    // A rollout through 25% and 100%, promoted by a person.
    set_image(&client, &ns, "web", "web:2").await?;
    paused_at(&client, &ns, 100).await?;
    all_on_canary(&log, 4).await?;
    command(&client, &ns, "web", "promote/1").await?;
    phase(&client, &ns, "web", "Promoted", 120).await?;
    settled(&client, &ns, &log, 4).await?;
    let promoted = log.seen().len();

    // The next one aborted at 100%: stable comes back before the canary goes.
    set_image(&client, &ns, "web", "web:3").await?;
    paused_at(&client, &ns, 100).await?;
    all_on_canary(&log, 4).await?;
    command(&client, &ns, "web", "abort/2").await?;
    phase(&client, &ns, "web", "RolledBack", 120).await?;
    settled(&client, &ns, &log, 4).await?;

    let seen = log.seen();
    let min = |s: &[Ready]| s.iter().map(|r| r.0 + r.1).min().unwrap_or(0);
    eprintln!(
        "capacity: {} EndpointSlice events ({} promotion, {} abort), min Ready endpoints {} (promotion {}, abort {}); changes {:?}",
        seen.len() - from,
        promoted - from,
        seen.len() - promoted,
        min(&seen[from..]),
        min(&seen[from..promoted]),
        min(&seen[promoted..]),
        log.changes()
    );
    assert!(
        seen[from..].iter().all(|r| r.0 + r.1 >= 4),
        "Ready endpoints fell below spec.replicas (4): {:?}",
        log.changes()
    );
    assert!(
        seen[from..].contains(&(0, 4)),
        "setWeight: 100 put every pod on the canary: {:?}",
        log.changes()
    );
    ctl.finish()?;
    Ok(())
}

/// The Service's selector and its ports' numbers.
async fn service(client: &Client, ns: &str) -> Result<(Value, Vec<i64>), BoxError> {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), ns);
    let s = serde_json::to_value(api.get("web").await?)?;
    let ports = s["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    Ok((s["spec"]["selector"].clone(), ports))
}

#[tokio::test]
async fn a_release_label_on_the_template_never_empties_the_service() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "labels").await?;
    let ctl = Controller::start(env, &ns)?;
    // No spec.selector, and a label that changes with every release.
    let mut s = spec("web:1", 4, json!([{"setWeight": 50}, {"pause": {}}]));
    s.as_object_mut().map(|o| o.remove("selector"));
    s["template"]["metadata"]["labels"] = json!({"app": "web", "app.kubernetes.io/version": "1"});
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    let log = EndpointLog::start(&client, &ns, "web").await?;
    settled(&client, &ns, &log, 4).await?;
    let from = log.seen().len();

    let api: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    let patch = json!({"spec": {"template": {
        "metadata": {"labels": {"app": "web", "app.kubernetes.io/version": "2"}},
        "spec": {"containers": [{"name": "web", "image": "web:2", "ports": [{"containerPort": 8080}]}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    paused_at(&client, &ns, 50).await?;
    eventually(60, "2 stable and 2 canary Ready endpoints", || async {
        Ok((log.seen().last() == Some(&(2, 2))).then_some(()))
    })
    .await?;
    let (selector, _) = service(&client, &ns).await?;
    assert_eq!(selector, json!({"app": "web"}), "release labels left out");
    assert!(
        log.seen()[from..].iter().all(|r| r.0 + r.1 >= 4),
        "Ready endpoints fell below 4 when the version label changed: {:?}",
        log.changes()
    );

    // A template that drops a label of the selector is refused, not applied.
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"app": "other"}}}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let refused = eventually(60, "Valid=False", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        let valid = s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Valid" && c["status"] == "False")
            .cloned();
        Ok(valid)
    })
    .await?;
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.template.metadata.labels") && message.contains("app=web"),
        "{refused}"
    );
    assert_eq!(service(&client, &ns).await?.0, json!({"app": "web"}));
    assert!(log.seen()[from..].iter().all(|r| r.0 + r.1 >= 4));
    ctl.finish()?;
    Ok(())
}

#[test]
fn the_selector_is_immutable_and_label_only() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(env.admin())?;
    let ns = rt.block_on(namespace(&client, "selector"))?;
    rt.block_on(create(
        &client,
        &ns,
        "web",
        spec("web:1", 2, json!([{"setWeight": 50}])),
    ))?;
    let out = env
        .kubectl()?
        .args([
            "patch",
            "canaries.coalmine.dev",
            "web",
            "-n",
            &ns,
            "--type=merge",
        ])
        .args([
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#,
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("selector is immutable"),
        "{err}"
    );
    let mut s = spec("web:1", 2, json!([{"setWeight": 50}]));
    s["selector"]["matchExpressions"] = json!([{"key": "tier", "operator": "Exists"}]);
    let doc = json!({"apiVersion": "coalmine.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": "expr", "namespace": ns}, "spec": s});
    let out =
        env.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &doc.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("matchExpressions are not supported"),
        "{err}"
    );
    Ok(())
}

/// The controller reads what it manages from watch caches and remembers a
/// canary Deployment it found missing; one made without coalmine's label
/// after that (which no cache of the controller sees) is still refused at
/// the next rollout, never created over or taken over.
#[tokio::test]
async fn a_foreign_canary_deployment_made_while_idle_is_refused_not_taken_over() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "foreign").await?;
    let ctl = Controller::start(env, &ns)?;
    create(
        &client,
        &ns,
        "web",
        spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    eventually(60, "stable at 2", || async {
        Ok((replicas(&client, &ns, "web").await? == Some(2)).then_some(()))
    })
    .await?;
    // Reconciles at rest have found web-canary missing by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let foreign = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web-canary", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "other"}},
            "template": {"metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "other", "image": "other:0"}]}}}});
    env.apply(&foreign)?;
    set_image(&client, &ns, "web", "web:2").await?;
    let refused = eventually(60, "Valid=False NotOwned", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(condition(&s, "Valid").filter(|c| c["reason"] == "NotOwned"))
    })
    .await?;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("web-canary")),
        "{refused}"
    );
    let d = kube_env::deployment(&client, &ns, "web-canary")
        .await?
        .ok_or("web-canary is gone")?;
    assert_eq!(kube_env::shape(&d), (1, "other:0".to_owned()), "taken over");
    assert!(
        d.metadata.owner_references.is_none(),
        "owner set on a foreign Deployment"
    );
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_running_app_is_refused_then_handed_over_without_a_gap() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "adopt").await?;
    // The app as it runs before coalmine: a Deployment and a Service with
    // two ports.
    let legacy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web-legacy", "namespace": ns},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:0"}]}}}});
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "metrics", "port": 9090, "targetPort": 9090}]}});
    for doc in [&legacy, &svc] {
        env.apply(doc)?;
    }
    let log = EndpointLog::start(&client, &ns, "web").await?;
    settled(&client, &ns, &log, 4).await?;
    let from = log.seen().len();

    let ctl = Controller::start(env, &ns)?;
    create(
        &client,
        &ns,
        "web",
        spec("web:1", 4, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    let refused = eventually(60, "Valid=False NotOwned", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Valid" && c["reason"] == "NotOwned")
            .cloned())
    })
    .await?;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("kubectl label service web")),
        "{refused}"
    );
    assert_eq!(
        replicas(&client, &ns, "web").await?,
        None,
        "nothing created"
    );
    assert_eq!(
        service(&client, &ns).await?,
        (json!({"app": "web"}), vec![80, 9090])
    );

    // Handed over: the Service keeps both ports and its pods serve on.
    let out = env
        .kubectl()?
        .args(["label", "service", "web", "-n", &ns])
        .arg("app.kubernetes.io/managed-by=coalmine")
        .output()?;
    assert!(out.status.success());
    eventually(60, "Valid=True", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(condition(&s, "Valid").filter(|c| c["status"] == "True"))
    })
    .await?;
    eventually(60, "8 Ready endpoints (old and new pods)", || async {
        Ok((log.seen().last() == Some(&(8, 0))).then_some(()))
    })
    .await?;
    assert_eq!(
        service(&client, &ns).await?,
        (json!({"app": "web"}), vec![80, 9090])
    );
    let out = env
        .kubectl()?
        .args(["delete", "deployment", "web-legacy", "-n", &ns])
        .output()?;
    assert!(out.status.success());
    settled(&client, &ns, &log, 4).await?;
    assert!(
        log.seen()[from..].iter().all(|r| r.0 + r.1 >= 4),
        "a gap in Ready endpoints during the migration: {:?}",
        log.changes()
    );
    ctl.finish()?;
    Ok(())
}

#[test]
fn rbac_grants_what_the_controller_uses_and_nothing_else() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    // `RESOURCE/SUB` is a subresource (kubectl reads `a/b` as object b).
    let can = |verb: &str, what: &str, ns: &str| -> Result<bool, BoxError> {
        let mut cmd = env.kubectl()?;
        cmd.args(["auth", "can-i", verb, "-n", ns]);
        match what.split_once('/') {
            Some((resource, sub)) => cmd.arg(resource).arg(format!("--subresource={sub}")),
            None => cmd.arg(what),
        };
        let out = cmd
            .args([
                "--as",
                "system:serviceaccount:coalmine-system:coalmine-controller",
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    // What the code calls (reconcile.rs, workload.rs, cache.rs, lib.rs's
    // watches, the routers, leader.rs).
    let used = [
        ("get", "canaries.coalmine.dev"),
        ("list", "canaries.coalmine.dev"),
        ("watch", "canaries.coalmine.dev"),
        ("patch", "canaries.coalmine.dev"),
        ("update", "canaries.coalmine.dev/status"),
        ("update", "canaries.coalmine.dev/finalizers"),
        ("get", "deployments.apps"),
        ("list", "deployments.apps"),
        ("watch", "deployments.apps"),
        ("create", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("get", "services"),
        ("list", "services"),
        ("watch", "services"),
        ("create", "services"),
        ("patch", "services"),
        ("get", "configmaps"),
        ("list", "configmaps"),
        ("watch", "configmaps"),
        ("create", "configmaps"),
        ("patch", "configmaps"),
        ("create", "secrets"),
        ("get", "serviceaccounts"),
        ("create", "serviceaccounts"),
        ("get", "roles.rbac.authorization.k8s.io"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("get", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("list", "endpointslices.discovery.k8s.io"),
        ("watch", "endpointslices.discovery.k8s.io"),
        ("list", "horizontalpodautoscalers.autoscaling"),
        ("get", "httproutes.gateway.networking.k8s.io"),
        ("patch", "httproutes.gateway.networking.k8s.io"),
        ("get", "ingresses.networking.k8s.io"),
        ("create", "ingresses.networking.k8s.io"),
        ("patch", "ingresses.networking.k8s.io"),
        ("delete", "ingresses.networking.k8s.io"),
        ("create", "events.events.k8s.io"),
        ("patch", "events.events.k8s.io"),
    ];
    for (verb, what) in used {
        assert!(can(verb, what, "default")?, "{verb} {what} is needed");
    }
    for (verb, what) in [
        ("get", "leases"),
        ("create", "leases"),
        ("update", "leases"),
    ] {
        assert!(can(
            verb,
            &format!("{what}.coordination.k8s.io"),
            "coalmine-system"
        )?);
    }
    let unused = [
        ("update", "canaries.coalmine.dev"),
        ("patch", "canaries.coalmine.dev/status"),
        ("update", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("update", "deployments.apps/scale"),
        ("delete", "services"),
        ("list", "httproutes.gateway.networking.k8s.io"),
        ("list", "ingresses.networking.k8s.io"),
        ("create", "events"),
        ("get", "pods"),
        ("get", "secrets"),
        ("list", "secrets"),
        ("patch", "secrets"),
        ("update", "configmaps"),
        ("delete", "configmaps"),
        ("patch", "serviceaccounts"),
        ("delete", "serviceaccounts"),
        ("patch", "roles.rbac.authorization.k8s.io"),
        ("escalate", "roles.rbac.authorization.k8s.io"),
        ("bind", "roles.rbac.authorization.k8s.io"),
        ("list", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("get", "horizontalpodautoscalers.autoscaling"),
        ("patch", "horizontalpodautoscalers.autoscaling"),
    ];
    for (verb, what) in unused {
        assert!(!can(verb, what, "default")?, "{verb} {what} is not used");
    }
    assert!(!can(
        "patch",
        "leases.coordination.k8s.io",
        "coalmine-system"
    )?);
    assert!(!can("get", "leases.coordination.k8s.io", "default")?);
    Ok(())
}

/// A ResourceQuota `hard` in `ns`, its status written by hand (the test
/// cluster runs no quota controller; the API server's quota admission
/// counts from the status).
fn quota(env: &kube_env::Env, ns: &str, hard: Value) -> TestResult {
    let doc = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "limit", "namespace": ns}, "spec": {"hard": hard}});
    env.apply(&doc)?;
    let used: serde_json::Map<String, Value> = hard
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| (k.clone(), json!("0")))
        .collect();
    let status = json!({"status": {"hard": hard, "used": used}});
    let out = env
        .kubectl()?
        .args([
            "patch",
            "resourcequota",
            "limit",
            "-n",
            ns,
            "--subresource=status",
        ])
        .args(["--type=merge", "-p", &status.to_string()])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The reasons of the Events about Canary `web`.
async fn event_reasons(client: &Client, ns: &str) -> Result<Vec<String>, BoxError> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
        .filter_map(|e| e.reason)
        .collect())
}

#[tokio::test]
async fn a_refused_write_is_a_condition_an_event_and_a_column() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "refused").await?;
    quota(env, &ns, json!({"count/deployments.apps": "0"}))?;
    // Its log has the API server's 403: not finished with `finish`.
    let _ctl = Controller::start(env, &ns)?;
    create(
        &client,
        &ns,
        "web",
        spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    let applied = eventually(60, "Applied=False", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(condition(&s, "Applied").filter(|c| c["status"] == "False"))
    })
    .await?;
    assert_eq!(applied["reason"], "QuotaExceeded", "{applied}");
    assert!(
        applied["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeded quota")),
        "{applied}"
    );
    let table = env
        .kubectl()?
        .args(["get", "canaries.coalmine.dev", "-n", &ns])
        .output()?;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("ERROR") && table.contains("exceeded quota"),
        "{table}"
    );
    eventually(30, "a QuotaExceeded Event", || async {
        let reasons = event_reasons(&client, &ns).await?;
        Ok(reasons.iter().any(|r| r == "QuotaExceeded").then_some(()))
    })
    .await?;

    let out = env
        .kubectl()?
        .args(["delete", "resourcequota", "limit", "-n", &ns])
        .output()?;
    assert!(out.status.success());
    eventually(60, "Applied=True", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(condition(&s, "Applied").filter(|c| c["status"] == "True"))
    })
    .await?;
    assert_eq!(replicas(&client, &ns, "web").await?, Some(2));
    Ok(())
}

#[tokio::test]
async fn a_promotion_that_cannot_finish_says_it_is_stuck() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "stuck").await?;
    let ctl = Controller::start(env, &ns)?;
    let hook = coalmine_notify::testing::Recorder::start().await?;
    let mut s = spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    s["progressDeadline"] = json!("5s");
    s["notifications"] = json!([{"url": hook.url, "on": ["stuck"]}]);
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    paused_at(&client, &ns, 50).await?;
    // No new pod may start: promotion waits for a full canary forever.
    quota(env, &ns, json!({"pods": "0"}))?;
    command(&client, &ns, "web", "promote-full/1").await?;
    let stuck = eventually(60, "Stuck=True", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(condition(&s, "Stuck").filter(|c| c["status"] == "True"))
    })
    .await?;
    let message = stuck["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("promoting") && message.contains("web-canary wants 2 pods"),
        "{stuck}"
    );
    eventually(30, "a Stuck Event", || async {
        let reasons = event_reasons(&client, &ns).await?;
        Ok(reasons.iter().any(|r| r == "Stuck").then_some(()))
    })
    .await?;
    // The Event is also the `stuck` notification, with the reason.
    let stuck_notice = eventually(30, "a stuck notification", || async {
        Ok(hook.json().into_iter().find(|b| b["transition"] == "stuck"))
    })
    .await?;
    assert!(
        stuck_notice.to_string().contains("progressDeadline"),
        "{stuck_notice}"
    );
    let out = env
        .kubectl()?
        .args(["delete", "resourcequota", "limit", "-n", &ns])
        .output()?;
    assert!(out.status.success());
    let done = phase(&client, &ns, "web", "Promoted", 120).await?;
    assert_eq!(
        condition(&done, "Stuck").map(|c| c["status"].clone()),
        Some(json!("False"))
    );
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn every_ignored_command_is_reported_even_when_events_fold() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "ignored").await?;
    let ctl = Controller::start(env, &ns)?;
    create(
        &client,
        &ns,
        "web",
        spec("web:1", 1, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    // Nothing to promote: each `promote` is ignored, the second one too
    // (the event recorder would fold it into the first one's series).
    for attempt in 1..=3 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coalmine"))
            .args(["promote", "web", "-n", &ns])
            .env("KUBECONFIG", env.var("ADMIN_KUBECONFIG")?)
            .stdin(std::process::Stdio::null())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "attempt {attempt}: {err}");
        assert!(err.contains("ignored"), "attempt {attempt}: {err}");
    }
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn behind_a_gateway_the_canary_keeps_its_pods_for_the_scale_down_delay() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "delay").await?;
    create_http_route(
        &client,
        &ns,
        "web",
        json!([{"backendRefs": [{"name": "web", "port": 80}]}]),
    )
    .await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
    create(&client, &ns, "web", s).await?;
    let api: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    let patch = json!({"metadata": {"annotations": {"coalmine.dev/scale-down-delay": "8s"}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    for (image, cmd, end) in [
        ("web:2", "promote-full/1", "Promoted"),
        ("web:3", "abort/2", "RolledBack"),
    ] {
        set_image(&client, &ns, "web", image).await?;
        paused_at(&client, &ns, 50).await?;
        eventually(60, "2 canary pods", || async {
            Ok((replicas(&client, &ns, "web-canary").await? == Some(2)).then_some(()))
        })
        .await?;
        command(&client, &ns, "web", cmd).await?;
        let done = phase(&client, &ns, "web", end, 120).await?;
        let left: coalmine_core::Time = condition(&done, "CanaryTraffic")
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_owned))
            .ok_or("no CanaryTraffic condition")?
            .parse()?;
        // Polled until the canary is at 0: never before the delay.
        let zero = eventually(60, "the canary at 0", || async {
            let r = replicas(&client, &ns, "web-canary").await?;
            let now = coalmine_core::Time::now();
            Ok((r == Some(0)).then_some(now))
        })
        .await?;
        let after = zero.since(left);
        eprintln!("{end}: canary scaled to 0 {after} after traffic left it");
        assert!(
            after >= coalmine_core::Duration::from_secs(8),
            "{end}: the canary went {after} after traffic left it, before the 8s delay"
        );
    }
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn the_scale_subresource_has_a_selector_and_reaches_the_pods() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "scale").await?;
    let ctl = Controller::start(env, &ns)?;
    create(
        &client,
        &ns,
        "web",
        spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    let scale = || -> Result<Value, BoxError> {
        let out = env
            .kubectl()?
            .args(["get", "canaries.coalmine.dev", "web", "-n", &ns])
            .args(["--subresource=scale", "-o", "json"])
            .output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let s = eventually(60, "the scale's status", || async {
        let s = scale()?;
        Ok((s["status"]["replicas"] == 2).then_some(s))
    })
    .await?;
    assert_eq!(s["status"]["selector"], "app=web", "{s}");
    let out = env
        .kubectl()?
        .args([
            "scale",
            "canaries.coalmine.dev/web",
            "--replicas=3",
            "-n",
            &ns,
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(60, "stable at 3 pods", || async {
        Ok((replicas(&client, &ns, "web").await? == Some(3)).then_some(()))
    })
    .await?;
    eventually(60, "the scale's status at 3", || async {
        Ok((scale()?["status"]["replicas"] == 3).then_some(()))
    })
    .await?;
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_mirror_the_gateway_api_1_2_crds_cannot_limit_is_refused_not_written() -> TestResult {
    let env = kube_env::env_gateway_api_1_2()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "mirror").await?;
    let routes = http_routes(&client, &ns);
    create_http_route(
        &client,
        &ns,
        "web",
        json!([{"backendRefs": [{"name": "web", "port": 80}]}]),
    )
    .await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec(
        "web:1",
        2,
        json!([{"setWeight": 10}, {"setMirror": {"percent": 20}}, {"pause": {}}]),
    );
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    let refused = eventually(90, "Applied=False", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(condition(&s, "Applied").filter(|c| c["status"] == "False"))
    })
    .await?;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("requestMirror.percent")),
        "{refused}"
    );
    let r = routes.get("web").await?;
    assert!(
        !r.data["spec"].to_string().contains("RequestMirror"),
        "no mirror written: {}",
        r.data["spec"]
    );
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_route_its_gateway_refuses_stops_the_rollout_with_the_reason() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "refusedroute").await?;
    create_http_route(
        &client,
        &ns,
        "web",
        json!([{"backendRefs": [{"name": "web", "port": 80}]}]),
    )
    .await?;
    // What a Gateway controller writes when it will not serve the route.
    let status = json!({"status": {"parents": [{
        "parentRef": {"name": "gateway"}, "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners",
            "message": "no listener allows routes from this namespace",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}]}});
    let out = env
        .kubectl()?
        .args([
            "patch",
            "httproutes.gateway.networking.k8s.io",
            "web",
            "-n",
            &ns,
        ])
        .args([
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
    s["progressDeadline"] = json!("5s");
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    let failed = phase(&client, &ns, "web", "Failed", 90).await?;
    let accepted = condition(&failed, "RouteAccepted").ok_or("no RouteAccepted")?;
    assert_eq!(accepted["status"], "False", "{failed}");
    assert!(
        accepted["message"]
            .as_str()
            .is_some_and(|m| m.contains("NotAllowedByListeners")),
        "{accepted}"
    );
    ctl.finish()?;
    Ok(())
}
