//! Durations as users write them in a Canary: `30s`, `2m`, `1h30m`, `500ms`.
//!
//! The format is Go's `time.Duration` subset that Kubernetes users already
//! know from Argo Rollouts and Flagger, without the fractions and the
//! micro/nanosecond units that have no use for rollout timing.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a duration: {reason}; write it like `30s`, `2m`, `1h30m` or `500ms`")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration(0);

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1000))
    }

    /// A duration of `m` minutes.
    pub const fn from_mins(m: u64) -> Self {
        Duration(m.saturating_mul(60_000))
    }

    /// The length in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The length in (fractional) seconds.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Whether this is no time at all.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The same span as a `std::time::Duration`, for the I/O edges.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.contains(char::is_whitespace) {
            return Err(err("it contains spaces"));
        }
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        let bytes = s.as_bytes();
        let mut total: u64 = 0;
        let mut i = 0;
        // Units must come in decreasing order (h, m, s, ms) and at most once,
        // so `1m1h` or `5s5s` are mistakes rather than something to add up.
        let mut last_rank = usize::MAX;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(err("each unit needs a whole number before it"));
            }
            let number: u64 = s[start..i]
                .parse()
                .map_err(|_| err("a number is too large"))?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let (rank, factor) = match &s[unit_start..i] {
                "h" => (0, 3_600_000),
                "m" => (1, 60_000),
                "s" => (2, 1_000),
                "ms" => (3, 1),
                "" => return Err(err("a number has no unit (h, m, s or ms)")),
                _ => return Err(err("units are h, m, s and ms")),
            };
            if last_rank != usize::MAX && rank <= last_rank {
                return Err(err("units must go from largest to smallest, each once"));
            }
            last_rank = rank;
            total = number
                .checked_mul(factor)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("it is too long"))?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// The shortest form that reads back to the same value: `1h30m`, `90s` → `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, factor) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            let n = rest / factor;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                rest -= n * factor;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like `30s`, `2m` or `1h30m`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                // A bare number is ambiguous (seconds? milliseconds?), so only
                // zero, which means the same in every unit, is accepted.
                if v == 0 {
                    Ok(Duration::ZERO)
                } else {
                    Err(E::custom(format!(
                        "`{v}` has no unit; write `{v}s` for seconds or `{v}m` for minutes"
                    )))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "`{v}` is negative; durations are like `30s`"
                    ))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(0|([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$",
            "description": "A duration such as 30s, 2m, 1h30m or 500ms."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        for (s, ms) in [
            ("30s", 30_000),
            ("2m", 120_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1h2m3s4ms", 3_723_004),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(s.parse::<Duration>(), Ok(Duration::from_millis(ms)), "{s}");
        }
    }

    #[test]
    fn rejects_what_is_ambiguous_or_wrong() {
        for s in [
            "",
            "5",
            "1x",
            "m",
            "1.5s",
            "1s1m",
            "5s5s",
            "-3s",
            "99999999999999999999h",
        ] {
            assert!(s.parse::<Duration>().is_err(), "{s} should be rejected");
        }
        let e = "10 minutes".parse::<Duration>().unwrap_err().to_string();
        assert!(e.contains("`10 minutes`") && e.contains("1h30m"), "{e}");
    }

    #[test]
    fn display_reads_back() {
        for ms in [0, 1, 999, 1000, 61_000, 3_600_000, 5_400_500, 86_400_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
        }
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
    }

    #[test]
    fn serde_round_trip_and_bare_numbers() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        assert_eq!(
            serde_json::from_str::<Duration>("0").unwrap(),
            Duration::ZERO
        );
        let e = serde_json::from_str::<Duration>("30")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`30s`"), "{e}");
    }
}
