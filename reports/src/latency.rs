//! Latency summaries: the percentiles a report shows for one latency path, the tiers
//! (sub-second, seconds, minutes, late) that a bank platform sorts its consumers into, and the
//! HDR histogram every path is recorded in.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest latency a histogram tracks exactly enough: seven days, in milliseconds. Larger
/// values are clamped to it, which only happens in runs that are broken anyway.
pub const MAX_TRACKABLE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// A fresh histogram for one latency path, in milliseconds with three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts, so this cannot fail.
    Histogram::new_with_max(MAX_TRACKABLE_MS, 3).expect("constant histogram bounds are valid")
}

/// The percentiles of one latency path, in milliseconds, and how many changes it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: u64,
    /// 90th percentile.
    pub p90_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// 99.9th percentile.
    pub p999_ms: u64,
    /// The largest value.
    pub max_ms: u64,
    /// How many changes were measured on this path.
    pub count: u64,
}

impl Percentiles {
    /// Summarises a histogram; every field is 0 when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50_ms: h.value_at_quantile(0.50),
            p90_ms: h.value_at_quantile(0.90),
            p99_ms: h.value_at_quantile(0.99),
            p999_ms: h.value_at_quantile(0.999),
            max_ms: h.max(),
            count: h.len(),
        }
    }
}

/// Where the latency tiers begin, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierBounds {
    /// Below this a change is `sub_second` (default 1 s).
    pub seconds_ms: u64,
    /// Below this (and not sub-second) a change is in `seconds` (default 60 s).
    pub minutes_ms: u64,
    /// Below this (and not in seconds) a change is in `minutes`; at or above it, `late`
    /// (default 60 min).
    pub late_ms: u64,
}

impl Default for TierBounds {
    fn default() -> Self {
        TierBounds {
            seconds_ms: 1_000,
            minutes_ms: 60_000,
            late_ms: 60 * 60_000,
        }
    }
}

/// How many changes of one latency path fell in each tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiers {
    /// Faster than one second (by default).
    pub sub_second: u64,
    /// From one second to under a minute.
    pub seconds: u64,
    /// From one minute to under an hour.
    pub minutes: u64,
    /// An hour or more.
    pub late: u64,
}

impl Tiers {
    /// Counts one latency into its tier.
    pub fn record(&mut self, latency_ms: u64, bounds: &TierBounds) {
        if latency_ms < bounds.seconds_ms {
            self.sub_second += 1;
        } else if latency_ms < bounds.minutes_ms {
            self.seconds += 1;
        } else if latency_ms < bounds.late_ms {
            self.minutes += 1;
        } else {
            self.late += 1;
        }
    }

    /// The number of changes counted in all tiers.
    pub fn total(&self) -> u64 {
        self.sub_second + self.seconds + self.minutes + self.late
    }
}

/// One latency path while a history is checked: its histogram and, for end-to-end paths, its
/// tiers (counted exactly, not read back from histogram buckets).
#[derive(Clone, Debug)]
pub struct LatencyPath {
    /// Every recorded latency, in milliseconds.
    pub histogram: Histogram<u64>,
    /// Tier counts of the same values.
    pub tiers: Tiers,
}

impl Default for LatencyPath {
    fn default() -> Self {
        LatencyPath {
            histogram: new_histogram(),
            tiers: Tiers::default(),
        }
    }
}

impl LatencyPath {
    /// Records one latency in the histogram and its tier.
    pub fn record(&mut self, latency_ms: u64, bounds: &TierBounds) {
        self.histogram
            .saturating_record(latency_ms.min(MAX_TRACKABLE_MS));
        self.tiers.record(latency_ms, bounds);
    }

    /// The path's percentiles.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::from_histogram(&self.histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_histogram_gives_zeros() {
        assert_eq!(
            Percentiles::from_histogram(&new_histogram()),
            Percentiles::default()
        );
    }

    #[test]
    fn percentiles_and_tiers_of_known_values() {
        let bounds = TierBounds::default();
        let mut path = LatencyPath::default();
        for v in 1..=1000 {
            path.record(v, &bounds);
        }
        path.record(61_000, &bounds);
        path.record(4_000_000, &bounds);
        let p = path.percentiles();
        assert_eq!(p.count, 1002);
        assert_eq!(p.p50_ms, 501);
        assert!(p.max_ms >= 4_000_000 && p.max_ms < 4_010_000);
        assert_eq!(
            path.tiers,
            Tiers {
                sub_second: 999,
                seconds: 1,
                minutes: 1,
                late: 1
            }
        );
        assert_eq!(path.tiers.total(), 1002);
    }

    #[test]
    fn huge_values_are_clamped_not_dropped() {
        let mut path = LatencyPath::default();
        path.record(u64::MAX, &TierBounds::default());
        assert_eq!(path.percentiles().count, 1);
        assert_eq!(path.tiers.late, 1);
    }
}
