//! `spec.notifications`: the controller tells a webhook on loopback about
//! a rollout's start and its rollback, with the failing metric's figures.

use coalmine_notify::testing::Recorder;
use serde_json::json;

use crate::kube_env::{
    InProcess, TestResult, Webhook, create, env, eventually, namespace, phase, set_image, spec,
    status,
};

#[tokio::test]
async fn the_controller_tells_the_webhook_why_it_rolled_back() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "notify").await?;
    let metric = Webhook::start(0.9).await?;
    let hook = Recorder::start().await?;
    let ctl = InProcess::start(env, &ns).await?;
    let mut s = spec(
        "web:1",
        2,
        json!([{"setWeight": 25}, {"pause": {"duration": "1m"}}, {"setWeight": 50}]),
    );
    s["analysis"] = json!({"interval": "1s", "metrics": [{
        "name": "p99-latency",
        "webhook": {"url": format!("{}/p99?track={{{{track}}}}", metric.url), "value": "$.value"},
        "threshold": {"max": 0.5}
    }]});
    s["notifications"] = json!([{"url": hook.url, "on": ["started", "rolledBack"]}]);
    create(&admin, &ns, "web", s).await?;
    phase(&admin, &ns, "web", "Idle", 60).await?;
    set_image(&admin, &ns, "web", "web:2").await?;
    phase(&admin, &ns, "web", "RolledBack", 90).await?;
    let bodies = eventually(30, "two notifications", || async {
        let b = hook.json();
        Ok((b.len() >= 2).then_some(b))
    })
    .await?;
    let transitions: Vec<&str> = bodies
        .iter()
        .map(|b| b["transition"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(transitions, ["started", "rolledBack"], "{bodies:?}");
    let rollback = &bodies[1];
    assert_eq!(rollback["canary"], "web");
    assert_eq!(rollback["namespace"], json!(ns), "{rollback}");
    assert_eq!(rollback["reason"], "AnalysisFailed");
    assert_eq!(rollback["metrics"][0]["name"], "p99-latency", "{rollback}");
    assert_eq!(rollback["metrics"][0]["value"], 0.9, "{rollback}");
    // Counted on the Canary's status.
    let counted = eventually(30, "status.notifications", || async {
        let st = status(&admin, &ns, "web").await?;
        Ok((st["notifications"]["sent"].as_u64() >= Some(2)).then_some(st))
    })
    .await?;
    assert!(counted["notifications"]["failed"] == 0, "{counted}");
    ctl.finish().await?;
    Ok(())
}
