//! Helpers shared by the integration tests: a server per test, a kube-rs
//! client for it, raw HTTP requests, and a bound on each test's time.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use coalmine_fakekube::{FakeApiServer, Options};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Result of the tests.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Options with short delays for tests.
pub fn fast_options() -> Options {
    let mut o = Options::default();
    o.deployment_ready_delay = Duration::from_millis(200);
    o.bookmark_interval = Duration::from_millis(200);
    o
}

/// A server and a kube-rs client for it, configured through its kubeconfig.
pub async fn start(
    opts: Options,
) -> Result<(FakeApiServer, Client), Box<dyn std::error::Error + Send + Sync>> {
    let server = FakeApiServer::start(opts).await?;
    let kc = Kubeconfig::from_yaml(&server.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    Ok((server, client))
}

/// Runs a test body with a time limit.
pub async fn bounded<F: Future<Output = TestResult>>(secs: u64, f: F) -> TestResult {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(r) => r,
        Err(_) => Err(format!("test took longer than {secs} s").into()),
    }
}

/// The HTTP status code of a kube-rs error, if the server answered.
pub fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Sends one raw HTTP/1.1 request and returns (status, body).
pub async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), Box<dyn std::error::Error + Send + Sync>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
