//! Property tests of the ratio e-process: never negative, the same evidence
//! however an interval is split, a share taken from the request counts
//! (not the weight tag), more evidence for worse canaries, and no evidence
//! added by tempering.

use coalmine_analysis::eprocess::{Interval, RatioEProcess};
use proptest::prelude::*;

fn interval() -> impl Strategy<Value = Interval> {
    (
        0u64..200,
        0u64..200,
        prop_oneof![Just(None), (0.0f64..=1.0).prop_map(Some)],
    )
        .prop_map(|(xc, xb, share)| Interval {
            canary_total: 1000 + xc,
            canary_bad: xc,
            stable_total: 1000 + xb,
            stable_bad: xb,
            canary_share: share,
        })
}

fn run(max_ratio: f64, intervals: &[Interval]) -> RatioEProcess {
    let mut e = RatioEProcess::new(max_ratio);
    for i in intervals {
        e.update(i);
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_negative_nor_nan(max_ratio in 0.5f64..3.0, intervals in prop::collection::vec(interval(), 0..40)) {
        let e = run(max_ratio, &intervals);
        let v = e.e_value();
        prop_assert!(v >= 0.0 && !v.is_nan(), "E = {}", v);
        let p = e.p_value();
        prop_assert!((0.0..=1.0).contains(&p), "p = {}", p);
    }

    #[test]
    fn splitting_an_interval_changes_nothing(
        max_ratio in 0.5f64..3.0,
        xc in 0u64..300, xb in 0u64..300, rho in 0.01f64..0.99,
        cut_c in 0.0f64..=1.0, cut_b in 0.0f64..=1.0,
    ) {
        // Request counts at share rho, halved evenly so both halves have it.
        let nc = 2 * (5000.0 * rho).round().max(1.0) as u64;
        let nb = 2 * (5000.0 * (1.0 - rho)).round().max(1.0) as u64;
        let whole = Interval { canary_total: nc, canary_bad: xc, stable_total: nb, stable_bad: xb, canary_share: Some(rho) };
        let (ac, ab) = ((xc as f64 * cut_c) as u64, (xb as f64 * cut_b) as u64);
        let first = Interval { canary_total: nc / 2, canary_bad: ac, stable_total: nb / 2, stable_bad: ab, canary_share: Some(rho) };
        let second = Interval { canary_total: nc / 2, canary_bad: xc - ac, stable_total: nb / 2, stable_bad: xb - ab, canary_share: Some(rho) };
        let a = run(max_ratio, &[whole]).log_e();
        let b = run(max_ratio, &[first, second]).log_e();
        prop_assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{} vs {}", a, b);
    }

    #[test]
    fn the_share_comes_from_the_counts_not_the_weight(
        max_ratio in 0.5f64..3.0,
        intervals in prop::collection::vec(interval(), 1..20),
        weight in 0.0f64..=1.0,
        scale in 1u64..5,
    ) {
        // Any weight tag, and the same split of requests at any volume,
        // give the same evidence: only n_c / (n_c + n_b) enters.
        let tagged: Vec<Interval> = intervals.iter().map(|i| Interval { canary_share: Some(weight), ..*i }).collect();
        let scaled: Vec<Interval> = intervals.iter().map(|i| Interval { canary_total: i.canary_total * scale, stable_total: i.stable_total * scale, ..*i }).collect();
        let a = run(max_ratio, &intervals).log_e();
        let b = run(max_ratio, &tagged).log_e();
        let c = run(max_ratio, &scaled).log_e();
        prop_assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{} vs {}", a, b);
        prop_assert!((a - c).abs() <= 1e-9 * a.abs().max(1.0), "{} vs {}", a, c);
    }

    #[test]
    fn more_canary_errors_more_evidence(
        max_ratio in 0.5f64..3.0,
        intervals in prop::collection::vec(interval(), 1..20),
        which in any::<prop::sample::Index>(),
        extra in 1u64..50,
    ) {
        let base = run(max_ratio, &intervals).log_e();
        let mut worse = intervals.clone();
        let i = which.index(worse.len());
        worse[i].canary_bad += extra;
        let mut better = intervals.clone();
        better[i].stable_bad += extra;
        let (w, b) = (run(max_ratio, &worse).log_e(), run(max_ratio, &better).log_e());
        prop_assert!(w >= base - 1e-12, "worse canary: {} < {}", w, base);
        prop_assert!(b <= base + 1e-12, "worse stable: {} > {}", b, base);
    }

    /// The validity argument for the dispersion guard: tempering by any
    /// `phi >= 1` gives `ln E~ <= ln E / phi`, so the tempered e-value can
    /// only reach `1/alpha` where the plain one does.
    #[test]
    fn tempering_never_adds_evidence(
        max_ratio in 0.5f64..3.0,
        intervals in prop::collection::vec(interval(), 1..30),
        phi in 1.0f64..20.0,
    ) {
        let mut e = run(max_ratio, &intervals);
        let plain = e.log_e();
        e.set_dispersion(phi);
        let tempered = e.log_e();
        prop_assert!(tempered <= plain / phi + 1e-9, "{} > {} / {}", tempered, plain, phi);
        prop_assert!(!e.rejects(0.05) || plain >= 20f64.ln(), "tempered rejects, plain does not");
    }
}
