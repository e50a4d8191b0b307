//! What `coalmine run` and `coalmine demo` show while a rollout runs.
//!
//! On a terminal, a block of a few lines redrawn in place: the phase, step
//! and weight; requests per second per version; one line per metric with
//! its verdict, the two versions' rates, the canary/stable ratio with its
//! anytime-valid interval, and the evidence against the canary beside the
//! level at which it rolls back. Events are printed above the block, which
//! is then drawn again below them. In a pipe or a file, one line whenever
//! something other than the traffic figures changed.
//!
//! Figures are rounded for reading at a glance (`coalmine_core::human`).

use std::io::Write;
use std::time::Instant;

use coalmine_core::human::{evidence, percent, ratio};
use coalmine_core::status::{CanaryStatus, MetricStatus};

/// Requests per second of each version, from the proxy's running totals.
#[derive(Debug, Default)]
pub struct Rates {
    last: Option<(Instant, u64, u64)>,
    /// Stable, canary: requests per second over the last second or more.
    pub per_second: Option<(f64, f64)>,
}

impl Rates {
    /// Takes the totals now; the rates move once at least a second passed.
    pub fn sample(&mut self, now: Instant, stable: u64, canary: u64) {
        match self.last {
            None => self.last = Some((now, stable, canary)),
            Some((then, s0, c0)) => {
                let secs = now.duration_since(then).as_secs_f64();
                if secs >= 1.0 {
                    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                    self.per_second = Some((rate(stable, s0), rate(canary, c0)));
                    self.last = Some((now, stable, canary));
                }
            }
        }
    }
}

/// Requests per second: `190`, `9.5`.
fn per_second(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

/// One metric's line, without its name.
pub fn metric_line(m: &MetricStatus) -> String {
    let mut parts = vec![m.verdict.to_string()];
    if let (Some(c), Some(s)) = (m.canary_rate, m.stable_rate) {
        parts.push(format!("canary {} vs stable {}", percent(c), percent(s)));
    }
    if let Some(r) = m.ratio {
        let mut text = format!("ratio {}", ratio(r));
        if let Some([lo, hi]) = m.ratio_interval {
            text.push_str(&format!(" ({}–{})", ratio(lo), ratio(hi)));
        }
        parts.push(text);
    }
    if let (Some(e), Some(t)) = (m.e_value, m.e_threshold) {
        parts.push(format!("evidence {} of {}", evidence(e), evidence(t)));
    }
    if let Some(v) = m.value {
        parts.push(format!("value {v:.3}"));
    }
    if let Some(f) = m.failures {
        parts.push(format!("{f} failed checks"));
    }
    parts.join(" · ")
}

/// The lines of the live block.
pub fn render(
    label: &str,
    status: &CanaryStatus,
    steps: usize,
    rates: Option<(f64, f64)>,
) -> Vec<String> {
    let mut lines = vec![format!(
        "{label} · {} · step {}/{steps} · canary weight {}%",
        status.phase, status.step, status.weight
    )];
    lines.push(match rates {
        Some((s, c)) => format!(
            "  traffic  stable {} req/s · canary {} req/s",
            per_second(s),
            per_second(c)
        ),
        None => "  traffic  measuring…".into(),
    });
    let metrics = status.analysis.iter().flat_map(|a| &a.metrics);
    let width = metrics
        .clone()
        .map(|m| m.name.chars().count())
        .max()
        .unwrap_or(0);
    for m in metrics {
        lines.push(format!("  {:<width$}  {}", m.name, metric_line(m)));
    }
    lines
}

/// The one-line form for logs: everything but the traffic figures, which
/// change every second.
pub fn log_line(status: &CanaryStatus, steps: usize) -> String {
    let mut line = format!(
        "{} · step {}/{steps} · canary weight {}%",
        status.phase, status.step, status.weight
    );
    for m in status.analysis.iter().flat_map(|a| &a.metrics) {
        line.push_str(&format!(" · {}: {}", m.name, metric_line(m)));
    }
    line
}

/// The terminal: how many lines of the block are on screen.
#[derive(Debug, Default)]
pub struct Screen {
    drawn: usize,
}

impl Screen {
    /// Erases the block (so an event line can take its place).
    pub fn clear(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// Draws the block in place of the previous one.
    pub fn draw(&mut self, out: &mut impl Write, lines: &[String]) {
        self.clear(out);
        for line in lines {
            let _ = writeln!(out, "\x1b[2K{line}");
        }
        self.drawn = lines.len();
        let _ = out.flush();
    }

    /// Leaves the block as it is, for good.
    pub fn keep(&mut self) {
        self.drawn = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine_core::status::{AnalysisStatus, Phase, Verdict};

    #[test]
    fn rates_move_after_a_second() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.sample(t0, 0, 0);
        r.sample(t0 + std::time::Duration::from_millis(500), 50, 5);
        assert_eq!(r.per_second, None);
        r.sample(t0 + std::time::Duration::from_secs(2), 400, 20);
        assert_eq!(r.per_second, Some((200.0, 10.0)));
    }

    #[test]
    fn the_block() {
        let status = CanaryStatus {
            phase: Phase::Progressing,
            step: 2,
            weight: coalmine_core::Percent::new(25).expect("a percent"),
            analysis: Some(AnalysisStatus {
                verdict: Verdict::Inconclusive,
                evaluated_at: None,
                metrics: vec![MetricStatus {
                    name: "errors".into(),
                    verdict: Verdict::Fail,
                    canary_rate: Some(0.051),
                    stable_rate: Some(0.005),
                    ratio: Some(10.2),
                    ratio_interval: Some([4.1, 1e9]),
                    e_value: Some(1_729_962.4),
                    e_threshold: Some(40.0),
                    ..MetricStatus::default()
                }],
            }),
            ..CanaryStatus::default()
        };
        let lines = render("demo (faulty)", &status, 6, Some((190.0, 9.5)));
        assert_eq!(
            lines,
            vec![
                "demo (faulty) · Progressing · step 2/6 · canary weight 25%",
                "  traffic  stable 190 req/s · canary 9.5 req/s",
                "  errors  Fail · canary 5.1% vs stable 0.50% · ratio 10.2 (4.1–∞) · evidence 1.7M of 40",
            ]
        );
        let mut out = Vec::new();
        let mut screen = Screen::default();
        screen.draw(&mut out, &lines);
        screen.draw(&mut out, &lines);
        let text = String::from_utf8(out).expect("utf-8");
        // The second drawing goes back up over the first.
        assert_eq!(text.matches("\x1b[3F\x1b[J").count(), 1, "{text:?}");
    }
}
