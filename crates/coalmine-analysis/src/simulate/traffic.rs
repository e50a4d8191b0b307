//! Simulated traffic: per-interval requests, bad events and latencies of
//! both versions, from a [`Scenario`], reproducible from a seed.

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Binomial, Distribution, Normal, Poisson, StandardUniform};

use coalmine_core::plan::LATENCY_BUCKETS;

use super::{LatencyModel, Scenario};
use crate::latency::Histograms;

/// One interval of both versions' traffic.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    /// Canary requests.
    pub canary_total: u64,
    /// Canary errors.
    pub canary_bad: u64,
    /// Stable requests.
    pub stable_total: u64,
    /// Stable errors.
    pub stable_bad: u64,
    /// Canary requests slower than `slowerThan` (latency scenarios).
    pub canary_slow: u64,
    /// Stable requests slower than `slowerThan`.
    pub stable_slow: u64,
    /// Both versions' latency histograms (latency scenarios).
    pub histograms: Option<Histograms>,
    /// The canary's routing weight in the interval (header-routed
    /// requests come on top of it).
    pub weight: f64,
}

/// One minute's per-version figures, as per-minute rules see them.
#[derive(Debug, Clone, Default)]
pub struct Minute {
    /// Canary requests in the minute.
    pub canary_total: u64,
    /// Canary errors.
    pub canary_bad: u64,
    /// Stable requests.
    pub stable_total: u64,
    /// Stable errors.
    pub stable_bad: u64,
    /// Canary p99 latency in seconds, if it had requests (latency scenarios).
    pub canary_p99: Option<f64>,
    /// Stable p99 latency.
    pub stable_p99: Option<f64>,
}

/// Generates one run's traffic.
pub struct Traffic<'a> {
    scenario: &'a Scenario,
    rng: SmallRng,
    second: u64,
    // The current minute's draws.
    minute_index: Option<u64>,
    canary_rate: f64,
    stable_rate: f64,
    load: f64,
    /// The current wobble multipliers and the period they were drawn for.
    wobble: (f64, f64),
    wobble_period: Option<u64>,
    /// The shared multiplier of the minute (incident and daily swing).
    shared: f64,
    minute: Minute,
    /// The share of connections pinned to the canary this minute, with
    /// per-connection share noise (`Scenario::connections`).
    pinned: Option<f64>,
    canary_samples: Vec<f64>,
    stable_samples: Vec<f64>,
}

impl<'a> Traffic<'a> {
    /// Run `run` of a scenario with `seed`: the same pair always gives the
    /// same traffic, whatever else runs.
    pub fn new(scenario: &'a Scenario, seed: u64, run: u64) -> Self {
        Traffic {
            scenario,
            rng: SmallRng::seed_from_u64(splitmix(seed ^ splitmix(run))),
            second: 0,
            minute_index: None,
            canary_rate: 0.0,
            stable_rate: 0.0,
            load: 1.0,
            wobble: (1.0, 1.0),
            wobble_period: None,
            shared: 1.0,
            minute: Minute::default(),
            pinned: None,
            canary_samples: Vec::new(),
            stable_samples: Vec::new(),
        }
    }

    /// The next interval, and the minute it completed (if it did).
    pub fn next_tick(&mut self) -> (Tick, Option<Minute>) {
        let s = self.scenario;
        let minute = self.second / 60;
        if self.minute_index != Some(minute) {
            self.start_minute(minute);
        }
        let period = self.second / s.noise_period_secs.max(1);
        if self.wobble_period != Some(period) {
            self.wobble_period = Some(period);
            self.wobble = (self.noise(s.noise_canary), self.noise(s.noise_stable));
        }
        let canary_base = if self.second >= s.onset_secs {
            s.canary_errors
        } else {
            s.baseline_errors
        };
        self.canary_rate = (canary_base * self.wobble.0 * self.shared).clamp(0.0, 1.0);
        self.stable_rate = (s.baseline_errors * self.wobble.1 * self.shared).clamp(0.0, 1.0);
        let interval = s.interval_secs as f64;
        let weight = s
            .steps
            .iter()
            .rev()
            .find(|(from, _)| *from <= self.second)
            .map(|(_, w)| w.clamp(0.0, 1.0));
        // Without steps each version gets `rps`; with them, `2 rps` is
        // split by the weight.
        let all = s.rps * self.load * interval * if weight.is_some() { 2.0 } else { 1.0 };
        let (canary_mean, stable_mean) = match weight {
            Some(w) => (all * w, all * (1.0 - w)),
            None => (all, all),
        };
        let (canary_mean, stable_mean) = match self.pinned_share(weight.unwrap_or(0.5)) {
            Some(k) => {
                let both = canary_mean + stable_mean;
                (both * k, both * (1.0 - k))
            }
            None => (canary_mean, stable_mean),
        };
        let header = self.poisson(all * s.header_share);
        let mut tick = Tick {
            canary_total: self.poisson(canary_mean) + header,
            stable_total: self.poisson(stable_mean),
            weight: weight.unwrap_or(0.5),
            ..Tick::default()
        };
        tick.canary_bad = self.binomial(tick.canary_total, self.canary_rate);
        tick.stable_bad = self.binomial(tick.stable_total, self.stable_rate);
        let drift = 1.0 + s.latency_drift * self.second as f64 / s.duration_secs.max(1) as f64;
        if let (Some(cm), Some(bm)) = (s.canary_latency, s.baseline_latency) {
            let mut h = Histograms {
                bounds: LATENCY_BUCKETS.to_vec(),
                canary: vec![0; LATENCY_BUCKETS.len() + 1],
                stable: vec![0; LATENCY_BUCKETS.len() + 1],
            };
            for _ in 0..tick.canary_total {
                let l = self.latency(&cm) * drift;
                tick.canary_slow += u64::from(l > s.slower_than);
                h.canary[LATENCY_BUCKETS.partition_point(|b| *b < l)] += 1;
                self.canary_samples.push(l);
            }
            for _ in 0..tick.stable_total {
                let l = self.latency(&bm) * drift;
                tick.stable_slow += u64::from(l > s.slower_than);
                h.stable[LATENCY_BUCKETS.partition_point(|b| *b < l)] += 1;
                self.stable_samples.push(l);
            }
            tick.histograms = Some(h);
        }
        if s.extrapolation > 1.0 {
            self.extrapolate(&mut tick);
        }
        let m = &mut self.minute;
        m.canary_total += tick.canary_total;
        m.canary_bad += tick.canary_bad;
        m.stable_total += tick.stable_total;
        m.stable_bad += tick.stable_bad;
        self.second += s.interval_secs;
        let done = (self.second / 60 != minute).then(|| {
            let mut m = std::mem::take(&mut self.minute);
            m.canary_p99 = p99(&mut self.canary_samples);
            m.stable_p99 = p99(&mut self.stable_samples);
            self.canary_samples.clear();
            self.stable_samples.clear();
            m
        });
        (tick, done)
    }

    /// The share of connections on the canary this minute at `weight`,
    /// drawn once a minute; `None` without per-connection noise.
    fn pinned_share(&mut self, weight: f64) -> Option<f64> {
        let n = self.scenario.connections;
        if n == 0 {
            return None;
        }
        if self.pinned.is_none() {
            self.pinned = Some(self.binomial(n, weight) as f64 / n as f64);
        }
        self.pinned
    }

    /// Draws the minute's error rates: per-version noise, a shared
    /// incident, and the daily swing.
    fn start_minute(&mut self, minute: u64) {
        let s = self.scenario;
        self.minute_index = Some(minute);
        self.pinned = None;
        let t = minute as f64 * 60.0 + 30.0;
        // One day compressed into the run: traffic between 0.2x and 1.8x,
        // error rates a little higher under load (0.6x to 1.4x).
        self.load = if s.diurnal {
            1.0 + 0.8 * (2.0 * std::f64::consts::PI * t / s.duration_secs as f64).sin()
        } else {
            1.0
        };
        let load_errors = 0.5 + 0.5 * self.load;
        let incident = match s.incidents {
            Some((prob, factor)) if self.uniform() < prob => factor,
            _ => 1.0,
        };
        self.shared = incident * load_errors;
    }

    /// Scales each version's counts by a factor in `[1, extrapolation]`, as
    /// `increase()` does when the samples in its window span less than the
    /// window (the factor is the window over the span covered).
    fn extrapolate(&mut self, tick: &mut Tick) {
        let top = self.scenario.extrapolation;
        let fc = 1.0 + (top - 1.0) * self.uniform();
        let fb = 1.0 + (top - 1.0) * self.uniform();
        let scale = |v: u64, f: f64| (v as f64 * f).round() as u64;
        tick.canary_total = scale(tick.canary_total, fc);
        tick.canary_bad = scale(tick.canary_bad, fc);
        tick.canary_slow = scale(tick.canary_slow, fc);
        tick.stable_total = scale(tick.stable_total, fb);
        tick.stable_bad = scale(tick.stable_bad, fb);
        tick.stable_slow = scale(tick.stable_slow, fb);
    }

    /// A mean-one lognormal multiplier: the rate wobbles but its average
    /// stays the configured one, so a healthy canary stays healthy.
    fn noise(&mut self, sigma: f64) -> f64 {
        if sigma <= 0.0 {
            return 1.0;
        }
        let z: f64 = self.normal();
        (sigma * z - sigma * sigma / 2.0).exp()
    }

    fn latency(&mut self, m: &LatencyModel) -> f64 {
        let z = self.normal();
        let mut l = m.median * (m.sigma * z).exp();
        if m.extra_share > 0.0 && self.uniform() < m.extra_share {
            l += m.extra;
        }
        l
    }

    fn uniform(&mut self) -> f64 {
        StandardUniform.sample(&mut self.rng)
    }

    fn normal(&mut self) -> f64 {
        Normal::new(0.0, 1.0).map_or(0.0, |n| n.sample(&mut self.rng))
    }

    fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        Poisson::new(mean).map_or(0, |p| p.sample(&mut self.rng) as u64)
    }

    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        Binomial::new(n, p.min(1.0)).map_or(0, |b| b.sample(&mut self.rng))
    }
}

/// The 99th percentile (nearest rank) of a minute's samples.
fn p99(samples: &mut [f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let rank = ((samples.len() as f64 * 0.99).ceil() as usize).clamp(1, samples.len()) - 1;
    let (_, v, _) = samples.select_nth_unstable_by(rank, f64::total_cmp);
    Some(*v)
}

/// SplitMix64: spreads nearby seeds and run numbers over the seed space.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_run_give_the_same_traffic() {
        let s = Scenario::default();
        let draw = |run| {
            let mut t = Traffic::new(&s, 7, run);
            (0..30)
                .map(|_| {
                    let (k, _) = t.next_tick();
                    (k.canary_total, k.canary_bad, k.stable_bad)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn rates_and_minutes_come_out_as_configured() {
        let s = Scenario {
            rps: 100.0,
            baseline_errors: 0.01,
            canary_errors: 0.03,
            ..Scenario::default()
        };
        let mut t = Traffic::new(&s, 1, 0);
        let (mut n, mut xc, mut xb, mut minutes) = (0, 0, 0, 0);
        for _ in 0..360 {
            let (k, m) = t.next_tick();
            n += k.canary_total;
            xc += k.canary_bad;
            xb += k.stable_bad;
            minutes += usize::from(m.is_some());
        }
        assert_eq!(minutes, 60);
        assert!((n as f64 / 3600.0 - 100.0).abs() < 1.0, "{n}");
        assert!((xc as f64 / n as f64 - 0.03).abs() < 0.002);
        assert!((xb as f64 / n as f64 - 0.01).abs() < 0.001);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(p99(&mut v), Some(198.0));
        assert_eq!(p99(&mut []), None);
    }
}
