//! The `[pipeline]` and `[costs]` sections of a scenario: how the jobs deliver, checkpoint,
//! produce, consume, and what each record costs them.

use crate::fraud::FraudConfig;
use crate::schema::Compatibility;
use crate::spend::SpendConfig;
use nrtsim_workloads::SimDuration;
use serde::{Deserialize, Serialize};

/// The delivery guarantee each job is configured for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Input offsets are committed before the outputs are written.
    AtMostOnce,
    /// Outputs are flushed before input offsets are committed.
    AtLeastOnce,
    /// Outputs and input offsets commit together at each checkpoint.
    #[default]
    ExactlyOnce,
}

/// How many acknowledgements a producer waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// Fire and forget.
    #[serde(rename = "0")]
    None,
    /// The leader's append.
    #[serde(rename = "1")]
    Leader,
    /// Every in-sync replica.
    #[default]
    #[serde(rename = "all")]
    All,
}

/// Producer settings shared by every job's producer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// `"0"`, `"1"` or `"all"`. Default `"all"`.
    pub acks: Acks,
    /// Producer id and sequence numbers, so brokers drop retried duplicates. Default true.
    pub idempotence: bool,
    /// Batches in flight per partition. Default 5 (Kafka allows at most 5 with idempotence).
    pub max_in_flight: u32,
    /// Retries of a failed or timed-out batch before giving up. Default 10.
    pub retries: u32,
    /// Wait before retrying. Default 100ms.
    pub retry_backoff: SimDuration,
    /// How long a request may go unanswered before the connection is dropped. Default 2s.
    pub request_timeout: SimDuration,
    /// How long a batch may wait for more records. Default 5ms.
    pub linger: SimDuration,
    /// The most records in one batch. Default 500.
    pub batch_records: u32,
    /// `metadata.max.age.ms`, for the task's whole client: how long it goes on sending to the
    /// leaders it knows before it asks again, if no request has failed meanwhile. A failed
    /// request (not the leader, a timeout, a broken connection) makes it ask at once.
    /// Default 5m, Kafka's.
    pub metadata_max_age: SimDuration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            idempotence: true,
            max_in_flight: 5,
            retries: 10,
            retry_backoff: SimDuration::from_ms(100),
            request_timeout: SimDuration::from_secs(2),
            linger: SimDuration::from_ms(5),
            batch_records: 500,
            metadata_max_age: SimDuration::from_secs(300),
        }
    }
}

/// Which records a consumer may see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Only committed records, up to the last stable offset.
    #[default]
    ReadCommitted,
    /// Everything up to the high watermark, aborted transactions included.
    ReadUncommitted,
}

/// Where a consumer goes when its position is out of range: before the log start, because
/// retention deleted the records it had not read yet; or past the log end, after a truncating
/// leader change it could not detect by leader epoch. `None` also stops a reader that did
/// detect one (Kafka's consumer then fails with a log-truncation error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// To the oldest record still held.
    Earliest,
    /// To the end a reader can reach: the high watermark, or the last stable offset for
    /// `read_committed`. Kafka's default.
    #[default]
    Latest,
    /// Nowhere: the fetch fails, and the task reads nothing more from that partition.
    None,
}

/// Consumer settings shared by every job's consumer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// `read_committed` or `read_uncommitted`. Default `read_committed`.
    pub isolation: Isolation,
    /// The most records one fetch returns per partition. Default 1000.
    pub max_poll_records: u32,
    /// How long a fetch waits at the broker for data. Default 50ms.
    pub fetch_max_wait: SimDuration,
    /// Whether the plain Kafka consumers (the lake sink, unless it is the exactly-once
    /// two-phase-commit sink) manage their partitions through a consumer group: a group
    /// coordinator assigns partitions, moves them when a member joins or misses its session
    /// timeout, and keeps the committed positions. Off, each task reads fixed partitions and
    /// keeps its positions in its own checkpoints. Default false.
    pub group: bool,
    /// `session.timeout.ms`: a member not heard from for this long is removed from its group
    /// and its partitions go to the others. Default 45s, Kafka's.
    pub session_timeout: SimDuration,
    /// `heartbeat.interval.ms`. Default 3s, Kafka's.
    pub heartbeat_interval: SimDuration,
    /// `enable.auto.commit`: commit the positions read so far on a timer, whether or not
    /// their records have been processed (at-most-once for a sink that buffers). Kafka's
    /// default is true; nrtsim's is false, so that a scenario opts into the risk.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`. Default 5s, Kafka's.
    pub auto_commit_interval: SimDuration,
    /// `auto.offset.reset`: `earliest`, `latest` or `none`, for a position retention has
    /// deleted past. Default `latest`, Kafka's.
    pub auto_offset_reset: OffsetReset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            isolation: Isolation::ReadCommitted,
            max_poll_records: 1000,
            fetch_max_wait: SimDuration::from_ms(50),
            group: false,
            session_timeout: SimDuration::from_ms(45_000),
            heartbeat_interval: SimDuration::from_ms(3_000),
            enable_auto_commit: false,
            auto_commit_interval: SimDuration::from_ms(5_000),
            auto_offset_reset: OffsetReset::Latest,
        }
    }
}

/// Parallel tasks per job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Parallelism {
    /// Standardize tasks. Default 2.
    pub standardize: u32,
    /// Enrich tasks. Default 2.
    pub enrich: u32,
    /// Lake sink tasks. Default 1.
    pub lake: u32,
}

impl Default for Parallelism {
    fn default() -> Self {
        Self {
            standardize: 2,
            enrich: 2,
            lake: 1,
        }
    }
}

/// What the enrich job does with a record whose reference lookup missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMiss {
    /// Send it to `redo`, to be replayed when a newer store version loads.
    #[default]
    Redo,
    /// Drop it (a known mistake: the change never reaches the lake).
    Drop,
}

/// What the end of a run waits for in `redo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedoAtEnd {
    /// Records parked in `redo` count as settled: they wait for a store version that may be
    /// hours away (reported as parked).
    #[default]
    Park,
    /// The run drains only once `redo` is empty: every record in it enriched on a later
    /// store version or sent to `critical` after its last attempt.
    Wait,
}

/// Enrichment settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// How often a newer reference-store version is built and swapped in. Default 1h.
    pub store_refresh: SimDuration,
    /// Redo attempts before a record goes to `critical`. Default 3.
    pub max_redo_attempts: u32,
    /// `redo` or `drop`. Default `redo`.
    pub on_miss: OnMiss,
    /// Whether a redo record carries an attempt counter. Without one (`false`, a known mistake)
    /// `max_redo_attempts` cannot be enforced and a record that never resolves cycles through
    /// `redo` forever. Default `true`.
    pub attempt_counter: bool,
    /// `park` or `wait`. Default `park`.
    pub redo_at_end: RedoAtEnd,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            store_refresh: SimDuration::from_secs(3600),
            max_redo_attempts: 3,
            on_miss: OnMiss::Redo,
            attempt_counter: true,
            redo_at_end: RedoAtEnd::Park,
        }
    }
}

/// How the lake table keeps changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LakeMode {
    /// One row per key: its latest state.
    #[default]
    Upsert,
    /// Every change kept, with its op and LSN.
    Changelog,
}

/// How the lake table lays out its files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LakeLayout {
    /// Each commit rewrites the files it touches.
    CopyOnWrite,
    /// Each commit adds delta files; compaction folds them in.
    #[default]
    MergeOnRead,
}

/// When the lake sink commits a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LakeCommitPolicy {
    /// At every checkpoint, with the input positions the rows cover (exactly-once) or just
    /// before the positions are checkpointed (at-least-once).
    #[default]
    Checkpoint,
    /// On the sink's own timer (`commit_interval`), apart from the checkpoints that save its
    /// input positions (a known mistake: rows and positions part, so a crash loses what was
    /// checkpointed but not committed and applies twice what was committed but not
    /// checkpointed).
    Timer,
}

/// Lake table settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LakeConfig {
    /// `upsert` or `changelog`. Default `upsert`.
    pub mode: LakeMode,
    /// `copy-on-write` or `merge-on-read`. Default `merge-on-read`.
    pub layout: LakeLayout,
    /// How often merge-on-read deltas are compacted. Default 5m.
    pub compaction_interval: SimDuration,
    /// Buckets (file groups) per table; a key's bucket holds its rows. Default 4.
    pub buckets: u32,
    /// A file with fewer rows than this counts as small (about 20 MB of 200-byte rows, well
    /// short of the 128 MB a lake aims for). Default 100000.
    pub small_file_rows: u64,
    /// `checkpoint` or `timer`. Default `checkpoint`.
    pub commit: LakeCommitPolicy,
    /// How often a `timer` sink commits. Default 15s.
    pub commit_interval: SimDuration,
    /// How long the table keeps an exactly-once sink's pre-committed files waiting for their
    /// commit before it rolls them back (their rows are then lost). Default 15m.
    pub pre_commit_timeout: SimDuration,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            mode: LakeMode::Upsert,
            layout: LakeLayout::MergeOnRead,
            compaction_interval: SimDuration::from_secs(300),
            buckets: 4,
            small_file_rows: 100_000,
            commit: LakeCommitPolicy::Checkpoint,
            commit_interval: SimDuration::from_secs(15),
            pre_commit_timeout: SimDuration::from_secs(900),
        }
    }
}

/// The `[pipeline]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// `at-most-once`, `at-least-once` or `exactly-once`. Default `exactly-once`.
    pub delivery: Delivery,
    /// How often jobs checkpoint (and the lake commits). Default 10s.
    pub checkpoint_interval: SimDuration,
    /// Producer settings.
    pub producer: ProducerConfig,
    /// Consumer settings.
    pub consumer: ConsumerConfig,
    /// Tasks per job.
    pub parallelism: Parallelism,
    /// Enrichment settings.
    pub enrich: EnrichConfig,
    /// Lake settings.
    pub lake: LakeConfig,
    /// What the CDC connector keys records by. Default `customer`.
    pub partition_key: PartitionKey,
    /// The fraud scorer on the enriched topic (off by default).
    pub fraud: FraudConfig,
    /// Per-account spend aggregates in event-time windows (off by default).
    pub spend: SpendConfig,
    /// `persisted` or `in-memory`: the CDC connector's transaction-metadata counters.
    pub tx_metadata: TxMetadata,
    /// Kafka transactions for the standardize and enrich tasks' outputs, and under
    /// exactly-once for the CDC connector's.
    pub transactions: TransactionsConfig,
    /// A schema registry for the `standard` topic (off by default).
    pub schema_registry: SchemaRegistryConfig,
    /// When the CDC connector starts and how it takes the source's existing rows.
    pub cdc: CdcConfig,
}

/// The `[pipeline.cdc]` table: when the CDC connector is deployed and how it reads the rows
/// the source already holds before it follows the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdcConfig {
    /// When the connector starts, from the beginning of the run; the source commits from the
    /// beginning whether it is there or not. Default 0s.
    pub start: SimDuration,
    /// `initial` or `incremental`: how the existing rows are read. Default `initial`.
    pub snapshot: SnapshotMode,
    /// Under `incremental`: the most rows in one chunk. Default 8096, Flink CDC's.
    pub chunk_rows: u32,
    /// Under `incremental`: how long a full chunk's read (its `SELECT`) takes; a smaller one
    /// takes its share. The source goes on committing meanwhile. Default 100ms.
    pub chunk_read: SimDuration,
    /// Under `incremental`: `watermarks` or `none`, how the chunks are joined to the log.
    /// Default `watermarks`.
    pub handover: SnapshotHandover,
    /// The tables captured: a regular expression a source table's whole name must match
    /// (`orders`, or a shard's `orders_2`), as a connector's table include list is. Default
    /// `.*`, every table.
    pub tables: String,
}

impl CdcConfig {
    /// The compiled `tables` pattern, anchored at both ends; `None` when it takes every
    /// table. The error says why the pattern does not compile.
    pub fn capture(&self) -> Result<Option<regex::Regex>, String> {
        if self.tables == ".*" {
            return Ok(None);
        }
        // Checked as written first, so that an error points into the user's own text.
        regex::Regex::new(&self.tables).map_err(|e| e.to_string())?;
        regex::Regex::new(&format!("^(?:{})$", self.tables))
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

impl Default for CdcConfig {
    fn default() -> Self {
        Self {
            start: SimDuration::from_ms(0),
            snapshot: SnapshotMode::Initial,
            chunk_rows: 8096,
            chunk_read: SimDuration::from_ms(100),
            handover: SnapshotHandover::Watermarks,
            tables: ".*".to_string(),
        }
    }
}

/// How the CDC connector reads the rows the source held before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    /// The existing rows are one consistent snapshot at the head of the log (the source's
    /// transaction 0, read under a lock or from one consistent view), and the log follows it
    /// from the start, however late the connector starts.
    #[default]
    Initial,
    /// Flink CDC's lock-free incremental snapshot: each table is read in chunks of primary
    /// keys while the source keeps committing, then the log is read from the first chunk's
    /// high watermark on.
    Incremental,
}

/// How an incremental snapshot's chunks are joined to the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotHandover {
    /// Per chunk: note the log position (low watermark), read the chunk, note the position
    /// again (high watermark), and fold the chunk's changes between the two into its rows;
    /// the log phase then skips each key's changes up to its chunk's high watermark.
    #[default]
    Watermarks,
    /// A known mistake: each chunk is taken as read, and the log starts where the source
    /// stands when the last chunk is done. Changes to a key after its chunk was read and
    /// before the log starts are never emitted.
    None,
}

/// The `[pipeline.schema_registry]` table. With it on, a `schema-registry` host keeps
/// subjects and versions in a `_schemas` topic, the standardize job registers the schema of
/// every table version it meets and writes `standard` records in the Confluent wire format
/// (Avro), and the enrich job reads them by their schema id. Off, `standard` carries the
/// canonical binary form (the tables' first columns): an added column is left out, and a
/// change that lacks a column the canonical record needs goes to `critical`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Whether the registry runs. Default false.
    pub enabled: bool,
    /// Every subject's compatibility mode: `backward`, `forward`, `full` or `none`. Default
    /// `backward`, the registry's own default.
    pub compatibility: Compatibility,
}

/// The `[pipeline] transactions` table: Kafka transactions for the stream tasks, and under
/// exactly-once delivery for the CDC connector. Each task is a transactional producer (its
/// host name is its `transactional.id`); its outputs since the last commit and its input
/// positions (the connector's source position) commit in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionsConfig {
    /// Whether the tasks use transactions. Default: on under exactly-once delivery (which
    /// requires them), off otherwise.
    pub enabled: Option<bool>,
    /// `interval` (default: every `commit_interval`, as Kafka Streams commits) or
    /// `checkpoint` (at each checkpoint, as a stream processor's two-phase Kafka sink does).
    /// Downstream `read_committed` readers see records only once committed, so the commit
    /// cadence bounds each hop's latency from below.
    pub commit: TxnCommit,
    /// Time between commits under `commit = "interval"`. Default 100ms.
    pub commit_interval: SimDuration,
    /// `transaction.timeout.ms`: the coordinator aborts a transaction open longer. Default 60s.
    pub timeout: SimDuration,
    /// `restore` (default) or `continue` (a known mistake): what a task does when its
    /// transaction could not commit.
    pub on_abort: OnTxnAbort,
    /// `task` (default): a task's `transactional.id` is its name, the same for any instance
    /// of it, so a new instance fences the old; `instance` (a known mistake): each instance
    /// has its own, and nothing stops a zombie.
    pub id: TxnIdScope,
}

/// What a stream task's `transactional.id` is bound to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnIdScope {
    /// The task: every instance of it shares one id.
    #[default]
    Task,
    /// The instance (host): a second instance of a task has an id of its own.
    Instance,
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            commit: TxnCommit::Interval,
            commit_interval: SimDuration::from_ms(100),
            timeout: SimDuration::from_secs(60),
            on_abort: OnTxnAbort::Restore,
            id: TxnIdScope::Task,
        }
    }
}

/// When a transactional task commits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnCommit {
    /// On its own interval.
    #[default]
    Interval,
    /// At each checkpoint.
    Checkpoint,
}

/// What a transactional task does when its transaction was aborted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTxnAbort {
    /// Restart from the positions of the last committed transaction and redo the rest.
    #[default]
    Restore,
    /// Take a new producer epoch and carry on from the current position (a known mistake:
    /// the aborted transaction's records are never written again).
    Continue,
}

impl PipelineConfig {
    /// Whether the stream tasks use Kafka transactions (and, under exactly-once delivery, the
    /// CDC connector).
    pub fn transactional(&self) -> bool {
        self.transactions
            .enabled
            .unwrap_or(self.delivery == Delivery::ExactlyOnce)
    }

    /// Whether the lake sink is the two-phase-commit sink: exactly-once delivery with rows
    /// committed at each checkpoint.
    pub fn two_phase_lake_sink(&self) -> bool {
        self.delivery == Delivery::ExactlyOnce && self.lake.commit == LakeCommitPolicy::Checkpoint
    }

    /// Whether the lake sink is a consumer-group member (see [`ConsumerConfig::group`]).
    pub fn group_lake_sink(&self) -> bool {
        self.consumer.group && !self.two_phase_lake_sink()
    }
}

/// Where the CDC connector keeps its transaction-metadata counters (the events emitted so far
/// for the transaction it is in the middle of), which its END boundary events report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxMetadata {
    /// In its checkpoint, with its position: a restart mid-transaction counts on.
    #[default]
    Persisted,
    /// In memory only (a known mistake): a restart mid-transaction starts from zero, and the
    /// END undercounts the transaction.
    InMemory,
}

/// What picks a record's partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKey {
    /// The customer (or account) id: one customer's changes stay in order on one partition.
    #[default]
    Customer,
    /// A key drawn per record (a known mistake: one customer's changes scatter over partitions
    /// and overtake each other).
    Random,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            delivery: Delivery::ExactlyOnce,
            checkpoint_interval: SimDuration::from_secs(10),
            producer: ProducerConfig::default(),
            consumer: ConsumerConfig::default(),
            parallelism: Parallelism::default(),
            enrich: EnrichConfig::default(),
            lake: LakeConfig::default(),
            partition_key: PartitionKey::Customer,
            fraud: FraudConfig::default(),
            spend: SpendConfig::default(),
            tx_metadata: TxMetadata::Persisted,
            transactions: TransactionsConfig::default(),
            schema_registry: SchemaRegistryConfig::default(),
            cdc: CdcConfig::default(),
        }
    }
}

/// The `[costs]` section: simulated time each unit of work takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostConfig {
    /// CDC connector, per change read from the log. Default 5us.
    pub cdc_per_record: SimDuration,
    /// Standardize, per record. Default 20us.
    pub standardize_per_record: SimDuration,
    /// Enrich, per record. Default 30us.
    pub enrich_per_record: SimDuration,
    /// Lake sink, per record written. Default 10us.
    pub lake_per_record: SimDuration,
    /// Lake commit, per commit (metadata write). Default 200ms.
    pub lake_commit: SimDuration,
    /// Broker, per record appended (leader or follower). Default 2us.
    pub broker_append_per_record: SimDuration,
    /// Fraud scorer, per record read. Default 20us.
    pub fraud_per_record: SimDuration,
    /// Spend aggregator, per record read. Default 10us.
    pub spend_per_record: SimDuration,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            cdc_per_record: SimDuration::from_us(5),
            standardize_per_record: SimDuration::from_us(20),
            enrich_per_record: SimDuration::from_us(30),
            lake_per_record: SimDuration::from_us(10),
            lake_commit: SimDuration::from_ms(200),
            broker_append_per_record: SimDuration::from_us(2),
            fraud_per_record: SimDuration::from_us(20),
            spend_per_record: SimDuration::from_us(10),
        }
    }
}
