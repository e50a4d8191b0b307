//! End to end against the fake API server, with the `replicas` router: a
//! Canary's stable objects, an image change walked through its steps to
//! promotion, a rollback on a failing webhook metric, an invalid spec.

mod common;

use std::time::Duration;

use coalmine_controller::Config;
use common::{
    TestResult, Webhook, cluster, controller, create, deployment, eventually, phase, set_image,
    shape, spec, status,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

#[tokio::test]
async fn an_image_change_walks_the_steps_and_promotes() -> TestResult {
    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    let steps = json!([
        {"setWeight": 25}, {"pause": {"duration": "1s"}},
        {"setWeight": 50}, {"pause": {"duration": "1s"}}
    ]);
    create(&client, "web", spec("web:1", 4, steps)).await?;

    // Stable Deployment and one Service over both tracks.
    let first = phase(&client, "web", "Idle", 20).await?;
    let stable = eventually(10, "stable ready", || async {
        Ok(deployment(&client, "web")
            .await?
            .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(4)))
    })
    .await?;
    assert_eq!(shape(&stable), (4, "web:1".to_owned()));
    let labels = stable.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("coalmine")
    );
    assert_eq!(
        stable
            .metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].kind.as_str()),
        Some("Canary")
    );
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = services.get("web").await?;
    let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(selector.get("app").map(String::as_str), Some("web"));
    assert!(
        !selector.contains_key("coalmine.dev/track"),
        "one Service over both tracks"
    );
    let stable_rev = first["stableRevision"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!stable_rev.is_empty());

    // New image: a canary, its replicas following the weight.
    set_image(&client, "web", "web:2").await?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let promoted = eventually(40, "promotion", || {
        let seen = seen.clone();
        let client = client.clone();
        async move {
            let s = deployment(&client, "web").await?.map(|d| shape(&d));
            let c = deployment(&client, "web-canary").await?.map(|d| shape(&d));
            if let (Some(s), Some(c)) = (&s, &c) {
                let pair = (s.0, c.0, c.1.clone());
                let mut seen = seen.lock().map_err(|_| "poisoned")?;
                if seen.last() != Some(&pair) {
                    seen.push(pair);
                }
            }
            let st = status(&client, "web").await?;
            Ok((st["phase"] == "Promoted").then_some(st))
        }
    })
    .await?;
    let seen = seen.lock().map_err(|_| "poisoned")?.clone();
    assert!(
        seen.contains(&(3, 1, "web:2".to_owned())),
        "25% = 1 of 4 pods: {seen:?}"
    );
    assert!(
        seen.contains(&(2, 2, "web:2".to_owned())),
        "50% = 2 of 4 pods: {seen:?}"
    );
    assert_ne!(promoted["stableRevision"], json!(stable_rev));

    // Promoted: stable runs the new image with every replica, canary at 0.
    eventually(10, "stable 4 × web:2, canary 0", || async {
        let s = deployment(&client, "web").await?.map(|d| shape(&d));
        let c = deployment(&client, "web-canary").await?.map(|d| shape(&d));
        Ok((s == Some((4, "web:2".to_owned())) && c.is_some_and(|c| c.0 == 0)).then_some(()))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for r in [
        "Initialized",
        "RolloutStarted",
        "WeightSet",
        "Promoting",
        "Promoted",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "no {r} event in {reasons:?}"
        );
    }
    let metrics = ctl.metrics.render();
    assert!(
        metrics.contains(
            r#"coalmine_canary_phase{namespace="default",name="web",phase="Promoted"} 1"#
        ),
        "{metrics}"
    );
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_failing_metric_rolls_back_and_says_why() -> TestResult {
    let (_server, client) = cluster().await?;
    let hook = Webhook::start(0.9).await?;
    let ctl = controller(&client, Config::default());
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
    create(&client, "web", s).await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    let done = phase(&client, "web", "RolledBack", 30).await?;
    let message = done["rollback"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("p99-latency") && message.contains("0.9"),
        "{done}"
    );
    assert_eq!(done["weight"], 0);
    let canary = deployment(&client, "web-canary")
        .await?
        .ok_or("no canary Deployment")?;
    assert_eq!(shape(&canary).0, 0, "canary scaled to zero");
    let stable = deployment(&client, "web")
        .await?
        .ok_or("no stable Deployment")?;
    assert_eq!(
        shape(&stable),
        (4, "web:1".to_owned()),
        "stable untouched, all replicas"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let failed = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("AnalysisFailed"))
        .ok_or("no AnalysisFailed event")?;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert!(failed.note.unwrap_or_default().contains("p99-latency"));
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_nothing_else() -> TestResult {
    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    create(
        &client,
        "web",
        spec("web:1", 2, json!([{"setWeight": 140}])),
    )
    .await?;
    let st = eventually(20, "Valid=False", || async {
        let s = status(&client, "web").await?;
        let c = s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Valid").cloned());
        Ok(c.filter(|c| c["status"] == "False"))
    })
    .await?;
    assert!(
        st["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.steps[0].setWeight"),
        "{st}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        deployment(&client, "web").await?.is_none(),
        "nothing created"
    );
    ctl.stop().await;
    Ok(())
}
