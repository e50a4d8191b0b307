//! `coalmine run` end to end: real sample apps on loopback, the real
//! binary in front of them, a load generator, and the outcome by exit code,
//! report and traffic afterwards. Each test bounds itself in time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coalmine");

/// Kills the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One GET with `Connection: close`: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

fn post(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

fn wait_until(deadline: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn sample_app(version: &str, error_rate: &str) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["sample-app", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--version", version, "--error-rate", error_rate])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sample-app starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_until(Duration::from_secs(10), || get(addr, "/healthz").is_some()),
        "sample-app {version} did not start"
    );
    (Proc(child), port)
}

/// Sends requests to `addr` from two threads until `stop`.
fn load(addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = get(addr, "/");
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect()
}

struct Rollout {
    dir: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    _apps: (Proc, Proc),
}

fn rollout(name: &str, canary_errors: &str, steps: &str) -> Rollout {
    rollout_with(name, "0", canary_errors, steps)
}

fn rollout_with(name: &str, stable_errors: &str, canary_errors: &str, steps: &str) -> Rollout {
    let dir = std::env::temp_dir().join(format!("coalmine-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (stable, sp) = sample_app("v1", stable_errors);
    let (canary, cp) = sample_app("v2", canary_errors);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = format!(
        "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata: {{name: {name}}}
spec:
  upstreams:
    stable: [http://127.0.0.1:{sp}]
    canary: [http://127.0.0.1:{cp}]
  steps:
{steps}
  analysis:
    interval: 1s
    metrics:
      - name: errors
        builtin: errors
"
    );
    std::fs::write(dir.join("canary.yaml"), file).expect("write the file");
    Rollout {
        dir,
        listen,
        admin,
        _apps: (stable, canary),
    }
}

impl Rollout {
    fn start(&self, extra: &[&str]) -> Proc {
        let child = Command::new(BIN)
            .arg("run")
            .arg(self.dir.join("canary.yaml"))
            .args(["--listen", &self.listen.to_string()])
            .args(["--admin", &self.admin.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("coalmine run starts");
        assert!(
            wait_until(Duration::from_secs(10), || get(self.admin, "/healthz")
                .is_some()),
            "coalmine run did not start"
        );
        Proc(child)
    }

    fn status(&self) -> serde_json::Value {
        get(self.admin, "/status")
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Waits for the process to exit (at most `limit`), returns its exit code.
fn exit_code(p: &mut Proc, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Some(status)) = p.0.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn versions(addr: SocketAddr, n: usize) -> (usize, usize) {
    let mut v1 = 0;
    let mut v2 = 0;
    for _ in 0..n {
        if let Some((_, body)) = get(addr, "/") {
            v1 += usize::from(body.contains("\"v1\""));
            v2 += usize::from(body.contains("\"v2\""));
        }
    }
    (v1, v2)
}

fn report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the report exists");
    serde_json::from_str(&text).expect("the report is JSON")
}

#[test]
fn a_healthy_canary_is_promoted_and_then_serves_everything() {
    let r = rollout(
        "healthy",
        "0",
        "    - setWeight: 20\n    - pause: {duration: 3s}\n    - setWeight: 50\n    - pause: {duration: 3s}",
    );
    let report_file = r.path("report.json");
    let mut run = r.start(&[
        "--exit-on-finish",
        "--report",
        report_file.to_str().expect("utf-8 path"),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(r.listen, stop.clone());
    let code = exit_code(&mut run, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    assert_eq!(code, Some(0), "promoted exits 0");
    let rep = report(&report_file);
    assert_eq!(rep["status"]["phase"], "Promoted", "{rep}");
    assert!(rep["history"].as_array().is_some_and(|h| !h.is_empty()));
    // Served again without --exit-on-finish semantics: start a second run
    // on the saved outcome is not needed; check the promotion in process
    // instead with a run that keeps serving.
}

#[test]
fn after_promotion_all_traffic_goes_to_the_canary() {
    let r = rollout(
        "serving",
        "0",
        "    - setWeight: 50\n    - pause: {duration: 2s}",
    );
    let _run = r.start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(r.listen, stop.clone());
    assert!(
        wait_until(Duration::from_secs(30), || r.status()["phase"]
            == "Promoted"),
        "not promoted: {}",
        r.status()
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let (v1, v2) = versions(r.listen, 100);
    assert_eq!((v1, v2), (0, 100));
}

#[test]
fn a_faulty_canary_is_rolled_back_and_gets_no_more_requests() {
    // A tenfold regression: 5% errors against stable's 0.5%, from a 5% weight.
    let r = rollout_with(
        "faulty",
        "0.005",
        "0.05",
        "    - setWeight: 5\n    - pause: {duration: 20s}\n    - setWeight: 20\n    - pause: {duration: 30s}\n    - setWeight: 50\n    - pause: {duration: 30s}",
    );
    let report_file = r.path("report.json");
    let mut run = r.start(&["--report", report_file.to_str().expect("utf-8 path")]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(r.listen, stop.clone());
    let rolled_back = wait_until(Duration::from_secs(80), || {
        r.status()["phase"] == "RolledBack"
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    assert!(rolled_back, "{}", r.status());
    let status = r.status();
    assert_eq!(status["weight"], 0);
    assert_eq!(status["analysis"]["verdict"], "Fail", "{status}");
    let (v1, v2) = versions(r.listen, 100);
    assert_eq!((v1, v2), (100, 0));
    // Keeps serving until stopped; rolled back means exit 2.
    assert_eq!(exit_code(&mut run, Duration::from_millis(300)), None);
    let _ = Command::new("kill").arg(run.0.id().to_string()).status();
    assert_eq!(exit_code(&mut run, Duration::from_secs(10)), Some(2));
    assert_eq!(report(&report_file)["status"]["phase"], "RolledBack");
}

#[test]
fn pause_promote_and_abort_through_the_admin_api() {
    let r = rollout(
        "manual",
        "0",
        "    - setWeight: 10\n    - analysis: {timeout: 1h}\n    - setWeight: 30\n    - pause: {}",
    );
    let _run = r.start(&[]);
    assert!(wait_until(Duration::from_secs(10), || r.status()["weight"] == 10));
    assert_eq!(r.status()["phase"], "Progressing");
    assert_eq!(post(r.admin, "/pause"), Some(202));
    assert!(wait_until(Duration::from_secs(5), || r.status()["phase"] == "Paused"));
    assert_eq!(post(r.admin, "/resume"), Some(202));
    assert!(wait_until(Duration::from_secs(5), || r.status()["phase"]
        == "Progressing"));
    assert_eq!(post(r.admin, "/promote"), Some(202));
    assert!(
        wait_until(Duration::from_secs(5), || r.status()["weight"] == 30),
        "{}",
        r.status()
    );
    assert_eq!(post(r.admin, "/abort"), Some(202));
    assert!(wait_until(Duration::from_secs(5), || r.status()["phase"]
        == "RolledBack"));
    assert_eq!(r.status()["weight"], 0);
    assert_eq!(get(r.admin, "/abort").map(|(c, _)| c), Some(405));
}

#[test]
fn kill_9_and_restart_with_state_resumes_at_the_same_step() {
    let r = rollout(
        "resume",
        "0",
        "    - setWeight: 10\n    - setWeight: 40\n    - pause: {}\n    - setWeight: 60",
    );
    let state = r.path("state.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let mut run = r.start(&["--state", state_arg]);
    assert!(wait_until(Duration::from_secs(10), || r.status()["weight"] == 40));
    let step = r.status()["step"].clone();
    let _ = run.0.kill(); // SIGKILL
    let _ = run.0.wait();
    let _run = r.start(&["--state", state_arg]);
    let status = r.status();
    assert_eq!(
        (status["step"].clone(), status["weight"].clone()),
        (step, 40.into())
    );
    assert_eq!(status["phase"], "Paused");
    let (v1, v2) = versions(r.listen, 200);
    assert!(v2 > 40 && v2 < 120 && v1 + v2 == 200, "{v1} {v2}");
}

#[test]
fn time_spent_down_is_not_bake_time_and_metrics_have_their_own_address() {
    let r = rollout(
        "downtime",
        "0",
        "    - setWeight: 10\n    - pause: {duration: 6s}\n    - setWeight: 60",
    );
    let state = r.path("state.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let metrics_arg = metrics.to_string();
    let mut run = r.start(&["--state", state_arg]);
    assert!(wait_until(Duration::from_secs(10), || r.status()["weight"] == 10));
    std::thread::sleep(Duration::from_secs(1));
    let _ = run.0.kill(); // SIGKILL, 5 s of the pause left
    let _ = run.0.wait();
    std::thread::sleep(Duration::from_secs(7));
    let restarted = Instant::now();
    let _run = r.start(&["--state", state_arg, "--metrics-listen", &metrics_arg]);
    assert_eq!(
        r.status()["weight"],
        10,
        "down longer than the pause, yet still in it"
    );
    // The pause is over once the step after it is taken (weight 60, the
    // last step, which a promotion may follow within milliseconds).
    let ok = wait_until(Duration::from_secs(12), || {
        r.status()["step"].as_u64().is_some_and(|s| s >= 2)
    });
    assert!(ok, "{}", r.status());
    let waited = restarted.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "the pause ran on after the restart for what it had left: {waited:?}"
    );
    let (code, body) = get(metrics, "/metrics").expect("metrics on their own address");
    assert_eq!(code, 200);
    assert!(body.contains("coalmine_proxy_requests_total"), "{body}");
    assert_eq!(get(metrics, "/status").map(|(c, _)| c), Some(404));
}

#[test]
fn a_restart_with_state_continues_the_judges_evidence() {
    // Both versions at 5% errors, held at a pause: the judge keeps
    // counting, and after a kill -9 it goes on from the saved counts.
    let r = rollout_with(
        "evidence",
        "0.05",
        "0.05",
        "    - setWeight: 50\n    - pause: {}",
    );
    let state = r.path("state.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let mut run = r.start(&["--state", state_arg]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(r.listen, stop.clone());
    let saved = |min_intervals: u64| {
        let status: serde_json::Value = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let intervals = status["judgeState"]["intervals"].as_u64().unwrap_or(0);
        (intervals >= min_intervals).then_some(status)
    };
    assert!(
        wait_until(Duration::from_secs(20), || saved(4).is_some()),
        "no evidence in --state: {}",
        r.status()
    );
    let _ = run.0.kill(); // SIGKILL
    let _ = run.0.wait();
    let before = saved(4).expect("the saved status");
    let intervals = before["judgeState"]["intervals"].as_u64().unwrap_or(0);
    let requests = before["analysis"]["metrics"][0]["canaryRequests"]
        .as_u64()
        .unwrap_or(0);
    assert!(requests > 0, "{before}");
    let _run = r.start(&["--state", state_arg]);
    // The first interval judged after the restart adds to the saved
    // counts: a fresh judge would report one interval's requests.
    let after = wait_until(Duration::from_secs(10), || {
        r.status()["judgeState"]["intervals"].as_u64() > Some(intervals)
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    assert!(after, "{}", r.status());
    let status = r.status();
    let now = status["analysis"]["metrics"][0]["canaryRequests"]
        .as_u64()
        .unwrap_or(0);
    assert!(now > requests, "{requests} before, {now} after: {status}");
    assert_eq!(
        status["judgeState"]["since"], before["judgeState"]["since"],
        "{status}"
    );
}

#[test]
fn a_state_file_that_cannot_be_written_stops_neither_traffic_nor_the_rollout() {
    let r = rollout(
        "readonly",
        "0",
        "    - setWeight: 10\n    - pause: {}\n    - setWeight: 30\n    - pause: {}",
    );
    let dir = r.path("state");
    std::fs::create_dir_all(&dir).expect("the state directory");
    let state = dir.join("state.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let mut run = r.start(&["--state", state_arg]);
    assert!(wait_until(Duration::from_secs(10), || r.status()["phase"] == "Paused"));
    // The directory becomes unwritable (a file in its place: permissions
    // do not stop root).
    std::fs::remove_dir_all(&dir).expect("remove the state directory");
    std::fs::write(&dir, b"").expect("a file where the directory was");
    assert_eq!(post(r.admin, "/promote"), Some(202));
    assert!(
        wait_until(Duration::from_secs(5), || r.status()["stateError"]
            .is_string()),
        "{}",
        r.status()
    );
    assert_eq!(
        exit_code(&mut run, Duration::from_secs(3)),
        None,
        "still running"
    );
    let status = r.status();
    assert_eq!(
        (status["weight"].clone(), status["phase"].clone()),
        (30.into(), "Paused".into())
    );
    let (v1, v2) = versions(r.listen, 100);
    assert!(v1 + v2 == 100 && v2 > 15 && v2 < 45, "{v1} {v2}");
    // Writable again: the next decision saves the status.
    std::fs::remove_file(&dir).expect("remove the file");
    std::fs::create_dir_all(&dir).expect("the state directory again");
    assert!(
        wait_until(Duration::from_secs(5), || state.exists()
            && r.status().get("stateError").is_none()),
        "{}",
        r.status()
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("the state file"))
            .expect("JSON");
    assert_eq!(saved["weight"], 30);
}

/// One request to `addr` with extra header lines; the status code.
fn status_of(addr: SocketAddr, request_line: &str, headers: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{request_line} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

#[test]
fn the_admin_api_takes_a_token_and_refuses_other_hosts_and_cross_site_commands() {
    let r = rollout("guarded", "0", "    - setWeight: 10\n    - pause: {}");
    let token = r.path("token");
    std::fs::write(&token, "s3cret\n").expect("the token file");
    let _run = r.start(&["--admin-token-file", token.to_str().expect("utf-8 path")]);
    let admin = r.admin;
    let host = format!("Host: {admin}\r\n");
    assert_eq!(status_of(admin, "GET /status", &host), Some(401));
    let authorized = format!("Host: {admin}\r\nAuthorization: Bearer s3cret\r\n");
    assert_eq!(status_of(admin, "GET /status", &authorized), Some(200));
    let cross_site = format!("{authorized}Origin: http://evil.example\r\n");
    assert_eq!(status_of(admin, "POST /abort", &cross_site), Some(403));
    let form = format!("{authorized}Content-Type: application/x-www-form-urlencoded\r\n");
    assert_eq!(status_of(admin, "POST /abort", &form), Some(403));
    assert_eq!(status_of(admin, "POST /pause", &authorized), Some(202));
    // The CLI: without the token it is told why; with the file it acts.
    let url = format!("http://{admin}");
    let (code, _, err) = cli(&["get", "--admin", &url]);
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
    let file = token.to_str().expect("utf-8 path");
    let (code, out, err) = cli(&["get", "--admin", &url, "--admin-token-file", file]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Paused"), "{out}");
    let (code, _, err) = cli(&["resume", "--admin", &url, "--admin-token-file", file]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn bad_files_and_unreachable_upstreams_exit_1() {
    let dir = std::env::temp_dir().join(format!("coalmine-run-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: coalmine.dev/v1alpha1\nkind: Canary\nmetadata: {name: x}\nspec:\n  upstreams: {stable: [http://127.0.0.1:1], canary: [http://127.0.0.1:2]}\n  steps: [{setWeight: 150}]\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("run")
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("setWeight"));
    let dead = dir.join("dead.yaml");
    std::fs::write(
        &dead,
        format!(
            "apiVersion: coalmine.dev/v1alpha1\nkind: Canary\nmetadata: {{name: x}}\nspec:\n  upstreams: {{stable: [http://127.0.0.1:{}], canary: [http://127.0.0.1:{}]}}\n  steps: [{{setWeight: 10}}]\n",
            free_port(),
            free_port()
        ),
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("run")
        .arg(&dead)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unreachable") && err.contains("spec.upstreams"),
        "{err}"
    );
}

#[test]
fn a_state_file_with_values_the_plan_cannot_hold_is_refused() {
    let r = rollout("tampered", "0", "    - setWeight: 10\n    - pause: {}");
    let state = r.path("state.json");
    for (step, weight, why) in [(999, 10, "step 999"), (1, 200, "weight 200")] {
        let mut saved = serde_json::to_value(coalmine_core::status::CanaryStatus::default())
            .expect("a status as JSON");
        saved["phase"] = "Progressing".into();
        saved["step"] = step.into();
        saved["weight"] = weight.into();
        std::fs::write(&state, saved.to_string()).expect("write the state file");
        let out = Command::new(BIN)
            .arg("run")
            .arg(r.dir.join("canary.yaml"))
            .args(["--listen", &r.listen.to_string()])
            .args(["--admin", &r.admin.to_string()])
            .args(["--state", state.to_str().expect("utf-8 path")])
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{saved}: {err}");
        assert!(err.contains(why), "{saved}: {err}");
    }
}

/// Runs a `coalmine` client command; its exit code and stdout, stderr.
fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("coalmine runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_control_commands_drive_a_running_rollout() {
    let r = rollout(
        "control",
        "0",
        "    - setWeight: 10\n    - analysis: {timeout: 1h}\n    - setWeight: 30\n    - pause: {}",
    );
    let mut run = r.start(&[]);
    let url = format!("http://{}", r.admin);
    let admin = ["--admin", url.as_str()];
    assert!(wait_until(Duration::from_secs(10), || r.status()["weight"] == 10));

    let (code, out, _) = cli(&[&["get", "-o", "json"][..], &admin].concat());
    assert_eq!(code, Some(0));
    let status: serde_json::Value = serde_json::from_str(&out).expect("get -o json is JSON");
    assert_eq!(status["weight"], 10);
    let (code, out, _) = cli(&[&["get"][..], &admin].concat());
    assert_eq!(code, Some(0));
    assert!(
        out.contains("weight 10%") && out.contains("revisions"),
        "{out}"
    );

    let (code, out, err) = cli(&[&["pause"][..], &admin].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Paused: paused by a person"), "{out}");
    assert_eq!(r.status()["phase"], "Paused");
    let (code, out, err) = cli(&[&["resume"][..], &admin].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Resumed"), "{out}");
    // Nothing is paused now: the rollout ignores it, and says why.
    let (code, _, err) = cli(&[&["resume"][..], &admin].concat());
    assert_eq!(code, Some(1));
    assert!(err.contains("ignored"), "{err}");

    let (code, _, err) = cli(&[&["promote"][..], &admin].concat());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r.status()["weight"], 30);
    let (code, out, err) = cli(&[&["abort"][..], &admin].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Aborted"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || r.status()["phase"]
        == "RolledBack"));
    let (code, _, err) = cli(&[&["retry"][..], &admin].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_until(Duration::from_secs(5), || r.status()["weight"] == 10));

    // --watch follows the run until it ends.
    let watch = Command::new(BIN)
        .args([&["get", "--watch"][..], &admin].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("get --watch starts");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill").arg(run.0.id().to_string()).status();
    assert_eq!(exit_code(&mut run, Duration::from_secs(10)), Some(1));
    let mut watch = Proc(watch);
    assert_eq!(exit_code(&mut watch, Duration::from_secs(10)), Some(0));
    let mut text = String::new();
    if let Some(mut o) = watch.0.stdout.take() {
        let _ = o.read_to_string(&mut text);
    }
    assert!(
        text.contains("weight 10%") && text.contains("the run has ended"),
        "{text}"
    );

    // Bad or missing addresses are clear errors.
    let (code, _, err) = cli(&["pause"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--admin"), "{err}");
    let (code, _, err) = cli(&["get", "--admin", "https://127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("only http://"), "{err}");
    let (code, _, err) = cli(&[&["get"][..], &admin].concat());
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn a_canary_that_dies_mid_rollout_is_rolled_back_as_unreachable() {
    let mut r = rollout(
        "canary-dies",
        "0",
        "    - setWeight: 20\n    - pause: {}\n    - setWeight: 50",
    );
    let mut run = r.start(&[]);
    assert!(
        wait_until(Duration::from_secs(20), || r.status()["weight"] == 20),
        "{}",
        r.status()
    );
    let killed = Instant::now();
    let _ = r._apps.1.0.kill();
    let _ = r._apps.1.0.wait();
    assert!(
        wait_until(Duration::from_secs(20), || r.status()["phase"]
            == "RolledBack"),
        "{}",
        r.status()
    );
    let after = killed.elapsed();
    let status = r.status();
    assert_eq!(
        status["rollback"]["reason"], "CanaryUnreachable",
        "{status}"
    );
    let message = status["rollback"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("canary unreachable: http://127.0.0.1:")
            && message.contains("connection refused"),
        "{message}"
    );
    // Three failed checks a second apart, and the next decision.
    assert!(after < Duration::from_secs(10), "took {after:?}");
    let (v1, v2) = versions(r.listen, 20);
    assert_eq!((v1, v2), (20, 0));
    let _ = Command::new("kill").arg(run.0.id().to_string()).status();
    assert_eq!(exit_code(&mut run, Duration::from_secs(10)), Some(2));
}

#[test]
fn a_stable_that_dies_pauses_the_rollout_with_the_reason() {
    let mut r = rollout(
        "stable-dies",
        "0",
        "    - setWeight: 20\n    - pause: {duration: 1h}\n    - setWeight: 50",
    );
    let _run = r.start(&[]);
    assert!(
        wait_until(Duration::from_secs(20), || r.status()["weight"] == 20),
        "{}",
        r.status()
    );
    let _ = r._apps.0.0.kill();
    let _ = r._apps.0.0.wait();
    assert!(
        wait_until(Duration::from_secs(20), || !r.status()["pause"].is_null()),
        "{}",
        r.status()
    );
    let status = r.status();
    // Neither rolled back (the canary is not at fault) nor moved on.
    assert_eq!(status["weight"], 20, "{status}");
    assert!(status["rollback"].is_null(), "{status}");
    let (_, events) = get(r.admin, "/events").expect("events");
    assert!(
        events.contains("StableUnreachable") && events.contains("coalmine resume"),
        "{events}"
    );
}

#[test]
fn notifications_reach_a_webhook_and_the_status_counts_them() {
    // The webhook runs on its own runtime beside this synchronous test.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let hook = runtime
        .block_on(coalmine_notify::testing::Recorder::start())
        .expect("a webhook");
    let r = rollout(
        "notify",
        "0",
        "    - setWeight: 20\n    - pause: {}\n    - setWeight: 50",
    );
    let file = r.path("canary.yaml");
    let mut text = std::fs::read_to_string(&file).expect("the file");
    text.push_str(&format!(
        "  notifications:\n    - url: {}\n      on: [started, step, rolledBack]\n",
        hook.url
    ));
    std::fs::write(&file, text).expect("write");
    let _run = r.start(&[]);
    assert!(
        wait_until(Duration::from_secs(20), || r.status()["weight"] == 20),
        "{}",
        r.status()
    );
    assert_eq!(post(r.admin, "/abort"), Some(202));
    let transitions = || -> Vec<String> {
        hook.json()
            .iter()
            .map(|v| v["transition"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(15), || transitions().len() >= 3),
        "{:?}",
        transitions()
    );
    assert_eq!(transitions(), ["started", "step", "rolledBack"]);
    let rollback = hook.json()[2].clone();
    assert_eq!(rollback["reason"], "Aborted", "{rollback}");
    assert_eq!(rollback["canary"], "notify");
    assert!(
        wait_until(
            Duration::from_secs(5),
            || r.status()["notifications"]["sent"] == 3
        ),
        "{}",
        r.status()
    );
    // And on /metrics, under the controller's metric name.
    let (code, metrics) = get(r.admin, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("coalmine_notifications_total{name=\"notify\",result=\"sent\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("coalmine_proxy_requests_total"),
        "{metrics}"
    );
}
