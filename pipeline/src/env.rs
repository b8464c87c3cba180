//! What a job needs from the world it runs in besides the log: the time, a place to record
//! observations, durable checkpoint storage, and the source database's commit log.

use crate::lake::PendingWrite;
use crate::log::ProducerState;
use crate::record::TopicPartition;
use crate::snapshot::SnapshotProgress;
use crate::spend::SpendAggregator;
use nrtsim_history::Observation;
use nrtsim_workloads::{Change, Table, TableSchema, Transaction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Time and observation recording for one host.
pub trait Env {
    /// The host's name (`cdc`, `enrich-1`, ...).
    fn host(&self) -> &str;
    /// Simulated (or real) milliseconds since the run began.
    fn now_ms(&self) -> u64;
    /// Records an observation in the run's history.
    fn record(&self, obs: Observation);
    /// How many times longer than its costs say the host's work takes now: above 1 while a
    /// `slow` fault lasts.
    fn slowdown(&self) -> f64 {
        1.0
    }
}

/// `us` of work at a host running `slowdown` times slower, rounded to whole microseconds.
pub fn slowed_us(us: u64, slowdown: f64) -> u64 {
    if slowdown == 1.0 {
        us
    } else {
        (us as f64 * slowdown).round() as u64
    }
}

/// A source transaction the CDC connector has handed over in part: the rest comes in a later
/// read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTxn {
    /// The transaction.
    pub txid: u64,
    /// Change events emitted for it so far.
    pub emitted: u64,
    /// Whether the snapshot took up one of its changes in a piece so far, or the transaction
    /// began before the log phase's start: a transaction not whole in the stream gets no END.
    pub partial: bool,
}

/// A task's durable checkpoint: where it had got to, and what it had produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    /// Checkpoint id, increasing per task.
    pub id: u64,
    /// Next offset to read per input partition.
    pub offsets: BTreeMap<TopicPartition, u64>,
    /// The CDC connector's position: the next LSN to read.
    pub next_lsn: u64,
    /// The producer's state, restored under exactly-once delivery.
    pub producer: Option<ProducerState>,
    /// The reference-store version whose redo backlog has been replayed (enrich only).
    pub redo_version: u32,
    /// A two-phase lake sink's pre-committed rows not yet committed, by the checkpoint that
    /// pre-committed them: committed once that checkpoint completes (again after a restart,
    /// if the commit had not happened).
    pub staged: BTreeMap<u64, StagedCommit>,
    /// The spend aggregator's windows and watermark (spend only).
    pub spend: Option<SpendAggregator>,
    /// The CDC connector's transaction-metadata counter: the transaction it is in the middle
    /// of (one handed over in pieces) and what it has emitted for it so far.
    pub open_txn: Option<OpenTxn>,
    /// The CDC connector's incremental snapshot, while it runs and after (its chunks' marks
    /// decide what the log phase skips).
    pub snapshot: Option<SnapshotProgress>,
}

/// Rows a two-phase lake sink pre-committed with one checkpoint, and the input positions they
/// bring the sink to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedCommit {
    /// The row versions, in the order read.
    pub writes: Vec<PendingWrite>,
    /// The sink's input positions after them.
    pub offsets: BTreeMap<TopicPartition, u64>,
}

/// Durable storage for checkpoints (a state backend) with the checkpoint coordinator beside
/// it: survives a task's crash. See [`crate::checkpoint`].
pub trait CheckpointStore {
    /// The snapshot the task restores from: its part of its job's last completed checkpoint.
    fn load(&self, task: &str) -> Option<TaskCheckpoint>;
    /// Stores the task's snapshot for checkpoint `checkpoint.id`, acknowledging it.
    fn save(&self, task: &str, checkpoint: TaskCheckpoint);
    /// The last completed checkpoint of the task's job (0 if none, or if the job's
    /// checkpoints are not coordinated).
    fn completed(&self, task: &str) -> u64;
    /// Counts the task's starts; each start gets a new number (its incarnation). A start after
    /// the first is a restart, which aborts the checkpoints the task's job has not completed
    /// (see [`crate::checkpoint::Coordinator::fail`]).
    fn next_incarnation(&self, task: &str) -> u64;
}

/// The source database's commit log as the CDC connector reads it.
pub trait SourceLog {
    /// Committed transactions whose changes have LSNs at or after `from_lsn`, at most `max`
    /// changes' worth (whole transactions, at least one; a transaction larger than `max` comes
    /// in pieces).
    fn read_from(&self, from_lsn: u64, max_changes: usize) -> Vec<Transaction>;
    /// The LSN of transaction `txid`'s last change (its commit record), if it committed.
    fn last_lsn_of(&self, txid: u64) -> Option<u64>;
    /// The schema `table` had when a change committed at `commit_ms` was made (the source's
    /// catalog, as the connector follows it through the DDL in the log).
    fn table_schema(&self, table: Table, commit_ms: u64) -> Arc<TableSchema>;
    /// The source's position: the LSN of its last committed change (0 before any).
    fn head_lsn(&self) -> u64;
    /// A `SELECT` over `table` as the source holds it now: up to `max` rows whose ids are at
    /// or above `from_id`, in id order, each given as the change that last wrote it with that
    /// change's commit time.
    fn scan(&self, table: Table, from_id: u64, max: usize) -> Vec<(Change, u64)>;
}
