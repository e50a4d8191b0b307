//! The `replicas` router: a Canary's stable objects (labels, owner, one
//! Service over both tracks), an image change walked through its steps to
//! promotion with the canary's replicas following the weight, the Events
//! and the phase metric on the way.

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::json;

use crate::kube_env::{
    BoxError, InProcess, TestResult, create, deployment, env, events, eventually, namespace, phase,
    set_image, shape, spec, status,
};

#[tokio::test]
async fn an_image_change_walks_the_steps_and_promotes() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "walk").await?;
    let ctl = InProcess::start(env, &ns).await?;
    let steps = json!([
        {"setWeight": 25}, {"pause": {"duration": "1s"}},
        {"setWeight": 50}, {"pause": {"duration": "1s"}}
    ]);
    create(&admin, &ns, "web", spec("web:1", 4, steps)).await?;

    // Stable Deployment and one Service over both tracks.
    let first = phase(&admin, &ns, "web", "Idle", 60).await?;
    let stable = eventually(60, "stable ready", || async {
        Ok(deployment(&admin, &ns, "web")
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
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
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
    set_image(&admin, &ns, "web", "web:2").await?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let promoted = eventually(120, "promotion", || {
        let seen = seen.clone();
        let (admin, ns) = (admin.clone(), ns.to_string());
        async move {
            let s = deployment(&admin, &ns, "web").await?.map(|d| shape(&d));
            let c = deployment(&admin, &ns, "web-canary")
                .await?
                .map(|d| shape(&d));
            if let (Some(s), Some(c)) = (&s, &c) {
                let pair = (s.0, c.0, c.1.clone());
                let mut seen = seen.lock().map_err(|_| "poisoned")?;
                if seen.last() != Some(&pair) {
                    seen.push(pair);
                }
            }
            let st = status(&admin, &ns, "web").await?;
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
    eventually(60, "stable 4 × web:2, canary 0", || async {
        let s = deployment(&admin, &ns, "web").await?.map(|d| shape(&d));
        let c = deployment(&admin, &ns, "web-canary")
            .await?
            .map(|d| shape(&d));
        Ok((s == Some((4, "web:2".to_owned())) && c.is_some_and(|c| c.0 == 0)).then_some(()))
    })
    .await?;
    // Events are recorded after the status is written.
    let want = [
        "Initialized",
        "RolloutStarted",
        "WeightSet",
        "Promoting",
        "Promoted",
    ];
    let reasons = || async {
        let all = events(&admin, &ns).await?;
        Ok::<_, BoxError>(all.into_iter().filter_map(|e| e.reason).collect::<Vec<_>>())
    };
    let recorded = eventually(30, "the rollout's Events", || async {
        let found = reasons().await?;
        Ok(want
            .iter()
            .all(|r| found.iter().any(|x| x == r))
            .then_some(()))
    })
    .await;
    if let Err(e) = recorded {
        return Err(format!("{e}: {want:?} in {:?}", reasons().await?).into());
    }
    let metrics = ctl.metrics.render();
    let gauge =
        format!(r#"coalmine_canary_phase{{namespace="{ns}",name="web",phase="Promoted"}} 1"#);
    assert!(metrics.contains(&gauge), "{metrics}");
    ctl.finish().await?;
    Ok(())
}
