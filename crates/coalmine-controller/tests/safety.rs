//! End to end: what keeps a rollout safe when things go wrong — a killed
//! controller, two controllers, a deleted Canary, a canary that never
//! becomes ready, a spec edited mid-rollout, a person's commands.

mod common;

use std::time::Duration;

use coalmine_controller::Config;
use coalmine_controller::leader::Election;
use coalmine_controller::resource::{COMMAND_ANNOTATION, CanaryResource};
use coalmine_controller::router::gateway::http_route_resource;
use common::{
    TestResult, cluster, controller, create, deployment, eventually, phase, set_image, shape, spec,
    status,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn events(client: &kube::Client) -> Result<Vec<Event>, common::BoxError> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    Ok(api.list(&ListParams::default()).await?.items)
}

async fn command(client: &kube::Client, name: &str, text: &str) -> TestResult {
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), "default");
    let patch = json!({"metadata": {"annotations": {COMMAND_ANNOTATION: text}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_new_controller_resumes_from_the_status() -> TestResult {
    let (_server, client) = cluster().await?;
    let first = controller(&client, Config::default());
    let steps = json!([
        {"setWeight": 25}, {"pause": {"duration": "2s"}},
        {"setWeight": 50}, {"pause": {"duration": "1s"}}
    ]);
    create(&client, "web", spec("web:1", 4, steps)).await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    let before = eventually(20, "weight 25", || async {
        let s = status(&client, "web").await?;
        Ok((s["weight"] == 25 && s["phase"] == "Paused").then_some(s))
    })
    .await?;
    first.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = controller(&client, Config::default());
    let after = eventually(20, "weight 50 after the restart", || async {
        let s = status(&client, "web").await?;
        Ok((s["weight"] == 50).then_some(s))
    })
    .await?;
    assert_eq!(
        after["rolloutStartedAt"], before["rolloutStartedAt"],
        "same rollout, not restarted"
    );
    phase(&client, "web", "Promoted", 20).await?;
    let started = events(&client)
        .await?
        .iter()
        .filter(|e| e.reason.as_deref() == Some("RolloutStarted"))
        .count();
    assert_eq!(started, 1, "the rollout began once");
    let stable = deployment(&client, "web").await?.ok_or("no stable")?;
    assert_eq!(shape(&stable).1, "web:2");
    second.stop().await;
    Ok(())
}

#[tokio::test]
async fn of_two_controllers_one_leader_acts_and_the_other_takes_over() -> TestResult {
    let (_server, client) = cluster().await?;
    let config = |id: &str| Config {
        election: Some(Election {
            namespace: "default".into(),
            name: "coalmine-controller".into(),
            identity: id.into(),
            duration: Duration::from_secs(2),
        }),
        ..Config::default()
    };
    let a = controller(&client, config("a"));
    let b = controller(&client, config("b"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let holder = eventually(10, "a leader", || async {
        Ok(leases
            .get_opt("coalmine-controller")
            .await?
            .and_then(|l| l.spec?.holder_identity))
    })
    .await?;
    create(
        &client,
        "web",
        spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    phase(&client, "web", "Paused", 20).await?;
    let instances: Vec<String> = events(&client)
        .await?
        .into_iter()
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
    leader.kill().await;
    command(&client, "web", "promote/1").await?;
    phase(&client, "web", "Promoted", 30).await?;
    let lease = leases.get("coalmine-controller").await?;
    let now = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(now, holder, "leadership moved");
    follower.stop().await;
    Ok(())
}

#[tokio::test]
async fn deleting_a_canary_sends_traffic_back_to_stable_first() -> TestResult {
    let (_server, client) = cluster().await?;
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &http_route_resource());
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
    }))?;
    routes.create(&PostParams::default(), &route).await?;
    let ctl = controller(&client, Config::default());
    let mut s = spec("web:1", 2, json!([{"setWeight": 30}, {"pause": {}}]));
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
    create(&client, "web", s).await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    eventually(20, "30% on the canary", || async {
        let r = routes.get("web").await?;
        Ok((r.data["spec"]["rules"][0]["backendRefs"][1]["weight"] == 30).then_some(()))
    })
    .await?;
    let canaries: Api<CanaryResource> = Api::namespaced(client.clone(), "default");
    // Even a spec made invalid meanwhile names the router to clean up.
    let bad = json!({"spec": {"steps": [{"setWeight": 30}, {"pause": {"duration": "soon"}}]}});
    canaries
        .patch("web", &PatchParams::default(), &Patch::Merge(bad))
        .await?;
    eventually(20, "Valid=False", || async {
        let s = status(&client, "web").await?;
        let invalid = s["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Valid" && c["status"] == "False")
        });
        Ok(invalid.then_some(()))
    })
    .await?;
    canaries.delete("web", &DeleteParams::default()).await?;
    eventually(20, "the Canary gone", || async {
        Ok(canaries.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    let r = routes.get("web").await?;
    assert_eq!(
        r.data["spec"]["rules"][0]["backendRefs"],
        json!([{"name": "web", "port": 80}]),
        "all traffic on stable"
    );
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_canary_never_ready_fails_at_the_progress_deadline() -> TestResult {
    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    let mut s = spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    s["progressDeadline"] = json!("2s");
    create(&client, "web", s).await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:never-ready").await?;
    let failed = phase(&client, "web", "Failed", 30).await?;
    assert_eq!(failed["rollback"]["reason"], "ProgressDeadlineExceeded");
    assert_eq!(failed["weight"], 0);
    let canary = deployment(&client, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(shape(&canary).0, 0);
    assert!(
        events(&client)
            .await?
            .iter()
            .any(|e| e.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    );
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_edit_mid_rollout_restarts_and_commands_act_once() -> TestResult {
    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    create(
        &client,
        "web",
        spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    phase(&client, "web", "Paused", 20).await?;
    set_image(&client, "web", "web:3").await?;
    eventually(20, "the canary on web:3", || async {
        let c = deployment(&client, "web-canary").await?;
        Ok(c.filter(|c| shape(c).1 == "web:3").map(|_| ()))
    })
    .await?;
    let st = phase(&client, "web", "Paused", 20).await?;
    assert_eq!(st["step"], 1);
    assert!(
        events(&client)
            .await?
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolloutRestarted"))
    );
    command(&client, "web", "promote/a1").await?;
    let done = phase(&client, "web", "Promoted", 20).await?;
    assert_eq!(done["lastCommand"], "promote/a1");
    let stable = deployment(&client, "web").await?.ok_or("no stable")?;
    assert_eq!(shape(&stable).1, "web:3");
    // The same command seen again does nothing.
    set_image(&client, "web", "web:4").await?;
    phase(&client, "web", "Paused", 20).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&client, "web").await?["phase"], "Paused");
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_invalid_edit_mid_rollout_changes_nothing_until_fixed() -> TestResult {
    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    create(
        &client,
        "web",
        spec("web:1", 4, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    phase(&client, "web", "Paused", 20).await?;
    // The status is stored before the actions: wait for them too, and for
    // the canary to be ready (while it is not, the rollout shows
    // Progressing, "waiting for the canary"), so the phase is settled.
    eventually(20, "the canary at 2 ready replicas", || async {
        let c = deployment(&client, "web-canary").await?;
        Ok(c.filter(|c| {
            shape(c) == (2, "web:2".to_owned())
                && c.status.as_ref().and_then(|s| s.available_replicas) == Some(2)
        })
        .map(|_| ()))
    })
    .await?;
    let paused = phase(&client, "web", "Paused", 20).await?;
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), "default");
    let bad = json!({"spec": {"steps": [{"setWeight": 50}, {"pause": {"duration": "soon"}}]}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(bad))
        .await?;
    let invalid = eventually(20, "Valid=False", || async {
        let s = status(&client, "web").await?;
        let c = s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Valid").cloned());
        Ok(c.filter(|c| c["status"] == "False").map(|c| (s, c)))
    })
    .await?;
    assert!(
        invalid.1["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.steps[1].pause.duration"),
        "{}",
        invalid.1
    );
    assert_eq!(invalid.0["phase"], "Paused");
    assert_eq!(invalid.0["weight"], paused["weight"]);
    let canary = deployment(&client, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(
        shape(&canary),
        (2, "web:2".to_owned()),
        "workloads untouched"
    );
    let good = json!({"spec": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(good))
        .await?;
    eventually(20, "Valid=True", || async {
        let s = status(&client, "web").await?;
        let ok = s["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Valid" && c["status"] == "True")
        });
        Ok((ok && s["phase"] == "Paused").then_some(()))
    })
    .await?;
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn readiness_waits_for_the_canary_watch() -> TestResult {
    let (_server, client) = common::bare_cluster().await?;
    let ctl = controller(&client, Config::default());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!ctl.metrics.is_ready(), "no CRD: the watch cannot list");
    eprintln!("stopping");
    tokio::time::timeout(Duration::from_secs(5), ctl.stop())
        .await
        .map_err(|_| "stop hung")?;
    eprintln!("stopped");
    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    eventually(10, "ready", || async {
        Ok(ctl.metrics.is_ready().then_some(()))
    })
    .await?;
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_rollout_completes_while_another_writer_keeps_changing_the_canary() -> TestResult {
    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    let steps = json!([{"setWeight": 50}, {"pause": {"duration": "1s"}}]);
    create(&client, "web", spec("web:1", 2, steps)).await?;
    phase(&client, "web", "Idle", 20).await?;
    // Every 10 ms someone else moves the resourceVersion: status writes
    // made from an older read get 409 and are redone from a fresh one.
    let noise = tokio::spawn({
        let api: Api<CanaryResource> = Api::namespaced(client.clone(), "default");
        async move {
            for i in 0u64.. {
                let patch = json!({"metadata": {"labels": {"noise": i.to_string()}}});
                let _ = api
                    .patch("web", &PatchParams::default(), &Patch::Merge(patch))
                    .await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    set_image(&client, "web", "web:2").await?;
    let done = phase(&client, "web", "Promoted", 40).await;
    noise.abort();
    done?;
    let started = events(&client)
        .await?
        .iter()
        .filter(|e| e.reason.as_deref() == Some("RolloutStarted"))
        .count();
    assert_eq!(started, 1, "no transition recorded twice");
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_stable_deployment_deleted_mid_rollout_comes_back_at_the_stable_revision() -> TestResult {
    let (_server, client) = cluster().await?;
    let running = controller(&client, Config::default());
    let steps = json!([{"setWeight": 25}, {"pause": {}}]);
    create(&client, "web", spec("web:1", 4, steps)).await?;
    eventually(20, "stable's template in the status", || async {
        let s = status(&client, "web").await?;
        Ok((s["phase"] == "Idle" && s["stableTemplate"].is_object()).then_some(()))
    })
    .await?;
    set_image(&client, "web", "web:2").await?;
    eventually(20, "paused at 25%", || async {
        let s = status(&client, "web").await?;
        Ok((s["phase"] == "Paused" && s["weight"] == 25).then_some(()))
    })
    .await?;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "default");
    let old = deployment(&client, "web").await?.ok_or("no stable")?;
    deployments.delete("web", &DeleteParams::default()).await?;
    // Only the watch event of the deletion can bring it back this soon:
    // a rollout waiting at `pause: {}` is not polled.
    let back = eventually(10, "stable recreated", || async {
        Ok(deployment(&client, "web")
            .await?
            .filter(|d| d.metadata.uid != old.metadata.uid))
    })
    .await?;
    assert_eq!(
        shape(&back).1,
        "web:1",
        "stable's revision, not the spec's image"
    );
    // At the rollout's split once the canary's pod serves (stable shrinks
    // only as far as Ready canary pods cover).
    eventually(10, "stable at 3 pods of web:1", || async {
        Ok(deployment(&client, "web")
            .await?
            .filter(|d| shape(d) == (3, "web:1".to_owned())))
    })
    .await?;
    // The rollout stays where it was (it may pass through Progressing
    // while the canary's scale-up to its 25% rolls out).
    eventually(10, "still paused at 25%", || async {
        let s = status(&client, "web").await?;
        Ok((s["phase"] == "Paused" && s["weight"] == 25 && s["step"] == 1).then_some(()))
    })
    .await?;
    let canary = deployment(&client, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(shape(&canary), (1, "web:2".to_owned()));
    // Waiting for a person, the rollout is not polled: once the watch
    // events of the recreation have passed, no reconcile for 6 s (the
    // resync of a rollout waiting on the cluster is 5 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reconciles = |text: String| {
        text.lines()
            .find_map(|l| l.strip_prefix("coalmine_controller_reconciles_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())
    };
    let before = reconciles(running.metrics.render()).ok_or("no reconciles counter")?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = reconciles(running.metrics.render()).ok_or("no reconciles counter")?;
    assert!(
        after <= before,
        "a paused rollout was polled: {before} → {after} reconciles"
    );
    running.stop().await;
    Ok(())
}
