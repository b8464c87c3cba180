//! The standardize stage: decode a raw change envelope, validate it, and turn it into a
//! canonical record. What cannot be decoded is poison and goes to `critical`; so does a change
//! whose table schema changed in a way its output cannot carry (refused by the schema
//! registry, or without one, a column the canonical record needs dropped or retyped).

use crate::canonical::{Canonical, Encoder};
use crate::record::Record;
use crate::schema::{encode_standard, SchemaCache, WriterSchema};
use nrtsim_workloads::envelope::{decode_change_by_schema, parse_schema_block, EnvelopeDecoder};
use nrtsim_workloads::{Image, Key, Row, Table, TableSchema};
use std::sync::Arc;

/// Where a raw record goes after standardization.
#[derive(Debug, PartialEq, Eq)]
pub enum Standardized {
    /// A canonical record for `standard`.
    Standard(Record),
    /// A poison record for `critical`, with the reason.
    Poison(Record, String),
    /// A record whose table schema cannot be carried on (refused by the registry, or lacking
    /// a column the canonical record needs), for `critical`, with the reason.
    Rejected(Record, String),
}

/// Standardizes one raw record, reading its envelope with the task's `decoder`.
pub fn standardize(raw: &Record, decoder: &mut EnvelopeDecoder, enc: &mut Encoder) -> Standardized {
    match decoder.decode(&raw.value) {
        Ok(env) => {
            let canonical = Canonical {
                key: env.key(),
                op: env.op,
                row: env.after.map(Into::into),
                lsn: env.lsn,
                txid: env.txid,
            };
            Standardized::Standard(Record {
                key: raw.key,
                value: enc.canonical(&canonical),
                meta: raw.meta,
            })
        }
        Err(e) => match read_evolved(raw) {
            Some(Ok(canonical)) => Standardized::Standard(Record {
                key: raw.key,
                value: enc.canonical(&canonical),
                meta: raw.meta,
            }),
            Some(Err(why)) => Standardized::Rejected(raw.clone(), why),
            None => Standardized::Poison(raw.clone(), e.to_string()),
        },
    }
}

/// A change made under a later version of its table's schema, read without a registry into
/// the canonical record (whose columns are the table's first ones): an added column is left
/// out, a column the canonical record needs that was dropped or retyped makes it unreadable.
/// `None` when the envelope does not read by its own schema either (poison).
fn read_evolved(raw: &Record) -> Option<Result<Canonical, String>> {
    let (env, schema) =
        decode_change_by_schema(&raw.value, &mut |t| parse_schema_block(t).map(Arc::new)).ok()?;
    if schema.is_base() {
        return None;
    }
    let base = TableSchema::base(env.table);
    let typed = |image: &Image| -> Result<Row, String> {
        let mut m = image.clone();
        m.retain(|name, _| base.column(name).is_some());
        let v = serde_json::Value::Object(m);
        let row = match env.table {
            Table::Accounts => serde_json::from_value(v).map(Row::Account),
            Table::CardTransactions => serde_json::from_value(v).map(Row::CardTransaction),
            Table::Orders => serde_json::from_value(v).map(Row::Order),
        };
        row.map_err(|e| {
            format!(
                "{} schema version {} cannot be read as the canonical row: {e}",
                env.table.name(),
                schema.version
            )
        })
    };
    let after = match env.after.as_ref().map(typed).transpose() {
        Ok(a) => a,
        Err(why) => return Some(Err(why)),
    };
    let Some(id) = env.key_id() else {
        return Some(Err("the row has no key".into()));
    };
    Some(Ok(Canonical {
        key: Key {
            table: env.table,
            id,
        },
        op: env.op,
        row: after.map(Into::into),
        lsn: env.lsn,
        txid: env.txid,
    }))
}

/// Standardizes one raw record into the schema registry's wire format: the change is read by
/// the table schema its envelope carries, and written as Avro with the id the registry gave
/// that schema ([`crate::schema`]). `cache` must already hold the registry's answer for every
/// schema the record can carry (see the stream task's schema resolution).
pub fn standardize_avro(raw: &Record, cache: &SchemaCache, enc: &mut Encoder) -> Standardized {
    let mut schema_of = |text: &str| match cache.tables.get(text) {
        Some(t) => Ok(t.clone()),
        None => parse_schema_block(text).map(Arc::new),
    };
    let (env, table_schema) = match decode_change_by_schema(&raw.value, &mut schema_of) {
        Ok(decoded) => decoded,
        Err(e) => return Standardized::Poison(raw.clone(), e.to_string()),
    };
    match cache.writers.get(&env.schema) {
        Some(WriterSchema::Registered(id, writer)) => {
            match encode_standard(&env, &table_schema, writer, *id) {
                Ok(bytes) => Standardized::Standard(Record {
                    key: raw.key,
                    value: enc.with(|buf| buf.extend_from_slice(&bytes)),
                    meta: raw.meta,
                }),
                Err(e) => Standardized::Poison(raw.clone(), e.to_string()),
            }
        }
        Some(WriterSchema::Rejected(why)) => Standardized::Rejected(raw.clone(), why.clone()),
        None => Standardized::Poison(raw.clone(), "schema never resolved".into()),
    }
}
