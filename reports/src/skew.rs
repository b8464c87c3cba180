//! Load skew: how unevenly records spread over each topic's partitions and over the tasks that
//! read them. A ratio of the busiest to the idlest above 10× is flagged, the threshold at which
//! the reference platforms split hot keys or aggregate in two stages.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The max/min ratio above which load is flagged as skewed.
pub const SKEW_FLAG_RATIO: f64 = 10.0;

/// The spread of load over a set of places (partitions of a topic, or tasks).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// What the places are: a topic's partitions (`raw`, `standard`, `enriched`) or a job's
    /// tasks (`enrich tasks`).
    pub name: String,
    /// Records at each place.
    pub load: BTreeMap<String, u64>,
    /// The busiest place's records.
    pub max: u64,
    /// The idlest place's records.
    pub min: u64,
    /// max / min (infinite when a place had none while another had some: reported as -1).
    pub ratio: f64,
    /// Whether the ratio passes [`SKEW_FLAG_RATIO`].
    pub flagged: bool,
}

impl Spread {
    /// The spread of `load`, named `name`.
    pub fn of(name: &str, load: BTreeMap<String, u64>) -> Spread {
        let max = load.values().copied().max().unwrap_or(0);
        let min = load.values().copied().min().unwrap_or(0);
        let (ratio, flagged) = match (min, max) {
            (_, 0) => (1.0, false),
            (0, _) => (-1.0, true),
            (min, max) => {
                let r = max as f64 / min as f64;
                (r, r > SKEW_FLAG_RATIO)
            }
        };
        Spread {
            name: name.to_string(),
            load,
            max,
            min,
            ratio,
            flagged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(v: &[u64]) -> BTreeMap<String, u64> {
        v.iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), *n))
            .collect()
    }

    #[test]
    fn ratios_and_flags() {
        let even = Spread::of("raw", load(&[100, 120, 110]));
        assert!((even.ratio - 1.2).abs() < 1e-9 && !even.flagged);
        let hot = Spread::of("raw", load(&[1100, 100, 120]));
        assert!(hot.ratio > 10.0 && hot.flagged);
        let idle = Spread::of("raw", load(&[50, 0]));
        assert!(idle.flagged && idle.ratio < 0.0);
        assert!(!Spread::of("raw", load(&[0, 0])).flagged);
    }
}
