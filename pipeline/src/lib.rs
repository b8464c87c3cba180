//! The bank platform's logic, independent of transport: the CDC connector, standardize,
//! enrich, the lake sink and table, the reference store, and the `Log` trait the job loops are
//! written against.

pub mod canonical;
pub mod checkpoint;
pub mod config;
pub mod enrich;
pub mod env;
pub mod fraud;
pub mod jobs;
pub mod lake;
pub mod log;
pub mod record;
pub mod schema;
pub mod snapshot;
pub mod spend;
pub mod standardize;

pub use config::{
    Acks, CdcConfig, ConsumerConfig, CostConfig, Delivery, EnrichConfig, Isolation,
    LakeCommitPolicy, LakeConfig, LakeLayout, LakeMode, OffsetReset, OnMiss, OnTxnAbort,
    Parallelism, PartitionKey, PipelineConfig, ProducerConfig, RedoAtEnd, SchemaRegistryConfig,
    SnapshotHandover, SnapshotMode, TransactionsConfig, TxMetadata, TxnCommit, TxnIdScope,
};
pub use env::{slowed_us, CheckpointStore, Env, OpenTxn, SourceLog, StagedCommit, TaskCheckpoint};
pub use log::{Appended, Assignment, Fetched, Log, LogError, Moved, ProduceBatch, ProducerState};
pub use record::{partition_for, Record, RecordMeta, TopicPartition};
