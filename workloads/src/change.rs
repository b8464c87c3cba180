//! The change model: source tables and rows, row changes with their log sequence numbers, and
//! the source transactions that group them. The CDC connector turns these into Debezium-style
//! envelopes; the checker derives expected state from them.

use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// A source table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Account rows with their running balance.
    Accounts,
    /// One row per card event (authorisation, capture, reversal).
    CardTransactions,
    /// Orders moving through their lifecycle.
    Orders,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 3] = [Table::Accounts, Table::CardTransactions, Table::Orders];

    /// The table's name as the source database spells it.
    pub fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::CardTransactions => "card_transactions",
            Table::Orders => "orders",
        }
    }

    /// The table called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The name of the table's shard `shard` in the source database: the table's own name
    /// for shard 0, `<table>_<shard>` for the shards DDL created after it.
    pub fn shard_name(self, shard: u16) -> std::borrow::Cow<'static, str> {
        if shard == 0 {
            self.name().into()
        } else {
            format!("{}_{shard}", self.name()).into()
        }
    }

    /// The table and shard a source table name stands for (`orders` → shard 0, `orders_2` →
    /// shard 2), if it is one.
    pub fn from_shard_name(name: &str) -> Option<(Self, u16)> {
        if let Some(t) = Self::from_name(name) {
            return Some((t, 0));
        }
        let (table, shard) = name.rsplit_once('_')?;
        if shard.starts_with('0') || !shard.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((
            Self::from_name(table)?,
            shard.parse().ok().filter(|s| *s > 0)?,
        ))
    }
}

/// A row's primary key: its table and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The table the row lives in.
    pub table: Table,
    /// The row's id within the table.
    pub id: u64,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.table.name(), self.id)
    }
}

/// The kind of change, as Debezium spells it in `op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Op {
    /// An insert (`c`).
    #[serde(rename = "c")]
    Create,
    /// An update (`u`).
    #[serde(rename = "u")]
    Update,
    /// A delete (`d`).
    #[serde(rename = "d")]
    Delete,
    /// A row read by the initial snapshot (`r`).
    #[serde(rename = "r")]
    Read,
}

/// An account row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Account {
    /// Primary key.
    pub account_id: u64,
    /// The customer who holds the account (the partition key of card traffic).
    pub customer_id: u64,
    /// Balance in minor units.
    pub balance_cents: i64,
    /// When the row last changed, in simulated ms.
    pub updated_ms: u64,
}

/// What a card event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardTxnKind {
    /// Funds reserved at the point of sale.
    Authorisation,
    /// Funds taken.
    Capture,
    /// Funds given back.
    Reversal,
}

/// A card transaction row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CardTransaction {
    /// Primary key.
    pub txn_id: u64,
    /// The account charged.
    pub account_id: u64,
    /// The merchant, looked up in the reference store by the enrich job.
    pub merchant_id: u64,
    /// Signed amount in minor units (negative for a reversal).
    pub amount_cents: i64,
    /// Authorisation, capture or reversal.
    pub kind: CardTxnKind,
    /// Event time in simulated ms.
    pub ts_ms: u64,
}

/// Where an order is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed.
    Created,
    /// Paid.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Received by the customer.
    Delivered,
    /// Cancelled before shipping.
    Cancelled,
    /// Money returned after a cancellation.
    Refunded,
}

/// An order row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Order {
    /// Primary key.
    pub order_id: u64,
    /// The customer (the partition key of order traffic).
    pub customer_id: u64,
    /// Lifecycle state.
    pub status: OrderStatus,
    /// Order value in minor units.
    pub amount_cents: i64,
    /// When the row last changed, in simulated ms.
    pub updated_ms: u64,
}

/// A row image of any table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Row {
    /// An `accounts` row.
    Account(Account),
    /// A `card_transactions` row.
    CardTransaction(CardTransaction),
    /// An `orders` row.
    Order(Order),
}

impl Row {
    /// The table this row belongs to.
    pub fn table(&self) -> Table {
        match self {
            Row::Account(_) => Table::Accounts,
            Row::CardTransaction(_) => Table::CardTransactions,
            Row::Order(_) => Table::Orders,
        }
    }

    /// The row's primary key.
    pub fn key(&self) -> Key {
        let id = match self {
            Row::Account(a) => a.account_id,
            Row::CardTransaction(t) => t.txn_id,
            Row::Order(o) => o.order_id,
        };
        Key {
            table: self.table(),
            id,
        }
    }

    /// The key that keeps one customer's changes in order: the customer (or account) id.
    pub fn partition_key(&self) -> u64 {
        match self {
            Row::Account(a) => a.customer_id,
            Row::CardTransaction(t) => t.account_id,
            Row::Order(o) => o.customer_id,
        }
    }

    /// A stable 64-bit digest of the row's source columns, the same on every machine; the
    /// checker compares lake rows with source rows through it.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv64::default();
        self.hash(&mut h);
        h.finish()
    }
}

/// FNV-1a, 64-bit: fixed, seedless, and fast for short inputs.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    // Integers are hashed little-endian on every target, so digests agree across machines.
    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    fn write_i64(&mut self, n: i64) {
        self.write(&n.to_le_bytes());
    }

    fn write_usize(&mut self, n: usize) {
        self.write(&(n as u64).to_le_bytes());
    }

    fn write_isize(&mut self, n: isize) {
        self.write(&(n as i64).to_le_bytes());
    }
}

/// One row change in the source database's commit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Log sequence number; unique across the run, so it doubles as the change id.
    pub lsn: u64,
    /// The source transaction this change belongs to.
    pub txid: u64,
    /// The row's key.
    pub key: Key,
    /// Create, update, delete or snapshot read.
    pub op: Op,
    /// The row before the change (updates and deletes).
    pub before: Option<Row>,
    /// The row after the change (creates, updates and reads).
    pub after: Option<Row>,
    /// Whether the CDC connector will emit this change malformed (a poison record).
    pub poison: bool,
    /// The shard of the table the row lives in (0: the table itself; see
    /// [`Table::shard_name`]). A row stays in the shard it was inserted into.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shard: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl Change {
    /// The key that picks the topic partition: the customer or account id.
    pub fn partition_key(&self) -> u64 {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .map_or(self.key.id, Row::partition_key)
    }

    /// Digest of the row as this change leaves it; `None` for a delete.
    pub fn after_digest(&self) -> Option<u64> {
        self.after.as_ref().map(Row::digest)
    }
}

/// A committed source transaction: one commit, one or more row changes, consecutive LSNs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Transaction id.
    pub txid: u64,
    /// Commit time in simulated ms: the intended time from which latency is measured.
    pub commit_ms: u64,
    /// The changes, in LSN order.
    pub changes: Vec<Change>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_stable_and_sensitive() {
        let a = Row::Account(Account {
            account_id: 1,
            customer_id: 7,
            balance_cents: 100,
            updated_ms: 5,
        });
        let mut b = a.clone();
        if let Row::Account(x) = &mut b {
            x.balance_cents = 101;
        }
        assert_eq!(a.digest(), a.clone().digest());
        assert_ne!(a.digest(), b.digest());
        assert_eq!(
            a.key(),
            Key {
                table: Table::Accounts,
                id: 1
            }
        );
        assert_eq!(a.partition_key(), 7);
    }

    #[test]
    fn shard_names_round_trip_and_strangers_are_refused() {
        for t in Table::ALL {
            for shard in [0, 1, 12] {
                assert_eq!(
                    Table::from_shard_name(&t.shard_name(shard)),
                    Some((t, shard))
                );
            }
        }
        assert_eq!(Table::shard_name(Table::Orders, 3), "orders_3");
        for name in [
            "orders_0",
            "orders_01",
            "orders_",
            "orders_x",
            "ledger_1",
            "card",
        ] {
            assert_eq!(Table::from_shard_name(name), None, "{name}");
        }
    }
}
