//! `coalmine proxy --routes-configmap` against a real API server
//! (`scripts/kube-env.sh`): real `coalmine proxy` processes, with the
//! least privilege the `proxy` router gives them (a ServiceAccount whose
//! Role may get, list and watch one ConfigMap by name), follow that
//! ConfigMap's `routes.json` within a second, refuse bad versions without
//! moving traffic, and stay unready and all-stable until they have read
//! one. A 403 in a proxy's log fails the test.

mod kube_env;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_env::{BoxError, Env, TestResult, env, eventually, forbid_403, namespace};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy's ConfigMap, ServiceAccount, Role and RoleBinding (the
/// contract's `NAME-proxy` for a Canary `web`).
const NAME: &str = "web-proxy";

/// The ServiceAccount, Role and RoleBinding of the contract, as the admin.
fn grant(env: &Env, ns: &str) -> TestResult {
    env.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": NAME, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": NAME, "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                    "verbs": ["get", "list", "watch"], "resourceNames": [NAME]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": NAME, "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]},
    ]}))
}

/// A kubeconfig acting as ServiceAccount `ns/NAME` (a token from
/// `kubectl create token`), its context's namespace `ns`.
fn service_account_kubeconfig(env: &Env, ns: &str) -> Result<PathBuf, BoxError> {
    kubeconfig_at(env, ns, env.var("API_SERVER")?, "")
}

/// A kubeconfig acting as ServiceAccount `ns/NAME` on API server `server`,
/// written with `suffix` in its name.
fn kubeconfig_at(env: &Env, ns: &str, server: &str, suffix: &str) -> Result<PathBuf, BoxError> {
    let token = env.kubectl_ok(&["create", "token", NAME, "-n", ns, "--duration", "1h"])?;
    let ca = Path::new(env.var("KUBE_ENV_RUN")?).join("pki/ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
         users:\n- name: proxy\n  user:\n    token: {}\n\
         contexts:\n- name: proxy\n  context: {{cluster: test, user: proxy, namespace: {ns}}}\n\
         current-context: proxy\n",
        ca.display(),
        token.trim()
    );
    let path = Path::new(env.var("KUBE_ENV_RUN")?).join(format!("proxy-{ns}{suffix}.kubeconfig"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The ConfigMap `NAME` holding `routes.json` = `text`.
fn configmap(ns: &str, text: &str) -> Result<ConfigMap, BoxError> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": NAME, "namespace": ns},
        "data": {"routes.json": text},
    }))?)
}

/// Sets `routes.json` of ConfigMap `NAME` to `text` (as the admin).
async fn set_routes_json(client: &Client, ns: &str, text: &str) -> TestResult {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"routes.json": text}})),
    )
    .await?;
    Ok(())
}

/// An HTTP server on loopback answering every request with its `track`.
async fn backend(track: &'static str) -> Result<String, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{track}",
                    track.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

/// One HTTP/1.1 exchange on a new connection: (status, body), or `None`
/// when nothing listens yet.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Option<(u16, String)>, BoxError> {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return Ok(None);
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("an answer without a head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("an answer without a status")?;
    Ok(Some((status, body.to_owned())))
}

/// A free loopback port (bound, then released for the proxy to take).
fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A `coalmine proxy --routes-configmap NAME` process.
struct ProxyProcess {
    child: Child,
    log: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
}

impl ProxyProcess {
    /// Starts replica `id` in front of `stable` and `canary`, acting with
    /// `kubeconfig`, naming the namespace with `--namespace` when `ns` is
    /// given (else it is the kubeconfig context's).
    fn start(
        env: &Env,
        id: &str,
        kubeconfig: &Path,
        ns: Option<&str>,
        (stable, canary): (&str, &str),
    ) -> Result<ProxyProcess, BoxError> {
        let (listen, admin, metrics) = (free_port()?, free_port()?, free_port()?);
        let log = Path::new(env.var("KUBE_ENV_RUN")?)
            .join("logs")
            .join(format!("proxy-{id}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coalmine"));
        cmd.arg("proxy")
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--stable", stable, "--canary", canary])
            .args(["--routes-configmap", NAME])
            .arg("--kubeconfig")
            .arg(kubeconfig);
        if let Some(ns) = ns {
            cmd.args(["--namespace", ns]);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(ProxyProcess {
            child,
            log,
            listen,
            admin,
            metrics,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /routes` of the admin API: `None` until it answers 200.
    async fn routes(&self) -> Result<Option<Value>, BoxError> {
        match http(self.admin, "GET", "/routes", &[], "").await? {
            Some((200, body)) => Ok(Some(serde_json::from_str(&body)?)),
            _ => Ok(None),
        }
    }

    /// `GET /readyz` on the metrics address (where the kubelet probes).
    async fn readyz(&self) -> Result<Option<(u16, String)>, BoxError> {
        http(self.metrics, "GET", "/readyz", &[], "").await
    }

    /// `coalmine_proxy_routes_source_errors_total` from `/metrics`.
    async fn source_errors(&self) -> Result<u64, BoxError> {
        let (_, text) = http(self.metrics, "GET", "/metrics", &[], "")
            .await?
            .ok_or("the metrics address does not answer")?;
        text.lines()
            .find_map(|l| l.strip_prefix("coalmine_proxy_routes_source_errors_total "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no routes_source_errors_total in\n{text}").into())
    }

    /// `coalmine_proxy_routes_watch_errors_total` from `/metrics`.
    async fn watch_errors(&self) -> Result<u64, BoxError> {
        let (_, text) = http(self.metrics, "GET", "/metrics", &[], "")
            .await?
            .ok_or("the metrics address does not answer")?;
        text.lines()
            .find_map(|l| l.strip_prefix("coalmine_proxy_routes_watch_errors_total "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no routes_watch_errors_total in\n{text}").into())
    }

    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The tracks that answered `n` requests through the proxy.
    async fn tracks(&self, n: usize, headers: &[(&str, &str)]) -> Result<Vec<String>, BoxError> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (status, body) = http(self.listen, "GET", "/", headers, "")
                .await?
                .ok_or("the proxy does not answer")?;
            if status != 200 {
                return Err(format!("the proxy answered {status}: {body}").into());
            }
            out.push(body);
        }
        Ok(out)
    }

    /// Kills it, and fails when its log has a 403.
    fn finish(mut self) -> Result<String, BoxError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        forbid_403(&log, &self.log)?;
        Ok(log)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every proxy's `GET /routes` is `want`; how long it took.
async fn all_answer(proxies: &[&ProxyProcess], want: &Value) -> Result<Duration, BoxError> {
    let start = Instant::now();
    loop {
        let mut all = true;
        for p in proxies {
            if p.routes().await?.as_ref() != Some(want) {
                all = false;
            }
        }
        if all {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            let seen: Vec<Option<Value>> = {
                let mut v = Vec::new();
                for p in proxies {
                    v.push(p.routes().await?);
                }
                v
            };
            return Err(format!("after 10 s the proxies answer {seen:?}, not {want}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn count(tracks: &[String], track: &str) -> usize {
    tracks.iter().filter(|t| *t == track).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_follow_their_configmap_within_a_second() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "proxy-routes").await?;
    grant(env, &ns)?;
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    configmaps
        .create(
            &PostParams::default(),
            &configmap(&ns, r#"{"canaryWeight": 0}"#)?,
        )
        .await?;
    let kubeconfig = service_account_kubeconfig(env, &ns)?;
    let (stable, canary) = (backend("stable").await?, backend("canary").await?);
    let upstreams = (stable.as_str(), canary.as_str());
    // One names the namespace, the other takes the kubeconfig context's.
    let a = ProxyProcess::start(env, &format!("{ns}-a"), &kubeconfig, Some(&ns), upstreams)?;
    let mut b = ProxyProcess::start(env, &format!("{ns}-b"), &kubeconfig, None, upstreams)?;

    let mut table = json!({"canaryWeight": 0, "headerRoutes": [], "mirrorPercent": 0});
    all_answer(&[&a, &b], &table).await?;
    for p in [&a, &b] {
        assert_eq!(p.readyz().await?, Some((200, "ok\n".into())));
        assert_eq!(count(&p.tracks(10, &[]).await?, "stable"), 10);
    }

    // Three changes: the weight, a header route, mirror and stickiness.
    let changes = [
        json!({"canaryWeight": 100, "headerRoutes": [], "mirrorPercent": 0}),
        json!({"canaryWeight": 0, "headerRoutes": [{"header": "x-canary", "value": "always"}],
               "mirrorPercent": 0}),
        json!({"canaryWeight": 50, "headerRoutes": [{"header": "x-canary", "value": "always"}],
               "mirrorPercent": 20, "stickyCookie": "coalmine-track", "stickyMaxAge": "1h"}),
    ];
    let mut worst = Duration::ZERO;
    for change in changes {
        // From before the write: the API server's own time counts too.
        let written = Instant::now();
        set_routes_json(&admin, &ns, &change.to_string()).await?;
        let after_write = all_answer(&[&a, &b], &change).await?;
        let took = written.elapsed();
        println!(
            "both replicas answer {change} {took:?} after the ConfigMap's patch was sent \
             ({after_write:?} after the API server answered it)"
        );
        worst = worst.max(took);
        table = change;
        for p in [&a, &b] {
            let plain = p.tracks(20, &[]).await?;
            let flagged = p.tracks(5, &[("x-canary", "always")]).await?;
            match table["canaryWeight"].as_u64() {
                Some(100) => assert_eq!(count(&plain, "canary"), 20, "{plain:?}"),
                Some(0) => assert_eq!(count(&plain, "stable"), 20, "{plain:?}"),
                // Exact weights: 10 of every 20 consecutive requests.
                _ => assert_eq!(count(&plain, "canary"), 10, "{plain:?}"),
            }
            if table["headerRoutes"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                assert_eq!(count(&flagged, "canary"), 5, "{flagged:?}");
            }
        }
    }
    println!("worst delay from a ConfigMap patch to both replicas' GET /routes: {worst:?}");
    assert!(
        worst < Duration::from_secs(1),
        "a replica took {worst:?} to follow the ConfigMap"
    );
    for p in [&a, &b] {
        let log = p.log();
        assert!(
            log.contains("new routes from ConfigMap")
                && log.contains(
                    "canary weight 50%, 1 header route(s), mirror 20%, sticky cookie coalmine-track"
                ),
            "one info line per change:\n{log}"
        );
    }

    // The admin API reads the routes and refuses to write them.
    let put = http(a.admin, "PUT", "/routes", &[], r#"{"canaryWeight": 7}"#)
        .await?
        .ok_or("the admin API does not answer")?;
    assert_eq!(put.0, 409, "{put:?}");
    assert!(put.1.contains(&format!("ConfigMap {ns}/{NAME}")), "{put:?}");
    assert_eq!(a.routes().await?, Some(table.clone()));

    // A replica killed and started again answers the current table first.
    let b_id = format!("{ns}-b2");
    let _ = b.child.kill();
    let _ = b.child.wait();
    forbid_403(&b.log(), &b.log)?;
    b = ProxyProcess::start(env, &b_id, &kubeconfig, None, upstreams)?;
    let started = Instant::now();
    let first = eventually(10, "the restarted replica's GET /routes", || async {
        b.routes().await
    })
    .await?;
    assert_eq!(first, table, "its first answered GET /routes");
    println!(
        "the restarted replica answered GET /routes {:?} after its start",
        started.elapsed()
    );
    assert_eq!(b.readyz().await?, Some((200, "ok\n".into())));

    // Bad versions change nothing; each is counted and logged.
    let before = (a.source_errors().await?, b.source_errors().await?);
    let bad = [
        (
            "{\"canaryWeight\": 100,",
            "routes.json: invalid routes: not JSON",
        ),
        (r#"{"canaryWeight": 140}"#, "canaryWeight: 140 is above 100"),
    ];
    for (i, (text, why)) in bad.iter().enumerate() {
        set_routes_json(&admin, &ns, text).await?;
        let want = (before.0 + i as u64 + 1, before.1 + i as u64 + 1);
        eventually(5, "the error counters", || async {
            let now = (a.source_errors().await?, b.source_errors().await?);
            Ok((now == want).then_some(()))
        })
        .await?;
        for p in [&a, &b] {
            assert_eq!(p.routes().await?, Some(table.clone()), "after {text}");
            let log = p.log();
            let line = log
                .lines()
                .find(|l| l.contains(why))
                .ok_or_else(|| format!("no log line about {text}:\n{log}"))?;
            assert!(
                line.contains("ERROR")
                    && line.contains(&format!("ConfigMap {ns}/{NAME}"))
                    && line.contains("routes.json"),
                "{line}"
            );
        }
    }
    assert_eq!(count(&a.tracks(20, &[]).await?, "canary"), 10);

    // The ConfigMap deleted: counted, the routes stay.
    configmaps.delete(NAME, &Default::default()).await?;
    eventually(5, "the deletion's error", || async {
        Ok((a.source_errors().await? == before.0 + 3).then_some(()))
    })
    .await?;
    assert_eq!(a.routes().await?, Some(table.clone()));
    assert!(a.log().contains("the ConfigMap was deleted"), "{}", a.log());

    // The list and the watch were allowed throughout: no read failed.
    for p in [&a, &b] {
        let log = p.log();
        assert!(!log.contains("cannot read ConfigMap"), "{log}");
    }
    a.finish()?;
    b.finish()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_unready_and_all_stable_until_its_configmap_exists() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "proxy-unread").await?;
    grant(env, &ns)?;
    let kubeconfig = service_account_kubeconfig(env, &ns)?;
    let (stable, canary) = (backend("stable").await?, backend("canary").await?);
    let p = ProxyProcess::start(
        env,
        &format!("{ns}-a"),
        &kubeconfig,
        Some(&ns),
        (&stable, &canary),
    )?;
    let not_read = format!("routes not yet read from ConfigMap {ns}/{NAME}\n");
    let ready = eventually(10, "/readyz", || async { p.readyz().await }).await?;
    assert_eq!(ready, (503, not_read.clone()));
    // Let the watch find nothing, then check again: still unready.
    eventually(10, "the missing ConfigMap's error", || async {
        Ok((p.source_errors().await? >= 1).then_some(()))
    })
    .await?;
    assert_eq!(p.readyz().await?, Some((503, not_read.clone())));
    let admin_readyz = http(p.admin, "GET", "/readyz", &[], "").await?;
    assert_eq!(admin_readyz, Some((503, not_read.clone())));
    assert_eq!(
        http(p.admin, "GET", "/routes", &[], "").await?,
        Some((503, not_read))
    );
    assert_eq!(
        http(p.metrics, "GET", "/healthz", &[], "").await?,
        Some((200, "ok\n".into()))
    );
    assert_eq!(count(&p.tracks(20, &[]).await?, "stable"), 20);
    assert!(
        p.log().contains("the ConfigMap does not exist"),
        "{}",
        p.log()
    );

    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let created = Instant::now();
    configmaps
        .create(
            &PostParams::default(),
            &configmap(&ns, r#"{"canaryWeight": 100}"#)?,
        )
        .await?;
    let want = json!({"canaryWeight": 100, "headerRoutes": [], "mirrorPercent": 0});
    all_answer(&[&p], &want).await?;
    let took = created.elapsed();
    println!(
        "ConfigMap created: the replica answers its routes {took:?} after the create was sent"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(p.readyz().await?, Some((200, "ok\n".into())));
    assert_eq!(count(&p.tracks(20, &[]).await?, "canary"), 20);
    p.finish()?;
    Ok(())
}

#[tokio::test]
async fn the_proxy_service_account_may_read_its_configmap_and_nothing_else() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "proxy-rbac").await?;
    grant(env, &ns)?;
    let kubeconfig = service_account_kubeconfig(env, &ns)?;
    let kubeconfig = kubeconfig.to_str().ok_or("a utf-8 path")?;
    let can_i = |args: &[&str]| -> Result<bool, BoxError> {
        let out = Command::new(env.var("KUBECTL")?)
            .args(["--kubeconfig", kubeconfig, "auth", "can-i", "-n", &ns])
            .args(args)
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match said.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(format!(
                "kubectl auth can-i {}: {said} {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into()),
        }
    };
    // resourceNames authorize a list or watch only when it names the
    // object by a field selector, as the proxy's watcher does.
    let kubectl_as_proxy = |args: &[&str]| -> Result<std::process::Output, BoxError> {
        Ok(Command::new(env.var("KUBECTL")?)
            .args(["--kubeconfig", kubeconfig, "-n", &ns])
            .args(args)
            .output()?)
    };
    let selector = format!("metadata.name={NAME}");
    let named = kubectl_as_proxy(&["get", "configmaps", "--field-selector", &selector])?;
    assert!(
        named.status.success(),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
    let all = kubectl_as_proxy(&["get", "configmaps"])?;
    assert!(
        !all.status.success() && String::from_utf8_lossy(&all.stderr).contains("forbidden"),
        "listing every ConfigMap: {}",
        String::from_utf8_lossy(&all.stderr)
    );
    let cm = format!("configmaps/{NAME}");
    for verb in ["get", "list", "watch"] {
        assert!(can_i(&[verb, &cm])?, "{verb} {cm}");
    }
    for (verb, what) in [
        ("update", cm.as_str()),
        ("patch", cm.as_str()),
        ("delete", cm.as_str()),
        ("get", "configmaps/other"),
        ("list", "configmaps"),
        ("create", "configmaps"),
        ("get", "secrets"),
        ("get", &format!("secrets/{NAME}")),
        ("list", "canaries.coalmine.dev"),
        ("get", "canaries.coalmine.dev/web"),
        ("list", "pods"),
    ] {
        assert!(!can_i(&[verb, what])?, "{verb} {what} should be refused");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_errors_are_retried_without_a_crash_or_a_route_change() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "proxy-refused").await?;
    // The ServiceAccount alone: no Role yet, so the API server refuses.
    env.apply(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
                      "metadata": {"name": NAME, "namespace": ns}}))?;
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    configmaps
        .create(
            &PostParams::default(),
            &configmap(&ns, r#"{"canaryWeight": 100}"#)?,
        )
        .await?;
    let kubeconfig = service_account_kubeconfig(env, &ns)?;
    // And one whose API server is not there at all.
    let gone = format!("https://{}", free_port()?);
    let unreachable = kubeconfig_at(env, &ns, &gone, "-unreachable")?;
    let (stable, canary) = (backend("stable").await?, backend("canary").await?);
    let upstreams = (stable.as_str(), canary.as_str());
    let mut refused =
        ProxyProcess::start(env, &format!("{ns}-refused"), &kubeconfig, None, upstreams)?;
    let mut down = ProxyProcess::start(env, &format!("{ns}-down"), &unreachable, None, upstreams)?;
    for p in [&refused, &down] {
        eventually(20, "two watch errors", || async {
            // Nothing listens for the first few milliseconds.
            let n = p.watch_errors().await.unwrap_or(0);
            Ok((n >= 2).then_some(()))
        })
        .await?;
        assert_eq!(p.readyz().await?.map(|r| r.0), Some(503));
        assert_eq!(count(&p.tracks(10, &[]).await?, "stable"), 10);
    }
    assert!(
        refused.running() && down.running(),
        "a watch error ended a proxy"
    );
    assert!(refused.log().contains("forbidden"), "{}", refused.log());
    assert!(
        down.log().contains("retrying with backoff"),
        "{}",
        down.log()
    );

    // Granted, the refused one reads its routes at its next retry.
    grant(env, &ns)?;
    let want = json!({"canaryWeight": 100, "headerRoutes": [], "mirrorPercent": 0});
    let granted = Instant::now();
    eventually(40, "the routes after the grant", || async {
        Ok((refused.routes().await?.as_ref() == Some(&want)).then_some(()))
    })
    .await?;
    println!(
        "granted: the refused replica read its routes {:?} later (kube-runtime's backoff)",
        granted.elapsed()
    );
    assert_eq!(refused.readyz().await?.map(|r| r.0), Some(200));
    assert_eq!(count(&refused.tracks(10, &[]).await?, "canary"), 10);
    assert!(down.running(), "a watch error ended a proxy");
    Ok(())
}
