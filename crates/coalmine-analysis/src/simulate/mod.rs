//! `coalmine simulate`: the judge on simulated traffic, side by side with
//! the peers' rules, to measure false rollbacks and time to detection.
//!
//! Each run draws per-interval traffic for both versions ([`traffic`]) and
//! feeds the same numbers to every method: coalmine's own [`Judge`] (the
//! code `coalmine run` and the controller use), the e-process without its
//! dispersion guard, and the rules of Flagger, Kayenta and the mSPRT
//! ([`peers`]). A method rolls back at the end of the interval in which it
//! decides to; a run it never rolls back is promoted at the end.
//!
//! Runs are independent and seeded by `(seed, run)`, so results do not
//! depend on how many threads share the work.

pub mod peers;
pub mod traffic;

use serde::Serialize;

use coalmine_core::Duration;
use coalmine_core::plan::{AnalysisPlan, Check, MetricPlan, Provider};
use coalmine_core::spec::BuiltinMetric;

use crate::eprocess::Interval;
use crate::judge::{Judge, Observed};
use peers::{Flagger, Kayenta, MannWhitney, Msprt, PlainEProcess, Rule, Threshold};
use traffic::{Minute, Tick, Traffic};

/// A latency distribution: lognormal with a median and a sigma, plus an
/// optional fixed extra delay on a share of requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyModel {
    /// Median in seconds.
    pub median: f64,
    /// Sigma of the logarithm.
    pub sigma: f64,
    /// Extra delay in seconds on `extra_share` of requests.
    pub extra: f64,
    /// Share of requests with the extra delay, in `[0, 1]`.
    pub extra_share: f64,
}

impl LatencyModel {
    /// Parses `lognormal:MEDIAN:SIGMA[+EXTRA@PERCENT%]`, e.g.
    /// `lognormal:80ms:0.5` or `lognormal:80ms:0.5+300ms@5%`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = "expected lognormal:MEDIAN:SIGMA[+EXTRA@PERCENT%], e.g. lognormal:80ms:0.5 or lognormal:80ms:0.5+300ms@5%";
        let (base, extra) = match text.split_once('+') {
            Some((b, e)) => (b, Some(e)),
            None => (text, None),
        };
        let parts: Vec<&str> = base.split(':').collect();
        let [kind, median, sigma] = parts[..] else {
            return Err(format!("`{text}`: {usage}"));
        };
        if kind != "lognormal" {
            return Err(format!("`{text}`: unknown distribution `{kind}`; {usage}"));
        }
        let median = median
            .parse::<Duration>()
            .map_err(|e| format!("`{text}`: median: {e}"))?
            .as_secs_f64();
        let sigma: f64 = sigma
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| format!("`{text}`: sigma `{sigma}` is not a number >= 0"))?;
        if median <= 0.0 {
            return Err(format!("`{text}`: the median must be above 0"));
        }
        let (extra, extra_share) = match extra {
            None => (0.0, 0.0),
            Some(e) => {
                let (d, p) = e
                    .split_once('@')
                    .ok_or_else(|| format!("`{text}`: {usage}"))?;
                let d = d
                    .parse::<Duration>()
                    .map_err(|err| format!("`{text}`: extra delay: {err}"))?
                    .as_secs_f64();
                let p: f64 = p
                    .strip_suffix('%')
                    .and_then(|p| p.parse().ok())
                    .filter(|p: &f64| (0.0..=100.0).contains(p))
                    .ok_or_else(|| format!("`{text}`: `{p}` is not a percentage like 5%"))?;
                (d, p / 100.0)
            }
        };
        Ok(LatencyModel {
            median,
            sigma,
            extra,
            extra_share,
        })
    }
}

/// What is simulated.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Requests per second to each version.
    pub rps: f64,
    /// Stable's error rate.
    pub baseline_errors: f64,
    /// The canary's error rate.
    pub canary_errors: f64,
    /// Length of a run in seconds.
    pub duration_secs: u64,
    /// Analysis interval in seconds.
    pub interval_secs: u64,
    /// Lognormal sigma of stable's per-minute error rate (mean kept).
    pub noise_stable: f64,
    /// Lognormal sigma of the canary's per-minute error rate.
    pub noise_canary: f64,
    /// Per-minute probability and factor of an incident on both versions.
    pub incidents: Option<(f64, f64)>,
    /// A daily traffic swing, compressed into the run.
    pub diurnal: bool,
    /// Stable's latency, for latency scenarios (both or neither).
    pub baseline_latency: Option<LatencyModel>,
    /// The canary's latency.
    pub canary_latency: Option<LatencyModel>,
    /// Requests slower than this (seconds) are slow.
    pub slower_than: f64,
    /// coalmine's (and the mSPRT's) false-rollback budget.
    pub alpha: f64,
    /// coalmine's tolerance.
    pub max_ratio: f64,
    /// The plan's weight steps: from each second on, the canary's routing
    /// weight in `[0, 1]`. Empty: both versions get `rps` (a 50/50 split);
    /// otherwise the versions share `2 rps` by the weight.
    pub steps: Vec<(u64, f64)>,
    /// The second from which the canary has `canary_errors` (before it,
    /// stable's rate): a regression that starts mid-rollout.
    pub onset_secs: u64,
    /// How long a wobble's multiplier lasts (`noise_stable`,
    /// `noise_canary`), in seconds: redrawn every period.
    pub noise_period_secs: u64,
    /// Requests routed to the canary by header or cookie, outside the
    /// weight, as a share of all requests (testers, sticky sessions).
    pub header_share: f64,
    /// Prometheus-style extrapolated counts: each interval's counts of
    /// each version scaled by a factor drawn uniformly in `[1, this]` (1:
    /// exact counts).
    pub extrapolation: f64,
    /// Latency drift common to both versions: medians grow by this share
    /// over the run (0.1: 10% slower at the end).
    pub latency_drift: f64,
    /// The `replicas` router's per-connection share noise: requests come
    /// over this many equally busy client connections, each pinned to the
    /// canary with probability the weight and re-pinned every minute, so
    /// the share that reaches the canary is `k / connections` rather than
    /// the weight (0: requests are split one by one).
    pub connections: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            rps: 10.0,
            baseline_errors: 0.005,
            canary_errors: 0.005,
            duration_secs: 3600,
            interval_secs: 10,
            noise_stable: 0.0,
            noise_canary: 0.0,
            incidents: None,
            diurnal: false,
            baseline_latency: None,
            canary_latency: None,
            slower_than: 0.3,
            alpha: 0.05,
            max_ratio: 1.0,
            steps: Vec::new(),
            onset_secs: 0,
            noise_period_secs: 60,
            header_share: 0.0,
            extrapolation: 1.0,
            latency_drift: 0.0,
            connections: 0,
        }
    }
}

impl Scenario {
    /// Whether latency is simulated.
    pub fn has_latency(&self) -> bool {
        self.baseline_latency.is_some() && self.canary_latency.is_some()
    }

    /// The analysis plan coalmine's judge gets: errors, and in latency
    /// scenarios the slow-request rate with the shape check.
    pub fn analysis_plan(&self) -> AnalysisPlan {
        let mut metrics = vec![MetricPlan {
            name: "errors".into(),
            provider: Provider::Builtin {
                metric: BuiltinMetric::Errors,
                slower_than: None,
            },
            check: Check::Compare {
                max_ratio: self.max_ratio,
            },
        }];
        if self.has_latency() {
            metrics.push(MetricPlan {
                name: "slow".into(),
                provider: Provider::Builtin {
                    metric: BuiltinMetric::Latency,
                    slower_than: Some(Duration::from_millis(
                        (self.slower_than * 1000.0).round() as u64
                    )),
                },
                check: Check::Compare {
                    max_ratio: self.max_ratio,
                },
            });
        }
        AnalysisPlan {
            interval: Duration::from_secs(self.interval_secs),
            alpha: self.alpha,
            metrics,
        }
    }
}

/// A judging method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// coalmine's judge.
    Coalmine,
    /// The e-process alone, without the dispersion guard.
    CoalminePlain,
    /// Flagger's threshold rule, checked for the whole run.
    Threshold,
    /// Flagger's rule with its step schedule and promotion.
    Flagger,
    /// Kayenta's Mann–Whitney rule.
    MannWhitney,
    /// Kayenta's classifier with its effect-size tolerance and score.
    Kayenta,
    /// The mixture SPRT.
    Msprt,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 7] = [
        Method::Coalmine,
        Method::CoalminePlain,
        Method::Threshold,
        Method::Flagger,
        Method::MannWhitney,
        Method::Kayenta,
        Method::Msprt,
    ];

    /// The method's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Coalmine => "coalmine",
            Method::CoalminePlain => "coalmine-plain",
            Method::Threshold => "threshold",
            Method::Flagger => "flagger",
            Method::MannWhitney => "mann-whitney",
            Method::Kayenta => "kayenta",
            Method::Msprt => "msprt",
        }
    }

    /// Parses a method name.
    pub fn parse(name: &str) -> Result<Method, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                format!("unknown method `{name}`; one of: {}", names.join(", "))
            })
    }

    /// Whether the method has a PASS verdict (coalmine's judge) or a
    /// promotion (Flagger's schedule); the others only roll back.
    pub fn has_pass(self) -> bool {
        matches!(self, Method::Coalmine | Method::Flagger)
    }

    fn rule(self, s: &Scenario) -> Box<dyn Rule> {
        match self {
            Method::Coalmine => Box::new(JudgeRule {
                judge: Judge::new(&s.analysis_plan()),
                latency: s.has_latency(),
                passed: false,
            }),
            Method::CoalminePlain => {
                Box::new(PlainEProcess::new(s.alpha, s.max_ratio, s.has_latency()))
            }
            Method::Threshold => Box::new(Threshold::new(s.has_latency().then_some(s.slower_than))),
            Method::Flagger => Box::new(Flagger::new(s.has_latency().then_some(s.slower_than))),
            Method::MannWhitney => Box::new(MannWhitney::new(s.has_latency())),
            Method::Kayenta => Box::new(Kayenta::new(s.has_latency())),
            Method::Msprt => Box::new(Msprt::new(s.alpha, s.has_latency())),
        }
    }
}

/// coalmine's judge as a rule.
struct JudgeRule {
    judge: Judge,
    latency: bool,
    passed: bool,
}

impl Rule for JudgeRule {
    fn observe(&mut self, tick: &Tick, minute: Option<&Minute>) -> bool {
        // Tagged with the routing weight, as `coalmine run` does; the judge
        // measures the share from the counts.
        let interval = |canary_bad, stable_bad| Interval {
            canary_total: tick.canary_total,
            canary_bad,
            stable_total: tick.stable_total,
            stable_bad,
            canary_share: Some(tick.weight),
        };
        self.judge.observe(
            0,
            Observed::Counts(interval(tick.canary_bad, tick.stable_bad)),
        );
        if self.latency {
            self.judge.observe(
                1,
                Observed::Latency {
                    slow: interval(tick.canary_slow, tick.stable_slow),
                    histograms: tick.histograms.clone(),
                },
            );
        }
        // PASS is checked once a minute (it costs a pass over the shares).
        if minute.is_some() && !self.passed {
            self.passed = self.judge.passes();
        }
        self.judge.fails()
    }

    fn passed(&self) -> bool {
        self.passed
    }
}

/// When one run was rolled back by one method.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rollback {
    seconds: u64,
    canary_requests: u64,
}

/// One run's outcome for one method.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Outcome {
    rollback: Option<Rollback>,
    /// Seconds to the first PASS, if it came before any rollback.
    pass: Option<u64>,
}

/// One run: for each method, its rollback if it rolled back and its PASS
/// if it passed first. A run goes on after a PASS (a false rollback is
/// counted over the whole duration, as if every gate were a long pause).
fn run_one(s: &Scenario, methods: &[Method], seed: u64, run: u64) -> Vec<Outcome> {
    let mut traffic = Traffic::new(s, seed, run);
    let mut rules: Vec<Box<dyn Rule>> = methods.iter().map(|m| m.rule(s)).collect();
    let mut outcome = vec![Outcome::default(); methods.len()];
    let mut canary_requests = 0;
    let intervals = s.duration_secs / s.interval_secs.max(1);
    for i in 0..intervals {
        let (tick, minute) = traffic.next_tick();
        canary_requests += tick.canary_total;
        let seconds = (i + 1) * s.interval_secs;
        for (rule, out) in rules.iter_mut().zip(outcome.iter_mut()) {
            if out.rollback.is_some() {
                continue;
            }
            if rule.observe(&tick, minute.as_ref()) {
                out.rollback = Some(Rollback {
                    seconds,
                    canary_requests,
                });
            } else if out.pass.is_none() && rule.passed() {
                out.pass = Some(seconds);
            }
        }
        if outcome.iter().all(|o| o.rollback.is_some()) {
            break;
        }
    }
    outcome
}

/// Median and 90th percentile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Spread {
            median: at(0.5),
            p90: at(0.9),
        })
    }
}

/// One method's results over all runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodSummary {
    /// The method.
    pub method: Method,
    /// Runs.
    pub runs: u64,
    /// Runs rolled back.
    pub rollbacks: u64,
    /// Share of runs rolled back.
    pub rollback_rate: f64,
    /// 95% Wilson interval for the rollback rate.
    pub rollback_interval: [f64; 2],
    /// Seconds from the first canary request to rollback, over the runs
    /// rolled back.
    pub seconds_to_rollback: Option<Spread>,
    /// Canary requests served by then.
    pub canary_requests_to_rollback: Option<Spread>,
    /// Share of runs that reached the end without a rollback (promoted).
    pub promoted_rate: f64,
    /// Share of runs the method passed (PASS before any rollback), for
    /// methods with a PASS verdict.
    pub pass_rate: Option<f64>,
    /// Seconds to PASS over the runs that passed.
    pub seconds_to_pass: Option<Spread>,
}

/// The results of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Runs per method.
    pub runs: u64,
    /// The seed.
    pub seed: u64,
    /// Per method.
    pub methods: Vec<MethodSummary>,
}

/// Runs `runs` simulations of `scenario` on `threads` threads.
pub fn simulate(s: &Scenario, methods: &[Method], runs: u64, seed: u64, threads: usize) -> Report {
    let threads = threads.clamp(1, 64) as u64;
    let outcomes: Vec<Vec<Outcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..runs)
                        .filter(|r| r % threads == t)
                        .map(|r| run_one(s, methods, seed, r))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let n = outcomes.len() as u64;
    let methods = methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let rolled: Vec<Rollback> = outcomes.iter().filter_map(|o| o[i].rollback).collect();
            let passes: Vec<f64> = outcomes
                .iter()
                .filter_map(|o| o[i].pass.map(|s| s as f64))
                .collect();
            let k = rolled.len() as u64;
            MethodSummary {
                method: *m,
                runs: n,
                rollbacks: k,
                rollback_rate: ratio(k, n),
                rollback_interval: wilson(k, n),
                seconds_to_rollback: Spread::of(rolled.iter().map(|r| r.seconds as f64).collect()),
                canary_requests_to_rollback: Spread::of(
                    rolled.iter().map(|r| r.canary_requests as f64).collect(),
                ),
                promoted_rate: ratio(n - k, n),
                pass_rate: m.has_pass().then(|| ratio(passes.len() as u64, n)),
                seconds_to_pass: Spread::of(passes),
            }
        })
        .collect();
    Report {
        runs: n,
        seed,
        methods,
    }
}

fn ratio(k: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { k as f64 / n as f64 }
}

/// The 95% Wilson score interval for `k` successes in `n` trials.
pub fn wilson(k: u64, n: u64) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (k, n, z) = (k as f64, n as f64, 1.959_964);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_models_parse_with_clear_errors() {
        let m = LatencyModel::parse("lognormal:80ms:0.5").expect("parses");
        assert_eq!((m.median, m.sigma, m.extra_share), (0.08, 0.5, 0.0));
        let m = LatencyModel::parse("lognormal:80ms:0.5+300ms@5%").expect("parses");
        assert_eq!((m.extra, m.extra_share), (0.3, 0.05));
        for bad in [
            "normal:80ms:0.5",
            "lognormal:80:0.5",
            "lognormal:80ms",
            "lognormal:80ms:x",
            "lognormal:80ms:0.5+300ms@500%",
        ] {
            assert!(LatencyModel::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_parse_by_name() {
        assert_eq!(Method::parse("mann-whitney"), Ok(Method::MannWhitney));
        assert!(
            Method::parse("spinnaker")
                .unwrap_err()
                .contains("mann-whitney")
        );
    }

    #[test]
    fn wilson_interval() {
        let [lo, hi] = wilson(50, 1000);
        assert!(
            (lo - 0.0382).abs() < 1e-3 && (hi - 0.0653).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), [0.0, 1.0]);
    }

    #[test]
    fn results_do_not_depend_on_threads() {
        let s = Scenario {
            duration_secs: 600,
            canary_errors: 0.02,
            ..Scenario::default()
        };
        let a = simulate(&s, &Method::ALL, 20, 3, 1);
        let b = simulate(&s, &Method::ALL, 20, 3, 3);
        assert_eq!(a, b);
    }
}
