//! A quick look at a few scenarios without building the CLI, for choosing
//! the guard's constants: `cargo run --release -p coalmine-analysis
//! --example tune -- RUNS SEED`. The tables of docs/analysis.md come from
//! `coalmine simulate --matrix`, not from this.

use coalmine_analysis::simulate::{Method, Scenario, simulate};

fn main() {
    let mut args = std::env::args().skip(1);
    let runs = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let healthy = |rps: f64| Scenario {
        rps,
        ..Scenario::default()
    };
    let wobble = |period: u64, sigma: f64| Scenario {
        noise_canary: sigma,
        noise_period_secs: period,
        ..healthy(50.0)
    };
    let regression = |rps: f64, factor: f64, onset: u64| Scenario {
        canary_errors: 0.005 * factor,
        onset_secs: onset,
        ..healthy(rps)
    };
    let stable_wobble = |period: u64, sigma: f64| Scenario {
        noise_stable: sigma,
        noise_period_secs: period,
        ..healthy(50.0)
    };
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("healthy 100", healthy(100.0)),
        ("wobble 0.5 10s 50", wobble(10, 0.5)),
        ("wobble 0.5 1m 50", wobble(60, 0.5)),
        ("wobble 0.5 5m 50", wobble(300, 0.5)),
        ("wobble 0.5 10m 50", wobble(600, 0.5)),
        ("stable 0.5 1m 50", stable_wobble(60, 0.5)),
        ("stable 0.5 10m 50", stable_wobble(600, 0.5)),
        (
            "wobble 0.5 1m 1000",
            Scenario {
                rps: 1000.0,
                ..wobble(60, 0.5)
            },
        ),
        (
            "wobble 0.5 10m 1000",
            Scenario {
                rps: 1000.0,
                ..wobble(600, 0.5)
            },
        ),
        (
            "wobble 0.5 10m 10",
            Scenario {
                rps: 10.0,
                ..wobble(600, 0.5)
            },
        ),
        ("1.2x 100", regression(100.0, 1.2, 0)),
        ("1.3x 100", regression(100.0, 1.3, 0)),
        ("1.5x 10", regression(10.0, 1.5, 0)),
        ("2x 5", regression(5.0, 2.0, 0)),
        ("2x 10", regression(10.0, 2.0, 0)),
        ("2x onset 15m 100", regression(100.0, 2.0, 900)),
        ("2x onset 15m 1000", regression(1000.0, 2.0, 900)),
        ("5x 5", regression(5.0, 5.0, 0)),
        (
            "pass 1.5 at 10",
            Scenario {
                max_ratio: 1.5,
                ..healthy(10.0)
            },
        ),
    ];
    let methods: Vec<Method> = std::env::var("TUNE_METHODS")
        .ok()
        .map(|m| m.split(',').filter_map(|n| Method::parse(n).ok()).collect())
        .unwrap_or_else(|| vec![Method::Coalmine]);
    for (name, s) in &scenarios {
        let r = simulate(s, &methods, runs, seed, 2);
        for m in &r.methods {
            println!(
                "{name:<20} {:<15} rollback {:5.1}%  median {:>6}  pass {}",
                m.method.name(),
                100.0 * m.rollback_rate,
                m.seconds_to_rollback
                    .map_or("-".into(), |t| format!("{:.0}", t.median)),
                m.pass_rate.map_or("-".into(), |p| format!(
                    "{:.1}% (median {})",
                    100.0 * p,
                    m.seconds_to_pass
                        .map_or("-".into(), |t| format!("{:.0}", t.median))
                )),
            );
        }
    }
}
