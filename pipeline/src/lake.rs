//! The lake table: primary-key rows that change only by commits, one commit per checkpoint,
//! each making a new snapshot visible to readers at once. Commits are idempotent by
//! (task, checkpoint id), and a commit can carry the sink's input offsets so that rows and
//! offsets move together.
//!
//! The table also keeps account of its files, which is where a layout's cost shows. Each
//! table's keys hash into buckets (file groups). Copy-on-write rewrites a touched bucket's one
//! file at every commit; merge-on-read adds a delta file per touched bucket and folds deltas
//! into the base file at each compaction. Frequent commits of few rows make many small files.

use crate::canonical::MerchantInfo;
use crate::config::{LakeConfig, LakeLayout};
use crate::record::TopicPartition;
use nrtsim_history::LakeFiles;
use nrtsim_workloads::{Key, Row, Table};
use std::collections::BTreeMap;

/// A row version waiting for the next commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    /// The row's key.
    pub key: Key,
    /// The change that produced this version.
    pub change_id: u64,
    /// The row; `None` deletes it.
    pub row: Option<Row>,
    /// Enrichment, for card transactions.
    pub merchant: Option<MerchantInfo>,
}

/// A row as the lake holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LakeEntry {
    /// The change that wrote this version.
    pub change_id: u64,
    /// The row.
    pub row: Row,
    /// Enrichment.
    pub merchant: Option<MerchantInfo>,
}

/// What a successful commit made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The new snapshot.
    pub snapshot_id: u64,
    /// The table's files after the commit.
    pub files: LakeFiles,
}

/// One bucket's files: a base file (if any rows were ever compacted or rewritten into it) and
/// the delta files written since.
#[derive(Clone, Debug, Default)]
struct Bucket {
    /// Live rows of the bucket.
    rows: u64,
    /// Rows in the base file; `None` before the first rewrite or compaction.
    base: Option<u64>,
    /// Rows in each delta file, oldest first.
    deltas: Vec<u64>,
}

/// An upsert lake table with snapshot commits.
#[derive(Debug, Default)]
pub struct LakeTable {
    rows: BTreeMap<Key, LakeEntry>,
    next_snapshot: u64,
    /// Per task: the last committed checkpoint id and the input offsets committed with it.
    committed: BTreeMap<String, (u64, BTreeMap<TopicPartition, u64>)>,
    config: LakeConfig,
    buckets: BTreeMap<(Table, u32), Bucket>,
    last_compaction_ms: u64,
}

impl LakeTable {
    /// An empty table with the default layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table laid out as `config` says.
    pub fn with_config(config: LakeConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    fn bucket_of(&self, key: &Key) -> (Table, u32) {
        let n = u64::from(self.config.buckets.max(1));
        (
            key.table,
            (crate::record::partition_for(key.id, u32::MAX) as u64 % n) as u32,
        )
    }

    /// Commits `writes` as one snapshot for `task`'s checkpoint `checkpoint_id`, with the
    /// offsets they cover. A checkpoint already committed is not applied again: `None`.
    pub fn commit(
        &mut self,
        task: &str,
        checkpoint_id: u64,
        writes: &[PendingWrite],
        offsets: BTreeMap<TopicPartition, u64>,
        now_ms: u64,
    ) -> Option<CommitInfo> {
        if let Some((last, _)) = self.committed.get(task) {
            if *last >= checkpoint_id {
                return None;
            }
        }
        let mut touched: BTreeMap<(Table, u32), u64> = BTreeMap::new();
        for w in writes {
            let bucket = self.bucket_of(&w.key);
            *touched.entry(bucket).or_insert(0) += 1;
            let live = &mut self.buckets.entry(bucket).or_default().rows;
            match &w.row {
                Some(row) => {
                    let entry = LakeEntry {
                        change_id: w.change_id,
                        row: row.clone(),
                        merchant: w.merchant.clone(),
                    };
                    if self.rows.insert(w.key, entry).is_none() {
                        *live += 1;
                    }
                }
                None => {
                    if self.rows.remove(&w.key).is_some() {
                        *live -= 1;
                    }
                }
            }
        }
        let files_written = self.write_files(&touched, now_ms);
        self.committed
            .insert(task.to_string(), (checkpoint_id, offsets));
        self.next_snapshot += 1;
        Some(CommitInfo {
            snapshot_id: self.next_snapshot,
            files: self.files(&files_written),
        })
    }

    /// Writes the files a commit touching `touched` (rows per bucket) makes; returns the rows
    /// of each file written.
    fn write_files(&mut self, touched: &BTreeMap<(Table, u32), u64>, now_ms: u64) -> Vec<u64> {
        let mut written = Vec::new();
        match self.config.layout {
            LakeLayout::CopyOnWrite => {
                for bucket in touched.keys() {
                    let b = self.buckets.entry(*bucket).or_default();
                    b.base = Some(b.rows);
                    written.push(b.rows);
                }
            }
            LakeLayout::MergeOnRead => {
                for (bucket, n) in touched {
                    self.buckets.entry(*bucket).or_default().deltas.push(*n);
                    written.push(*n);
                }
                let due = now_ms.saturating_sub(self.last_compaction_ms)
                    >= self.config.compaction_interval.ms();
                if due {
                    self.last_compaction_ms = now_ms;
                    for b in self.buckets.values_mut().filter(|b| !b.deltas.is_empty()) {
                        b.deltas.clear();
                        b.base = Some(b.rows);
                        written.push(b.rows);
                    }
                }
            }
        }
        written
    }

    /// The table's files now, with the last commit's `written` files (rows each).
    fn files(&self, written: &[u64]) -> LakeFiles {
        let small = self.config.small_file_rows;
        let files_written = written.len() as u32;
        let small_files_written = written.iter().filter(|rows| **rows < small).count() as u32;
        let sizes = self
            .buckets
            .values()
            .flat_map(|b| b.base.iter().chain(b.deltas.iter()));
        let (live, small_files) = sizes.fold((0u32, 0u32), |(n, s), rows| {
            (n + 1, s + u32::from(*rows < small))
        });
        LakeFiles {
            files_written,
            live_files: live,
            small_files,
            small_files_written,
        }
    }

    /// The last checkpoint `task` committed, with its offsets.
    pub fn last_commit(&self, task: &str) -> Option<&(u64, BTreeMap<TopicPartition, u64>)> {
        self.committed.get(task)
    }

    /// The row stored under `key` in the latest snapshot.
    pub fn get(&self, key: &Key) -> Option<&LakeEntry> {
        self.rows.get(key)
    }

    /// Rows in the latest snapshot.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the latest snapshot is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Snapshots committed so far.
    pub fn snapshots(&self) -> u64 {
        self.next_snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nrtsim_workloads::Account;

    fn write(id: u64, change_id: u64, balance: i64) -> PendingWrite {
        PendingWrite {
            key: Key {
                table: Table::Accounts,
                id,
            },
            change_id,
            row: Some(Row::Account(Account {
                account_id: id,
                customer_id: id,
                balance_cents: balance,
                updated_ms: 0,
            })),
            merchant: None,
        }
    }

    #[test]
    fn commits_are_idempotent_by_checkpoint() {
        let mut t = LakeTable::new();
        assert!(t
            .commit("lake-0", 1, &[write(1, 10, 5)], BTreeMap::new(), 0)
            .is_some());
        assert!(t
            .commit("lake-0", 1, &[write(1, 11, 6)], BTreeMap::new(), 0)
            .is_none());
        assert_eq!(
            t.get(&Key {
                table: Table::Accounts,
                id: 1
            })
            .unwrap()
            .change_id,
            10
        );
        assert!(t
            .commit("lake-0", 2, &[write(1, 11, 6)], BTreeMap::new(), 0)
            .is_some());
        assert_eq!(
            t.get(&Key {
                table: Table::Accounts,
                id: 1
            })
            .unwrap()
            .change_id,
            11
        );
        assert_eq!(t.snapshots(), 2);
        // Another task's checkpoint ids are its own.
        assert!(t.commit("lake-1", 1, &[], BTreeMap::new(), 0).is_some());
    }

    fn writes(ids: std::ops::Range<u64>) -> Vec<PendingWrite> {
        ids.map(|id| write(id, id, 1)).collect()
    }

    #[test]
    fn merge_on_read_piles_up_small_deltas_until_compaction() {
        let cfg = LakeConfig {
            buckets: 2,
            small_file_rows: 100,
            ..LakeConfig::default()
        };
        let mut t = LakeTable::with_config(cfg);
        // Frequent small commits: one delta file per touched bucket each time.
        let mut last = None;
        for c in 0..5u64 {
            let info = t.commit(
                "lake-0",
                c + 1,
                &writes(c * 10..c * 10 + 10),
                BTreeMap::new(),
                c,
            );
            last = info;
        }
        let files = last.unwrap().files;
        assert_eq!(files.live_files, 10, "5 commits x 2 buckets of deltas");
        assert_eq!(files.small_files, 10);
        // The compaction interval (5 min) has passed: deltas fold into one base per bucket.
        let info = t
            .commit("lake-0", 6, &writes(50..60), BTreeMap::new(), 300_000)
            .unwrap();
        assert_eq!(info.files.live_files, 2);
        assert_eq!(
            info.files.files_written, 4,
            "2 new deltas, then 2 compacted bases"
        );
        assert_eq!(
            info.files.small_files, 2,
            "30 rows per bucket is still small"
        );
    }

    #[test]
    fn copy_on_write_rewrites_the_touched_buckets() {
        let cfg = LakeConfig {
            layout: LakeLayout::CopyOnWrite,
            buckets: 2,
            small_file_rows: 15,
            ..LakeConfig::default()
        };
        let mut t = LakeTable::with_config(cfg);
        let a = t
            .commit("lake-0", 1, &writes(0..20), BTreeMap::new(), 0)
            .unwrap();
        assert_eq!((a.files.files_written, a.files.live_files), (2, 2));
        let b = t
            .commit("lake-0", 2, &writes(20..40), BTreeMap::new(), 1)
            .unwrap();
        assert_eq!(
            (b.files.files_written, b.files.live_files),
            (2, 2),
            "rewritten, not added"
        );
        assert_eq!(b.files.small_files, 0, "about 20 rows a bucket");
    }
}
