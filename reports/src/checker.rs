//! The one-pass exactly-once checker: it reads a history in time order and finds lost,
//! duplicated, reordered and phantom changes and wrong final lake rows, counts what reached each
//! topic, and measures latency per stage and end to end from the source commit.
//!
//! It judges from what readers of the enriched topic saw and what the lake committed, never from
//! produce acknowledgements alone: an acknowledged record may vanish when a leader changes.
//!
//! # Memory
//! The checker keeps a compact record per source change in a `Vec` indexed by LSN (LSNs are dense
//! from 1): seven simulated times stored as `u32` milliseconds (so runs up to about 49 days), the
//! key's index, the previous LSN of the same key, the row digest, the first enriched position
//! and a few flags: 64 bytes per change, so a million changes cost about 64 MB. Everything
//! else grows with keys (final lake row, last source LSN, highest lake LSN, highest raw and
//! enriched LSN per partition) or with the anomalies found. Keeping per-change state is what
//! lets the checker tell a re-read from a duplicate and compute stage latencies whose
//! endpoints arrive out of order.
//!
//! # Decisions worth knowing
//! - A change "reaches its end" when a lake commit applies it, or a `Routed` observation sends
//!   it to `critical`. A change whose last routing went to `redo` and that never reached its end
//!   afterwards is *parked*: counted in `parked_in_redo`, not lost. A change produced to (or
//!   read from) `enriched` after its last redo routing has come back from redo: if it then
//!   never reaches the lake, it is lost, not parked.
//! - A poison change must end in `critical`. One that does not and was never applied is `lost`.
//!   One that the lake applied makes its key a `lake_mismatch` (the lake held a row that a
//!   malformed record produced), whatever the key's final row is.
//! - The expected final row of a key is the digest of its last source change that is not poison,
//!   did not end in `critical` and is not parked in `redo`; absent if there is none or it is a
//!   delete. Lost changes stay in the expectation: the lake should have them.
//! - A lake row with an unknown change id is a `phantom`, and it still changes the lake's state
//!   for its key (the lake really holds it), so that key usually shows as `lake_mismatch` too.
//! - A `Routed` observation for an unknown change id counts as `phantom` like a read, produce or
//!   lake row would.
//! - When the scenario needs every change in the lake (`[checks] lake_history =
//!   "every-change"`), a change the lake applied only as a folded version (an upsert table kept
//!   a later version of its key from the same commit) is `lost`: no reader ever saw that state.
//! - In a run that did not drain, changes still on their way at the end are `unfinished`, not
//!   `lost` (they may yet have arrived): the run exits 4 unless something else is wrong, and
//!   the keys they touch are not judged against the source.
//! - An incremental snapshot chunk (`SnapshotChunk`) emits each row as a snapshot read of the
//!   change that last wrote it. Every earlier change of that key not yet streamed is
//!   *absorbed*: taken up in the row, neither expected on its own nor lost. Changes after the
//!   row's change must still arrive by the log; a handover that skips them loses them. The
//!   rows are backfill: they leave the latency figures and the raw-order check (a chunk is in
//!   key order, not LSN order), and a key's expected final row never reaches back past an
//!   absorbed change.
//! - A record written in a Kafka transaction reaches its topic when the coordinator decides to
//!   commit the transaction (a `read_committed` reader sees it once the commit markers are
//!   written, normally within milliseconds), not when it is acknowledged; one of an aborted
//!   transaction, or cut away by a leader change before the commit, never does. So stage
//!   latencies and the counts per topic come from the copy that committed.
//! - `reordered` is about one key's changes: in `raw`, per partition (the connector writes a
//!   partition in LSN order); in `enriched`, per partition as one reader meets them; in the
//!   lake, per key across everything it applied. Changes of different keys may interleave in
//!   any order.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use crate::analysis::{
    Analysis, Completeness, Conservation, Counts, FaultWindow, LakeStats, LatencyPaths,
    LeaderCutSeen, OffsetResetSeen, SchemaDecision, SchemaReport, TimelineSecond, TruncationSeen,
};
use crate::anomaly::{AnomalyExample, AnomalyKind, ExactlyOnce};
use crate::latency::TierBounds;
use crate::skew::Spread;
use crate::torn::{LakeHistory, TornPolicy, TornTracker};
use nrtsim_history::{
    FaultPhase, LakeRow, Observation, RouteReason, RunHeader, SourceChange, Stage, TopicName,
};
use nrtsim_workloads::{Key, Op, Table};

/// How the checker judges and summarises a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Where the latency tiers begin.
    pub tiers: TierBounds,
    /// How many examples to keep per anomaly (8 by default).
    pub max_examples: usize,
    /// Whether a torn transaction fails the run.
    pub torn_transaction: TornPolicy,
    /// Whether every change must become visible in the lake, or each key's end state is enough.
    pub lake_history: LakeHistory,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            tiers: TierBounds::default(),
            max_examples: 8,
            torn_transaction: TornPolicy::Warning,
            lake_history: LakeHistory::EndState,
        }
    }
}

/// A simulated time that has not happened (yet) for a change.
const NEVER: u32 = u32::MAX;

// Flags of a change.
const KNOWN: u16 = 1 << 0;
const SNAPSHOT: u16 = 1 << 1;
const POISON: u16 = 1 << 2;
const SEEN_ENRICHED: u16 = 1 << 3;
const ROUTED_REDO: u16 = 1 << 4;
const ROUTED_CRITICAL: u16 = 1 << 5;
const LAST_ROUTE_REDO: u16 = 1 << 6;
const DUPLICATE_COUNTED: u16 = 1 << 7;
const REORDER_COUNTED: u16 = 1 << 8;
const DELETE: u16 = 1 << 9;
/// Some lake snapshot showed this version (it was applied without being folded).
const SHOWN: u16 = 1 << 10;
/// A reader found this change in the raw topic.
const RAW_READ: u16 = 1 << 11;
/// Counted as `schema_rejected`.
const SCHEMA_COUNTED: u16 = 1 << 12;
/// An incremental snapshot emitted a later change of this key as its row before this change
/// was streamed: the row took it up, and it is not expected on its own.
const ABSORBED: u16 = 1 << 13;
/// An incremental snapshot chunk emitted this change as its key's row.
const SNAPSHOT_ROW: u16 = 1 << 14;
/// Parked in redo, and its redo record gone before a replay read it (retention deleted it, a
/// reset skipped it, or a leader change cut it away): gone, not waiting.
const REDO_DELETED: u16 = 1 << 15;

/// An offset no read has reached yet (change ids start at 1).
const UNREAD: u64 = 0;
/// An offset already reported as inconsistent.
const REPORTED: u64 = u64::MAX;

/// The compact per-change record; see the module docs for why it exists.
#[derive(Clone, Debug)]
struct ChangeState {
    // Field order keeps the record at 64 bytes; see the module docs.
    commit_ms: u32,
    raw_ms: u32,
    standard_ms: u32,
    enriched_ms: u32,
    bus_read_ms: u32,
    lake_ms: u32,
    fraud_ms: u32,
    key: u32,
    enriched_partition: u32,
    enriched_offset: u64,
    prev_same_key: u64,
    digest: u64,
    flags: u16,
    lake_applies: u8,
}

impl Default for ChangeState {
    fn default() -> Self {
        ChangeState {
            commit_ms: NEVER,
            raw_ms: NEVER,
            standard_ms: NEVER,
            enriched_ms: NEVER,
            bus_read_ms: NEVER,
            lake_ms: NEVER,
            fraud_ms: NEVER,
            key: 0,
            enriched_partition: 0,
            enriched_offset: 0,
            prev_same_key: 0,
            digest: 0,
            flags: 0,
            lake_applies: 0,
        }
    }
}

impl ChangeState {
    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    fn applied(&self) -> bool {
        self.lake_applies > 0
    }

    fn parked(&self) -> bool {
        self.has(LAST_ROUTE_REDO)
            && !self.applied()
            && !self.has(ROUTED_CRITICAL)
            && !self.has(REDO_DELETED)
    }

    /// Whether the change reached the enriched topic (seen there, or applied by the lake).
    fn enriched(&self) -> bool {
        self.enriched_ms != NEVER || self.has(SEEN_ENRICHED) || self.applied()
    }

    /// Whether a snapshot row stands for the change: absorbed, and never delivered on its
    /// own (neither enriched nor routed to critical). The one predicate behind the count, the
    /// conservation term and the exemption from `lost`.
    fn absorbed(&self) -> bool {
        self.has(ABSORBED) && !self.enriched() && !self.has(ROUTED_CRITICAL)
    }

    /// Whether the lake's final row for the key should reflect this change.
    fn counts_for_final_row(&self) -> bool {
        !self.has(POISON) && !self.has(ROUTED_CRITICAL) && !self.parked()
    }

    fn after_digest(&self) -> Option<u64> {
        (!self.has(DELETE)).then_some(self.digest)
    }
}

/// The lake's visible row of a key: the change that wrote it and its digest (`None`: deleted).
type LakeRowState = (u64, Option<u64>);

/// What the checker keeps per key.
#[derive(Clone, Debug)]
struct KeyState {
    key: Key,
    /// The key's latest source LSN; 0 if the source never changed it.
    last_source_lsn: u64,
    /// The highest LSN the lake applied to this key; 0 if none.
    lake_max_lsn: u64,
    /// The key's row in the lake as the last applied change left it.
    lake_row: Option<LakeRowState>,
    /// A poison change the lake applied to this key, if any.
    poison_applied: Option<u64>,
}

/// Whether every one of change `id`'s redo records at `copies` (partition, offset) has been
/// read (so the replay is past it); true if there are none.
fn all_read(
    read_at: &BTreeMap<(TopicName, u32), Vec<u64>>,
    id: u64,
    copies: &[(u32, u64)],
) -> bool {
    copies.iter().all(|&(partition, offset)| {
        read_at
            .get(&(TopicName::Redo, partition))
            .and_then(|r| r.get(offset as usize))
            == Some(&id)
    })
}

/// Saturating conversion of a simulated time to the compact form.
fn compact_ms(t_ms: u64) -> u32 {
    u32::try_from(t_ms).unwrap_or(NEVER - 1).min(NEVER - 1)
}

fn set_first(slot: &mut u32, t_ms: u64) {
    if *slot == NEVER {
        *slot = compact_ms(t_ms);
    }
}

/// The one-pass checker: feed it every observation in history order, then `finish`.
#[derive(Clone, Debug)]
pub struct Checker {
    opts: CheckOptions,
    /// Per topic partition, the change first read at each offset (8 bytes per record read).
    read_at: BTreeMap<(TopicName, u32), Vec<u64>>,
    /// Records acknowledged per (topic, partition), and read per reading host.
    partition_load: BTreeMap<(TopicName, u32), u64>,
    task_load: BTreeMap<String, u64>,
    lake: LakeStats,
    torn: TornTracker,
    schemas: Option<SchemaReport>,
    header: Option<RunHeader>,
    changes: Vec<ChangeState>,
    key_index: BTreeMap<Key, u32>,
    keys: Vec<KeyState>,
    /// The highest offset read so far per enriched partition.
    enriched_highest: BTreeMap<u32, u64>,
    /// Per raw partition: the highest offset read.
    raw_highest: BTreeMap<u32, u64>,
    /// The highest streamed LSN per (raw partition, key index) first read there.
    raw_key_lsn: BTreeMap<(u32, u32), u64>,
    /// Absorbed change → the snapshot row that absorbed it.
    absorbed_by: BTreeMap<u64, u64>,
    /// The highest LSN per (enriched partition, key index) read at new offsets.
    enriched_key_lsn: BTreeMap<(u32, u32), u64>,
    phantoms: BTreeSet<u64>,
    exactly_once: ExactlyOnce,
    faults: Vec<FaultWindow>,
    offset_resets: Vec<OffsetResetSeen>,
    truncations: Vec<TruncationSeen>,
    leader_cuts: Vec<LeaderCutSeen>,
    /// Per partition: the end of the offsets acknowledged to producers, as far as the log
    /// has them (a leader change that cuts them brings it back to the new log end).
    acknowledged_end: BTreeMap<(TopicName, u32), u64>,
    /// Per partition: the newest leader epoch recorded, and its leader.
    leader_epochs: BTreeMap<(TopicName, u32), (u32, String)>,
    /// Per partition: every leadership taken up, in epoch order (`acknowledged_end` unused).
    leaderships: BTreeMap<(TopicName, u32), Vec<LeaderCutSeen>>,
    /// Per partition: its newest leader's log end when it took over.
    takeover_end: BTreeMap<(TopicName, u32), u64>,
    /// Per change routed to redo: where each of its redo records stands, until a leader change
    /// cuts it away.
    redo_copies: BTreeMap<u64, Vec<(u32, u64)>>,
    /// Changes all of whose redo records are gone: cut away by leader changes, or aborted.
    redo_cut: BTreeSet<u64>,
    /// Changes whose latest redo record a leader change cut away, while older ones the replay
    /// had already read still stand. Gone too once the run drained; until then a replay that
    /// restarts from before those may read them again.
    redo_behind: BTreeSet<u64>,
    /// Per change written to critical: where each of its critical records stands, until a
    /// leader change cuts it away.
    critical_copies: BTreeMap<u64, Vec<(u32, u64)>>,
    /// Per change routed to redo: the partition and offset of its latest redo record.
    redo_at: BTreeMap<u64, (u32, u64)>,
    /// Per partition: its leader's log start, as last recorded.
    log_start: BTreeMap<(TopicName, u32), u64>,
    /// Per redo partition: the offsets `[from, to)` a replay's reset skipped.
    redo_skipped: BTreeMap<u32, Vec<(u64, u64)>>,
    /// Transactions a lake snapshot showed torn, so that a miscounted END does not count them
    /// again.
    torn_txids: BTreeSet<u64>,
    drained: bool,
    run_ended: bool,
    last_t_ms: u64,
    run_end_ms: Option<u64>,
    workload_end_ms: Option<u64>,
    /// Whether a fraud scorer read anything (then every card payment should be scored).
    fraud_seen: bool,
    fraud_alerts: u64,
    /// Card payments in LSN order: (LSN, account, amount), for the batch recomputation.
    payments: Vec<(u64, u64, i64)>,
    /// Per account key slot, its opening balance (from its snapshot row).
    opening_balances: BTreeMap<u32, i64>,
    /// Per account key slot, the balance of the row the lake last applied.
    lake_balances: BTreeMap<u32, Option<i64>>,
    /// The spend aggregator's last emission per (window start, account).
    aggregates: BTreeMap<(u64, u64), (i64, u32)>,
    /// The aggregates' window length, once one was emitted.
    aggregate_window_ms: Option<u64>,
    /// The highest watermark the aggregator reached: windows ending by it have fired.
    watermark_ms: u64,
    late_dropped: u64,
    aggregates_reconciled: u64,
    /// Every source transaction: (txid, first LSN, size).
    txns: Vec<(u64, u64, u32)>,
    /// The last `event_count` each END announced, by transaction.
    announced: BTreeMap<u64, u64>,
    /// Whether the run used Kafka transactions (then `aborted_read` is checked).
    kafka_txns_seen: bool,
    /// Per Kafka transaction not yet committed, the records written in it: (topic,
    /// partition, offset, change). Dropped when it commits.
    txn_records: BTreeMap<u64, Vec<(TopicName, u32, u64, u64)>>,
    /// Lake pre-commits the table rolled back: (sink, checkpoint id) → (when the pre-commit
    /// was made, when a commit first found it rolled back).
    rolled_back: BTreeMap<(String, u64), (u64, u64)>,
    /// Per change whose rows a rolled-back pre-commit held: the latest such pre-commit.
    rolled_back_rows: BTreeMap<u64, (String, u64)>,
    /// Kafka transactions the coordinator aborted.
    txn_aborted: BTreeSet<u64>,
    /// Kafka transactions the coordinator committed.
    txn_committed: BTreeSet<u64>,
    /// Records abort markers aborted, as the partition leaders reported them: (topic,
    /// partition, offset). These include records whose producer never learnt they were
    /// written (it crashed first).
    aborted_records: BTreeMap<(TopicName, u32, u64), u64>,
}

impl Checker {
    /// A checker that has seen nothing yet.
    pub fn new(opts: CheckOptions) -> Self {
        Checker {
            opts,
            read_at: BTreeMap::new(),
            partition_load: BTreeMap::new(),
            task_load: BTreeMap::new(),
            lake: LakeStats::default(),
            torn: TornTracker::default(),
            schemas: None,
            header: None,
            changes: Vec::new(),
            key_index: BTreeMap::new(),
            keys: Vec::new(),
            enriched_highest: BTreeMap::new(),
            raw_highest: BTreeMap::new(),
            raw_key_lsn: BTreeMap::new(),
            absorbed_by: BTreeMap::new(),
            enriched_key_lsn: BTreeMap::new(),
            phantoms: BTreeSet::new(),
            exactly_once: ExactlyOnce::default(),
            faults: Vec::new(),
            offset_resets: Vec::new(),
            truncations: Vec::new(),
            leader_cuts: Vec::new(),
            acknowledged_end: BTreeMap::new(),
            leader_epochs: BTreeMap::new(),
            leaderships: BTreeMap::new(),
            takeover_end: BTreeMap::new(),
            redo_copies: BTreeMap::new(),
            redo_cut: BTreeSet::new(),
            redo_behind: BTreeSet::new(),
            critical_copies: BTreeMap::new(),
            redo_at: BTreeMap::new(),
            log_start: BTreeMap::new(),
            redo_skipped: BTreeMap::new(),
            torn_txids: BTreeSet::new(),
            drained: false,
            run_ended: false,
            last_t_ms: 0,
            run_end_ms: None,
            workload_end_ms: None,
            fraud_seen: false,
            fraud_alerts: 0,
            payments: Vec::new(),
            opening_balances: BTreeMap::new(),
            lake_balances: BTreeMap::new(),
            aggregates: BTreeMap::new(),
            aggregate_window_ms: None,
            watermark_ms: 0,
            late_dropped: 0,
            aggregates_reconciled: 0,
            txns: Vec::new(),
            announced: BTreeMap::new(),
            kafka_txns_seen: false,
            txn_records: BTreeMap::new(),
            txn_aborted: BTreeSet::new(),
            txn_committed: BTreeSet::new(),
            aborted_records: BTreeMap::new(),
            rolled_back: BTreeMap::new(),
            rolled_back_rows: BTreeMap::new(),
        }
    }

    /// Takes the next observation of the history.
    pub fn observe(&mut self, obs: &Observation) {
        self.last_t_ms = self.last_t_ms.max(obs.t_ms());
        match obs {
            Observation::Header(h) => self.header = Some(h.clone()),
            Observation::SourceCommit {
                t_ms,
                txid,
                changes,
            } => {
                for c in changes {
                    self.source_change(*t_ms, *txid, c);
                }
                if let Some(first) = changes.first() {
                    self.torn.commit(*txid, first.lsn, changes.len());
                    let size = u32::try_from(changes.len()).unwrap_or(u32::MAX);
                    self.txns.push((*txid, first.lsn, size));
                }
            }
            Observation::Produced {
                t_ms,
                topic,
                partition,
                base_offset,
                change_ids,
                txn,
                leader_epoch,
                ..
            } => {
                *self.partition_load.entry((*topic, *partition)).or_insert(0) +=
                    change_ids.len() as u64;
                let end = base_offset + change_ids.len() as u64;
                let cut_from =
                    self.acknowledged((*topic, *partition), *base_offset, end, *leader_epoch);
                // A record written in a transaction reaches its topic when the transaction
                // commits, and never if it aborts. Records a leader change has already cut
                // away are not the transaction's to commit, unless a reader read them before
                // the cut (as when the cut comes after the acknowledgement).
                let mut arrives = true;
                if let Some(n) = txn {
                    self.kafka_txns_seen = true;
                    arrives = self.txn_committed.contains(n);
                    let read = self.read_at.get(&(*topic, *partition));
                    self.txn_records.entry(*n).or_default().extend(
                        (*base_offset..)
                            .zip(change_ids)
                            .filter(|&(o, id)| {
                                cut_from.is_none_or(|from| o < from)
                                    || read.and_then(|r| r.get(o as usize)) == Some(id)
                            })
                            .map(|(o, id)| (*topic, *partition, o, *id)),
                    );
                }
                self.produced(
                    arrives.then_some(*t_ms),
                    *topic,
                    *partition,
                    *base_offset,
                    change_ids,
                    cut_from,
                )
            }
            Observation::Read {
                t_ms,
                stage,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
            } => {
                *self.task_load.entry(host.clone()).or_insert(0) += change_ids.len() as u64;
                if *stage == Stage::Fraud {
                    self.fraud_read(*t_ms, *topic, *partition, *base_offset, change_ids)
                } else if *stage == Stage::Spend {
                    // A consumer of its own: its reads must agree with everyone's.
                    self.check_offsets(*topic, *partition, *base_offset, change_ids);
                } else {
                    self.read(*t_ms, *topic, *partition, *base_offset, change_ids)
                }
            }
            Observation::FraudAlert { .. } => self.fraud_alerts += 1,
            Observation::OffsetReset {
                t_ms,
                host,
                topic,
                partition,
                from,
                to,
                log_start,
                ..
            } => {
                if *topic == TopicName::Redo {
                    // Forward, the reset skipped what lay between; back, from past the end of
                    // a truncated log, it skipped what the new leader wrote before `to`.
                    let skipped = if to > from {
                        Some(*from)
                    } else {
                        self.takeover_end
                            .get(&(*topic, *partition))
                            .copied()
                            .filter(|end| end < to)
                    };
                    if let Some(start) = skipped {
                        self.redo_skipped
                            .entry(*partition)
                            .or_default()
                            .push((start, *to));
                    }
                }
                let seen = OffsetResetSeen {
                    t_ms: *t_ms,
                    host: host.clone(),
                    topic: *topic,
                    partition: *partition,
                    from: *from,
                    to: *to,
                    log_start: *log_start,
                };
                // A restarted reader refused at the same position says so again.
                let again = seen.stopped()
                    && self.offset_resets.iter().any(|x| {
                        (&x.host, x.topic, x.partition, x.from, x.to)
                            == (&seen.host, seen.topic, seen.partition, seen.from, seen.to)
                    });
                if !again {
                    self.offset_resets.push(seen);
                }
            }
            Observation::TruncationDetected {
                t_ms,
                host,
                topic,
                partition,
                from,
                to,
                ..
            } => {
                let seen = TruncationSeen {
                    t_ms: *t_ms,
                    host: host.clone(),
                    topic: *topic,
                    partition: *partition,
                    from: *from,
                    to: *to,
                };
                // A restarted reader refused at the same position says so again.
                let again = seen.stopped()
                    && self.truncations.iter().any(|x| {
                        (&x.host, x.topic, x.partition, x.from)
                            == (&seen.host, seen.topic, seen.partition, seen.from)
                    });
                if !again {
                    self.truncations.push(seen);
                }
            }
            Observation::LeaderChange {
                t_ms,
                host,
                topic,
                partition,
                epoch,
                log_end,
            } => self.leader_change(LeaderCutSeen {
                t_ms: *t_ms,
                host: host.clone(),
                topic: *topic,
                partition: *partition,
                epoch: *epoch,
                log_end: *log_end,
                acknowledged_end: 0,
            }),
            Observation::RetentionDeleted {
                topic,
                partition,
                log_start,
                ..
            } => {
                self.log_start.insert((*topic, *partition), *log_start);
            }
            Observation::SchemaDecision {
                t_ms,
                subject,
                table_version,
                id,
                reason,
                ..
            } => {
                let report = self.schemas.get_or_insert_with(SchemaReport::default);
                let seen = report
                    .decisions
                    .iter()
                    .any(|d| &d.subject == subject && d.table_version == *table_version);
                if !seen {
                    report.decisions.push(SchemaDecision {
                        t_ms: *t_ms,
                        subject: subject.clone(),
                        table_version: *table_version,
                        id: *id,
                        reason: (!reason.is_empty()).then(|| reason.clone()),
                    });
                }
            }
            Observation::AbortMarker {
                topic,
                partition,
                offsets,
                change_ids,
                ..
            } => {
                self.kafka_txns_seen = true;
                self.aborted_records.extend(
                    offsets
                        .iter()
                        .zip(change_ids)
                        .map(|(o, id)| ((*topic, *partition, *o), *id)),
                );
            }
            Observation::KafkaTxn {
                t_ms,
                txn,
                committed,
                ..
            } => {
                self.kafka_txns_seen = true;
                if *committed {
                    self.txn_committed.insert(*txn);
                    for (topic, _, _, id) in self.txn_records.remove(txn).unwrap_or_default() {
                        self.arrived(*t_ms, topic, id);
                    }
                } else {
                    self.txn_aborted.insert(*txn);
                }
            }
            Observation::TxnEnd {
                txid, event_count, ..
            } => {
                self.announced.insert(*txid, *event_count);
            }
            Observation::SnapshotChunk { rows, high_lsn, .. } => {
                for &id in rows {
                    self.snapshot_row(id, *high_lsn);
                }
            }
            Observation::Aggregate {
                account_id,
                window_start_ms,
                window_ms,
                spend_cents,
                payments,
                ..
            } => {
                self.aggregate_window_ms = Some(*window_ms);
                self.aggregates
                    .insert((*window_start_ms, *account_id), (*spend_cents, *payments));
            }
            Observation::Watermark {
                watermark_ms,
                window_ms,
                late_dropped,
                ..
            } => {
                self.aggregate_window_ms = Some(*window_ms);
                self.watermark_ms = self.watermark_ms.max(*watermark_ms);
                self.late_dropped = *late_dropped;
            }
            Observation::Routed {
                t_ms,
                change_id,
                to,
                reason,
                ..
            } => {
                // A change is counted once, however often a restarted task routes it again.
                let first = matches!(
                    reason,
                    RouteReason::SchemaRejected | RouteReason::SchemaUnreadable
                ) && self.known_mut(*change_id).is_some_and(|c| {
                    let first = c.flags & SCHEMA_COUNTED == 0;
                    c.flags |= SCHEMA_COUNTED;
                    first
                });
                let why = match reason {
                    RouteReason::SchemaRejected if first => {
                        self.schemas
                            .get_or_insert_with(SchemaReport::default)
                            .rejected_records += 1;
                        Some("its table schema changed in a way standardize could not carry on")
                    }
                    RouteReason::SchemaUnreadable if first => {
                        self.schemas
                            .get_or_insert_with(SchemaReport::default)
                            .unreadable_records += 1;
                        Some("its reader could not read it with the schema it was built for")
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    let key = self.known_mut(*change_id).map(|c| c.key);
                    let key = key.map(|k| self.keys[k as usize].key.to_string());
                    self.exactly_once.record(
                        AnomalyKind::SchemaRejected,
                        AnomalyExample {
                            anomaly: AnomalyKind::SchemaRejected.name().into(),
                            change_id: Some(*change_id),
                            key,
                            lsn: Some(*change_id),
                            location: format!("sent to critical at {}: {why}", human_window(*t_ms)),
                        },
                        self.opts.max_examples,
                    );
                }
                self.routed(*change_id, *to)
            }
            Observation::LakeCommit {
                t_ms,
                checkpoint_id,
                snapshot_id,
                rows,
                files,
                ..
            } => {
                self.lake.snapshots += 1;
                self.lake.files_written += u64::from(files.files_written);
                self.lake.live_files = u64::from(files.live_files);
                self.lake.small_files = u64::from(files.small_files);
                self.lake.small_files_written += u64::from(files.small_files_written);
                self.lake.versions_folded += rows.iter().filter(|r| r.folded).count() as u64;
                self.lake_commit(*t_ms, *checkpoint_id, *snapshot_id, rows)
            }
            Observation::AppendedUnacknowledged {
                t_ms,
                topic,
                partition,
                base_offset,
                change_ids,
                ..
            } => {
                // An acks=0 write: no acknowledgement to hold a leader change against, and
                // here from the moment it was appended.
                *self.partition_load.entry((*topic, *partition)).or_insert(0) +=
                    change_ids.len() as u64;
                self.produced(
                    Some(*t_ms),
                    *topic,
                    *partition,
                    *base_offset,
                    change_ids,
                    None,
                )
            }
            Observation::LakeRolledBack {
                t_ms,
                host,
                checkpoint_id,
                pre_committed_ms,
                change_ids,
            } => {
                let pre_commit = (host.clone(), *checkpoint_id);
                for &id in change_ids {
                    self.rolled_back_rows.insert(id, pre_commit.clone());
                }
                self.rolled_back
                    .entry(pre_commit)
                    .or_insert((*pre_committed_ms, *t_ms));
                self.lake.pre_commits_rolled_back = self.rolled_back.len() as u64;
            }
            Observation::Checkpoint { .. } => {}
            Observation::Fault {
                t_ms,
                kind,
                target,
                phase,
            } => self.fault(*t_ms, kind, target, *phase),
            Observation::WorkloadEnd { t_ms } => self.workload_end_ms = Some(*t_ms),
            Observation::RunEnd { t_ms, drained } => {
                self.run_ended = true;
                self.drained = *drained;
                self.run_end_ms = Some(*t_ms);
            }
        }
    }

    fn key_slot(&mut self, key: Key) -> u32 {
        if let Some(i) = self.key_index.get(&key) {
            return *i;
        }
        let i = u32::try_from(self.keys.len()).expect("fewer than 2^32 keys");
        self.keys.push(KeyState {
            key,
            last_source_lsn: 0,
            lake_max_lsn: 0,
            lake_row: None,
            poison_applied: None,
        });
        self.key_index.insert(key, i);
        i
    }

    /// The state of a change the source committed, or `None` if no source commit produced it.
    fn known(&self, id: u64) -> Option<&ChangeState> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.changes.get(i).filter(|c| c.has(KNOWN))
    }

    fn known_mut(&mut self, id: u64) -> Option<&mut ChangeState> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.changes.get_mut(i).filter(|c| c.has(KNOWN))
    }

    fn key_name_of(&self, id: u64) -> Option<String> {
        self.known(id)
            .map(|c| self.keys[c.key as usize].key.to_string())
    }

    /// Where a change a rolled-back lake pre-commit held was lost.
    fn rolled_back_location(&self, pre_commit: &(String, u64)) -> String {
        let (sink, checkpoint) = pre_commit;
        let (made, refused) = self.rolled_back[pre_commit];
        format!(
            "its lake pre-commit was rolled back: {sink} pre-committed it for checkpoint \
             {checkpoint} at {}, and its commit at {} came past the table's pre-commit timeout",
            human_window(made),
            human_window(refused)
        )
    }

    fn example(
        &self,
        kind: AnomalyKind,
        id: u64,
        key: Option<String>,
        location: String,
    ) -> AnomalyExample {
        AnomalyExample {
            anomaly: kind.name().to_string(),
            change_id: Some(id),
            key,
            lsn: Some(id),
            location,
        }
    }

    fn source_change(&mut self, t_ms: u64, txid: u64, c: &SourceChange) {
        let Ok(i) = usize::try_from(c.lsn.wrapping_sub(1)) else {
            return;
        };
        // LSN 0 is not a change id; a repeated LSN keeps its first commit.
        if c.lsn == 0 || self.changes.get(i).is_some_and(|s| s.has(KNOWN)) {
            return;
        }
        if self.changes.len() <= i {
            self.changes.resize_with(i + 1, ChangeState::default);
        }
        let key = self.key_slot(c.key);
        let ks = &mut self.keys[key as usize];
        let prev = ks.last_source_lsn;
        if c.lsn > ks.last_source_lsn {
            ks.last_source_lsn = c.lsn;
        }
        let mut flags = KNOWN;
        if txid == 0 || c.op == Op::Read {
            flags |= SNAPSHOT;
        }
        if c.poison {
            flags |= POISON;
        }
        if c.digest.is_none() {
            flags |= DELETE;
        }
        if let Some(p) = c.payment {
            self.payments.push((c.lsn, p.account_id, p.amount_cents));
        }
        if let (Some(b), true) = (c.balance_cents, flags & SNAPSHOT != 0) {
            self.opening_balances.insert(key, b);
        }
        self.changes[i] = ChangeState {
            commit_ms: compact_ms(t_ms),
            key,
            prev_same_key: prev,
            digest: c.digest.unwrap_or(0),
            flags,
            ..ChangeState::default()
        };
    }

    /// Change `id` was emitted as its key's row by a snapshot chunk standing at `high_lsn`:
    /// the key's earlier changes that were not streamed are absorbed into it.
    fn snapshot_row(&mut self, id: u64, high_lsn: u64) {
        let Some(c) = self.known_mut(id) else {
            self.phantom(id, None, "emitted by a snapshot chunk".to_string());
            return;
        };
        if id > high_lsn {
            // A row from past the chunk's own high watermark: not a read the chunk could make,
            // so it absorbs nothing, and what it should have absorbed is judged as usual.
            return;
        }
        c.flags |= SNAPSHOT | SNAPSHOT_ROW;
        let mut prev = c.prev_same_key;
        while let Some(p) = self.known_mut(prev) {
            if p.has(ABSORBED) {
                break;
            }
            let absorbs = p.raw_ms == NEVER;
            if absorbs {
                p.flags |= ABSORBED;
            }
            let this = prev;
            prev = p.prev_same_key;
            if absorbs {
                self.absorbed_by.insert(this, id);
            }
        }
    }

    fn phantom(&mut self, id: u64, key: Option<String>, location: String) {
        if self.phantoms.insert(id) {
            let ex = self.example(AnomalyKind::Phantom, id, key, location);
            self.exactly_once
                .record(AnomalyKind::Phantom, ex, self.opts.max_examples);
        }
    }

    /// A record of change `id` reached `topic` at `t_ms`: the change's first time there.
    fn arrived(&mut self, t_ms: u64, topic: TopicName, id: u64) {
        let Some(c) = self.known_mut(id) else { return };
        match topic {
            TopicName::Raw => set_first(&mut c.raw_ms, t_ms),
            TopicName::Standard => set_first(&mut c.standard_ms, t_ms),
            TopicName::Enriched => {
                set_first(&mut c.enriched_ms, t_ms);
                // Its enriched copy stands: a redo record it left behind is not where it ends.
                c.flags &= !LAST_ROUTE_REDO;
            }
            TopicName::Redo | TopicName::Critical | TopicName::Schemas => {}
        }
    }

    /// Records produced at `base..`; those at or past `cut_from` a leader change has already
    /// cut away (a deposed leader acknowledged them). `arrived_ms`: when the records reached
    /// the topic; `None` for records of a transaction not committed yet, which arrive when it
    /// commits.
    fn produced(
        &mut self,
        arrived_ms: Option<u64>,
        topic: TopicName,
        partition: u32,
        base: u64,
        ids: &[u64],
        cut_from: Option<u64>,
    ) {
        for (offset, &id) in (base..).zip(ids) {
            if let Some(t_ms) = arrived_ms {
                self.arrived(t_ms, topic, id);
            }
            if self.known(id).is_none() {
                let at = format!("produced to {} p{partition}@{offset}", topic.name());
                self.phantom(id, None, at);
                continue;
            }
            match topic {
                // An enriched copy counts once it arrives (see `arrived`): a transaction that
                // aborts leaves the change where its redo record put it.
                TopicName::Raw | TopicName::Standard | TopicName::Enriched => {}
                TopicName::Redo => {
                    let copies = self.redo_copies.entry(id).or_default();
                    if cut_from.is_some_and(|from| offset >= from) {
                        // Already cut away: the latest record that stands is still the one
                        // to judge, unless none does that the replay has not read already.
                        let gone = if copies.is_empty() {
                            Some(&mut self.redo_cut)
                        } else if all_read(&self.read_at, id, copies) {
                            Some(&mut self.redo_behind)
                        } else {
                            None
                        };
                        if let Some(set) = gone {
                            set.insert(id);
                            self.redo_at.insert(id, (partition, offset));
                        }
                    } else {
                        copies.push((partition, offset));
                        self.redo_cut.remove(&id);
                        self.redo_behind.remove(&id);
                        self.redo_at.insert(id, (partition, offset));
                    }
                }
                TopicName::Critical => {
                    let copies = self.critical_copies.entry(id).or_default();
                    if cut_from.is_none_or(|from| offset < from) {
                        copies.push((partition, offset));
                    }
                }
                TopicName::Schemas => {}
            }
        }
    }

    /// The fraud scorer read `ids`: when each change was first scored. Its reads are checked
    /// for consistency with everyone else's, but do not count as the bus's delivery.
    fn fraud_read(&mut self, t_ms: u64, topic: TopicName, partition: u32, base: u64, ids: &[u64]) {
        self.check_offsets(topic, partition, base, ids);
        self.fraud_seen = true;
        for (offset, &id) in (base..).zip(ids) {
            if let Some(c) = self.known_mut(id) {
                set_first(&mut c.fraud_ms, t_ms);
            } else {
                let at = format!(
                    "read by the fraud scorer from {} p{partition}@{offset}",
                    topic.name()
                );
                self.phantom(id, None, at);
            }
        }
    }

    fn read(&mut self, t_ms: u64, topic: TopicName, partition: u32, base: u64, ids: &[u64]) {
        self.check_offsets(topic, partition, base, ids);
        // A record read from a topic has reached it, even when its producer never saw the
        // acknowledgement (a retry the broker recognised as a duplicate of a batch it no
        // longer remembers).
        for (offset, &id) in (base..).zip(ids) {
            let Some(c) = self.known_mut(id) else {
                if topic != TopicName::Enriched {
                    let at = format!("read from {} p{partition}@{offset}", topic.name());
                    self.phantom(id, None, at);
                }
                continue;
            };
            match topic {
                TopicName::Raw => set_first(&mut c.raw_ms, t_ms),
                TopicName::Standard => set_first(&mut c.standard_ms, t_ms),
                TopicName::Enriched => set_first(&mut c.enriched_ms, t_ms),
                TopicName::Redo | TopicName::Critical | TopicName::Schemas => {}
            }
        }
        if topic == TopicName::Raw {
            self.check_partition_order(partition, base, ids);
        }
        if topic != TopicName::Enriched {
            return;
        }
        let mut highest = self.enriched_highest.get(&partition).copied();
        for (offset, &id) in (base..).zip(ids) {
            let is_new = highest.is_none_or(|h| offset > h);
            if is_new {
                highest = Some(offset);
            }
            self.read_enriched_record(t_ms, partition, offset, id, is_new);
        }
        if let Some(h) = highest {
            self.enriched_highest.insert(partition, h);
        }
    }

    fn read_enriched_record(
        &mut self,
        t_ms: u64,
        partition: u32,
        offset: u64,
        id: u64,
        is_new: bool,
    ) {
        let kafka_txns_seen = self.kafka_txns_seen;
        let Some(c) = self.known_mut(id) else {
            self.phantom(
                id,
                None,
                format!("read from enriched p{partition}@{offset}"),
            );
            return;
        };
        set_first(&mut c.bus_read_ms, t_ms);
        // Without Kafka transactions the read shows the enriched copy arrived (under acks=0
        // nothing else does). With them, its arrival is its transaction's commit, and a
        // read_uncommitted reader may read a copy whose transaction aborts.
        if !kafka_txns_seen {
            c.flags &= !LAST_ROUTE_REDO;
        }
        if !c.has(SEEN_ENRICHED) {
            c.flags |= SEEN_ENRICHED;
            c.enriched_partition = partition;
            c.enriched_offset = offset;
        } else if (c.enriched_partition, c.enriched_offset) != (partition, offset) {
            let at = format!(
                "enriched p{}@{} and p{partition}@{offset}",
                c.enriched_partition, c.enriched_offset
            );
            self.duplicate(id, at);
            return;
        }
        if !is_new {
            // A re-read of a position already read (after a restart): not new information.
            return;
        }
        let key = c.key;
        let last = self.enriched_key_lsn.entry((partition, key)).or_insert(0);
        if *last > id {
            let at = format!("enriched p{partition}@{offset}: lsn {id} after lsn {last}");
            self.reorder(id, at);
        } else {
            *last = id;
        }
    }

    fn duplicate(&mut self, id: u64, location: String) {
        let key = self.key_name_of(id);
        let Some(c) = self.known_mut(id) else { return };
        if c.has(DUPLICATE_COUNTED) {
            return;
        }
        c.flags |= DUPLICATE_COUNTED;
        let ex = self.example(AnomalyKind::Duplicated, id, key, location);
        self.exactly_once
            .record(AnomalyKind::Duplicated, ex, self.opts.max_examples);
    }

    /// Per-key order in each `raw` partition, whose one producer (the CDC connector) writes in
    /// LSN order: along the offsets of a partition, a change met for the first time must have
    /// a higher LSN than every change of its key met before it there. One that does not landed
    /// after a later batch (a retried batch overtaken by the next one). Changes of other keys
    /// may land in any order between them: only a key's own order is a contract. A key spread
    /// over partitions (keyed at random) is judged downstream, where one reader meets its
    /// changes in one sequence. A change met again at a new offset is a duplicate, not a
    /// reordering, and is judged downstream.
    fn check_partition_order(&mut self, partition: u32, base: u64, ids: &[u64]) {
        let mut high_offset = self.raw_highest.get(&partition).copied();
        for (offset, &id) in (base..).zip(ids) {
            if high_offset.is_some_and(|h| offset <= h) {
                continue;
            }
            high_offset = Some(offset);
            let Some(c) = self.known_mut(id) else {
                continue;
            };
            let first = !c.has(RAW_READ);
            c.flags |= RAW_READ;
            // Snapshot rows come in key order; only streamed changes keep LSN order.
            if !first || c.has(SNAPSHOT_ROW) {
                continue;
            }
            let key = c.key;
            let max = self.raw_key_lsn.entry((partition, key)).or_insert(0);
            if id < *max {
                let at = format!("raw p{partition}@{offset}: lsn {id} after lsn {max}");
                self.reorder(id, at);
            } else {
                *max = id;
            }
        }
        if let Some(o) = high_offset {
            self.raw_highest.insert(partition, o);
        }
    }

    fn reorder(&mut self, id: u64, location: String) {
        let key = self.key_name_of(id);
        let Some(c) = self.known_mut(id) else { return };
        if c.has(REORDER_COUNTED) {
            return;
        }
        c.flags |= REORDER_COUNTED;
        let ex = self.example(AnomalyKind::Reordered, id, key, location);
        self.exactly_once
            .record(AnomalyKind::Reordered, ex, self.opts.max_examples);
    }

    fn routed(&mut self, id: u64, to: TopicName) {
        let Some(c) = self.known_mut(id) else {
            self.phantom(id, None, format!("routed to {}", to.name()));
            return;
        };
        match to {
            TopicName::Redo => c.flags |= ROUTED_REDO | LAST_ROUTE_REDO,
            TopicName::Critical => {
                c.flags |= ROUTED_CRITICAL;
                c.flags &= !LAST_ROUTE_REDO;
            }
            TopicName::Raw | TopicName::Standard | TopicName::Enriched | TopicName::Schemas => {}
        }
    }

    fn lake_commit(&mut self, t_ms: u64, checkpoint_id: u64, snapshot_id: u64, rows: &[LakeRow]) {
        let at = format!("lake snapshot {snapshot_id} (checkpoint {checkpoint_id})");
        for row in rows {
            let key = self.key_slot(row.key);
            let ks = &mut self.keys[key as usize];
            ks.lake_row = Some((row.change_id, row.digest));
            if ks.key.table == Table::Accounts {
                self.lake_balances.insert(key, row.balance_cents);
            }
            let Some(c) = self.known_mut(row.change_id) else {
                self.phantom(row.change_id, Some(row.key.to_string()), at.clone());
                continue;
            };
            let first_apply = c.lake_applies == 0;
            c.lake_applies = c.lake_applies.saturating_add(1);
            if !row.folded {
                c.flags |= SHOWN;
            }
            set_first(&mut c.lake_ms, t_ms);
            let poison = c.has(POISON);
            let ks = &mut self.keys[key as usize];
            if poison && ks.poison_applied.is_none() {
                ks.poison_applied = Some(row.change_id);
            }
            if !first_apply {
                self.duplicate(row.change_id, format!("{at}: applied again"));
                continue;
            }
            self.torn.visible(row.change_id, snapshot_id);
            let max = ks.lake_max_lsn;
            if max > row.change_id {
                let at = format!("{at}: lsn {} after lsn {max}", row.change_id);
                self.reorder(row.change_id, at);
            } else {
                ks.lake_max_lsn = row.change_id;
            }
        }
    }

    fn fault(&mut self, t_ms: u64, kind: &str, target: &str, phase: FaultPhase) {
        match phase {
            FaultPhase::Start => self.faults.push(FaultWindow {
                kind: kind.to_string(),
                target: target.to_string(),
                start_ms: t_ms,
                end_ms: None,
            }),
            // An end heals the earliest open fault of the same kind and target; an end with no
            // matching start is ignored.
            FaultPhase::End => {
                if let Some(f) = self
                    .faults
                    .iter_mut()
                    .find(|f| f.end_ms.is_none() && f.kind == kind && f.target == target)
                {
                    f.end_ms = Some(t_ms);
                }
            }
        }
    }

    /// A new leader whose log ends before what was acknowledged on its partition: the records
    /// past its end are gone. A parked change every redo record of which was among them can
    /// never be replayed. A leadership older than one already seen (a deposed broker applying
    /// a stale view late) says nothing about the partition's log.
    fn leader_change(&mut self, mut seen: LeaderCutSeen) {
        let key = (seen.topic, seen.partition);
        let newest = self.leader_epochs.entry(key).or_insert((0, String::new()));
        if (seen.epoch, seen.host.as_str()) != (newest.0, newest.1.as_str()) {
            if seen.epoch <= newest.0 && !newest.1.is_empty() {
                return;
            }
            *newest = (seen.epoch, seen.host.clone());
            self.leaderships.entry(key).or_default().push(seen.clone());
        }
        self.takeover_end.insert(key, seen.log_end);
        let Some(end) = self.acknowledged_end.get_mut(&key) else {
            return;
        };
        if *end <= seen.log_end {
            return;
        }
        seen.acknowledged_end = *end;
        *end = seen.log_end;
        // The transactional records cut away are gone: what a reader finds at their offsets
        // from now on is another record (often a copy of the same change, written again in a
        // later transaction), not one of an aborted transaction. Only a record read before the
        // cut stays to be judged.
        let (topic, partition, cut) = (seen.topic, seen.partition, seen.log_end);
        let read = self.read_at.get(&key);
        let gone = |t: TopicName, p: u32, offset: u64, id: u64| {
            t == topic
                && p == partition
                && offset >= cut
                && read.and_then(|r| r.get(offset as usize)) != Some(&id)
        };
        for records in self.txn_records.values_mut() {
            records.retain(|&(t, p, offset, id)| !gone(t, p, offset, id));
        }
        self.aborted_records
            .retain(|&(t, p, offset), id| !gone(t, p, offset, *id));
        if seen.topic == TopicName::Critical {
            for copies in self.critical_copies.values_mut() {
                copies.retain(|(p, offset)| *p != seen.partition || *offset < seen.log_end);
            }
        }
        if seen.topic == TopicName::Redo {
            // A change one of whose redo records this cut away is no longer parked unless one
            // it still has there is unread: a copy the replay has read is behind it (the replay
            // wrote the cut one after reading it), and will not be read again once the run
            // drains.
            for (id, copies) in &mut self.redo_copies {
                let before = copies.len();
                copies.retain(|(p, offset)| *p != seen.partition || *offset < seen.log_end);
                if copies.len() == before {
                    continue;
                }
                if copies.is_empty() {
                    self.redo_cut.insert(*id);
                } else if all_read(&self.read_at, *id, copies) {
                    self.redo_behind.insert(*id);
                }
            }
        }
        self.leader_cuts.push(seen);
    }

    /// Takes in an acknowledgement of `[base, end)` on partition `key`, given by the leader of
    /// `epoch`. One from a leader older than the newest recorded (a deposed leader that did
    /// not know yet) is not the partition's to keep: the first leader change after its epoch
    /// has cut away what of it lies at or past that change's log end, and that cut is
    /// extended (or reported, if it had cut nothing before). Returns where the cut begins.
    fn acknowledged(
        &mut self,
        key: (TopicName, u32),
        base: u64,
        end: u64,
        epoch: Option<u32>,
    ) -> Option<u64> {
        let newest = self
            .leader_epochs
            .get(&key)
            .filter(|(_, host)| !host.is_empty())
            .map(|(e, _)| *e);
        let late = epoch.zip(newest).is_some_and(|(e, n)| e < n);
        if !late {
            let acked = self.acknowledged_end.entry(key).or_insert(0);
            *acked = (*acked).max(end);
            return None;
        }
        let epoch = epoch?;
        let newer: Vec<&LeaderCutSeen> = self
            .leaderships
            .get(&key)?
            .iter()
            .filter(|l| l.epoch > epoch)
            .collect();
        // An offset keeps this record only if every newer leader took over holding it.
        let kept_to = newer.iter().map(|l| l.log_end).min()?;
        // The first newer leader that took over short of the end cut the rest.
        let by = newer.iter().find(|l| l.log_end < end).map(|l| (*l).clone());
        if end.min(kept_to) > base {
            // Appended before the change, acknowledged after it: kept, as any other.
            let acked = self.acknowledged_end.entry(key).or_insert(0);
            *acked = (*acked).max(end.min(kept_to));
        }
        let by = by?;
        let existing = self
            .leader_cuts
            .iter_mut()
            .find(|c| (c.topic, c.partition, c.epoch) == (key.0, key.1, by.epoch));
        match existing {
            Some(cut) => cut.acknowledged_end = cut.acknowledged_end.max(end),
            None => self.leader_cuts.push(LeaderCutSeen {
                acknowledged_end: end,
                ..by
            }),
        }
        Some(base.max(kept_to))
    }

    /// A change routed to critical or redo got there only if one of its records there stands:
    /// one a leader change cut away, or one written in a transaction that was aborted, is not
    /// there for anyone to read. A change all of whose critical records are gone has not
    /// reached critical (so, unless it reached the lake, it is lost); one all of whose redo
    /// records are gone is no longer parked ([`Checker::judge_deleted_redo`]). (A record
    /// written in a transaction reaches its topic only when the transaction commits, so one of
    /// an aborted transaction never counts as there.)
    fn judge_routes_gone(&mut self) {
        if self.txn_aborted.is_empty()
            && self.critical_copies.is_empty()
            && self.redo_copies.is_empty()
        {
            return;
        }
        let mut aborted: BTreeSet<(TopicName, u32, u64, u64)> = self
            .aborted_records
            .iter()
            .map(|(&(topic, partition, offset), &id)| (topic, partition, offset, id))
            .collect();
        for txn in &self.txn_aborted {
            aborted.extend(self.txn_records.get(txn).into_iter().flatten().copied());
        }
        let all_gone = |topic: TopicName, id: u64, copies: &[(u32, u64)]| {
            copies
                .iter()
                .all(|&(partition, offset)| aborted.contains(&(topic, partition, offset, id)))
        };
        let mut unrouted = Vec::new();
        for (&id, copies) in &self.critical_copies {
            if all_gone(TopicName::Critical, id, copies) {
                unrouted.push(id);
            }
        }
        for (&id, copies) in &self.redo_copies {
            if !copies.is_empty() && all_gone(TopicName::Redo, id, copies) {
                self.redo_cut.insert(id);
            }
        }
        for id in unrouted {
            if let Some(c) = self.known_mut(id) {
                c.flags &= !ROUTED_CRITICAL;
            }
        }
    }

    /// A change still parked in redo whose redo record retention has deleted, or a replay's
    /// offset reset skipped, or whose every redo record a leader change cut away (or, in a
    /// run that drained, whose latest one it cut while the replay had read the others), will
    /// never be replayed: it is no longer waiting, and is judged as lost.
    fn judge_deleted_redo(&mut self) {
        let redo_at = std::mem::take(&mut self.redo_at);
        for (id, (partition, offset)) in redo_at {
            let start = self
                .log_start
                .get(&(TopicName::Redo, partition))
                .copied()
                .unwrap_or(0);
            let skipped = self
                .redo_skipped
                .get(&partition)
                .is_some_and(|r| r.iter().any(|(from, to)| (*from..*to).contains(&offset)));
            let cut =
                self.redo_cut.contains(&id) || (self.drained && self.redo_behind.contains(&id));
            if offset < start || skipped || cut {
                if let Some(c) = self.known_mut(id).filter(|c| c.parked()) {
                    c.flags |= REDO_DELETED;
                }
            }
        }
    }

    /// A snapshot row stands for the changes it absorbed only if it was written: a row that
    /// never reached `raw` (a chunk recorded, then its write failed, under at-most-once)
    /// leaves them to be judged on their own, so they count as lost with it.
    fn release_unwritten_absorptions(&mut self) {
        let absorbed_by = std::mem::take(&mut self.absorbed_by);
        for (change, row) in absorbed_by {
            if self.known_mut(row).is_some_and(|r| r.raw_ms == NEVER) {
                if let Some(c) = self.known_mut(change) {
                    c.flags &= !ABSORBED;
                }
            }
        }
    }

    /// Ends the history: judges what every change and key came to, and returns the analysis.
    pub fn finish(mut self) -> Analysis {
        self.judge_routes_gone();
        self.judge_aborted_reads();
        self.release_unwritten_absorptions();
        self.judge_deleted_redo();
        let mut counts = Counts::default();
        let mut latency = LatencyPaths::default();
        let bounds = self.opts.tiers;
        // In a run that did not drain, what is still on its way is unfinished, not lost; the
        // keys it touches cannot be judged against the source either.
        let stalled = !self.drained;
        let mut timeline: Vec<TimelineSecond> = Vec::new();
        let mut unfinished_keys: BTreeSet<u32> = BTreeSet::new();
        let mut conservation = Conservation {
            holds: true,
            ..Conservation::default()
        };
        for i in 0..self.changes.len() {
            let c = &self.changes[i];
            if !c.has(KNOWN) {
                continue;
            }
            let id = i as u64 + 1;
            tally(&mut counts, c);
            let payment = self.keys[c.key as usize].key.table == Table::CardTransactions
                && !c.has(DELETE)
                && !c.has(POISON);
            if payment && c.fraud_ms != NEVER {
                counts.fraud_scored += 1;
                if !c.has(SNAPSHOT) {
                    latency
                        .fraud
                        .record(u64::from(c.fraud_ms.saturating_sub(c.commit_ms)), &bounds);
                }
            } else if payment && self.fraud_seen && c.enriched_ms != NEVER {
                counts.fraud_unscored += 1;
            }
            let absorbed = c.absorbed();
            conservation.add(c.has(ROUTED_CRITICAL), c.parked(), c.enriched(), absorbed);
            if !c.has(SNAPSHOT) && !c.has(ABSORBED) {
                record_latencies(&mut latency, c, &bounds);
                add_to_timeline(&mut timeline, c);
            }
            let ended = c.applied() || c.has(ROUTED_CRITICAL);
            let lost = if c.has(POISON) {
                !ended && !absorbed
            } else {
                !ended && !c.parked() && !absorbed
            };
            // A change whose redo record is gone is lost whether or not the run drained.
            if lost && stalled && !c.has(REDO_DELETED) {
                counts.unfinished += 1;
                unfinished_keys.insert(c.key);
            } else if lost {
                let at = match self.rolled_back_rows.get(&id) {
                    Some(pre_commit) if !c.applied() => self.rolled_back_location(pre_commit),
                    _ => lost_location(c),
                };
                let key = self.key_name_of(id);
                let ex = self.example(AnomalyKind::Lost, id, key, at);
                self.exactly_once
                    .record(AnomalyKind::Lost, ex, self.opts.max_examples);
            } else if self.opts.lake_history == LakeHistory::EveryChange
                && c.applied()
                && !c.has(SHOWN)
                && !c.has(POISON)
            {
                // The sink had it, but the upsert table kept only a later version of the key.
                let at = "lake: folded into a later version of its key within one commit; \
                          no snapshot shows this state"
                    .to_string();
                let key = self.key_name_of(id);
                let ex = self.example(AnomalyKind::Lost, id, key, at);
                self.exactly_once
                    .record(AnomalyKind::Lost, ex, self.opts.max_examples);
            }
        }
        counts.fraud_alerts = self.fraud_alerts;
        counts.late_dropped = self.late_dropped;
        self.reconcile_aggregates();
        counts.aggregates_reconciled = self.aggregates_reconciled;
        self.judge_final_rows(&mut counts, &unfinished_keys);
        self.judge_balances(&unfinished_keys);
        self.judge_torn_transactions();
        let completeness = self.judge_completeness();
        let skew = self.skew();
        if self.schemas.is_some() {
            self.exactly_once.schema_rejected.get_or_insert(0);
        }
        self.exactly_once.sort_examples();
        Analysis {
            header: self.header,
            counts,
            latency,
            tier_bounds: bounds,
            exactly_once: self.exactly_once,
            faults: self.faults,
            offset_resets: self.offset_resets,
            truncations: self.truncations,
            leader_cuts: {
                let mut cuts = self.leader_cuts;
                // A cut first reported by a late acknowledgement goes where its change was.
                cuts.sort_by_key(|c| c.t_ms);
                cuts
            },
            drained: self.drained,
            run_ended: self.run_ended,
            sim_duration_ms: self.run_end_ms.unwrap_or(self.last_t_ms),
            workload_end_ms: self.workload_end_ms,
            timeline,
            lake: self.lake,
            skew,
            conservation,
            completeness,
            schemas: self.schemas,
        }
    }

    /// Holds every END boundary event against its source transaction (is `event_count` its
    /// size?) and against the enriched topic (did every event get there, or to `critical`, or
    /// is it waiting in `redo`?).
    fn judge_completeness(&mut self) -> Completeness {
        let mut out = Completeness {
            transactions: self.txns.len() as u64,
            ..Completeness::default()
        };
        let mut miscounted: Vec<(u64, u64, String)> = Vec::new();
        for &(txid, first_lsn, size) in &self.txns {
            let Some(&count) = self.announced.get(&txid) else {
                continue;
            };
            out.announced += 1;
            let mut problem = None;
            if count != u64::from(size) {
                out.miscounted += 1;
                let said = format!(
                    "transaction {txid}: END says {count} events, the source committed {size}"
                );
                miscounted.push((txid, first_lsn, said.clone()));
                problem = Some(said);
            }
            let missing = (first_lsn..first_lsn + u64::from(size))
                .filter_map(|lsn| self.known(lsn))
                .filter(|c| {
                    c.enriched_ms == NEVER
                        && !c.has(ROUTED_CRITICAL)
                        && !c.parked()
                        && !c.has(ABSORBED)
                })
                .count();
            if missing > 0 {
                out.incomplete += 1;
                problem.get_or_insert(format!(
                    "transaction {txid}: {missing} of its {size} events never reached enriched"
                ));
            }
            if let Some(p) = problem {
                if out.examples.len() < self.opts.max_examples {
                    out.examples.push(p);
                }
            }
        }
        // A consumer that applies a transaction once its END's count of events has arrived
        // applies a miscounted one in part: a torn transaction (counted once, if a lake
        // snapshot already showed it torn).
        for (txid, first_lsn, said) in miscounted {
            if self.torn_txids.contains(&txid) {
                continue;
            }
            let ex = AnomalyExample {
                anomaly: AnomalyKind::TornTransaction.name().to_string(),
                change_id: Some(first_lsn),
                key: None,
                lsn: Some(first_lsn),
                location: said,
            };
            self.exactly_once
                .record(AnomalyKind::TornTransaction, ex, self.opts.max_examples);
        }
        out
    }

    /// Compares the streamed spend aggregates with a batch recomputation from the source: for
    /// every (account, window) that has fired (its end at or before the highest watermark),
    /// the sum of the card payments committed in it that should have reached the enriched
    /// topic (not poison, not in critical, not parked in redo; in a run that did not drain,
    /// not still on their way). A payment replayed from redo reaches the aggregator a store
    /// refresh late and counts like any other: without enough allowed lateness it is a real
    /// difference. Runs without an aggregator, or in which no window fired, check nothing,
    /// and the anomaly stays absent.
    fn reconcile_aggregates(&mut self) {
        let Some(w) = self.aggregate_window_ms.filter(|w| *w > 0) else {
            return;
        };
        let fired = |start: u64| start + w <= self.watermark_ms;
        let mut batch: BTreeMap<(u64, u64), (i64, u32)> = BTreeMap::new();
        for &(lsn, account, amount) in &self.payments {
            let Some(c) = self.known(lsn) else { continue };
            if c.has(POISON) || c.has(ROUTED_CRITICAL) || c.parked() || c.commit_ms == NEVER {
                continue;
            }
            // In a run that did not drain, a payment still on its way is unfinished, not a
            // difference in spend.
            if !self.drained && c.enriched_ms == NEVER {
                continue;
            }
            let t = u64::from(c.commit_ms);
            let start = t - t % w;
            if fired(start) {
                let slot = batch.entry((start, account)).or_insert((0, 0));
                slot.0 += amount;
                slot.1 += 1;
            }
        }
        let streamed: BTreeMap<(u64, u64), (i64, u32)> = self
            .aggregates
            .iter()
            .filter(|((start, _), _)| fired(*start))
            .map(|(k, v)| (*k, *v))
            .collect();
        let keys: BTreeSet<(u64, u64)> = batch.keys().chain(streamed.keys()).copied().collect();
        self.aggregates_reconciled = keys.len() as u64;
        // No window fired (a run no longer than one window, or a watermark held back by an
        // idle partition): nothing was compared, and the anomaly stays absent, not 0.
        if keys.is_empty() {
            return;
        }
        self.exactly_once.aggregate_mismatch.get_or_insert(0);
        for (start, account) in keys {
            let b = batch.get(&(start, account)).copied().unwrap_or((0, 0));
            let s = streamed.get(&(start, account)).copied().unwrap_or((0, 0));
            if b == s {
                continue;
            }
            let ex = AnomalyExample {
                anomaly: AnomalyKind::AggregateMismatch.name().to_string(),
                change_id: None,
                key: Some(format!("accounts/{account}")),
                lsn: None,
                location: format!(
                    "spend window {}..{}: streamed {} cents over {} payments, batch {} over {}",
                    human_window(start),
                    human_window(start + w),
                    s.0,
                    s.1,
                    b.0,
                    b.1
                ),
            };
            self.exactly_once
                .record(AnomalyKind::AggregateMismatch, ex, self.opts.max_examples);
        }
    }

    /// Every record an aborted Kafka transaction wrote must have been read by no stage: a
    /// `read_committed` reader is never handed one, a `read_uncommitted` reader is.
    fn judge_aborted_reads(&mut self) {
        if !self.kafka_txns_seen {
            return;
        }
        self.exactly_once.aborted_read.get_or_insert(0);
        // What the producers' acknowledgements place in aborted transactions, and what the
        // partition leaders' abort markers say they aborted.
        let mut aborted = std::mem::take(&mut self.aborted_records);
        for txn in &self.txn_aborted {
            for &(topic, partition, offset, id) in self.txn_records.get(txn).into_iter().flatten() {
                aborted.insert((topic, partition, offset), id);
            }
        }
        let mut found = Vec::new();
        for ((topic, partition, offset), id) in aborted {
            // Read there, and the same record (a truncated log may have put another there).
            let read = self
                .read_at
                .get(&(topic, partition))
                .and_then(|seen| seen.get(offset as usize));
            if read == Some(&id) {
                found.push((topic, partition, offset, id));
            }
        }
        for (topic, partition, offset, id) in found {
            let key = self.key_name_of(id);
            let at = format!(
                "{} p{partition}@{offset}, written in an aborted transaction",
                topic.name()
            );
            let ex = self.example(AnomalyKind::AbortedRead, id, key, at);
            self.exactly_once
                .record(AnomalyKind::AbortedRead, ex, self.opts.max_examples);
        }
    }

    /// Every read of an offset must find the record the first read found there.
    fn check_offsets(&mut self, topic: TopicName, partition: u32, base: u64, ids: &[u64]) {
        let seen = self.read_at.entry((topic, partition)).or_default();
        let end = (base as usize).saturating_add(ids.len());
        if seen.len() < end {
            seen.resize(end, UNREAD);
        }
        let mut found = Vec::new();
        for (offset, &id) in (base..).zip(ids) {
            let slot = &mut seen[offset as usize];
            if *slot == UNREAD {
                *slot = id;
            } else if *slot != id && *slot != REPORTED {
                found.push((offset, *slot, id));
                *slot = REPORTED;
            }
        }
        for (offset, first, then) in found {
            let at = format!(
                "{} p{partition}@{offset}: change {first} first, change {then} later",
                topic.name()
            );
            let ex = self.example(AnomalyKind::InconsistentOffsets, then, None, at);
            self.exactly_once
                .record(AnomalyKind::InconsistentOffsets, ex, self.opts.max_examples);
        }
    }

    /// The spread of load over each data topic's partitions and over the reading tasks.
    fn skew(&self) -> Vec<Spread> {
        let mut out: Vec<Spread> = [TopicName::Raw, TopicName::Standard, TopicName::Enriched]
            .into_iter()
            .map(|topic| {
                let load = self
                    .partition_load
                    .iter()
                    .filter(|((t, _), _)| *t == topic)
                    .map(|((_, p), n)| (format!("p{p}"), *n))
                    .collect();
                Spread::of(topic.name(), load)
            })
            .filter(|s| !s.load.is_empty())
            .collect();
        // Tasks are compared within their job (`enrich-0` with `enrich-1`).
        let mut jobs: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
        for (host, n) in &self.task_load {
            let job = host.rsplit_once('-').map_or(host.as_str(), |(job, _)| job);
            jobs.entry(job).or_default().insert(host.clone(), *n);
        }
        for (job, load) in jobs.into_iter().filter(|(_, l)| l.len() > 1) {
            out.push(Spread::of(&format!("{job} tasks"), load));
        }
        out
    }

    /// Counts the multi-row source transactions the lake showed in part.
    fn judge_torn_transactions(&mut self) {
        self.exactly_once.torn_transaction_is_violation =
            self.opts.torn_transaction == TornPolicy::Violation;
        // A transaction an incremental snapshot read (in part absorbed, or as rows of chunks
        // taken at different times) reaches the lake as backfill, not as a transaction.
        let torn: Vec<_> = self
            .torn
            .torn()
            .filter(|t| {
                !(t.first_lsn..t.first_lsn + u64::from(t.size))
                    .filter_map(|lsn| self.known(lsn))
                    .any(|c| c.has(ABSORBED) || c.has(SNAPSHOT_ROW))
            })
            .collect();
        for t in torn {
            self.torn_txids.insert(t.txid);
            let how = if t.split {
                "in more than one snapshot"
            } else {
                "the rest never"
            };
            let ex = AnomalyExample {
                anomaly: AnomalyKind::TornTransaction.name().to_string(),
                change_id: Some(t.first_lsn),
                key: None,
                lsn: Some(t.first_lsn),
                location: format!(
                    "source transaction {}: {} of {} changes became visible, {how}",
                    t.txid, t.visible, t.size
                ),
            };
            self.exactly_once
                .record(AnomalyKind::TornTransaction, ex, self.opts.max_examples);
        }
    }

    /// Compares every key's final lake row with the row the source says it should have.
    fn judge_final_rows(&mut self, counts: &mut Counts, unfinished_keys: &BTreeSet<u32>) {
        let order: Vec<u32> = self.key_index.values().copied().collect();
        for k in order {
            let ks = &self.keys[k as usize];
            let actual = ks.lake_row.and_then(|(_, d)| d);
            if actual.is_some() {
                counts.lake_keys += 1;
            }
            if unfinished_keys.contains(&k) {
                continue;
            }
            let expected_lsn = self.expected_change(ks.last_source_lsn);
            let expected = expected_lsn.and_then(|l| self.known(l)?.after_digest());
            let at = if let Some(poison) = ks.poison_applied {
                format!("lake applied poison change {poison}")
            } else if expected != actual {
                format!(
                    "expected {} (lsn {}), lake has {} (change {})",
                    digest_text(expected),
                    expected_lsn.map_or("none".to_string(), |l| l.to_string()),
                    digest_text(actual),
                    ks.lake_row
                        .map_or("none".to_string(), |(id, _)| id.to_string()),
                )
            } else {
                continue;
            };
            let id = ks.lake_row.map(|(id, _)| id).or(expected_lsn);
            let ex = AnomalyExample {
                anomaly: AnomalyKind::LakeMismatch.name().to_string(),
                change_id: id,
                key: Some(ks.key.to_string()),
                lsn: id,
                location: at,
            };
            self.exactly_once
                .record(AnomalyKind::LakeMismatch, ex, self.opts.max_examples);
        }
    }

    /// The balance-conservation oracle: the lake's accounts table must agree with its card
    /// transactions. Every account with an opening balance must end in the lake at that
    /// balance moved by the payments on it (a payment of `amount` moves it by `-amount`) that
    /// the lake holds, or that are accounted for elsewhere: poison or in `critical`, waiting
    /// in `redo`, or still on their way in a run that did not drain. A payment the lake lost
    /// while its balance update arrived, a balance update lost while its payment arrived, or
    /// a wrong balance all break it. Accounts whose last source change the lake is not meant
    /// to show (poison, say) or that a stalled run left unfinished are not judged.
    fn judge_balances(&mut self, unfinished_keys: &BTreeSet<u32>) {
        if self.opening_balances.is_empty() {
            return;
        }
        self.exactly_once.balance_mismatch.get_or_insert(0);
        let mut moved: BTreeMap<u64, i64> = BTreeMap::new();
        for &(lsn, account, amount) in &self.payments {
            let Some(c) = self.known(lsn) else { continue };
            let accounted = c.applied()
                || c.has(POISON)
                || c.has(ROUTED_CRITICAL)
                || c.parked()
                || unfinished_keys.contains(&c.key);
            if accounted {
                *moved.entry(account).or_insert(0) -= amount;
            }
        }
        let openings: Vec<(u32, i64)> = self
            .opening_balances
            .iter()
            .map(|(k, b)| (*k, *b))
            .collect();
        for (k, opening) in openings {
            let ks = &self.keys[k as usize];
            let last = ks.last_source_lsn;
            if unfinished_keys.contains(&k) || self.expected_change(last) != Some(last) {
                continue;
            }
            let delta = moved.get(&ks.key.id).copied().unwrap_or(0);
            let expected = opening + delta;
            let actual = self.lake_balances.get(&k).copied().flatten();
            if actual == Some(expected) {
                continue;
            }
            let at = format!(
                "lake balance {}, expected {expected} (opening {opening}, payments held or \
                 accounted for {delta:+})",
                actual.map_or("none".to_string(), |b| b.to_string()),
            );
            let id = ks.lake_row.map(|(id, _)| id).unwrap_or(last);
            let ex = AnomalyExample {
                anomaly: AnomalyKind::BalanceMismatch.name().to_string(),
                change_id: Some(id),
                key: Some(ks.key.to_string()),
                lsn: Some(id),
                location: at,
            };
            self.exactly_once
                .record(AnomalyKind::BalanceMismatch, ex, self.opts.max_examples);
        }
    }

    /// The key's last change that should be visible in the lake, walking back from `lsn`;
    /// none past a change a snapshot row absorbed (the lake never had the key's older states).
    fn expected_change(&self, mut lsn: u64) -> Option<u64> {
        while lsn != 0 {
            let c = self.known(lsn)?;
            if c.has(ABSORBED) {
                return None;
            }
            if c.counts_for_final_row() {
                return Some(lsn);
            }
            lsn = c.prev_same_key;
        }
        None
    }
}

fn add_to_timeline(timeline: &mut Vec<TimelineSecond>, c: &ChangeState) {
    if c.commit_ms == NEVER {
        return;
    }
    let committed = second_of(timeline, c.commit_ms);
    committed.committed += 1;
    if c.lake_ms != NEVER {
        let late = u64::from(c.lake_ms.saturating_sub(c.commit_ms));
        committed.lake_latency_max_ms = committed.lake_latency_max_ms.max(late);
        second_of(timeline, c.lake_ms).visible += 1;
    }
}

/// The timeline's entry for the second holding `t_ms`, growing the timeline to reach it.
fn second_of(timeline: &mut Vec<TimelineSecond>, t_ms: u32) -> &mut TimelineSecond {
    let s = (t_ms / 1000) as usize;
    while timeline.len() <= s {
        let second = timeline.len() as u64;
        timeline.push(TimelineSecond {
            second,
            ..Default::default()
        });
    }
    &mut timeline[s]
}

fn tally(counts: &mut Counts, c: &ChangeState) {
    counts.source_changes += 1;
    counts.snapshot_changes += u64::from(c.has(SNAPSHOT));
    counts.raw += u64::from(c.raw_ms != NEVER);
    counts.standard += u64::from(c.standard_ms != NEVER);
    counts.enriched += u64::from(c.enriched());
    counts.lake_rows += u64::from(c.applied());
    counts.redo += u64::from(c.has(ROUTED_REDO));
    counts.critical += u64::from(c.has(ROUTED_CRITICAL));
    counts.parked_in_redo += u64::from(c.parked());
    counts.absorbed_by_snapshot += u64::from(c.absorbed());
}

fn record_latencies(latency: &mut LatencyPaths, c: &ChangeState, bounds: &TierBounds) {
    let span = |from: u32, to: u32| {
        (from != NEVER && to != NEVER).then(|| u64::from(to.saturating_sub(from)))
    };
    let paths = [
        (&mut latency.ingest, span(c.commit_ms, c.raw_ms)),
        (&mut latency.standardize, span(c.raw_ms, c.standard_ms)),
        (&mut latency.enrich, span(c.standard_ms, c.enriched_ms)),
        (&mut latency.lake_stage, span(c.enriched_ms, c.lake_ms)),
        (&mut latency.bus, span(c.commit_ms, c.bus_read_ms)),
        (&mut latency.lake, span(c.commit_ms, c.lake_ms)),
    ];
    for (path, value) in paths {
        if let Some(v) = value {
            path.record(v, bounds);
        }
    }
}

/// Says how far a lost change got, to point at the stage that dropped it.
fn lost_location(c: &ChangeState) -> String {
    let furthest = if c.has(REDO_DELETED) {
        "parked in redo; retention, a reset or a leader change took its record before a replay"
    } else if c.bus_read_ms != NEVER {
        "read from enriched"
    } else if c.enriched_ms != NEVER {
        "produced to enriched"
    } else if c.standard_ms != NEVER {
        "produced to standard"
    } else if c.raw_ms != NEVER {
        "produced to raw"
    } else {
        "committed at the source"
    };
    let what = if c.has(POISON) {
        "poison change never reached critical"
    } else {
        "never applied to the lake nor routed to critical"
    };
    format!("{what}; last seen: {furthest}")
}

/// An event time as `m:ss` since the run began.
fn human_window(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

fn digest_text(d: Option<u64>) -> String {
    d.map_or("absent".to_string(), |d| format!("{d:#018x}"))
}

/// Runs the checker over a whole history (owned or borrowed observations).
pub fn analyze<O: Borrow<Observation>>(
    observations: impl IntoIterator<Item = O>,
    opts: &CheckOptions,
) -> Analysis {
    let mut checker = Checker::new(opts.clone());
    for obs in observations {
        checker.observe(obs.borrow());
    }
    checker.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_change_record_stays_small() {
        // The module docs promise 64 bytes per change; a new field should be a conscious choice.
        assert!(std::mem::size_of::<ChangeState>() <= 64);
    }
}
