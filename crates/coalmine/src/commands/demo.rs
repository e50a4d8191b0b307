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
//!
//! The runtime (the apps, the run, the load) is `coalmine_local::demo`;
//! this module picks the scenario's apps, prints along the way, and prints
//! the summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use coalmine_core::Duration;
use coalmine_local::demo::{Apps, Ran};
use coalmine_local::load::Counts;
use coalmine_local::run::{Options, Outcome, View};
use coalmine_local::sample_app::SampleConfig;
use serde::Serialize;

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
            Ok(outcome) => super::run::exit_code(outcome),
            Err(e) => {
                eprintln!("coalmine demo: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Runs the demo: prints what it does, then the summary.
async fn demo(args: &Args) -> Result<Outcome, String> {
    let scenario = args.scenario;
    let stable_cfg = scenario.stable();
    let canary_cfg = scenario.canary();
    let apps = Apps::start(stable_cfg.clone(), canary_cfg.clone(), args.speed).await?;
    if args.show_canary {
        println!("{}", apps.canary_file());
    }
    let options = Options {
        listen: Some(args.listen),
        admin: args.admin,
        metrics_listen: None,
        sticky_secret: None,
        admin_token: None,
        state: None,
        report: args.report.clone(),
        // The demo stops its load first, then the run (`Demo::run`).
        exit_on_finish: false,
        on_finish: None,
        view: View::detect(),
        label: format!("demo ({})", scenario.name()),
    };
    let demo = apps.prepare(options).await?;
    let listen = demo.listen();
    eprintln!(
        "coalmine demo, scenario {}: stable v1 {} , canary v2 {}",
        scenario.name(),
        describe(&stable_cfg),
        describe(&canary_cfg)
    );
    eprintln!(
        "  {} req/s through http://{listen} (try: curl -i http://{listen}/); steps 5% → 25% → 50%, judged every {}",
        args.rps,
        coalmine_local::demo::interval(args.speed),
    );
    eprintln!(
        "  dashboard: http://{}/   ·   watch: coalmine get --admin http://{} --watch   ·   expected: {}",
        demo.admin(),
        demo.admin(),
        outcome_name(scenario.expected())
    );
    let admin = demo.admin();
    let linger = args.keep_serving.then_some(async move {
        eprintln!("  the rollout has ended; the dashboard stays at http://{admin}/ until Ctrl-C");
        super::terminated().await;
    });
    let Ran {
        outcome,
        status,
        counts,
        canary_answers: answers,
        started,
        ended,
    } = demo.run(args.rps, super::terminated(), linger).await?;
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
    fn speeds_from_a_tenth_to_ten() {
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
