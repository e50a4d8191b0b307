//! `coalmine simulate`: the judge and the peers' rules on simulated
//! traffic; prints false-rollback and detection figures as a table or JSON.

use std::process::ExitCode;

use coalmine_analysis::simulate::{LatencyModel, Method, Report, Scenario, simulate};
use coalmine_core::Duration;

/// Arguments of `coalmine simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests per second to each version.
    #[arg(long, default_value_t = 10.0)]
    rps: f64,
    /// Stable's error rate, as a fraction (0.005) or a percentage (0.5%).
    #[arg(long, default_value = "0.5%")]
    baseline_errors: String,
    /// The canary's error rate.
    #[arg(long, default_value = "0.5%")]
    canary_errors: String,
    /// Length of each run.
    #[arg(long, default_value = "60m")]
    duration: Duration,
    /// Analysis interval.
    #[arg(long, default_value = "10s")]
    interval: Duration,
    /// Number of runs.
    #[arg(long, default_value_t = 1000)]
    runs: u64,
    /// Seed: the same seed gives the same results.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Lognormal sigma of stable's per-minute error rate (mean kept).
    #[arg(long, default_value_t = 0.0)]
    noise_stable: f64,
    /// Lognormal sigma of the canary's per-minute error rate (mean kept).
    #[arg(long, default_value_t = 0.0)]
    noise_canary: f64,
    /// Incidents on both versions: per-minute probability and error factor, e.g. 0.05:5.
    #[arg(long, value_name = "PROB:FACTOR")]
    incidents: Option<String>,
    /// A daily traffic swing (0.2x to 1.8x) compressed into each run.
    #[arg(long)]
    diurnal: bool,
    /// Stable's latency, e.g. lognormal:80ms:0.5.
    #[arg(long)]
    baseline_latency: Option<String>,
    /// The canary's latency, e.g. lognormal:88ms:0.5 or lognormal:80ms:0.5+300ms@5%.
    #[arg(long)]
    canary_latency: Option<String>,
    /// A request slower than this is slow.
    #[arg(long, default_value = "300ms")]
    slower_than: Duration,
    /// False-rollback budget of coalmine and the mSPRT.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// coalmine's tolerance: canary rate above maxRatio x stable's is a regression.
    #[arg(long, default_value_t = 1.0)]
    max_ratio: f64,
    /// The plan's weight steps, WEIGHT@TIME comma-separated, e.g.
    /// 5%@0m,25%@10m,50%@20m (the versions then share 2 x --rps by weight).
    #[arg(long)]
    steps: Option<String>,
    /// When the canary's error rate becomes --canary-errors (before: stable's).
    #[arg(long, default_value = "0s")]
    onset: Duration,
    /// How long each wobble (--noise-stable, --noise-canary) lasts before it is redrawn.
    #[arg(long, default_value = "60s")]
    noise_period: Duration,
    /// Requests routed to the canary by header or cookie, outside the weight, e.g. 3%.
    #[arg(long, default_value = "0%")]
    header_share: String,
    /// Prometheus-style extrapolated counts: each interval's counts scaled by up to this factor.
    #[arg(long, default_value_t = 1.0)]
    extrapolation: f64,
    /// Latency drift common to both versions over the run, e.g. 10%.
    #[arg(long, default_value = "0%")]
    latency_drift: String,
    /// The replicas router's per-connection share noise: requests over this many
    /// client connections, each pinned to a version for a minute (0: off).
    #[arg(long, default_value_t = 0)]
    connections: u64,
    /// Runs each line of a scenario matrix file (NAME: FLAGS) and prints a Markdown table.
    #[arg(long, value_name = "FILE")]
    matrix: Option<std::path::PathBuf>,
    /// Methods to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "coalmine,coalmine-plain,threshold,flagger,mann-whitney,kayenta,msprt"
    )]
    methods: Vec<String>,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    format: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs the simulation and prints the report.
pub fn run(args: &Args) -> ExitCode {
    if let Some(path) = &args.matrix {
        return match run_matrix(args, path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("coalmine simulate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match build(args) {
        Ok((scenario, methods, json)) => {
            let threads = args
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let started = std::time::Instant::now();
            let report = simulate(&scenario, &methods, args.runs, args.seed, threads);
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("coalmine simulate: cannot write JSON: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print_table(&report);
                eprintln!(
                    "{} runs of {} in {:.1}s",
                    report.runs,
                    args.duration,
                    started.elapsed().as_secs_f64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coalmine simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build(args: &Args) -> Result<(Scenario, Vec<Method>, bool), String> {
    let json = match args.format.as_str() {
        "json" => true,
        "table" => false,
        other => return Err(format!("--format: `{other}` is not table or json")),
    };
    let methods = args
        .methods
        .iter()
        .map(|m| Method::parse(m.trim()).map_err(|e| format!("--methods: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if methods.is_empty() {
        return Err("--methods: name at least one method".into());
    }
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("--{name}: must be a number above 0, got {v}"))
        }
    };
    let sigma = |name: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("--{name}: must be a number >= 0, got {v}"))
        }
    };
    let interval_secs = args.interval.as_millis() / 1000;
    if interval_secs == 0
        || !args.interval.as_millis().is_multiple_of(1000)
        || !60u64.is_multiple_of(interval_secs)
    {
        return Err(format!(
            "--interval: {} must be whole seconds dividing a minute, e.g. 10s",
            args.interval
        ));
    }
    if args.duration.as_millis() < 60_000 || !args.duration.as_millis().is_multiple_of(60_000) {
        return Err(format!(
            "--duration: {} must be whole minutes, e.g. 60m",
            args.duration
        ));
    }
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        return Err(format!(
            "--alpha: must be between 0 and 1, got {}",
            args.alpha
        ));
    }
    let latency = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(LatencyModel::parse)
            .transpose()
            .map_err(|e| format!("--{name}: {e}"))
    };
    let baseline_latency = latency("baseline-latency", &args.baseline_latency)?;
    let canary_latency = latency("canary-latency", &args.canary_latency)?;
    if baseline_latency.is_some() != canary_latency.is_some() {
        return Err("--baseline-latency and --canary-latency go together: give both".into());
    }
    let incidents = args
        .incidents
        .as_deref()
        .map(|text| {
            let parsed = text.split_once(':').and_then(|(p, f)| {
                let p: f64 = p.parse().ok()?;
                let f: f64 = f.parse().ok()?;
                ((0.0..=1.0).contains(&p) && f.is_finite() && f >= 0.0).then_some((p, f))
            });
            parsed.ok_or_else(|| {
                format!("--incidents: `{text}` is not PROB:FACTOR, e.g. 0.05:5 (a minute at 5x errors with probability 0.05)")
            })
        })
        .transpose()?;
    Ok((
        Scenario {
            rps: positive("rps", args.rps)?,
            baseline_errors: rate("baseline-errors", &args.baseline_errors)?,
            canary_errors: rate("canary-errors", &args.canary_errors)?,
            duration_secs: args.duration.as_millis() / 1000,
            interval_secs,
            noise_stable: sigma("noise-stable", args.noise_stable)?,
            noise_canary: sigma("noise-canary", args.noise_canary)?,
            incidents,
            diurnal: args.diurnal,
            baseline_latency,
            canary_latency,
            slower_than: args.slower_than.as_secs_f64(),
            alpha: args.alpha,
            max_ratio: positive("max-ratio", args.max_ratio)?,
            steps: args
                .steps
                .as_deref()
                .map(steps)
                .transpose()?
                .unwrap_or_default(),
            onset_secs: args.onset.as_millis() / 1000,
            noise_period_secs: (args.noise_period.as_millis() / 1000).max(1),
            header_share: rate("header-share", &args.header_share)?,
            extrapolation: if args.extrapolation.is_finite() && args.extrapolation >= 1.0 {
                args.extrapolation
            } else {
                return Err(format!(
                    "--extrapolation: must be a factor >= 1, got {}",
                    args.extrapolation
                ));
            },
            latency_drift: rate("latency-drift", &args.latency_drift)?,
            connections: args.connections,
        },
        methods,
        json,
    ))
}

/// One line of a matrix file, parsed like the command's own flags.
#[derive(Debug, clap::Parser)]
#[command(name = "simulate", no_binary_name = true)]
struct Line {
    #[command(flatten)]
    args: Args,
}

/// Runs every scenario of a matrix file: one per line, `NAME: FLAGS`
/// (blank lines and lines starting with `#` are skipped), with this
/// command's `--runs`, `--seed` and `--threads`. Prints one Markdown table
/// row per scenario and method.
fn run_matrix(outer: &Args, path: &std::path::Path) -> Result<(), String> {
    use clap::Parser;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--matrix: cannot read {}: {e}", path.display()))?;
    let threads = outer
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "| scenario | method | rolled back | 95% interval | median s to rollback | passed | median s to pass |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), number + 1);
        let (name, flags) = line
            .split_once(':')
            .ok_or_else(|| format!("{at}: expected NAME: FLAGS"))?;
        let parsed = Line::try_parse_from(flags.split_whitespace())
            .map_err(|e| format!("{at}: {}", e.to_string().trim()))?;
        let (scenario, methods, _) = build(&parsed.args).map_err(|e| format!("{at}: {e}"))?;
        let report = simulate(&scenario, &methods, outer.runs, outer.seed, threads);
        let pct = |v: f64| format!("{:.1}%", v * 100.0);
        for m in &report.methods {
            println!(
                "| {} | {} | {} | {}–{} | {} | {} | {} |",
                name.trim(),
                m.method.name(),
                pct(m.rollback_rate),
                pct(m.rollback_interval[0]),
                pct(m.rollback_interval[1]),
                m.seconds_to_rollback
                    .map_or_else(|| "-".into(), |s| format!("{:.0}", s.median)),
                m.pass_rate.map_or_else(|| "-".into(), pct),
                m.seconds_to_pass
                    .map_or_else(|| "-".into(), |s| format!("{:.0}", s.median)),
            );
        }
    }
    Ok(())
}

/// `5%@0m,25%@10m`: weights from each time on.
fn steps(text: &str) -> Result<Vec<(u64, f64)>, String> {
    text.split(',')
        .map(|part| {
            let (w, t) = part.trim().split_once('@').ok_or_else(|| {
                format!("--steps: `{part}` is not WEIGHT@TIME, e.g. 5%@0m,25%@10m")
            })?;
            let weight = rate("steps", w)?;
            let at = t
                .parse::<Duration>()
                .map_err(|e| format!("--steps: `{part}`: {e}"))?;
            Ok((at.as_millis() / 1000, weight))
        })
        .collect()
}

/// `0.005` or `0.5%`.
fn rate(name: &str, text: &str) -> Result<f64, String> {
    let value = match text.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => text.trim().parse::<f64>(),
    };
    value
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| format!("--{name}: `{text}` is not a rate like 0.005 or 0.5%"))
}

fn print_table(report: &Report) {
    println!(
        "{:<15} {:>9} {:>17} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "method",
        "rollback",
        "95% interval",
        "median s",
        "p90 s",
        "median reqs",
        "p90 reqs",
        "promoted"
    );
    let passes: Vec<String> = report
        .methods
        .iter()
        .filter_map(|m| {
            let rate = m.pass_rate?;
            Some(format!(
                "{} passed {:.1}% of runs (median {} s)",
                m.method.name(),
                100.0 * rate,
                m.seconds_to_pass
                    .map_or_else(|| "-".into(), |s| format!("{:.0}", s.median))
            ))
        })
        .collect();
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    for m in &report.methods {
        println!(
            "{:<15} {:>9} {:>17} {:>10} {:>10} {:>12} {:>12} {:>9}",
            m.method.name(),
            pct(m.rollback_rate),
            format!(
                "{}–{}",
                pct(m.rollback_interval[0]),
                pct(m.rollback_interval[1])
            ),
            num(m.seconds_to_rollback.map(|s| s.median)),
            num(m.seconds_to_rollback.map(|s| s.p90)),
            num(m.canary_requests_to_rollback.map(|s| s.median)),
            num(m.canary_requests_to_rollback.map(|s| s.p90)),
            pct(m.promoted_rate),
        );
    }
    for line in passes {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn steps_parse_with_clear_errors() {
        assert_eq!(
            steps("5%@0m, 25%@10m,50%@1h"),
            Ok(vec![(0, 0.05), (600, 0.25), (3600, 0.5)])
        );
        let why = steps("5%").unwrap_err();
        assert!(why.contains("WEIGHT@TIME"), "{why}");
        assert!(steps("150%@0m").is_err());
        assert!(steps("5%@soon").is_err());
    }

    #[test]
    fn a_matrix_line_parses_like_the_command() {
        let line = Line::try_parse_from(
            "--rps 50 --steps 5%@0m,25%@10m --header-share 3% --onset 15m --noise-period 10s"
                .split_whitespace(),
        )
        .expect("parses");
        let (s, methods, _) = build(&line.args).expect("builds");
        // Without --methods a line compares every method, in report order.
        assert_eq!(methods, Method::ALL.to_vec());
        assert_eq!((s.rps, s.onset_secs, s.noise_period_secs), (50.0, 900, 10));
        assert_eq!(s.steps, vec![(0, 0.05), (600, 0.25)]);
        assert!((s.header_share - 0.03).abs() < 1e-12);
        let bad = Line::try_parse_from(["--extrapolation", "0.5"]).expect("parses");
        assert!(build(&bad.args).unwrap_err().contains("--extrapolation"));
    }
}
