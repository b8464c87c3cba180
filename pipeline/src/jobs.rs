//! The job loops: the CDC connector, the standardize and enrich tasks, and the lake sink.
//! Each is written against [`Log`], [`Env`] and [`CheckpointStore`], so the same loop runs on
//! simulated brokers and on a real cluster. A task that cannot produce fails over the way a
//! stream processor's task does: it restarts from its last completed checkpoint.

use crate::canonical::{decode, Canonical, Encoder, Enriched, RowBody};
use crate::checkpoint::trigger_at;
use crate::config::{
    CdcConfig, Delivery, OnMiss, OnTxnAbort, PartitionKey, SnapshotHandover, SnapshotMode,
};
use crate::enrich::{enrich, enrich_change, EnrichOutcome, ReferenceStore};
use crate::env::{
    slowed_us, CheckpointStore, Env, OpenTxn, SourceLog, StagedCommit, TaskCheckpoint,
};
use crate::fraud::{FraudConfig, FraudScorer};
use crate::lake::{LakeTable, PendingWrite};
use crate::log::{Appended, Fetched, Log, LogError, Moved, ProduceBatch, ProducerState};
use crate::record::{partition_for, Record, RecordMeta, TopicPartition};
use crate::schema::{
    avro_schema_for, decode_standard, schema_id, subject_for, RegistryError, SchemaCache,
    WriterSchema,
};
use crate::snapshot::{fold_to, select, Chunk, SnapshotProgress};
use crate::spend::{SpendAggregator, SpendConfig, WindowResult};
use crate::standardize::{standardize, standardize_avro, Standardized};
use apache_avro::Schema;
use nrtsim_history::{LakeRow, Observation, RouteReason, Stage, TopicName};
use nrtsim_workloads::envelope::{encode_change_into, parse_schema_block, EnvelopeDecoder};
use nrtsim_workloads::{Change, Op, Transaction};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How a task behaves: its delivery mode, checkpoint cadence and per-record cost.
#[derive(Clone, Debug)]
pub struct TaskSettings {
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Time between checkpoints (and lake commits), in ms.
    pub checkpoint_interval_ms: u64,
    /// Simulated processing time per record, in µs.
    pub per_record_us: u64,
    /// The most source changes the CDC connector reads at once.
    pub max_changes_per_read: usize,
    /// Wait before a failed task restarts, in ms.
    pub restart_backoff_ms: u64,
    /// What the CDC connector keys records by.
    pub partition_key: PartitionKey,
    /// The most records in one produce batch.
    pub batch_records: usize,
    /// Whether the CDC connector keeps its transaction-metadata counter in its checkpoint.
    pub tx_counters_persisted: bool,
    /// Kafka transactions for the stream tasks' outputs, when on (and for the CDC connector's
    /// under exactly-once delivery: [`cdc_transactional`]).
    pub transactions: Option<TxnSettings>,
    /// Whether `standard` records are Avro registered with the schema registry.
    pub schema_registry: bool,
    /// When the CDC connector starts and how it reads the existing rows.
    pub cdc: CdcConfig,
    /// The source tables the CDC connector captures; `None`: every one.
    pub capture: Option<regex::Regex>,
}

impl TaskSettings {
    /// The key the CDC connector gives `change`'s record in `raw`, which picks its partition.
    fn raw_key(&self, change: &Change) -> u64 {
        match self.partition_key {
            PartitionKey::Customer => change.partition_key(),
            // Scattered, but the same on every run: a mix of the change id.
            PartitionKey::Random => change.lsn.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Whether the CDC connector captures `change`'s table (or shard).
    fn captures(&self, change: &Change) -> bool {
        self.capture
            .as_ref()
            .is_none_or(|re| re.is_match(&change.key.table.shard_name(change.shard)))
    }
}

/// How a stream task uses Kafka transactions.
#[derive(Clone, Debug)]
pub struct TxnSettings {
    /// Commit every this many ms; `None` commits at each checkpoint.
    pub commit_interval_ms: Option<u64>,
    /// What the task does when its transaction could not commit.
    pub on_abort: OnTxnAbort,
}

/// Spends the time `records` records take at `us_per_record` each on this host.
async fn work<E: Env>(env: &E, us_per_record: u64, records: usize) {
    let us = slowed_us(us_per_record.saturating_mul(records as u64), env.slowdown());
    if us > 0 {
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
}

async fn pause_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// What one read of the source log hands over to `raw`.
struct HandOver {
    /// The change records, by partition.
    outputs: BTreeMap<TopicPartition, Vec<Record>>,
    /// The END boundary events due: transaction and its event count.
    ends: Vec<(u64, u64)>,
    /// The transaction left in the middle, if the read ended inside one.
    open: Option<OpenTxn>,
    /// The last LSN read.
    last_lsn: u64,
}

/// Turns the transactions of one read (from `next_lsn`) into `raw` records and END events.
/// Each transaction's END counts the change events this connector emitted for it, over every
/// piece of a large one; `open` is the transaction the previous read ended inside, whose
/// counter is part of the checkpoint. Changes of tables not captured are not this connector's
/// events: they are skipped, and the END counts only the captured ones, as Debezium's does (a
/// transaction with none gets no END here, where Debezium's MySQL and PostgreSQL connectors
/// send one counting 0). Changes the snapshot covers are skipped too, and a transaction with
/// one of those, or that began before the log phase's start, is not whole in the stream: it
/// gets no END.
#[allow(clippy::too_many_arguments)]
fn hand_over<S: SourceLog>(
    txns: &[Transaction],
    next_lsn: u64,
    mut open: Option<OpenTxn>,
    snapshot: Option<&SnapshotProgress>,
    s: &TaskSettings,
    source: &S,
    partitions: u32,
    enc: &mut Encoder,
) -> HandOver {
    let mut outputs: BTreeMap<TopicPartition, Vec<Record>> = BTreeMap::new();
    let mut last_lsn = next_lsn;
    let mut ends: Vec<(u64, u64)> = Vec::with_capacity(txns.len());
    for t in txns {
        let carried = open.filter(|o| o.txid == t.txid);
        let mut emitted = carried.map_or(0, |o| o.emitted);
        // A transaction the snapshot took up in part, in this piece or an earlier one, is not
        // whole in the stream: it gets no END.
        let mut partial = carried.is_some_and(|o| o.partial)
            || snapshot.is_some_and(|p| p.split_txn == Some(t.txid));
        for c in t.changes.iter().filter(|c| c.lsn >= next_lsn) {
            // Checked first: the snapshot's chunks span every table, captured or not.
            if !s.captures(c) {
                last_lsn = c.lsn;
                continue;
            }
            if snapshot.is_some_and(|p| p.covers(c)) {
                partial = true;
                last_lsn = c.lsn;
                continue;
            }
            emitted += 1;
            let key = s.raw_key(c);
            let tp = TopicPartition::new(TopicName::Raw, partition_for(key, partitions));
            outputs.entry(tp).or_default().push(Record {
                key,
                value: enc.with(|buf| {
                    let schema = source.table_schema(c.key.table, t.commit_ms);
                    encode_change_into(c, t.commit_ms, &schema, buf)
                }),
                meta: RecordMeta {
                    change_id: c.lsn,
                    txid: c.txid,
                    commit_ms: t.commit_ms,
                    attempt: 0,
                },
            });
            last_lsn = c.lsn;
        }
        let last = t.changes.last().map(|c| c.lsn);
        if last.is_some() && last == source.last_lsn_of(t.txid) {
            if !partial && emitted > 0 {
                ends.push((t.txid, emitted));
            }
            open = None;
        } else {
            open = Some(OpenTxn {
                txid: t.txid,
                emitted,
                partial,
            });
        }
    }
    HandOver {
        outputs,
        ends,
        open,
        last_lsn,
    }
}

/// Under exactly-once delivery a restarted task rewinds its producer's sequence numbers to its
/// checkpoint, so that the outputs it re-produces are recognised by the brokers as duplicates.
fn restore_producer<L: Log>(log: &mut L, cp: &TaskCheckpoint, delivery: Delivery) {
    if delivery == Delivery::ExactlyOnce {
        let state = cp.producer.clone().unwrap_or_else(|| ProducerState {
            producer_id: log.producer_state().producer_id,
            next_seq: BTreeMap::new(),
        });
        log.restore_producer_state(state);
    }
}

/// Appends the outputs and records what was acknowledged. Returns the first failure.
async fn produce_recorded<L: Log, E: Env>(
    log: &mut L,
    env: &E,
    stage: Stage,
    outputs: BTreeMap<TopicPartition, Vec<Record>>,
    batch_records: usize,
) -> Result<(), LogError> {
    if outputs.is_empty() {
        return Ok(());
    }
    // One partition's records go out as batches of at most `batch_records`, in order.
    let mut batches: Vec<ProduceBatch> = Vec::new();
    for (tp, records) in outputs {
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let batch: Vec<Record> = records.by_ref().take(batch_records.max(1)).collect();
            batches.push(ProduceBatch { tp, records: batch });
        }
    }
    let ids: Vec<Vec<u64>> = batches
        .iter()
        .map(|b| b.records.iter().map(|r| r.meta.change_id).collect())
        .collect();
    let tps: Vec<TopicPartition> = batches.iter().map(|b| b.tp).collect();
    let results = log.produce(batches).await;
    let txn = log.produced_in_transaction();
    let mut first_err = None;
    for ((tp, change_ids), res) in tps.into_iter().zip(ids).zip(results) {
        match res {
            Ok(Appended::At {
                base_offset,
                leader_epoch,
                skipped,
            }) => env.record(Observation::Produced {
                t_ms: env.now_ms(),
                stage,
                host: env.host().to_string(),
                topic: tp.topic,
                partition: tp.partition,
                base_offset,
                // The records the log already held went in at offsets this answer does not
                // give.
                change_ids: if skipped == 0 {
                    change_ids
                } else {
                    change_ids.into_iter().skip(skipped).collect()
                },
                txn,
                leader_epoch,
            }),
            Ok(Appended::Duplicate | Appended::Unacknowledged) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Records a fetch's records as reads, one observation per run of consecutive offsets.
fn record_read<E: Env>(env: &E, stage: Stage, f: &Fetched) {
    match f.moved {
        Some(Moved::Reset { log_start }) => env.record(Observation::OffsetReset {
            t_ms: env.now_ms(),
            stage,
            host: env.host().to_string(),
            topic: f.tp.topic,
            partition: f.tp.partition,
            from: f.base_offset,
            to: f.next_offset,
            log_start,
        }),
        Some(Moved::Diverged) => env.record(Observation::TruncationDetected {
            t_ms: env.now_ms(),
            stage,
            host: env.host().to_string(),
            topic: f.tp.topic,
            partition: f.tp.partition,
            from: f.base_offset,
            to: f.next_offset,
        }),
        None => {}
    }
    for (base_offset, records) in f.runs() {
        env.record(Observation::Read {
            t_ms: env.now_ms(),
            stage,
            host: env.host().to_string(),
            topic: f.tp.topic,
            partition: f.tp.partition,
            base_offset,
            change_ids: records.iter().map(|r| r.meta.change_id).collect(),
        });
    }
}

fn record_checkpoint<E: Env>(env: &E, checkpoint_id: u64) {
    env.record(Observation::Checkpoint {
        t_ms: env.now_ms(),
        host: env.host().to_string(),
        checkpoint_id,
    });
}

/// The CDC connector: reads the source commit log from its last committed position and writes
/// one change envelope per row change to `raw`, keyed by customer. Runs until the host stops.
pub async fn run_cdc<L: Log, E: Env, C: CheckpointStore, S: SourceLog>(
    log: &mut L,
    env: &E,
    store: &C,
    source: &S,
    s: &TaskSettings,
) {
    let partitions = log.partitions(TopicName::Raw);
    let mut enc = Encoder::default();
    let start_ms = s.cdc.start.ms();
    if env.now_ms() < start_ms {
        pause_ms(start_ms - env.now_ms()).await;
    }
    let txn = s.transactions.as_ref().filter(|_| cdc_transactional(s));
    loop {
        let mut cp = store.load(env.host()).unwrap_or_default();
        if txn.is_some() {
            // Kafka Connect's exactly-once source (KIP-618): the task fences its previous
            // instance, whose open transaction the coordinator aborts, and resumes from the
            // position its last committed transaction stored with the records it wrote.
            let started = match log.init_transactions().await {
                Ok(()) => log.committed_position().await,
                Err(e) => Err(e),
            };
            match started {
                Ok(position) => {
                    cp = position.unwrap_or_default();
                    // The connector's own copy follows what it resumes from, even when the
                    // answer to its last commit was lost.
                    store.save(env.host(), cp.clone());
                }
                Err(_) => {
                    pause_ms(s.restart_backoff_ms).await;
                    continue;
                }
            }
        } else {
            restore_producer(log, &cp, s.delivery);
        }
        cp.next_lsn = cp.next_lsn.max(1);
        if !s.tx_counters_persisted {
            // Counters held in memory start again from zero, mid-transaction or not.
            cp.open_txn = None;
        }
        let snapshot_due = s.cdc.snapshot == SnapshotMode::Incremental
            && cp.snapshot.as_ref().is_none_or(|p| p.log_from.is_none());
        if snapshot_due
            && run_snapshot(log, env, store, source, s, &mut cp, &mut enc)
                .await
                .is_err()
        {
            pause_ms(s.restart_backoff_ms).await;
            continue;
        }
        let snapshot = cp.snapshot.clone();
        let mut last_cp_ms = env.now_ms();
        let mut next_lsn = cp.next_lsn;
        let mut committed_lsn = cp.next_lsn;
        // Under `transactions.commit = "checkpoint"`: the last checkpoint trigger committed at.
        let mut committed_trigger = trigger_at(env.now_ms(), s.checkpoint_interval_ms);
        loop {
            let txns = source.read_from(next_lsn, s.max_changes_per_read);
            if txns.is_empty() {
                pause_ms(5).await;
            } else {
                let n: usize = txns.iter().map(|t| t.changes.len()).sum();
                work(env, s.per_record_us, n).await;
                let HandOver {
                    outputs,
                    ends,
                    open,
                    last_lsn,
                } = hand_over(
                    &txns,
                    next_lsn,
                    cp.open_txn,
                    snapshot.as_ref(),
                    s,
                    source,
                    partitions,
                    &mut enc,
                );
                // Goes with the position: saved with it, dropped with it if a restart comes
                // first (the loop reloads the checkpoint).
                cp.open_txn = open;
                if s.delivery == Delivery::AtMostOnce {
                    // The position is committed before the changes are delivered.
                    cp.id += 1;
                    cp.next_lsn = last_lsn + 1;
                    store.save(env.host(), cp.clone());
                    record_checkpoint(env, cp.id);
                    last_cp_ms = env.now_ms();
                }
                if txn.is_some() && !log.in_transaction() && log.begin_transaction().await.is_err()
                {
                    break;
                }
                // A failure restarts the connector; under transactions, the restart's fencing
                // aborts what this transaction wrote.
                if produce_recorded(log, env, Stage::Cdc, outputs, s.batch_records)
                    .await
                    .is_err()
                {
                    break;
                }
                for (txid, event_count) in ends {
                    env.record(Observation::TxnEnd {
                        t_ms: env.now_ms(),
                        txid,
                        event_count,
                    });
                }
                next_lsn = last_lsn + 1;
            }
            if let Some(t) = txn {
                // The records since the last commit and the position past them commit
                // together: on the transactions' interval (Kafka Connect's
                // `transaction.boundary = interval`), or at each checkpoint.
                let trigger = trigger_at(env.now_ms(), s.checkpoint_interval_ms);
                let due = match t.commit_interval_ms {
                    Some(ms) => env.now_ms() >= last_cp_ms + ms,
                    None => trigger > committed_trigger,
                };
                if due {
                    // A checkpoint with nothing to commit passes all the same.
                    committed_trigger = trigger;
                }
                if due && (log.in_transaction() || next_lsn != committed_lsn) {
                    last_cp_ms = env.now_ms();
                    cp.next_lsn = next_lsn;
                    if commit_cdc_position(log, env, store, s, &mut cp)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    committed_lsn = next_lsn;
                }
            } else if env.now_ms().saturating_sub(last_cp_ms) >= s.checkpoint_interval_ms {
                cp.next_lsn = next_lsn;
                last_cp_ms = env.now_ms();
                // Saving the checkpoint cannot fail without transactions.
                let _ = commit_cdc_position(log, env, store, s, &mut cp).await;
            }
        }
        pause_ms(s.restart_backoff_ms).await;
    }
}

/// Whether the CDC connector writes through Kafka transactions: under exactly-once delivery
/// with transactions on. Under the other modes it is an at-least-once or at-most-once source,
/// as a Kafka Connect source without exactly-once support is, whatever the stream tasks do.
pub fn cdc_transactional(s: &TaskSettings) -> bool {
    s.transactions.is_some() && s.delivery == Delivery::ExactlyOnce
}

/// Makes `cp` the CDC connector's next checkpoint. Under Kafka transactions it commits with
/// the open transaction, so the position and the records written up to it stand or fall
/// together; otherwise it is saved, with the producer's state under exactly-once delivery.
/// Either way the connector's own store keeps a copy (what the drain check reads). An error
/// means the transaction did not commit, and the connector must restart.
async fn commit_cdc_position<L: Log, E: Env, C: CheckpointStore>(
    log: &mut L,
    env: &E,
    store: &C,
    s: &TaskSettings,
    cp: &mut TaskCheckpoint,
) -> Result<(), LogError> {
    cp.id += 1;
    if cdc_transactional(s) {
        log.commit_transaction_with_position(cp).await?;
    } else {
        cp.producer = (s.delivery == Delivery::ExactlyOnce).then(|| log.producer_state());
    }
    store.save(env.host(), cp.clone());
    record_checkpoint(env, cp.id);
    Ok(())
}

/// The incremental snapshot (see [`crate::snapshot`]): reads every table in chunks, each
/// brought to its high watermark (unless the handover is `none`), and writes each chunk's rows
/// to `raw` as snapshot reads. Returns once every chunk is written and the log phase's start
/// is fixed in `cp`; an error means a write failed and the connector must restart.
async fn run_snapshot<L: Log, E: Env, C: CheckpointStore, S: SourceLog>(
    log: &mut L,
    env: &E,
    store: &C,
    source: &S,
    s: &TaskSettings,
    cp: &mut TaskCheckpoint,
    enc: &mut Encoder,
) -> Result<(), LogError> {
    let partitions = log.partitions(TopicName::Raw);
    let watermarks = s.cdc.handover == SnapshotHandover::Watermarks;
    loop {
        let progress = cp.snapshot.get_or_insert_with(SnapshotProgress::default);
        let chunk = match progress.pending.clone() {
            Some(chunk) => chunk,
            None => {
                let Some(table) = progress.next_table() else {
                    progress.finish(source, s.cdc.handover);
                    cp.next_lsn = progress.log_from.unwrap_or(1);
                    cp.open_txn = None;
                    return commit_cdc_position(log, env, store, s, cp).await;
                };
                let from_id = progress.next_id;
                let low = source.head_lsn();
                let mut chunk = select(source, table, from_id, s.cdc.chunk_rows as usize, low);
                // Shards the connector does not capture are not read.
                chunk.rows.retain(|(c, _)| s.captures(c));
                // The source goes on committing while the chunk is read; a chunk short of
                // full takes its share of a full one's time.
                let full = u64::from(s.cdc.chunk_rows.max(1));
                let rows = chunk.rows.len() as u64;
                pause_ms((s.cdc.chunk_read.ms() * rows).div_ceil(full)).await;
                work(env, s.per_record_us, chunk.rows.len()).await;
                if watermarks {
                    fold_to(&mut chunk, source, source.head_lsn());
                    chunk.rows.retain(|(c, _)| s.captures(c));
                }
                chunk
            }
        };
        let progress = cp.snapshot.get_or_insert_with(SnapshotProgress::default);
        if s.delivery == Delivery::AtMostOnce {
            // The position moves on before the rows are written.
            progress.pending = None;
            progress.advance(chunk.mark);
        } else {
            // Written again, the same, if the write fails: under transactions the chunk's
            // rows and the position past it then commit in one transaction, and a chunk cut
            // short by a failure is aborted and written again.
            progress.pending = Some(chunk.clone());
        }
        commit_cdc_position(log, env, store, s, cp).await?;
        if cdc_transactional(s) && !log.in_transaction() {
            log.begin_transaction().await?;
        }
        let outputs = snapshot_records(&chunk, source, s, partitions, env.now_ms(), enc);
        env.record(Observation::SnapshotChunk {
            t_ms: env.now_ms(),
            host: env.host().to_string(),
            table: chunk.mark.table,
            from_id: chunk.mark.from_id,
            to_id: chunk.mark.to_id,
            low_lsn: chunk.low_lsn,
            high_lsn: chunk.mark.high_lsn,
            rows: chunk.rows.iter().map(|(c, _)| c.lsn).collect(),
        });
        produce_recorded(log, env, Stage::Cdc, outputs, s.batch_records).await?;
        if s.delivery != Delivery::AtMostOnce {
            let progress = cp.snapshot.get_or_insert_with(SnapshotProgress::default);
            progress.pending = None;
            progress.advance(chunk.mark);
            commit_cdc_position(log, env, store, s, cp).await?;
        }
    }
}

/// A chunk's rows as `raw` records: each a snapshot read (`op` `r`) of the change that last
/// wrote the row, in the table's schema of now, carrying that change's id.
fn snapshot_records<S: SourceLog>(
    chunk: &Chunk,
    source: &S,
    s: &TaskSettings,
    partitions: u32,
    now_ms: u64,
    enc: &mut Encoder,
) -> BTreeMap<TopicPartition, Vec<Record>> {
    let mut outputs: BTreeMap<TopicPartition, Vec<Record>> = BTreeMap::new();
    let schema = source.table_schema(chunk.mark.table, now_ms);
    for (c, commit_ms) in &chunk.rows {
        let read = Change {
            op: Op::Read,
            before: None,
            ..c.clone()
        };
        let key = s.raw_key(&read);
        let tp = TopicPartition::new(TopicName::Raw, partition_for(key, partitions));
        outputs.entry(tp).or_default().push(Record {
            key,
            value: enc.with(|buf| encode_change_into(&read, *commit_ms, &schema, buf)),
            meta: RecordMeta {
                change_id: read.lsn,
                txid: read.txid,
                commit_ms: *commit_ms,
                attempt: 0,
            },
        });
    }
    outputs
}

/// What a stream task does to each record.
pub enum StreamRole {
    /// Standardize: `raw` → `standard`, poison → `critical`.
    Standardize,
    /// Enrich: `standard` (and replays of `redo`) → `enriched`, misses → `redo`, exhausted →
    /// `critical`.
    Enrich {
        /// The local reference store.
        store: ReferenceStore,
        /// Redo attempts before `critical`; `None` for no bound.
        max_attempts: Option<u32>,
        /// What a miss does.
        on_miss: OnMiss,
    },
}

impl StreamRole {
    fn stage(&self) -> Stage {
        match self {
            StreamRole::Standardize => Stage::Standardize,
            StreamRole::Enrich { .. } => Stage::Enrich,
        }
    }

    fn input(&self) -> TopicName {
        match self {
            StreamRole::Standardize => TopicName::Raw,
            StreamRole::Enrich { .. } => TopicName::Standard,
        }
    }
}

struct Routed {
    change_id: u64,
    to: TopicName,
    reason: RouteReason,
    attempt: u32,
}

/// A standardize or enrich task over `partitions` of its input topic. Runs until the host
/// stops.
pub async fn run_stream_task<L: Log, E: Env, C: CheckpointStore>(
    log: &mut L,
    env: &E,
    store: &C,
    mut role: StreamRole,
    partitions: &[u32],
    s: &TaskSettings,
) {
    let stage = role.stage();
    let input = role.input();
    let mut codec = (EnvelopeDecoder::default(), Encoder::default());
    // What this task learned from the schema registry; lost only when the host restarts.
    let mut schemas = SchemaCache::default();
    let txn = s.transactions.as_ref();
    loop {
        let mut cp = store.load(env.host()).unwrap_or_default();
        // A transactional task starts by fencing its previous instance (whose open
        // transaction the coordinator aborts) and reading the positions its last committed
        // transaction stored; those outputs and those positions went together.
        let mut committed = cp.offsets.clone();
        if txn.is_some() {
            let started = match log.init_transactions().await {
                Ok(()) => log.committed_offsets().await,
                Err(e) => Err(e),
            };
            match started {
                Ok(o) => committed = o,
                Err(_) => {
                    pause_ms(s.restart_backoff_ms).await;
                    continue;
                }
            }
        } else {
            restore_producer(log, &cp, s.delivery);
        }
        let mut offsets: BTreeMap<TopicPartition, u64> = partitions
            .iter()
            .map(|&p| {
                let tp = TopicPartition::new(input, p);
                (tp, committed.get(&tp).copied().unwrap_or(0))
            })
            .collect();
        let redo_tps: Vec<TopicPartition> = match role {
            StreamRole::Enrich { .. } => partitions
                .iter()
                .map(|&p| TopicPartition::new(TopicName::Redo, p))
                .collect(),
            StreamRole::Standardize => Vec::new(),
        };
        for tp in &redo_tps {
            offsets.insert(*tp, committed.get(tp).copied().unwrap_or(0));
        }
        let mut last_commit_ms = env.now_ms();
        // Redo replay: when a newer store version is loaded, read redo up to where it ended.
        let mut redo_targets: Option<BTreeMap<TopicPartition, u64>> = None;
        let mut replaying = false;
        // A transactional task's replay counts as done once the positions past it commit.
        let mut replayed: Option<u32> = None;
        loop {
            if let StreamRole::Enrich { store: refs, .. } = &mut role {
                refs.refresh(env.now_ms());
                if !replaying && refs.version() > replayed.unwrap_or(cp.redo_version) {
                    replaying = true;
                    redo_targets = None;
                }
            }
            let mut positions: Vec<(TopicPartition, u64)> = offsets
                .iter()
                .filter(|(tp, off)| {
                    tp.topic == input
                        || (replaying
                            && redo_targets
                                .as_ref()
                                .is_none_or(|t| t.get(tp).is_some_and(|end| **off < *end)))
                })
                .map(|(tp, off)| (*tp, *off))
                .collect();
            positions.sort();
            let fetched = log.fetch(&positions).await;
            let mut batch: Vec<(TopicPartition, Record)> = Vec::new();
            let mut ends: BTreeMap<TopicPartition, u64> = BTreeMap::new();
            for f in fetched.into_iter().flatten() {
                record_read(env, stage, &f);
                if f.tp.topic == TopicName::Redo {
                    ends.insert(f.tp, f.high_watermark);
                }
                // Forward past what was read; or moved by a reset, or back where a truncated log
                // agrees with what was read.
                if f.next_offset != f.base_offset {
                    offsets.insert(f.tp, f.next_offset);
                }
                batch.extend(f.records.into_iter().map(|r| (f.tp, r)));
            }
            if replaying && redo_targets.is_none() && ends.len() == redo_tps.len() {
                redo_targets = Some(ends);
            }
            // At most once: positions are committed before what was read is processed, and
            // whenever they moved (a reset past deleted records moves them with no records).
            if s.delivery == Delivery::AtMostOnce && offsets != cp.offsets {
                cp.id += 1;
                cp.offsets = offsets.clone();
                store.save(env.host(), cp.clone());
                record_checkpoint(env, cp.id);
            }
            if !batch.is_empty() {
                work(env, s.per_record_us, batch.len()).await;
                if s.schema_registry {
                    resolve_schemas(log, env, &role, &batch, &mut schemas, s).await;
                }
                let (outputs, routed) = process(
                    &role,
                    batch,
                    &mut codec,
                    s.schema_registry.then_some(&mut schemas),
                );
                if txn.is_some() && !log.in_transaction() && log.begin_transaction().await.is_err()
                {
                    break;
                }
                // A failure restarts the task; the restart's fencing aborts the transaction.
                let written =
                    match produce_recorded(log, env, stage, outputs, s.batch_records).await {
                        Ok(()) => true,
                        // A newer instance of this task holds its transactional.id: this one is a
                        // zombie, and stops.
                        Err(LogError::Fenced) => return,
                        Err(_) => {
                            if !carry_on(log, txn, s.restart_backoff_ms).await {
                                break;
                            }
                            // Carried on past the aborted transaction: nothing of this batch
                            // stands, so none of it was routed anywhere.
                            false
                        }
                    };
                if written {
                    for r in routed {
                        env.record(Observation::Routed {
                            t_ms: env.now_ms(),
                            change_id: r.change_id,
                            to: r.to,
                            reason: r.reason,
                            attempt: r.attempt,
                        });
                    }
                }
            }
            if replaying {
                if let Some(targets) = &redo_targets {
                    if targets
                        .iter()
                        .all(|(tp, end)| offsets.get(tp).is_some_and(|o| o >= end))
                    {
                        replaying = false;
                        if let StreamRole::Enrich { store: refs, .. } = &role {
                            if txn.is_some() {
                                replayed = Some(refs.version());
                            } else {
                                cp.redo_version = refs.version();
                            }
                        }
                    }
                }
            }
            // Checkpoint n is triggered at n intervals; the task acknowledges it with its
            // snapshot the first time it sees the trigger.
            let due = trigger_at(env.now_ms(), s.checkpoint_interval_ms);
            if let Some(t) = txn {
                // The outputs since the last commit and the positions past their inputs
                // commit together: at each checkpoint, or on the task's own interval.
                let commit_due = match t.commit_interval_ms {
                    Some(ms) => env.now_ms() >= last_commit_ms + ms,
                    None => due > cp.id,
                };
                if commit_due && (log.in_transaction() || offsets != committed) {
                    last_commit_ms = env.now_ms();
                    let ok = match log.commit_transaction(&offsets).await {
                        Ok(()) => true,
                        Err(LogError::Fenced) => return,
                        Err(_) => carry_on(log, Some(t), s.restart_backoff_ms).await,
                    };
                    if !ok {
                        // Start again from the last committed positions and redo the rest.
                        break;
                    }
                    committed = offsets.clone();
                    if let Some(v) = replayed.take() {
                        cp.redo_version = v;
                    }
                }
            }
            if s.delivery != Delivery::AtMostOnce && due > cp.id {
                cp.id = due;
                // A transactional task's snapshot holds the positions it has committed.
                cp.offsets = if txn.is_some() {
                    committed.clone()
                } else {
                    offsets.clone()
                };
                cp.producer = (s.delivery == Delivery::ExactlyOnce && txn.is_none())
                    .then(|| log.producer_state());
                store.save(env.host(), cp.clone());
                record_checkpoint(env, cp.id);
            }
        }
        pause_ms(s.restart_backoff_ms).await;
    }
}

/// After a transactional task's transaction failed: under `on_abort = "continue"` (the
/// defect) the task takes a new producer epoch and carries on past the inputs of the lost
/// outputs, as if they had been delivered; returns false when it must instead restart from
/// its last committed positions.
async fn carry_on<L: Log>(log: &mut L, txn: Option<&TxnSettings>, backoff_ms: u64) -> bool {
    if txn.is_none_or(|t| t.on_abort != OnTxnAbort::Continue) {
        return false;
    }
    while log.init_transactions().await.is_err() {
        pause_ms(backoff_ms).await;
    }
    true
}

/// Asks the schema registry about every schema in `batch` this task does not know yet: a
/// standardize task registers each new table schema it meets (and records the answer), an
/// enrich task fetches each writer schema id it meets. While the registry cannot be reached
/// the task waits: only records under a new schema need it.
async fn resolve_schemas<L: Log, E: Env>(
    log: &mut L,
    env: &E,
    role: &StreamRole,
    batch: &[(TopicPartition, Record)],
    cache: &mut SchemaCache,
    s: &TaskSettings,
) {
    #[derive(serde::Deserialize)]
    struct Block<'a> {
        #[serde(borrow)]
        schema: Option<&'a serde_json::value::RawValue>,
    }
    // A failed lookup holds for the batch it was made for only: as with the registry clients,
    // only schemas found are cached, and the next record under that id asks again.
    cache.by_id.retain(|_, found| found.is_ok());
    for (_, rec) in batch {
        match role {
            StreamRole::Standardize => {
                // A record that does not parse is poison, whatever its schema.
                let Ok(Block {
                    schema: Some(block),
                }) = serde_json::from_slice(&rec.value)
                else {
                    continue;
                };
                let text = block.get();
                if cache.writers.contains_key(text) {
                    continue;
                }
                let Ok(table_schema) = parse_schema_block(text) else {
                    continue;
                };
                let subject = subject_for(table_schema.table);
                let avro = avro_schema_for(&table_schema);
                let answer = loop {
                    match log.register_schema(&subject, &avro).await {
                        Ok(id) => break Ok(id),
                        Err(RegistryError::Incompatible(why) | RegistryError::Invalid(why)) => {
                            break Err(why)
                        }
                        Err(_) => pause_ms(s.restart_backoff_ms).await,
                    }
                };
                env.record(Observation::SchemaDecision {
                    t_ms: env.now_ms(),
                    host: env.host().to_string(),
                    subject,
                    table_version: table_schema.version,
                    id: answer.as_ref().ok().copied(),
                    reason: answer.as_ref().err().cloned().unwrap_or_default(),
                });
                let writer = match answer {
                    Ok(id) => WriterSchema::Registered(
                        id,
                        Arc::new(Schema::parse_str(&avro).expect("the registry took it")),
                    ),
                    Err(why) => WriterSchema::Rejected(why),
                };
                cache.writers.insert(text.to_string(), writer);
                cache
                    .tables
                    .insert(text.to_string(), Arc::new(table_schema));
            }
            StreamRole::Enrich { .. } => {
                let Some(id) = schema_id(&rec.value) else {
                    continue;
                };
                if cache.by_id.contains_key(&id) {
                    continue;
                }
                let found = loop {
                    match log.schema_by_id(id).await {
                        Ok(text) => break Ok(text),
                        Err(RegistryError::Unavailable(_)) => pause_ms(s.restart_backoff_ms).await,
                        Err(e) => break Err(e.to_string()),
                    }
                };
                let entry = found.and_then(|text| {
                    let schema = Schema::parse_str(&text).map_err(|e| e.to_string())?;
                    let table = SchemaCache::table_of(&schema)
                        .ok_or_else(|| format!("schema {id} is not a change of a known table"))?;
                    Ok((table, Arc::new(schema)))
                });
                cache.by_id.insert(id, entry);
            }
        }
    }
}

/// Reads a `standard` record by the schema id it carries.
fn read_standard(rec: &Record, cache: &mut SchemaCache) -> Result<Canonical, String> {
    let id = schema_id(&rec.value).ok_or("not in the schema registry's wire format")?;
    let (table, writer) = match cache.by_id.get(&id) {
        Some(Ok((table, writer))) => (*table, writer.clone()),
        Some(Err(why)) => return Err(why.clone()),
        None => return Err(format!("schema {id} was not fetched")),
    };
    let reader = cache.reader(table);
    decode_standard(&rec.value, table, &writer, &reader)
        .map_err(|e| format!("schema {id} cannot be read as {}: {e}", table.name()))
}

type Outputs = BTreeMap<TopicPartition, Vec<Record>>;

fn process(
    role: &StreamRole,
    batch: Vec<(TopicPartition, Record)>,
    codec: &mut (EnvelopeDecoder, Encoder),
    mut schemas: Option<&mut SchemaCache>,
) -> (Outputs, Vec<Routed>) {
    let (decoder, enc) = codec;
    let mut outputs: Outputs = BTreeMap::new();
    let mut routed = Vec::new();
    for (from, rec) in batch {
        let p = from.partition;
        let (to, out) = match role {
            StreamRole::Standardize => {
                let outcome = match schemas.as_deref_mut() {
                    Some(cache) => standardize_avro(&rec, cache, enc),
                    None => standardize(&rec, decoder, enc),
                };
                let (r, reason) = match outcome {
                    Standardized::Standard(r) => (r, None),
                    Standardized::Poison(r, _) => (r, Some(RouteReason::Poison)),
                    Standardized::Rejected(r, _) => (r, Some(RouteReason::SchemaRejected)),
                };
                match reason {
                    None => (TopicName::Standard, r),
                    Some(reason) => {
                        routed.push(Routed {
                            change_id: r.meta.change_id,
                            to: TopicName::Critical,
                            reason,
                            attempt: 0,
                        });
                        (TopicName::Critical, r)
                    }
                }
            }
            StreamRole::Enrich {
                store,
                max_attempts,
                on_miss,
            } => {
                let replayed = from.topic == TopicName::Redo;
                let outcome = match schemas.as_deref_mut() {
                    None => enrich(&rec, store, replayed, *max_attempts, enc),
                    Some(cache) => match read_standard(&rec, cache) {
                        Ok(change) => {
                            enrich_change(&rec, change, store, replayed, *max_attempts, enc)
                        }
                        Err(_) => {
                            routed.push(Routed {
                                change_id: rec.meta.change_id,
                                to: TopicName::Critical,
                                reason: RouteReason::SchemaUnreadable,
                                attempt: rec.meta.attempt,
                            });
                            outputs
                                .entry(TopicPartition::new(TopicName::Critical, p))
                                .or_default()
                                .push(rec);
                            continue;
                        }
                    },
                };
                match outcome {
                    EnrichOutcome::Enriched(r) => (TopicName::Enriched, r),
                    // Dropped: nothing is written and nothing says where it went.
                    EnrichOutcome::Redo(_) if *on_miss == OnMiss::Drop => continue,
                    EnrichOutcome::Redo(r) => {
                        routed.push(Routed {
                            change_id: r.meta.change_id,
                            to: TopicName::Redo,
                            reason: RouteReason::ReferenceMiss,
                            attempt: r.meta.attempt,
                        });
                        (TopicName::Redo, r)
                    }
                    EnrichOutcome::Critical(r, _) => {
                        routed.push(Routed {
                            change_id: r.meta.change_id,
                            to: TopicName::Critical,
                            reason: RouteReason::RedoExhausted,
                            attempt: r.meta.attempt,
                        });
                        (TopicName::Critical, r)
                    }
                }
            }
        };
        outputs
            .entry(TopicPartition::new(to, p))
            .or_default()
            .push(out);
    }
    (outputs, routed)
}

/// The lake sink: reads `enriched`, buffers row versions, and commits them to the lake table.
/// Under exactly-once it is a two-phase-commit sink (see [`run_two_phase_lake_sink`]); under
/// at-least-once it commits rows at each of its checkpoints and then its offsets; under
/// at-most-once it commits its offsets as soon as it has read.
///
/// With `timer_commit_ms` the sink instead commits rows on its own timer and checkpoints its
/// offsets on the checkpoint interval, apart from the rows: the known mistake of a sink that
/// commits outside the checkpoint.
#[allow(clippy::too_many_arguments)]
pub async fn run_lake_sink<L: Log, E: Env, C: CheckpointStore>(
    log: &mut L,
    env: &E,
    store: &C,
    lake: &RefCell<LakeTable>,
    partitions: &[u32],
    s: &TaskSettings,
    commit_cost_ms: u64,
    timer_commit_ms: Option<u64>,
) {
    if s.delivery == Delivery::ExactlyOnce && timer_commit_ms.is_none() {
        return run_two_phase_lake_sink(log, env, store, lake, partitions, s, commit_cost_ms).await;
    }
    let saved = store.load(env.host()).unwrap_or_default();
    let from_lake = lake.borrow().last_commit(env.host()).cloned();
    // Lake commits are numbered after the last one the lake holds, so none is mistaken for a
    // replay of an earlier one.
    let mut commit_id = from_lake.as_ref().map_or(0, |c| c.0);
    let mut checkpoint_id = saved.id.max(commit_id);
    let mut offsets = enriched_positions(partitions, &saved.offsets);
    // The positions the last checkpoint saved.
    let mut saved_offsets = offsets.clone();
    let mut buffer: Vec<PendingWrite> = Vec::new();
    let mut last_checkpoint_ms = env.now_ms();
    let mut last_commit_ms = env.now_ms();
    loop {
        let n = read_rows(log, env, &mut offsets, &mut buffer).await;
        // At most once: positions are committed before the rows are, whenever they moved (a
        // reset past deleted records moves them with no rows).
        if s.delivery == Delivery::AtMostOnce && offsets != saved_offsets {
            checkpoint_id += 1;
            save_positions(store, env.host(), checkpoint_id, &offsets);
            saved_offsets.clone_from(&offsets);
        }
        work(env, s.per_record_us, n).await;
        if let Some(timer_ms) = timer_commit_ms {
            let now = env.now_ms();
            if now.saturating_sub(last_commit_ms) >= timer_ms {
                last_commit_ms = now;
                if !buffer.is_empty() {
                    pause_ms(slowed_us(commit_cost_ms, env.slowdown())).await;
                    commit_id += 1;
                    commit_rows(env, lake, commit_id, &buffer, &offsets);
                    buffer.clear();
                }
            }
            if env.now_ms().saturating_sub(last_checkpoint_ms) >= s.checkpoint_interval_ms {
                last_checkpoint_ms = env.now_ms();
                // The positions read so far, whether or not their rows are committed yet.
                checkpoint_id = checkpoint_id.max(commit_id) + 1;
                save_positions(store, env.host(), checkpoint_id, &offsets);
                record_checkpoint(env, checkpoint_id);
            }
            continue;
        }
        if env.now_ms().saturating_sub(last_checkpoint_ms) < s.checkpoint_interval_ms {
            continue;
        }
        last_checkpoint_ms = env.now_ms();
        if buffer.is_empty() {
            // Nothing to commit; but positions that moved over no rows (a reset past deleted
            // records) are committed, or a restart would read from before them again.
            if s.delivery == Delivery::AtLeastOnce && offsets != saved_offsets {
                checkpoint_id = checkpoint_id.max(commit_id) + 1;
                save_positions(store, env.host(), checkpoint_id, &offsets);
                saved_offsets.clone_from(&offsets);
                record_checkpoint(env, checkpoint_id);
            }
            continue;
        }
        pause_ms(slowed_us(commit_cost_ms, env.slowdown())).await;
        checkpoint_id = checkpoint_id.max(commit_id) + 1;
        commit_id = checkpoint_id;
        commit_rows(env, lake, checkpoint_id, &buffer, &offsets);
        buffer.clear();
        if s.delivery == Delivery::AtLeastOnce {
            // The offset commit is its own round trip after the rows are visible.
            pause_ms(slowed_us(commit_cost_ms, env.slowdown()).max(1)).await;
            save_positions(store, env.host(), checkpoint_id, &offsets);
            saved_offsets.clone_from(&offsets);
        }
        record_checkpoint(env, checkpoint_id);
    }
}

/// Saves a lake sink's read positions as its checkpoint `id` (positions only: no staged rows
/// or producer state).
fn save_positions<C: CheckpointStore>(
    store: &C,
    host: &str,
    id: u64,
    offsets: &BTreeMap<TopicPartition, u64>,
) {
    let cp = TaskCheckpoint {
        id,
        offsets: offsets.clone(),
        ..Default::default()
    };
    store.save(host, cp);
}

/// How a plain consumer takes part in its consumer group.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    /// Group id (the job's name).
    pub group: String,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `session.timeout.ms`: a member that has not had a heartbeat answered for this long
    /// takes its partitions as lost, since the coordinator will have given them away.
    pub session_timeout_ms: u64,
    /// `auto.commit.interval.ms` when `enable.auto.commit` is on.
    pub auto_commit_interval_ms: Option<u64>,
}

/// Why a group member stops reading its partitions.
enum Handover {
    /// The group is rebalancing: commit what is done, then give them up.
    Revoked,
    /// They may already be someone else's: give them up without committing.
    Lost,
}

/// The lake sink as a plain Kafka consumer in a consumer group, as a Kafka Connect sink runs:
/// the group coordinator assigns its partitions of `enriched` and keeps its committed
/// positions. It buffers rows and commits them to the lake every `flush_ms`; positions are
/// committed after the rows they cover (at-least-once), as soon as they are read
/// (at-most-once), or with `enable.auto.commit` on the auto-commit timer, whatever has been
/// read, rows buffered or not. When the group rebalances it flushes its rows and commits
/// before it gives its partitions up; when it finds it is no longer a member it drops its
/// buffer, whose rows its partitions' next owner reads again.
pub async fn run_group_lake_sink<L: Log, E: Env>(
    log: &mut L,
    env: &E,
    lake: &RefCell<LakeTable>,
    s: &TaskSettings,
    g: &GroupSettings,
    flush_ms: u64,
    commit_cost_ms: u64,
) {
    let mut commit_id = lake.borrow().last_commit(env.host()).map_or(0, |c| c.0);
    loop {
        let assignment = match log.join_group(&g.group, &[TopicName::Enriched]).await {
            Ok(a) => a,
            Err(_) => {
                pause_ms(s.restart_backoff_ms).await;
                continue;
            }
        };
        let committed = match log.group_offsets().await {
            Ok(o) => o,
            Err(_) => {
                pause_ms(s.restart_backoff_ms).await;
                continue;
            }
        };
        let mut offsets: BTreeMap<TopicPartition, u64> = assignment
            .partitions
            .iter()
            .map(|tp| (*tp, committed.get(tp).copied().unwrap_or(0)))
            .collect();
        // The positions last committed to the group.
        let mut group_offsets = offsets.clone();
        let mut buffer: Vec<PendingWrite> = Vec::new();
        let start = env.now_ms();
        let (mut last_flush, mut last_auto_commit) = (start, start);
        let (mut last_heartbeat, mut heartbeat_ok) = (start, start);
        let handover = loop {
            let now = env.now_ms();
            if now.saturating_sub(last_heartbeat) >= g.heartbeat_interval_ms {
                last_heartbeat = now;
                match log.heartbeat().await {
                    Ok(()) => heartbeat_ok = now,
                    Err(LogError::RebalanceInProgress) => {
                        heartbeat_ok = now;
                        break Handover::Revoked;
                    }
                    Err(LogError::NotMember) => break Handover::Lost,
                    Err(_) => {}
                }
            }
            if env.now_ms().saturating_sub(heartbeat_ok) > g.session_timeout_ms {
                break Handover::Lost;
            }
            let n = read_rows(log, env, &mut offsets, &mut buffer).await;
            // At most once: positions are committed before the rows are, whenever they moved
            // (a reset past deleted records moves them with no rows).
            let commit_now = match g.auto_commit_interval_ms {
                Some(ms) => env.now_ms().saturating_sub(last_auto_commit) >= ms,
                None => s.delivery == Delivery::AtMostOnce && offsets != group_offsets,
            };
            if commit_now {
                last_auto_commit = env.now_ms();
                if log.commit_offsets(&offsets).await == Err(LogError::NotMember) {
                    break Handover::Lost;
                }
                group_offsets.clone_from(&offsets);
            }
            work(env, s.per_record_us, n).await;
            if env.now_ms().saturating_sub(last_flush) >= flush_ms {
                last_flush = env.now_ms();
                if !flush_rows(
                    log,
                    env,
                    lake,
                    &mut commit_id,
                    &mut buffer,
                    &offsets,
                    s,
                    g,
                    commit_cost_ms,
                    heartbeat_ok,
                )
                .await
                {
                    break Handover::Lost;
                }
            }
        };
        if let Handover::Revoked = handover {
            // Give the partitions up cleanly: the rows read are written and their positions
            // committed before the next owner starts from the group's positions.
            flush_rows(
                log,
                env,
                lake,
                &mut commit_id,
                &mut buffer,
                &offsets,
                s,
                g,
                commit_cost_ms,
                heartbeat_ok,
            )
            .await;
            if g.auto_commit_interval_ms.is_some() || s.delivery == Delivery::AtMostOnce {
                let _ = log.commit_offsets(&offsets).await;
            }
        }
    }
}

/// Commits the buffered rows to the lake and then, unless positions are committed on the
/// auto-commit timer or as they are read, the positions they cover. False when this member's
/// partitions may have moved on: its session may have expired (no heartbeat answered since
/// `heartbeat_ok`), or the group refused the positions.
#[allow(clippy::too_many_arguments)]
async fn flush_rows<L: Log, E: Env>(
    log: &mut L,
    env: &E,
    lake: &RefCell<LakeTable>,
    commit_id: &mut u64,
    buffer: &mut Vec<PendingWrite>,
    offsets: &BTreeMap<TopicPartition, u64>,
    s: &TaskSettings,
    g: &GroupSettings,
    commit_cost_ms: u64,
    heartbeat_ok: u64,
) -> bool {
    if !buffer.is_empty() {
        pause_ms(slowed_us(commit_cost_ms, env.slowdown())).await;
        // Past a session timeout without an answered heartbeat the coordinator may have
        // given the partitions to another member: write nothing more for them.
        if env.now_ms().saturating_sub(heartbeat_ok) > g.session_timeout_ms {
            return false;
        }
        *commit_id += 1;
        commit_rows(env, lake, *commit_id, buffer, offsets);
        record_checkpoint(env, *commit_id);
        buffer.clear();
    }
    if g.auto_commit_interval_ms.is_some() || s.delivery == Delivery::AtMostOnce {
        return true;
    }
    log.commit_offsets(offsets).await != Err(LogError::NotMember)
}

/// Commits `buffer` as one lake snapshot numbered `commit_id`, with the input `offsets` it
/// covers, and records what became visible.
fn commit_rows<E: Env>(
    env: &E,
    lake: &RefCell<LakeTable>,
    commit_id: u64,
    buffer: &[PendingWrite],
    offsets: &BTreeMap<TopicPartition, u64>,
) {
    let now = env.now_ms();
    let committed = lake
        .borrow_mut()
        .commit(env.host(), commit_id, buffer, offsets.clone(), now);
    if let Some(info) = committed {
        env.record(Observation::LakeCommit {
            t_ms: now,
            host: env.host().to_string(),
            checkpoint_id: commit_id,
            snapshot_id: info.snapshot_id,
            rows: buffer
                .iter()
                .zip(&info.folded)
                .map(|(w, &folded)| LakeRow {
                    change_id: w.change_id,
                    key: w.key,
                    digest: w.row.as_ref().map(|r| r.digest()),
                    folded,
                    balance_cents: match &w.row {
                        Some(nrtsim_workloads::Row::Account(a)) => Some(a.balance_cents),
                        _ => None,
                    },
                })
                .collect(),
            files: info.files,
        });
    } else if let Some(pre_committed_ms) = lake.borrow().rolled_back_at(env.host(), commit_id) {
        env.record(Observation::LakeRolledBack {
            t_ms: now,
            host: env.host().to_string(),
            checkpoint_id: commit_id,
            pre_committed_ms,
            change_ids: buffer.iter().map(|w| w.change_id).collect(),
        });
    }
}

/// The positions to read `enriched` from: `restored` where it has one, else the start.
fn enriched_positions(
    partitions: &[u32],
    restored: &BTreeMap<TopicPartition, u64>,
) -> BTreeMap<TopicPartition, u64> {
    partitions
        .iter()
        .map(|&p| {
            let tp = TopicPartition::new(TopicName::Enriched, p);
            (tp, restored.get(&tp).copied().unwrap_or(0))
        })
        .collect()
}

/// One fetch from `offsets`, recorded as `stage`'s reads; moves `offsets` past what it read.
/// Partitions that failed to answer are left out (and read again next time).
async fn fetch_from<L: Log, E: Env>(
    log: &mut L,
    env: &E,
    stage: Stage,
    offsets: &mut BTreeMap<TopicPartition, u64>,
) -> Vec<Fetched> {
    let positions: Vec<(TopicPartition, u64)> = offsets.iter().map(|(tp, o)| (*tp, *o)).collect();
    let fetched: Vec<Fetched> = log.fetch(&positions).await.into_iter().flatten().collect();
    for f in &fetched {
        record_read(env, stage, f);
        if f.next_offset != f.base_offset {
            offsets.insert(f.tp, f.next_offset);
        }
    }
    fetched
}

/// One fetch of `enriched` from `offsets` into `buffer` as row versions; returns the records
/// read and moves `offsets` past them.
async fn read_rows<L: Log, E: Env>(
    log: &mut L,
    env: &E,
    offsets: &mut BTreeMap<TopicPartition, u64>,
    buffer: &mut Vec<PendingWrite>,
) -> usize {
    let fetched = fetch_from(log, env, Stage::Lake, offsets).await;
    let mut n = 0;
    for f in fetched {
        n += f.records.len();
        for r in &f.records {
            // Enriched records are written by the enrich job; one that cannot be read is
            // skipped here and shows up as lost in the checker.
            if let Ok(e) = decode::<Enriched>(&r.value) {
                buffer.push(PendingWrite {
                    key: e.change.key,
                    change_id: r.meta.change_id,
                    row: e.change.row.map(Into::into),
                    merchant: e.merchant,
                });
            }
        }
    }
    n
}

/// The exactly-once lake sink, a two-phase-commit sink. When checkpoint *n* is triggered it
/// pre-commits: the rows read since the last checkpoint are written as files and registered
/// with the table, and its snapshot (input positions plus every pre-committed, uncommitted
/// set of rows) acknowledges the checkpoint. When the job's checkpoint *n* completes, it
/// commits the pre-committed sets up to *n*, each as one lake snapshot carrying the positions
/// it covers; commits are idempotent by checkpoint id. After a restart it restores the last
/// completed checkpoint and first commits what that checkpoint had pre-committed and the
/// table has not committed (recover-and-commit). A pre-commit the table has rolled back
/// (older than `lake.pre_commit_timeout`) cannot be committed: its rows are lost.
pub async fn run_two_phase_lake_sink<L: Log, E: Env, C: CheckpointStore>(
    log: &mut L,
    env: &E,
    store: &C,
    lake: &RefCell<LakeTable>,
    partitions: &[u32],
    s: &TaskSettings,
    commit_cost_ms: u64,
) {
    let saved = store.load(env.host()).unwrap_or_default();
    let mut offsets = enriched_positions(partitions, &saved.offsets);
    let mut checkpoint_id = saved.id;
    // Pre-committed sets of rows not yet committed, by checkpoint id.
    let mut staged: BTreeMap<u64, StagedCommit> = saved.staged;
    let mut buffer: Vec<PendingWrite> = Vec::new();
    loop {
        let completed = store.completed(env.host());
        while let Some(entry) = staged.first_entry() {
            if *entry.key() > completed {
                break;
            }
            let (id, commit) = entry.remove_entry();
            let already = lake.borrow().last_commit(env.host()).map_or(0, |c| c.0);
            if id > already {
                pause_ms(slowed_us(commit_cost_ms, env.slowdown())).await;
                commit_rows(env, lake, id, &commit.writes, &commit.offsets);
            }
        }
        let n = read_rows(log, env, &mut offsets, &mut buffer).await;
        work(env, s.per_record_us, n).await;
        let due = trigger_at(env.now_ms(), s.checkpoint_interval_ms);
        if due > checkpoint_id {
            checkpoint_id = due;
            if !buffer.is_empty() {
                lake.borrow_mut().pre_commit(env.host(), due, env.now_ms());
                let writes = std::mem::take(&mut buffer);
                let commit = StagedCommit {
                    writes,
                    offsets: offsets.clone(),
                };
                staged.insert(due, commit);
            }
            let cp = TaskCheckpoint {
                id: due,
                offsets: offsets.clone(),
                staged: staged.clone(),
                ..Default::default()
            };
            store.save(env.host(), cp);
            record_checkpoint(env, due);
        }
    }
}

/// The fraud scorer: reads every partition of `enriched`, scores each card payment (see
/// [`crate::fraud`]) and records an alert for each it flags. Its positions are checkpointed on
/// the interval; a restart re-reads from the last one and scores those payments again
/// (at-least-once scoring, with the scoring state rebuilt from what it reads).
pub async fn run_fraud_scorer<L: Log, E: Env, C: CheckpointStore>(
    log: &mut L,
    env: &E,
    store: &C,
    partitions: &[u32],
    s: &TaskSettings,
    cfg: &FraudConfig,
) {
    let mut cp = store.load(env.host()).unwrap_or_default();
    let mut offsets = enriched_positions(partitions, &cp.offsets);
    let mut scorer = FraudScorer::new(cfg.clone());
    loop {
        let fetched = fetch_from(log, env, Stage::Fraud, &mut offsets).await;
        let mut n = 0;
        for f in fetched {
            n += f.records.len();
            for r in &f.records {
                let Ok(e) = decode::<Enriched>(&r.value) else {
                    continue;
                };
                if let Some(RowBody::CardTransaction(t)) = &e.change.row {
                    let score = scorer.score(t);
                    if score.flagged {
                        env.record(Observation::FraudAlert {
                            t_ms: env.now_ms(),
                            change_id: r.meta.change_id,
                            score: score.score,
                            reasons: score.reasons.join(","),
                        });
                    }
                }
            }
        }
        work(env, s.per_record_us, n).await;
        let due = trigger_at(env.now_ms(), s.checkpoint_interval_ms);
        if due > cp.id {
            cp.id = due;
            cp.offsets = offsets.clone();
            store.save(env.host(), cp.clone());
        }
    }
}

/// The spend aggregator: reads every partition of `enriched`, sums each account's card payments
/// in event-time windows (see [`crate::spend`]) and records every window result it emits and
/// each watermark step past a window's end. Its windows and watermark are checkpointed with
/// its input positions, so a restart resumes both together.
pub async fn run_spend_aggregator<L: Log, E: Env, C: CheckpointStore>(
    log: &mut L,
    env: &E,
    store: &C,
    partitions: &[u32],
    s: &TaskSettings,
    cfg: &SpendConfig,
) {
    let mut cp = store.load(env.host()).unwrap_or_default();
    let mut offsets = enriched_positions(partitions, &cp.offsets);
    let mut agg = cp
        .spend
        .take()
        .unwrap_or_else(|| SpendAggregator::new(cfg.clone(), partitions));
    let window_ms = cfg.window.ms().max(1);
    let emit = |env: &E, r: WindowResult| {
        env.record(Observation::Aggregate {
            t_ms: env.now_ms(),
            account_id: r.account_id,
            window_start_ms: r.window_start_ms,
            window_ms,
            spend_cents: r.spend_cents,
            payments: r.payments,
        });
    };
    // Says the aggregator runs (and with which windows), even if no window ever fires.
    record_watermark(env, &agg, window_ms);
    loop {
        let fetched = fetch_from(log, env, Stage::Spend, &mut offsets).await;
        let mut n = 0;
        for f in fetched {
            n += f.records.len();
            for r in &f.records {
                let Ok(e) = decode::<Enriched>(&r.value) else {
                    continue;
                };
                let Some(RowBody::CardTransaction(t)) = &e.change.row else {
                    continue;
                };
                // A payment is its row's insert, or the snapshot read of that row.
                if !matches!(e.change.op, Op::Create | Op::Read) {
                    continue;
                }
                let now = env.now_ms();
                if let Some(update) =
                    agg.add(f.tp.partition, t.account_id, t.amount_cents, t.ts_ms, now)
                {
                    emit(env, update);
                }
            }
        }
        work(env, s.per_record_us, n).await;
        let before = agg.watermark();
        for r in agg.advance(env.now_ms()) {
            emit(env, r);
        }
        let after = agg.watermark();
        if after / window_ms > before / window_ms {
            record_watermark(env, &agg, window_ms);
        }
        let due = trigger_at(env.now_ms(), s.checkpoint_interval_ms);
        if due > cp.id {
            cp.id = due;
            cp.offsets = offsets.clone();
            cp.spend = Some(agg.clone());
            store.save(env.host(), cp.clone());
            cp.spend = None;
        }
    }
}

fn record_watermark<E: Env>(env: &E, agg: &SpendAggregator, window_ms: u64) {
    env.record(Observation::Watermark {
        t_ms: env.now_ms(),
        watermark_ms: agg.watermark(),
        window_ms,
        late_dropped: agg.late_dropped(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use nrtsim_workloads::{Account, Key, Row, Table, TableSchema};
    use std::rc::Rc;

    /// A source whose one transaction, 7, ends at LSN 4.
    struct OneTxn;

    impl SourceLog for OneTxn {
        fn read_from(&self, _: u64, _: usize) -> Vec<Transaction> {
            Vec::new()
        }
        fn last_lsn_of(&self, txid: u64) -> Option<u64> {
            (txid == 7).then_some(4)
        }
        fn table_schema(&self, table: Table, _: u64) -> Arc<TableSchema> {
            Arc::new(TableSchema::base(table))
        }
        fn head_lsn(&self) -> u64 {
            4
        }
        fn scan(&self, _: Table, _: u64, _: usize) -> Vec<(Change, u64)> {
            Vec::new()
        }
    }

    fn change(lsn: u64, shard: u16) -> Change {
        Change {
            lsn,
            txid: 7,
            key: Key {
                table: Table::Accounts,
                id: lsn,
            },
            op: Op::Update,
            before: None,
            after: Some(Row::Account(Account {
                account_id: lsn,
                customer_id: lsn,
                balance_cents: 100,
                updated_ms: 10,
            })),
            poison: false,
            shard,
        }
    }

    fn piece(changes: Vec<Change>) -> Transaction {
        Transaction {
            txid: 7,
            commit_ms: 10,
            changes,
        }
    }

    /// Captures `accounts` but not its shard `accounts_1`.
    fn settings() -> TaskSettings {
        TaskSettings {
            delivery: Delivery::ExactlyOnce,
            checkpoint_interval_ms: 1000,
            per_record_us: 0,
            max_changes_per_read: 2,
            restart_backoff_ms: 0,
            partition_key: PartitionKey::Customer,
            batch_records: 100,
            tx_counters_persisted: true,
            transactions: None,
            schema_registry: false,
            cdc: CdcConfig::default(),
            capture: Some(regex::Regex::new("^(?:accounts)$").expect("a valid pattern")),
        }
    }

    /// A log with nothing in it whose registry answers "not found" for schema 9 the first
    /// time and finds it after.
    struct Registry {
        asked: u32,
    }

    impl Log for Registry {
        fn partitions(&self, _: TopicName) -> u32 {
            1
        }
        async fn produce(&mut self, _: Vec<ProduceBatch>) -> Vec<Result<Appended, LogError>> {
            Vec::new()
        }
        async fn fetch(&mut self, _: &[(TopicPartition, u64)]) -> Vec<Result<Fetched, LogError>> {
            Vec::new()
        }
        fn producer_state(&self) -> ProducerState {
            ProducerState::default()
        }
        fn restore_producer_state(&mut self, _: ProducerState) {}
        async fn schema_by_id(&mut self, id: u32) -> Result<String, RegistryError> {
            self.asked += 1;
            if self.asked == 1 {
                Err(RegistryError::NotFound(id))
            } else {
                Ok(avro_schema_for(&TableSchema::base(Table::Accounts)))
            }
        }
    }

    struct Host;

    impl Env for Host {
        fn host(&self) -> &str {
            "enrich-0"
        }
        fn now_ms(&self) -> u64 {
            0
        }
        fn record(&self, _: Observation) {}
    }

    /// A transactional log whose produce appends the first batch, finds the second fenced and
    /// aborts transaction 5 on the spot, as a producer does when a partition has a newer epoch.
    struct FencedMidway {
        produced_in: Option<u64>,
    }

    impl Log for FencedMidway {
        fn partitions(&self, _: TopicName) -> u32 {
            2
        }
        async fn produce(&mut self, batches: Vec<ProduceBatch>) -> Vec<Result<Appended, LogError>> {
            self.produced_in = Some(5);
            assert_eq!(batches.len(), 2);
            vec![
                Ok(Appended::At {
                    base_offset: 40,
                    leader_epoch: Some(1),
                    skipped: 0,
                }),
                Err(LogError::TransactionAborted),
            ]
        }
        async fn fetch(&mut self, _: &[(TopicPartition, u64)]) -> Vec<Result<Fetched, LogError>> {
            Vec::new()
        }
        fn producer_state(&self) -> ProducerState {
            ProducerState::default()
        }
        fn restore_producer_state(&mut self, _: ProducerState) {}
        fn in_transaction(&self) -> bool {
            false
        }
        fn produced_in_transaction(&self) -> Option<u64> {
            self.produced_in
        }
    }

    /// Keeps what it is asked to record.
    #[derive(Default)]
    struct Recording(RefCell<Vec<Observation>>);

    impl Env for Recording {
        fn host(&self) -> &str {
            "enrich-0"
        }
        fn now_ms(&self) -> u64 {
            7
        }
        fn record(&self, obs: Observation) {
            self.0.borrow_mut().push(obs);
        }
    }

    fn record_for(change_id: u64) -> Record {
        Record {
            key: change_id,
            value: bytes::Bytes::from_static(b"{}"),
            meta: RecordMeta {
                change_id,
                txid: change_id,
                commit_ms: 0,
                attempt: 0,
            },
        }
    }

    /// Produces `outputs` through `log` as `stage` does; returns the result and what was
    /// recorded.
    fn produce_and_record<L: Log>(
        log: &mut L,
        stage: Stage,
        outputs: BTreeMap<TopicPartition, Vec<Record>>,
    ) -> (Result<(), LogError>, Vec<Observation>) {
        let env = Recording::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let res = rt.block_on(produce_recorded(log, &env, stage, outputs, 100));
        (res, env.0.into_inner())
    }

    /// A batch appended in a produce call that then aborted its transaction is recorded as a
    /// record of that transaction, not as one outside any (which would reach its readers at
    /// its acknowledgement); the fenced batch is not recorded at all.
    #[test]
    fn a_batch_appended_before_its_transaction_aborted_is_recorded_under_it() {
        let mut outputs = BTreeMap::new();
        outputs.insert(
            TopicPartition::new(TopicName::Enriched, 0),
            vec![record_for(1), record_for(2)],
        );
        outputs.insert(
            TopicPartition::new(TopicName::Enriched, 1),
            vec![record_for(3)],
        );
        let (res, recorded) = produce_and_record(
            &mut FencedMidway { produced_in: None },
            Stage::Enrich,
            outputs,
        );
        assert_eq!(res, Err(LogError::TransactionAborted));
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        match &recorded[0] {
            Observation::Produced {
                partition,
                base_offset,
                change_ids,
                txn,
                ..
            } => {
                assert_eq!((*partition, *base_offset), (0, 40));
                assert_eq!(change_ids, &vec![1, 2]);
                assert_eq!(*txn, Some(5));
            }
            other => panic!("not a produce: {other:?}"),
        }
    }

    /// A log whose leader already held the first record of the one batch it is sent.
    struct OverlapsFirstTry;

    impl Log for OverlapsFirstTry {
        fn partitions(&self, _: TopicName) -> u32 {
            1
        }
        async fn produce(&mut self, batches: Vec<ProduceBatch>) -> Vec<Result<Appended, LogError>> {
            assert_eq!(batches.len(), 1);
            vec![Ok(Appended::At {
                base_offset: 40,
                leader_epoch: Some(1),
                skipped: 1,
            })]
        }
        async fn fetch(&mut self, _: &[(TopicPartition, u64)]) -> Vec<Result<Fetched, LogError>> {
            Vec::new()
        }
        fn producer_state(&self) -> ProducerState {
            ProducerState::default()
        }
        fn restore_producer_state(&mut self, _: ProducerState) {}
    }

    /// A retry that partly overlaps its first try is recorded as acknowledging only the
    /// records it appended, from the offset the first of them went to: the ones the log held
    /// already are not placed at offsets that hold other records.
    #[test]
    fn a_partly_duplicate_batch_records_only_what_it_appended() {
        let mut outputs = BTreeMap::new();
        outputs.insert(
            TopicPartition::new(TopicName::Standard, 0),
            vec![record_for(1), record_for(2), record_for(3)],
        );
        let (res, recorded) =
            produce_and_record(&mut OverlapsFirstTry, Stage::Standardize, outputs);
        assert_eq!(res, Ok(()));
        match recorded.as_slice() {
            [Observation::Produced {
                base_offset,
                change_ids,
                ..
            }] => {
                assert_eq!(*base_offset, 40);
                assert_eq!(change_ids, &vec![2, 3]);
            }
            other => panic!("not one produce: {other:?}"),
        }
    }

    /// A schema the registry could not find is asked for again with the next batch, not
    /// remembered as missing until the task restarts.
    #[test]
    fn a_schema_not_found_is_asked_for_again() {
        let role = StreamRole::Enrich {
            store: ReferenceStore::new(
                Rc::new(nrtsim_workloads::ReferenceData::new(
                    &nrtsim_workloads::WorkloadConfig::default(),
                    &nrtsim_workloads::SeedTree::new(1),
                )),
                1000,
            ),
            max_attempts: None,
            on_miss: OnMiss::Redo,
        };
        let rec = Record {
            key: 1,
            value: bytes::Bytes::from_static(&[0, 0, 0, 0, 9, 1, 2]),
            meta: RecordMeta {
                change_id: 1,
                txid: 1,
                commit_ms: 0,
                attempt: 0,
            },
        };
        let batch = vec![(TopicPartition::new(TopicName::Standard, 0), rec)];
        let mut log = Registry { asked: 0 };
        let mut cache = SchemaCache::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let s = settings();
        rt.block_on(resolve_schemas(
            &mut log, &Host, &role, &batch, &mut cache, &s,
        ));
        assert!(matches!(cache.by_id.get(&9), Some(Err(_))));
        rt.block_on(resolve_schemas(
            &mut log, &Host, &role, &batch, &mut cache, &s,
        ));
        assert_eq!(log.asked, 2);
        assert!(matches!(
            cache.by_id.get(&9),
            Some(Ok((Table::Accounts, _)))
        ));
        // Found once, it is not asked for again.
        rt.block_on(resolve_schemas(
            &mut log, &Host, &role, &batch, &mut cache, &s,
        ));
        assert_eq!(log.asked, 2);
    }

    /// A transaction read in two pieces counts its events over both; a change of a table not
    /// captured is not counted (Debezium's END counts the events it emitted); and one a piece
    /// of which the snapshot took up (carried in the open transaction) gets no END.
    #[test]
    fn an_end_counts_the_captured_events_of_every_piece() {
        let s = settings();
        let mut enc = Encoder::default();
        let whole = |first_shard: u16| {
            let mut enc2 = Encoder::default();
            let one = hand_over(
                &[piece(vec![change(1, first_shard), change(2, 0)])],
                1,
                None,
                None,
                &s,
                &OneTxn,
                3,
                &mut enc2,
            );
            assert!(one.ends.is_empty(), "the transaction is not over yet");
            assert_eq!(one.last_lsn, 2);
            let open = one.open.expect("the transaction is left open");
            hand_over(
                &[piece(vec![change(3, 0), change(4, 0)])],
                3,
                Some(open),
                None,
                &s,
                &OneTxn,
                3,
                &mut enc2,
            )
        };
        let captured = whole(0);
        assert_eq!(captured.ends, vec![(7, 4)], "four events over two pieces");
        assert_eq!(captured.open, None);
        let skipped = whole(1);
        assert_eq!(skipped.ends, vec![(7, 3)], "shard 1 is not captured");
        let records: usize = skipped.outputs.values().map(Vec::len).sum();
        assert_eq!(records, 2);
        let taken_up = hand_over(
            &[piece(vec![change(3, 0), change(4, 0)])],
            3,
            Some(OpenTxn {
                txid: 7,
                emitted: 2,
                partial: true,
            }),
            None,
            &s,
            &OneTxn,
            3,
            &mut enc,
        );
        assert!(taken_up.ends.is_empty(), "{:?}", taken_up.ends);
        // In one piece, the uncaptured change is left out of the count as well.
        let at_once = hand_over(
            &[piece(
                (1..=4).map(|l| change(l, u16::from(l == 1))).collect(),
            )],
            1,
            None,
            None,
            &s,
            &OneTxn,
            3,
            &mut enc,
        );
        assert_eq!(at_once.ends, vec![(7, 3)]);
        // A transaction with no captured change has no END at all.
        let none = hand_over(
            &[piece((1..=4).map(|l| change(l, 1)).collect())],
            1,
            None,
            None,
            &s,
            &OneTxn,
            3,
            &mut enc,
        );
        assert!(none.ends.is_empty());
        assert!(none.outputs.is_empty());
        // Captured changes all in the first piece, none in the last: the END still comes,
        // with the count carried over.
        let first = hand_over(
            &[piece(vec![change(1, 0), change(2, 0)])],
            1,
            None,
            None,
            &s,
            &OneTxn,
            3,
            &mut enc,
        );
        let last = hand_over(
            &[piece(vec![change(3, 1), change(4, 1)])],
            3,
            first.open,
            None,
            &s,
            &OneTxn,
            3,
            &mut enc,
        );
        assert_eq!(last.ends, vec![(7, 2)]);
        assert!(last.outputs.is_empty());
    }
}
