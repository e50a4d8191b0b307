//! The `proxy` router end to end, with real proxies: the Canary of
//! `examples/kubernetes/proxy.yaml`, unchanged but for its namespace, on
//! the real API server (`scripts/kube-env.sh`), judged by `builtin`
//! metrics alone (no Prometheus anywhere), rolled back when its canary
//! fails 5% of requests against stable's 0.5%, then promoted when it is
//! healthy, with traffic through the proxies all along.
//!
//! Pods run no programs in the test cluster (kwok makes them Running and
//! Ready with made-up IPs), so each of the two proxy pods the controller
//! creates is stood in for by a real `coalmine proxy` process on loopback,
//! started with the pod's own arguments as the controller wrote them in
//! the Deployment, with two changes a cluster makes for a pod: the
//! listening addresses are loopback ports, and the upstreams' names
//! (`myapp-stable.NS.svc`, `myapp-canary.NS.svc`) are the loopback
//! addresses of two real sample apps, as DNS would give a pod the
//! Services' addresses. Each process runs with a kubeconfig holding a
//! token of the pods' ServiceAccount `myapp-proxy`, so the proxy's own
//! RBAC is what lets it read its routes, and with the sticky secret read
//! from the Secret `myapp-proxy` as the pod's volume would hold it. The
//! controller, outside the cluster, finds the proxies through the
//! EndpointSlices of Service `myapp-proxy` that the real endpointslice
//! controller makes from the pods, and reaches each pod's metrics port
//! through `--resolve POD_IP:9902=127.0.0.1:PORT`, as a person would with
//! `kubectl port-forward`. The pod addresses are known only once the pods
//! exist, so a first controller process creates them and a second one,
//! started with the `--resolve` flags, runs the rollouts (the Lease moves
//! over as on a failover).
//!
//! Checked: both proxies answer the same route table as the ConfigMap
//! within a second of each change; the rollback and the promotion happen
//! from the proxies' counters; no request through the proxies fails other
//! than by the sample apps' own injected errors (no 502, 503, 504 or
//! broken connection when a route changes); and no 403 in any log.

mod kube_env;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use kube_env::{BoxError, Controller, TestResult, env, eventually, namespace, phase};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_coalmine");

/// A port free on 127.0.0.1 now.
fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed when dropped, its output in a log file.
struct Process {
    child: Child,
    log: std::path::PathBuf,
}

impl Process {
    fn start(args: &[String], log: std::path::PathBuf) -> Result<Process, BoxError> {
        let file = std::fs::File::create(&log)?;
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Process { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `coalmine sample-app` on `port` as `version`, failing `error_rate`.
fn sample_app(
    port: u16,
    version: &str,
    error_rate: &str,
    dir: &std::path::Path,
) -> Result<Process, BoxError> {
    let args: Vec<String> = [
        "sample-app",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--version",
        version,
        "--error-rate",
        error_rate,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = Process::start(
        &args,
        dir.join(format!("sample-{version}-{error_rate}.log")),
    )?;
    wait_listening(port)?;
    Ok(p)
}

fn wait_listening(port: u16) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on 127.0.0.1:{port} after 20s").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One HTTP/1.1 GET on its own connection: the status and the body.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), BoxError> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    // The admin API answers only requests that name it.
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in `{text}`"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A keep-alive client: reads one answer (Content-Length framed).
struct KeepAlive {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    fn get(&mut self) -> Result<(u16, String), BoxError> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some(BufReader::new(s));
        }
        let result = self.exchange();
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange(&mut self) -> Result<(u16, String), BoxError> {
        let conn = self.conn.as_mut().ok_or("no connection")?;
        conn.get_mut()
            .write_all(b"GET /shop HTTP/1.1\r\nHost: myapp.shop\r\n\r\n")?;
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let status: u16 = line
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status line: `{line}`"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            conn.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                }
                if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body)?;
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// What the load saw, per answering version.
#[derive(Default, Debug)]
struct Seen {
    /// (version, status) → count.
    answers: BTreeMap<(String, u16), u64>,
    /// Failures not injected by a sample app: the proxy's own error
    /// answers and broken connections, with what happened.
    failures: Vec<String>,
}

/// Requests to the proxies in turn, about `rate` a second in all, until
/// `stop`.
fn load(proxies: Vec<SocketAddr>, rate: u32, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut clients: Vec<KeepAlive> = proxies
        .into_iter()
        .map(|addr| KeepAlive { addr, conn: None })
        .collect();
    let pause = Duration::from_secs(1) / rate;
    let mut i = 0usize;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let n = clients.len();
        let client = &mut clients[i % n];
        i += 1;
        let outcome = client.get();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok((status, body)) => {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                match v["version"].as_str() {
                    // The sample app's own answer, an injected error included.
                    Some(version) if status == 200 || v["error"] == true => {
                        *seen
                            .answers
                            .entry((version.to_owned(), status))
                            .or_default() += 1;
                    }
                    _ => seen
                        .failures
                        .push(format!("{}: {status} {body}", client.addr)),
                }
            }
            Err(e) => seen.failures.push(format!("{}: {e}", client.addr)),
        }
        drop(seen);
        next += pause;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// How long the proxies took to answer each table the ConfigMap held.
#[derive(Default, Debug)]
struct Agreement {
    /// (routes, seconds until every proxy answered them).
    delays: Vec<(Value, f64)>,
    /// Tables the ConfigMap held that some proxy never answered.
    missed: Vec<Value>,
}

/// Polls the ConfigMap and every proxy's `GET /routes` every 50 ms until
/// `stop`, timing how long each new table takes to reach all proxies.
async fn watch_routes(
    configmaps: Api<ConfigMap>,
    admins: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> Agreement {
    let mut out = Agreement::default();
    let mut pending: Option<(Value, Instant)> = None;
    let mut current = Value::Null;
    while !stop.load(Ordering::SeqCst) {
        if let Ok(cm) = configmaps.get("myapp-proxy").await
            && let Some(text) = cm.data.as_ref().and_then(|d| d.get("routes.json"))
            && let Ok(routes) = serde_json::from_str::<Value>(text)
            && routes != current
        {
            if let Some((old, _)) = pending.take() {
                out.missed.push(old);
            }
            current = routes.clone();
            pending = Some((routes, Instant::now()));
        }
        if let Some((want, since)) = &pending {
            let admins = admins.clone();
            let answers = tokio::task::spawn_blocking(move || {
                admins
                    .iter()
                    .map(|a| {
                        get(*a, "/routes")
                            .ok()
                            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            if !answers.is_empty() && answers.iter().all(|a| a.as_ref() == Some(want)) {
                out.delays
                    .push((want.clone(), since.elapsed().as_secs_f64()));
                pending = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some((old, _)) = pending {
        out.missed.push(old);
    }
    out
}

/// The example, moved to namespace `ns`, with the image `image`.
fn example(ns: &str, image: &str) -> Result<String, BoxError> {
    let path = format!(
        "{}/../../examples/kubernetes/proxy.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path)?;
    assert!(text.contains("namespace: shop") && text.contains("image: myapp:2.0"));
    Ok(text
        .replace("namespace: shop", &format!("namespace: {ns}"))
        .replace("image: myapp:2.0", &format!("image: {image}")))
}

/// The Ready addresses behind Service `svc`, from its EndpointSlices.
async fn ready_addresses(client: &Client, ns: &str, svc: &str) -> Result<Vec<String>, BoxError> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    let mut out = Vec::new();
    for slice in slices.list(&lp).await?.items {
        for ep in slice.endpoints {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(true) {
                out.extend(ep.addresses);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One proxy pod stood in for by a process: the Deployment's arguments
/// with the pod's addresses made loopback ones.
struct ProxyPod {
    process: Process,
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
}

fn start_proxy_pod(
    args: &[String],
    ns: &str,
    upstreams: (SocketAddr, SocketAddr),
    kubeconfig: &std::path::Path,
    secret_file: &std::path::Path,
    log: std::path::PathBuf,
) -> Result<ProxyPod, BoxError> {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let swap = |flag: &str, value: &str| -> Result<String, BoxError> {
        Ok(match flag {
            "--listen" => listen.to_string(),
            "--admin" => admin.to_string(),
            "--metrics-listen" => metrics.to_string(),
            "--stable" => value.replace(
                &format!("myapp-stable.{ns}.svc:80"),
                &upstreams.0.to_string(),
            ),
            "--canary" => value.replace(
                &format!("myapp-canary.{ns}.svc:80"),
                &upstreams.1.to_string(),
            ),
            "--sticky-secret-file" => secret_file.display().to_string(),
            _ => value.to_owned(),
        })
    };
    let mut out = Vec::new();
    let mut flag = String::new();
    for a in args {
        if a.starts_with("--") {
            flag = a.clone();
            out.push(a.clone());
        } else {
            out.push(swap(&flag, a)?);
        }
    }
    assert!(
        out.iter().any(|a| a.contains(&upstreams.0.to_string()))
            && out.iter().any(|a| a.contains(&upstreams.1.to_string())),
        "the Deployment's arguments name the Services: {args:?}"
    );
    out.push("--kubeconfig".into());
    out.push(kubeconfig.display().to_string());
    let process = Process::start(&out, log)?;
    wait_listening(admin.port())?;
    Ok(ProxyPod {
        process,
        listen,
        admin,
        metrics,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_example_rolls_back_and_promotes_on_builtin_metrics_alone() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    // Deleted with everything in it when dropped, at the end.
    let namespace_guard = namespace(&client, "proxy-e2e").await?;
    let ns = namespace_guard.to_string();
    let dir = std::path::Path::new(env.var("KUBE_ENV_RUN")?)
        .join("logs")
        .join(&ns);
    std::fs::create_dir_all(&dir)?;

    // Stable first, with a controller that creates the proxy pods.
    let first = Controller::start_as(env, &ns, "first", 5)?;
    let out = env.kubectl_with_input(&["apply", "-f", "-"], &example(&ns, "myapp:1.0")?)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    phase(&client, &ns, "myapp", "Idle", 90).await?;
    let pod_ips = eventually(90, "two Ready proxy pods behind myapp-proxy", || async {
        let a = ready_addresses(&client, &ns, "myapp-proxy").await?;
        Ok((a.len() == 2).then_some(a))
    })
    .await?;
    first.finish()?;

    // The two proxy pods, as processes.
    let stable_port = free_port()?;
    let canary_port = free_port()?;
    let _stable = sample_app(stable_port, "v1", "0.005", &dir)?;
    let mut canary = Some(sample_app(canary_port, "v2", "0.05", &dir)?);
    let upstreams = (
        SocketAddr::from(([127, 0, 0, 1], stable_port)),
        SocketAddr::from(([127, 0, 0, 1], canary_port)),
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments.get("myapp-proxy").await?;
    let container = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .ok_or("myapp-proxy has no container")?;
    let args = container.args.ok_or("the proxy container has no args")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get("myapp-proxy").await?;
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("secret"))
        .ok_or("Secret myapp-proxy has no key `secret`")?;
    let secret_file = dir.join("sticky-secret");
    std::fs::write(&secret_file, &key.0)?;
    let kubeconfig = dir.join("proxy.kubeconfig");
    std::fs::write(
        &kubeconfig,
        env.service_account_kubeconfig(&ns, "myapp-proxy")?,
    )?;
    let mut pods = Vec::new();
    for (i, _) in pod_ips.iter().enumerate() {
        pods.push(start_proxy_pod(
            &args,
            &ns,
            upstreams,
            &kubeconfig,
            &secret_file,
            dir.join(format!("proxy-{i}.log")),
        )?);
    }
    for p in &pods {
        eventually(30, "the proxy's /readyz", || async {
            let addr = p.metrics;
            let ok = tokio::task::spawn_blocking(move || get(addr, "/readyz"))
                .await?
                .map(|(s, _)| s == 200)
                .unwrap_or(false);
            Ok(ok.then_some(()))
        })
        .await?;
    }

    // The controller that runs the rollouts reaches each pod's metrics
    // port at its process.
    let mut extra = Vec::new();
    for (ip, p) in pod_ips.iter().zip(&pods) {
        extra.push("--resolve".to_owned());
        extra.push(format!("{ip}:9902={}", p.metrics));
    }
    let ctl = Controller::start_with(env, &ns, "second", 5, &extra)?;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let loader = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let proxies: Vec<SocketAddr> = pods.iter().map(|p| p.listen).collect();
        std::thread::spawn(move || load(proxies, 100, stop, seen))
    };
    let watcher = tokio::spawn(watch_routes(
        Api::namespaced(client.clone(), &ns),
        pods.iter().map(|p| p.admin).collect(),
        stop.clone(),
    ));

    // The example itself: its canary fails 5% of requests.
    let started = Instant::now();
    let out = env.kubectl_with_input(&["apply", "-f", "-"], &example(&ns, "myapp:2.0")?)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = phase(&client, &ns, "myapp", "RolledBack", 300).await?;
    eprintln!(
        "rolled back after {:.0}s: {}",
        started.elapsed().as_secs_f64(),
        s["rollback"]
    );
    assert!(
        s["rollback"].to_string().contains("errors"),
        "rolled back by the errors metric: {}",
        s["rollback"]
    );

    // A healthy canary at the same revision: `coalmine retry` promotes it.
    drop(canary.take());
    let _canary = sample_app(canary_port, "v2", "0.005", &dir)?;
    let started = Instant::now();
    kube_env::command(&client, &ns, "myapp", "retry/proxy-e2e-1").await?;
    phase(&client, &ns, "myapp", "Promoted", 400).await?;
    eprintln!("promoted after {:.0}s", started.elapsed().as_secs_f64());

    stop.store(true, Ordering::SeqCst);
    let agreement = watcher.await?;
    loader.join().map_err(|_| "the load thread panicked")?;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("answers: {:?}", seen.answers);
    eprintln!(
        "route changes: {:?}",
        agreement
            .delays
            .iter()
            .map(|(r, d)| format!("{}% in {d:.2}s", r["canaryWeight"]))
            .collect::<Vec<_>>()
    );
    assert!(
        seen.failures.is_empty(),
        "{} requests failed at the proxies: {:?}",
        seen.failures.len(),
        &seen.failures[..seen.failures.len().min(10)]
    );
    assert!(
        agreement.missed.is_empty(),
        "tables never answered by every proxy: {:?}",
        agreement.missed
    );
    assert!(agreement.delays.len() >= 4, "{:?}", agreement.delays);
    let worst = agreement.delays.iter().map(|(_, d)| *d).fold(0.0, f64::max);
    assert!(
        worst < 1.0,
        "a route change took {worst:.2}s to reach every proxy"
    );
    let canary_answers: u64 = seen
        .answers
        .iter()
        .filter(|((v, _), _)| v == "v2")
        .map(|(_, n)| n)
        .sum();
    assert!(
        canary_answers > 100,
        "the canary served {canary_answers} requests"
    );
    for p in &pods {
        kube_env::forbid_403(&p.process.log(), &p.process.log)?;
    }
    ctl.finish()?;
    Ok(())
}
