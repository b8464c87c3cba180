//! The enrich stage: look each card transaction's merchant up in a local, versioned reference
//! store. A miss goes to `redo` with an attempt counter and is replayed when a newer store
//! version is swapped in; after too many attempts the record goes to `critical`.

use crate::canonical::{decode, Canonical, Encoder, Enriched, MerchantInfo, RowBody};
use crate::record::Record;
use nrtsim_workloads::reference::ReferenceData;
use std::rc::Rc;

/// A local reference store: one version of the merchant catalogue, rebuilt on an interval and
/// swapped in whole.
#[derive(Clone)]
pub struct ReferenceStore {
    data: Rc<ReferenceData>,
    version: u32,
    refresh_ms: u64,
}

impl ReferenceStore {
    /// A store over `data`, bootstrapped at version 0, rebuilt every `refresh_ms`.
    pub fn new(data: Rc<ReferenceData>, refresh_ms: u64) -> Self {
        Self {
            data,
            version: 0,
            refresh_ms: refresh_ms.max(1),
        }
    }

    /// The version now loaded.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Swaps in the version due at `now_ms`; returns true if a newer version was loaded.
    pub fn refresh(&mut self, now_ms: u64) -> bool {
        let due = u32::try_from(now_ms / self.refresh_ms).unwrap_or(u32::MAX);
        if due > self.version {
            self.version = due;
            true
        } else {
            false
        }
    }

    /// The merchant's reference data in the loaded version.
    pub fn lookup(&self, merchant_id: u64) -> Option<MerchantInfo> {
        self.data
            .lookup(self.version, merchant_id)
            .map(|m| MerchantInfo {
                name: m.name.clone(),
                brand: m.brand.clone(),
                category: m.category.clone(),
            })
    }
}

/// Where a standard (or redo) record goes after enrichment.
#[derive(Debug, PartialEq, Eq)]
pub enum EnrichOutcome {
    /// Enriched: to `enriched`.
    Enriched(Record),
    /// The lookup missed: to `redo`, with its attempt counter.
    Redo(Record),
    /// Out of attempts, or unreadable: to `critical`, with the reason.
    Critical(Record, String),
}

/// Enriches one record. `replayed` says it was read back from `redo`: a miss then counts as
/// one more redo attempt, and at `max_attempts` the record goes to `critical`. `None` means no
/// bound (a record that never resolves then cycles forever).
pub fn enrich(
    input: &Record,
    store: &ReferenceStore,
    replayed: bool,
    max_attempts: Option<u32>,
    enc: &mut Encoder,
) -> EnrichOutcome {
    let change: Canonical = match decode(&input.value) {
        Ok(c) => c,
        Err(e) => return EnrichOutcome::Critical(input.clone(), e.to_string()),
    };
    enrich_change(input, change, store, replayed, max_attempts, enc)
}

/// Enriches one record already read into its canonical change (see [`enrich`]).
pub fn enrich_change(
    input: &Record,
    change: Canonical,
    store: &ReferenceStore,
    replayed: bool,
    max_attempts: Option<u32>,
    enc: &mut Encoder,
) -> EnrichOutcome {
    let merchant = match &change.row {
        Some(RowBody::CardTransaction(t)) => match store.lookup(t.merchant_id) {
            Some(m) => Some(m),
            None => {
                let mut miss = input.clone();
                if replayed {
                    miss.meta.attempt += 1;
                }
                if max_attempts.is_some_and(|max| miss.meta.attempt >= max) {
                    let reason = format!(
                        "merchant {} unknown after {} redo attempts",
                        t.merchant_id, miss.meta.attempt
                    );
                    return EnrichOutcome::Critical(miss, reason);
                }
                return EnrichOutcome::Redo(miss);
            }
        },
        _ => None,
    };
    let enriched = Enriched {
        change,
        merchant,
        store_version: store.version(),
    };
    EnrichOutcome::Enriched(Record {
        key: input.key,
        value: enc.canonical(&enriched),
        meta: input.meta,
    })
}
