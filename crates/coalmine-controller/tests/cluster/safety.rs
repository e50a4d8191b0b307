//! What keeps a rollout safe when things go wrong: a spec edited
//! mid-rollout, an invalid edit, a controller that may not list Canaries,
//! another writer changing the Canary all the time, the stable Deployment
//! deleted mid-rollout. (A Canary deleted while its spec is invalid:
//! `deleting_a_canary_sends_traffic_back_and_the_garbage_collector_takes_the_rest`
//! in `crates/coalmine/tests/real_cluster.rs`.)

use std::time::Duration;

use coalmine_controller::resource::CanaryResource;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::kube_env::{
    BoxError, InProcess, TestResult, command, condition, create, deployment, env, events,
    eventually, merge_patch, namespace, phase, set_image, shape, spec, status,
};

/// Merge-patches Canary `web`'s spec.
async fn patch_spec(client: &kube::Client, ns: &str, spec: Value) -> TestResult {
    merge_patch(client, ns, "web", json!({"spec": spec})).await
}

/// A template whose labels no longer match the selector (`app: web`): the
/// API server takes it, the controller's validation refuses it.
fn template_without_the_selector() -> Value {
    json!({"template": {"metadata": {"labels": {"app": "other"}}}})
}

/// Waits for the condition `Valid` with status `want`; the status with it.
async fn valid(client: &kube::Client, ns: &str, want: &str) -> Result<(Value, Value), BoxError> {
    eventually(60, &format!("Valid={want}"), || async {
        let s = status(client, ns, "web").await?;
        Ok(condition(&s, "Valid")
            .filter(|c| c["status"] == want)
            .map(|c| (s, c)))
    })
    .await
}

#[tokio::test]
async fn an_edit_mid_rollout_restarts_and_commands_act_once() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "edit").await?;
    let ctl = InProcess::start(env, &ns).await?;
    create(
        &admin,
        &ns,
        "web",
        spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&admin, &ns, "web", "Idle", 60).await?;
    set_image(&admin, &ns, "web", "web:2").await?;
    phase(&admin, &ns, "web", "Paused", 60).await?;
    set_image(&admin, &ns, "web", "web:3").await?;
    eventually(60, "the canary on web:3", || async {
        let c = deployment(&admin, &ns, "web-canary").await?;
        Ok(c.filter(|c| shape(c).1 == "web:3").map(|_| ()))
    })
    .await?;
    let st = phase(&admin, &ns, "web", "Paused", 60).await?;
    assert_eq!(st["step"], 1);
    assert!(
        events(&admin, &ns)
            .await?
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolloutRestarted"))
    );
    command(&admin, &ns, "web", "promote/a1").await?;
    let done = phase(&admin, &ns, "web", "Promoted", 60).await?;
    assert_eq!(done["lastCommand"], "promote/a1");
    let stable = deployment(&admin, &ns, "web").await?.ok_or("no stable")?;
    assert_eq!(shape(&stable).1, "web:3");
    // The same command seen again does nothing: the next rollout waits at
    // its pause (once its canary pod is Ready; before, it shows
    // Progressing) and is not promoted.
    set_image(&admin, &ns, "web", "web:4").await?;
    eventually(60, "the canary on web:4, its pod Ready", || async {
        let c = deployment(&admin, &ns, "web-canary").await?;
        Ok(c.filter(|c| {
            shape(c) == (1, "web:4".to_owned())
                && c.status.as_ref().and_then(|s| s.available_replicas) == Some(1)
        })
        .map(|_| ()))
    })
    .await?;
    phase(&admin, &ns, "web", "Paused", 60).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = status(&admin, &ns, "web").await?;
    assert_eq!(st["phase"], "Paused", "{st}");
    ctl.finish().await?;
    Ok(())
}

#[tokio::test]
async fn an_invalid_edit_mid_rollout_changes_nothing_until_fixed() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "badedit").await?;
    let ctl = InProcess::start(env, &ns).await?;
    create(
        &admin,
        &ns,
        "web",
        spec("web:1", 4, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&admin, &ns, "web", "Idle", 60).await?;
    set_image(&admin, &ns, "web", "web:2").await?;
    phase(&admin, &ns, "web", "Paused", 60).await?;
    // The status is stored before the actions: wait for them too, and for
    // the canary to be ready (while it is not, the rollout shows
    // Progressing, "waiting for the canary"), so the phase is settled.
    eventually(60, "the canary at 2 ready replicas", || async {
        let c = deployment(&admin, &ns, "web-canary").await?;
        Ok(c.filter(|c| {
            shape(c) == (2, "web:2".to_owned())
                && c.status.as_ref().and_then(|s| s.available_replicas) == Some(2)
        })
        .map(|_| ()))
    })
    .await?;
    let paused = phase(&admin, &ns, "web", "Paused", 60).await?;
    let canary_before = deployment(&admin, &ns, "web-canary")
        .await?
        .ok_or("no canary")?;
    patch_spec(&admin, &ns, template_without_the_selector()).await?;
    let (invalid, reason) = valid(&admin, &ns, "False").await?;
    assert!(
        reason["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.template.metadata.labels"),
        "{reason}"
    );
    assert_eq!(invalid["phase"], "Paused");
    assert_eq!(invalid["weight"], paused["weight"]);
    let canary = deployment(&admin, &ns, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(
        (shape(&canary), canary.metadata.generation),
        ((2, "web:2".to_owned()), canary_before.metadata.generation),
        "workloads untouched"
    );
    patch_spec(
        &admin,
        &ns,
        json!({"template": {"metadata": {"labels": {"app": "web"}}}}),
    )
    .await?;
    eventually(60, "Valid=True and Paused", || async {
        let s = status(&admin, &ns, "web").await?;
        let ok = condition(&s, "Valid").is_some_and(|c| c["status"] == "True");
        Ok((ok && s["phase"] == "Paused").then_some(()))
    })
    .await?;
    ctl.finish().await?;
    Ok(())
}

#[tokio::test]
async fn readiness_waits_for_the_canary_watch() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "ready").await?;
    // The namespace's `default` ServiceAccount may not list Canaries.
    let denied = env.service_account_client(&ns, "default").await?;
    let ctl = InProcess::run(
        &denied,
        coalmine_controller::Config {
            namespace: Some(ns.to_string()),
            ..coalmine_controller::Config::default()
        },
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!ctl.metrics.is_ready(), "RBAC refuses the list: not ready");
    assert!(ctl.log().contains("403"), "{}", ctl.log());
    tokio::time::timeout(Duration::from_secs(5), ctl.stop())
        .await
        .map_err(|_| "stop hung")?;
    let ctl = InProcess::start(env, &ns).await?;
    eventually(30, "ready", || async {
        Ok(ctl.metrics.is_ready().then_some(()))
    })
    .await?;
    ctl.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_rollout_completes_while_another_writer_keeps_changing_the_canary() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "noise").await?;
    let ctl = InProcess::start(env, &ns).await?;
    let steps = json!([{"setWeight": 50}, {"pause": {"duration": "1s"}}]);
    create(&admin, &ns, "web", spec("web:1", 2, steps)).await?;
    phase(&admin, &ns, "web", "Idle", 60).await?;
    // Every 50 ms someone else moves the resourceVersion: status writes
    // made from an older read get 409 and are redone from a fresh one
    // (more often, and the real API server's 409s outlast the retries of
    // a reconcile most of the time: a minute to promote, not seconds).
    let noise = tokio::spawn({
        let api: Api<CanaryResource> = Api::namespaced(admin.clone(), &ns);
        async move {
            for i in 0u64.. {
                let patch = json!({"metadata": {"labels": {"noise": i.to_string()}}});
                let _ = api
                    .patch("web", &PatchParams::default(), &Patch::Merge(patch))
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    set_image(&admin, &ns, "web", "web:2").await?;
    let done = phase(&admin, &ns, "web", "Promoted", 120).await;
    noise.abort();
    done?;
    let started = events(&admin, &ns)
        .await?
        .iter()
        .filter(|e| e.reason.as_deref() == Some("RolloutStarted"))
        .count();
    assert_eq!(started, 1, "no transition recorded twice");
    ctl.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_stable_deployment_deleted_mid_rollout_comes_back_at_the_stable_revision() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "restable").await?;
    let running = InProcess::start(env, &ns).await?;
    let steps = json!([{"setWeight": 25}, {"pause": {}}]);
    create(&admin, &ns, "web", spec("web:1", 4, steps)).await?;
    eventually(60, "stable's template in the status", || async {
        let s = status(&admin, &ns, "web").await?;
        Ok((s["phase"] == "Idle" && s["stableTemplate"].is_object()).then_some(()))
    })
    .await?;
    set_image(&admin, &ns, "web", "web:2").await?;
    eventually(60, "paused at 25%", || async {
        let s = status(&admin, &ns, "web").await?;
        Ok((s["phase"] == "Paused" && s["weight"] == 25).then_some(()))
    })
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let old = deployment(&admin, &ns, "web").await?.ok_or("no stable")?;
    deployments.delete("web", &DeleteParams::default()).await?;
    // Only the watch event of the deletion brings it back: a rollout
    // waiting at `pause: {}` is not polled.
    let back = eventually(30, "stable recreated", || async {
        Ok(deployment(&admin, &ns, "web")
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
    // only as far as Ready canary pods cover), its pods Ready.
    eventually(60, "stable at 3 Ready pods of web:1", || async {
        Ok(deployment(&admin, &ns, "web").await?.filter(|d| {
            let st = d.status.clone().unwrap_or_default();
            shape(d) == (3, "web:1".to_owned())
                && st.ready_replicas == Some(3)
                && st.replicas == Some(3)
                && st.observed_generation == d.metadata.generation
        }))
    })
    .await?;
    // The rollout stays where it was (it may pass through Progressing
    // while the canary's scale-up to its 25% rolls out).
    eventually(30, "still paused at 25%", || async {
        let s = status(&admin, &ns, "web").await?;
        Ok((s["phase"] == "Paused" && s["weight"] == 25 && s["step"] == 1).then_some(()))
    })
    .await?;
    let canary = deployment(&admin, &ns, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(shape(&canary), (1, "web:2".to_owned()));
    // Waiting for a person, the rollout is not polled: once the watch
    // events of the recreation have passed, no reconcile for 6 s (the
    // resync of a rollout waiting on the cluster is 5 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
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
    running.finish().await?;
    Ok(())
}
