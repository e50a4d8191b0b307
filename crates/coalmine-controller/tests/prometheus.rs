//! End to end with a real Prometheus (`/usr/bin/prometheus`, which must be
//! there: a missing one fails the test): a threshold metric queried from Prometheus, which scrapes a
//! loopback exporter reporting the canary slow, rolls the canary back.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use coalmine_controller::Config;
use common::{TestResult, cluster, controller, create, deployment, phase, set_image, shape, spec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Serves `canary_p99_seconds 0.9` in the Prometheus text format.
async fn exporter() -> Result<String, common::BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body =
                    "# TYPE canary_p99_seconds gauge\ncanary_p99_seconds{track=\"canary\"} 0.9\n";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

fn free_port() -> Result<u16, common::BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn a_prometheus_threshold_metric_rolls_back() -> TestResult {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: install Prometheus to run this test"
    );
    let target = exporter().await?;
    let dir = std::env::temp_dir().join(format!("coalmine-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs: [{{job_name: app, static_configs: [{{targets: ['{target}']}}]}}]\n"
        ),
    )?;
    let port = free_port()?;
    let mut prom = tokio::process::Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;

    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    let mut s = spec(
        "web:1",
        2,
        json!([{"setWeight": 50}, {"pause": {"duration": "2m"}}]),
    );
    s["analysis"] = json!({"interval": "1s", "metrics": [{
        "name": "p99",
        "prometheus": {"address": format!("http://127.0.0.1:{port}"),
                       "query": "max(canary_p99_seconds{track=\"canary\"})"},
        "threshold": {"max": 0.5}
    }]});
    create(&client, "web", s).await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    let done = phase(&client, "web", "RolledBack", 60).await?;
    let message = done["rollback"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("p99") && message.contains("0.9"), "{done}");
    let canary = deployment(&client, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(shape(&canary).0, 0);
    ctl.stop().await;
    let _ = prom.kill().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
