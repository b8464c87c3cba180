//! Table schemas and DDL: the columns each source table has, and how scheduled DDL changes
//! them during a run. The CDC connector writes the schema a change was made under into its
//! envelope (as Debezium's JSON converter does with schemas enabled), so the standardize job
//! reads every change by the schema of its own time, never by a guess from its shape.
//!
//! DDL is kept to what a bank's DBAs actually run against a live table: a nullable column added
//! (the application does not write it yet, so its value is null), a column dropped, and a
//! `long` column retyped to `string` (an amount moved to a decimal string). The key column can
//! be neither dropped nor retyped. Besides these, a table can be sharded on: `CREATE TABLE
//! <table>_<n> LIKE <table>` makes a new shard with the same columns, and rows inserted from
//! then on go to it (a monthly shard of a transactions table, say); rows already written stay
//! where they are. Shards share their table's schema.

use crate::change::Table;
use crate::duration::SimDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A column's type, as the change envelope's schema names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// A 64-bit integer (`int64` in the envelope's schema, `long` in Avro).
    Long,
    /// Text.
    String,
}

impl ColumnType {
    /// The type's name in the envelope's schema block.
    pub fn envelope_name(self) -> &'static str {
        match self {
            ColumnType::Long => "int64",
            ColumnType::String => "string",
        }
    }

    /// The type named `name` in an envelope's schema block.
    pub fn from_envelope_name(name: &str) -> Option<Self> {
        match name {
            "int64" => Some(ColumnType::Long),
            "string" => Some(ColumnType::String),
            _ => None,
        }
    }
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it may be null.
    pub optional: bool,
}

/// A table's columns at one version of its schema.
#[derive(Clone, Debug)]
pub struct TableSchema {
    /// The table.
    pub table: Table,
    /// 1 for the table as the run starts; one more after each DDL statement on it.
    pub version: u32,
    /// The columns, in order.
    pub columns: Vec<Column>,
    /// The schema block the connector writes into each envelope.
    json: Box<serde_json::value::RawValue>,
}

impl TableSchema {
    /// Builds a schema and renders its envelope block.
    pub fn new(table: Table, version: u32, columns: Vec<Column>) -> Self {
        let fields: Vec<serde_json::Value> = columns
            .iter()
            .map(|c| {
                serde_json::json!({
                    "field": c.name,
                    "type": c.ty.envelope_name(),
                    "optional": c.optional,
                })
            })
            .collect();
        let json = serde_json::json!({
            "type": "struct",
            "name": format!("bank.{}", table.name()),
            "version": version,
            "fields": fields,
        })
        .to_string();
        let json = serde_json::value::RawValue::from_string(json).expect("rendered as JSON");
        Self {
            table,
            version,
            columns,
            json,
        }
    }

    /// The table's columns as the run starts: the ones its row type has.
    pub fn base(table: Table) -> Self {
        let long = |name: &str| Column {
            name: name.to_string(),
            ty: ColumnType::Long,
            optional: false,
        };
        let string = |name: &str| Column {
            name: name.to_string(),
            ty: ColumnType::String,
            optional: false,
        };
        let columns = match table {
            Table::Accounts => vec![
                long("account_id"),
                long("customer_id"),
                long("balance_cents"),
                long("updated_ms"),
            ],
            Table::CardTransactions => vec![
                long("txn_id"),
                long("account_id"),
                long("merchant_id"),
                long("amount_cents"),
                string("kind"),
                long("ts_ms"),
            ],
            Table::Orders => vec![
                long("order_id"),
                long("customer_id"),
                string("status"),
                long("amount_cents"),
                long("updated_ms"),
            ],
        };
        Self::new(table, 1, columns)
    }

    /// The primary-key column.
    pub fn key_column(table: Table) -> &'static str {
        match table {
            Table::Accounts => "account_id",
            Table::CardTransactions => "txn_id",
            Table::Orders => "order_id",
        }
    }

    /// The schema block for the envelope.
    pub fn envelope_json(&self) -> &serde_json::value::RawValue {
        &self.json
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether this is the table's schema as the run starts (rows can be written directly from
    /// their typed form).
    pub fn is_base(&self) -> bool {
        self.version == 1
    }

    /// The schema after `change`, or why the change cannot apply.
    pub fn apply(&self, change: &DdlChange) -> Result<TableSchema, String> {
        let mut columns = self.columns.clone();
        let key = Self::key_column(self.table);
        let table = self.table.name();
        match change {
            DdlChange::AddColumn { column, ty } => {
                if self.column(column).is_some() {
                    return Err(format!("table {table} already has a column `{column}`"));
                }
                columns.push(Column {
                    name: column.clone(),
                    ty: *ty,
                    optional: true,
                });
            }
            DdlChange::DropColumn { column } => {
                if column == key {
                    return Err(format!("`{column}` is the key of table {table}"));
                }
                let before = columns.len();
                columns.retain(|c| &c.name != column);
                if columns.len() == before {
                    return Err(format!("table {table} has no column `{column}`"));
                }
            }
            DdlChange::RetypeColumn { column, ty } => {
                if column == key {
                    return Err(format!("`{column}` is the key of table {table}"));
                }
                let c = columns
                    .iter_mut()
                    .find(|c| &c.name == column)
                    .ok_or_else(|| format!("table {table} has no column `{column}`"))?;
                if c.ty == *ty {
                    return Err(format!("column `{column}` is already of type {ty:?}"));
                }
                if *ty != ColumnType::String {
                    return Err(format!(
                        "only a retype to `string` is modelled (column `{column}`)"
                    ));
                }
                c.ty = *ty;
            }
        }
        Ok(TableSchema::new(self.table, self.version + 1, columns))
    }

    /// Shapes a row image (a JSON object of the table's base columns) to this schema: added
    /// columns are null, dropped ones are gone, retyped ones are written as text.
    pub fn shape(
        &self,
        mut image: serde_json::Map<String, serde_json::Value>,
    ) -> serde_json::Value {
        image.retain(|name, _| self.column(name).is_some());
        for c in &self.columns {
            match image.get_mut(&c.name) {
                None => {
                    image.insert(c.name.clone(), serde_json::Value::Null);
                }
                Some(v) => {
                    if c.ty == ColumnType::String && !v.is_string() && !v.is_null() {
                        *v = serde_json::Value::String(v.to_string());
                    }
                }
            }
        }
        serde_json::Value::Object(image)
    }
}

impl PartialEq for TableSchema {
    fn eq(&self, other: &Self) -> bool {
        self.table == other.table && self.version == other.version && self.columns == other.columns
    }
}

impl Eq for TableSchema {}

/// What one DDL statement does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DdlChange {
    /// `ALTER TABLE … ADD COLUMN c T NULL`: a nullable column no row has a value in yet.
    AddColumn {
        /// The new column.
        column: String,
        /// Its type.
        ty: ColumnType,
    },
    /// `ALTER TABLE … DROP COLUMN c`.
    DropColumn {
        /// The dropped column.
        column: String,
    },
    /// `ALTER TABLE … MODIFY c T`: a `long` column becomes a `string`.
    RetypeColumn {
        /// The retyped column.
        column: String,
        /// Its new type (`string`).
        ty: ColumnType,
    },
}

/// The kind of a `[[workload.ddl]]` statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DdlKind {
    /// Add a nullable column (needs `type`).
    AddColumn,
    /// Drop a column.
    DropColumn,
    /// Change a column's type (needs `type`).
    RetypeColumn,
    /// Create the table's next shard, `<table>_<n>`; new rows are inserted there.
    CreateShard,
}

/// One `[[workload.ddl]]` entry: a DDL statement run against the source at a set time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdlConfig {
    /// When the statement runs, from the start of the run; changes committed from then on are
    /// written under the new schema.
    pub at: SimDuration,
    /// The table: `accounts`, `card_transactions` or `orders`.
    pub table: Table,
    /// `add-column`, `drop-column`, `retype-column` or `create-shard`.
    pub change: DdlKind,
    /// The column it adds, drops or retypes (not for `create-shard`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub column: String,
    /// The added column's type, or the retyped column's new one: `long` or `string`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<ColumnType>,
}

impl DdlConfig {
    /// The column statement this entry describes (`None` for `create-shard`, which leaves
    /// the columns alone), or what it lacks.
    pub fn statement(&self) -> Result<Option<DdlChange>, String> {
        let column = self.column.clone();
        let named = |what: &str| {
            if column.is_empty() {
                Err(format!("{what} needs a `column`"))
            } else {
                Ok(column.clone())
            }
        };
        let ty = |what: &str| self.ty.ok_or_else(|| format!("{what} needs a `type`"));
        Ok(Some(match self.change {
            DdlKind::AddColumn => DdlChange::AddColumn {
                column: named("add-column")?,
                ty: ty("add-column")?,
            },
            DdlKind::DropColumn => DdlChange::DropColumn {
                column: named("drop-column")?,
            },
            DdlKind::RetypeColumn => DdlChange::RetypeColumn {
                column: named("retype-column")?,
                ty: ty("retype-column")?,
            },
            DdlKind::CreateShard => {
                if !column.is_empty() || self.ty.is_some() {
                    return Err("create-shard takes no `column` or `type`".to_string());
                }
                return Ok(None);
            }
        }))
    }
}

/// Every table's schema versions over the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaTimeline {
    versions: BTreeMap<Table, Vec<(u64, Arc<TableSchema>)>>,
}

impl Default for SchemaTimeline {
    fn default() -> Self {
        Self::new(&[]).expect("no DDL always applies")
    }
}

impl SchemaTimeline {
    /// The timeline `ddl` makes; the error names the entry (by index) that cannot apply.
    pub fn new(ddl: &[DdlConfig]) -> Result<Self, (usize, String)> {
        let mut versions: BTreeMap<Table, Vec<(u64, Arc<TableSchema>)>> = Table::ALL
            .into_iter()
            .map(|t| (t, vec![(0, Arc::new(TableSchema::base(t)))]))
            .collect();
        let mut order: Vec<(usize, &DdlConfig)> = ddl.iter().enumerate().collect();
        order.sort_by_key(|(i, d)| (d.at.ms(), *i));
        for (i, d) in order {
            let list = versions.get_mut(&d.table).expect("every table has a base");
            let (_, current) = list.last().expect("every table has a base");
            let Some(change) = d.statement().map_err(|e| (i, e))? else {
                // A new shard has its table's columns.
                continue;
            };
            let next = current.apply(&change).map_err(|e| (i, e))?;
            list.push((d.at.ms(), Arc::new(next)));
        }
        Ok(Self { versions })
    }

    /// The schema `table` has for a change committed at `commit_ms`.
    pub fn at(&self, table: Table, commit_ms: u64) -> &Arc<TableSchema> {
        let list = &self.versions[&table];
        let i = list.partition_point(|(from, _)| *from <= commit_ms);
        &list[i.saturating_sub(1)].1
    }

    /// Whether any DDL runs.
    pub fn has_ddl(&self) -> bool {
        self.versions.values().any(|v| v.len() > 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddl(at_s: u64, table: Table, change: DdlChange) -> DdlConfig {
        let (change, column, ty) = match change {
            DdlChange::AddColumn { column, ty } => (DdlKind::AddColumn, column, Some(ty)),
            DdlChange::DropColumn { column } => (DdlKind::DropColumn, column, None),
            DdlChange::RetypeColumn { column, ty } => (DdlKind::RetypeColumn, column, Some(ty)),
        };
        DdlConfig {
            at: SimDuration::from_ms(at_s * 1000),
            table,
            change,
            column,
            ty,
        }
    }

    #[test]
    fn timeline_moves_a_table_through_its_versions() {
        let t = SchemaTimeline::new(&[
            ddl(
                20,
                Table::Accounts,
                DdlChange::AddColumn {
                    column: "nickname".into(),
                    ty: ColumnType::String,
                },
            ),
            ddl(
                40,
                Table::Accounts,
                DdlChange::DropColumn {
                    column: "updated_ms".into(),
                },
            ),
        ])
        .unwrap();
        assert!(t.has_ddl());
        assert_eq!(t.at(Table::Accounts, 19_999).version, 1);
        let v2 = t.at(Table::Accounts, 20_000);
        assert_eq!(v2.version, 2);
        assert!(v2.column("nickname").unwrap().optional);
        let v3 = t.at(Table::Accounts, 60_000);
        assert_eq!(v3.version, 3);
        assert!(v3.column("updated_ms").is_none());
        assert_eq!(t.at(Table::Orders, 60_000).version, 1);
        assert!(v3.envelope_json().get().contains("\"nickname\""));
    }

    #[test]
    fn ddl_that_cannot_apply_is_named() {
        let err = SchemaTimeline::new(&[ddl(
            5,
            Table::CardTransactions,
            DdlChange::DropColumn {
                column: "txn_id".into(),
            },
        )])
        .unwrap_err();
        assert_eq!(err.0, 0);
        assert!(err.1.contains("key"), "{}", err.1);
        let err = SchemaTimeline::new(&[ddl(
            5,
            Table::Orders,
            DdlChange::RetypeColumn {
                column: "status".into(),
                ty: ColumnType::String,
            },
        )])
        .unwrap_err();
        assert!(err.1.contains("already"), "{}", err.1);
    }
}
