//! Records as they travel through the topics, and the partitioner that keeps one customer's
//! changes on one partition of every topic.

use bytes::Bytes;
use nrtsim_history::TopicName;
use serde::{Deserialize, Serialize};

/// What every record carries beside its payload, as Kafka headers would: the change it stems
/// from, so every hop stays observable even when the payload cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The source change (its LSN).
    pub change_id: u64,
    /// The source transaction.
    pub txid: u64,
    /// Source commit time, in simulated ms.
    pub commit_ms: u64,
    /// Reference-store lookups that missed so far (redo attempts).
    pub attempt: u32,
}

/// One record in a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The partition key: the customer (or account) id.
    pub key: u64,
    /// The payload: an envelope in `raw`, a canonical record downstream. Shared, not copied,
    /// between replicas and readers.
    pub value: Bytes,
    /// Headers.
    pub meta: RecordMeta,
}

/// A topic partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic.
    pub topic: TopicName,
    /// The partition number.
    pub partition: u32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub const fn new(topic: TopicName, partition: u32) -> Self {
        Self { topic, partition }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic.name(), self.partition)
    }
}

/// The partition a key lands on. Every topic of a pipeline has the same partition count, so a
/// customer's changes sit on the same partition number from `raw` to `enriched`.
pub fn partition_for(key: u64, partitions: u32) -> u32 {
    // A fixed mix, so placement is the same on every machine and in every release.
    let mut x = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioner_is_stable_and_spreads() {
        assert_eq!(partition_for(42, 6), partition_for(42, 6));
        let mut seen = [0u32; 6];
        for k in 0..6000 {
            seen[partition_for(k, 6) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
