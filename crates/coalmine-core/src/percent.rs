//! [`Percent`]: a whole percent from 0 to 100, the type of every weight and
//! mirror share past validation.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole percent, 0 to 100 inclusive. It can only be made from a number
/// in range ([`Percent::new`], `TryFrom`, deserializing), so a value of
/// this type never needs checking again. On the wire it is a plain integer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u8);

/// A number that is not a percent from 0 to 100. Its message starts with
/// the number, so that a field name put before it reads as a sentence:
/// `weight 140 is above 100 (a percent is 0 to 100)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange(pub i64);

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = if self.0 < 0 { "below 0" } else { "above 100" };
        write!(f, "{} is {side} (a percent is 0 to 100)", self.0)
    }
}

impl std::error::Error for OutOfRange {}

impl Percent {
    /// Nothing.
    pub const ZERO: Percent = Percent(0);
    /// Everything.
    pub const ALL: Percent = Percent(100);

    /// `value` as a percent, if it is 0 to 100.
    pub const fn new(value: u8) -> Option<Percent> {
        if value <= 100 {
            Some(Percent(value))
        } else {
            None
        }
    }

    /// The number, 0 to 100.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Whether it is more than 0.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// The share as a fraction, 0.0 to 1.0.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl TryFrom<i64> for Percent {
    type Error = OutOfRange;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        u8::try_from(value)
            .ok()
            .and_then(Percent::new)
            .ok_or(OutOfRange(value))
    }
}

impl TryFrom<u8> for Percent {
    type Error = OutOfRange;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Percent::new(value).ok_or(OutOfRange(i64::from(value)))
    }
}

impl From<Percent> for u8 {
    fn from(p: Percent) -> u8 {
        p.0
    }
}

impl PartialEq<u8> for Percent {
    fn eq(&self, other: &u8) -> bool {
        self.0 == *other
    }
}

impl PartialOrd<u8> for Percent {
    fn partial_cmp(&self, other: &u8) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(other)
    }
}

impl fmt::Display for Percent {
    /// The bare number, as it is written in the spec (`25`, not `25%`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Percent::try_from(n).map_err(serde::de::Error::custom)
    }
}

/// The same schema as the `u8` it replaced, so the CRD does not change.
impl JsonSchema for Percent {
    fn inline_schema() -> bool {
        u8::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        u8::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        u8::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        u8::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_0_to_100_make_a_percent() {
        assert_eq!(Percent::new(0), Some(Percent::ZERO));
        assert_eq!(Percent::new(100), Some(Percent::ALL));
        assert_eq!(Percent::new(101), None);
        assert_eq!(Percent::try_from(-1_i64), Err(OutOfRange(-1)));
        assert_eq!(Percent::try_from(300_i64), Err(OutOfRange(300)));
        assert_eq!(Percent::try_from(42_i64).map(Percent::get), Ok(42));
        assert_eq!(
            OutOfRange(140).to_string(),
            "140 is above 100 (a percent is 0 to 100)"
        );
        assert_eq!(
            OutOfRange(-5).to_string(),
            "-5 is below 0 (a percent is 0 to 100)"
        );
    }

    #[test]
    fn round_trips_as_a_plain_integer() {
        for n in 0..=100_u8 {
            let p = Percent::new(n).expect("in range");
            let json = serde_json::to_value(p).expect("serializes");
            assert_eq!(json, serde_json::json!(n));
            assert_eq!(serde_json::from_value::<Percent>(json).ok(), Some(p));
        }
    }

    #[test]
    fn deserializing_out_of_range_fails_naming_the_field() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Holder {
            weight: Percent,
        }
        for bad in ["101", "-5", "1000"] {
            let text = format!(r#"{{"weight": {bad}}}"#);
            let mut de = serde_json::Deserializer::from_str(&text);
            let e =
                serde_path_to_error::deserialize::<_, Holder>(&mut de).expect_err("out of range");
            assert_eq!(e.path().to_string(), "weight");
            let message = e.inner().to_string();
            assert!(
                message.starts_with(&format!("{bad} is "))
                    && message.contains("(a percent is 0 to 100)"),
                "{message}"
            );
        }
        assert!(serde_json::from_str::<Percent>("12.5").is_err());
    }

    #[test]
    fn schema_is_that_of_u8() {
        assert_eq!(schemars::schema_for!(Percent), schemars::schema_for!(u8));
    }
}
