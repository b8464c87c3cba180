//! The exactly-once anomalies this checker looks for, their counts and their capped examples,
//! in the shape the report's `exactly_once` section takes.
//!
//! Only anomalies the checker actually checks appear here: an anomaly it cannot check in a
//! run (`aborted_read` in a run without Kafka transactions, `aggregate_mismatch` in one
//! without spend aggregates) must be absent from its report, never a 0 that was not measured.

use serde::{Deserialize, Serialize};

/// An anomaly the checker finds, by its report name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A committed source change that never reached its end (lake, critical, or parked in redo).
    Lost,
    /// A change applied to the lake twice, or seen at two positions of the enriched topic.
    Duplicated,
    /// Changes to one key applied to the lake, or read from the enriched topic, out of LSN
    /// order; or changes met out of LSN order along a partition of the raw topic (whose one
    /// producer writes in LSN order).
    Reordered,
    /// A record carrying a change id that no source commit produced.
    Phantom,
    /// A stage consumed a record of an aborted Kafka transaction.
    AbortedRead,
    /// A key whose final lake row differs from the source's final row.
    LakeMismatch,
    /// A lake snapshot showed part of a multi-row source transaction.
    TornTransaction,
    /// Two reads of one topic partition found different records at the same offset.
    InconsistentOffsets,
    /// A streamed spend aggregate that differs from the batch recomputation from the source.
    AggregateMismatch,
    /// An account's final balance in the lake is not its opening balance moved by its
    /// payments in the source (checked when the history carries account balances).
    BalanceMismatch,
    /// A change sent to `critical` for its schema: the registry refused the schema it was
    /// made under, its reader could not read it, or (without a registry) its table lost a
    /// column the canonical record needs. Checked when the run has a registry; without one,
    /// present only when such a change was found.
    SchemaRejected,
}

impl AnomalyKind {
    /// Every checked anomaly, in report order.
    pub const ALL: [AnomalyKind; 11] = [
        AnomalyKind::Lost,
        AnomalyKind::Duplicated,
        AnomalyKind::Reordered,
        AnomalyKind::Phantom,
        AnomalyKind::AbortedRead,
        AnomalyKind::LakeMismatch,
        AnomalyKind::TornTransaction,
        AnomalyKind::InconsistentOffsets,
        AnomalyKind::AggregateMismatch,
        AnomalyKind::BalanceMismatch,
        AnomalyKind::SchemaRejected,
    ];

    /// The anomaly's report name.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Lost => "lost",
            AnomalyKind::Duplicated => "duplicated",
            AnomalyKind::Reordered => "reordered",
            AnomalyKind::Phantom => "phantom",
            AnomalyKind::AbortedRead => "aborted_read",
            AnomalyKind::LakeMismatch => "lake_mismatch",
            AnomalyKind::TornTransaction => "torn_transaction",
            AnomalyKind::InconsistentOffsets => "inconsistent_offsets",
            AnomalyKind::AggregateMismatch => "aggregate_mismatch",
            AnomalyKind::BalanceMismatch => "balance_mismatch",
            AnomalyKind::SchemaRejected => "schema_rejected",
        }
    }

    /// The anomaly called `name`, if this checker checks it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One example of an anomaly: which change, which key, and where it was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyExample {
    /// The anomaly's report name.
    pub anomaly: String,
    /// The change involved, when there is one.
    pub change_id: Option<u64>,
    /// The row's key as `table/id`, when known.
    pub key: Option<String>,
    /// The change's LSN (equal to its id), when there is one.
    pub lsn: Option<u64>,
    /// Where it was seen, in words: `lake snapshot 7`, `enriched p3@120 and p3@455`, ...
    #[serde(rename = "where")]
    pub location: String,
}

/// The `exactly_once` section: a count per checked anomaly and up to a few examples of each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactlyOnce {
    /// Distinct change ids lost.
    pub lost: u64,
    /// Distinct change ids duplicated.
    pub duplicated: u64,
    /// Distinct change ids that arrived after a higher LSN of the same key.
    pub reordered: u64,
    /// Distinct change ids no source commit produced.
    pub phantom: u64,
    /// Records of aborted Kafka transactions that a stage read; absent when the run used no
    /// transactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_read: Option<u64>,
    /// Keys whose final lake state is wrong.
    pub lake_mismatch: u64,
    /// Source transactions a lake snapshot showed only in part.
    pub torn_transaction: u64,
    /// Offsets at which two reads found different records.
    pub inconsistent_offsets: u64,
    /// (Account, window) spend aggregates that differ from the batch recomputation; absent
    /// when the run computes no spend aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_mismatch: Option<u64>,
    /// Accounts whose final lake balance breaks conservation; absent when the history
    /// carries no account balances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_mismatch: Option<u64>,
    /// Changes sent to `critical` for their schema; absent when the run has no schema
    /// registry and none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_rejected: Option<u64>,
    /// Whether torn transactions fail the run (the scenario's `[checks]`), or only warn.
    pub torn_transaction_is_violation: bool,
    /// Examples, grouped by anomaly in report order, at most a few per anomaly.
    pub examples: Vec<AnomalyExample>,
}

impl ExactlyOnce {
    /// The count of one anomaly.
    pub fn count(&self, kind: AnomalyKind) -> u64 {
        match kind {
            AnomalyKind::Lost => self.lost,
            AnomalyKind::Duplicated => self.duplicated,
            AnomalyKind::Reordered => self.reordered,
            AnomalyKind::Phantom => self.phantom,
            AnomalyKind::AbortedRead => self.aborted_read.unwrap_or(0),
            AnomalyKind::LakeMismatch => self.lake_mismatch,
            AnomalyKind::TornTransaction => self.torn_transaction,
            AnomalyKind::InconsistentOffsets => self.inconsistent_offsets,
            AnomalyKind::AggregateMismatch => self.aggregate_mismatch.unwrap_or(0),
            AnomalyKind::BalanceMismatch => self.balance_mismatch.unwrap_or(0),
            AnomalyKind::SchemaRejected => self.schema_rejected.unwrap_or(0),
        }
    }

    fn count_mut(&mut self, kind: AnomalyKind) -> &mut u64 {
        match kind {
            AnomalyKind::Lost => &mut self.lost,
            AnomalyKind::Duplicated => &mut self.duplicated,
            AnomalyKind::Reordered => &mut self.reordered,
            AnomalyKind::Phantom => &mut self.phantom,
            AnomalyKind::AbortedRead => self.aborted_read.get_or_insert(0),
            AnomalyKind::LakeMismatch => &mut self.lake_mismatch,
            AnomalyKind::TornTransaction => &mut self.torn_transaction,
            AnomalyKind::InconsistentOffsets => &mut self.inconsistent_offsets,
            AnomalyKind::AggregateMismatch => self.aggregate_mismatch.get_or_insert(0),
            AnomalyKind::BalanceMismatch => self.balance_mismatch.get_or_insert(0),
            AnomalyKind::SchemaRejected => self.schema_rejected.get_or_insert(0),
        }
    }

    /// The anomalies this report checked, in report order.
    pub fn checked(&self) -> impl Iterator<Item = AnomalyKind> + '_ {
        AnomalyKind::ALL.into_iter().filter(|k| match k {
            AnomalyKind::AggregateMismatch => self.aggregate_mismatch.is_some(),
            AnomalyKind::BalanceMismatch => self.balance_mismatch.is_some(),
            AnomalyKind::AbortedRead => self.aborted_read.is_some(),
            AnomalyKind::SchemaRejected => self.schema_rejected.is_some(),
            _ => true,
        })
    }

    /// The sum of all anomaly counts.
    pub fn total(&self) -> u64 {
        AnomalyKind::ALL.iter().map(|k| self.count(*k)).sum()
    }

    /// Whether no anomaly was found.
    pub fn is_clean(&self) -> bool {
        let warnings = if self.torn_transaction_is_violation {
            0
        } else {
            self.torn_transaction
        };
        self.total() - warnings == 0
    }

    /// The examples of one anomaly.
    pub fn examples_of(&self, kind: AnomalyKind) -> impl Iterator<Item = &AnomalyExample> {
        self.examples
            .iter()
            .filter(move |e| e.anomaly == kind.name())
    }

    /// Counts one occurrence and keeps the example while fewer than `max_examples` of this
    /// anomaly are kept.
    pub fn record(&mut self, kind: AnomalyKind, example: AnomalyExample, max_examples: usize) {
        *self.count_mut(kind) += 1;
        if self.examples_of(kind).count() < max_examples {
            self.examples.push(example);
        }
    }

    /// Orders the examples by anomaly (report order), keeping the order within each anomaly.
    pub fn sort_examples(&mut self) {
        let rank = |e: &AnomalyExample| {
            AnomalyKind::from_name(&e.anomaly).map_or(usize::MAX, |k| k as usize)
        };
        self.examples.sort_by_key(rank);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(kind: AnomalyKind, id: u64) -> AnomalyExample {
        AnomalyExample {
            anomaly: kind.name().to_string(),
            change_id: Some(id),
            key: None,
            lsn: Some(id),
            location: "lake".to_string(),
        }
    }

    #[test]
    fn examples_are_capped_per_anomaly_and_grouped() {
        let mut eo = ExactlyOnce::default();
        for id in 1..=10 {
            eo.record(
                AnomalyKind::Duplicated,
                example(AnomalyKind::Duplicated, id),
                8,
            );
        }
        eo.record(AnomalyKind::Lost, example(AnomalyKind::Lost, 99), 8);
        eo.sort_examples();
        assert_eq!(eo.duplicated, 10);
        assert_eq!(eo.lost, 1);
        assert_eq!(eo.examples.len(), 9);
        assert_eq!(eo.examples[0].anomaly, "lost");
        assert_eq!(eo.total(), 11);
        let json = serde_json::to_value(&eo).unwrap();
        assert_eq!(json["examples"][0]["where"], "lake");
        assert!(json.get("aborted_read").is_none());
        assert_eq!(json["torn_transaction"], 0);
    }

    #[test]
    fn names_round_trip() {
        for k in AnomalyKind::ALL {
            assert_eq!(AnomalyKind::from_name(k.name()), Some(k));
        }
        assert_eq!(AnomalyKind::from_name("aborted"), None);
        assert_eq!(
            AnomalyKind::from_name("torn_transaction"),
            Some(AnomalyKind::TornTransaction)
        );
    }
}
