//! The `replicas`, `nginx` and `gatewayAPI` files of `examples/kubernetes/`
//! applied unchanged to the real API server (`scripts/kube-env.sh`) and
//! rolled both to RolledBack and to Promoted by `coalmine controller`,
//! running as its own process with the ServiceAccount of `deploy/`
//! (`istio.yaml` runs in `real_cluster_istio.rs`, `proxy.yaml` in
//! `real_cluster_proxy_e2e.rs`).
//!
//! The examples' metrics are real: a real Prometheus (`/usr/bin/prometheus`)
//! on loopback scrapes a small exporter run by the test, which serves
//! `http_requests_total` and `http_request_duration_seconds` per version
//! in the shape the examples' queries expect, and the same exporter
//! answers the gateway example's checkout webhook. The examples name
//! in-cluster addresses (`prometheus.monitoring:9090`,
//! `checkout-stats.shop:8080`); the controller, outside the cluster, is
//! pointed at the loopback servers by its `--resolve` flag, as a person
//! would with `kubectl port-forward`. A bad canary (10% errors against
//! stable's 0.5%) rolls back; `coalmine retry` with a healthy canary then
//! promotes the same revision. The test reads the EndpointSlices at every
//! moment to see which pods each Service selects.
//!
//! The examples all create `shop/myapp`, so each runs on a cluster of its
//! own (`kube_env::env_named`), and one test runs the three at once.

mod kube_env;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube_env::{BoxError, Controller, TestResult, env, eventually, phase};
use serde_json::{Value, json};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const NS: &str = "shop";

fn example_path(file: &str) -> String {
    format!(
        "{}/../../examples/kubernetes/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// What the exporter counts, per version.
#[derive(Default)]
struct Counts {
    ok: [f64; 2],
    failed: [f64; 2],
    /// The canary's latency histogram: `le` 0.1, 0.25, 0.5, 1, +Inf.
    buckets: [f64; 5],
    sum: f64,
}

/// Requests per second per version that the exporter counts.
const RATE: f64 = 500.0;
/// Stable's error ratio; a healthy canary's; a bad canary's.
const STABLE_ERRORS: f64 = 0.005;
const GOOD_ERRORS: f64 = 0.002;
const BAD_ERRORS: f64 = 0.1;

/// The application's metrics, as Prometheus would scrape them from the
/// pods, and the checkout-stats webhook: one loopback server, a thread
/// adding traffic every 100 ms.
struct Exporter {
    addr: SocketAddr,
    bad: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Exporter {
    fn start() -> Result<Exporter, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let bad = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        {
            let (counts, bad, stop) = (counts.clone(), bad.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let n = RATE / 10.0;
                    let canary_errors = if bad.load(Ordering::SeqCst) {
                        BAD_ERRORS
                    } else {
                        GOOD_ERRORS
                    };
                    if let Ok(mut c) = counts.lock() {
                        for (i, p) in [STABLE_ERRORS, canary_errors].into_iter().enumerate() {
                            c.ok[i] += n * (1.0 - p);
                            c.failed[i] += n * p;
                        }
                        // Every canary request under 100 ms: a p99 of
                        // about 0.1 s, under the example's 0.5 s SLO.
                        for b in &mut c.buckets {
                            *b += n;
                        }
                        c.sum += n * 0.05;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        {
            let (bad, stop) = (bad.clone(), stop.clone());
            listener.set_nonblocking(false)?;
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(s) = conn {
                        let _ = answer(s, &counts, &bad);
                    }
                }
            });
        }
        Ok(Exporter { addr, bad, stop })
    }

    fn set_bad(&self, bad: bool) {
        self.bad.store(bad, Ordering::SeqCst);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answers one request: `/metrics` in the Prometheus text format, or
/// `/failures?track=T&window=W` as the checkout webhook.
fn answer(mut s: TcpStream, counts: &Mutex<Counts>, bad: &AtomicBool) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (ctype, body) = if path.starts_with("/failures") {
        let canary = path.contains("track=canary");
        let checkouts = 3000;
        let failed = match (canary, bad.load(Ordering::SeqCst)) {
            (false, _) => 15,
            (true, false) => 6,
            (true, true) => 300,
        };
        (
            "application/json",
            json!({"checkouts": checkouts, "failed": failed}).to_string(),
        )
    } else {
        let c = counts
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let mut out = String::from("# TYPE http_requests_total counter\n");
        for (i, track) in ["stable", "canary"].into_iter().enumerate() {
            for (code, v) in [("200", c.ok[i]), ("500", c.failed[i])] {
                out.push_str(&format!(
                    "http_requests_total{{app=\"myapp\",track=\"{track}\",code=\"{code}\"}} {v}\n"
                ));
            }
        }
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        let l = "app=\"myapp\",track=\"canary\"";
        for (le, v) in ["0.1", "0.25", "0.5", "1", "+Inf"].iter().zip(c.buckets) {
            out.push_str(&format!(
                "http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {v}\n"
            ));
        }
        out.push_str(&format!(
            "http_request_duration_seconds_sum{{{l}}} {}\nhttp_request_duration_seconds_count{{{l}}} {}\n",
            c.sum, c.buckets[4]
        ));
        ("text/plain; version=0.0.4", out)
    };
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes())
}

/// A GET on loopback: the status code.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A real Prometheus scraping `target` every second.
struct Prometheus {
    addr: SocketAddr,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Prometheus {
    async fn start(target: SocketAddr, dir: std::path::PathBuf) -> Result<Prometheus, BoxError> {
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs: [{{job_name: myapp, static_configs: [{{targets: ['{target}']}}]}}]\n"
            ),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = std::process::Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
            .spawn()
            .map_err(|e| format!("cannot start {PROMETHEUS}: {e}"))?;
        let prom = Prometheus { addr, child, dir };
        eventually(60, "Prometheus ready", || async {
            Ok((get_status(addr, "/-/ready") == Some(200)).then_some(()))
        })
        .await?;
        Ok(prom)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The images of the Ready endpoints behind Service `svc` of `shop`.
async fn serving(client: &Client, svc: &str) -> Result<Vec<String>, BoxError> {
    kube_env::serving(client, NS, svc).await
}

/// (pods of `myapp:1.0`, pods of `myapp:2.0`) in `images`.
fn versions(images: &[String]) -> (usize, usize) {
    let n = |v: &str| images.iter().filter(|i| *i == v).count();
    (n("myapp:1.0"), n("myapp:2.0"))
}

/// Which router an example uses, and what the test makes for it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Router {
    Replicas,
    Nginx,
    Gateway,
}

fn http_route() -> kube::api::ApiResource {
    coalmine_controller::router::gateway::http_route_resource()
}

/// The user's objects the example's router expects: Ingress or HTTPRoute
/// `myapp` sending to Service `myapp`.
async fn user_objects(client: &Client, router: Router) -> TestResult {
    match router {
        Router::Replicas => {}
        Router::Nginx => {
            let ingresses: Api<Ingress> = Api::namespaced(client.clone(), NS);
            let user: Ingress = serde_json::from_value(json!({
                "metadata": {"name": "myapp"},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "myapp", "port": {"number": 80}}}}
                ]}}]}
            }))?;
            ingresses.create(&PostParams::default(), &user).await?;
        }
        Router::Gateway => {
            let routes: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), NS, &http_route());
            let user: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "myapp", "namespace": NS},
                "spec": {
                    "parentRefs": [{"name": "gateway"}],
                    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                               "backendRefs": [{"name": "myapp", "port": 80}]}]
                }
            }))?;
            routes.create(&PostParams::default(), &user).await?;
        }
    }
    Ok(())
}

/// Creates namespace `name` unless it exists.
async fn ensure_namespace(client: &Client, name: &str) -> TestResult {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes what a test left in `shop`: the Canary (while a controller
/// runs to take its finalizer off), the user's objects, and waits for the
/// garbage collector to remove the Deployments.
async fn clean_shop(client: &Client) -> TestResult {
    let canaries: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), NS);
    let _ = canaries.delete("myapp", &DeleteParams::default()).await;
    eventually(60, "Canary myapp gone", || async {
        Ok(canaries.get_opt("myapp").await?.is_none().then_some(()))
    })
    .await?;
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), NS);
    let _ = ingresses.delete("myapp", &DeleteParams::default()).await;
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &http_route());
    let _ = routes.delete("myapp", &DeleteParams::default()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    eventually(120, "the Deployments of myapp gone", || async {
        let gone = deployments.get_opt("myapp").await?.is_none()
            && deployments.get_opt("myapp-canary").await?.is_none()
            && ingresses.get_opt("myapp").await?.is_none()
            && routes.get_opt("myapp").await?.is_none();
        Ok(gone.then_some(()))
    })
    .await
}

/// `coalmine VERB myapp -n shop` as the cluster admin.
fn command(env: &kube_env::Env, verb: &str) -> TestResult {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coalmine"))
        .args([verb, "myapp", "-n", NS])
        .env("KUBECONFIG", env.var("ADMIN_KUBECONFIG")?)
        .stdin(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "coalmine {verb}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// What the test saw over one rollout.
#[derive(Debug, Default)]
struct Seen {
    /// (v1 pods, v2 pods) behind Service `myapp`, each change, with the
    /// phase read right after them.
    stable: Vec<(usize, usize, String)>,
    /// The same behind `myapp-canary` (nginx and gatewayAPI).
    canary: Vec<(usize, usize, String)>,
    /// The canary weights the router wrote (canary Ingress annotation,
    /// HTTPRoute backendRef weight).
    weights: BTreeSet<i64>,
    /// The status phases in order.
    phases: Vec<String>,
}

/// The canary weight the router has written, if any.
async fn router_weight(client: &Client, router: Router) -> Result<Option<i64>, BoxError> {
    Ok(match router {
        Router::Replicas => None,
        Router::Nginx => {
            let ingresses: Api<Ingress> = Api::namespaced(client.clone(), NS);
            ingresses.get_opt("myapp-canary").await?.and_then(|i| {
                i.metadata
                    .annotations?
                    .get("nginx.ingress.kubernetes.io/canary-weight")?
                    .parse()
                    .ok()
            })
        }
        Router::Gateway => {
            let routes: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), NS, &http_route());
            let r = routes.get("myapp").await?;
            r.data["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|rule| rule["backendRefs"].as_array())
                .filter(|refs| refs.len() == 2)
                .flatten()
                .find(|b| b["name"] == "myapp-canary")
                .and_then(|b| b["weight"].as_i64())
        }
    })
}

/// Watches the Services, the router and the status until phase `until`;
/// `on_pause` runs once when the Canary pauses at weight `pause_at`.
async fn watch(
    client: &Client,
    router: Router,
    until: &str,
    secs: u64,
    mut on_pause: Option<(i64, &(dyn Fn() -> TestResult + Sync))>,
) -> Result<(Seen, Value), BoxError> {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let stable = versions(&serving(client, "myapp").await?);
        let canary = if router == Router::Replicas {
            None
        } else {
            Some(versions(&serving(client, "myapp-canary").await?))
        };
        if let Some(w) = router_weight(client, router).await? {
            seen.weights.insert(w);
        }
        // Read after the Services: a promotion seen in them has begun
        // before this read, so it shows here.
        let status = kube_env::status(client, NS, "myapp").await?;
        let p = status["phase"].as_str().unwrap_or_default().to_owned();
        let entry = (stable.0, stable.1, p.clone());
        if seen.stable.last() != Some(&entry) {
            seen.stable.push(entry);
        }
        if let Some((v1, v2)) = canary {
            let entry = (v1, v2, p.clone());
            if seen.canary.last() != Some(&entry) {
                seen.canary.push(entry);
            }
        }
        if seen.phases.last() != Some(&p) {
            seen.phases.push(p.clone());
        }
        if p == until {
            return Ok((seen, status));
        }
        if let Some((at, f)) = on_pause
            && p == "Paused"
            && status["weight"].as_i64() == Some(at)
        {
            // The controller stores the status, then writes the routes:
            // wait (as a person would) until the route shows this step
            // before the person's command moves it on.
            let until = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let w = router_weight(client, router).await?;
                if let Some(w) = w {
                    seen.weights.insert(w);
                }
                if w == Some(at) || tokio::time::Instant::now() > until {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            f()?;
            on_pause = None;
        }
        if p == "RolledBack" || p == "Failed" {
            return Err(format!("{p} while waiting for {until}: {status}; seen {seen:?}").into());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not {until} after {secs}s: {status}; seen {seen:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether phase `p` is a step of the rollout (before promotion or
/// rollback).
fn stepping(p: &str) -> bool {
    matches!(p, "Progressing" | "Paused")
}

/// The (v1, v2) pods seen while the rollout was stepping.
fn while_stepping(seen: &[(usize, usize, String)]) -> Vec<(usize, usize)> {
    seen.iter()
        .filter(|(_, _, p)| stepping(p))
        .map(|&(v1, v2, _)| (v1, v2))
        .collect()
}

/// The replicas of the example, from the file.
fn replicas_of(text: &str) -> Result<usize, BoxError> {
    let doc: Value = serde_saphyr::from_str(text)?;
    Ok(doc["spec"]["replicas"]
        .as_u64()
        .ok_or("the example has spec.replicas")? as usize)
}

async fn rolls_back_and_promotes(env: &kube_env::Env, file: &str, router: Router) -> TestResult {
    let client = env.admin().await?;
    ensure_namespace(&client, NS).await?;
    ensure_namespace(&client, "monitoring").await?;
    let exporter = Exporter::start()?;
    let dir = std::path::Path::new(env.var("KUBE_ENV_RUN")?)
        .join(format!("prometheus-{}", file.trim_end_matches(".yaml")));
    let _ = std::fs::remove_dir_all(&dir);
    let prom = Prometheus::start(exporter.addr, dir).await?;
    let identity = format!("examples-{}", file.trim_end_matches(".yaml"));
    let ctl = Controller::start_with(
        env,
        NS,
        &identity,
        5,
        &[
            "--resolve".into(),
            format!("prometheus.monitoring:9090={}", prom.addr),
            "--resolve".into(),
            format!("checkout-stats.shop:8080={}", exporter.addr),
        ],
    )?;
    // Whatever an earlier, failed run left.
    clean_shop(&client).await?;
    user_objects(&client, router).await?;

    // Stable first: the example with the image one version back.
    let path = example_path(file);
    let text = std::fs::read_to_string(&path)?;
    let n = replicas_of(&text)?;
    let older = text.replace("image: myapp:2.0", "image: myapp:1.0");
    assert_ne!(older, text, "the example runs myapp:2.0");
    let out = env.kubectl_with_input(&["apply", "-f", "-"], &older)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    phase(&client, NS, "myapp", "Idle", 90).await?;
    eventually(90, "the stable pods behind Service myapp", || async {
        let v = versions(&serving(&client, "myapp").await?);
        Ok((v == (n, 0)).then_some(()))
    })
    .await?;

    // The file itself, unchanged, with a canary that fails.
    exporter.set_bad(true);
    let out = env.kubectl()?.args(["apply", "-f", &path]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (seen, done) = watch(&client, router, "RolledBack", 240, None).await?;
    eprintln!("{file} bad canary: {seen:?}");
    let message = done["rollback"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("errors") || message.contains("checkout-failures"),
        "rolled back for the metric: {done}"
    );
    let (stable, canary) = (while_stepping(&seen.stable), while_stepping(&seen.canary));
    if router == Router::Replicas {
        assert!(stable.contains(&(n - n / 10, n / 10)), "10%: {seen:?}");
        assert!(
            seen.stable.iter().all(|&(v1, v2, _)| v1 + v2 >= n),
            "never fewer than {n} Ready pods behind myapp: {seen:?}"
        );
    } else {
        assert!(
            seen.stable.iter().all(|&(_, v2, _)| v2 == 0),
            "Service myapp selects stable pods only: {seen:?}"
        );
        assert!(
            canary.iter().all(|&(v1, _)| v1 == 0),
            "Service myapp-canary selects canary pods only: {seen:?}"
        );
    }
    eventually(
        90,
        "only stable pods behind myapp after the rollback",
        || async {
            let v = versions(&serving(&client, "myapp").await?);
            Ok((v == (n, 0)).then_some(()))
        },
    )
    .await?;

    // The same revision again, healthy this time.
    exporter.set_bad(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    command(env, "retry")?;
    let promote = || command(env, "promote");
    let on_pause: Option<(i64, &(dyn Fn() -> TestResult + Sync))> = match router {
        // The last step is a pause without a duration: a person promotes.
        Router::Gateway => Some((50, &promote)),
        _ => None,
    };
    let (seen, _) = watch(&client, router, "Promoted", 480, on_pause).await?;
    eprintln!("{file} healthy canary: {seen:?}");
    let (stable, canary) = (while_stepping(&seen.stable), while_stepping(&seen.canary));
    match router {
        Router::Replicas => {
            assert!(stable.contains(&(9, 1)), "10%: {seen:?}");
            assert!(stable.contains(&(5, 5)), "50%: {seen:?}");
            assert!(
                seen.stable.iter().all(|&(v1, v2, _)| v1 + v2 >= n),
                "never fewer than {n} Ready pods behind myapp: {seen:?}"
            );
        }
        Router::Nginx | Router::Gateway => {
            let want: &[i64] = if router == Router::Nginx {
                &[10, 30, 60]
            } else {
                &[5, 25, 50]
            };
            for w in want {
                assert!(seen.weights.contains(w), "weight {w}: {seen:?}");
            }
            assert!(
                stable.iter().all(|&(_, v2)| v2 == 0),
                "Service myapp selects stable pods only until promotion: {seen:?}"
            );
            assert!(
                canary.iter().all(|&(v1, _)| v1 == 0),
                "Service myapp-canary selects canary pods only: {seen:?}"
            );
            assert!(
                canary.iter().any(|&(_, v2)| v2 > 0),
                "canary pods behind myapp-canary while stepping: {seen:?}"
            );
            assert!(
                stable.iter().all(|&(v1, _)| v1 == n),
                "all {n} stable pods stay behind myapp while the canary steps: {seen:?}"
            );
        }
    }
    eventually(120, "only myapp:2.0 pods behind myapp", || async {
        let v = versions(&serving(&client, "myapp").await?);
        Ok((v == (0, n)).then_some(()))
    })
    .await?;

    clean_shop(&client).await?;
    ctl.finish()?;
    drop(prom);
    Ok(())
}

/// The three examples at once, each on a cluster of its own (the test
/// harness would run only as many tests at a time as there are cores).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_example_rolls_back_and_promotes() -> TestResult {
    let runs = [
        ("replicas.yaml", Router::Replicas, None),
        ("nginx.yaml", Router::Nginx, Some("examples-nginx")),
        (
            "gateway-api.yaml",
            Router::Gateway,
            Some("examples-gateway-api"),
        ),
    ];
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|(file, router, cluster)| {
            let run = async move {
                let env = tokio::task::spawn_blocking(move || match cluster {
                    None => env(),
                    Some(name) => kube_env::env_named(name),
                })
                .await??;
                rolls_back_and_promotes(env, file, router).await
            };
            (file, tokio::spawn(run))
        })
        .collect();
    let mut failed = Vec::new();
    for (file, task) in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{file}: {e}")),
            Err(e) => failed.push(format!("{file}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n").into())
    }
}
