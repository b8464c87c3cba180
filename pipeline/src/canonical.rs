//! Canonical records: what the standardize job writes to `standard` and the enrich job writes
//! to `enriched`, in a compact binary encoding.

use bytes::{Bytes, BytesMut};
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

/// Makes record payloads: each is encoded into a reused scratch buffer, then copied into a
/// shared chunk and handed out as an exact-size slice of it. Records are kept for the whole
/// run in several replica logs, so neither spare capacity nor one allocation per record is
/// wanted.
#[derive(Default)]
pub struct Encoder {
    scratch: Vec<u8>,
    chunk: BytesMut,
}

const CHUNK_BYTES: usize = 64 * 1024;

impl Encoder {
    /// Encodes `value` in the canonical binary form.
    pub fn canonical<T: Serialize>(&mut self, value: &T) -> Bytes {
        let scratch = std::mem::take(&mut self.scratch);
        self.scratch =
            postcard::to_extend(value, scratch).expect("canonical types always serialize");
        self.freeze()
    }

    /// Payload written by `write` into an empty buffer.
    pub fn with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
        self.scratch.clear();
        write(&mut self.scratch);
        self.freeze()
    }

    fn freeze(&mut self) -> Bytes {
        let n = self.scratch.len();
        if self.chunk.capacity() < n {
            self.chunk = BytesMut::with_capacity(CHUNK_BYTES.max(n));
        }
        self.chunk.extend_from_slice(&self.scratch);
        self.scratch.clear();
        self.chunk.split().freeze()
    }
}

/// Decodes a value from the canonical binary form.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}
