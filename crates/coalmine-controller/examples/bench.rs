//! Measures the real `coalmine controller` process against the real API
//! server of `scripts/kube-env.sh`: its memory at idle, with N Canaries
//! settled and with N rollouts live; the time from an image change to the
//! canary Deployment existing; reconciles per second while N Canaries are
//! created and rolled; and the API calls the controller makes, counted in
//! the API server's audit log (which records the controller's
//! ServiceAccount only).
//!
//! `cargo run --release -p coalmine-controller --example bench -- \
//!     target/release/coalmine ADMIN_KUBECONFIG CONTROLLER_KUBECONFIG \
//!     AUDIT_LOG [N=500] [SAMPLES=20]`
//!
//! The controller runs as a child process, so its RSS is its own, with the
//! ServiceAccount's kubeconfig, watching one namespace made for the run.
//! `scripts/bench-controller.sh` starts the cluster, builds both and runs
//! this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coalmine_controller::resource::CanaryResource;
use futures_util::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many API calls the driver makes at once when it creates or patches.
const CONCURRENCY: usize = 16;
/// The longest any one wait may take.
const WAIT_LIMIT: Duration = Duration::from_secs(240);

/// The cluster of `scripts/kube-env.sh`.
struct Cluster {
    /// The admin's kubeconfig, for the driver.
    admin: PathBuf,
    /// The controller ServiceAccount's kubeconfig.
    controller: PathBuf,
    /// The API server's audit log.
    audit: PathBuf,
}

/// Kills the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// VmRSS and VmHWM of a process, in MiB.
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss: f64,
    hwm: f64,
}

fn mem(pid: u32) -> Result<Mem, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64, BoxError> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .ok_or("empty field")?
            .parse()?;
        Ok(kb / 1024.0)
    };
    Ok(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// User + system CPU seconds of a process (`self` for this one).
fn cpu(pid: &str) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks: f64 = f.get(11).ok_or("no utime")?.parse::<f64>()?
        + f.get(12).ok_or("no stime")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// CPU seconds of the controller and of this process (the driver).
#[derive(Debug, Clone, Copy)]
struct Cpu {
    controller: f64,
    server: f64,
}

fn cpus(pid: u32) -> Result<Cpu, BoxError> {
    Ok(Cpu {
        controller: cpu(&pid.to_string())?,
        server: cpu("self")?,
    })
}

/// A GET on the controller's operations endpoint: (status code, body).
async fn http_get(addr: &str, path: &str) -> Result<(u16, String), BoxError> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .ok_or("empty answer")?
        .parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The controller's counters from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    reconciles: f64,
    errors: f64,
    duration_sum: f64,
}

async fn counters(addr: &str) -> Result<Counters, BoxError> {
    let (_, body) = http_get(addr, "/metrics").await?;
    let mut c = Counters::default();
    for line in body.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if name == "coalmine_controller_reconciles_total" {
            c.reconciles = v;
        } else if name.starts_with("coalmine_controller_reconcile_errors_total") {
            c.errors += v;
        } else if name == "coalmine_controller_reconcile_duration_seconds_sum" {
            c.duration_sum = v;
        }
    }
    Ok(c)
}

/// A Canary spec: 2 replicas of `image`, the replicas router, 20% then a
/// pause without a duration (so a rollout, once started, stays live).
fn spec(app: &str, image: &str) -> Value {
    json!({
        "replicas": 2,
        "selector": {"matchLabels": {"app": app}},
        "template": {
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]}
        },
        "service": {"port": 80, "targetPort": 8080},
        "trafficRouting": {"replicas": {}},
        "steps": [{"setWeight": 20}, {"pause": {}}],
    })
}

fn image_patch(image: &str) -> Patch<Value> {
    Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]}}}}))
}

/// Creates these Canaries, `CONCURRENCY` at a time.
async fn create_all(api: &Api<CanaryResource>, ns: &str, names: &[String]) -> Result<(), BoxError> {
    stream::iter(names.iter().map(|n| {
        let api = api.clone();
        async move {
            api.create(
                &PostParams::default(),
                &CanaryResource::new(ns, n, spec(n, "web:1")),
            )
            .await
            .map(|_| ())
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// Sets the image of these Canaries, `CONCURRENCY` at a time.
async fn set_images(
    api: &Api<CanaryResource>,
    names: &[String],
    image: &str,
) -> Result<(), BoxError> {
    stream::iter(names.iter().map(|n| {
        let api = api.clone();
        async move {
            api.patch(n, &PatchParams::default(), &image_patch(image))
                .await
                .map(|_| ())
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// How many Canaries whose name starts with `prefix` are in each phase.
async fn phases(
    api: &Api<CanaryResource>,
    prefix: &str,
) -> Result<BTreeMap<String, usize>, BoxError> {
    let mut out = BTreeMap::new();
    for c in api.list(&ListParams::default()).await?.items {
        if !c.name().starts_with(prefix) {
            continue;
        }
        let phase = c
            .status
            .as_ref()
            .and_then(|s| s["phase"].as_str())
            .unwrap_or("(none)")
            .to_owned();
        *out.entry(phase).or_default() += 1;
    }
    Ok(out)
}

/// How many `PREFIX…-canary` Deployments exist.
async fn canary_deployments(api: &Api<Deployment>, prefix: &str) -> Result<usize, BoxError> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|d| {
            d.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with("-canary"))
        })
        .count())
}

/// Polls `f` every `every` until it returns true; the time it took.
async fn until<F, Fut>(what: &str, every: Duration, mut f: F) -> Result<Duration, BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, BoxError>>,
{
    let start = Instant::now();
    loop {
        if f().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > WAIT_LIMIT {
            return Err(format!("timed out after {WAIT_LIMIT:?} waiting for {what}").into());
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until all `n` Canaries named `prefix…` are in `phase`.
async fn all_in(
    api: &Api<CanaryResource>,
    prefix: &str,
    phase: &str,
    n: usize,
    every: Duration,
) -> Result<Duration, BoxError> {
    until(&format!("{n} × {phase}"), every, || async {
        let p = phases(api, prefix).await?;
        Ok(p.get(phase).copied().unwrap_or(0) == n)
    })
    .await
}

/// For each Canary in turn: sets its image and times until `NAME-canary`
/// exists (polled every 2 ms). Milliseconds, sorted.
async fn latencies(
    canaries: &Api<CanaryResource>,
    deployments: &Api<Deployment>,
    names: &[String],
) -> Result<Vec<f64>, BoxError> {
    let mut out = Vec::new();
    for n in names {
        let canary = format!("{n}-canary");
        let start = Instant::now();
        canaries
            .patch(n, &PatchParams::default(), &image_patch("web:2"))
            .await?;
        loop {
            if deployments.get_opt(&canary).await?.is_some() {
                break;
            }
            if start.elapsed() > WAIT_LIMIT {
                return Err(format!("{canary} never appeared").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        out.push(start.elapsed().as_secs_f64() * 1000.0);
        // Let the rollout settle into its pause before the next sample.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// One row of the results.
struct Row {
    what: String,
    value: String,
}

fn row(rows: &mut Vec<Row>, what: impl Into<String>, value: impl Into<String>) {
    let (what, value) = (what.into(), value.into());
    eprintln!("  {what}: {value}");
    rows.push(Row { what, value });
}

fn mem_text(m: Mem) -> String {
    format!("RSS {:.1} MiB, HWM {:.1} MiB", m.rss, m.hwm)
}

/// Reconciles, errors, mean reconcile time and CPU over a window.
fn window_text(c0: Counters, c1: Counters, p0: Cpu, p1: Cpu, secs: f64) -> String {
    let n = c1.reconciles - c0.reconciles;
    let mean_ms = if n > 0.0 {
        (c1.duration_sum - c0.duration_sum) / n * 1000.0
    } else {
        0.0
    };
    format!(
        "{n:.0} reconciles in {secs:.1} s = {:.0}/s (mean {mean_ms:.1} ms, {:.0} errors); CPU controller {:.0}%, driver {:.0}%",
        n / secs,
        c1.errors - c0.errors,
        (p1.controller - p0.controller) / secs * 100.0,
        (p1.server - p0.server) / secs * 100.0,
    )
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// After a phase: the memory 5 s later, then the reconciles and CPU over a
/// quiet window of `secs`.
async fn settle(
    rows: &mut Vec<Row>,
    ops: &str,
    pid: u32,
    memory_label: String,
    window_label: String,
    secs: u64,
) -> Result<(), BoxError> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    row(rows, memory_label, mem_text(mem(pid)?));
    let (c0, p0, t0) = (counters(ops).await?, cpus(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, p1) = (counters(ops).await?, cpus(pid)?);
    row(
        rows,
        window_label,
        window_text(c0, c1, p0, p1, t0.elapsed().as_secs_f64()),
    );
    Ok(())
}

/// Where the audit log ends now: a window's calls are the lines after it.
fn audit_mark(log: &Path) -> Result<u64, BoxError> {
    Ok(std::fs::metadata(log)?.len())
}

/// The controller's API calls in namespace `ns` since `mark`.
#[derive(Debug, Default)]
struct Calls {
    /// Requests answered, by `verb resource[/subresource]`.
    by_kind: BTreeMap<String, usize>,
    /// Successful updates, patches and deletes per object
    /// (`resource[/subresource] name`).
    writes: BTreeMap<String, usize>,
    total: usize,
}

fn audit_since(log: &Path, mark: u64, ns: &str) -> Result<Calls, BoxError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log)?;
    f.seek(SeekFrom::Start(mark))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let mut calls = Calls::default();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let verb = e["verb"].as_str().unwrap_or_default();
        // A watch is counted when it starts, every other call when it is
        // answered.
        let stage = if verb == "watch" {
            "ResponseStarted"
        } else {
            "ResponseComplete"
        };
        let r = &e["objectRef"];
        if e["stage"] != stage || r["namespace"].as_str() != Some(ns) {
            continue;
        }
        let mut kind = r["resource"].as_str().unwrap_or("?").to_owned();
        if let Some(sub) = r["subresource"].as_str() {
            kind = format!("{kind}/{sub}");
        }
        calls.total += 1;
        // Refused calls (a 409 on a create of what exists, a 404) apart.
        let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
        let answer = if (200..300).contains(&code) {
            String::new()
        } else {
            format!(" ({code})")
        };
        *calls
            .by_kind
            .entry(format!("{verb} {kind}{answer}"))
            .or_default() += 1;
        // The audit log names the object of an update, patch or delete;
        // of a create only when the request did (not at this level).
        if matches!(verb, "update" | "patch" | "delete") && answer.is_empty() {
            let name = r["name"].as_str().unwrap_or("?");
            *calls.writes.entry(format!("{kind} {name}")).or_default() += 1;
        }
    }
    Ok(calls)
}

/// Calls per Canary and per reconcile, and the calls by kind.
fn calls_text(calls: &Calls, canaries: usize, reconciles: f64) -> String {
    let kinds: Vec<String> = calls
        .by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
        "{} calls = {:.1} per Canary, {:.2} per reconcile ({})",
        calls.total,
        calls.total as f64 / canaries.max(1) as f64,
        calls.total as f64 / reconciles.max(1.0),
        kinds.join(", ")
    )
}

/// The most writes any one object got, per kind of object, and how many
/// objects of that kind were written.
fn writes_text(calls: &Calls) -> String {
    let mut per_kind: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for (object, n) in &calls.writes {
        let kind = object.split_once(' ').map_or(object.as_str(), |(k, _)| k);
        let e = per_kind.entry(kind).or_default();
        e.0 = e.0.max(*n);
        e.1 += 1;
        e.2 += n;
    }
    per_kind
        .iter()
        .map(|(k, (max, objects, sum))| {
            format!("{k}: {objects} objects, {sum} writes, at most {max} per object")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn bench(
    bin: &Path,
    cluster: &Cluster,
    n: usize,
    samples: usize,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let dir: PathBuf = std::env::temp_dir().join(format!("coalmine-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kc = Kubeconfig::read_from(&cluster.admin)?;
    let client = Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?,
    )?;
    let ns_name = format!("bench-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns_name}}))?,
        )
        .await?;
    let ns = ns_name.as_str();
    let canaries: Api<CanaryResource> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let audit = cluster.audit.as_path();

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let ops = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("controller.log"))?;
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["controller", "--kubeconfig"])
        .arg(&cluster.controller)
        .args(["--namespace", ns])
        .args(["--metrics-addr", &ops, "--no-leader-election"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let pid = child.id();
    let guard = Proc(child);
    until("/readyz", Duration::from_millis(20), || async {
        Ok(matches!(http_get(&ops, "/readyz").await, Ok((200, _))))
    })
    .await?;
    row(
        rows,
        "controller start → /readyz 200",
        format!("{:.0} ms", started.elapsed().as_secs_f64() * 1000.0),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    row(
        rows,
        "memory, idle, 0 Canaries (ready + 5 s)",
        mem_text(mem(pid)?),
    );

    // Latency on an otherwise idle controller: SAMPLES Canaries, one at a time.
    let lat = names("lat-", samples);
    create_all(&canaries, ns, &lat).await?;
    all_in(
        &canaries,
        "lat-",
        "Idle",
        samples,
        Duration::from_millis(100),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let l = latencies(&canaries, &deployments, &lat).await?;
    row(
        rows,
        format!("image change → canary Deployment, idle controller ({samples} in turn)"),
        format!(
            "median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
            quantile(&l, 0.5),
            quantile(&l, 0.9),
            quantile(&l, 1.0)
        ),
    );
    // Remove them (the controller takes its finalizer off) before the bulk.
    for name in &lat {
        canaries.delete(name, &DeleteParams::default()).await?;
    }
    until(
        "the latency Canaries gone",
        Duration::from_millis(200),
        || async { Ok(phases(&canaries, "lat-").await?.is_empty()) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    row(
        rows,
        "memory, idle again after those (deleted)",
        mem_text(mem(pid)?),
    );

    // N Canaries created at once: time until all have status Idle.
    let bulk = names("c-", n);
    let (c0, p0, t0) = (counters(&ops).await?, cpus(pid)?, Instant::now());
    let a0 = audit_mark(audit)?;
    create_all(&canaries, ns, &bulk).await?;
    let created = t0.elapsed();
    all_in(&canaries, "c-", "Idle", n, Duration::from_millis(500)).await?;
    let settled = t0.elapsed();
    let (c1, p1) = (counters(&ops).await?, cpus(pid)?);
    row(
        rows,
        format!("create {n} Canaries ({CONCURRENCY} at a time) → all Idle"),
        format!(
            "{:.1} s (creates done at {:.1} s)",
            settled.as_secs_f64(),
            created.as_secs_f64()
        ),
    );
    row(
        rows,
        "  reconciles while settling",
        window_text(c0, c1, p0, p1, settled.as_secs_f64()),
    );
    let calls = audit_since(audit, a0, ns)?;
    row(
        rows,
        "  API calls while settling",
        calls_text(&calls, n, c1.reconciles - c0.reconciles),
    );
    row(rows, "  writes while settling", writes_text(&calls));
    let a0 = audit_mark(audit)?;
    let c0 = counters(&ops).await?;
    settle(
        rows,
        &ops,
        pid,
        format!("memory, {n} Canaries Idle (+5 s)"),
        format!("  steady state, {n} Idle, 10 s"),
        10,
    )
    .await?;
    let c1 = counters(&ops).await?;
    row(
        rows,
        "  API calls, Idle (+5 s and 10 s)",
        calls_text(
            &audit_since(audit, a0, ns)?,
            n,
            c1.reconciles - c0.reconciles,
        ),
    );

    // Latency again with N Canaries present (the first SAMPLES of them).
    let sampled = &bulk[..samples.min(n)];
    let l = latencies(&canaries, &deployments, sampled).await?;
    row(
        rows,
        format!(
            "image change → canary Deployment, {n} Canaries present ({} in turn)",
            sampled.len()
        ),
        format!(
            "median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
            quantile(&l, 0.5),
            quantile(&l, 0.9),
            quantile(&l, 1.0)
        ),
    );

    // Then every other one's image at once: N rollouts live.
    let rest = &bulk[sampled.len()..];
    let (c0, p0, t0) = (counters(&ops).await?, cpus(pid)?, Instant::now());
    let a0 = audit_mark(audit)?;
    set_images(&canaries, rest, "web:2").await?;
    let patched = t0.elapsed();
    let deployed = until(
        &format!("{n} canary Deployments"),
        Duration::from_millis(500),
        || async { Ok(canary_deployments(&deployments, "c-").await? == n) },
    )
    .await?
        + patched;
    let paused = all_in(&canaries, "c-", "Paused", n, Duration::from_millis(500)).await? + deployed;
    let (c1, p1) = (counters(&ops).await?, cpus(pid)?);
    row(
        rows,
        format!(
            "image change of {} at once → all {n} canary Deployments exist",
            rest.len()
        ),
        format!(
            "{:.1} s (patches done at {:.1} s); all Paused at {:.1} s",
            deployed.as_secs_f64(),
            patched.as_secs_f64(),
            paused.as_secs_f64()
        ),
    );
    row(
        rows,
        "  reconciles while rolling",
        window_text(c0, c1, p0, p1, paused.as_secs_f64()),
    );
    let calls = audit_since(audit, a0, ns)?;
    row(
        rows,
        "  API calls while rolling (2 steps each)",
        calls_text(&calls, rest.len(), c1.reconciles - c0.reconciles),
    );
    row(rows, "  writes while rolling", writes_text(&calls));
    settle(
        rows,
        &ops,
        pid,
        format!("memory, {n} rollouts live (+5 s)"),
        format!("  steady state, {n} rollouts paused, 15 s"),
        15,
    )
    .await?;
    row(
        rows,
        format!("memory, {n} rollouts live (+20 s)"),
        mem_text(mem(pid)?),
    );
    let p = phases(&canaries, "c-").await?;
    row(rows, "phases at the end", format!("{p:?}"));
    drop(guard);
    namespaces.delete(ns, &DeleteParams::default()).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "bench COALMINE ADMIN_KUBECONFIG CONTROLLER_KUBECONFIG AUDIT_LOG [N] [SAMPLES]";
    let bin = PathBuf::from(args.next().ok_or(usage)?);
    let cluster = Cluster {
        admin: args.next().ok_or(usage)?.into(),
        controller: args.next().ok_or(usage)?.into(),
        audit: args.next().ok_or(usage)?.into(),
    };
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(500);
    let samples: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let mut rows = Vec::new();
    eprintln!(
        "bench: {} controller, {n} Canaries, {samples} latency samples",
        bin.display()
    );
    let result = bench(&bin, &cluster, n, samples, &mut rows).await;
    let width = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    println!();
    for r in &rows {
        println!("{:<width$}  {}", r.what, r.value);
    }
    if let Err(e) = &result {
        println!("INCOMPLETE: {e}");
    }
    result
}
