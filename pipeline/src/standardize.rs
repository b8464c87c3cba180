//! The standardize stage: decode a raw change envelope, validate it, and turn it into a
//! canonical record. What cannot be decoded is poison and goes to `critical`.

use crate::canonical::{Canonical, Encoder};
use crate::record::Record;
use nrtsim_workloads::envelope::decode_change;

/// Where a raw record goes after standardization.
#[derive(Debug, PartialEq, Eq)]
pub enum Standardized {
    /// A canonical record for `standard`.
    Standard(Record),
    /// A poison record for `critical`, with the reason.
    Poison(Record, String),
}

/// Standardizes one raw record.
pub fn standardize(raw: &Record, enc: &mut Encoder) -> Standardized {
    match decode_change(&raw.value) {
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
        Err(e) => Standardized::Poison(raw.clone(), e.to_string()),
    }
}
