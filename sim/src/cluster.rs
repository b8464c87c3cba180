//! Cluster metadata: for every partition its replicas, leader, leader epoch and in-sync
//! replica set. The controller owns the authoritative copy (as a KRaft quorum would, it
//! survives the controller's crash); brokers learn it through their heartbeats.

use nrtsim_history::TopicName;
use nrtsim_pipeline::TopicPartition;
use std::collections::BTreeMap;

/// One partition's replication state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMeta {
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<u32>,
    /// The current leader, if any replica can lead.
    pub leader: Option<u32>,
    /// Bumped at every leader change.
    pub leader_epoch: u32,
    /// In-sync replicas (the leader included).
    pub isr: Vec<u32>,
    /// Bumped at every change of leader or ISR: an ISR change a leader proposes from an
    /// older state is refused (Kafka's partition epoch).
    pub partition_epoch: u32,
}

/// The whole cluster's metadata, versioned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMeta {
    /// Bumped at every change.
    pub version: u64,
    /// Partitions of every topic.
    pub partitions: BTreeMap<TopicPartition, PartitionMeta>,
    /// Partition count per topic.
    pub topic_partitions: BTreeMap<TopicName, u32>,
    /// Each broker's registered incarnation (how often it had started when it last
    /// registered), so a restart is noticed even across a controller's own restart.
    pub incarnations: BTreeMap<u32, u64>,
}

impl ClusterMeta {
    /// Lays out `partitions` partitions of every topic over `brokers` brokers with
    /// `replication_factor` replicas each, leaders spread round-robin.
    pub fn new(brokers: u32, partitions: u32, replication_factor: u32) -> Self {
        let mut meta = ClusterMeta {
            version: 1,
            ..Default::default()
        };
        let mut slot = 0u32;
        for topic in TopicName::ALL {
            meta.topic_partitions.insert(topic, partitions);
            for p in 0..partitions {
                let replicas: Vec<u32> = (0..replication_factor)
                    .map(|i| (slot + i) % brokers)
                    .collect();
                slot += 1;
                meta.partitions.insert(
                    TopicPartition::new(topic, p),
                    PartitionMeta {
                        leader: Some(replicas[0]),
                        leader_epoch: 0,
                        isr: replicas.clone(),
                        replicas,
                        partition_epoch: 0,
                    },
                );
            }
        }
        meta
    }

    /// Adds a topic of one partition (the schema registry's `_schemas`), replicated like the
    /// others, its leader on the broker after the pipeline topics' last one.
    pub fn add_single_partition_topic(&mut self, topic: TopicName, brokers: u32, rf: u32) {
        let slot = self.partitions.len() as u32;
        let replicas: Vec<u32> = (0..rf).map(|i| (slot + i) % brokers.max(1)).collect();
        self.topic_partitions.insert(topic, 1);
        self.partitions.insert(
            TopicPartition::new(topic, 0),
            PartitionMeta {
                leader: Some(replicas[0]),
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
                partition_epoch: 0,
            },
        );
        self.version += 1;
    }

    /// The partition's state.
    pub fn get(&self, tp: &TopicPartition) -> Option<&PartitionMeta> {
        self.partitions.get(tp)
    }

    /// The partition's leader.
    pub fn leader(&self, tp: &TopicPartition) -> Option<u32> {
        self.get(tp).and_then(|m| m.leader)
    }
}
