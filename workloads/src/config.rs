//! The `[workload]` section of a scenario: what traffic the source database sees.

use crate::schema::DdlConfig;
use serde::{Deserialize, Serialize};

/// Which generator drives the source database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// Card payments: each one updates an account balance and inserts a card transaction.
    #[default]
    Card,
    /// Orders moving created → paid → shipped → delivered, or cancelled → refunded.
    Order,
    /// Both, interleaved.
    Mixed,
}

/// How the commit rate varies over the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateProfile {
    /// A constant rate.
    #[default]
    Steady,
    /// A day compressed into the run: a trough at the start and end, a peak in the middle.
    Diurnal,
    /// The base rate with periodic bursts at several times the base rate.
    Burst,
}

/// The `[workload]` section. Every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Which generator: `card`, `order` or `mixed`. Default `card`.
    pub kind: WorkloadKind,
    /// Source transactions per simulated second at the base rate. Default 1000.
    pub rate_per_s: u64,
    /// `steady`, `diurnal` or `burst`. Default `steady`.
    pub profile: RateProfile,
    /// Accounts (and customers) in the source database before the run. Default 10000.
    pub accounts: u64,
    /// Merchants in the reference store's first version. Default 1000.
    pub merchants: u64,
    /// Zipf exponent over accounts/customers; 0 is uniform. Default 1.1.
    pub key_skew: f64,
    /// Share of card payments at merchants the reference store does not know yet. Default 0.01.
    pub unknown_merchant_ratio: f64,
    /// Share of card payments at merchants no version of the reference store will ever know
    /// (an id mistyped at the terminal): they can only end in `critical`. Default 0.
    pub unresolvable_merchant_ratio: f64,
    /// Share of changes the CDC connector emits malformed. Default 0.0001.
    pub poison_ratio: f64,
    /// DDL statements run against the source during the run (`[[workload.ddl]]`). Default
    /// none.
    pub ddl: Vec<DdlConfig>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            kind: WorkloadKind::Card,
            rate_per_s: 1000,
            profile: RateProfile::Steady,
            accounts: 10_000,
            merchants: 1_000,
            key_skew: 1.1,
            unknown_merchant_ratio: 0.01,
            unresolvable_merchant_ratio: 0.0,
            poison_ratio: 0.0001,
            ddl: Vec::new(),
        }
    }
}
