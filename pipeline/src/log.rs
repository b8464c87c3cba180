//! The `Log` trait: the small surface of Kafka the job loops need (produce with acks, fetch,
//! and the transactional calls), so the same jobs run on the simulated brokers and on a real
//! cluster.

use crate::env::TaskCheckpoint;
use crate::record::{Record, TopicPartition};
use crate::schema::RegistryError;
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
    /// Under `auto_offset_reset = "none"`, a position the reader was already refused at: out of
    /// the partition's log (before its start, or past the end of a truncated log), or past
    /// where its leader's log diverged from what the reader read.
    #[error("offset out of range for {0}")]
    OffsetOutOfRange(TopicPartition),
    /// The connection failed.
    #[error("connection failed: {0}")]
    Connection(String),
    /// A newer instance of this transactional producer has started: this one is a zombie.
    #[error("producer fenced by a newer instance")]
    Fenced,
    /// The coordinator aborted the open transaction (it outlived its timeout).
    #[error("the transaction was aborted by the coordinator")]
    TransactionAborted,
    /// The consumer group is rebalancing: the member must give up its partitions (committing
    /// what it has processed) and join again.
    #[error("the consumer group is rebalancing")]
    RebalanceInProgress,
    /// The consumer is no longer a member of its group's current generation (its session
    /// expired, or the group moved on without it): its partitions may be someone else's, so
    /// it may not commit, and must join again.
    #[error("not a member of the group's current generation")]
    NotMember,
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
    At {
        /// Where the first appended record went: the batch's record `skipped`.
        base_offset: u64,
        /// The leader epoch of the leader that appended it, when the client learns it: an
        /// acknowledgement from a leader the controller has already replaced is one a leader
        /// change will take back.
        leader_epoch: Option<u32>,
        /// How many of the batch's first records the log already held from an earlier try
        /// and dropped: a retry that partly overlaps its first try, which only a producer that
        /// re-forms its batches under restored sequence numbers sends. Their offsets are not
        /// known. 0 for every other append.
        skipped: usize,
    },
    /// Already in the log from an earlier try (an idempotent producer's retry or replay),
    /// at an offset the leader no longer knows. A retry whose first try the leader remembers
    /// is answered [`Appended::At`] that try's offset, as Kafka answers one.
    Duplicate,
    /// Sent without waiting for an answer (acks=0); the offset is unknown.
    Unacknowledged,
}

/// Records fetched from one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// From where.
    pub tp: TopicPartition,
    /// The offset fetched from.
    pub base_offset: u64,
    /// The records, in offset order.
    pub records: Vec<Record>,
    /// Each record's offset. Offsets may skip: transaction markers, and for a
    /// `read_committed` reader aborted records, are read over but not handed out.
    pub offsets: Vec<u64>,
    /// Where to fetch from next: past what was read; or where a reset moved the reader; or,
    /// after a truncating leader change, back where the leader's log agrees with what was read.
    pub next_offset: u64,
    /// The end a reader can reach now: the high watermark, or for a `read_committed` reader
    /// the last stable offset.
    pub high_watermark: u64,
    /// Set when this fetch read nothing and moved the reader instead: to `next_offset`, or,
    /// when `auto_offset_reset = "none"` refused to move it, nowhere (`next_offset` is the
    /// position asked for, and later fetches from there fail).
    pub moved: Option<Moved>,
}

/// Why a fetch moved its reader instead of reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    /// The position was out of range, and `auto_offset_reset` applied: before the log start
    /// (retention had deleted the records there), or past the log end after a truncating
    /// leader change the reader could not detect by leader epoch. The partition's log start
    /// then.
    Reset {
        /// The oldest offset the partition held.
        log_start: u64,
    },
    /// The reader's leader changed, and the new leader's log diverges from what the reader
    /// had read (a truncating leader change), as the leader epoch of the last record read
    /// tells (KIP-320): the reader goes back to where the two agree, and reads what the
    /// leader now holds from there.
    Diverged,
}

impl Fetched {
    /// The records as runs of consecutive offsets: `(first offset, records)`.
    pub fn runs(&self) -> Vec<(u64, &[Record])> {
        let mut runs = Vec::new();
        let mut start = 0;
        for i in 1..=self.records.len() {
            if i == self.records.len() || self.offsets[i] != self.offsets[i - 1] + 1 {
                runs.push((self.offsets[start], &self.records[start..i]));
                start = i;
            }
        }
        runs
    }
}

/// What a consumer-group member was given for one generation of its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The group's generation.
    pub generation: u32,
    /// The partitions this member reads, in order.
    pub partitions: Vec<TopicPartition>,
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

    /// Registers the transactional producer with its coordinator: fences any older instance
    /// and aborts its open transaction. Needed once per start, before the first transaction.
    async fn init_transactions(&mut self) -> Result<(), LogError> {
        Err(LogError::Unsupported("transactions"))
    }

    /// Begins a transaction.
    async fn begin_transaction(&mut self) -> Result<(), LogError> {
        Err(LogError::Unsupported("transactions"))
    }

    /// Whether a transaction is open.
    fn in_transaction(&self) -> bool {
        false
    }

    /// The coordinator's number for the transaction the last [`Log::produce`] wrote in. It
    /// stays set when that call had to abort the transaction (a batch fenced after others
    /// were appended), so that the appended batches are still known as records of the
    /// aborted transaction, which no `read_committed` reader will see.
    fn produced_in_transaction(&self) -> Option<u64> {
        None
    }

    /// The input offsets committed with this producer's last committed transaction.
    async fn committed_offsets(&mut self) -> Result<BTreeMap<TopicPartition, u64>, LogError> {
        Err(LogError::Unsupported("committed offsets"))
    }

    /// Commits the open transaction, with the consumed offsets it covers.
    async fn commit_transaction(
        &mut self,
        _offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), LogError> {
        Err(LogError::Unsupported("transactions"))
    }

    /// Commits the open transaction with a source connector's position, so that its records
    /// and the position it has read the source to commit together (Kafka Connect's
    /// exactly-once source support, KIP-618, writes the position to its offsets topic inside
    /// the transaction). With no transaction open it commits the position alone.
    async fn commit_transaction_with_position(
        &mut self,
        _position: &TaskCheckpoint,
    ) -> Result<(), LogError> {
        Err(LogError::Unsupported("transactions"))
    }

    /// The source position this producer's last committed transaction stored, if any.
    async fn committed_position(&mut self) -> Result<Option<TaskCheckpoint>, LogError> {
        Err(LogError::Unsupported("committed positions"))
    }

    /// Aborts the open transaction.
    async fn abort_transaction(&mut self) -> Result<(), LogError> {
        Err(LogError::Unsupported("transactions"))
    }

    /// Joins `group` as a consumer of `topics` (join, then sync) and returns this member's
    /// assignment once the group's rebalance completes. A member that was in the group
    /// rejoins under its member id.
    async fn join_group(
        &mut self,
        _group: &str,
        _topics: &[TopicName],
    ) -> Result<Assignment, LogError> {
        Err(LogError::Unsupported("consumer groups"))
    }

    /// Tells the group coordinator this member is alive. `RebalanceInProgress` asks it to
    /// give up its partitions and join again; `NotMember` says it already lost them.
    async fn heartbeat(&mut self) -> Result<(), LogError> {
        Err(LogError::Unsupported("consumer groups"))
    }

    /// Commits input positions to the group, as this member of its current generation;
    /// refused with `NotMember` when the generation has moved on.
    async fn commit_offsets(
        &mut self,
        _offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), LogError> {
        Err(LogError::Unsupported("consumer groups"))
    }

    /// The positions the group has committed.
    async fn group_offsets(&mut self) -> Result<BTreeMap<TopicPartition, u64>, LogError> {
        Err(LogError::Unsupported("consumer groups"))
    }

    /// Registers `schema` (Avro JSON) under `subject` with the schema registry beside the
    /// cluster, as a Confluent serializer does, and returns its id.
    async fn register_schema(
        &mut self,
        _subject: &str,
        _schema: &str,
    ) -> Result<u32, RegistryError> {
        Err(RegistryError::Unavailable("no schema registry".into()))
    }

    /// The schema (Avro JSON) the registry holds under `id`.
    async fn schema_by_id(&mut self, _id: u32) -> Result<String, RegistryError> {
        Err(RegistryError::Unavailable("no schema registry".into()))
    }
}
