//! Durations written the way scenario files write them: `"20us"`, `"250ms"`, `"30s"`, `"5m"`, `"1h"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A span of simulated time, held in microseconds (per-record costs are that small).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimDuration {
    /// The length in microseconds.
    pub us: u64,
}

impl SimDuration {
    /// A duration of `us` microseconds.
    pub const fn from_us(us: u64) -> Self {
        Self { us }
    }

    /// A duration of `ms` milliseconds.
    pub const fn from_ms(ms: u64) -> Self {
        Self { us: ms * 1000 }
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self { us: s * 1_000_000 }
    }

    /// Whole milliseconds, rounded down.
    pub const fn ms(self) -> u64 {
        self.us / 1000
    }

    /// As a `std::time::Duration`.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.us)
    }
}

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a whole number with a unit (us, ms, s, m, h), as in \"250ms\" or \"30s\"")]
pub struct DurationError {
    /// The text that was given.
    pub input: String,
}

impl FromStr for SimDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError {
            input: s.to_string(),
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| err())?;
        let factor = match unit.trim() {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" | "min" => 60_000_000,
            "h" => 3_600_000_000,
            _ => return Err(err()),
        };
        n.checked_mul(factor).map(Self::from_us).ok_or_else(err)
    }
}

impl fmt::Display for SimDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.us;
        let units = [
            (3_600_000_000, "h"),
            (60_000_000, "m"),
            (1_000_000, "s"),
            (1_000, "ms"),
        ];
        for (size, unit) in units {
            if us != 0 && us.is_multiple_of(size) {
                return write!(f, "{}{unit}", us / size);
            }
        }
        write!(f, "{us}us")
    }
}

impl Serialize for SimDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SimDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("250ms".parse::<SimDuration>().unwrap().ms(), 250);
        assert_eq!("30s".parse::<SimDuration>().unwrap().ms(), 30_000);
        assert_eq!("5m".parse::<SimDuration>().unwrap().ms(), 300_000);
        assert_eq!("1h".parse::<SimDuration>().unwrap().ms(), 3_600_000);
        assert_eq!("20us".parse::<SimDuration>().unwrap().us, 20);
        assert_eq!(SimDuration::from_us(20).to_string(), "20us");
        assert!("5".parse::<SimDuration>().is_err());
        assert!("s".parse::<SimDuration>().is_err());
        assert!("3 weeks".parse::<SimDuration>().is_err());
        assert_eq!(SimDuration::from_ms(90_000).to_string(), "90s");
        assert_eq!(SimDuration::from_ms(1500).to_string(), "1500ms");
    }
}
