//! How a rollout's status is printed for people: `coalmine get`'s text
//! (the same against a local run and against Kubernetes) and its one-line
//! headline. `control` (local runs) and `kube_control` (Kubernetes) both
//! print through here, so neither needs the other for it.

use coalmine_core::status::{CanaryStatus, MetricStatus};

/// Output format of `coalmine get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// The status as JSON, one document per line with --watch.
    Json,
}

/// One line: phase, step, weight, routes.
pub fn headline(s: &CanaryStatus) -> String {
    let mut line = format!("{} · step {} · weight {}%", s.phase, s.step, s.weight);
    if !s.header_routes.is_empty() {
        line.push_str(&format!(" · header routes {}", s.header_routes.len()));
    }
    if s.mirror_percent > 0 {
        line.push_str(&format!(" · mirror {}%", s.mirror_percent));
    }
    line
}

/// The status for people.
pub fn render(s: &CanaryStatus) -> String {
    let mut out = headline(s) + "\n";
    let short = |r: &Option<String>| {
        r.as_deref()
            .map_or("-".to_string(), |r| r.chars().take(10).collect())
    };
    out.push_str(&format!(
        "  revisions: stable {} · canary {}\n",
        short(&s.stable_revision),
        short(&s.canary_revision)
    ));
    if !s.message.is_empty() {
        out.push_str(&format!("  {}\n", s.message));
    }
    if let Some(p) = &s.pause {
        out.push_str(&format!(
            "  paused ({}) since {}\n",
            p.reason.as_str(),
            p.since
        ));
    }
    if let Some(r) = &s.rollback {
        out.push_str(&format!("  rolled back at {}: {}\n", r.at, r.message));
    }
    if let Some(a) = &s.analysis {
        out.push_str(&format!("  analysis: {}\n", a.verdict));
        for m in &a.metrics {
            out.push_str(&format!("    {}\n", metric_line(m)));
        }
    }
    out
}

fn metric_line(m: &MetricStatus) -> String {
    let mut line = format!("{:<12} {:<12}", m.name, m.verdict.as_str());
    let rate = |r: Option<f64>, bad: Option<u64>, total: Option<u64>| match (r, bad, total) {
        (Some(r), Some(b), Some(t)) => format!("{r:.4} ({b}/{t})"),
        (Some(r), _, _) => format!("{r:.4}"),
        _ => "-".to_string(),
    };
    if m.canary_requests.is_some() || m.canary_rate.is_some() {
        line.push_str(&format!(
            " canary {} · stable {}",
            rate(m.canary_rate, m.canary_events, m.canary_requests),
            rate(m.stable_rate, m.stable_events, m.stable_requests)
        ));
    }
    if let Some(r) = m.ratio {
        line.push_str(&format!(" · ratio {}", coalmine_core::human::ratio(r)));
        if let Some([lo, hi]) = m.ratio_interval {
            line.push_str(&format!(
                " [{}, {}]",
                coalmine_core::human::ratio(lo),
                coalmine_core::human::ratio(hi)
            ));
        }
    }
    if let (Some(e), Some(t)) = (m.e_value, m.e_threshold) {
        line.push_str(&format!(
            " · e {} of {}",
            coalmine_core::human::evidence(e),
            coalmine_core::human::evidence(t)
        ));
    }
    if let Some(v) = m.value {
        line.push_str(&format!(" · value {v}"));
    }
    if let Some(f) = m.failures {
        line.push_str(&format!(" · failures {f}"));
    }
    if let Some(msg) = &m.message {
        line.push_str(&format!(" · {msg}"));
    }
    line
}
