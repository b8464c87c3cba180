//! One replica's log of one partition: records with offsets and leader epochs, the epoch cache
//! used to find where a follower's log diverges from a new leader's, the idempotent producers'
//! epochs and last sequence numbers, and the transactions: which are open (they hold back the
//! last stable offset), which were aborted (the index `read_committed` readers filter by), and
//! the commit and abort markers that end them. Retention deletes records from the front: the
//! log then starts past offset 0, and a read from before its start is out of range.

use nrtsim_pipeline::{Record, RecordMeta};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// The producer that wrote a batch, as the batch header carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Producer id.
    pub pid: u64,
    /// Producer epoch: bumped by each `InitProducerId`, so an older instance is fenced.
    pub epoch: u32,
    /// Sequence number of the batch's first record.
    pub base_seq: u64,
    /// Whether the batch belongs to a transaction.
    pub transactional: bool,
}

/// What a stored record says about its producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerMark {
    /// Producer id.
    pub pid: u64,
    /// Producer epoch.
    pub epoch: u32,
    /// The record's sequence number (unused by control records).
    pub seq: u64,
    /// Written inside a transaction.
    pub transactional: bool,
}

/// A control record: the marker that ends a producer's transaction on this partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Commit (true) or abort (false).
    pub commit: bool,
}

/// A stored record, shared by every replica that holds it and every fetch that hands it on:
/// a follower appends the very record its leader stored, so replication copies no record.
pub type SharedRecord = Rc<StoredRecord>;

/// A record as a replica stores it.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// The leader epoch it was appended in.
    pub epoch: u32,
    /// When the leader appended it, in simulated ms: the time retention goes by.
    pub appended_ms: u64,
    /// The record (its payload is shared between replicas); empty for a control record.
    pub record: Record,
    /// The idempotent producer that wrote it, with its sequence number.
    pub producer: Option<ProducerMark>,
    /// Set on a transaction marker, which is not data and no consumer is handed.
    pub control: Option<Marker>,
}

/// What a leader append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderAppend {
    /// Appended from this base offset (`count` records; the first `skipped` of the batch
    /// were duplicates and were dropped).
    Appended {
        /// Offset of the first record appended: the batch's record `skipped`.
        base_offset: u64,
        /// Records appended.
        count: u64,
        /// How many of the batch's first records the log already held.
        skipped: u64,
    },
    /// Every record was already in the log; they are committed once the high watermark
    /// reaches `end` (the producer's newest record, so at or past the duplicates).
    Duplicate {
        /// The offset just past the producer's newest record in the log.
        end: u64,
        /// Where the batch's first record went, when it is among the producer's last
        /// [`RECENT_RUNS`] runs of records: a retry is answered with its original offset, as
        /// Kafka answers from the last five batches it keeps per producer.
        base_offset: Option<u64>,
    },
    /// The sequence numbers skip ahead of what the broker has.
    OutOfOrder,
    /// The producer's epoch is older than one the log has seen: a zombie instance, fenced.
    Fenced,
}

/// Records handed to a consumer: data only, each with its offset.
#[derive(Clone, Debug, Default)]
pub struct ConsumerRead {
    /// `(offset, record)` in offset order.
    pub records: Vec<(u64, SharedRecord)>,
    /// The offset to fetch from next (past any control or filtered records read over).
    pub next_offset: u64,
}

/// An aborted transaction's span on this partition: records of `pid` from `first` up to the
/// abort marker at `marker` belong to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AbortedTxn {
    pid: u64,
    first: u64,
    marker: u64,
}

/// A replica's log.
#[derive(Clone, Debug, Default)]
pub struct PartitionLog {
    records: Segments,
    /// The first offset still held: retention deletes what is before it.
    log_start: u64,
    /// (epoch, start offset), increasing.
    epochs: Vec<(u32, u64)>,
    /// Per producer id: its epoch, the last sequence number appended in that epoch (none yet
    /// after a marker or a new epoch), and the offset of its newest record.
    producers: BTreeMap<u64, ProducerEntry>,
    /// Open transactions: producer id → offset of its first record in the transaction.
    open: BTreeMap<u64, u64>,
    /// Aborted transactions, by marker offset.
    aborted: Vec<AbortedTxn>,
    /// The high watermark as last checkpointed to disk.
    pub hw_checkpoint: u64,
    /// The log end at the last flush: what survives a power loss.
    pub flushed: u64,
}

#[derive(Clone, Copy, Debug)]
struct ProducerEntry {
    epoch: u32,
    last_seq: Option<u64>,
    last_offset: u64,
    /// The producer's newest runs of records in this epoch, oldest overwritten first.
    runs: [Run; RECENT_RUNS],
    /// How many runs were ever started in this epoch; the newest is at `(started - 1) %`
    /// [`RECENT_RUNS`].
    started: usize,
}

/// How many of a producer's runs a log remembers, to answer a retry with the offset its
/// records went to. Kafka keeps the metadata of a producer's last five batches.
pub const RECENT_RUNS: usize = 5;

/// Consecutive records of one producer with consecutive sequence numbers at consecutive
/// offsets: one batch, or several appended back to back.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    first_seq: u64,
    last_seq: u64,
    first_offset: u64,
}

impl ProducerEntry {
    fn new(epoch: u32, offset: u64) -> Self {
        ProducerEntry {
            epoch,
            last_seq: None,
            last_offset: offset,
            runs: [Run::default(); RECENT_RUNS],
            started: 0,
        }
    }

    /// Notes data record `seq` at `offset`: it extends the newest run when it follows that
    /// run's last record directly, and starts a run otherwise.
    fn note(&mut self, seq: u64, offset: u64) {
        let newest = self.started.checked_sub(1).map(|i| i % RECENT_RUNS);
        match newest {
            Some(i)
                if self.runs[i].last_seq + 1 == seq
                    && self.runs[i].first_offset + (seq - self.runs[i].first_seq) == offset =>
            {
                self.runs[i].last_seq = seq;
            }
            _ => {
                self.runs[self.started % RECENT_RUNS] = Run {
                    first_seq: seq,
                    last_seq: seq,
                    first_offset: offset,
                };
                self.started += 1;
            }
        }
    }

    /// The offset of record `first_seq`, when the records `first_seq..first_seq + count` lie
    /// in one remembered run.
    fn offset_of(&self, first_seq: u64, count: u64) -> Option<u64> {
        let last = first_seq.checked_add(count.checked_sub(1)?)?;
        self.runs[..self.started.min(RECENT_RUNS)]
            .iter()
            .find(|r| r.first_seq <= first_seq && last <= r.last_seq)
            .map(|r| r.first_offset + (first_seq - r.first_seq))
    }
}

impl PartitionLog {
    /// Log end offset: the offset the next record gets.
    pub fn leo(&self) -> u64 {
        self.records.len
    }

    /// Log start offset: the oldest offset a reader may fetch (0 until retention deletes).
    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    /// The leader epoch of the record at `offset`, if the log holds it.
    pub fn epoch_at(&self, offset: u64) -> Option<u32> {
        (self.log_start..self.leo())
            .contains(&offset)
            .then(|| self.records.get(offset).epoch)
    }

    /// The newest epoch in the log, if any.
    pub fn last_epoch(&self) -> Option<u32> {
        self.epochs.last().map(|e| e.0)
    }

    /// Records `epoch` as starting at the log end, if it is newer than the last one.
    pub fn begin_epoch(&mut self, epoch: u32) {
        if self.last_epoch().is_none_or(|e| e < epoch) {
            self.epochs.push((epoch, self.leo()));
        }
    }

    /// The largest epoch this log holds at or below `epoch`, and where it ends (the start of
    /// the next epoch, or the log end): Kafka's OffsetsForLeaderEpoch answer. `None` when every
    /// epoch here is newer.
    pub fn epoch_end(&self, epoch: u32) -> Option<(u32, u64)> {
        let i = self.epochs.iter().rposition(|(e, _)| *e <= epoch)?;
        let end = self.epochs.get(i + 1).map_or(self.leo(), |next| next.1);
        Some((self.epochs[i].0, end))
    }

    /// Forgets the epochs that begin at or past `offset` (what a follower truncating there
    /// does, an epoch begun at the log end with no records included).
    pub fn forget_epochs_from(&mut self, offset: u64) {
        self.epochs.retain(|(_, start)| *start < offset);
    }

    /// The end offset of the largest epoch at or below `epoch`: where a follower whose log
    /// ends in `epoch` must truncate to. Returns the log end when `epoch` is the newest.
    pub fn end_offset_for_epoch(&self, epoch: u32) -> u64 {
        match self.epochs.iter().position(|(e, _)| *e > epoch) {
            Some(0) => self.log_start,
            Some(i) => self.epochs[i].1,
            None => self.leo(),
        }
    }

    /// Appends as leader in `epoch` at simulated time `now_ms`. With a producer id, records
    /// whose sequence numbers the log already holds are dropped, and a gap in sequence numbers
    /// is refused.
    pub fn append_leader(
        &mut self,
        now_ms: u64,
        epoch: u32,
        records: &[Record],
        producer: Option<ProducerBatch>,
    ) -> LeaderAppend {
        self.begin_epoch(epoch);
        let mut skip = 0u64;
        if let Some(b) = producer {
            let known = self.producers.get(&b.pid).copied();
            if known.is_some_and(|p| p.epoch > b.epoch) {
                return LeaderAppend::Fenced;
            }
            let next = match known {
                Some(p) if p.epoch == b.epoch => p.last_seq.map_or(0, |s| s + 1),
                // A new epoch numbers from zero again.
                Some(_) => 0,
                // Retention may have deleted every record of a producer the log no longer
                // knows (a truncation rebuilds what it knows from the records left): take its
                // sequence as it comes, as Kafka does since KIP-360. A producer the log never
                // knew must start at 0 here: taken at any sequence, a new producer's batch
                // after a refused first one would open a gap that a retry of the first then
                // falls into as a duplicate, and is dropped unwritten.
                None if self.log_start > 0 => b.base_seq,
                None => 0,
            };
            if b.base_seq > next {
                return LeaderAppend::OutOfOrder;
            }
            skip = next.saturating_sub(b.base_seq);
            if skip >= records.len() as u64 {
                let end = known.map_or(0, |p| p.last_offset + 1);
                // Only if the records there are this batch's: a producer whose sequence
                // numbers were restored from a checkpoint may number other records the same.
                let base_offset = known
                    .filter(|p| p.epoch == b.epoch)
                    .and_then(|p| p.offset_of(b.base_seq, records.len() as u64))
                    .filter(|&o| o >= self.log_start)
                    .filter(|&o| {
                        records.iter().zip(o..).all(|(r, at)| {
                            let held = &self.records.get(at).record;
                            (held.key, held.meta.change_id) == (r.key, r.meta.change_id)
                        })
                    });
                return LeaderAppend::Duplicate { end, base_offset };
            }
        }
        let base_offset = self.leo();
        for (i, r) in records.iter().enumerate().skip(skip as usize) {
            let producer = producer.map(|b| ProducerMark {
                pid: b.pid,
                epoch: b.epoch,
                seq: b.base_seq + i as u64,
                transactional: b.transactional,
            });
            self.push(Rc::new(StoredRecord {
                epoch,
                appended_ms: now_ms,
                record: r.clone(),
                producer,
                control: None,
            }));
        }
        LeaderAppend::Appended {
            base_offset,
            count: records.len() as u64 - skip,
            skipped: skip,
        }
    }

    /// Appends records fetched from the leader.
    pub fn append_follower(&mut self, records: &[SharedRecord]) {
        for r in records {
            self.begin_epoch(r.epoch);
            self.push(r.clone());
        }
    }

    /// Appends, as leader in `epoch`, the marker that ends producer `pid`'s transaction here.
    /// Returns the marker's offset, or `None` when the producer's epoch has moved past
    /// `producer_epoch` (the marker is stale).
    pub fn append_marker(
        &mut self,
        now_ms: u64,
        epoch: u32,
        pid: u64,
        producer_epoch: u32,
        commit: bool,
    ) -> Option<u64> {
        if self
            .producers
            .get(&pid)
            .is_some_and(|p| p.epoch > producer_epoch)
        {
            return None;
        }
        self.begin_epoch(epoch);
        let offset = self.leo();
        self.push(Rc::new(StoredRecord {
            epoch,
            appended_ms: now_ms,
            record: control_placeholder(),
            producer: Some(ProducerMark {
                pid,
                epoch: producer_epoch,
                seq: 0,
                transactional: true,
            }),
            control: Some(Marker { commit }),
        }));
        Some(offset)
    }

    fn push(&mut self, r: SharedRecord) {
        let offset = self.leo();
        if let Some(p) = r.producer {
            let entry = self
                .producers
                .entry(p.pid)
                .or_insert_with(|| ProducerEntry::new(p.epoch, offset));
            if p.epoch > entry.epoch {
                *entry = ProducerEntry::new(p.epoch, offset);
            }
            entry.last_offset = offset;
            match r.control {
                Some(marker) => {
                    // A transaction ends; the producer's next one may number afresh only in a
                    // new epoch, so the sequence carries on.
                    if let Some(first) = self.open.remove(&p.pid) {
                        if !marker.commit {
                            self.aborted.push(AbortedTxn {
                                pid: p.pid,
                                first,
                                marker: offset,
                            });
                        }
                    }
                }
                None => {
                    entry.last_seq = Some(p.seq);
                    entry.note(p.seq, offset);
                    if p.transactional {
                        self.open.entry(p.pid).or_insert(offset);
                    }
                }
            }
        }
        self.records.push(r);
    }

    /// The last stable offset: below the first record of any open transaction, and never
    /// past `hw` nor (when `hw` allows) before the log start.
    pub fn last_stable_offset(&self, hw: u64) -> u64 {
        // An open transaction's first records may have been deleted: never below the start.
        self.open
            .values()
            .copied()
            .fold(hw, u64::min)
            .max(self.log_start.min(hw))
    }

    /// The offsets of the records the abort marker at `marker` aborted, with the change each
    /// carries.
    pub fn aborted_by(&self, marker: u64) -> Vec<(u64, u64)> {
        let Some(a) = self.aborted.iter().find(|a| a.marker == marker) else {
            return Vec::new();
        };
        (a.first.max(self.log_start)..a.marker)
            .filter(|&o| {
                let r = self.records.get(o);
                r.control.is_none() && r.producer.is_some_and(|p| p.pid == a.pid)
            })
            .map(|o| (o, self.records.get(o).record.meta.change_id))
            .collect()
    }

    /// What a consumer fetching from `offset` is handed, up to `end` (the high watermark for
    /// `read_uncommitted`, the last stable offset for `read_committed`) and at most `max`
    /// records: markers are never handed out, and with `committed_only` neither are records
    /// of aborted transactions.
    pub fn read_for_consumer(
        &self,
        offset: u64,
        end: u64,
        max: usize,
        committed_only: bool,
    ) -> ConsumerRead {
        debug_assert!(offset >= self.log_start, "read below the log start");
        let end = end.min(self.leo());
        let mut out = ConsumerRead {
            records: Vec::new(),
            next_offset: offset,
        };
        // The aborted transactions that overlap the range read: markers are in offset order,
        // so only those past `offset` can.
        let from = self.aborted.partition_point(|a| a.marker <= offset);
        let overlapping: Vec<AbortedTxn> = self.aborted[from..]
            .iter()
            .filter(|a| a.first < end)
            .copied()
            .collect();
        let is_aborted = |pid: u64, o: u64| {
            overlapping
                .iter()
                .any(|a| a.pid == pid && a.first <= o && o < a.marker)
        };
        let mut o = offset;
        while o < end && out.records.len() < max {
            let r = self.records.get(o);
            let skip = r.control.is_some()
                || (committed_only
                    && r.producer
                        .is_some_and(|p| p.transactional && is_aborted(p.pid, o)));
            if !skip {
                out.records.push((o, r.clone()));
            }
            o += 1;
        }
        out.next_offset = o.max(offset);
        out
    }

    /// Drops every record at or after `offset`. Below the log start, nothing is kept and the
    /// log starts again at `offset`.
    pub fn truncate_to(&mut self, offset: u64) {
        if offset >= self.leo() {
            return;
        }
        if offset < self.log_start {
            self.truncate_fully_and_start_at(offset);
            return;
        }
        let mut kept = std::mem::take(&mut self.records);
        kept.truncate(offset);
        self.records = Segments::starting_at(kept.base);
        self.epochs.retain(|(_, start)| *start < offset);
        self.producers.clear();
        self.open.clear();
        self.aborted.clear();
        for r in kept.into_records() {
            self.push(r);
        }
        self.hw_checkpoint = self.hw_checkpoint.min(offset);
        self.flushed = self.flushed.min(offset);
    }

    /// Drops every record and starts the log, empty, at `offset`: what a follower does when
    /// its leader's retention has deleted past the follower's log end.
    pub fn truncate_fully_and_start_at(&mut self, offset: u64) {
        *self = PartitionLog {
            records: Segments::starting_at(offset),
            log_start: offset,
            hw_checkpoint: offset,
            flushed: offset,
            ..PartitionLog::default()
        };
    }

    /// Retention: deletes from the front every record appended before `cutoff_ms`, but none
    /// at or past `bound` (the high watermark: what readers may yet be handed is kept).
    /// Returns the log start before and after when it moved. Records go one by one; Kafka
    /// deletes whole segments once their newest record expires, so it never deletes earlier
    /// than this does.
    pub fn delete_expired(&mut self, cutoff_ms: u64, bound: u64) -> Option<(u64, u64)> {
        let bound = bound.min(self.leo());
        let from = self.log_start;
        let mut start = from;
        while start < bound && self.records.get(start).appended_ms < cutoff_ms {
            start += 1;
        }
        if start == from {
            return None;
        }
        self.log_start = start;
        self.records.drop_before(start);
        self.aborted.retain(|a| a.marker >= start);
        self.hw_checkpoint = self.hw_checkpoint.max(start);
        self.flushed = self.flushed.max(start);
        Some((from, start))
    }

    /// Flushes the log to disk.
    pub fn flush(&mut self) {
        self.flushed = self.leo();
    }

    /// Loses what was not flushed, as a power loss does.
    pub fn lose_unflushed(&mut self) {
        self.truncate_to(self.flushed);
    }

    /// Up to `max` records from `offset` (or from the log start, if that is later), stopping
    /// before `end`.
    pub fn read(&self, offset: u64, end: u64, max: usize) -> Vec<SharedRecord> {
        let offset = offset.max(self.log_start);
        let end = end.min(self.leo());
        if offset >= end {
            return Vec::new();
        }
        let stop = end.min(offset.saturating_add(max as u64));
        (offset..stop)
            .map(|o| self.records.get(o).clone())
            .collect()
    }
}

/// Records in a log segment at most. A replica's log is kept in segments, as a broker keeps
/// its files, so that a growing log never copies what it already holds: a single vector
/// would move every record each time it doubled.
const SEGMENT_RECORDS: usize = 4096;

/// A log's records in fixed-size segments, indexed by offset. The first segment starts at
/// `base`; when retention moves the log start, the segments wholly before it are dropped.
#[derive(Clone, Debug, Default)]
struct Segments {
    segments: VecDeque<Vec<SharedRecord>>,
    /// The offset of the first record held.
    base: u64,
    /// The offset past the last record (the log end).
    len: u64,
}

impl Segments {
    /// No records, the next one at `offset`.
    fn starting_at(offset: u64) -> Segments {
        Segments {
            segments: VecDeque::new(),
            base: offset,
            len: offset,
        }
    }

    fn get(&self, offset: u64) -> &SharedRecord {
        let o = (offset - self.base) as usize;
        &self.segments[o / SEGMENT_RECORDS][o % SEGMENT_RECORDS]
    }

    fn push(&mut self, r: SharedRecord) {
        match self.segments.back_mut() {
            Some(seg) if seg.len() < SEGMENT_RECORDS => seg.push(r),
            _ => {
                let mut seg = Vec::with_capacity(if self.segments.is_empty() {
                    16
                } else {
                    SEGMENT_RECORDS
                });
                seg.push(r);
                self.segments.push_back(seg);
            }
        }
        self.len += 1;
    }

    /// Keeps the records before offset `len`.
    fn truncate(&mut self, len: u64) {
        if len >= self.len {
            return;
        }
        let l = len.saturating_sub(self.base) as usize;
        let kept = l.div_ceil(SEGMENT_RECORDS);
        self.segments.truncate(kept);
        if let Some(seg) = self.segments.back_mut() {
            seg.truncate(l - (kept - 1) * SEGMENT_RECORDS);
        }
        self.len = len.max(self.base);
    }

    /// Drops the full segments that end at or before `offset`.
    fn drop_before(&mut self, offset: u64) {
        while self
            .segments
            .front()
            .is_some_and(|seg| seg.len() == SEGMENT_RECORDS)
            && self.base + SEGMENT_RECORDS as u64 <= offset
        {
            self.segments.pop_front();
            self.base += SEGMENT_RECORDS as u64;
        }
    }

    fn into_records(self) -> impl Iterator<Item = SharedRecord> {
        self.segments.into_iter().flatten()
    }
}

/// The empty record a marker carries in place of data.
fn control_placeholder() -> Record {
    Record {
        key: 0,
        value: Default::default(),
        meta: RecordMeta {
            change_id: 0,
            txid: 0,
            commit_ms: 0,
            attempt: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                key: i,
                value: Default::default(),
                meta: RecordMeta {
                    change_id: i,
                    txid: i,
                    commit_ms: 0,
                    attempt: 0,
                },
            })
            .collect()
    }

    #[test]
    fn segments_keep_offsets_across_boundaries_and_truncation() {
        let n = 2 * SEGMENT_RECORDS as u64 + 10;
        let mut log = PartitionLog::default();
        log.append_leader(0, 0, &recs(n), None);
        assert_eq!(log.leo(), n);
        let ids = |log: &PartitionLog, from: u64, max: usize| -> Vec<u64> {
            log.read(from, log.leo(), max)
                .iter()
                .map(|r| r.record.meta.change_id)
                .collect()
        };
        let edge = SEGMENT_RECORDS as u64;
        assert_eq!(
            ids(&log, edge - 2, 4),
            vec![edge - 2, edge - 1, edge, edge + 1]
        );
        for cut in [n - 1, 2 * edge, edge + 1, edge, 3, 0] {
            let mut l = log.clone();
            l.truncate_to(cut);
            assert_eq!(l.leo(), cut);
            assert_eq!(ids(&l, 0, usize::MAX), (0..cut).collect::<Vec<_>>());
            // The log grows on from the cut with the offsets it would have had.
            l.append_leader(0, 0, &recs(3), None);
            assert_eq!(l.leo(), cut + 3);
            assert_eq!(ids(&l, cut, 3), vec![0, 1, 2]);
        }
    }

    fn idem(pid: u64, base_seq: u64) -> Option<ProducerBatch> {
        Some(ProducerBatch {
            pid,
            epoch: 0,
            base_seq,
            transactional: false,
        })
    }

    fn idem_epoch(pid: u64, epoch: u32, base_seq: u64) -> Option<ProducerBatch> {
        Some(ProducerBatch {
            pid,
            epoch,
            base_seq,
            transactional: false,
        })
    }

    fn txn(pid: u64, epoch: u32, base_seq: u64) -> Option<ProducerBatch> {
        Some(ProducerBatch {
            pid,
            epoch,
            base_seq,
            transactional: true,
        })
    }

    fn offsets(read: &ConsumerRead) -> Vec<u64> {
        read.records.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn retention_deletes_from_the_front_and_offsets_stay() {
        let edge = SEGMENT_RECORDS as u64;
        let mut log = PartitionLog::default();
        log.append_leader(0, 0, &recs(edge + 5), None); // appended at 0 ms
        log.append_leader(1000, 0, &recs(edge), None); // appended at 1000 ms
        let n = log.leo();
        assert_eq!(log.delete_expired(0, n), None, "nothing is older than 0 ms");
        // The bound (the high watermark) keeps what readers may yet be handed.
        assert_eq!(log.delete_expired(500, 3), Some((0, 3)));
        assert_eq!(log.log_start(), 3);
        assert_eq!(log.delete_expired(500, n), Some((3, edge + 5)));
        assert_eq!(log.leo(), n);
        // The segment wholly before the start is gone; offsets are what they always were.
        assert_eq!(log.records.base, edge);
        assert_eq!(
            offsets(&log.read_for_consumer(edge + 5, n, 3, false)),
            vec![edge + 5, edge + 6, edge + 7]
        );
        assert_eq!(log.read(0, n, usize::MAX).len() as u64, edge);
        // Truncation above the start keeps it; below it, the log starts again empty there.
        let mut t = log.clone();
        t.truncate_to(n - 1);
        assert_eq!((t.log_start(), t.leo()), (edge + 5, n - 1));
        t.append_leader(2000, 0, &recs(1), None);
        assert_eq!(t.leo(), n);
        let mut t = log.clone();
        t.truncate_to(2);
        assert_eq!((t.log_start(), t.leo()), (2, 2));
        // A follower that lost everything starts at the leader's log start and appends on.
        let mut f = PartitionLog::default();
        f.append_leader(0, 0, &recs(3), None);
        f.truncate_fully_and_start_at(edge + 5);
        f.append_follower(&log.read(edge + 5, edge + 8, 3));
        assert_eq!((f.log_start(), f.leo()), (edge + 5, edge + 8));
        assert_eq!(
            offsets(&f.read_for_consumer(edge + 5, n, 10, false)),
            vec![edge + 5, edge + 6, edge + 7]
        );
        // An epoch older than any it holds ends at its start, not at 0.
        let mut g = PartitionLog::default();
        g.truncate_fully_and_start_at(10);
        g.begin_epoch(4);
        assert_eq!(g.end_offset_for_epoch(1), 10);
    }

    #[test]
    fn past_retention_an_unknown_producer_and_an_open_transaction_are_taken_as_they_are() {
        let mut log = PartitionLog::default();
        log.append_leader(0, 0, &recs(2), txn(9, 0, 0)); // 0, 1: open, first records
        log.append_leader(0, 0, &recs(2), idem(7, 0)); // 2, 3

        // Without retention, a producer the log does not know must start at 0.
        let mut fresh = log.clone();
        assert_eq!(
            fresh.append_leader(0, 0, &recs(1), idem(5, 3)),
            LeaderAppend::OutOfOrder
        );
        log.append_leader(1000, 0, &recs(2), None); // 4, 5
        assert_eq!(log.delete_expired(500, 6), Some((0, 4)));
        // The open transaction's first records are gone: the LSO does not go below the start.
        assert_eq!(log.last_stable_offset(6), 4);
        // A follower that starts again at its leader's log start knows no producer: their next
        // batches are taken at the sequence they carry (KIP-360).
        let mut f = PartitionLog::default();
        f.truncate_fully_and_start_at(4);
        assert_eq!(
            f.append_leader(2000, 0, &recs(1), idem(7, 2)),
            LeaderAppend::Appended {
                base_offset: 4,
                count: 1,
                skipped: 0
            }
        );
        assert_eq!(
            f.append_leader(2000, 0, &recs(1), idem(7, 4)),
            LeaderAppend::OutOfOrder,
            "once known, its sequence is checked again"
        );
    }

    #[test]
    fn the_last_stable_offset_waits_for_open_transactions() {
        let mut log = PartitionLog::default();
        log.append_leader(0, 0, &recs(2), None); // 0, 1: plain records
        log.append_leader(0, 0, &recs(3), txn(9, 0, 0)); // 2..5: open transaction
        assert_eq!(log.last_stable_offset(5), 2);
        // read_committed stops at the LSO; read_uncommitted reads to the high watermark.
        assert_eq!(offsets(&log.read_for_consumer(0, 2, 100, true)), vec![0, 1]);
        assert_eq!(log.read_for_consumer(0, 5, 100, false).records.len(), 5);
        assert_eq!(log.append_marker(0, 0, 9, 0, true), Some(5));
        assert_eq!(log.last_stable_offset(6), 6);
        // The marker is read over but never handed out.
        let read = log.read_for_consumer(0, 6, 100, true);
        assert_eq!(offsets(&read), vec![0, 1, 2, 3, 4]);
        assert_eq!(read.next_offset, 6);
    }

    #[test]
    fn aborted_transactions_are_filtered_for_read_committed_only() {
        let mut log = PartitionLog::default();
        log.append_leader(0, 0, &recs(2), txn(9, 0, 0)); // 0, 1
        log.append_leader(0, 0, &recs(1), txn(4, 0, 0)); // 2: another producer, committed
        log.append_marker(0, 0, 9, 0, false); // 3: abort
        log.append_marker(0, 0, 4, 0, true); // 4: commit
        assert_eq!(log.aborted_by(3), vec![(0, 0), (1, 1)]);
        assert!(log.aborted_by(4).is_empty());
        assert_eq!(offsets(&log.read_for_consumer(0, 5, 100, true)), vec![2]);
        assert_eq!(
            offsets(&log.read_for_consumer(0, 5, 100, false)),
            vec![0, 1, 2]
        );
        // The index survives truncation and rebuild, as a follower's would.
        log.truncate_to(4);
        assert_eq!(log.last_stable_offset(4), 2);
        assert_eq!(
            offsets(&log.read_for_consumer(0, 2, 100, true)),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn a_newer_epoch_fences_the_older_producer() {
        let mut log = PartitionLog::default();
        log.append_leader(0, 0, &recs(2), txn(9, 0, 0));
        log.append_marker(0, 0, 9, 1, false);
        // The new instance (epoch 1) numbers from zero; the zombie (epoch 0) is refused.
        assert!(matches!(
            log.append_leader(0, 0, &recs(1), txn(9, 1, 0)),
            LeaderAppend::Appended { .. }
        ));
        assert_eq!(
            log.append_leader(0, 0, &recs(1), txn(9, 0, 2)),
            LeaderAppend::Fenced
        );
        assert_eq!(log.append_marker(0, 0, 9, 0, true), None);
    }

    #[test]
    fn a_late_marker_cannot_end_the_next_transaction() {
        let mut log = PartitionLog::default();
        log.append_leader(0, 0, &recs(2), txn(9, 0, 0)); // 0, 1
        assert_eq!(log.append_marker(0, 0, 9, 0, true), Some(2));
        // The next transaction runs under the epoch the commit moved the producer to.
        log.append_leader(0, 0, &recs(2), txn(9, 1, 0)); // 3, 4
                                                         // A duplicate of the first marker, delivered late, is stale.
        assert_eq!(log.append_marker(0, 0, 9, 0, false), None);
        assert_eq!(log.last_stable_offset(5), 3);
        assert_eq!(log.append_marker(0, 0, 9, 1, true), Some(5));
        assert_eq!(
            offsets(&log.read_for_consumer(0, 6, 100, true)),
            vec![0, 1, 3, 4]
        );
    }

    #[test]
    fn idempotent_appends_drop_duplicates_and_refuse_gaps() {
        let mut log = PartitionLog::default();
        assert_eq!(
            log.append_leader(0, 0, &recs(3), idem(7, 0)),
            LeaderAppend::Appended {
                base_offset: 0,
                count: 3,
                skipped: 0
            }
        );
        assert_eq!(
            log.append_leader(0, 0, &recs(3), idem(7, 0)),
            LeaderAppend::Duplicate {
                end: 3,
                base_offset: Some(0)
            }
        );
        assert_eq!(
            log.append_leader(0, 0, &recs(2), idem(7, 5)),
            LeaderAppend::OutOfOrder
        );
        // Overlapping retry: two old records, one new.
        assert_eq!(
            log.append_leader(0, 0, &recs(3), idem(7, 1)),
            LeaderAppend::Appended {
                base_offset: 3,
                count: 1,
                skipped: 2
            }
        );
        // Without a producer id, a retry lands twice.
        log.append_leader(0, 0, &recs(2), None);
        log.append_leader(0, 0, &recs(2), None);
        assert_eq!(log.leo(), 8);
    }

    #[test]
    fn a_retry_learns_where_its_batch_went_while_the_log_remembers_it() {
        let mut log = PartitionLog::default();
        // Producer 7's batches, each after a record of producer 8: runs at 1, 3, 5, 7, 9, 11.
        for i in 0..6 {
            log.append_leader(0, 0, &recs(1), idem(8, i));
            log.append_leader(0, 0, &recs(1), idem(7, i));
        }
        let dup = |log: &mut PartitionLog, seq, n| match log.append_leader(
            0,
            0,
            &recs(n),
            idem(7, seq),
        ) {
            LeaderAppend::Duplicate { base_offset, .. } => base_offset,
            other => panic!("not a duplicate: {other:?}"),
        };
        assert_eq!(dup(&mut log, 5, 1), Some(11));
        assert_eq!(dup(&mut log, 1, 1), Some(3));
        // Records other than those the run holds, under the same numbers, get no offset.
        let mut other = recs(1);
        other[0].meta.change_id = 99;
        assert!(matches!(
            log.append_leader(0, 0, &other, idem(7, 5)),
            LeaderAppend::Duplicate {
                base_offset: None,
                ..
            }
        ));
        // Only the last five runs are remembered; an older retry is still a duplicate.
        assert_eq!(dup(&mut log, 0, 1), None);
        // Two batches appended back to back form one run, and either is found in it.
        log.append_leader(0, 0, &recs(2), idem(7, 6)); // 12, 13
        log.append_leader(0, 0, &recs(3), idem(7, 8)); // 14, 15, 16
        assert_eq!(dup(&mut log, 8, 3), Some(14));
        assert_eq!(dup(&mut log, 6, 2), Some(12));
        // Seqs 7 and 8 are the second record of one batch and the first of the next.
        let mut straddling = recs(2);
        straddling.reverse();
        assert!(matches!(
            log.append_leader(0, 0, &straddling, idem(7, 7)),
            LeaderAppend::Duplicate {
                base_offset: Some(13),
                ..
            }
        ));
        // A batch spanning two runs was never appended as one: no single offset.
        assert_eq!(dup(&mut log, 4, 3), None);
        // A truncation rebuilds the runs from the records it keeps.
        log.truncate_to(14);
        assert_eq!(dup(&mut log, 6, 2), Some(12));
        // Retention deletes the batch: it is remembered, but no longer in the log.
        assert!(log.delete_expired(1, 12).is_some());
        assert_eq!(dup(&mut log, 5, 1), None);
        assert_eq!(dup(&mut log, 6, 2), Some(12));
        // A new producer epoch numbers afresh and forgets the old epoch's runs.
        log.append_leader(0, 0, &recs(1), idem_epoch(7, 1, 0)); // 14
        assert!(matches!(
            log.append_leader(0, 0, &recs(1), idem_epoch(7, 1, 0)),
            LeaderAppend::Duplicate {
                base_offset: Some(14),
                ..
            }
        ));
    }

    #[test]
    fn epochs_find_the_divergence_point_and_truncation_forgets() {
        let mut leader = PartitionLog::default();
        leader.append_leader(0, 0, &recs(5), None);
        leader.append_leader(0, 2, &recs(3), None);
        // A follower whose log ends in epoch 0 or 1 must cut back to offset 5.
        assert_eq!(leader.end_offset_for_epoch(0), 5);
        assert_eq!(leader.end_offset_for_epoch(1), 5);
        assert_eq!(leader.end_offset_for_epoch(2), 8);
        // What a follower learns besides: the epoch the leader holds that ends there. One whose
        // log ends in epoch 1 holds records the leader lacks, even below offset 5.
        assert_eq!(leader.epoch_end(0), Some((0, 5)));
        assert_eq!(leader.epoch_end(1), Some((0, 5)));
        assert_eq!(leader.epoch_end(2), Some((2, 8)));
        let mut f1 = PartitionLog::default();
        f1.append_leader(0, 0, &recs(3), None);
        f1.append_leader(0, 1, &recs(1), None);
        f1.begin_epoch(3);
        // It cuts back to where its own epoch-0 records end (3), not to the leader's 5, and
        // forgets the epochs from there, the empty one it began at its log end included.
        let to = 5.min(f1.end_offset_for_epoch(0));
        assert_eq!(to, 3);
        f1.truncate_to(to);
        f1.forget_epochs_from(to);
        assert_eq!((f1.leo(), f1.last_epoch()), (3, Some(0)));
        assert_eq!(
            PartitionLog::default().epoch_end(0),
            None,
            "no epoch at all"
        );
        // The epoch a reader sends with its next fetch: that of the record before it.
        assert_eq!(leader.epoch_at(4), Some(0));
        assert_eq!(leader.epoch_at(5), Some(2));
        assert_eq!(leader.epoch_at(8), None, "past the end");
        assert_eq!(leader.delete_expired(1, 3), Some((0, 3)));
        assert_eq!(leader.epoch_at(2), None, "deleted");
        assert_eq!(leader.epoch_at(3), Some(0));
        let mut f = PartitionLog::default();
        f.append_leader(0, 0, &recs(7), idem(1, 0));
        f.truncate_to(5);
        assert_eq!(f.leo(), 5);
        assert_eq!(f.last_epoch(), Some(0));
        assert_eq!(
            f.append_leader(0, 0, &recs(1), idem(1, 5)),
            LeaderAppend::Appended {
                base_offset: 5,
                count: 1,
                skipped: 0
            }
        );
    }
}
