//! Health of `coalmine run`'s upstreams while a rollout runs.
//!
//! In Kubernetes the canary's readiness comes from its pods; in local mode
//! it comes from here. Every second each upstream is checked: a TCP
//! connection, or with `spec.upstreams.healthPath` a `GET` of that path
//! that must answer 2xx or 3xx within a second. From the checks:
//!
//! - the canary is *ready* when every canary server passed its last check
//!   (an unready canary holds the rollout; `progressDeadline` applies);
//! - the canary is *down* when every canary server failed
//!   [`DOWN_AFTER`] checks in a row: the rollout rolls back at once with
//!   that reason, since its share of users is being failed;
//! - stable is *down* the same way: the run pauses the rollout, because
//!   judging against a stable that does not answer says nothing.
//!
//! One failed check is not an outage (a restart, a full accept queue), so
//! both "down" findings wait for [`DOWN_AFTER`] failures in a row.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Time between two checks of one upstream.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed checks in a row after which a version counts as down.
pub const DOWN_AFTER: u32 = 3;

/// What the checks found, for the rollout loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Every canary server passed its last check.
    pub canary_ready: bool,
    /// Every canary server failed [`DOWN_AFTER`] checks in a row: why.
    pub canary_down: Option<String>,
    /// Every stable server failed [`DOWN_AFTER`] checks in a row: why.
    pub stable_down: Option<String>,
}

impl Default for Health {
    /// Before the first round: the servers answered when the run started.
    fn default() -> Self {
        Health {
            canary_ready: true,
            canary_down: None,
            stable_down: None,
        }
    }
}

/// One upstream's recent checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its base URL, as in the Canary file.
    pub url: String,
    /// Failed checks in a row (0 after a pass).
    pub failures: u32,
    /// What the last failed check saw.
    pub last_error: Option<String>,
}

impl Upstream {
    fn new(url: &str) -> Upstream {
        Upstream {
            url: url.to_owned(),
            failures: 0,
            last_error: None,
        }
    }

    fn record(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.failures = 0;
                self.last_error = None;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(e);
            }
        }
    }
}

/// The finding for both versions from their servers' recent checks.
pub fn assess(stable: &[Upstream], canary: &[Upstream]) -> Health {
    Health {
        canary_ready: canary.iter().all(|u| u.failures == 0),
        canary_down: down("canary", canary),
        stable_down: down("stable", stable),
    }
}

/// `Some(why)` when every server of a version has failed enough checks.
fn down(version: &str, servers: &[Upstream]) -> Option<String> {
    if servers.is_empty() || servers.iter().any(|u| u.failures < DOWN_AFTER) {
        return None;
    }
    let each: Vec<String> = servers
        .iter()
        .map(|u| {
            format!(
                "{}: {}",
                u.url,
                u.last_error.as_deref().unwrap_or("check failed")
            )
        })
        .collect();
    Some(format!(
        "{version} unreachable: {} ({} checks in a row, {} s apart)",
        each.join("; "),
        DOWN_AFTER,
        CHECK_EVERY.as_secs()
    ))
}

/// Checks the servers every [`CHECK_EVERY`] until `stop` is set; the
/// receiver always holds the latest finding.
pub fn watch(
    stable: &[String],
    canary: &[String],
    health_path: Option<String>,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<Health> {
    let (tx, rx) = watch::channel(Health::default());
    let mut stable: Vec<Upstream> = stable.iter().map(|u| Upstream::new(u)).collect();
    let mut canary: Vec<Upstream> = canary.iter().map(|u| Upstream::new(u)).collect();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for u in stable.iter_mut().chain(canary.iter_mut()) {
                let result = check(&u.url, health_path.as_deref()).await;
                u.record(result);
            }
            tx.send_if_modified(|h| {
                let next = assess(&stable, &canary);
                let changed = *h != next;
                *h = next;
                changed
            });
        }
    });
    rx
}

/// One check: a connection, and the health path's answer when there is one.
pub async fn check(url: &str, health_path: Option<&str>) -> Result<(), String> {
    let authority = authority(url)?;
    let addr: SocketAddr = match tokio::net::lookup_host(&authority).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{authority} has no address"))?,
        Err(e) => return Err(format!("cannot resolve {authority}: {e}")),
    };
    let stream = match tokio::time::timeout(CHECK_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(connect_error(&e)),
        Err(_) => {
            return Err(format!(
                "no connection within {} s",
                CHECK_TIMEOUT.as_secs()
            ));
        }
    };
    let Some(path) = health_path else {
        return Ok(());
    };
    match tokio::time::timeout(CHECK_TIMEOUT, get(stream, &authority, path)).await {
        Ok(Ok(code)) if code < 400 => Ok(()),
        Ok(Ok(code)) => Err(format!("GET {path} answered {code}")),
        Ok(Err(e)) => Err(format!("GET {path} failed: {e}")),
        Err(_) => Err(format!(
            "GET {path} did not answer within {} s",
            CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// The status code of `GET path` on a fresh connection.
async fn get(stream: TcpStream, authority: &str, path: &str) -> Result<u16, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, authority)
        .header("user-agent", "coalmine-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

/// `host:port` of an `http://` base URL (port 80 when it has none).
pub fn authority(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    // An IPv6 literal carries colons of its own: `[::1]` has no port.
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    Ok(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(url: &str, n: u32) -> Upstream {
        Upstream {
            url: url.into(),
            failures: n,
            last_error: (n > 0).then(|| "connection refused".into()),
        }
    }

    #[test]
    fn one_failure_makes_the_canary_unready_but_not_down() {
        let h = assess(&[failed("http://s", 0)], &[failed("http://c", 1)]);
        assert!(!h.canary_ready);
        assert_eq!(h.canary_down, None);
        assert_eq!(h.stable_down, None);
    }

    #[test]
    fn down_after_enough_failures_of_every_server() {
        let h = assess(
            &[failed("http://s", 0)],
            &[failed("http://c1", DOWN_AFTER), failed("http://c2", 1)],
        );
        assert_eq!(h.canary_down, None, "one canary server still answers");
        let h = assess(
            &[failed("http://s", DOWN_AFTER)],
            &[failed("http://c1", DOWN_AFTER), failed("http://c2", 7)],
        );
        assert_eq!(
            h.canary_down.as_deref(),
            Some(
                "canary unreachable: http://c1: connection refused; http://c2: connection refused (3 checks in a row, 1 s apart)"
            )
        );
        assert!(
            h.stable_down
                .as_deref()
                .is_some_and(|s| s.starts_with("stable unreachable: http://s:"))
        );
    }

    #[test]
    fn a_pass_resets_the_count() {
        let mut u = Upstream::new("http://c");
        for _ in 0..5 {
            u.record(Err("connection refused".into()));
        }
        u.record(Ok(()));
        assert_eq!(u, Upstream::new("http://c"));
        assert!(assess(&[], &[u]).canary_ready);
    }

    #[test]
    fn authorities() {
        assert_eq!(
            authority("http://127.0.0.1:9001").as_deref(),
            Ok("127.0.0.1:9001")
        );
        assert_eq!(
            authority("http://localhost/app").as_deref(),
            Ok("localhost:80")
        );
        assert_eq!(authority("http://[::1]").as_deref(), Ok("[::1]:80"));
        assert_eq!(
            authority("http://[::1]:9001/x").as_deref(),
            Ok("[::1]:9001")
        );
        assert!(authority("https://x").is_err());
    }

    #[tokio::test]
    async fn checks_against_real_sockets() {
        // A port nobody listens on: bind, read the port, close.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let refused = check(&format!("http://{closed}"), None).await;
        assert_eq!(refused, Err("connection refused".into()));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let answer = if head.starts_with("GET /healthz ") {
                        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        let url = format!("http://{addr}");
        assert_eq!(check(&url, None).await, Ok(()));
        assert_eq!(check(&url, Some("/healthz")).await, Ok(()));
        assert_eq!(
            check(&url, Some("/ready")).await,
            Err("GET /ready answered 503".into())
        );
    }
}
