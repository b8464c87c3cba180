//! The `Log` trait: the small surface of Kafka the job loops need (produce with acks, fetch,
//! and the transactional calls), so the same jobs run on the simulated brokers and on a real
//! cluster.

use crate::record::{Record, TopicPartition};
use nrtsim_history::TopicName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a log operation failed, after the client's own retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// No answer within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The broker asked is not the partition's leader (or there is none).
    #[error("no leader for {0}")]
    NotLeader(TopicPartition),
    /// acks=all and fewer in-sync replicas than `min.insync.replicas`.
    #[error("not enough in-sync replicas for {0}")]
    NotEnoughReplicas(TopicPartition),
    /// An idempotent producer's sequence number was out of order.
    #[error("out-of-order sequence number for {0}")]
    OutOfOrderSequence(TopicPartition),
    /// The fetch offset is beyond the partition's log (it was truncated).
    #[error("offset out of range for {0}")]
    OffsetOutOfRange(TopicPartition),
    /// The connection failed.
    #[error("connection failed: {0}")]
    Connection(String),
    /// This backend does not offer the operation.
    #[error("{0} is not offered by this log backend")]
    Unsupported(&'static str),
}

/// Records to append to one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceBatch {
    /// Where to.
    pub tp: TopicPartition,
    /// What, in order.
    pub records: Vec<Record>,
}

/// How a produce batch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Appended at this base offset.
    At(u64),
    /// Already in the log from an earlier try (an idempotent producer's retry or replay).
    Duplicate,
    /// Sent without waiting for an answer (acks=0); the offset is unknown.
    Unacknowledged,
}

/// Records fetched from one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// From where.
    pub tp: TopicPartition,
    /// Offset of the first record.
    pub base_offset: u64,
    /// The records, in offset order.
    pub records: Vec<Record>,
    /// The partition's high watermark at the time of the fetch.
    pub high_watermark: u64,
}

/// An idempotent producer's identity and next sequence number per partition; part of a task's
/// checkpoint when exactly-once delivery restores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    /// Producer id (0: no idempotence).
    pub producer_id: u64,
    /// Next sequence number per partition.
    pub next_seq: BTreeMap<TopicPartition, u64>,
}

/// The surface of a Kafka cluster the pipeline's jobs are written against.
#[allow(async_fn_in_trait)]
pub trait Log {
    /// Partitions of `topic`.
    fn partitions(&self, topic: TopicName) -> u32;

    /// Appends each batch to its partition, retrying as the producer is configured; one result
    /// per batch, in order.
    async fn produce(&mut self, batches: Vec<ProduceBatch>) -> Vec<Result<Appended, LogError>>;

    /// Fetches from each `(partition, offset)`, waiting up to the consumer's `fetch_max_wait`
    /// for data; one result per position, in order.
    async fn fetch(
        &mut self,
        positions: &[(TopicPartition, u64)],
    ) -> Vec<Result<Fetched, LogError>>;

    /// The producer's identity and sequence numbers.
    fn producer_state(&self) -> ProducerState;

    /// Restores the producer's identity and sequence numbers (after a restart).
    fn restore_producer_state(&mut self, state: ProducerState);

    /// Begins a transaction.
    async fn begin_transaction(&mut self) -> Result<(), LogError> {
        Err(LogError::Unsupported("transactions"))
    }

    /// Commits the open transaction, with the consumed offsets it covers.
    async fn commit_transaction(
        &mut self,
        _offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), LogError> {
        Err(LogError::Unsupported("transactions"))
    }

    /// Aborts the open transaction.
    async fn abort_transaction(&mut self) -> Result<(), LogError> {
        Err(LogError::Unsupported("transactions"))
    }
}
