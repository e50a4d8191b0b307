//! Calibration through the simulator, with fixed seeds: the judge's
//! false-rollback rate on a healthy canary stays within its bound, and it
//! catches regressions, in the scenarios of docs/analysis.md. Runs are
//! fewer than `coalmine simulate`'s 1,000 to keep the suite quick; the
//! bounds allow for that (a Wilson interval that must not lie above alpha).

use coalmine_analysis::simulate::{LatencyModel, Method, Scenario, simulate};

const RUNS: u64 = 300;

fn judged(s: &Scenario, method: Method) -> (f64, [f64; 2], Option<f64>) {
    let r = simulate(s, &[method], RUNS, 42, 2);
    let m = &r.methods[0];
    (
        m.rollback_rate,
        m.rollback_interval,
        m.seconds_to_rollback.map(|t| t.median),
    )
}

fn healthy(rps: f64) -> Scenario {
    Scenario {
        rps,
        ..Scenario::default()
    }
}

#[test]
fn a_healthy_canary_is_rarely_rolled_back() {
    for s in [
        healthy(1.0),
        healthy(10.0),
        Scenario {
            incidents: Some((0.05, 5.0)),
            ..healthy(10.0)
        },
        Scenario {
            diurnal: true,
            ..healthy(10.0)
        },
        Scenario {
            noise_canary: 0.5,
            ..healthy(10.0)
        },
    ] {
        let (rate, [lo, _], _) = judged(&s, Method::Coalmine);
        assert!(
            lo <= 0.05,
            "{s:?}: false rollbacks {rate} (interval from {lo})"
        );
    }
}

#[test]
fn a_doubled_error_rate_is_caught() {
    let s = Scenario {
        canary_errors: 0.01,
        ..healthy(10.0)
    };
    let (rate, _, median) = judged(&s, Method::Coalmine);
    assert!(rate >= 0.99, "{rate}");
    assert!(median.is_some_and(|m| m <= 480.0), "{median:?}");
    let s = Scenario {
        canary_errors: 0.01,
        ..healthy(100.0)
    };
    let (rate, _, median) = judged(&s, Method::Coalmine);
    assert!(rate >= 0.99, "{rate}");
    assert!(median.is_some_and(|m| m <= 60.0), "{median:?}");
}

#[test]
fn the_dispersion_guard_cuts_false_rollbacks_under_noise() {
    let s = Scenario {
        noise_canary: 0.5,
        ..healthy(100.0)
    };
    let (guarded, _, _) = judged(&s, Method::Coalmine);
    let (plain, _, _) = judged(&s, Method::CoalminePlain);
    assert!(guarded < plain * 0.7, "guarded {guarded}, plain {plain}");
}

#[test]
fn a_slower_canary_is_caught_before_mann_whitney() {
    let base = LatencyModel::parse("lognormal:80ms:0.5").expect("model");
    let tail = LatencyModel::parse("lognormal:80ms:0.5+300ms@5%").expect("model");
    let s = Scenario {
        baseline_latency: Some(base),
        canary_latency: Some(tail),
        ..healthy(10.0)
    };
    let (rate_c, _, ours) = judged(&s, Method::Coalmine);
    let (_, _, theirs) = judged(&s, Method::MannWhitney);
    assert!(rate_c >= 0.99);
    assert!(ours < theirs, "{ours:?} vs {theirs:?}");
    let same = Scenario {
        canary_latency: Some(base),
        ..s
    };
    let (rate, [lo, _], _) = judged(&same, Method::Coalmine);
    assert!(lo <= 0.05, "healthy latency: false rollbacks {rate}");
}
