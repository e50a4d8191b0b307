//! Numbers for people: figures rounded so they read at a glance in
//! messages, events and terminal views (`evidence 1.7M of 40`, not
//! `e=1729962.4`). The exact values stay in the status fields.

/// An e-value, rounded: `0.8`, `177`, `12k`, `1.7M`.
pub fn evidence(e: f64) -> String {
    let a = e.abs();
    if !e.is_finite() {
        "∞".into()
    } else if a < 10.0 {
        format!("{e:.1}")
    } else if a < 1_000.0 {
        format!("{e:.0}")
    } else if a < 1_000_000.0 {
        compact(e / 1_000.0, "k")
    } else if a < 1_000_000_000.0 {
        compact(e / 1_000_000.0, "M")
    } else {
        format!("{e:.1e}")
    }
}

/// `1.7k`, `12k`, `250k`: one decimal only below 10.
fn compact(x: f64, unit: &str) -> String {
    if x.abs() < 10.0 {
        format!("{x:.1}{unit}")
    } else {
        format!("{x:.0}{unit}")
    }
}

/// A ratio with two significant figures or so: `0.92`, `2.2`, `10.2`, `150`.
pub fn ratio(r: f64) -> String {
    if !r.is_finite() || r >= 1e6 {
        "∞".into()
    } else if r < 10.0 {
        let s = format!("{r:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else if r < 100.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

/// A fraction as a percentage: `5.1%`, `0.52%`, `0%`.
pub fn percent(f: f64) -> String {
    let p = f * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(evidence(0.84), "0.8");
        assert_eq!(evidence(177.4), "177");
        assert_eq!(evidence(1_729.0), "1.7k");
        assert_eq!(evidence(12_500.0), "12k");
        assert_eq!(evidence(1_729_962.4), "1.7M");
        assert_eq!(evidence(3.2e12), "3.2e12");
        assert_eq!(ratio(0.9234), "0.92");
        assert_eq!(ratio(10.24), "10.2");
        assert_eq!(ratio(2.2), "2.2");
        assert_eq!(ratio(1.0), "1");
        assert_eq!(ratio(1e9), "∞");
        assert_eq!(percent(0.0512), "5.1%");
        assert_eq!(percent(0.0052), "0.52%");
        assert_eq!(percent(0.0), "0%");
    }
}
