//! What the checker concludes from a history: the counts per place, the latency paths, the
//! anomalies and the fault windows. A [`crate::Report`] is built from it.

use nrtsim_history::{RunHeader, TopicName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::anomaly::ExactlyOnce;
use crate::latency::{LatencyPath, TierBounds};

/// How many changes reached each place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Source changes committed, the initial snapshot included.
    pub source_changes: u64,
    /// Distinct change ids that reached the raw topic (acknowledged to a producer, or read; a
    /// record written in a Kafka transaction reaches it when the transaction commits).
    pub raw: u64,
    /// Distinct change ids that reached the standard topic (as for `raw`).
    pub standard: u64,
    /// Distinct change ids that reached the enriched topic (as for `raw`, or applied by the
    /// lake).
    pub enriched: u64,
    /// Distinct change ids the lake applied.
    pub lake_rows: u64,
    /// Distinct change ids routed to redo at least once.
    pub redo: u64,
    /// Distinct change ids routed to critical.
    pub critical: u64,
    /// Source changes of the initial snapshot (transaction 0).
    pub snapshot_changes: u64,
    /// Changes whose last routing went to redo and that never reached their end.
    pub parked_in_redo: u64,
    /// Changes an incremental snapshot took up in a later row of their key and that were
    /// never delivered on their own (neither enriched nor routed to critical): accounted for,
    /// not lost. The same count as the conservation line's term.
    #[serde(default)]
    pub absorbed_by_snapshot: u64,
    /// Keys that hold a row in the final lake state.
    pub lake_keys: u64,
    /// Changes still on their way when a run that did not drain ended: a liveness failure
    /// (exit 4), not counted as lost, since they may yet have arrived.
    pub unfinished: u64,
    /// Card payments the fraud scorer scored (0 without a scorer).
    #[serde(default)]
    pub fraud_scored: u64,
    /// Card payments that reached the enriched topic but the fraud scorer never read, when
    /// there is a scorer.
    #[serde(default)]
    pub fraud_unscored: u64,
    /// Fraud alerts raised.
    #[serde(default)]
    pub fraud_alerts: u64,
    /// Card payments the spend aggregator dropped as too late for their window.
    #[serde(default)]
    pub late_dropped: u64,
    /// (Account, window) spend aggregates reconciled against the batch recomputation: those of
    /// the windows the aggregator's watermark has passed.
    #[serde(default)]
    pub aggregates_reconciled: u64,
}

/// Where every source change ended: the conservation line `source = enriched + waiting in
/// redo + critical + absorbed by a snapshot + unaccounted`. Each change counts once, at the furthest place it ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conservation {
    /// Source changes.
    pub source: u64,
    /// Changes that reached the enriched topic (a record there that no aborted transaction
    /// wrote, or one a reader saw) and were not parked in redo or sent to critical afterwards.
    pub enriched: u64,
    /// Changes parked in redo at the end.
    pub waiting_in_redo: u64,
    /// Changes in critical (poison, or out of redo attempts).
    pub critical: u64,
    /// Changes an incremental snapshot took up in a later row of their key.
    #[serde(default)]
    pub absorbed_by_snapshot: u64,
    /// Changes none of those account for: dropped or lost before the enriched topic, or still
    /// on their way when a run that did not drain ended. (The line is about enrichment: a
    /// change lost after the enriched topic, in the lake, counts as enriched here and as
    /// `lost` in the anomalies.)
    pub unaccounted: u64,
    /// Whether nothing is unaccounted for.
    pub holds: bool,
}

impl Conservation {
    /// Counts one change: `critical`, `parked`, `enriched`, `absorbed` say where it ended.
    pub(crate) fn add(&mut self, critical: bool, parked: bool, enriched: bool, absorbed: bool) {
        self.source += 1;
        if critical {
            self.critical += 1;
        } else if parked {
            self.waiting_in_redo += 1;
        } else if enriched {
            self.enriched += 1;
        } else if absorbed {
            self.absorbed_by_snapshot += 1;
        } else {
            self.unaccounted += 1;
        }
        self.holds = self.unaccounted == 0;
    }
}

/// The transaction-completeness oracle: each END boundary event the CDC connector emitted,
/// held against the source transaction and against what reached the enriched topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completeness {
    /// Source transactions (the initial snapshot included).
    pub transactions: u64,
    /// Transactions whose END the connector emitted.
    pub announced: u64,
    /// ENDs whose `event_count` differs from the source transaction's size.
    pub miscounted: u64,
    /// Announced transactions some of whose events never reached the enriched topic, leaving
    /// aside events in `critical` or waiting in `redo`.
    pub incomplete: u64,
    /// Up to a few of the transactions above, in words.
    pub examples: Vec<String>,
}

/// A reader whose position was out of range, moved by `auto.offset.reset`: before the log
/// start (retention had deleted it), or past the log end (a truncating leader change the reader
/// could not detect by leader epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetResetSeen {
    /// When.
    pub t_ms: u64,
    /// The reading task.
    pub host: String,
    /// The topic read.
    pub topic: TopicName,
    /// The partition read.
    pub partition: u32,
    /// The position the reader asked for.
    pub from: u64,
    /// The position it was moved to; `from` when `auto_offset_reset = "none"` refused to
    /// move it and the reader stopped there.
    pub to: u64,
    /// The partition's log start then: the offsets from `from` up to it had been deleted.
    pub log_start: u64,
}

/// The offsets `auto.offset.reset` moved readers over, in total: those retention had deleted,
/// and those still held that a reset skipped. Each reader's ranges on each partition are merged
/// first, so a range a restored reader is moved over again counts once, and an offset skipped
/// while held and later found deleted counts as deleted only.
pub fn offsets_reset_over(resets: &[&OffsetResetSeen]) -> (u64, u64) {
    type Ranges = BTreeMap<(String, TopicName, u32), Vec<(u64, u64)>>;
    let mut deleted: Ranges = BTreeMap::new();
    let mut either: Ranges = BTreeMap::new();
    for x in resets {
        let reader = (x.host.clone(), x.topic, x.partition);
        if x.deleted() > 0 {
            let range = (x.from, x.log_start);
            deleted.entry(reader.clone()).or_default().push(range);
            either.entry(reader.clone()).or_default().push(range);
        }
        if x.skipped_held() > 0 {
            let range = (x.log_start.max(x.from), x.to);
            either.entry(reader).or_default().push(range);
        }
    }
    let distinct = |ranges: Ranges| -> u64 {
        ranges
            .into_values()
            .map(|mut rs| {
                rs.sort_unstable();
                let mut total = 0;
                let mut covered_to = 0;
                for (from, to) in rs {
                    let from = from.max(covered_to);
                    if to > from {
                        total += to - from;
                        covered_to = to;
                    }
                }
                total
            })
            .sum()
    };
    let deleted = distinct(deleted);
    (deleted, distinct(either) - deleted)
}

/// A leader change that cut away acknowledged records: the new leader's log ended before the
/// end of what earlier leaders had acknowledged on the partition. The span between counts
/// offsets, not records: transaction markers and appends whose acknowledgement was lost are
/// among them. So are those a deposed leader acknowledged after the change, not knowing yet
/// (known by the leader epoch each acknowledgement carries); an older history, whose
/// acknowledgements carry no epoch, leaves them out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderCutSeen {
    /// When the new leader took over.
    pub t_ms: u64,
    /// The new leader.
    pub host: String,
    /// The topic.
    pub topic: TopicName,
    /// The partition.
    pub partition: u32,
    /// The epoch it leads in.
    pub epoch: u32,
    /// Its log end when it took over.
    pub log_end: u64,
    /// The end of what had been acknowledged before, or by the deposed leader after: the
    /// offsets from `log_end` up to it are gone.
    pub acknowledged_end: u64,
}

impl LeaderCutSeen {
    /// Offsets, below the end of what was acknowledged, that the leader change cut away.
    pub fn cut(&self) -> u64 {
        self.acknowledged_end.saturating_sub(self.log_end)
    }
}

/// A reader that found its leader's log diverged from what it had read (a truncating leader
/// change) by the leader epoch of its last record (KIP-320), and went back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncationSeen {
    /// When.
    pub t_ms: u64,
    /// The reading task.
    pub host: String,
    /// The topic read.
    pub topic: TopicName,
    /// The partition read.
    pub partition: u32,
    /// The reader's position.
    pub from: u64,
    /// Where it went back to, where the logs agree; `from` when
    /// `auto_offset_reset = "none"` refused to move it and the reader stopped there.
    pub to: u64,
}

impl TruncationSeen {
    /// Whether the reader was refused and reads the partition no more.
    pub fn stopped(&self) -> bool {
        self.to == self.from
    }

    /// Where the reader went, as the reports' tables show it: the offset, or `stopped`.
    pub fn to_text(&self) -> String {
        if self.stopped() {
            "stopped".to_string()
        } else {
            self.to.to_string()
        }
    }

    /// Offsets the reader had read that the leader's log no longer holds as it read them.
    pub fn diverged(&self) -> u64 {
        self.from.saturating_sub(self.to)
    }
}

impl OffsetResetSeen {
    /// Whether the reader was refused a reset and reads the partition no more.
    pub fn stopped(&self) -> bool {
        self.to == self.from
    }

    /// Where the reader went, as the reports' tables show it: the offset, or `stopped`.
    pub fn to_text(&self) -> String {
        if self.stopped() {
            "stopped".to_string()
        } else {
            self.to.to_string()
        }
    }

    /// Whether the position was past the log end (after a truncating leader change), not
    /// before its start.
    pub fn past_end(&self) -> bool {
        self.from >= self.log_start
    }

    /// Offsets the reader never read because retention had deleted them.
    pub fn deleted(&self) -> u64 {
        self.log_start.saturating_sub(self.from)
    }

    /// Offsets still held that the reset skipped (`latest` jumps past them).
    pub fn skipped_held(&self) -> u64 {
        self.to.saturating_sub(self.log_start.max(self.from))
    }
}

/// A fault as the history recorded it: when it began and, if it was healed, when it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// Fault kind as the scenario spelt it.
    pub kind: String,
    /// The resolved target.
    pub target: String,
    /// When it began.
    pub start_ms: u64,
    /// When it ended; `None` if it never did.
    pub end_ms: Option<u64>,
}

impl FaultWindow {
    /// Whether the fault is a one-way action with nothing to heal: a `failover` hands a task
    /// to its standby for good.
    pub fn is_permanent(&self) -> bool {
        self.kind == "failover"
    }

    /// Whether the fault could heal and had not when the run ended.
    pub fn never_healed(&self) -> bool {
        self.end_ms.is_none() && !self.is_permanent()
    }

    /// Its end as a report shows it.
    pub fn end_text(&self) -> String {
        match self.end_ms {
            Some(ms) => crate::render::human_ms(ms),
            None if self.is_permanent() => "permanent".to_string(),
            None => "never healed".to_string(),
        }
    }
}

/// Every latency path the checker measures, each in milliseconds from its start point.
#[derive(Clone, Debug, Default)]
pub struct LatencyPaths {
    /// Source commit to the first read of the enriched topic (end to end, bus).
    pub bus: LatencyPath,
    /// Source commit to the first lake commit applying the change (end to end, lake).
    pub lake: LatencyPath,
    /// Source commit to the raw topic (first acknowledgement or read; a record written in a
    /// Kafka transaction is acknowledged when the transaction commits).
    pub ingest: LatencyPath,
    /// Raw topic to standard topic (first acknowledgement, as above, or read of each).
    pub standardize: LatencyPath,
    /// Standard topic to enriched topic (first acknowledgement, as above, or read of each).
    pub enrich: LatencyPath,
    /// Enriched topic to the first lake commit applying the change.
    pub lake_stage: LatencyPath,
    /// Source commit to the fraud scorer's first read of a card payment.
    pub fraud: LatencyPath,
}

/// What the checker concluded from one history.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The history's header, if it had one.
    pub header: Option<RunHeader>,
    /// What reached where.
    pub counts: Counts,
    /// Latency per stage and end to end.
    pub latency: LatencyPaths,
    /// The tier bounds the latency tiers were counted with.
    pub tier_bounds: TierBounds,
    /// The anomalies found, with examples.
    pub exactly_once: ExactlyOnce,
    /// Faults in the order they began.
    pub faults: Vec<FaultWindow>,
    /// Readers moved by `auto.offset.reset`, in the order they were.
    pub offset_resets: Vec<OffsetResetSeen>,
    /// Readers that went back after a truncating leader change, in the order they did.
    pub truncations: Vec<TruncationSeen>,
    /// Leader changes that cut away acknowledged records, in the order they happened.
    pub leader_cuts: Vec<LeaderCutSeen>,
    /// Whether the run said it drained; `false` when the history has no `RunEnd`.
    pub drained: bool,
    /// Whether the history ended with a `RunEnd`.
    pub run_ended: bool,
    /// Simulated run time: the `RunEnd` time, or the last observation's time without one.
    pub sim_duration_ms: u64,
    /// When the workload stopped, if the history says.
    pub workload_end_ms: Option<u64>,
    /// Per simulated second: what was committed, what became visible, and how late.
    pub timeline: Vec<TimelineSecond>,
    /// The lake table's snapshots and files.
    pub lake: LakeStats,
    /// How unevenly load spread: over each topic's partitions, and over the reading tasks.
    pub skew: Vec<crate::skew::Spread>,
    /// Where every source change ended.
    pub conservation: Conservation,
    /// Transaction ENDs against the source and the enriched topic.
    pub completeness: Completeness,
    /// The schema registry's decisions, when the run had a registry or a record went to
    /// `critical` for its schema.
    pub schemas: Option<SchemaReport>,
}

/// What the schema registry decided over the run, and what its refusals cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReport {
    /// Each first answer a standardize task had about a table schema, in time order (one
    /// per table version; later tasks' identical answers are left out).
    pub decisions: Vec<SchemaDecision>,
    /// Records sent to `critical` by standardize because of their table schema: refused by
    /// the registry, or without one, lacking a column the canonical record needs.
    pub rejected_records: u64,
    /// Records sent to `critical` because their reader could not read them with the schema
    /// it was built for.
    pub unreadable_records: u64,
}

/// One schema decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDecision {
    /// When, in simulated ms.
    pub t_ms: u64,
    /// The subject.
    pub subject: String,
    /// The source table's schema version.
    pub table_version: u32,
    /// The schema id; absent when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Why it was refused; absent when registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the lake's layout cost: snapshots, files written, and the files the last snapshot
/// reads (how many of them small).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LakeStats {
    /// Snapshots committed.
    pub snapshots: u64,
    /// Files written over the run (deltas, rewrites, compaction output).
    pub files_written: u64,
    /// Files written per snapshot, on average.
    pub files_per_snapshot: f64,
    /// Files the last snapshot reads.
    pub live_files: u64,
    /// Of those, files below the table's small-file threshold.
    pub small_files: u64,
    /// Files written over the run that were below the threshold.
    pub small_files_written: u64,
    /// Row versions an upsert table folded into a later version of the same key within one
    /// commit: states no snapshot showed (0 in `changelog` mode).
    #[serde(default)]
    pub versions_folded: u64,
    /// Pre-commits of a two-phase sink the table rolled back, left uncommitted past
    /// `lake.pre_commit_timeout`: their rows reach no snapshot.
    #[serde(default)]
    pub pre_commits_rolled_back: u64,
}

/// One simulated second of the run (the initial snapshot left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSecond {
    /// Seconds since the run began.
    pub second: u64,
    /// Source changes committed in this second.
    pub committed: u64,
    /// Changes a lake snapshot made visible in this second.
    pub visible: u64,
    /// The longest commit-to-lake latency of the changes committed in this second.
    pub lake_latency_max_ms: u64,
}
