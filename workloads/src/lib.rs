//! Seeded workloads for nrtsim: the change model that every stage speaks, the card and order
//! generators, the merchant reference data and the rate profiles. Everything here is a pure
//! function of its configuration and seed.

pub mod change;
pub mod config;
pub mod duration;
pub mod envelope;
pub mod gen;
pub mod generator;
pub mod profile;
pub mod reference;
pub mod rng;
pub mod schema;
pub mod zipf;

pub use change::{
    Account, CardTransaction, CardTxnKind, Change, Key, Op, Order, OrderStatus, Row, Table,
    Transaction,
};
pub use config::{RateProfile, WorkloadConfig, WorkloadKind};
pub use duration::SimDuration;
pub use envelope::{
    decode_boundary, decode_change, decode_change_by_schema, encode_begin, encode_begin_into,
    encode_change, encode_change_into, encode_end, encode_end_into, parse_schema_block, Envelope,
    EnvelopeDecoder, EnvelopeError, Image, SchemaEnvelope, TxBoundary, TxStatus,
};
pub use gen::write_jsonl;
pub use generator::Workload;
pub use profile::CommitClock;
pub use reference::{Merchant, ReferenceData};
pub use rng::SeedTree;
pub use schema::{Column, ColumnType, DdlChange, DdlConfig, DdlKind, SchemaTimeline, TableSchema};
pub use zipf::Zipf;
