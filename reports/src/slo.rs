//! SLO names as a scenario's `[slo]` table writes them: `PATH.STAT`, where PATH is `bus`,
//! `lake`, `fraud` or `stages.<stage>` and STAT is `p50`, `p90`, `p99`, `p999` or `max`.

use serde::{Deserialize, Serialize};

use crate::latency::Percentiles;

/// Which statistic of a latency distribution an SLO limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SloMetric {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// The largest value.
    Max,
}

impl SloMetric {
    /// The quantile this metric reads, or `None` for the maximum.
    pub fn quantile(self) -> Option<f64> {
        match self {
            SloMetric::P50 => Some(0.50),
            SloMetric::P90 => Some(0.90),
            SloMetric::P99 => Some(0.99),
            SloMetric::P999 => Some(0.999),
            SloMetric::Max => None,
        }
    }

    /// This statistic's value in a latency summary.
    pub fn of(self, p: &Percentiles) -> u64 {
        match self {
            SloMetric::P50 => p.p50_ms,
            SloMetric::P90 => p.p90_ms,
            SloMetric::P99 => p.p99_ms,
            SloMetric::P999 => p.p999_ms,
            SloMetric::Max => p.max_ms,
        }
    }
}

/// A parsed SLO name: which latency path, and which statistic of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SloName {
    /// `bus`, `lake`, or `stages.ingest|standardize|enrich|lake`.
    pub path: String,
    /// The statistic.
    pub metric: SloMetric,
}

/// The latency paths an SLO may name.
pub const SLO_PATHS: [&str; 7] = [
    "bus",
    "lake",
    "fraud",
    "stages.ingest",
    "stages.standardize",
    "stages.enrich",
    "stages.lake",
];

impl std::str::FromStr for SloName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, stat) = s.rsplit_once('.').ok_or_else(|| {
            format!("SLO name {s:?} must be PATH.STAT, such as \"bus.p99\" or \"lake.max\"")
        })?;
        if !SLO_PATHS.contains(&path) {
            return Err(format!(
                "unknown latency path {path:?} in SLO {s:?}; expected one of {}",
                SLO_PATHS.join(", ")
            ));
        }
        let metric = match stat {
            "p50" => SloMetric::P50,
            "p90" => SloMetric::P90,
            "p99" => SloMetric::P99,
            "p999" => SloMetric::P999,
            "max" => SloMetric::Max,
            _ => {
                return Err(format!(
                    "unknown statistic {stat:?} in SLO {s:?}; expected p50, p90, p99, p999 or max"
                ))
            }
        };
        Ok(SloName {
            path: path.to_string(),
            metric,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_names_and_rejects_others() {
        let n: SloName = "bus.p99".parse().unwrap();
        assert_eq!(n.path, "bus");
        assert_eq!(n.metric, SloMetric::P99);
        let n: SloName = "stages.enrich.max".parse().unwrap();
        assert_eq!(n.path, "stages.enrich");
        assert!("bus".parse::<SloName>().is_err());
        assert!("bus.p75".parse::<SloName>().is_err());
        assert!("kafka.p99".parse::<SloName>().is_err());
    }
}
