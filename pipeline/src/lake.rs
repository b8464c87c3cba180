//! The lake table: primary-key rows that change only by commits, one commit per checkpoint,
//! each making a new snapshot visible to readers at once. A task's commits are taken in
//! increasing checkpoint id: one at or below the task's last commit is a replay and changes
//! nothing. A commit records the sink's input offsets beside its rows, as a table format's
//! commit metadata does; the sinks restore from their checkpoints, not from these.
//!
//! In `upsert` mode the table keeps one row per key, and versions of a key that a later write
//! in the same commit replaces are *folded*: no snapshot ever shows them (end-state sync). In
//! `changelog` mode no version is folded: each becomes visible in its commit's snapshot, so
//! every state a key passed through reaches readers (the table counts the versions and keeps
//! each key's latest row).
//!
//! The table also keeps account of its files, which is where a layout's cost shows. Each
//! table's keys hash into buckets (file groups). Copy-on-write rewrites a touched bucket's one
//! file at every commit; merge-on-read adds a delta file per touched bucket and folds deltas
//! into the base file at each compaction. Frequent commits of few rows make many small files.

use crate::canonical::MerchantInfo;
use crate::config::{LakeConfig, LakeLayout, LakeMode};
use crate::record::TopicPartition;
use nrtsim_history::LakeFiles;
use nrtsim_workloads::{Key, Row, Table};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A row version waiting for the next commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The new snapshot.
    pub snapshot_id: u64,
    /// The table's files after the commit.
    pub files: LakeFiles,
    /// Per write, in order: whether a later write of the same key in this commit replaced it
    /// before any snapshot showed it (always `false` in `changelog` mode).
    pub folded: Vec<bool>,
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
    /// Row versions kept: one per key in `upsert` mode, one per change in `changelog` mode.
    versions: u64,
    /// Pre-commits waiting for their commit: (task, checkpoint id) → when they were made.
    inflight: BTreeMap<(String, u64), u64>,
    /// Pre-commits rolled back after the timeout, with when they were made: never committed
    /// afterwards.
    rolled_back: BTreeMap<(String, u64), u64>,
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

    /// Registers `task`'s pre-commit for checkpoint `checkpoint_id` (its files are written);
    /// the commit must follow within the table's pre-commit timeout. A restarted task that
    /// pre-commits the same checkpoint again writes its files anew, and its timeout runs
    /// from then.
    pub fn pre_commit(&mut self, task: &str, checkpoint_id: u64, now_ms: u64) {
        self.inflight
            .insert((task.to_string(), checkpoint_id), now_ms);
    }

    /// Commits `writes` as one snapshot for `task`'s checkpoint `checkpoint_id`, with the
    /// offsets they cover. A checkpoint already committed is not applied again, and a
    /// pre-commit older than the pre-commit timeout has been rolled back: both `None`.
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
        let id = (task.to_string(), checkpoint_id);
        if self.rolled_back.contains_key(&id) {
            return None;
        }
        if let Some(at) = self.inflight.remove(&id) {
            if now_ms.saturating_sub(at) > self.config.pre_commit_timeout.ms() {
                self.rolled_back.insert(id, at);
                return None;
            }
        }
        let folded = self.folds(writes);
        let changelog = self.config.mode == LakeMode::Changelog;
        let mut touched: BTreeMap<(Table, u32), u64> = BTreeMap::new();
        for (w, &folded) in writes.iter().zip(&folded) {
            let bucket = self.bucket_of(&w.key);
            if !folded {
                *touched.entry(bucket).or_insert(0) += 1;
            }
            let live = &mut self.buckets.entry(bucket).or_default().rows;
            let existed = match &w.row {
                Some(row) => {
                    let entry = LakeEntry {
                        change_id: w.change_id,
                        row: row.clone(),
                        merchant: w.merchant.clone(),
                    };
                    self.rows.insert(w.key, entry).is_some()
                }
                None => self.rows.remove(&w.key).is_some(),
            };
            if changelog {
                // Every version is a row of its own, deletes included.
                *live += 1;
                self.versions += 1;
            } else if w.row.is_some() && !existed {
                *live += 1;
                self.versions += 1;
            } else if w.row.is_none() && existed {
                *live -= 1;
                self.versions -= 1;
            }
        }
        let files_written = self.write_files(&touched, now_ms);
        self.committed
            .insert(task.to_string(), (checkpoint_id, offsets));
        self.next_snapshot += 1;
        Some(CommitInfo {
            snapshot_id: self.next_snapshot,
            files: self.files(&files_written),
            folded,
        })
    }

    /// When `task`'s pre-commit of `checkpoint_id` was made, if the table has rolled it back.
    pub fn rolled_back_at(&self, task: &str, checkpoint_id: u64) -> Option<u64> {
        self.rolled_back
            .get(&(task.to_string(), checkpoint_id))
            .copied()
    }

    /// Which of `writes` a later write of the same key replaces within one commit: in
    /// `upsert` mode all but each key's last; in `changelog` mode none.
    pub fn folds(&self, writes: &[PendingWrite]) -> Vec<bool> {
        let mut folded = vec![false; writes.len()];
        if self.config.mode == LakeMode::Upsert {
            let mut later: BTreeSet<Key> = BTreeSet::new();
            for (i, w) in writes.iter().enumerate().rev() {
                folded[i] = !later.insert(w.key);
            }
        }
        folded
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

    /// Row versions the table keeps: its rows in `upsert` mode, every change it was given in
    /// `changelog` mode.
    pub fn versions(&self) -> u64 {
        self.versions
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
    fn upsert_folds_versions_replaced_within_a_commit_and_changelog_keeps_them() {
        let batch = [
            write(1, 10, 5),
            write(2, 11, 1),
            write(1, 12, 7),
            write(1, 13, 9),
        ];
        // One bucket, and a file of fewer than 3 rows counts as small.
        let cfg = LakeConfig {
            buckets: 1,
            small_file_rows: 3,
            ..LakeConfig::default()
        };
        let mut upsert = LakeTable::with_config(cfg.clone());
        let info = upsert
            .commit("lake-0", 1, &batch, BTreeMap::new(), 0)
            .unwrap();
        assert_eq!(info.folded, vec![true, false, true, false]);
        assert_eq!(upsert.versions(), 2, "one row per key");
        assert_eq!(info.files.small_files_written, 1, "a delta of 2 rows");
        let mut changelog = LakeTable::with_config(LakeConfig {
            mode: LakeMode::Changelog,
            ..cfg
        });
        let info = changelog
            .commit("lake-0", 1, &batch, BTreeMap::new(), 0)
            .unwrap();
        assert_eq!(info.folded, vec![false; 4]);
        assert_eq!(changelog.versions(), 4, "every change kept");
        assert_eq!(info.files.small_files_written, 0, "a delta of 4 rows");
        let key = Key {
            table: Table::Accounts,
            id: 1,
        };
        assert_eq!(changelog.get(&key).unwrap().change_id, 13, "latest view");
        assert_eq!(upsert.get(&key).unwrap().change_id, 13);
    }

    #[test]
    fn a_pre_commit_left_past_its_timeout_is_rolled_back() {
        let mut t = LakeTable::with_config(LakeConfig {
            pre_commit_timeout: nrtsim_workloads::SimDuration::from_secs(60),
            ..LakeConfig::default()
        });
        t.pre_commit("lake-0", 1, 1_000);
        assert!(t
            .commit("lake-0", 1, &[write(1, 10, 5)], BTreeMap::new(), 61_000)
            .is_some());
        t.pre_commit("lake-0", 2, 70_000);
        assert!(
            t.commit("lake-0", 2, &[write(1, 11, 6)], BTreeMap::new(), 130_001)
                .is_none(),
            "rolled back"
        );
        assert_eq!(t.last_commit("lake-0").unwrap().0, 1);
        assert_eq!(t.versions(), 1);
        assert_eq!(t.rolled_back_at("lake-0", 2), Some(70_000));
        // A restarted task's second pre-commit of a checkpoint restarts its timeout.
        t.pre_commit("lake-0", 3, 131_000);
        t.pre_commit("lake-0", 3, 180_000);
        assert!(t
            .commit("lake-0", 3, &[write(1, 12, 7)], BTreeMap::new(), 230_000)
            .is_some());
        assert_eq!(t.rolled_back_at("lake-0", 1), None, "committed in time");
        assert!(
            t.commit("lake-0", 2, &[write(1, 11, 6)], BTreeMap::new(), 130_002)
                .is_none(),
            "a retry after another restart finds it rolled back still"
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
