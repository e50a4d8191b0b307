//! The judge weighs each version by the traffic that really reached it,
//! on a real API server (`scripts/kube-env.sh`): testers routed to the
//! canary outside the weight (a header route, a sticky cookie) double its
//! share of requests, and a canary exactly as good as stable is not rolled
//! back for the errors those extra requests bring. A canary that is twice
//! as bad, under the same doubled share, is.

mod kube_env;

use std::collections::HashMap;
use std::sync::Arc;

use kube_env::{BoxError, Controller, TestResult, create, env, namespace, phase, set_image, spec};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A metrics endpoint on loopback: `GET /NAME?track=T` answers
/// `{"total": N, "bad": B}`, the interval's requests and errors of that
/// version, from `answers[(NAME, T)]`.
async fn counts_endpoint(
    answers: HashMap<(&'static str, &'static str), (u64, u64)>,
) -> Result<String, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let answers = Arc::new(answers);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let answers = answers.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let target = head.split_whitespace().nth(1).unwrap_or("/");
                let found = answers.iter().find(|((name, track), _)| {
                    target.starts_with(&format!("/{name}?"))
                        && target.contains(&format!("track={track}"))
                });
                let body = match found {
                    Some((_, (total, bad))) => json!({"total": total, "bad": bad}).to_string(),
                    None => "{}".to_owned(),
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

/// A Canary at a 10% weight, paused there, judged every second on the
/// endpoint's `/NAME` counts.
fn canary(url: &str, name: &str) -> Value {
    let mut s = spec("web:1", 10, json!([{"setWeight": 10}, {"pause": {}}]));
    s["analysis"] = json!({"interval": "1s", "metrics": [{
        "name": "errors",
        "webhook": {"url": format!("{url}/{name}?track={{{{track}}}}"), "total": "$.total", "bad": "$.bad"},
        "maxRatio": 1.0
    }]});
    s
}

#[tokio::test]
async fn testers_outside_the_weight_do_not_make_a_healthy_canary_fail() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    // At a 10% weight, testers routed by header bring the canary 20% of
    // the requests. Both versions fail 10% of what they get; the twice-as-bad
    // canary fails 20%. Taken at the weight (10%), the healthy canary's
    // 40 errors against stable's 160 would read as twice stable's rate.
    let url = counts_endpoint(HashMap::from([
        (("healthy", "canary"), (400, 40)),
        (("healthy", "stable"), (1600, 160)),
        (("worse", "canary"), (400, 80)),
        (("worse", "stable"), (1600, 160)),
    ]))
    .await?;
    let healthy_ns = namespace(&client, "share-healthy").await?;
    let worse_ns = namespace(&client, "share-worse").await?;
    let healthy_ctl = Controller::start(env, &healthy_ns)?;
    let worse_ctl = Controller::start(env, &worse_ns)?;
    create(&client, &healthy_ns, "web", canary(&url, "healthy")).await?;
    create(&client, &worse_ns, "web", canary(&url, "worse")).await?;
    phase(&client, &healthy_ns, "web", "Idle", 60).await?;
    phase(&client, &worse_ns, "web", "Idle", 60).await?;
    set_image(&client, &healthy_ns, "web", "web:2").await?;
    set_image(&client, &worse_ns, "web", "web:2").await?;

    let worse = phase(&client, &worse_ns, "web", "RolledBack", 120).await?;
    let message = worse["rollback"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("errors"), "{worse}");

    // By now the healthy canary has had as many reports as the worse one
    // needed to fail; give it 30 more seconds of them.
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    let healthy = kube_env::status(&client, &healthy_ns, "web").await?;
    assert_eq!(healthy["phase"], "Paused", "{healthy}");
    let metric = healthy["analysis"]["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == "errors").cloned())
        .unwrap_or(Value::Null);
    // It judged the errors per request at the share the requests show:
    // a ratio of 1 from at least 20 seconds of counts.
    let ratio = metric["ratio"].as_f64().unwrap_or(f64::NAN);
    assert!((ratio - 1.0).abs() < 0.01, "ratio {ratio}: {healthy}");
    let requests = metric["canaryRequests"].as_u64().unwrap_or(0);
    assert!(
        requests >= 20 * 400,
        "{requests} canary requests: {healthy}"
    );
    healthy_ctl.finish()?;
    worse_ctl.finish()?;
    Ok(())
}
