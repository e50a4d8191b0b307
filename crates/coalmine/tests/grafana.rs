//! `deploy/grafana/coalmine.json` against the programs: every query parses
//! as PromQL (`promtool check rules`), and every metric it names is one that
//! `coalmine proxy` or `coalmine controller` exports on `/metrics`, read
//! from the running programs.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod kube_env;

const BIN: &str = env!("CARGO_BIN_EXE_coalmine");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// The dashboard's queries, with its variables given values.
fn queries() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/coalmine.json"))
        .expect("the dashboard exists");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            out.push(expr.replace("$namespace", ".*").replace("$canary", ".*"));
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

/// `coalmine_…` names in a query.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("coalmine_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_owned());
        i = end;
    }
    names
}

/// The sample names a `/metrics` page can carry, from its `# TYPE` lines.
fn exported(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        names.insert(name.to_owned());
        match kind {
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            "counter" if !name.ends_with("_total") => {
                names.insert(format!("{name}_total"));
            }
            _ => {}
        }
    }
    names
}

fn scrape(addr: SocketAddr, limit: Duration) -> String {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            let mut text = String::new();
            if s.read_to_string(&mut text).is_ok() && text.starts_with("HTTP/1.1 200") {
                return text;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no /metrics from {addr}");
}

#[test]
fn every_query_parses_as_promql() {
    let dir = std::env::temp_dir().join(format!("coalmine-grafana-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: coalmine:dashboard:{i}\n        expr: {}\n",
            serde_json::to_string(q).expect("a string")
        ));
    }
    let file = dir.join("rules.yaml");
    std::fs::write(&file, rules).expect("write");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("promtool runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_names_is_exported() {
    // The proxy, on its own metrics address.
    let proxy_metrics = free();
    let _proxy = Proc(
        Command::new(BIN)
            .args(["proxy", "--listen", &free().to_string()])
            .args(["--admin", &free().to_string()])
            .args(["--metrics-listen", &proxy_metrics.to_string()])
            .args([
                "--stable",
                "http://127.0.0.1:9",
                "--canary",
                "http://127.0.0.1:10",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coalmine proxy starts"),
    );
    // The controller, against the real API server with its ServiceAccount,
    // watching a namespace of its own.
    let env = kube_env::env().expect("the test cluster (scripts/kube-env.sh up)");
    let client = env.admin().await.expect("an admin client");
    let ns = kube_env::namespace(&client, "grafana")
        .await
        .expect("a namespace");
    let controller_metrics = free();
    let _controller = Proc(
        Command::new(BIN)
            .arg("controller")
            .arg("--kubeconfig")
            .arg(env.var("CONTROLLER_KUBECONFIG").expect("a kubeconfig"))
            .args(["--namespace", &ns])
            .args(["--metrics-addr", &controller_metrics.to_string()])
            .arg("--no-leader-election")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coalmine controller starts"),
    );
    let pages = tokio::task::spawn_blocking(move || {
        (
            scrape(proxy_metrics, Duration::from_secs(20)),
            scrape(controller_metrics, Duration::from_secs(30)),
        )
    })
    .await
    .expect("scraped");
    let mut known = exported(&pages.0);
    known.extend(exported(&pages.1));
    // Families with labels appear once they have a series: the controller's
    // own registry, with one of each recorded, shows them all.
    let ops = coalmine_controller::ops::Metrics::new();
    ops.reconciled(
        Duration::from_millis(3),
        Some(&coalmine_controller::Error::NotLeader),
    );
    ops.observe_canary(
        "default",
        "web",
        &serde_json::from_value(serde_json::json!({
            "phase": "Progressing", "step": 0, "weight": 5,
            "analysis": {"verdict": "Running", "metrics": [{"name": "errors", "verdict": "Running", "eValue": 1.5}]}
        }))
        .expect("a status"),
    );
    known.extend(exported(&ops.render()));
    assert!(known.contains("coalmine_proxy_requests_total"), "{known:?}");
    assert!(known.contains("coalmine_canary_weight"), "{known:?}");
    let mut unknown = Vec::new();
    for q in queries() {
        for name in metric_names(&q) {
            if !known.contains(&name) {
                unknown.push(format!("{name} (in {q})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not exported: {unknown:#?}\nexported: {known:#?}"
    );
}
