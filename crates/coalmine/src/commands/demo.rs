//! `coalmine demo`: the whole story on one machine, nothing to install.
//!
//! Two sample apps (stable `v1` and canary `v2`, in process, on free
//! loopback ports), a Canary file naming them, `coalmine run`'s own code
//! (proxy, rollout, judge) in front, and a load generator sending a steady
//! rate through the proxy. The scenario decides how the canary behaves:
//!
//! - `healthy`: like stable (0.5% errors, 20 ms ± 10 ms) → promoted;
//! - `faulty`: 5% errors → rolled back by the `errors` metric;
//! - `slow`: 80 ms ± 40 ms instead of 20 ms → rolled back by `slow`.
//!
//! The rollout is short (5% → 25% → 50% over about 50 seconds, judged
//! every 2 seconds; `--speed` scales it) and ends with a summary: the
//! outcome, when it happened, and what the canary cost in requests and
//! failed requests. Exit codes are `coalmine run`'s: 0 promoted, 2 rolled
//! back, 1 error or interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use coalmine_core::{Duration, Time};
use serde::Serialize;
use tokio::net::TcpListener;

use super::load::{Counts, Load};
use super::run::{Options, Outcome, View};
use super::sample_app::{SampleConfig, serve};

/// Kept-alive connections of the load generator.
const CONNECTIONS: usize = 32;

/// Arguments of `coalmine demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How the canary behaves: healthy (promoted), faulty (5% errors, rolled
    /// back) or slow (+60 ms, rolled back).
    #[arg(long, value_enum, default_value_t = Scenario::Healthy)]
    scenario: Scenario,
    /// Requests per second sent through the proxy.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=20_000))]
    rps: u32,
    /// Time scale: 2 runs the steps twice as fast (0.1 to 10).
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = parse_speed)]
    speed: f64,
    /// Address the proxy listens on (try `curl` against it while the demo runs).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin API (`coalmine get --admin http://ADDR`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Print the summary as JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Write the final status and the judge's history here as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the Canary file the demo runs (with its real ports) before it starts.
    #[arg(long)]
    show_canary: bool,
    /// After the rollout ends, keep the proxy and the dashboard up (without
    /// load) until interrupted, then print the summary.
    #[arg(long)]
    keep_serving: bool,
}

/// The canary's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Behaves like stable.
    Healthy,
    /// Ten times stable's error rate.
    Faulty,
    /// Slower answers.
    Slow,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "healthy",
            Scenario::Faulty => "faulty",
            Scenario::Slow => "slow",
        }
    }

    fn stable(self) -> SampleConfig {
        SampleConfig {
            version: "v1".into(),
            error_rate: 0.005,
            latency: StdDuration::from_millis(20),
            jitter: StdDuration::from_millis(10),
        }
    }

    fn canary(self) -> SampleConfig {
        let base = SampleConfig {
            version: "v2".into(),
            ..self.stable()
        };
        match self {
            Scenario::Healthy => base,
            Scenario::Faulty => SampleConfig {
                error_rate: 0.05,
                ..base
            },
            Scenario::Slow => SampleConfig {
                latency: StdDuration::from_millis(80),
                jitter: StdDuration::from_millis(40),
                ..base
            },
        }
    }

    fn expected(self) -> Outcome {
        match self {
            Scenario::Healthy => Outcome::Promoted,
            Scenario::Faulty | Scenario::Slow => Outcome::RolledBack,
        }
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    let f: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number; use e.g. 2 to run twice as fast"))?;
    if !(0.1..=10.0).contains(&f) {
        return Err(format!("{s} is outside 0.1 to 10"));
    }
    Ok(f)
}

/// `d` at the demo's speed, in whole milliseconds, at least `floor`.
fn scaled(d: StdDuration, speed: f64, floor: StdDuration) -> Duration {
    let ms = (d.as_secs_f64() * 1000.0 / speed).round().max(1.0) as u64;
    Duration::from_millis(ms.max(u64::try_from(floor.as_millis()).unwrap_or(u64::MAX)))
}

/// The Canary file the demo runs: the same format as `coalmine run`'s.
fn canary_file(stable: SocketAddr, canary: SocketAddr, speed: f64) -> String {
    let s = |secs| scaled(StdDuration::from_secs(secs), speed, StdDuration::ZERO);
    // The validator's lower bound for the analysis interval is 1s.
    let interval = scaled(StdDuration::from_secs(2), speed, StdDuration::from_secs(1));
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

/// What the demo prints at the end.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    scenario: &'static str,
    outcome: &'static str,
    /// Whether the outcome is the scenario's expected one.
    as_expected: bool,
    /// From the start of the rollout to its end.
    seconds: f64,
    /// From the first canary answer to the rollback (traffic all on stable).
    seconds_to_rollback: Option<f64>,
    /// Why it was rolled back.
    reason: Option<String>,
    /// Milliseconds from the rollback to the last canary answer (requests
    /// in flight then); negative when the last one came before.
    last_canary_after_rollback_ms: Option<i64>,
    requests: Counts,
    rps: u32,
    /// The judge's last word per metric, e.g. `errors: Fail (ratio 7.35, e 177 of 40)`.
    judge: Vec<String>,
}

/// Runs the demo.
pub fn run(args: Args) -> ExitCode {
    super::init_logs();
    let Some(runtime) = super::runtime("demo") else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        match demo(&args).await {
            Ok(outcome) => outcome.exit_code(),
            Err(e) => {
                eprintln!("coalmine demo: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn app(
    config: SampleConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, String> {
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

async fn demo(args: &Args) -> Result<Outcome, String> {
    let scenario = args.scenario;
    let (stop_apps, apps_stopped) = tokio::sync::watch::channel(false);
    let stable_cfg = scenario.stable();
    let canary_cfg = scenario.canary();
    let stable = app(stable_cfg.clone(), apps_stopped.clone()).await?;
    let canary_addr = app(canary_cfg.clone(), apps_stopped).await?;
    let text = canary_file(stable, canary_addr, args.speed);
    if args.show_canary {
        println!("{text}");
    }
    let (canary, plan, _) = coalmine_core::validate::load(&text).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!(
            "the demo's own Canary is invalid (a bug): {}",
            lines.join("; ")
        )
    })?;
    let view = View::detect();
    let (finish_tx, mut finish_rx) = tokio::sync::mpsc::unbounded_channel();
    let options = Options {
        listen: Some(args.listen),
        admin: args.admin,
        metrics_listen: None,
        sticky_secret: None,
        admin_token: None,
        state: None,
        report: args.report.clone(),
        // The demo stops its load first, then the run (see `stop` below).
        exit_on_finish: false,
        on_finish: Some(finish_tx),
        view,
        label: format!("demo ({})", scenario.name()),
    };
    let prepared = super::run::prepare(canary, plan, options).await?;
    let listen = prepared.listen();
    eprintln!(
        "coalmine demo, scenario {}: stable v1 {} , canary v2 {}",
        scenario.name(),
        describe(&stable_cfg),
        describe(&canary_cfg)
    );
    eprintln!(
        "  {} req/s through http://{listen} (try: curl -i http://{listen}/); steps 5% → 25% → 50%, judged every {}",
        args.rps,
        scaled(
            StdDuration::from_secs(2),
            args.speed,
            StdDuration::from_secs(1)
        ),
    );
    eprintln!(
        "  dashboard: http://{}/   ·   watch: coalmine get --admin http://{} --watch   ·   expected: {}",
        prepared.admin(),
        prepared.admin(),
        outcome_name(scenario.expected())
    );
    let mut load = Load::start(listen, args.rps, CONNECTIONS);
    let started = Time::now();
    let (counts_tx, counts_rx) = tokio::sync::oneshot::channel();
    // When the rollout ends (or on Ctrl-C) the load stops while the proxy
    // still serves, so no request fails for the demo's own shutdown.
    let keep_serving = args.keep_serving;
    let admin = prepared.admin();
    let stop = async move {
        let interrupted = tokio::select! {
            _ = finish_rx.recv() => false,
            _ = super::terminated() => true,
        };
        let ended = Time::now();
        let counts = load.stop().await;
        let _ = counts_tx.send((counts, load.canary_answers(), ended));
        if keep_serving && !interrupted {
            eprintln!(
                "  the rollout has ended; the dashboard stays at http://{admin}/ until Ctrl-C"
            );
            super::terminated().await;
        }
    };
    let finished = prepared.run(stop).await;
    let _ = stop_apps.send(true);
    let (outcome, status) = finished?;
    let (counts, answers, ended) = counts_rx
        .await
        .map_err(|_| "the load generator did not report".to_string())?;
    let rollback_at = status
        .rollback
        .as_ref()
        .filter(|_| outcome == Outcome::RolledBack);
    let summary = Summary {
        scenario: scenario.name(),
        outcome: outcome_name(outcome),
        as_expected: outcome == scenario.expected(),
        seconds: secs(ended.since(started)),
        seconds_to_rollback: rollback_at
            .zip(answers)
            .map(|(r, (first, _))| secs(r.at.since(first))),
        reason: rollback_at.map(|r| r.message.clone()),
        last_canary_after_rollback_ms: rollback_at
            .zip(answers)
            .map(|(r, (_, last))| last.unix_millis() - r.at.unix_millis()),
        requests: counts,
        rps: args.rps,
        judge: status
            .analysis
            .iter()
            .flat_map(|a| &a.metrics)
            .map(|m| {
                let mut line = format!("{}: {:?}", m.name, m.verdict);
                let mut facts = Vec::new();
                if let Some(r) = m.ratio {
                    facts.push(format!("ratio {}", coalmine_core::human::ratio(r)));
                }
                if let (Some(e), Some(t)) = (m.e_value, m.e_threshold) {
                    facts.push(format!(
                        "evidence {} of {}",
                        coalmine_core::human::evidence(e),
                        coalmine_core::human::evidence(t)
                    ));
                }
                if !facts.is_empty() {
                    line.push_str(&format!(" ({})", facts.join(", ")));
                }
                line
            })
            .collect(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print!("{}", text_summary(&summary));
    }
    Ok(outcome)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn describe(c: &SampleConfig) -> String {
    format!(
        "({}% errors, {} ms ± {} ms)",
        c.error_rate * 100.0,
        c.latency.as_millis(),
        c.jitter.as_millis()
    )
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Promoted => "promoted",
        Outcome::RolledBack => "rolled back",
        Outcome::Stopped => "stopped",
    }
}

fn text_summary(s: &Summary) -> String {
    let c = &s.requests;
    let mut out = format!(
        "\nsummary: the {} canary was {} after {:.1} s{}\n",
        s.scenario,
        s.outcome,
        s.seconds,
        if s.as_expected {
            ""
        } else {
            " (NOT what this scenario should do)"
        }
    );
    if let Some(t) = s.seconds_to_rollback {
        out.push_str(&format!(
            "  rolled back {t:.1} s after the first canary request\n"
        ));
    }
    if let Some(r) = &s.reason {
        out.push_str(&format!("  why: {r}\n"));
    }
    if !s.judge.is_empty() {
        out.push_str(&format!("  judge: {}\n", s.judge.join(" · ")));
    }
    out.push_str(&format!(
        "  canary: {} requests, {} failed · stable: {} requests, {} failed\n",
        c.canary.requests, c.canary.failed, c.stable.requests, c.stable.failed
    ));
    if c.errors + c.dropped > 0 {
        out.push_str(&format!(
            "  not answered: {} · not sent (load generator behind): {}\n",
            c.errors, c.dropped
        ));
    }
    if let Some(ms) = s.last_canary_after_rollback_ms.filter(|ms| *ms > 0) {
        out.push_str(&format!(
            "  the last canary answer came {ms} ms after the rollback (a request already in flight)\n"
        ));
    }
    out
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
        assert!(parse_speed("0").is_err());
        assert!(parse_speed("fast").is_err());
        assert_eq!(parse_speed("2"), Ok(2.0));
    }

    #[test]
    fn scenarios_differ_only_where_they_say() {
        let h = Scenario::Healthy;
        assert_eq!(h.canary().error_rate, h.stable().error_rate);
        assert_eq!(h.canary().latency, h.stable().latency);
        assert!(Scenario::Faulty.canary().error_rate >= 10.0 * h.stable().error_rate);
        assert!(Scenario::Slow.canary().latency > h.stable().latency);
        assert_eq!(Scenario::Slow.canary().error_rate, h.stable().error_rate);
    }
}
