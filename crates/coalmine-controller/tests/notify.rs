//! `spec.notifications` in the cluster: the controller tells a webhook on
//! loopback about a rollout's start, steps and rollback, with the failing
//! metric's figures.

mod common;

use std::sync::{Arc, Mutex};

use coalmine_controller::Config;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook that answers 200 and keeps every JSON body it receives.
async fn recorder() -> Result<(String, Arc<Mutex<Vec<Value>>>), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bodies = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_slice(&buf[end + 4..end + 4 + len])
                        && let Ok(mut b) = bodies.lock()
                    {
                        b.push(v);
                    }
                    buf.drain(..end + 4 + len);
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, seen))
}

#[tokio::test]
async fn the_controller_tells_the_webhook_why_it_rolled_back() -> TestResult {
    let (_server, client) = cluster().await?;
    let metric = Webhook::start(0.9).await?;
    let (hook, seen) = recorder().await?;
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
    s["notifications"] = json!([{"url": hook, "on": ["started", "rolledBack"]}]);
    create(&client, "web", s).await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    phase(&client, "web", "RolledBack", 30).await?;
    let bodies = eventually(10, "two notifications", || async {
        let b = seen.lock().map(|b| b.clone()).unwrap_or_default();
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
    ctl.stop().await;
    Ok(())
}
