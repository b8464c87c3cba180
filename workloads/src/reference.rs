//! Merchant reference data, the store the enrich job looks card transactions up in.
//!
//! Version 0 knows the merchants `0..merchants`. Card payments at "unknown" merchants use ids
//! from a pool just above those (`merchants..merchants + max(10, merchants / 10)`); every
//! version from 1 on knows them too, so a record that missed version 0 and waits in redo is
//! enriched once version 1 loads. A merchant's name, brand and category are derived from the
//! seed and its id, so they need no storage and never change between versions.

use crate::{SeedTree, WorkloadConfig};
use std::ops::Range;

const BRANDS: [&str; 16] = [
    "Northwind",
    "Bluebird",
    "Copperleaf",
    "Harbor & Co",
    "Greenfield",
    "Silverline",
    "Oakmont",
    "Redstone",
    "Lakeside",
    "Brightway",
    "Kestrel",
    "Maple Street",
    "Summit",
    "Corner Shop",
    "Fairmarket",
    "Tidewater",
];

const CATEGORIES: [&str; 12] = [
    "grocery",
    "restaurant",
    "fuel",
    "pharmacy",
    "electronics",
    "clothing",
    "travel",
    "hotel",
    "entertainment",
    "utilities",
    "online_retail",
    "cash_withdrawal",
];

const PLACES: [&str; 12] = [
    "Central",
    "Riverside",
    "Old Town",
    "Station",
    "Airport",
    "Market Square",
    "Harbour",
    "Hillside",
    "University",
    "Docklands",
    "High Street",
    "Mall",
];

/// A merchant as the reference store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Merchant {
    /// The id card transactions carry.
    pub merchant_id: u64,
    /// The trading name, e.g. `"Kestrel Riverside 42"`.
    pub name: String,
    /// The brand the merchant trades under.
    pub brand: String,
    /// The merchant category, e.g. `"grocery"`.
    pub category: String,
}

/// The versioned merchant reference data of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceData {
    known_at_start: u64,
    pool_len: u64,
    salt: u64,
}

impl ReferenceData {
    /// The reference data for `cfg`, with names drawn from the seed's `reference` stream.
    pub fn new(cfg: &WorkloadConfig, seeds: &SeedTree) -> Self {
        Self {
            known_at_start: cfg.merchants,
            pool_len: unknown_pool_len(cfg.merchants),
            salt: seeds.derive("reference"),
        }
    }

    /// The ids of merchants version 0 does not know and every later version does.
    pub fn unknown_pool(&self) -> Range<u64> {
        self.known_at_start..self.known_at_start + self.pool_len
    }

    /// The ids known at `version`: `0..merchants` at version 0, the unknown pool as well from
    /// version 1 on. Ids past the unknown pool are never known.
    pub fn known_ids(&self, version: u32) -> Range<u64> {
        if version == 0 {
            0..self.known_at_start
        } else {
            0..self.unknown_pool().end
        }
    }

    /// Whether `version` of the store knows `merchant_id`.
    pub fn is_known(&self, version: u32, merchant_id: u64) -> bool {
        self.known_ids(version).contains(&merchant_id)
    }

    /// The merchant as `version` of the store knows it, or `None` on a miss.
    pub fn lookup(&self, version: u32, merchant_id: u64) -> Option<Merchant> {
        if !self.is_known(version, merchant_id) {
            return None;
        }
        let h = mix(self.salt ^ mix(merchant_id));
        let brand = BRANDS[(h % BRANDS.len() as u64) as usize];
        let category = CATEGORIES[((h >> 16) % CATEGORIES.len() as u64) as usize];
        let place = PLACES[((h >> 32) % PLACES.len() as u64) as usize];
        Some(Merchant {
            merchant_id,
            name: format!("{brand} {place} {merchant_id}"),
            brand: brand.to_string(),
            category: category.to_string(),
        })
    }
}

/// How many ids the unknown-merchant pool holds for `merchants` known merchants.
pub fn unknown_pool_len(merchants: u64) -> u64 {
    (merchants / 10).max(10)
}

/// A 64-bit finaliser (splitmix64's): a fixed bijection that spreads nearby ids apart.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(merchants: u64) -> ReferenceData {
        let cfg = WorkloadConfig {
            merchants,
            ..WorkloadConfig::default()
        };
        ReferenceData::new(&cfg, &SeedTree::new(3))
    }

    #[test]
    fn versions_know_what_they_should() {
        let r = data(1000);
        assert_eq!(r.unknown_pool(), 1000..1100);
        assert!(r.is_known(0, 999));
        assert!(!r.is_known(0, 1000));
        assert!(r.is_known(1, 1000));
        assert!(r.is_known(7, 1099));
        assert!(!r.is_known(7, 1100));
        assert!(r.lookup(0, 1050).is_none());
        assert_eq!(data(5).unknown_pool(), 5..15);
    }

    #[test]
    fn lookups_are_stable_across_versions_and_seeds_matter() {
        let r = data(1000);
        let m = r.lookup(0, 42).unwrap();
        assert_eq!(Some(m.clone()), r.lookup(3, 42));
        assert_eq!(m.merchant_id, 42);
        assert!(m.name.starts_with(&m.brand));
        assert!(CATEGORIES.contains(&m.category.as_str()));
        let other = ReferenceData::new(&WorkloadConfig::default(), &SeedTree::new(4));
        let differs = (0..50).any(|id| other.lookup(0, id) != r.lookup(0, id));
        assert!(differs);
    }
}
