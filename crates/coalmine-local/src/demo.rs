//! The runtime of `coalmine demo`: two sample apps (in process, on free
//! loopback ports), a Canary file naming them, [`crate::run`]'s own code
//! (proxy, rollout, judge) in front, and a load generator sending a steady
//! rate through the proxy. The binary picks the apps' behaviour (the
//! scenario), prints along the way and summarises what [`Demo::run`]
//! returns.
//!
//! The rollout is short (5% → 25% → 50% over about 50 seconds, judged
//! every 2 seconds; the speed scales it). The load stops when the rollout
//! ends, before the proxy, so the demo's own shutdown fails no request.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use coalmine_core::status::CanaryStatus;
use coalmine_core::{Duration, Time};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::load::{Counts, Load};
use crate::run::{Options, Outcome, Prepared};
use crate::sample_app::{SampleConfig, serve};

/// Kept-alive connections of the load generator.
const CONNECTIONS: usize = 32;

/// `d` at the demo's speed, in whole milliseconds, at least `floor`.
pub fn scaled(d: StdDuration, speed: f64, floor: StdDuration) -> Duration {
    let ms = (d.as_secs_f64() * 1000.0 / speed).round().max(1.0) as u64;
    Duration::from_millis(ms.max(u64::try_from(floor.as_millis()).unwrap_or(u64::MAX)))
}

/// The analysis interval at the demo's speed: 2 seconds at speed 1, never
/// below the validator's lower bound of 1 second.
pub fn interval(speed: f64) -> Duration {
    scaled(StdDuration::from_secs(2), speed, StdDuration::from_secs(1))
}

/// The Canary file the demo runs: the same format as `coalmine run`'s.
pub fn canary_file(stable: SocketAddr, canary: SocketAddr, speed: f64) -> String {
    let s = |secs| scaled(StdDuration::from_secs(secs), speed, StdDuration::ZERO);
    let interval = interval(speed);
    format!(
        "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata:
  name: demo
spec:
  upstreams:
    stable: [http://{stable}]
    canary: [http://{canary}]
  steps:
    - setWeight: 5
    - pause: {{duration: {p1}}}
    - setWeight: 25
    - pause: {{duration: {p2}}}
    - setWeight: 50
    - pause: {{duration: {p3}}}
  analysis:
    interval: {interval}
    alpha: 0.05
    metrics:
      - name: errors
        builtin: errors
      - name: slow
        builtin: latency
        slowerThan: 100ms
",
        p1 = s(15),
        p2 = s(15),
        p3 = s(20),
    )
}

/// Starts a sample app on a free loopback port until `stop` turns true.
async fn app(config: SampleConfig, stop: watch::Receiver<bool>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start the {} sample app: {e}", config.version))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("sample app {}: {e}", config.version))?;
    tokio::spawn(serve(listener, config, async move {
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await;
    }));
    Ok(addr)
}

/// The two sample apps, serving, and the Canary file that names them.
pub struct Apps {
    stop: watch::Sender<bool>,
    text: String,
}

impl Apps {
    /// Starts stable's and the canary's apps; the Canary file's steps run
    /// at `speed`.
    pub async fn start(
        stable: SampleConfig,
        canary: SampleConfig,
        speed: f64,
    ) -> Result<Apps, String> {
        let (stop, stopped) = watch::channel(false);
        let stable = app(stable, stopped.clone()).await?;
        let canary = app(canary, stopped).await?;
        Ok(Apps {
            stop,
            text: canary_file(stable, canary, speed),
        })
    }

    /// The Canary file the demo runs, with the apps' real ports.
    pub fn canary_file(&self) -> &str {
        &self.text
    }

    /// Loads the Canary file and prepares its run ([`crate::run::prepare`])
    /// with `options`, whose `on_finish` and `exit_on_finish` the demo sets:
    /// it stops its load first, then the run.
    pub async fn prepare(self, mut options: Options) -> Result<Demo, String> {
        let (canary, plan, _) = coalmine_core::validate::load(&self.text).map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            format!(
                "the demo's own Canary is invalid (a bug): {}",
                lines.join("; ")
            )
        })?;
        let (finish_tx, finished) = mpsc::unbounded_channel();
        options.exit_on_finish = false;
        options.on_finish = Some(finish_tx);
        let prepared = crate::run::prepare(canary, plan, options).await?;
        Ok(Demo {
            apps: self,
            prepared,
            finished,
        })
    }
}

/// A demo whose apps serve and whose run is bound, not yet started.
pub struct Demo {
    apps: Apps,
    prepared: Prepared,
    finished: mpsc::UnboundedReceiver<Outcome>,
}

/// How a demo went.
#[derive(Debug)]
pub struct Ran {
    /// How the rollout ended.
    pub outcome: Outcome,
    /// The rollout's last status.
    pub status: CanaryStatus,
    /// What the load generator counted.
    pub counts: Counts,
    /// When the first and the last answer from the canary arrived.
    pub canary_answers: Option<(Time, Time)>,
    /// When the load started.
    pub started: Time,
    /// When the rollout ended (or the demo was interrupted).
    pub ended: Time,
}

impl Demo {
    /// The address traffic goes to.
    pub fn listen(&self) -> SocketAddr {
        self.prepared.listen()
    }

    /// The admin API's address (and the dashboard's).
    pub fn admin(&self) -> SocketAddr {
        self.prepared.admin()
    }

    /// Sends `rps` requests per second through the proxy while the rollout
    /// runs. When it ends (or `interrupted` completes) the load stops while
    /// the proxy still serves; then, if the rollout ended and `linger` is
    /// given, the proxy and the dashboard stay up until `linger` completes.
    pub async fn run(
        self,
        rps: u32,
        interrupted: impl Future<Output = ()>,
        linger: Option<impl Future<Output = ()>>,
    ) -> Result<Ran, String> {
        let Demo {
            apps,
            prepared,
            mut finished,
        } = self;
        let mut load = Load::start(prepared.listen(), rps, CONNECTIONS);
        let started = Time::now();
        let (counts_tx, counts_rx) = tokio::sync::oneshot::channel();
        let stop = async move {
            let interrupted = tokio::select! {
                _ = finished.recv() => false,
                _ = interrupted => true,
            };
            let ended = Time::now();
            let counts = load.stop().await;
            let _ = counts_tx.send((counts, load.canary_answers(), ended));
            if let Some(linger) = linger
                && !interrupted
            {
                linger.await;
            }
        };
        let finished = prepared.run(stop).await;
        let _ = apps.stop.send(true);
        let (outcome, status) = finished?;
        let (counts, canary_answers, ended) = counts_rx
            .await
            .map_err(|_| "the load generator did not report".to_string())?;
        Ok(Ran {
            outcome,
            status,
            counts,
            canary_answers,
            started,
            ended,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_canary_is_valid_at_every_speed() {
        let a: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:9002".parse().expect("addr");
        for speed in [0.1, 1.0, 2.5, 10.0] {
            let text = canary_file(a, b, speed);
            let loaded = coalmine_core::validate::load(&text);
            assert!(loaded.is_ok(), "speed {speed}: {:?}", loaded.err());
        }
    }

    #[test]
    fn speed_scales_pauses_but_not_below_the_interval_floor() {
        let one = StdDuration::from_secs(1);
        assert_eq!(
            scaled(StdDuration::from_secs(15), 1.0, StdDuration::ZERO).to_string(),
            "15s"
        );
        assert_eq!(
            scaled(StdDuration::from_secs(15), 2.0, StdDuration::ZERO).to_string(),
            "7s500ms"
        );
        assert_eq!(
            scaled(StdDuration::from_secs(2), 10.0, one).to_string(),
            "1s"
        );
    }
}
