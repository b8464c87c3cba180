//! The lake table: primary-key rows that change only by commits, one commit per checkpoint,
//! each making a new snapshot visible to readers at once. Commits are idempotent by
//! (task, checkpoint id), and a commit can carry the sink's input offsets so that rows and
//! offsets move together.

use crate::canonical::MerchantInfo;
use crate::record::TopicPartition;
use nrtsim_workloads::{Key, Row};
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
}

/// An upsert lake table with snapshot commits.
#[derive(Debug, Default)]
pub struct LakeTable {
    rows: BTreeMap<Key, LakeEntry>,
    next_snapshot: u64,
    /// Per task: the last committed checkpoint id and the input offsets committed with it.
    committed: BTreeMap<String, (u64, BTreeMap<TopicPartition, u64>)>,
}

impl LakeTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits `writes` as one snapshot for `task`'s checkpoint `checkpoint_id`, with the
    /// offsets they cover. A checkpoint already committed is not applied again: `None`.
    pub fn commit(
        &mut self,
        task: &str,
        checkpoint_id: u64,
        writes: &[PendingWrite],
        offsets: BTreeMap<TopicPartition, u64>,
    ) -> Option<CommitInfo> {
        if let Some((last, _)) = self.committed.get(task) {
            if *last >= checkpoint_id {
                return None;
            }
        }
        for w in writes {
            match &w.row {
                Some(row) => {
                    self.rows.insert(
                        w.key,
                        LakeEntry {
                            change_id: w.change_id,
                            row: row.clone(),
                            merchant: w.merchant.clone(),
                        },
                    );
                }
                None => {
                    self.rows.remove(&w.key);
                }
            }
        }
        self.committed
            .insert(task.to_string(), (checkpoint_id, offsets));
        self.next_snapshot += 1;
        Some(CommitInfo {
            snapshot_id: self.next_snapshot,
        })
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
    use nrtsim_workloads::{Account, Table};

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
            .commit("lake-0", 1, &[write(1, 10, 5)], BTreeMap::new())
            .is_some());
        assert!(t
            .commit("lake-0", 1, &[write(1, 11, 6)], BTreeMap::new())
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
            .commit("lake-0", 2, &[write(1, 11, 6)], BTreeMap::new())
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
        assert!(t.commit("lake-1", 1, &[], BTreeMap::new()).is_some());
    }
}
