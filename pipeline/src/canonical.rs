//! Canonical records: what the standardize job writes to `standard` and the enrich job writes
//! to `enriched`, in a compact binary encoding.

use nrtsim_workloads::{Account, CardTransaction, Key, Op, Order, Row};
use serde::{Deserialize, Serialize};

/// A row image in the canonical encoding (tagged, unlike the source's JSON rows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowBody {
    /// An `accounts` row.
    Account(Account),
    /// A `card_transactions` row.
    CardTransaction(CardTransaction),
    /// An `orders` row.
    Order(Order),
}

impl From<Row> for RowBody {
    fn from(r: Row) -> Self {
        match r {
            Row::Account(a) => RowBody::Account(a),
            Row::CardTransaction(t) => RowBody::CardTransaction(t),
            Row::Order(o) => RowBody::Order(o),
        }
    }
}

impl From<RowBody> for Row {
    fn from(r: RowBody) -> Self {
        match r {
            RowBody::Account(a) => Row::Account(a),
            RowBody::CardTransaction(t) => Row::CardTransaction(t),
            RowBody::Order(o) => Row::Order(o),
        }
    }
}

/// One change in canonical form: key, operation and the row as the change leaves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canonical {
    /// The row's key.
    pub key: Key,
    /// What the change did.
    pub op: Op,
    /// The row after the change; `None` for a delete.
    pub row: Option<RowBody>,
    /// The change's LSN.
    pub lsn: u64,
    /// The source transaction.
    pub txid: u64,
}

/// Reference data the enrich job attaches to a card transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantInfo {
    /// Merchant name.
    pub name: String,
    /// Brand.
    pub brand: String,
    /// Spend category.
    pub category: String,
}

/// A canonical record with its enrichment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enriched {
    /// The change.
    pub change: Canonical,
    /// The merchant, for card transactions.
    pub merchant: Option<MerchantInfo>,
    /// The reference-store version that enriched it.
    pub store_version: u32,
}

/// Why a canonical payload could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed canonical record: {0}")]
pub struct CodecError(#[from] postcard::Error);

/// Encodes a value in the canonical binary form.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("canonical types always serialize")
}

/// Decodes a value from the canonical binary form.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}
