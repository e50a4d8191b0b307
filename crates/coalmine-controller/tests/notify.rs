//! `spec.notifications` in the cluster: the controller tells a webhook on
//! loopback about a rollout's start, steps and rollback, with the failing
//! metric's figures.

mod common;

use coalmine_controller::Config;
use coalmine_notify::testing::Recorder;
use common::*;
use serde_json::json;

#[tokio::test]
async fn the_controller_tells_the_webhook_why_it_rolled_back() -> TestResult {
    let (_server, client) = cluster().await?;
    let metric = Webhook::start(0.9).await?;
    let hook = Recorder::start().await?;
    let ctl = controller(&client, Config::default());
    let mut s = spec(
        "web:1",
        4,
        json!([{"setWeight": 25}, {"pause": {"duration": "1m"}}, {"setWeight": 50}]),
    );
    s["analysis"] = json!({"interval": "1s", "metrics": [{
        "name": "p99-latency",
        "webhook": {"url": format!("{}/p99?track={{{{track}}}}", metric.url), "value": "$.value"},
        "threshold": {"max": 0.5}
    }]});
    s["notifications"] = json!([{"url": hook.url, "on": ["started", "rolledBack"]}]);
    create(&client, "web", s).await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    phase(&client, "web", "RolledBack", 30).await?;
    let bodies = eventually(10, "two notifications", || async {
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
    assert_eq!(rollback["namespace"], "default");
    assert_eq!(rollback["reason"], "AnalysisFailed");
    assert_eq!(rollback["metrics"][0]["name"], "p99-latency", "{rollback}");
    assert_eq!(rollback["metrics"][0]["value"], 0.9, "{rollback}");
    // Counted on the Canary's status.
    let counted = eventually(10, "status.notifications", || async {
        let st = status(&client, "web").await?;
        Ok((st["notifications"]["sent"].as_u64() >= Some(2)).then_some(st))
    })
    .await?;
    assert!(counted["notifications"]["failed"] == 0, "{counted}");
    ctl.stop().await;
    Ok(())
}
