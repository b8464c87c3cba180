//! Torn transactions: a lake snapshot that shows part of a multi-row source transaction, such
//! as a card payment's balance update without its card transaction. Each multi-row source
//! transaction is tracked from its commit (its changes hold consecutive LSNs, so a change's
//! transaction is found by binary search); a transaction is torn when some of its changes
//! became visible and either the others never did or they became visible in another snapshot.
//! Memory grows with multi-row transactions (a few words each).

use serde::{Deserialize, Serialize};

/// Whether a torn transaction fails the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TornPolicy {
    /// Reported and counted, but the exit code ignores it (the default: a pipeline that parks
    /// a card transaction in redo while its balance update goes on shows torn transactions by
    /// design).
    #[default]
    Warning,
    /// A torn transaction is an exactly-once violation (exit 1).
    Violation,
}

/// What the lake owes its readers: each key's latest state, or every state it passed through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LakeHistory {
    /// Each key's end state is enough (a balance, a customer's address).
    #[default]
    EndState,
    /// Every change must become visible in some snapshot (an order's states for settlement):
    /// a version an upsert table folds into a later one within a commit is `lost`.
    EveryChange,
}

/// The `[checks]` section of a scenario: how strict the checker is where the scenario decides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Checks {
    /// `warning` or `violation`. Default `warning`.
    pub torn_transaction: TornPolicy,
    /// `end-state` or `every-change`. Default `end-state`.
    pub lake_history: LakeHistory,
}

#[derive(Clone, Debug)]
struct Txn {
    txid: u64,
    first_lsn: u64,
    size: u32,
    visible: u32,
    first_snapshot: u64,
    split: bool,
}

/// A multi-row transaction the lake showed only in part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torn {
    /// The source transaction.
    pub txid: u64,
    /// Its first change.
    pub first_lsn: u64,
    /// Its changes.
    pub size: u32,
    /// How many became visible.
    pub visible: u32,
    /// Whether they became visible in more than one snapshot.
    pub split: bool,
}

/// Follows every multi-row source transaction into the lake.
#[derive(Clone, Debug, Default)]
pub struct TornTracker {
    txns: Vec<Txn>,
}

impl TornTracker {
    /// A source transaction committed with `size` changes from `first_lsn` on; the initial
    /// snapshot (txid 0) and single-row transactions cannot be torn.
    pub fn commit(&mut self, txid: u64, first_lsn: u64, size: usize) {
        if txid != 0 && size > 1 {
            let size = u32::try_from(size).unwrap_or(u32::MAX);
            let txn = Txn {
                txid,
                first_lsn,
                size,
                visible: 0,
                first_snapshot: 0,
                split: false,
            };
            self.txns.push(txn);
        }
    }

    /// Change `lsn` became visible (for the first time) in snapshot `snapshot_id`.
    pub fn visible(&mut self, lsn: u64, snapshot_id: u64) {
        let i = self.txns.partition_point(|t| t.first_lsn <= lsn);
        let Some(t) = i.checked_sub(1).and_then(|i| self.txns.get_mut(i)) else {
            return;
        };
        if lsn >= t.first_lsn + u64::from(t.size) {
            return;
        }
        if t.visible == 0 {
            t.first_snapshot = snapshot_id;
        } else if t.first_snapshot != snapshot_id {
            t.split = true;
        }
        t.visible += 1;
    }

    /// The transactions the lake showed in part.
    pub fn torn(&self) -> impl Iterator<Item = Torn> + '_ {
        self.txns
            .iter()
            .filter(|t| t.visible > 0 && (t.split || t.visible < t.size))
            .map(|t| Torn {
                txid: t.txid,
                first_lsn: t.first_lsn,
                size: t.size,
                visible: t.visible,
                split: t.split,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_split_and_partial_transactions() {
        let mut t = TornTracker::default();
        t.commit(0, 1, 100); // the snapshot: never torn
        t.commit(1, 101, 2); // whole, one snapshot
        t.commit(2, 103, 2); // split over two snapshots
        t.commit(3, 105, 2); // half visible
        t.commit(4, 107, 1); // single row
        t.commit(5, 108, 2); // never visible: lost, not torn
        for (lsn, snap) in [
            (101, 1),
            (102, 1),
            (103, 1),
            (104, 2),
            (105, 2),
            (107, 2),
            (50, 1),
        ] {
            t.visible(lsn, snap);
        }
        let torn: Vec<(u64, bool)> = t.torn().map(|x| (x.txid, x.split)).collect();
        assert_eq!(torn, vec![(2, true), (3, false)]);
    }
}
