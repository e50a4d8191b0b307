//! The web dashboard in a real browser: `coalmine demo` on free loopback
//! ports, Debian's headless Chromium driven through WebDriver
//! (`chromedriver`, plain HTTP and JSON). Chromium missing is a failure,
//! not a skip: `scripts/test.sh` installs it.
//!
//! Set `COALMINE_SCREENSHOT=PATH` to save the rolled-back page as a PNG
//! (the README's screenshot is made that way).
//!
//! The Kubernetes dashboard (`coalmine dashboard NAME`) and its list of
//! Canaries run against the real API server of `scripts/kube-env.sh`
//! (`kube_env`): with the admin's kubeconfig, and with a user whose RBAC
//! reaches some namespaces and not others.

mod kube_env;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

/// One HTTP/1.1 exchange: status and JSON body. The body is read by its
/// length (chromedriver keeps connections open), else to the end.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let code = status_line.split(' ').nth(1)?.parse().ok()?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("content-length:") {
            length = n.trim().parse::<usize>().ok();
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            chunked = true;
        }
    }
    let mut raw = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            raw.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        raw.resize(n, 0);
        reader.read_exact(&mut raw).ok()?;
    } else {
        reader.read_to_end(&mut raw).ok()?;
    }
    Some((code, serde_json::from_slice(&raw).unwrap_or(Value::Null)))
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < end, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `coalmine demo` kept serving after its rollout; its admin address.
fn demo(scenario: &str, speed: &str) -> (Proc, SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["demo", "--scenario", scenario, "--speed", speed])
        .args(["--keep-serving", "--rps", "100"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coalmine demo starts");
    let err = child.stderr.take().expect("stderr is piped");
    let proc = Proc(child);
    // The demo prints the dashboard's address; the rest of its stderr is
    // drained so it never blocks on a full pipe.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let admin = wait_for(
        Duration::from_secs(20),
        "the demo prints its dashboard",
        || {
            while let Ok(line) = rx.try_recv() {
                seen.push(line.clone());
                if let Some(rest) = line.split("dashboard: http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default();
                    return addr.parse().ok();
                }
            }
            None
        },
    );
    (proc, admin, rx)
}

/// A WebDriver session on a headless Chromium of its own.
struct Browser {
    driver: SocketAddr,
    session: String,
    _chromedriver: Proc,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http(self.driver, "DELETE", &path, None);
    }
}

impl Browser {
    fn start() -> Browser {
        let chromedriver = [
            "chromedriver",
            "/usr/bin/chromedriver",
            "/usr/lib/chromium/chromedriver",
        ]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .unwrap_or_else(|| {
            panic!(
                "chromedriver is missing: install Debian's `chromium` and `chromium-driver` \
                     (scripts/test.sh does)"
            )
        });
        let port = free_port();
        let driver = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(chromedriver)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let proc = Proc(child);
        wait_for(Duration::from_secs(20), "chromedriver answers", || {
            http(driver, "GET", "/status", None).filter(|(c, _)| *c == 200)
        });
        let profile = std::env::temp_dir().join(format!(
            "coalmine-dashboard-chromium-{}-{port}",
            std::process::id()
        ));
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,2200".into(),
        ];
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut options = json!({ "args": args });
        // Debian's /usr/bin/chromium is a wrapper script; the driver wants the program.
        if Path::new("/usr/lib/chromium/chromium").exists() {
            options["binary"] = json!("/usr/lib/chromium/chromium");
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "browser": "ALL" },
            "unhandledPromptBehavior": "ignore",
        }}});
        let (code, answer) =
            http(driver, "POST", "/session", Some(&caps)).expect("chromedriver answers");
        assert_eq!(code, 200, "no browser session: {answer}");
        let session = answer["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            driver,
            session,
            _chromedriver: proc,
            _profile: TempDir(profile),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (code, answer) = http(self.driver, method, &path, body.as_ref())
            .unwrap_or_else(|| panic!("chromedriver did not answer {method} {path}"));
        assert_eq!(code, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn script(&self, code: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": code, "args": [] })),
        )
    }

    /// Clicks the element `css` selects; found again when the page
    /// replaced it between finding and clicking (a list redrawn by a
    /// poll).
    fn click(&self, css: &str) {
        for _ in 0..20 {
            let found = self.call(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            );
            let id = found
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                .expect("an element id")
                .to_owned();
            let path = format!("/session/{}/element/{id}/click", self.session);
            let (code, answer) = http(self.driver, "POST", &path, Some(&json!({})))
                .unwrap_or_else(|| panic!("chromedriver did not answer POST {path}"));
            if code == 200 {
                return;
            }
            assert_eq!(
                answer["value"]["error"], "stale element reference",
                "POST {path}: {answer}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{css} was replaced at every click");
    }

    /// Accepts the confirmation dialog open (or about to open), as a person
    /// would; its text.
    fn confirm(&self) -> String {
        let text = wait_for(Duration::from_secs(10), "a confirmation dialog", || {
            let path = format!("/session/{}/alert/text", self.session);
            http(self.driver, "GET", &path, None)
                .filter(|(c, _)| *c == 200)
                .and_then(|(_, v)| v["value"].as_str().map(str::to_owned))
        });
        self.call("POST", "/alert/accept", Some(json!({})));
        text
    }

    /// The browser's console messages of level SEVERE (errors) so far.
    fn console_errors(&self) -> Vec<String> {
        let logs = self.call("POST", "/se/log", Some(json!({ "type": "browser" })));
        logs.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

fn status(admin: SocketAddr) -> Value {
    http(admin, "GET", "/status", None)
        .filter(|(c, _)| *c == 200)
        .map(|(_, v)| v)
        .unwrap_or(Value::Null)
}

#[test]
fn the_faulty_canary_is_shown_rolled_back_with_its_reason_and_its_evidence() {
    // Real time: the page polls once a second, and at 100 req/s with the
    // other tests of this file loading the machine, a sped-up rollout can
    // end before the judge has its evidence (at speed 4, 2 runs in 4 were
    // promoted).
    let (_demo, admin, _log) = demo("faulty", "1");
    let browser = Browser::start();
    browser.goto(&format!("http://{admin}/"));
    let reason = wait_for(
        Duration::from_secs(90),
        "the page shows the rollback's reason",
        || {
            let r = browser.script(
                "const r = document.getElementById('reason');
                 const done = document.getElementById('phase').textContent === 'RolledBack';
                 return r.hidden || !done ? null : r.textContent;",
            );
            r.as_str().map(str::to_owned)
        },
    );
    assert!(reason.contains("metric errors failed"), "{reason}");
    // The page says the same as the admin API.
    assert_eq!(status(admin)["phase"], "RolledBack");
    // Let one more poll land so the traffic charts include the end.
    std::thread::sleep(Duration::from_millis(1500));
    let page = browser.script(
        "return {
            phase: document.getElementById('phase').textContent,
            failedStep: document.querySelectorAll('#steps li.failed').length,
            steps: document.querySelectorAll('#steps li').length,
            abort: document.querySelector('button[data-action=abort]').disabled,
            retry: document.querySelector('button[data-action=retry]').disabled,
            events: document.querySelectorAll('#events li').length,
            charts: Array.from(document.querySelectorAll('.chart')).map(
                c => [c.closest('figure').querySelector('figcaption').textContent
                      + ' (' + (c.closest('.metric') ? c.closest('.metric').id : 'traffic') + ')',
                      Number(c.dataset.points || 0)]),
            canvases: document.querySelectorAll('.chart canvas').length,
        };",
    );
    assert_eq!(page["phase"], "RolledBack", "{page}");
    assert_eq!(
        page["failedStep"], 1,
        "the step it failed at is marked: {page}"
    );
    assert_eq!(page["steps"], 6, "{page}");
    assert_eq!(page["abort"], true, "{page}");
    assert_eq!(page["retry"], false, "{page}");
    assert!(page["events"].as_u64() >= Some(2), "{page}");
    // Two charts per metric (errors, slow) and two of traffic, each with points.
    let charts = page["charts"].as_array().expect("charts");
    assert_eq!(charts.len(), 6, "{page}");
    for c in charts {
        assert!(c[1].as_u64() >= Some(2), "a chart without data: {c}");
    }
    assert_eq!(page["canvases"], 6, "{page}");
    if let Ok(path) = std::env::var("COALMINE_SCREENSHOT") {
        use base64::Engine as _;
        let png = browser.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a base64 screenshot");
        std::fs::write(&path, bytes).expect("the screenshot is written");
    }
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

#[test]
fn clicking_abort_in_the_page_rolls_back_a_running_rollout() {
    let (_demo, admin, _log) = demo("healthy", "0.5");
    let browser = Browser::start();
    browser.goto(&format!("http://{admin}/"));
    wait_for(
        Duration::from_secs(30),
        "the page shows a running rollout with Abort enabled",
        || {
            let ok = browser.script(
                "return ['Progressing', 'Paused'].includes(document.getElementById('phase').textContent)
                    && !document.querySelector('button[data-action=abort]').disabled;",
            );
            (ok == json!(true)).then_some(())
        },
    );
    browser.click("button[data-action=abort]");
    let text = browser.confirm();
    assert!(text.starts_with("Abort"), "{text}");
    let s = wait_for(
        Duration::from_secs(20),
        "GET /status shows the rollout rolled back",
        || {
            let s = status(admin);
            (s["phase"] == "RolledBack").then_some(s)
        },
    );
    assert_eq!(s["rollback"]["reason"], "Aborted", "{s}");
    assert!(s["lastCommand"].is_string(), "{s}");
    // The page follows within its polling interval.
    wait_for(Duration::from_secs(5), "the page shows RolledBack", || {
        let p = browser.script("return document.getElementById('phase').textContent;");
        (p == "RolledBack").then_some(())
    });
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// `coalmine sample-app` on a free port.
fn sample_app(version: &str) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["sample-app", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--version", version, "--error-rate", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sample-app starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(Duration::from_secs(10), "the sample app answers", || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()
    });
    (Proc(child), port)
}

/// A status code for a request with these extra header lines.
fn code_of(addr: SocketAddr, request_line: &str, headers: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{request_line} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

#[test]
fn with_a_token_the_page_asks_for_it_and_its_buttons_send_it() {
    let dir = std::env::temp_dir().join(format!("coalmine-dashboard-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let _cleanup = TempDir(dir.clone());
    let (_stable, sp) = sample_app("v1");
    let (_canary, cp) = sample_app("v2");
    let file = dir.join("canary.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata: {{name: guarded}}
spec:
  upstreams:
    stable: [http://127.0.0.1:{sp}]
    canary: [http://127.0.0.1:{cp}]
  steps:
    - setWeight: 10
    - pause: {{duration: 10m}}
"
        ),
    )
    .expect("the Canary file");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").expect("the token file");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _run = Proc(
        Command::new(BIN)
            .arg("run")
            .arg(&file)
            .args([
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .arg("--admin-token-file")
            .arg(&token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coalmine run starts"),
    );
    wait_for(
        Duration::from_secs(10),
        "coalmine run serves the page",
        || (code_of(admin, "GET /", "") == Some(200)).then_some(()),
    );
    // The page's files are public, the data is not.
    assert_eq!(code_of(admin, "GET /dashboard/app.js", ""), Some(200));
    assert_eq!(code_of(admin, "GET /dashboard/info", ""), Some(401));
    assert_eq!(code_of(admin, "GET /history", ""), Some(401));
    let bearer = "Authorization: Bearer s3cret\r\n";
    assert_eq!(code_of(admin, "GET /traffic", bearer), Some(200));

    let browser = Browser::start();
    browser.goto(&format!("http://{admin}/"));
    wait_for(
        Duration::from_secs(10),
        "the page asks for the token",
        || {
            let shown = browser.script("return !document.getElementById('token-form').hidden;");
            (shown == json!(true)).then_some(())
        },
    );
    let input = browser.call(
        "POST",
        "/element",
        Some(json!({ "using": "css selector", "value": "#token-input" })),
    );
    let id = input
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .expect("the token input")
        .to_owned();
    browser.call(
        "POST",
        &format!("/element/{id}/value"),
        Some(json!({ "text": "s3cret" })),
    );
    browser.click("#token-save");
    let identity = wait_for(
        Duration::from_secs(10),
        "the page shows the rollout",
        || {
            let ready = browser.script(
                "return document.getElementById('phase').textContent === 'Paused'
                && !document.querySelector('button[data-action=promote]').disabled
                ? document.getElementById('identity').textContent : null;",
            );
            ready.as_str().map(str::to_owned)
        },
    );
    assert!(identity.contains("holder of the admin token"), "{identity}");
    browser.click("button[data-action=promote]");
    let text = browser.confirm();
    assert!(text.starts_with("Promote"), "{text}");
    let authorized_status = || {
        let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /status HTTP/1.1\r\nHost: {admin}\r\n{bearer}Connection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        serde_json::from_str::<Value>(body).ok()
    };
    // Promote skips the 10-minute pause: the rollout ends promoted.
    let s = wait_for(Duration::from_secs(20), "the promote from the page", || {
        authorized_status().filter(|s| s["phase"] == "Promoted")
    });
    assert!(s["lastCommand"].is_string(), "{s}");
    // The only console errors are the refusals before the token was given.
    let errors = browser.console_errors();
    assert!(
        errors.iter().all(|e| e.contains("401")),
        "console errors: {errors:?}"
    );
}

/// Runs a command with the test's kubeconfig and `dir` first on PATH
/// (kubectl of the cluster's release); code, stdout, stderr.
fn kube_run(dir: &Path, program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("the command runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shop(image: &str) -> String {
    format!(
        "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata: {{name: shop}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: shop}}}}
  template:
    metadata: {{labels: {{app: shop}}}}
    spec: {{containers: [{{name: shop, image: \"{image}\", ports: [{{containerPort: 8080}}]}}]}}
  service: {{port: 80, targetPort: 8080}}
  trafficRouting: {{replicas: {{}}}}
  steps:
    - setWeight: 25
    - pause: {{}}
    - setWeight: 50
    - pause: {{}}
"
    )
}

fn kube_status(dir: &Path) -> Value {
    let (code, out, _) = kube_run(dir, BIN, &["get", "shop", "-o", "json"]);
    if code != Some(0) {
        return Value::Null;
    }
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalmine_dashboard_shows_a_kubernetes_canary_and_aborts_it_with_the_kubeconfig()
-> kube_env::TestResult {
    let env = kube_env::env()?;
    let admin = env.admin().await?;
    let ns = kube_env::namespace(&admin, "dash-kube").await?;
    let controller = kube_env::Controller::start(env, &ns)?;
    // A person's kubeconfig: the admin's, the test's namespace as its
    // default; kubectl of the cluster's release first on PATH.
    let dir = Path::new(env.var("KUBE_ENV_RUN")?).join(format!("dash-{ns}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(env.var("ADMIN_KUBECONFIG")?, dir.join("kubeconfig"))?;
    std::os::unix::fs::symlink(env.var("KUBECTL")?, dir.join("kubectl"))?;
    let (d, name) = (dir.clone(), ns.to_string());
    let outcome = tokio::task::spawn_blocking(move || kube_scenario(&d, &name)).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    controller.finish()?;
    Ok(())
}

fn kube_scenario(dir: &Path, ns: &str) {
    let (code, _, err) = kube_run(
        dir,
        "kubectl",
        &["config", "set-context", "--current", "--namespace", ns],
    );
    assert_eq!(code, Some(0), "{err}");
    let crd = dir.join("crd.yaml");
    let (code, out, err) = kube_run(dir, BIN, &["crd"]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::write(&crd, out).expect("write the CRD");
    let (code, _, err) = kube_run(
        dir,
        "kubectl",
        &["apply", "-f", crd.to_str().expect("utf-8")],
    );
    assert_eq!(code, Some(0), "{err}");
    let file = dir.join("shop.yaml");
    let path = file.to_str().expect("utf-8");
    std::fs::write(&file, shop("shop:1")).expect("write");
    let (code, _, err) = kube_run(dir, "kubectl", &["apply", "-f", path]);
    assert_eq!(code, Some(0), "{err}");
    wait_for(Duration::from_secs(60), "shop is Idle", || {
        let s = kube_status(dir);
        (s["phase"] == "Idle" && s["stableRevision"].is_string()).then_some(())
    });
    std::fs::write(&file, shop("shop:2")).expect("write");
    let (code, _, err) = kube_run(dir, "kubectl", &["apply", "-f", path]);
    assert_eq!(code, Some(0), "{err}");
    wait_for(Duration::from_secs(60), "shop paused at 25%", || {
        let s = kube_status(dir);
        (s["phase"] == "Paused" && s["weight"] == 25).then_some(())
    });

    let mut child = Command::new(BIN)
        .args(["dashboard", "shop", "--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coalmine dashboard starts");
    let err = child.stderr.take().expect("stderr is piped");
    let _dashboard = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr: SocketAddr = wait_for(Duration::from_secs(20), "the dashboard's address", || {
        let line = rx.try_recv().ok()?;
        let rest = line.split(" at http://").nth(1)?;
        rest.split('/').next()?.parse().ok()
    });

    let browser = Browser::start();
    browser.goto(&format!("http://{addr}/"));
    let page = wait_for(
        Duration::from_secs(20),
        "the page shows shop paused",
        || {
            let p = browser.script(
                "return document.getElementById('phase').textContent === 'Paused'
                && document.querySelectorAll('#events li').length > 0
                ? { name: document.getElementById('name').textContent,
                    weight: document.getElementById('weight').textContent,
                    current: document.querySelector('#steps li.current').textContent,
                    traffic: document.getElementById('traffic').hidden,
                    identity: document.getElementById('identity').textContent }
                : null;",
            );
            (!p.is_null()).then_some(p)
        },
    );
    assert_eq!(page["name"], format!("{ns}/shop"), "{page}");
    assert_eq!(page["weight"], "25%", "{page}");
    assert_eq!(page["current"], "pause until promoted", "{page}");
    assert_eq!(
        page["traffic"], true,
        "no traffic section before the judge reports counts: {page}"
    );
    assert!(
        page["identity"]
            .as_str()
            .is_some_and(|i| i.contains("kubeconfig user")),
        "{page}"
    );
    browser.click("button[data-action=abort]");
    let text = browser.confirm();
    assert!(text.starts_with("Abort"), "{text}");
    wait_for(
        Duration::from_secs(60),
        "the controller rolls shop back",
        || (kube_status(dir)["phase"] == "RolledBack").then_some(()),
    );
    wait_for(Duration::from_secs(5), "the page shows RolledBack", || {
        let p = browser.script("return document.getElementById('phase').textContent;");
        (p == "RolledBack").then_some(())
    });
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// A kubeconfig for ServiceAccount `viewer` of `home`, which may read,
/// list and command Canaries (and read their Events) in `namespaces`
/// only, and list the namespaces: a person with a few teams' rights.
fn viewer_kubeconfig(
    env: &kube_env::Env,
    home: &str,
    namespaces: &[&str],
) -> Result<std::path::PathBuf, kube_env::BoxError> {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "viewer", "namespace": home}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": format!("{home}-canary-viewer")},
               "rules": [
                   {"apiGroups": ["coalmine.dev"], "resources": ["canaries"],
                    "verbs": ["get", "list", "watch", "patch"]},
                   {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": format!("{home}-namespace-lister")},
               "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": format!("{home}-namespace-lister")},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": format!("{home}-namespace-lister")},
               "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": home}]}),
    ];
    for ns in namespaces {
        objects.push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "canary-viewer", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": format!("{home}-canary-viewer")},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": home}]}),
        );
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    env.apply(&list)?;
    let out = env
        .kubectl()?
        .args(["create", "token", "viewer", "-n", home])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    let controller = std::fs::read_to_string(env.var("CONTROLLER_KUBECONFIG")?)?;
    let ca = controller
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority:"))
        .ok_or("the controller's kubeconfig names no certificate-authority")?
        .trim()
        .to_owned();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": env.var("API_SERVER")?, "certificate-authority": ca}}],
        "users": [{"name": "viewer", "user": {"token": token}}],
        "contexts": [{"name": "viewer", "context": {
            "cluster": "test", "user": "viewer", "namespace": home}}],
        "current-context": "viewer",
    });
    let path = Path::new(env.var("KUBE_ENV_RUN")?).join(format!("{home}-viewer.kubeconfig"));
    std::fs::write(&path, config.to_string())?;
    Ok(path)
}

/// `coalmine dashboard ARGS` with `kubeconfig`; its address.
fn kube_dashboard(kubeconfig: &Path, args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(BIN)
        .arg("dashboard")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coalmine dashboard starts");
    let err = child.stderr.take().expect("stderr is piped");
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = wait_for(Duration::from_secs(20), "the dashboard's address", || {
        let line = rx.try_recv().ok()?;
        let rest = line.split(" at http://").nth(1)?;
        rest.split('/').next()?.parse().ok()
    });
    (proc, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_dashboard_lists_the_canaries_rbac_lets_the_user_read_and_opens_one()
-> kube_env::TestResult {
    let env = kube_env::env()?;
    let admin = env.admin().await?;
    let a = kube_env::namespace(&admin, "dash-a").await?;
    let b = kube_env::namespace(&admin, "dash-b").await?;
    let hidden = kube_env::namespace(&admin, "dash-hidden").await?;
    let steps = json!([{"setWeight": 50}, {"pause": {}}]);
    for (ns, name) in [(&a, "web"), (&a, "api"), (&b, "shop"), (&hidden, "secret")] {
        // Each its own app label, so their pods do not mix.
        let spec = kube_env::spec("web:1", 2, steps.clone())
            .to_string()
            .replace("\"web\"", &format!("\"{name}\""));
        kube_env::create(&admin, ns, name, serde_json::from_str(&spec)?).await?;
    }
    let controller = kube_env::Controller::start(env, &a)?;
    kube_env::phase(&admin, &a, "web", "Idle", 60).await?;
    kube_env::set_image(&admin, &a, "web", "web:2").await?;
    kube_env::phase(&admin, &a, "web", "Paused", 60).await?;
    let kubeconfig = viewer_kubeconfig(env, &a, &[&a, &b])?;

    let (a2, b2, hidden2) = (a.to_string(), b.to_string(), hidden.to_string());
    let admin2 = admin.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let (_dashboard, addr) = kube_dashboard(&kubeconfig, &["--all-namespaces"]);
        let browser = Browser::start();
        browser.goto(&format!("http://{addr}/"));
        let want = [
            format!("{a2}/api"),
            format!("{a2}/web"),
            format!("{b2}/shop"),
        ];
        let listed = wait_for(Duration::from_secs(20), "the list of Canaries", || {
            let rows = browser.script(
                "return Array.from(document.querySelectorAll('tr[data-canary]'))
                   .map(r => r.dataset.canary);",
            );
            let rows: Vec<String> = serde_json::from_value(rows).ok()?;
            (rows.len() >= want.len()).then_some(rows)
        });
        // By namespace, and nothing from the namespace RBAC keeps from the user.
        let ours: Vec<&String> = listed
            .iter()
            .filter(|r| !r.starts_with(&format!("{hidden2}/")))
            .collect();
        assert_eq!(ours, want.iter().collect::<Vec<_>>(), "{listed:?}");
        assert!(
            !listed.iter().any(|r| r.starts_with(&format!("{hidden2}/"))),
            "{listed:?}"
        );
        let row = browser.script(&format!(
            "const r = document.querySelector('tr[data-canary=\"{a2}/web\"]');
             return {{ phase: r.cells[1].textContent, weight: r.cells[2].textContent,
                      note: document.getElementById('note').textContent }};"
        ));
        assert_eq!(row["phase"], "Paused", "{row}");
        assert_eq!(row["weight"], "50%", "{row}");
        assert!(
            row["note"]
                .as_str()
                .is_some_and(|n| n.contains("not readable")),
            "{row}"
        );

        browser.click(&format!("tr[data-canary=\"{a2}/web\"] a"));
        let page = wait_for(Duration::from_secs(20), "the Canary's own view", || {
            let p = browser.script(
                "return document.getElementById('phase').textContent === 'Paused'
                  ? { name: document.getElementById('name').textContent,
                      url: location.pathname,
                      back: !document.getElementById('back').hidden,
                      weight: document.getElementById('weight').textContent }
                  : null;",
            );
            (!p.is_null()).then_some(p)
        });
        assert_eq!(page["name"], format!("{a2}/web"), "{page}");
        assert_eq!(page["url"], format!("/c/{a2}/web/"), "{page}");
        assert_eq!(page["back"], true, "{page}");
        assert_eq!(page["weight"], "50%", "{page}");
        // Its buttons act with the user's kubeconfig, under the view's path.
        browser.click("button[data-action=abort]");
        let text = browser.confirm();
        assert!(text.starts_with("Abort"), "{text}");
        runtime
            .block_on(kube_env::phase(&admin2, &a2, "web", "RolledBack", 30))
            .expect("the controller rolls web back");
        wait_for(Duration::from_secs(5), "the view shows RolledBack", || {
            let p = browser.script("return document.getElementById('phase').textContent;");
            (p == "RolledBack").then_some(())
        });
        let errors = browser.console_errors();
        assert!(errors.is_empty(), "console errors: {errors:?}");

        // One namespace: its Canaries; one RBAC keeps from the user: why not.
        let (_one, one) = kube_dashboard(&kubeconfig, &["-n", &b2]);
        let (code, list) = wait_for(Duration::from_secs(10), "GET /canaries", || {
            http(one, "GET", "/canaries", None)
        });
        assert_eq!(code, 200, "{list}");
        let names: Vec<&str> = list["canaries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["shop"], "{list}");
        let (_none, none) = kube_dashboard(&kubeconfig, &["-n", &hidden2]);
        let (code, _) = wait_for(Duration::from_secs(10), "GET /canaries", || {
            http(none, "GET", "/canaries", None)
        });
        assert_eq!(code, 403);
    })
    .await
    .map_err(|e| format!("the browser part failed: {e}"))?;
    controller.finish()?;
    Ok(())
}
