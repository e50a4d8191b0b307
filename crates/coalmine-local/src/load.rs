//! The demo's load generator: a steady request rate through the proxy,
//! counted per track from the proxy's `x-coalmine-track` answer header.
//!
//! Open loop, as real users are: a ticker hands out permits at the target
//! rate and a fixed set of kept-alive connections take them, so a slow
//! canary does not slow the arrival of requests (which a closed loop
//! would, hiding the slowness it should reveal). When every connection is
//! busy the backlog grows up to a second's worth of requests; beyond that
//! requests are counted as `dropped` instead of sent late in a burst.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use coalmine_core::Time;
use http::Method;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::Connection;

/// The header the proxy sets on every answer.
const TRACK_HEADER: &str = "x-coalmine-track";
/// How often the ticker hands out permits.
const TICK: Duration = Duration::from_millis(10);
/// A request not answered by then is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts for one track.
#[derive(Debug, Default)]
struct TrackCounters {
    requests: AtomicU64,
    failed: AtomicU64,
}

/// What the generator saw so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackCount {
    /// Answers from this track.
    pub requests: u64,
    /// Of which 5xx.
    pub failed: u64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Answered by stable.
    pub stable: TrackCount,
    /// Answered by the canary.
    pub canary: TrackCount,
    /// No answer: connection refused or reset, or a timeout.
    pub errors: u64,
    /// Answers without the proxy's track header (not through a proxy).
    pub untracked: u64,
    /// Not sent: every connection was busy and the backlog was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Shared {
    stable: TrackCounters,
    canary: TrackCounters,
    errors: AtomicU64,
    untracked: AtomicU64,
    dropped: AtomicU64,
    /// Unix milliseconds of the first and the last canary answer (0: none).
    first_canary: AtomicI64,
    last_canary: AtomicI64,
}

/// A running load generator.
pub struct Load {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Load {
    /// Starts sending `rps` requests per second to `target` over
    /// `connections` kept-alive connections.
    pub fn start(target: SocketAddr, rps: u32, connections: usize) -> Load {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(0));
        let mut tasks = JoinSet::new();
        let backlog = (rps as usize).max(connections);
        tasks.spawn(ticker(
            rps,
            backlog,
            permits.clone(),
            shared.clone(),
            stopped.clone(),
        ));
        let host = target.to_string();
        for _ in 0..connections.max(1) {
            tasks.spawn(worker(
                target,
                host.clone(),
                permits.clone(),
                shared.clone(),
                stopped.clone(),
            ));
        }
        Load {
            shared,
            stop,
            tasks,
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let track = |t: &TrackCounters| TrackCount {
            requests: t.requests.load(Ordering::Relaxed),
            failed: t.failed.load(Ordering::Relaxed),
        };
        Counts {
            stable: track(&self.shared.stable),
            canary: track(&self.shared.canary),
            errors: self.shared.errors.load(Ordering::Relaxed),
            untracked: self.shared.untracked.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }

    /// When the first and the last answer from the canary arrived.
    pub fn canary_answers(&self) -> Option<(Time, Time)> {
        let first = self.shared.first_canary.load(Ordering::Relaxed);
        let last = self.shared.last_canary.load(Ordering::Relaxed);
        (first != 0).then(|| (Time::from_unix_millis(first), Time::from_unix_millis(last)))
    }

    /// Stops sending, waits for the requests in flight, returns the counts.
    pub async fn stop(&mut self) -> Counts {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.counts()
    }
}

async fn ticker(
    rps: u32,
    backlog: usize,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut issued: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        // Owed since the start, so rounding never drifts the rate.
        let due = (start.elapsed().as_secs_f64() * f64::from(rps)) as u64;
        let n = due.saturating_sub(issued);
        issued = due;
        for _ in 0..n {
            if permits.available_permits() >= backlog {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                permits.add_permits(1);
            }
        }
    }
}

async fn worker(
    target: SocketAddr,
    host: String,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut conn: Option<Connection> = None;
    loop {
        let permit = tokio::select! {
            p = permits.acquire() => p,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match permit {
            Ok(p) => p.forget(),
            Err(_) => return,
        }
        if conn.as_ref().is_none_or(|c| !c.is_open()) {
            conn = Connection::open(target, &host).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            // Don't spin on a refused connection.
            tokio::time::sleep(TICK).await;
            continue;
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, c.send(Method::GET, "/", None)).await;
        let resp = match answer {
            Ok(Ok(resp)) => resp,
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
                continue;
            }
        };
        let counters = match resp.headers().get(TRACK_HEADER).map(|v| v.as_bytes()) {
            Some(b"stable") => &shared.stable,
            Some(b"canary") => {
                let now = Time::now().unix_millis();
                let _ = shared.first_canary.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                shared.last_canary.fetch_max(now, Ordering::Relaxed);
                &shared.canary
            }
            _ => {
                shared.untracked.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        if resp.status().is_server_error() {
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample_app::{SampleConfig, serve};

    /// Against a sample app directly (no proxy, so no track header): the
    /// rate is kept.
    #[tokio::test]
    async fn keeps_the_rate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = tokio::spawn(serve(
            listener,
            SampleConfig {
                version: "v1".into(),
                error_rate: 0.0,
                latency: Duration::ZERO,
                jitter: Duration::ZERO,
            },
            async {
                let _ = rx.await;
            },
        ));
        let mut load = Load::start(addr, 200, 4);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let counts = load.stop().await;
        let _ = tx.send(());
        let _ = app.await;
        // 200 per second for one second, give or take the ticks at the ends.
        assert!(
            (150..=230).contains(&counts.untracked),
            "answered {} in 1 s at 200/s",
            counts.untracked
        );
        assert_eq!(counts.errors, 0);
        assert_eq!(counts.stable, TrackCount::default());
        assert_eq!(counts.dropped, 0);
    }
}
