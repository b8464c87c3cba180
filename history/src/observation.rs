//! The observation records: what happened, when, in simulated milliseconds.

use nrtsim_workloads::{Key, Op, Table};
use serde::{Deserialize, Serialize};

/// The topics of the platform, named as users of a bank platform name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicName {
    /// Change envelopes as the CDC connector wrote them.
    Raw,
    /// Canonical records from the standardize job.
    Standard,
    /// Records enriched with reference data.
    Enriched,
    /// Records whose reference lookup missed, waiting for a newer store version.
    Redo,
    /// Poison records and records that ran out of redo attempts.
    Critical,
    /// The schema registry's registrations (`_schemas`, one partition); present only when
    /// the pipeline has a registry, and not one of the pipeline's topics.
    Schemas,
}

impl TopicName {
    /// Every topic of the pipeline, in a fixed order (`_schemas` is the registry's, not the
    /// pipeline's).
    pub const ALL: [TopicName; 5] = [
        TopicName::Raw,
        TopicName::Standard,
        TopicName::Enriched,
        TopicName::Redo,
        TopicName::Critical,
    ];

    /// The topic's name.
    pub fn name(self) -> &'static str {
        match self {
            TopicName::Raw => "raw",
            TopicName::Standard => "standard",
            TopicName::Enriched => "enriched",
            TopicName::Redo => "redo",
            TopicName::Critical => "critical",
            TopicName::Schemas => "_schemas",
        }
    }

    /// The topic called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([TopicName::Schemas])
            .find(|t| t.name() == name)
    }
}

/// A pipeline stage, the unit latency is measured per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The CDC connector.
    Cdc,
    /// The standardize job.
    Standardize,
    /// The enrich job (including its redo replays).
    Enrich,
    /// The lake sink.
    Lake,
    /// The fraud scorer (a consumer of the enriched topic).
    Fraud,
    /// The spend aggregator (a consumer of the enriched topic).
    Spend,
}

impl Stage {
    /// The stage's name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Cdc => "cdc",
            Stage::Standardize => "standardize",
            Stage::Enrich => "enrich",
            Stage::Lake => "lake",
            Stage::Fraud => "fraud",
            Stage::Spend => "spend",
        }
    }
}

/// One row change as the source database committed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceChange {
    /// Log sequence number, which is also the change id.
    pub lsn: u64,
    /// The row's key.
    pub key: Key,
    /// What the change did.
    pub op: Op,
    /// Digest of the row after the change; `None` for a delete.
    pub digest: Option<u64>,
    /// The CDC connector emits this change malformed; it must end in `critical`.
    pub poison: bool,
    /// For a card payment: the account and amount, what a batch recomputation of spend sums.
    #[serde(default)]
    pub payment: Option<Payment>,
    /// For an `accounts` row: its balance after the change, in minor units (the opening
    /// balance, for a snapshot row), for the balance-conservation oracle.
    #[serde(default)]
    pub balance_cents: Option<i64>,
}

/// The facts of a card payment that spend aggregates are computed from; its event time is
/// its commit time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The account charged.
    pub account_id: u64,
    /// Signed amount in minor units.
    pub amount_cents: i64,
}

/// A row a lake commit made visible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeRow {
    /// The change that produced this row version.
    pub change_id: u64,
    /// The row's key.
    pub key: Key,
    /// Digest of the row's source columns; `None` when the commit deletes the row.
    pub digest: Option<u64>,
    /// A later row of the same key in this commit replaced this version before any snapshot
    /// showed it (an upsert table keeps only each key's end state).
    #[serde(default)]
    pub folded: bool,
    /// For an `accounts` row: the balance the lake holds, in minor units.
    #[serde(default)]
    pub balance_cents: Option<i64>,
}

/// The lake table's files after a commit: what the layout costs in files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeFiles {
    /// Files this commit wrote (new deltas, rewritten files, compaction output).
    pub files_written: u32,
    /// Files the table's latest snapshot reads.
    pub live_files: u32,
    /// Of those, files smaller than the table's small-file threshold.
    pub small_files: u32,
    /// Of the files this commit wrote, those smaller than the threshold.
    #[serde(default)]
    pub small_files_written: u32,
}

/// Why a record left the main path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The record could not be decoded or failed validation.
    Poison,
    /// The reference lookup missed; the record waits in redo.
    ReferenceMiss,
    /// The record missed the reference store more often than allowed.
    RedoExhausted,
    /// The schema registry refused the schema the record was made under.
    SchemaRejected,
    /// The record could not be read with the schema its reader was built for.
    SchemaUnreadable,
}

/// Whether a fault began or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    /// The fault took effect.
    Start,
    /// The fault was healed (host restarted, link repaired, traffic released).
    End,
}

/// What the run was: written once, first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHeader {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The command that replays this run.
    pub replay: String,
    /// The version of nrtsim that wrote the history.
    pub nrtsim_version: String,
    /// The scenario file's text, so that `nrtsim check` can judge the history against the
    /// same SLOs and expectation without the file.
    #[serde(default)]
    pub scenario_toml: String,
}

/// One observation. Times are simulated milliseconds since the run began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Observation {
    /// The run's identity; the first observation of every history.
    Header(RunHeader),
    /// A source transaction committed (the initial snapshot is recorded as transaction 0).
    SourceCommit {
        /// Commit time: the intended time latency is measured from.
        t_ms: u64,
        /// Transaction id.
        txid: u64,
        /// Its row changes, in LSN order.
        changes: Vec<SourceChange>,
    },
    /// A produce was acknowledged: `change_ids[i]` sits at `base_offset + i`.
    Produced {
        /// When the producer learnt of the acknowledgement.
        t_ms: u64,
        /// The stage that produced.
        stage: Stage,
        /// The host that produced (`cdc`, `standardize-0`, ...).
        host: String,
        /// Target topic.
        topic: TopicName,
        /// Target partition.
        partition: u32,
        /// Offset of the first record.
        base_offset: u64,
        /// The change each record carries.
        change_ids: Vec<u64>,
        /// The Kafka transaction the records were written in (the transaction coordinator's
        /// number), when the producer is transactional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        txn: Option<u64>,
        /// The leader epoch of the leader that acknowledged, when the producer learnt it. A
        /// leader the controller had already replaced may still acknowledge (it does not know
        /// yet); what it wrote past the new leader's log end is gone once it learns.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader_epoch: Option<u32>,
    },
    /// A consumer read records: `change_ids[i]` sits at `base_offset + i`.
    Read {
        /// When the fetch response arrived.
        t_ms: u64,
        /// The reading stage.
        stage: Stage,
        /// The reading host.
        host: String,
        /// Topic read.
        topic: TopicName,
        /// Partition read.
        partition: u32,
        /// Offset of the first record.
        base_offset: u64,
        /// The change each record carries.
        change_ids: Vec<u64>,
    },
    /// A record was routed off the main path (to redo or critical).
    Routed {
        /// When.
        t_ms: u64,
        /// The change the record carries.
        change_id: u64,
        /// Where it went.
        to: TopicName,
        /// Why.
        reason: RouteReason,
        /// Redo attempts so far.
        attempt: u32,
    },
    /// A lake commit made rows visible in a new snapshot.
    LakeCommit {
        /// When readers can see the snapshot.
        t_ms: u64,
        /// The committing sink task.
        host: String,
        /// The checkpoint this commit belongs to (commits are idempotent by it).
        checkpoint_id: u64,
        /// The lake snapshot id.
        snapshot_id: u64,
        /// The rows the snapshot changed.
        rows: Vec<LakeRow>,
        /// The table's files after the commit.
        #[serde(default)]
        files: LakeFiles,
    },
    /// A partition leader appended an acks=0 batch. Its producer gets no answer and records
    /// no `produced`, so the leader records where the records went: without it, where a
    /// change's redo or critical record stands would be unknown. Recorded by the leader.
    AppendedUnacknowledged {
        /// When.
        t_ms: u64,
        /// The leading broker.
        host: String,
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: u32,
        /// Offset of the first record.
        base_offset: u64,
        /// Per record, its change.
        change_ids: Vec<u64>,
    },
    /// A lake sink's commit of `checkpoint_id` was refused: the table had rolled the
    /// checkpoint's pre-commit back, left uncommitted longer than the table's pre-commit
    /// timeout. The rows of `change_ids` were written as files no snapshot will read. Recorded
    /// by the sink at each refused attempt.
    LakeRolledBack {
        /// When the commit was refused.
        t_ms: u64,
        /// The sink task.
        host: String,
        /// The checkpoint whose pre-commit was rolled back.
        checkpoint_id: u64,
        /// When the pre-commit was made.
        pre_committed_ms: u64,
        /// The changes whose rows the pre-commit held.
        change_ids: Vec<u64>,
    },
    /// A job task completed a checkpoint.
    Checkpoint {
        /// When.
        t_ms: u64,
        /// The task.
        host: String,
        /// Checkpoint id.
        checkpoint_id: u64,
    },
    /// A fault began or ended.
    Fault {
        /// When.
        t_ms: u64,
        /// Fault kind as the scenario spelt it.
        kind: String,
        /// Resolved target description.
        target: String,
        /// Start or end.
        phase: FaultPhase,
    },
    /// The workload stopped: no source commits after this.
    WorkloadEnd {
        /// When.
        t_ms: u64,
    },
    /// The run ended. `drained` says whether the pipeline finished before the drain timeout:
    /// every change reached its end, or nothing was left in flight (so what never arrived is
    /// lost, not late).
    RunEnd {
        /// When.
        t_ms: u64,
        /// Whether the pipeline drained before the drain timeout.
        drained: bool,
    },
    /// A spend aggregate emitted (or re-emitted, after a late payment) for one account and
    /// event-time window; the last emission of a window is its value.
    Aggregate {
        /// When.
        t_ms: u64,
        /// The account.
        account_id: u64,
        /// Start of the window, event time in ms.
        window_start_ms: u64,
        /// Length of the window in ms.
        window_ms: u64,
        /// Sum of the payments in the window, minor units.
        spend_cents: i64,
        /// Payments in the window.
        payments: u32,
    },
    /// The spend aggregator's watermark advanced (or the aggregator started): windows ending
    /// at or before it have fired.
    Watermark {
        /// When.
        t_ms: u64,
        /// The watermark, event time in ms.
        watermark_ms: u64,
        /// The aggregator's window length in ms.
        window_ms: u64,
        /// Payments dropped so far because they arrived after their window closed.
        late_dropped: u64,
    },
    /// The CDC connector emitted a transaction's END boundary event.
    TxnEnd {
        /// When.
        t_ms: u64,
        /// The source transaction.
        txid: u64,
        /// The change events the END says the transaction had.
        event_count: u64,
    },
    /// The transaction coordinator decided a Kafka transaction's outcome.
    KafkaTxn {
        /// When.
        t_ms: u64,
        /// The coordinator's number for the transaction.
        txn: u64,
        /// The producer's `transactional.id`.
        producer: String,
        /// Committed (true) or aborted (false).
        committed: bool,
        /// Aborted by the coordinator because it outlived its timeout.
        timed_out: bool,
    },
    /// A partition leader wrote an abort marker: the records it aborted there.
    AbortMarker {
        /// When.
        t_ms: u64,
        /// Topic.
        topic: TopicName,
        /// Partition.
        partition: u32,
        /// Offsets of the aborted transaction's records on this partition.
        offsets: Vec<u64>,
        /// The change each of them carries.
        change_ids: Vec<u64>,
    },
    /// The fraud scorer flagged a card payment.
    FraudAlert {
        /// When.
        t_ms: u64,
        /// The change that inserted the payment.
        change_id: u64,
        /// Its score, 0 to 100.
        score: u32,
        /// The rules that fired, comma-separated.
        reasons: String,
    },
    /// The schema registry's answer to a standardize task about a table schema it met for
    /// the first time: an id, or why the schema was refused.
    SchemaDecision {
        /// When.
        t_ms: u64,
        /// The task that asked.
        host: String,
        /// The subject.
        subject: String,
        /// The source table's schema version.
        table_version: u32,
        /// The schema id; none when refused.
        id: Option<u32>,
        /// Why it was refused (empty when registered).
        reason: String,
    },
    /// The log start of a partition's leader moved: retention there deleted every record
    /// before `log_start`, or a broker whose log starts there took over the leadership.
    /// Readers are served from `log_start` on; the latest one recorded is the partition's.
    RetentionDeleted {
        /// When.
        t_ms: u64,
        /// The leading broker.
        host: String,
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: u32,
        /// The new log start.
        log_start: u64,
    },
    /// A consumer's position was out of range, and `auto.offset.reset` moved it. Either it was
    /// before the log start (`from < log_start`: retention had deleted the records there), and
    /// the offsets in `[from, to)` were never read by this reader; or it was past the end of a
    /// log a leader change had truncated (`from >= log_start`), and the reader went to `to`
    /// (back, under `latest`, to the end it can reach, skipping whatever the new leader wrote
    /// before it since the truncation). `to == from` when the policy (`none`) refused to move
    /// it: the reader reads that partition no more. Recorded by the reading task.
    OffsetReset {
        /// When.
        t_ms: u64,
        /// The reading stage.
        stage: Stage,
        /// The reading task.
        host: String,
        /// The topic read.
        topic: TopicName,
        /// The partition read.
        partition: u32,
        /// The position the reader asked for.
        from: u64,
        /// The position it was moved to.
        to: u64,
        /// The partition's log start when it was asked: offsets below it had been deleted.
        log_start: u64,
    },
    /// A reader's leader changed, and the new leader's log diverges from what the reader had
    /// read below its position (a truncating leader change: an unclean election, or a leader
    /// that lost its unflushed tail). The leader epoch of the last record read told (KIP-320),
    /// and the reader went back from `from` to `to`, where the two logs agree: what it reads
    /// from there on differs from what it read at those offsets before. `to == from` when
    /// `auto.offset.reset = "none"` refused to move it: the reader reads that partition no
    /// more. Recorded by the reading task.
    TruncationDetected {
        /// When.
        t_ms: u64,
        /// The reading stage.
        stage: Stage,
        /// The reading task.
        host: String,
        /// The topic read.
        topic: TopicName,
        /// The partition read.
        partition: u32,
        /// The reader's position.
        from: u64,
        /// Where it went back to: the end of the leader's log in the epoch of the last record
        /// the reader had read.
        to: u64,
    },
    /// A broker took over as leader of a partition in `epoch`, its log ending at `log_end`.
    /// Whatever earlier leaders acknowledged at `log_end` or past it is gone from the
    /// partition (a truncating leader change: acks=1 writes no follower had yet, an unclean
    /// election, or a leader back from a power loss without its unflushed tail) unless written
    /// again; a new leader holding an older epoch's records may also differ below `log_end`.
    /// Recorded by the new leader at every new leadership, the first ones of a run and those
    /// that cut nothing included; a broker that restarts while the controller cannot elect
    /// again may take the same epoch over.
    LeaderChange {
        /// When.
        t_ms: u64,
        /// The new leader.
        host: String,
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: u32,
        /// The leader epoch it leads in.
        epoch: u32,
        /// Its log end when it took over.
        log_end: u64,
    },
    /// The CDC connector emitted one chunk of an incremental snapshot: the rows of `table`
    /// whose ids are in `[from_id, to_id)` (no upper bound when `to_id` is `None`), as the
    /// source held them at LSN `high_lsn`. Each row is sent as a snapshot read of the change
    /// that last wrote it, listed in `rows`; every earlier change of that key is taken up in
    /// the row and is not streamed on its own.
    SnapshotChunk {
        /// When the chunk was emitted.
        t_ms: u64,
        /// The connector.
        host: String,
        /// The table read.
        table: Table,
        /// The first id of the chunk's key range.
        from_id: u64,
        /// The end of the range (exclusive); `None` for the table's last chunk.
        to_id: Option<u64>,
        /// The source's position when the chunk's read began (the low watermark).
        low_lsn: u64,
        /// The source's position the rows stand at (the high watermark).
        high_lsn: u64,
        /// Per row, the change id that last wrote it, in key order.
        rows: Vec<u64>,
    },
}

impl Observation {
    /// The observation's simulated time (the header has none and reports 0).
    pub fn t_ms(&self) -> u64 {
        match self {
            Observation::Header(_) => 0,
            Observation::SourceCommit { t_ms, .. }
            | Observation::Produced { t_ms, .. }
            | Observation::Read { t_ms, .. }
            | Observation::Routed { t_ms, .. }
            | Observation::LakeCommit { t_ms, .. }
            | Observation::LakeRolledBack { t_ms, .. }
            | Observation::AppendedUnacknowledged { t_ms, .. }
            | Observation::Checkpoint { t_ms, .. }
            | Observation::Fault { t_ms, .. }
            | Observation::WorkloadEnd { t_ms }
            | Observation::RunEnd { t_ms, .. }
            | Observation::Aggregate { t_ms, .. }
            | Observation::Watermark { t_ms, .. }
            | Observation::TxnEnd { t_ms, .. }
            | Observation::KafkaTxn { t_ms, .. }
            | Observation::AbortMarker { t_ms, .. }
            | Observation::FraudAlert { t_ms, .. }
            | Observation::SchemaDecision { t_ms, .. }
            | Observation::SnapshotChunk { t_ms, .. }
            | Observation::OffsetReset { t_ms, .. }
            | Observation::RetentionDeleted { t_ms, .. }
            | Observation::TruncationDetected { t_ms, .. }
            | Observation::LeaderChange { t_ms, .. } => *t_ms,
        }
    }
}
