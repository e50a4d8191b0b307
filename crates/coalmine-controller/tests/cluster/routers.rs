//! A router whose object is missing: reported, not fatal.

use serde_json::json;

use crate::kube_env::{InProcess, TestResult, create, env, events, eventually, namespace, spec};

#[tokio::test]
async fn a_missing_http_route_is_reported_as_an_event() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "noroute").await?;
    let ctl = InProcess::start(env, &ns).await?;
    let mut s = spec("web:1", 1, json!([{"setWeight": 20}]));
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "nowhere"}});
    create(&admin, &ns, "web", s).await?;
    let note = eventually(60, "a ReconcileFailed event", || async {
        Ok(events(&admin, &ns)
            .await?
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ReconcileFailed"))
            .and_then(|e| e.note))
    })
    .await?;
    assert!(
        note.contains("spec.trafficRouting.gatewayAPI.httpRoute"),
        "{note}"
    );
    assert!(note.contains("nowhere"), "{note}");
    ctl.finish().await?;
    Ok(())
}
