//! One replica's log of one partition: records with offsets and leader epochs, the epoch cache
//! used to find where a follower's log diverges from a new leader's, and the idempotent
//! producers' last sequence numbers.

use nrtsim_pipeline::Record;
use std::collections::BTreeMap;

/// A record as a replica stores it.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// The leader epoch it was appended in.
    pub epoch: u32,
    /// The record (its payload is shared between replicas).
    pub record: Record,
    /// The idempotent producer that wrote it, with its sequence number.
    pub producer: Option<(u64, u64)>,
}

/// What a leader append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderAppend {
    /// Appended from this base offset (`count` records; some leading ones may have been
    /// duplicates that were dropped).
    Appended {
        /// Offset of the first record appended.
        base_offset: u64,
        /// Records appended.
        count: u64,
    },
    /// Every record was already in the log; they are committed once the high watermark
    /// reaches `end` (the producer's newest record, so at or past the duplicates).
    Duplicate {
        /// The offset just past the producer's newest record in the log.
        end: u64,
    },
    /// The sequence numbers skip ahead of what the broker has.
    OutOfOrder,
}

/// A replica's log.
#[derive(Clone, Debug, Default)]
pub struct PartitionLog {
    records: Vec<StoredRecord>,
    /// (epoch, start offset), increasing.
    epochs: Vec<(u32, u64)>,
    /// Per producer id: the last sequence number appended, and that record's offset.
    producers: BTreeMap<u64, (u64, u64)>,
    /// The high watermark as last checkpointed to disk.
    pub hw_checkpoint: u64,
    /// The log end at the last flush: what survives a power loss.
    pub flushed: u64,
}

impl PartitionLog {
    /// Log end offset: the offset the next record gets.
    pub fn leo(&self) -> u64 {
        self.records.len() as u64
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

    /// The end offset of the largest epoch at or below `epoch`: where a follower whose log
    /// ends in `epoch` must truncate to. Returns the log end when `epoch` is the newest.
    pub fn end_offset_for_epoch(&self, epoch: u32) -> u64 {
        match self.epochs.iter().position(|(e, _)| *e > epoch) {
            Some(0) => 0,
            Some(i) => self.epochs[i].1,
            None => self.leo(),
        }
    }

    /// Appends as leader in `epoch`. With a producer id, records whose sequence numbers the
    /// log already holds are dropped, and a gap in sequence numbers is refused.
    pub fn append_leader(
        &mut self,
        epoch: u32,
        records: &[Record],
        producer: Option<(u64, u64)>,
    ) -> LeaderAppend {
        self.begin_epoch(epoch);
        let mut skip = 0u64;
        if let Some((pid, base_seq)) = producer {
            let next = self.producers.get(&pid).map_or(0, |(s, _)| s + 1);
            if base_seq > next {
                return LeaderAppend::OutOfOrder;
            }
            skip = next - base_seq;
            if skip >= records.len() as u64 {
                let end = self.producers.get(&pid).map_or(0, |(_, offset)| offset + 1);
                return LeaderAppend::Duplicate { end };
            }
        }
        let base_offset = self.leo();
        for (i, r) in records.iter().enumerate().skip(skip as usize) {
            let producer = producer.map(|(pid, base)| (pid, base + i as u64));
            self.push(StoredRecord {
                epoch,
                record: r.clone(),
                producer,
            });
        }
        LeaderAppend::Appended {
            base_offset,
            count: records.len() as u64 - skip,
        }
    }

    /// Appends records fetched from the leader.
    pub fn append_follower(&mut self, records: &[StoredRecord]) {
        for r in records {
            self.begin_epoch(r.epoch);
            self.push(r.clone());
        }
    }

    fn push(&mut self, r: StoredRecord) {
        if let Some((pid, seq)) = r.producer {
            self.producers.insert(pid, (seq, self.leo()));
        }
        self.records.push(r);
    }

    /// Drops every record at or after `offset`.
    pub fn truncate_to(&mut self, offset: u64) {
        if offset >= self.leo() {
            return;
        }
        self.records.truncate(offset as usize);
        self.epochs.retain(|(_, start)| *start < offset);
        self.producers.clear();
        for (offset, r) in self.records.iter().enumerate() {
            if let Some((pid, seq)) = r.producer {
                self.producers.insert(pid, (seq, offset as u64));
            }
        }
        self.hw_checkpoint = self.hw_checkpoint.min(offset);
        self.flushed = self.flushed.min(offset);
    }

    /// Flushes the log to disk.
    pub fn flush(&mut self) {
        self.flushed = self.leo();
    }

    /// Loses what was not flushed, as a power loss does.
    pub fn lose_unflushed(&mut self) {
        self.truncate_to(self.flushed);
    }

    /// Up to `max` records from `offset`, stopping before `end`.
    pub fn read(&self, offset: u64, end: u64, max: usize) -> &[StoredRecord] {
        let end = end.min(self.leo());
        if offset >= end {
            return &[];
        }
        let stop = end.min(offset + max as u64);
        &self.records[offset as usize..stop as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nrtsim_pipeline::RecordMeta;

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
    fn idempotent_appends_drop_duplicates_and_refuse_gaps() {
        let mut log = PartitionLog::default();
        assert_eq!(
            log.append_leader(0, &recs(3), Some((7, 0))),
            LeaderAppend::Appended {
                base_offset: 0,
                count: 3
            }
        );
        assert_eq!(
            log.append_leader(0, &recs(3), Some((7, 0))),
            LeaderAppend::Duplicate { end: 3 }
        );
        assert_eq!(
            log.append_leader(0, &recs(2), Some((7, 5))),
            LeaderAppend::OutOfOrder
        );
        // Overlapping retry: two old records, one new.
        assert_eq!(
            log.append_leader(0, &recs(3), Some((7, 1))),
            LeaderAppend::Appended {
                base_offset: 3,
                count: 1
            }
        );
        // Without a producer id, a retry lands twice.
        log.append_leader(0, &recs(2), None);
        log.append_leader(0, &recs(2), None);
        assert_eq!(log.leo(), 8);
    }

    #[test]
    fn epochs_find_the_divergence_point_and_truncation_forgets() {
        let mut leader = PartitionLog::default();
        leader.append_leader(0, &recs(5), None);
        leader.append_leader(2, &recs(3), None);
        // A follower whose log ends in epoch 0 or 1 must cut back to offset 5.
        assert_eq!(leader.end_offset_for_epoch(0), 5);
        assert_eq!(leader.end_offset_for_epoch(1), 5);
        assert_eq!(leader.end_offset_for_epoch(2), 8);
        let mut f = PartitionLog::default();
        f.append_leader(0, &recs(7), Some((1, 0)));
        f.truncate_to(5);
        assert_eq!(f.leo(), 5);
        assert_eq!(f.last_epoch(), Some(0));
        assert_eq!(
            f.append_leader(0, &recs(1), Some((1, 5))),
            LeaderAppend::Appended {
                base_offset: 5,
                count: 1
            }
        );
    }
}
