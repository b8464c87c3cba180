//! The CDC connector's incremental snapshot, the lock-free algorithm Flink CDC uses to read a
//! table that is being written to (after Netflix's DBLog).
//!
//! Each table is read in chunks of consecutive primary keys. For every chunk the connector
//! notes the log position (the *low watermark*), reads the chunk's rows, notes the position
//! again (the *high watermark*), and folds the chunk's own changes between the two marks into
//! the rows it read, so that every row stands exactly at the high watermark whatever moment of
//! the read the database served it from. Once every chunk is out, the log is read from the
//! lowest high watermark on, and a change is emitted only if it is newer than the high
//! watermark of the chunk its key falls in. Every change is then in exactly one place: folded
//! into a snapshot row, or streamed.
//!
//! The progress is part of the connector's checkpoint. A chunk is saved in the checkpoint
//! before it is written, so that a restart writes the same rows again (the brokers recognise
//! them under exactly-once delivery) instead of a new read with other contents.

use crate::config::SnapshotHandover;
use crate::env::SourceLog;
use nrtsim_workloads::{Change, Table};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The tables a snapshot reads, in order.
pub const TABLES: [Table; 3] = Table::ALL;

/// A chunk's place: its key range and the position its rows stand at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMark {
    /// The table.
    pub table: Table,
    /// The first id of the range.
    pub from_id: u64,
    /// The end of the range (exclusive); `None` for the table's last chunk.
    pub to_id: Option<u64>,
    /// The high watermark: every row of the chunk reflects the log up to here.
    pub high_lsn: u64,
}

impl ChunkMark {
    /// Whether `change` falls in this chunk's key range.
    pub fn holds(&self, change: &Change) -> bool {
        change.key.table == self.table
            && change.key.id >= self.from_id
            && self.to_id.is_none_or(|end| change.key.id < end)
    }
}

/// A chunk that has been read, with its rows: what the connector writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Where the chunk is.
    pub mark: ChunkMark,
    /// The log position when the read began.
    pub low_lsn: u64,
    /// Its rows in key order, each as the change that last wrote it and its commit time.
    pub rows: Vec<(Change, u64)>,
}

/// How far an incremental snapshot has got; kept in the CDC connector's checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// Index into [`TABLES`] of the table being read.
    pub table: usize,
    /// The first id of the next chunk.
    pub next_id: u64,
    /// The chunks written so far.
    pub chunks: Vec<ChunkMark>,
    /// A chunk read and not yet known to be written: written again after a restart.
    pub pending: Option<Chunk>,
    /// Once every chunk is written: the LSN the log is read from.
    pub log_from: Option<u64>,
    /// Whether the log phase skips each key's changes up to its chunk's high watermark.
    pub skip_covered: bool,
    /// A transaction that began before `log_from` and ends after it: the connector sees only
    /// part of it, so it emits no END for it.
    pub split_txn: Option<u64>,
    /// The highest high watermark: past it the log phase skips nothing.
    #[serde(default)]
    pub max_high_lsn: u64,
}

impl SnapshotProgress {
    /// The table the next chunk comes from, if any is left.
    pub fn next_table(&self) -> Option<Table> {
        TABLES.get(self.table).copied()
    }

    /// Marks `chunk` as written and moves on to the next range.
    pub fn advance(&mut self, mark: ChunkMark) {
        self.chunks.push(mark);
        match mark.to_id {
            Some(end) => self.next_id = end,
            None => {
                self.table += 1;
                self.next_id = 0;
            }
        }
    }

    /// Every chunk is written: fixes where the log phase begins. With watermarks, at the
    /// lowest high watermark (a change after it may be newer than its own chunk's mark);
    /// without, where the source stands now.
    pub fn finish<S: SourceLog>(&mut self, source: &S, handover: SnapshotHandover) {
        let from = match handover {
            SnapshotHandover::Watermarks => {
                self.chunks.iter().map(|c| c.high_lsn).min().unwrap_or(0) + 1
            }
            SnapshotHandover::None => source.head_lsn() + 1,
        };
        self.skip_covered = handover == SnapshotHandover::Watermarks;
        self.max_high_lsn = self.chunks.iter().map(|c| c.high_lsn).max().unwrap_or(0);
        // The transaction holding the change just before `from`, if it goes on past it.
        self.split_txn = source
            .read_from(from.saturating_sub(1).max(1), 1)
            .first()
            .filter(|t| t.changes.first().is_some_and(|c| c.lsn < from))
            .map(|t| t.txid)
            .filter(|&txid| source.last_lsn_of(txid).is_some_and(|last| last >= from));
        self.log_from = Some(from);
    }

    /// Whether the log phase must skip `change`: its chunk's rows already reflect it.
    pub fn covers(&self, change: &Change) -> bool {
        self.skip_covered
            && change.lsn <= self.max_high_lsn
            && self
                .chunks
                .iter()
                .rev()
                .find(|m| m.holds(change))
                .is_some_and(|m| change.lsn <= m.high_lsn)
    }
}

/// Reads the rows of `table` from `from_id` on, at most `max` of them, as the source holds
/// them now (the `SELECT` at the low watermark `low_lsn`). The chunk's range ends after its
/// last row when it is full, and is open-ended when it is the table's last.
pub fn select<S: SourceLog>(
    source: &S,
    table: Table,
    from_id: u64,
    max: usize,
    low_lsn: u64,
) -> Chunk {
    let rows = source.scan(table, from_id, max);
    let to_id = (rows.len() >= max)
        .then(|| rows.last().map(|(c, _)| c.key.id + 1))
        .flatten();
    Chunk {
        mark: ChunkMark {
            table,
            from_id,
            to_id,
            high_lsn: low_lsn,
        },
        low_lsn,
        rows,
    }
}

/// Brings a chunk read at its low watermark up to `high_lsn`: the chunk's own changes
/// between the two marks replace (or, for a delete, remove) its rows, and rows inserted into
/// its range meanwhile join it.
pub fn fold_to<S: SourceLog>(chunk: &mut Chunk, source: &S, high_lsn: u64) {
    let mut rows: BTreeMap<u64, (Change, u64)> = std::mem::take(&mut chunk.rows)
        .into_iter()
        .map(|(c, t)| (c.key.id, (c, t)))
        .collect();
    let mut from = chunk.low_lsn + 1;
    'read: while from <= high_lsn {
        let txns = source.read_from(from, 4096);
        if txns.is_empty() {
            break;
        }
        for t in txns {
            for c in t.changes {
                if c.lsn > high_lsn {
                    break 'read;
                }
                from = c.lsn + 1;
                if !chunk.mark.holds(&c) {
                    continue;
                }
                if c.after.is_some() {
                    rows.insert(c.key.id, (c, t.commit_ms));
                } else {
                    rows.remove(&c.key.id);
                }
            }
        }
    }
    chunk.rows = rows.into_values().collect();
    chunk.mark.high_lsn = high_lsn.max(chunk.low_lsn);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nrtsim_workloads::{Key, Op, Row, TableSchema, Transaction};
    use std::sync::Arc;

    /// A source of one-change transactions on `accounts`, in LSN order.
    struct Fake {
        txns: Vec<Transaction>,
    }

    fn change(lsn: u64, id: u64, op: Op) -> Change {
        let row = Row::Account(nrtsim_workloads::Account {
            account_id: id,
            customer_id: id,
            balance_cents: lsn as i64,
            updated_ms: lsn * 10,
        });
        Change {
            lsn,
            txid: lsn,
            key: Key {
                table: Table::Accounts,
                id,
            },
            op,
            before: None,
            after: (op != Op::Delete).then_some(row),
            poison: false,
            shard: 0,
        }
    }

    impl Fake {
        fn new(changes: &[(u64, Op)]) -> Self {
            let txns = changes
                .iter()
                .enumerate()
                .map(|(i, &(id, op))| {
                    let lsn = i as u64 + 1;
                    Transaction {
                        txid: lsn,
                        commit_ms: lsn * 10,
                        changes: vec![change(lsn, id, op)],
                    }
                })
                .collect();
            Fake { txns }
        }

        fn upto(&self, lsn: u64) -> Fake {
            Fake {
                txns: self.txns[..lsn as usize].to_vec(),
            }
        }
    }

    impl SourceLog for Fake {
        fn read_from(&self, from_lsn: u64, max: usize) -> Vec<Transaction> {
            self.txns
                .iter()
                .filter(|t| t.changes[0].lsn >= from_lsn)
                .take(max)
                .cloned()
                .collect()
        }
        fn last_lsn_of(&self, txid: u64) -> Option<u64> {
            self.txns
                .iter()
                .find(|t| t.txid == txid)
                .map(|t| t.changes[0].lsn)
        }
        fn table_schema(&self, table: Table, _: u64) -> Arc<TableSchema> {
            Arc::new(TableSchema::base(table))
        }
        fn head_lsn(&self) -> u64 {
            self.txns.len() as u64
        }
        fn scan(&self, table: Table, from_id: u64, max: usize) -> Vec<(Change, u64)> {
            let mut rows: BTreeMap<u64, (Change, u64)> = BTreeMap::new();
            for t in &self.txns {
                let c = &t.changes[0];
                if c.after.is_some() {
                    rows.insert(c.key.id, (c.clone(), t.commit_ms));
                } else {
                    rows.remove(&c.key.id);
                }
            }
            rows.into_values()
                .filter(|(c, _)| c.key.table == table && c.key.id >= from_id)
                .take(max)
                .collect()
        }
    }

    fn ids(chunk: &Chunk) -> Vec<(u64, u64)> {
        chunk.rows.iter().map(|(c, _)| (c.key.id, c.lsn)).collect()
    }

    #[test]
    fn a_full_chunk_ends_after_its_last_row_and_the_last_one_is_open() {
        let src = Fake::new(&[(1, Op::Create), (2, Op::Create), (3, Op::Create)]);
        let first = select(&src, Table::Accounts, 0, 2, 3);
        assert_eq!(ids(&first), vec![(1, 1), (2, 2)]);
        assert_eq!(first.mark.to_id, Some(3));
        let last = select(&src, Table::Accounts, 3, 2, 3);
        assert_eq!(ids(&last), vec![(3, 3)]);
        assert_eq!(last.mark.to_id, None);
    }

    #[test]
    fn the_fold_brings_a_chunk_to_its_high_watermark_and_ignores_other_ranges() {
        // Rows 1 and 2 exist at LSN 2; then 1 is updated, 5 is created (outside the chunk
        // [0, 3)), 2 is deleted, and 0 is created inside the range.
        let all = Fake::new(&[
            (1, Op::Create),
            (2, Op::Create),
            (1, Op::Update),
            (5, Op::Create),
            (2, Op::Delete),
            (0, Op::Create),
            (1, Op::Update),
        ]);
        let at_low = all.upto(2);
        let mut chunk = select(&at_low, Table::Accounts, 0, 2, 2);
        assert_eq!(chunk.mark.to_id, Some(3));
        fold_to(&mut chunk, &all, 6);
        assert_eq!(ids(&chunk), vec![(0, 6), (1, 3)]);
        assert_eq!(chunk.mark.high_lsn, 6);
    }

    #[test]
    fn the_log_phase_skips_exactly_what_the_chunks_hold() {
        let src = Fake::new(&[(1, Op::Create), (5, Op::Create), (1, Op::Update)]);
        let mut p = SnapshotProgress::default();
        p.advance(ChunkMark {
            table: Table::Accounts,
            from_id: 0,
            to_id: Some(3),
            high_lsn: 3,
        });
        p.advance(ChunkMark {
            table: Table::Accounts,
            from_id: 3,
            to_id: None,
            high_lsn: 1,
        });
        p.finish(&src, SnapshotHandover::Watermarks);
        assert_eq!(p.log_from, Some(2));
        assert!(p.covers(&change(3, 1, Op::Update)));
        assert!(!p.covers(&change(2, 5, Op::Create)));
        assert!(!p.covers(&change(4, 1, Op::Update)));
        // Without watermarks nothing is skipped, and the log starts at the source's head.
        p.finish(&src, SnapshotHandover::None);
        assert_eq!(p.log_from, Some(4));
        assert!(!p.covers(&change(3, 1, Op::Update)));
    }
}
