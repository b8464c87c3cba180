//! The schema registry and the `standard` topic's Avro records.
//!
//! With a registry (`[pipeline.schema_registry]`), the standardize job writes each change to
//! `standard` as an Avro record in the Confluent wire format: a zero magic byte, the 4-byte
//! big-endian id of the schema it was written with, then the Avro body. The schema is derived
//! from the table schema the change's envelope carries and registered under the subject
//! `standard-bank.<table>` (Confluent's topic-and-record-name strategy); the registry refuses a
//! schema its subject's compatibility mode does not allow, and the change goes to `critical`.
//! The enrich job reads each record by the writer schema its id names, resolved to the schema
//! it was built for (a table's first version), as Avro schema resolution does: an added
//! nullable column is skipped, a column it needs and cannot find makes the record unreadable.
//!
//! [`Registry`] is the registry's state, rebuilt by replaying its `_schemas` topic;
//! [`SchemaCache`] is what a job keeps of it, as Confluent's serializers cache schemas.

use crate::canonical::{Canonical, RowBody};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::Schema;
use nrtsim_workloads::envelope::SchemaEnvelope;
use nrtsim_workloads::{Account, CardTransaction, ColumnType, Key, Op, Order, Table, TableSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The Confluent wire format's magic byte.
pub const MAGIC: u8 = 0;

/// A subject's compatibility mode: which new versions the registry accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    /// The new schema can read data written with the latest one (the registry's default).
    #[default]
    Backward,
    /// The latest schema can read data written with the new one.
    Forward,
    /// Both.
    Full,
    /// Anything goes.
    None,
}

impl Compatibility {
    /// The mode as the registry spells it.
    pub fn name(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::Forward => "FORWARD",
            Compatibility::Full => "FULL",
            Compatibility::None => "NONE",
        }
    }
}

/// Why the registry did not give an id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The schema breaks its subject's compatibility mode.
    #[error("{0}")]
    Incompatible(String),
    /// The schema text is not an Avro schema.
    #[error("invalid schema: {0}")]
    Invalid(String),
    /// No schema has this id.
    #[error("no schema has id {0}")]
    NotFound(u32),
    /// The registry could not be reached, or could not store the registration.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

/// One registration, as the registry stores it in `_schemas`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The subject.
    pub subject: String,
    /// The subject's version number (from 1).
    pub version: u32,
    /// The schema's global id.
    pub id: u32,
    /// The schema, as Avro JSON.
    pub schema: String,
}

/// What the registry decides about a schema offered for a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The subject already has this schema: its id.
    Existing(u32),
    /// A new version, to be stored before it is answered.
    New(Registration),
}

/// The registry's state: subjects, their versions, and schemas by id.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    mode: Compatibility,
    subjects: BTreeMap<String, Vec<(u32, Arc<Schema>)>>,
    by_id: BTreeMap<u32, (String, String)>,
}

impl Registry {
    /// An empty registry whose subjects use `mode`.
    pub fn new(mode: Compatibility) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// Decides about `schema` for `subject`: its id if the subject has it already, a new
    /// version if the mode allows it, or why not.
    pub fn decide(&self, subject: &str, schema: &str) -> Result<Decision, RegistryError> {
        let parsed =
            Schema::parse_str(schema).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let versions = self.subjects.get(subject);
        if let Some(versions) = versions {
            let form = parsed.canonical_form();
            if let Some((id, _)) = versions.iter().find(|(_, s)| s.canonical_form() == form) {
                return Ok(Decision::Existing(*id));
            }
            if let Some((latest_id, latest)) = versions.last() {
                let latest_version = versions.len();
                let check = match self.mode {
                    Compatibility::Backward => SchemaCompatibility::can_read(latest, &parsed),
                    Compatibility::Forward => SchemaCompatibility::can_read(&parsed, latest),
                    Compatibility::Full => SchemaCompatibility::mutual_read(latest, &parsed),
                    Compatibility::None => Ok(()),
                };
                if let Err(e) = check {
                    // The checker nests its reasons field by field: name them all.
                    let mut why = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        why.push_str(": ");
                        why.push_str(&c.to_string());
                        cause = c.source();
                    }
                    let diff = field_changes(latest, &parsed);
                    return Err(RegistryError::Incompatible(format!(
                        "subject {subject}: new schema is not {} compatible with version \
                         {latest_version} (id {latest_id}) ({diff}): {why}",
                        self.mode.name()
                    )));
                }
            }
        }
        let id = self.by_id.keys().next_back().map_or(1, |id| id + 1);
        Ok(Decision::New(Registration {
            subject: subject.to_string(),
            version: versions.map_or(1, |v| v.len() as u32 + 1),
            id,
            schema: schema.to_string(),
        }))
    }

    /// Takes in a stored registration (after its write, or replayed from `_schemas`); one
    /// already known changes nothing.
    pub fn apply(&mut self, reg: &Registration) {
        if self.by_id.contains_key(&reg.id) {
            return;
        }
        let Ok(parsed) = Schema::parse_str(&reg.schema) else {
            return;
        };
        let versions = self.subjects.entry(reg.subject.clone()).or_default();
        if versions.len() + 1 == reg.version as usize {
            versions.push((reg.id, Arc::new(parsed)));
            self.by_id
                .insert(reg.id, (reg.subject.clone(), reg.schema.clone()));
        }
    }

    /// The schema with id `id`, as Avro JSON.
    pub fn schema(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(|(_, s)| s.as_str())
    }

    /// Every subject with its number of versions.
    pub fn subjects(&self) -> impl Iterator<Item = (&str, usize)> {
        self.subjects.iter().map(|(s, v)| (s.as_str(), v.len()))
    }
}

/// Every leaf field of a schema, by its dotted path (records nested in unions included),
/// with its type in words.
fn leaf_fields(schema: &Schema, prefix: &str, out: &mut BTreeMap<String, String>) {
    match schema {
        Schema::Record(r) => {
            for f in &r.fields {
                let path = if prefix.is_empty() {
                    f.name.clone()
                } else {
                    format!("{prefix}.{}", f.name)
                };
                match &f.schema {
                    Schema::Record(_) => leaf_fields(&f.schema, &path, out),
                    Schema::Union(u)
                        if u.variants().iter().any(|v| matches!(v, Schema::Record(_))) =>
                    {
                        leaf_fields(&f.schema, &path, out)
                    }
                    other => {
                        out.insert(path, type_words(other));
                    }
                }
            }
        }
        Schema::Union(u) => {
            for v in u.variants() {
                leaf_fields(v, prefix, out);
            }
        }
        _ => {}
    }
}

fn type_words(schema: &Schema) -> String {
    match schema {
        Schema::Union(u) => u
            .variants()
            .iter()
            .map(type_words)
            .collect::<Vec<_>>()
            .join("|"),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// What changed between two versions of a subject's schema, field by field.
fn field_changes(old: &Schema, new: &Schema) -> String {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaf_fields(old, "", &mut a);
    leaf_fields(new, "", &mut b);
    let mut changes = Vec::new();
    for (path, ty) in &a {
        match b.get(path) {
            None => changes.push(format!("{path} removed")),
            Some(t) if t != ty => changes.push(format!("{path} {ty} -> {t}")),
            Some(_) => {}
        }
    }
    for (path, ty) in &b {
        if !a.contains_key(path) {
            changes.push(format!("{path} added as {ty}"));
        }
    }
    if changes.is_empty() {
        "no field changed".into()
    } else {
        changes.join(", ")
    }
}

/// The subject a table's changes are registered under in `standard`.
pub fn subject_for(table: Table) -> String {
    format!("standard-bank.{}", table.name())
}

/// The Avro schema of `standard` records for a table at `schema`: the change's op, row id,
/// LSN and transaction, and the row after the change (null for a delete). Optional columns
/// are nullable with a null default.
pub fn avro_schema_for(schema: &TableSchema) -> String {
    let table = schema.table.name();
    let fields: Vec<serde_json::Value> = schema
        .columns
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Long => "long",
                ColumnType::String => "string",
            };
            if c.optional {
                serde_json::json!({"name": c.name, "type": ["null", ty], "default": null})
            } else {
                serde_json::json!({"name": c.name, "type": ty})
            }
        })
        .collect();
    serde_json::json!({
        "type": "record",
        "name": format!("{table}_change"),
        "namespace": "bank.standard",
        "fields": [
            {"name": "op", "type": "string"},
            {"name": "id", "type": "long"},
            {"name": "lsn", "type": "long"},
            {"name": "txid", "type": "long"},
            {"name": "row", "type": ["null", {
                "type": "record",
                "name": table,
                "fields": fields,
            }], "default": null},
        ],
    })
    .to_string()
}

/// Why a `standard` record could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AvroError(pub String);

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Create => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Read => "r",
    }
}

/// Encodes a change in the Confluent wire format with the registered schema `id`.
pub fn encode_standard(
    env: &SchemaEnvelope,
    table_schema: &TableSchema,
    writer: &Schema,
    id: u32,
) -> Result<Vec<u8>, AvroError> {
    let row = match &env.after {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(image) => {
            let mut fields = Vec::with_capacity(table_schema.columns.len());
            for c in &table_schema.columns {
                let v = match image.get(&c.name) {
                    None | Some(serde_json::Value::Null) => Value::Null,
                    Some(serde_json::Value::String(s)) => Value::String(s.clone()),
                    Some(v) => Value::Long(
                        v.as_i64()
                            .ok_or_else(|| AvroError(format!("column {} is not a long", c.name)))?,
                    ),
                };
                let v = if c.optional {
                    match v {
                        Value::Null => Value::Union(0, Box::new(Value::Null)),
                        v => Value::Union(1, Box::new(v)),
                    }
                } else {
                    v
                };
                fields.push((c.name.clone(), v));
            }
            Value::Union(1, Box::new(Value::Record(fields)))
        }
    };
    let id_col = env
        .key_id()
        .ok_or_else(|| AvroError("the row has no key".into()))?;
    let value = Value::Record(vec![
        ("op".into(), Value::String(op_name(env.op).into())),
        ("id".into(), Value::Long(id_col as i64)),
        ("lsn".into(), Value::Long(env.lsn as i64)),
        ("txid".into(), Value::Long(env.txid as i64)),
        ("row".into(), row),
    ]);
    let body = apache_avro::to_avro_datum(writer, value).map_err(|e| AvroError(e.to_string()))?;
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The schema id a `standard` record names, if it is in the Confluent wire format.
pub fn schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Reads a `standard` record written with `writer` through `reader` (the schema the reading
/// job was built for), into the canonical change.
pub fn decode_standard(
    bytes: &[u8],
    table: Table,
    writer: &Schema,
    reader: &Schema,
) -> Result<Canonical, AvroError> {
    let err = |e: apache_avro::Error| AvroError(e.to_string());
    let mut body = bytes
        .get(5..)
        .ok_or_else(|| AvroError("record cut short".into()))?;
    let value = apache_avro::from_avro_datum(writer, &mut body, Some(reader)).map_err(err)?;
    let Value::Record(fields) = value else {
        return Err(AvroError("not a record".into()));
    };
    let fields: BTreeMap<String, Value> = fields.into_iter().collect();
    let long = |f: &BTreeMap<String, Value>, name: &str| -> Result<i64, AvroError> {
        match f.get(name) {
            Some(Value::Long(n)) => Ok(*n),
            Some(Value::Union(_, v)) => match v.as_ref() {
                Value::Long(n) => Ok(*n),
                _ => Err(AvroError(format!("field {name} is not a long"))),
            },
            _ => Err(AvroError(format!("field {name} is missing"))),
        }
    };
    let string = |f: &BTreeMap<String, Value>, name: &str| -> Result<String, AvroError> {
        match f.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(AvroError(format!("field {name} is not a string"))),
        }
    };
    let op = match string(&fields, "op")?.as_str() {
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "r" => Op::Read,
        other => return Err(AvroError(format!("unknown op {other}"))),
    };
    let row = match fields.get("row") {
        Some(Value::Union(_, v)) => match v.as_ref() {
            Value::Null => None,
            Value::Record(cols) => {
                let c: BTreeMap<String, Value> = cols.iter().cloned().collect();
                let enum_of = |name: &str| -> Result<serde_json::Value, AvroError> {
                    Ok(serde_json::Value::String(string(&c, name)?))
                };
                let u = |name: &str| long(&c, name).map(|n| n as u64);
                Some(match table {
                    Table::Accounts => RowBody::Account(Account {
                        account_id: u("account_id")?,
                        customer_id: u("customer_id")?,
                        balance_cents: long(&c, "balance_cents")?,
                        updated_ms: u("updated_ms")?,
                    }),
                    Table::CardTransactions => RowBody::CardTransaction(CardTransaction {
                        txn_id: u("txn_id")?,
                        account_id: u("account_id")?,
                        merchant_id: u("merchant_id")?,
                        amount_cents: long(&c, "amount_cents")?,
                        kind: serde_json::from_value(enum_of("kind")?)
                            .map_err(|e| AvroError(e.to_string()))?,
                        ts_ms: u("ts_ms")?,
                    }),
                    Table::Orders => RowBody::Order(Order {
                        order_id: u("order_id")?,
                        customer_id: u("customer_id")?,
                        status: serde_json::from_value(enum_of("status")?)
                            .map_err(|e| AvroError(e.to_string()))?,
                        amount_cents: long(&c, "amount_cents")?,
                        updated_ms: u("updated_ms")?,
                    }),
                })
            }
            _ => return Err(AvroError("row is not a record".into())),
        },
        _ => return Err(AvroError("field row is missing".into())),
    };
    Ok(Canonical {
        key: Key {
            table,
            id: long(&fields, "id")? as u64,
        },
        op,
        row,
        lsn: long(&fields, "lsn")? as u64,
        txid: long(&fields, "txid")? as u64,
    })
}

/// What a standardize task knows of one table schema it met in an envelope.
#[derive(Clone, Debug)]
pub enum WriterSchema {
    /// Registered: its id and parsed Avro schema.
    Registered(u32, Arc<Schema>),
    /// Refused by the registry, with its reason.
    Rejected(String),
}

/// What a job keeps of the registry: the table schemas it met and what the registry said
/// about each (standardize), and writer schemas by id (enrich). Only what is not here is
/// asked of the registry, so a registry outage stops only new schemas.
#[derive(Clone, Debug, Default)]
pub struct SchemaCache {
    /// Table schemas by the text of their envelope block.
    pub tables: BTreeMap<String, Arc<TableSchema>>,
    /// The registry's answer per table schema (keyed like `tables`).
    pub writers: BTreeMap<String, WriterSchema>,
    /// Writer schemas by id, with their table (or why the id cannot be read).
    pub by_id: BTreeMap<u32, Result<(Table, Arc<Schema>), String>>,
    /// The schema each table's reader was built for.
    readers: BTreeMap<Table, Arc<Schema>>,
}

impl SchemaCache {
    /// The reader schema for `table`: the `standard` schema of its first version.
    pub fn reader(&mut self, table: Table) -> Arc<Schema> {
        self.readers
            .entry(table)
            .or_insert_with(|| {
                let text = avro_schema_for(&TableSchema::base(table));
                Arc::new(Schema::parse_str(&text).expect("the built-in schema parses"))
            })
            .clone()
    }

    /// The table a writer schema describes, from its record name.
    pub fn table_of(schema: &Schema) -> Option<Table> {
        match schema {
            Schema::Record(r) => r
                .name
                .name
                .strip_suffix("_change")
                .and_then(Table::from_name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nrtsim_workloads::{parse_schema_block, DdlChange};

    fn avro(t: &TableSchema) -> String {
        avro_schema_for(t)
    }

    fn evolve(change: DdlChange) -> TableSchema {
        TableSchema::base(Table::CardTransactions)
            .apply(&change)
            .unwrap()
    }

    fn added() -> TableSchema {
        evolve(DdlChange::AddColumn {
            column: "channel".into(),
            ty: ColumnType::String,
        })
    }

    fn dropped() -> TableSchema {
        evolve(DdlChange::DropColumn {
            column: "ts_ms".into(),
        })
    }

    fn retyped() -> TableSchema {
        evolve(DdlChange::RetypeColumn {
            column: "amount_cents".into(),
            ty: ColumnType::String,
        })
    }

    fn register(r: &mut Registry, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        match r.decide(subject, schema)? {
            Decision::Existing(id) => Ok(id),
            Decision::New(reg) => {
                r.apply(&reg);
                Ok(reg.id)
            }
        }
    }

    #[test]
    fn compatibility_modes_decide_as_avro_resolution_does() {
        let base = avro(&TableSchema::base(Table::CardTransactions));
        let s = "standard-bank.card_transactions";
        for (mode, add, drop, retype) in [
            (Compatibility::Backward, true, true, false),
            (Compatibility::Forward, true, false, false),
            (Compatibility::Full, true, false, false),
            (Compatibility::None, true, true, true),
        ] {
            for (next, ok) in [(added(), add), (dropped(), drop), (retyped(), retype)] {
                let mut r = Registry::new(mode);
                assert_eq!(register(&mut r, s, &base), Ok(1));
                let got = register(&mut r, s, &avro(&next));
                assert_eq!(got.is_ok(), ok, "{mode:?} v{next:?}: {got:?}");
                if let Err(RegistryError::Incompatible(why)) = got {
                    assert!(why.contains(mode.name()), "{why}");
                    assert!(
                        why.contains("row.ts_ms removed")
                            || why.contains("row.amount_cents long -> string"),
                        "{why}"
                    );
                }
            }
        }
    }

    #[test]
    fn registering_again_gives_the_same_id_and_ids_are_global() {
        let mut r = Registry::new(Compatibility::Backward);
        let card = avro(&TableSchema::base(Table::CardTransactions));
        let acct = avro(&TableSchema::base(Table::Accounts));
        assert_eq!(register(&mut r, "a", &card), Ok(1));
        assert_eq!(register(&mut r, "b", &acct), Ok(2));
        assert_eq!(register(&mut r, "a", &card), Ok(1));
        assert_eq!(register(&mut r, "a", &avro(&added())), Ok(3));
        assert_eq!(r.subjects().collect::<Vec<_>>(), vec![("a", 2), ("b", 1)]);
        // Replaying the same registrations (from `_schemas`) changes nothing.
        let Decision::New(reg) = r.decide("c", &acct).unwrap() else {
            panic!("new subject")
        };
        r.apply(&reg);
        r.apply(&reg);
        assert_eq!(r.subjects().count(), 3);
        assert!(r.schema(4).is_some());
    }

    #[test]
    fn a_record_round_trips_and_an_added_column_is_skipped_by_the_reader() {
        let change = |t: &TableSchema| {
            let mut after = serde_json::Map::new();
            for (k, v) in [
                ("txn_id", serde_json::json!(9)),
                ("account_id", serde_json::json!(4)),
                ("merchant_id", serde_json::json!(12)),
                ("amount_cents", serde_json::json!(-250)),
                ("kind", serde_json::json!("capture")),
                ("ts_ms", serde_json::json!(77)),
            ] {
                after.insert(k.into(), v);
            }
            let image = t.shape(after);
            let serde_json::Value::Object(image) = image else {
                unreachable!()
            };
            SchemaEnvelope {
                op: Op::Create,
                table: Table::CardTransactions,
                lsn: 31,
                txid: 5,
                schema: t.envelope_json().get().to_string(),
                before: None,
                after: Some(image),
            }
        };
        let mut cache = SchemaCache::default();
        let reader = cache.reader(Table::CardTransactions);
        for t in [TableSchema::base(Table::CardTransactions), added()] {
            let text = avro(&t);
            let writer = Schema::parse_str(&text).unwrap();
            assert_eq!(
                SchemaCache::table_of(&writer),
                Some(Table::CardTransactions)
            );
            let bytes = encode_standard(&change(&t), &t, &writer, 7).unwrap();
            assert_eq!(schema_id(&bytes), Some(7));
            let c = decode_standard(&bytes, Table::CardTransactions, &writer, &reader).unwrap();
            assert_eq!(c.lsn, 31);
            assert_eq!(c.key.id, 9);
            let Some(RowBody::CardTransaction(row)) = c.row else {
                panic!("a card transaction")
            };
            assert_eq!(row.amount_cents, -250);
        }
        // A column the reader needs is gone: the record cannot be read.
        let t = dropped();
        let writer = Schema::parse_str(&avro(&t)).unwrap();
        let bytes = encode_standard(&change(&t), &t, &writer, 8).unwrap();
        assert!(decode_standard(&bytes, Table::CardTransactions, &writer, &reader).is_err());
        // The envelope's block parses back to the same table schema.
        assert_eq!(parse_schema_block(t.envelope_json().get()).unwrap(), t);
    }
}
