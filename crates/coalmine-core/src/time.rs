//! Wall-clock instants for the status, injected rather than read.
//!
//! The decision logic never asks the system for the time: callers pass
//! `now` in, so tests can drive hours of a rollout in microseconds and a
//! restarted process reaches the same decisions from the same status.
//! Instants are written as RFC 3339 UTC strings, as Kubernetes does.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Duration;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(i64);

/// A string that is not an RFC 3339 UTC instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a time like `2026-11-23T10:00:00Z`")]
pub struct TimeError(String);

impl Time {
    /// The instant `ms` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(ms: i64) -> Self {
        Time(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// The current time from the system clock: for the I/O edges only.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// This instant moved `d` later.
    pub fn plus(self, d: Duration) -> Self {
        Time(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

// Civil-date conversions after Howard Hinnant's `days_from_civil` and
// `civil_from_days`, exact over the whole proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss, ms) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        );
        write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")?;
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

impl FromStr for Time {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TimeError(s.to_owned());
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return Err(err());
        }
        if b[13] != b':' || b[16] != b':' {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, TimeError> {
            let part = s.get(r).ok_or_else(err)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
            return Err(err());
        }
        let mut i = 19;
        let mut ms = 0;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err());
            }
            let frac = &s[start..i.min(start + 3)];
            ms = frac.parse::<i64>().map_err(|_| err())? * 10_i64.pow(3 - frac.len() as u32);
        }
        let offset_min = match &s[i..] {
            "Z" | "z" => 0,
            tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
                let h = num(i + 1..i + 3)?;
                let m = num(i + 4..i + 6)?;
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                sign * (h * 60 + m)
            }
            _ => return Err(err()),
        };
        let secs = days_from_civil(y, mo, d) * 86_400 + hh * 3600 + mm * 60 + ss - offset_min * 60;
        Ok(Time(secs * 1000 + ms))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Time {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Time".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "date-time"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        for (ms, s) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_795_420_800_000, "2026-11-23T08:00:00Z"),
            (951_782_400_123, "2000-02-29T00:00:00.123Z"),
            (-86_400_000, "1969-12-31T00:00:00Z"),
        ] {
            assert_eq!(Time(ms).to_string(), s);
            assert_eq!(s.parse::<Time>(), Ok(Time(ms)));
        }
        assert_eq!(
            "2026-11-23T10:00:00+02:00".parse::<Time>(),
            "2026-11-23T08:00:00Z".parse::<Time>()
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-23 10:00:00",
            "2026-11-23T10:00:00",
        ] {
            assert!(s.parse::<Time>().is_err(), "{s}");
        }
    }

    #[test]
    fn round_trips_every_day_for_centuries() {
        let mut ms = -5_000_000_000_000_i64;
        while ms < 10_000_000_000_000 {
            let t = Time(ms);
            assert_eq!(t.to_string().parse::<Time>(), Ok(t));
            ms += 86_400_000 * 7 + 3_723_456;
        }
    }
}
