//! Debezium-style JSON change envelopes, as the CDC connector writes them to the raw topic and
//! the standardize job reads them back, and Debezium's transaction boundary events.
//!
//! A change, with the schema of its table at the time it was made (as Debezium's JSON
//! converter writes it with schemas enabled; see [`crate::schema`]):
//!
//! ```json
//! {"schema":{"fields":[{"field":"account_id","optional":false,"type":"int64"},…],
//!            "name":"bank.accounts","type":"struct","version":1},
//!  "before":{"account_id":7,"customer_id":7,"balance_cents":900,"updated_ms":0},
//!  "after":{"account_id":7,"customer_id":7,"balance_cents":650,"updated_ms":1200},
//!  "op":"u","source":{"table":"accounts","lsn":51,"txId":1,"ts_ms":1200},"ts_ms":1200}
//! ```
//!
//! Boundaries: `{"status":"BEGIN","id":"1","event_count":null,"ts_ms":1200}` before a
//! transaction's changes and `{"status":"END","id":"1","event_count":2,"ts_ms":1200}` after.
//!
//! Decoding is typed by `source.table`: the row images are read into one flat set of optional
//! columns, then checked against the table's columns (every column present, no foreign ones),
//! so a row is never guessed from its shape. A poison change is encoded malformed on purpose,
//! in one of three ways picked by its LSN (cut short, `lsn` as a string, both images null), and
//! every one of them fails [`decode_change`].

use crate::change::{
    Account, CardTransaction, CardTxnKind, Change, Key, Op, Order, OrderStatus, Row, Table,
};
use crate::schema::{Column, ColumnType, TableSchema};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Why an envelope or boundary event was rejected.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or JSON of the wrong shape (missing or mistyped field, unknown table or op).
    #[error("malformed envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A row image the op needs is null or absent.
    #[error("op {op:?} needs a `{image}` image")]
    MissingImage {
        /// The envelope's op.
        op: Op,
        /// `before` or `after`.
        image: &'static str,
    },
    /// A row image the op must not have is present.
    #[error("op {op:?} must not have a `{image}` image")]
    UnexpectedImage {
        /// The envelope's op.
        op: Op,
        /// `before` or `after`.
        image: &'static str,
    },
    /// A row image lacks one of its table's columns.
    #[error("`{image}` row of table {table} lacks column `{column}`")]
    MissingColumn {
        /// The table named by `source.table`.
        table: &'static str,
        /// `before` or `after`.
        image: &'static str,
        /// The missing column.
        column: &'static str,
    },
    /// A row image has a column of another table.
    #[error("`{image}` row of table {table} has column `{column}` of another table")]
    ForeignColumn {
        /// The table named by `source.table`.
        table: &'static str,
        /// `before` or `after`.
        image: &'static str,
        /// The foreign column.
        column: &'static str,
    },
    /// `before` and `after` describe different rows.
    #[error("`before` is row {before} but `after` is row {after}")]
    KeyMismatch {
        /// The key of the before image.
        before: Key,
        /// The key of the after image.
        after: Key,
    },
    /// A boundary event's `id` is not a transaction id.
    #[error("boundary id {0:?} is not a transaction id")]
    BadTransactionId(String),
    /// The envelope carries no schema block, or one that does not describe a table.
    #[error("bad schema block: {0}")]
    BadSchema(String),
    /// A row image does not match the schema its envelope carries.
    #[error("`{image}` row does not match its schema: {detail}")]
    SchemaViolation {
        /// `before` or `after`.
        image: &'static str,
        /// What does not match.
        detail: String,
    },
}

/// A decoded, validated change envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// What the change did.
    pub op: Op,
    /// `source.table`: the table (a shard counts as its table).
    pub table: Table,
    /// The shard `source.table` names (0: the table itself).
    pub shard: u16,
    /// `source.lsn`: the change id.
    pub lsn: u64,
    /// `source.txId`.
    pub txid: u64,
    /// `source.ts_ms`: the commit time.
    pub ts_ms: u64,
    /// The row before the change (updates and deletes).
    pub before: Option<Row>,
    /// The row after the change (creates, updates and reads).
    pub after: Option<Row>,
}

impl Envelope {
    /// The changed row's key.
    pub fn key(&self) -> Key {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .map(Row::key)
            .expect("a validated envelope has a row image")
    }

    /// The change this envelope carries (never poison: poison does not decode).
    pub fn into_change(self) -> Change {
        Change {
            lsn: self.lsn,
            txid: self.txid,
            key: self.key(),
            op: self.op,
            before: self.before,
            after: self.after,
            poison: false,
            shard: self.shard,
        }
    }
}

/// Whether a boundary event opens or closes a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxStatus {
    /// The transaction's first event follows.
    #[serde(rename = "BEGIN")]
    Begin,
    /// The transaction's last event came before.
    #[serde(rename = "END")]
    End,
}

/// A decoded transaction boundary event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxBoundary {
    /// BEGIN or END.
    pub status: TxStatus,
    /// The transaction id.
    pub txid: u64,
    /// How many change events the transaction has (END only).
    pub event_count: Option<u64>,
    /// The commit time.
    pub ts_ms: u64,
}

#[derive(Serialize)]
struct EnvelopeOut<'a, L, I> {
    schema: &'a RawValue,
    before: Option<I>,
    after: Option<I>,
    op: Op,
    source: SourceOut<L>,
    ts_ms: u64,
}

#[derive(Serialize)]
struct SourceOut<L> {
    table: std::borrow::Cow<'static, str>,
    lsn: L,
    #[serde(rename = "txId")]
    txid: u64,
    ts_ms: u64,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    before: Option<Columns>,
    after: Option<Columns>,
    op: Op,
    source: SourceIn,
}

#[derive(Deserialize)]
struct SourceIn {
    #[serde(deserialize_with = "shard_of_name")]
    table: (Table, u16),
    lsn: u64,
    #[serde(rename = "txId")]
    txid: u64,
    ts_ms: u64,
}

/// Reads `source.table`: a table's name, or the name of one of its shards.
fn shard_of_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(Table, u16), D::Error> {
    let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    Table::from_shard_name(&name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown table `{name}`")))
}

/// The columns of every table, each optional; checked against `source.table` after parsing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Columns {
    account_id: Option<u64>,
    customer_id: Option<u64>,
    balance_cents: Option<i64>,
    updated_ms: Option<u64>,
    txn_id: Option<u64>,
    merchant_id: Option<u64>,
    amount_cents: Option<i64>,
    kind: Option<CardTxnKind>,
    ts_ms: Option<u64>,
    order_id: Option<u64>,
    status: Option<OrderStatus>,
}

#[derive(Serialize)]
struct BoundaryOut {
    status: TxStatus,
    id: String,
    event_count: Option<u64>,
    ts_ms: u64,
}

#[derive(Deserialize)]
struct BoundaryIn {
    status: TxStatus,
    id: String,
    #[serde(default)]
    event_count: Option<u64>,
    ts_ms: u64,
}

/// The envelope of `change` committed at `commit_ms` under its table's first schema;
/// malformed bytes if it is poison.
pub fn encode_change(change: &Change, commit_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let schema = TableSchema::base(change.key.table);
    encode_change_into(change, commit_ms, &schema, &mut out);
    out
}

/// Appends the envelope of `change`, made under `schema` (its table's schema at its commit),
/// to `out` (so a caller can reuse one buffer).
pub fn encode_change_into(
    change: &Change,
    commit_ms: u64,
    schema: &TableSchema,
    out: &mut Vec<u8>,
) {
    if schema.is_base() {
        encode_images(
            change,
            commit_ms,
            schema,
            change.before.as_ref(),
            change.after.as_ref(),
            out,
        );
    } else {
        // Rows written after DDL: the typed row reshaped to the table's columns of the time.
        let shaped = |row: Option<&Row>| {
            row.map(|r| match serde_json::to_value(r).expect("rows serialize") {
                serde_json::Value::Object(m) => schema.shape(m),
                other => other,
            })
        };
        let (before, after) = (
            shaped(change.before.as_ref()),
            shaped(change.after.as_ref()),
        );
        encode_images(change, commit_ms, schema, before, after, out);
    }
}

fn encode_images<I: Serialize>(
    change: &Change,
    commit_ms: u64,
    schema: &TableSchema,
    before: Option<I>,
    after: Option<I>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let mut envelope = EnvelopeOut {
        schema: schema.envelope_json(),
        before,
        after,
        op: change.op,
        source: SourceOut {
            table: change.key.table.shard_name(change.shard),
            lsn: change.lsn,
            txid: change.txid,
            ts_ms: commit_ms,
        },
        ts_ms: commit_ms,
    };
    let written = if !change.poison {
        serde_json::to_writer(&mut *out, &envelope)
    } else {
        match change.lsn % 3 {
            0 => {
                let r = serde_json::to_writer(&mut *out, &envelope);
                out.truncate(start + (out.len() - start) / 2);
                r
            }
            1 => {
                let envelope = EnvelopeOut {
                    schema: envelope.schema,
                    before: envelope.before,
                    after: envelope.after,
                    op: envelope.op,
                    source: SourceOut {
                        table: change.key.table.shard_name(change.shard),
                        lsn: change.lsn.to_string(),
                        txid: change.txid,
                        ts_ms: commit_ms,
                    },
                    ts_ms: commit_ms,
                };
                serde_json::to_writer(&mut *out, &envelope)
            }
            _ => {
                envelope.before = None;
                envelope.after = None;
                serde_json::to_writer(&mut *out, &envelope)
            }
        }
    };
    written.expect("writing JSON to a Vec cannot fail");
}

/// Decodes and validates one change envelope.
pub fn decode_change(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let raw: EnvelopeIn = serde_json::from_slice(bytes)?;
    let (table, shard) = raw.source.table;
    let before = raw
        .before
        .map(|c| c.into_row(table, "before"))
        .transpose()?;
    let after = raw.after.map(|c| c.into_row(table, "after")).transpose()?;
    let op = raw.op;
    check_images(op, before.is_some(), after.is_some())?;
    if let (Some(b), Some(a)) = (&before, &after) {
        if b.key() != a.key() {
            return Err(EnvelopeError::KeyMismatch {
                before: b.key(),
                after: a.key(),
            });
        }
    }
    Ok(Envelope {
        op,
        table,
        shard,
        lsn: raw.source.lsn,
        txid: raw.source.txid,
        ts_ms: raw.source.ts_ms,
        before,
        after,
    })
}

/// The opening of an envelope, up to its schema block.
const SCHEMA_HEAD: &[u8] = br#"{"schema":"#;

/// Schema blocks an [`EnvelopeDecoder`] remembers at most (a table has one per version).
const KNOWN_BLOCKS_MAX: usize = 64;

/// Decodes change envelopes as [`decode_change`] does, remembering the schema blocks of the
/// envelopes it has decoded. A reader of the CDC topic meets the same few blocks in every
/// record, and parses each one only to skip it: an envelope that opens with a block met
/// before, byte for byte, is read without parsing the block again.
/// What it decodes, and every error it gives, is what [`decode_change`] gives (the reader
/// ignores the block either way).
#[derive(Default)]
pub struct EnvelopeDecoder {
    /// Schema blocks of envelopes decoded before, as written.
    known: Vec<Box<[u8]>>,
    /// The envelope without its known block: `{` and what followed the block's comma.
    scratch: Vec<u8>,
}

impl EnvelopeDecoder {
    /// Decodes and validates one change envelope.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let rest = bytes.strip_prefix(SCHEMA_HEAD).and_then(|after| {
            self.known
                .iter()
                .find_map(|block| after.strip_prefix(&**block)?.strip_prefix(b","))
        });
        if let Some(rest) = rest {
            self.scratch.clear();
            self.scratch.push(b'{');
            self.scratch.extend_from_slice(rest);
            if let Ok(env) = decode_change(&self.scratch) {
                return Ok(env);
            }
            // Damaged after its block: decoded whole below, so that the error names the
            // place in the envelope as written.
        }
        let env = decode_change(bytes)?;
        self.learn(bytes);
        Ok(env)
    }

    /// Remembers the schema block `bytes` (a valid envelope) opens with, if it is written
    /// right after the opening and not remembered yet.
    fn learn(&mut self, bytes: &[u8]) {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            schema: &'a RawValue,
        }
        if self.known.len() >= KNOWN_BLOCKS_MAX {
            return;
        }
        let Some(after) = bytes.strip_prefix(SCHEMA_HEAD) else {
            return;
        };
        let Ok(head) = serde_json::from_slice::<Head>(bytes) else {
            return;
        };
        let block = head.schema.get().as_bytes();
        if after.starts_with(block) && !self.known.iter().any(|k| **k == *block) {
            self.known.push(block.into());
        }
    }
}

fn check_images(op: Op, has_before: bool, has_after: bool) -> Result<(), EnvelopeError> {
    let (needs_before, needs_after) = match op {
        Op::Create | Op::Read => (false, true),
        Op::Update => (true, true),
        Op::Delete => (true, false),
    };
    for (image, needed, present) in [
        ("before", needs_before, has_before),
        ("after", needs_after, has_after),
    ] {
        if needed && !present {
            return Err(EnvelopeError::MissingImage { op, image });
        }
        if !needed && present {
            return Err(EnvelopeError::UnexpectedImage { op, image });
        }
    }
    Ok(())
}

/// A row image as a JSON object, column by column.
pub type Image = serde_json::Map<String, serde_json::Value>;

/// A change envelope read by the schema it carries, for a reader that must take any version
/// of a table: the row images stay JSON objects, checked column by column against that
/// schema, which is handed back as the text of its block (for the reader to cache).
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaEnvelope {
    /// What the change did.
    pub op: Op,
    /// `source.table`.
    pub table: Table,
    /// `source.lsn`: the change id.
    pub lsn: u64,
    /// `source.txId`.
    pub txid: u64,
    /// The schema block, as written.
    pub schema: String,
    /// The row before the change.
    pub before: Option<Image>,
    /// The row after the change.
    pub after: Option<Image>,
}

impl SchemaEnvelope {
    /// The changed row's id (its key column's value).
    pub fn key_id(&self) -> Option<u64> {
        let column = TableSchema::key_column(self.table);
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .and_then(|i| i.get(column))
            .and_then(serde_json::Value::as_u64)
    }
}

#[derive(Deserialize)]
struct SchemaEnvelopeIn<'a> {
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
    before: Option<Image>,
    after: Option<Image>,
    op: Op,
    source: SourceIn,
}

#[derive(Deserialize)]
struct SchemaBlockIn {
    name: String,
    version: u32,
    fields: Vec<FieldIn>,
}

#[derive(Deserialize)]
struct FieldIn {
    field: String,
    #[serde(rename = "type")]
    ty: String,
    optional: bool,
}

/// Reads an envelope's schema block.
pub fn parse_schema_block(text: &str) -> Result<TableSchema, EnvelopeError> {
    let block: SchemaBlockIn =
        serde_json::from_str(text).map_err(|e| EnvelopeError::BadSchema(e.to_string()))?;
    let table = block
        .name
        .strip_prefix("bank.")
        .and_then(Table::from_name)
        .ok_or_else(|| EnvelopeError::BadSchema(format!("unknown table {}", block.name)))?;
    let mut columns = Vec::with_capacity(block.fields.len());
    for f in block.fields {
        let ty = ColumnType::from_envelope_name(&f.ty)
            .ok_or_else(|| EnvelopeError::BadSchema(format!("unknown type {}", f.ty)))?;
        columns.push(Column {
            name: f.field,
            ty,
            optional: f.optional,
        });
    }
    Ok(TableSchema::new(table, block.version, columns))
}

/// Decodes one change envelope by the schema it carries; `schema_of` turns the block's text
/// into the schema (a reader caches it). Every row image must have exactly the schema's
/// columns, each of its type, null only where the column is optional.
pub fn decode_change_by_schema(
    bytes: &[u8],
    schema_of: &mut dyn FnMut(&str) -> Result<std::sync::Arc<TableSchema>, EnvelopeError>,
) -> Result<(SchemaEnvelope, std::sync::Arc<TableSchema>), EnvelopeError> {
    let raw: SchemaEnvelopeIn = serde_json::from_slice(bytes)?;
    let block = raw
        .schema
        .ok_or_else(|| EnvelopeError::BadSchema("no schema block".into()))?;
    let schema = schema_of(block.get())?;
    // A shard has its table's schema.
    let (table, _) = raw.source.table;
    if schema.table != table {
        return Err(EnvelopeError::BadSchema(format!(
            "schema of {} on a change of {}",
            schema.table.name(),
            table.name()
        )));
    }
    check_images(raw.op, raw.before.is_some(), raw.after.is_some())?;
    for (image, row) in [("before", &raw.before), ("after", &raw.after)] {
        if let Some(row) = row {
            check_image(&schema, image, row)?;
        }
    }
    let env = SchemaEnvelope {
        op: raw.op,
        table,
        lsn: raw.source.lsn,
        txid: raw.source.txid,
        schema: block.get().to_string(),
        before: raw.before,
        after: raw.after,
    };
    Ok((env, schema))
}

fn check_image(
    schema: &TableSchema,
    image: &'static str,
    row: &Image,
) -> Result<(), EnvelopeError> {
    let violation = |detail: String| EnvelopeError::SchemaViolation { image, detail };
    if let Some(foreign) = row.keys().find(|k| schema.column(k).is_none()) {
        return Err(violation(format!(
            "column `{foreign}` is not in the schema"
        )));
    }
    for c in &schema.columns {
        let ok = match row.get(&c.name) {
            None => return Err(violation(format!("column `{}` is missing", c.name))),
            Some(serde_json::Value::Null) => c.optional,
            Some(v) => match c.ty {
                ColumnType::Long => v.is_i64() || v.is_u64(),
                ColumnType::String => v.is_string(),
            },
        };
        if !ok {
            return Err(violation(format!(
                "column `{}` is not a {:?}",
                c.name, c.ty
            )));
        }
    }
    Ok(())
}

/// The BEGIN event of transaction `txid`.
pub fn encode_begin(txid: u64, ts_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    encode_begin_into(txid, ts_ms, &mut out);
    out
}

/// Appends the BEGIN event of transaction `txid` to `out`.
pub fn encode_begin_into(txid: u64, ts_ms: u64, out: &mut Vec<u8>) {
    write_boundary(TxStatus::Begin, txid, None, ts_ms, out);
}

/// The END event of transaction `txid`, which had `event_count` change events.
pub fn encode_end(txid: u64, event_count: u64, ts_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    encode_end_into(txid, event_count, ts_ms, &mut out);
    out
}

/// Appends the END event of transaction `txid` to `out`.
pub fn encode_end_into(txid: u64, event_count: u64, ts_ms: u64, out: &mut Vec<u8>) {
    write_boundary(TxStatus::End, txid, Some(event_count), ts_ms, out);
}

fn write_boundary(
    status: TxStatus,
    txid: u64,
    event_count: Option<u64>,
    ts_ms: u64,
    out: &mut Vec<u8>,
) {
    let event = BoundaryOut {
        status,
        id: txid.to_string(),
        event_count,
        ts_ms,
    };
    serde_json::to_writer(out, &event).expect("writing JSON to a Vec cannot fail");
}

/// Decodes a BEGIN or END event.
pub fn decode_boundary(bytes: &[u8]) -> Result<TxBoundary, EnvelopeError> {
    let raw: BoundaryIn = serde_json::from_slice(bytes)?;
    let txid = raw
        .id
        .parse()
        .map_err(|_| EnvelopeError::BadTransactionId(raw.id.clone()))?;
    Ok(TxBoundary {
        status: raw.status,
        txid,
        event_count: raw.event_count,
        ts_ms: raw.ts_ms,
    })
}

impl Columns {
    /// The row of `table` these columns make, if they are exactly that table's columns.
    fn into_row(self, table: Table, image: &'static str) -> Result<Row, EnvelopeError> {
        let t = table.name();
        let missing = |column| EnvelopeError::MissingColumn {
            table: t,
            image,
            column,
        };
        let present = [
            ("account_id", self.account_id.is_some()),
            ("customer_id", self.customer_id.is_some()),
            ("balance_cents", self.balance_cents.is_some()),
            ("updated_ms", self.updated_ms.is_some()),
            ("txn_id", self.txn_id.is_some()),
            ("merchant_id", self.merchant_id.is_some()),
            ("amount_cents", self.amount_cents.is_some()),
            ("kind", self.kind.is_some()),
            ("ts_ms", self.ts_ms.is_some()),
            ("order_id", self.order_id.is_some()),
            ("status", self.status.is_some()),
        ];
        let own: &[&str] = match table {
            Table::Accounts => &["account_id", "customer_id", "balance_cents", "updated_ms"],
            Table::CardTransactions => &[
                "txn_id",
                "account_id",
                "merchant_id",
                "amount_cents",
                "kind",
                "ts_ms",
            ],
            Table::Orders => &[
                "order_id",
                "customer_id",
                "status",
                "amount_cents",
                "updated_ms",
            ],
        };
        if let Some((column, _)) = present.iter().find(|(c, p)| *p && !own.contains(c)) {
            return Err(EnvelopeError::ForeignColumn {
                table: t,
                image,
                column,
            });
        }
        Ok(match table {
            Table::Accounts => Row::Account(Account {
                account_id: self.account_id.ok_or_else(|| missing("account_id"))?,
                customer_id: self.customer_id.ok_or_else(|| missing("customer_id"))?,
                balance_cents: self.balance_cents.ok_or_else(|| missing("balance_cents"))?,
                updated_ms: self.updated_ms.ok_or_else(|| missing("updated_ms"))?,
            }),
            Table::CardTransactions => Row::CardTransaction(CardTransaction {
                txn_id: self.txn_id.ok_or_else(|| missing("txn_id"))?,
                account_id: self.account_id.ok_or_else(|| missing("account_id"))?,
                merchant_id: self.merchant_id.ok_or_else(|| missing("merchant_id"))?,
                amount_cents: self.amount_cents.ok_or_else(|| missing("amount_cents"))?,
                kind: self.kind.ok_or_else(|| missing("kind"))?,
                ts_ms: self.ts_ms.ok_or_else(|| missing("ts_ms"))?,
            }),
            Table::Orders => Row::Order(Order {
                order_id: self.order_id.ok_or_else(|| missing("order_id"))?,
                customer_id: self.customer_id.ok_or_else(|| missing("customer_id"))?,
                status: self.status.ok_or_else(|| missing("status"))?,
                amount_cents: self.amount_cents.ok_or_else(|| missing("amount_cents"))?,
                updated_ms: self.updated_ms.ok_or_else(|| missing("updated_ms"))?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account_update(poison: bool, lsn: u64) -> Change {
        let row = |balance_cents, updated_ms| {
            Row::Account(Account {
                account_id: 7,
                customer_id: 7,
                balance_cents,
                updated_ms,
            })
        };
        Change {
            lsn,
            txid: 1,
            key: Key {
                table: Table::Accounts,
                id: 7,
            },
            op: Op::Update,
            before: Some(row(900, 0)),
            after: Some(row(650, 1200)),
            poison,
            shard: 0,
        }
    }

    /// The decoder remembers a block once, reads later envelopes that open with it without
    /// it, and falls back to a whole decode (with its error) when the rest is damaged.
    #[test]
    fn a_decoder_reads_past_a_block_it_has_met() {
        let mut decoder = EnvelopeDecoder::default();
        let first = encode_change(&account_update(false, 3), 10);
        assert_eq!(
            decoder.decode(&first).unwrap(),
            decode_change(&first).unwrap()
        );
        assert_eq!(decoder.known.len(), 1);
        let block = &decoder.known[0];
        assert!(first[SCHEMA_HEAD.len()..].starts_with(block));
        let second = encode_change(&account_update(false, 4), 20);
        assert_eq!(decoder.decode(&second).unwrap().lsn, 4);
        assert_eq!(&decoder.scratch[..10], br#"{"before":"#);
        assert_eq!(decoder.known.len(), 1, "a block is remembered once");
        let poison = encode_change(&account_update(true, 5), 30);
        let (fast, whole) = (decoder.decode(&poison), decode_change(&poison));
        assert_eq!(
            fast.unwrap_err().to_string(),
            whole.unwrap_err().to_string()
        );
        // Not the block as written (a space after the colon): decoded whole, not remembered.
        let spaced = [br#"{"schema": "#.as_slice(), &second[SCHEMA_HEAD.len()..]].concat();
        assert_eq!(decoder.decode(&spaced).unwrap().lsn, 4);
        assert_eq!(decoder.known.len(), 1);
    }

    #[test]
    fn encodes_the_documented_shape() {
        let text = String::from_utf8(encode_change(&account_update(false, 51), 1200)).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"schema":{"fields":[{"field":"account_id","optional":false,"type":"int64"},"#,
                r#"{"field":"customer_id","optional":false,"type":"int64"},"#,
                r#"{"field":"balance_cents","optional":false,"type":"int64"},"#,
                r#"{"field":"updated_ms","optional":false,"type":"int64"}],"#,
                r#""name":"bank.accounts","type":"struct","version":1},"#,
                r#""before":{"account_id":7,"customer_id":7,"balance_cents":900,"updated_ms":0},"after":{"account_id":7,"customer_id":7,"balance_cents":650,"updated_ms":1200},"op":"u","source":{"table":"accounts","lsn":51,"txId":1,"ts_ms":1200},"ts_ms":1200}"#
            )
        );
        let env = decode_change(text.as_bytes()).unwrap();
        assert_eq!(env.into_change(), account_update(false, 51));
    }

    /// A change in a shard names the shard as its table and decodes back into it; an unknown
    /// table name does not decode.
    #[test]
    fn a_shard_is_named_in_source_table_and_read_back() {
        let mut change = account_update(false, 52);
        change.shard = 3;
        let text = String::from_utf8(encode_change(&change, 1200)).unwrap();
        assert!(
            text.contains(r#""source":{"table":"accounts_3","#),
            "{text}"
        );
        let env = decode_change(text.as_bytes()).unwrap();
        assert_eq!((env.table, env.shard), (Table::Accounts, 3));
        assert_eq!(env.into_change(), change);
        let schemas = |t: &str| Ok(std::sync::Arc::new(parse_schema_block(t)?));
        let (by_schema, _) = decode_change_by_schema(text.as_bytes(), &mut { schemas }).unwrap();
        assert_eq!(by_schema.table, Table::Accounts);
        let stranger = text.replace("accounts_3", "ledger_3");
        assert!(decode_change(stranger.as_bytes()).is_err());
    }

    #[test]
    fn every_poison_form_is_rejected() {
        for lsn in 0..3 {
            let bytes = encode_change(&account_update(true, lsn), 5);
            assert!(decode_change(&bytes).is_err(), "lsn {lsn}");
        }
    }

    #[test]
    fn rows_are_checked_against_the_table() {
        let good = r#"{"before":null,"after":{"order_id":1,"customer_id":2,"status":"paid","amount_cents":5,"updated_ms":3},"op":"c","source":{"table":"orders","lsn":1,"txId":1,"ts_ms":3},"ts_ms":3}"#;
        assert!(decode_change(good.as_bytes()).is_ok());
        let as_accounts = good.replace("\"orders\"", "\"accounts\"");
        assert!(matches!(
            decode_change(as_accounts.as_bytes()),
            Err(EnvelopeError::ForeignColumn { .. })
        ));
        let no_status = good.replace("\"status\":\"paid\",", "");
        assert!(matches!(
            decode_change(no_status.as_bytes()),
            Err(EnvelopeError::MissingColumn {
                column: "status",
                ..
            })
        ));
        let as_update = good.replace("\"op\":\"c\"", "\"op\":\"u\"");
        assert!(matches!(
            decode_change(as_update.as_bytes()),
            Err(EnvelopeError::MissingImage {
                image: "before",
                ..
            })
        ));
        let unknown_table = good.replace("\"orders\"", "\"ledger\"");
        assert!(decode_change(unknown_table.as_bytes()).is_err());
        let mut mismatch = account_update(false, 2);
        if let Some(Row::Account(a)) = &mut mismatch.after {
            a.account_id = 8;
        }
        assert!(matches!(
            decode_change(&encode_change(&mismatch, 1)),
            Err(EnvelopeError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn boundaries_round_trip() {
        let begin = encode_begin(12, 40);
        assert_eq!(
            std::str::from_utf8(&begin).unwrap(),
            r#"{"status":"BEGIN","id":"12","event_count":null,"ts_ms":40}"#
        );
        let end = encode_end(12, 2, 40);
        assert_eq!(
            decode_boundary(&end).unwrap(),
            TxBoundary {
                status: TxStatus::End,
                txid: 12,
                event_count: Some(2),
                ts_ms: 40
            }
        );
        assert_eq!(decode_boundary(&begin).unwrap().event_count, None);
        let bad = br#"{"status":"END","id":"x","event_count":1,"ts_ms":1}"#;
        assert!(matches!(
            decode_boundary(bad),
            Err(EnvelopeError::BadTransactionId(_))
        ));
    }
}
