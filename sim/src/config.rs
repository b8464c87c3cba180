//! The `[platform]` and `[network]` sections of a scenario: the brokers and the links between
//! hosts.

use nrtsim_history::TopicName;
use nrtsim_workloads::SimDuration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// The `[platform]` section: the Kafka cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformConfig {
    /// Brokers in the cluster. Default 3.
    pub brokers: u32,
    /// Partitions of each data topic (raw, standard, enriched). Default 6.
    pub partitions: u32,
    /// Replicas of each partition. Default 3.
    pub replication_factor: u32,
    /// In-sync replicas an acks=all produce needs. Default 2.
    pub min_insync_replicas: u32,
    /// Whether an out-of-sync replica may become leader. Default false.
    pub unclean_leader_election: bool,
    /// How long the controller waits for a broker's heartbeat before declaring it dead. Default 6s.
    pub broker_session_timeout: SimDuration,
    /// How long a follower may lag before the leader drops it from the ISR. Default 10s.
    pub replica_lag_time_max: SimDuration,
    /// How often brokers flush their logs to disk. Brokers acknowledge before they flush, so
    /// a power loss takes what was appended since the last flush. Default 5s.
    pub log_flush_interval: SimDuration,
    /// `log.retention.ms`: how long every topic keeps a record after the leader appended it;
    /// older records are deleted once the high watermark has passed them. Default 168h,
    /// Kafka's.
    pub retention: SimDuration,
    /// `retention.ms` per topic (`raw`, `standard`, `enriched`, `redo`, `critical`), over
    /// `retention`. Default none.
    pub topic_retention: BTreeMap<TopicName, SimDuration>,
    /// `log.retention.check.interval.ms`: how often brokers delete what has expired.
    /// Default 5m, Kafka's.
    pub retention_check_interval: SimDuration,
}

impl PlatformConfig {
    /// How long `topic` keeps its records; `None` for the schema registry's `_schemas`, which
    /// is compacted in Kafka and never expires.
    pub fn retention_of(&self, topic: TopicName) -> Option<SimDuration> {
        if topic == TopicName::Schemas {
            return None;
        }
        Some(
            self.topic_retention
                .get(&topic)
                .copied()
                .unwrap_or(self.retention),
        )
    }
}

impl Default for PlatformConfig {
    fn default() -> Self {
        Self {
            brokers: 3,
            partitions: 6,
            replication_factor: 3,
            min_insync_replicas: 2,
            unclean_leader_election: false,
            broker_session_timeout: SimDuration::from_secs(6),
            replica_lag_time_max: SimDuration::from_secs(10),
            log_flush_interval: SimDuration::from_secs(5),
            retention: SimDuration::from_secs(168 * 3600),
            topic_retention: BTreeMap::new(),
            retention_check_interval: SimDuration::from_secs(300),
        }
    }
}

/// A latency range, written `"1ms..5ms"` (or a single value, `"2ms"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyRange {
    /// The least one-way latency.
    pub min: SimDuration,
    /// The most one-way latency.
    pub max: SimDuration,
}

impl std::str::FromStr for LatencyRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once("..").unwrap_or((s, s));
        let min: SimDuration = a.parse().map_err(|e| format!("{e}"))?;
        let max: SimDuration = b.parse().map_err(|e| format!("{e}"))?;
        if min > max {
            return Err(format!(
                "latency range {s:?} has its minimum above its maximum"
            ));
        }
        Ok(Self { min, max })
    }
}

impl std::fmt::Display for LatencyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.min, self.max)
    }
}

impl Serialize for LatencyRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LatencyRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `[network]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// One-way latency of every link, drawn per message from the range. Default `"1ms..5ms"`.
    pub latency: LatencyRange,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            latency: LatencyRange {
                min: SimDuration::from_ms(1),
                max: SimDuration::from_ms(5),
            },
        }
    }
}
