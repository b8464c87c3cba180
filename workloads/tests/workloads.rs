//! Properties of the generated commit log that every downstream stage and the checker rely on.

use nrtsim_workloads::{
    decode_change, encode_change, Change, Op, OrderStatus, RateProfile, Row, SeedTree, Table,
    Transaction, Workload, WorkloadConfig, WorkloadKind,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn small_config() -> impl Strategy<Value = WorkloadConfig> {
    (
        prop_oneof![
            Just(WorkloadKind::Card),
            Just(WorkloadKind::Order),
            Just(WorkloadKind::Mixed)
        ],
        prop_oneof![
            Just(RateProfile::Steady),
            Just(RateProfile::Diurnal),
            Just(RateProfile::Burst)
        ],
        1u64..400,
        0u64..40,
        0u64..30,
        0.0f64..2.0,
        (0.0f64..0.3, 0.0f64..0.1),
        0.0f64..0.2,
    )
        .prop_map(
            |(kind, profile, rate_per_s, accounts, merchants, key_skew, merchant_mix, poison)| {
                WorkloadConfig {
                    kind,
                    rate_per_s,
                    profile,
                    accounts,
                    merchants,
                    key_skew,
                    unknown_merchant_ratio: merchant_mix.0,
                    unresolvable_merchant_ratio: merchant_mix.1,
                    poison_ratio: poison,
                    ddl: Vec::new(),
                }
            },
        )
}

fn run(cfg: &WorkloadConfig, seed: u64, duration_ms: u64) -> Vec<Transaction> {
    Workload::new(cfg, &SeedTree::new(seed), duration_ms).collect()
}

fn changes(txns: &[Transaction]) -> impl Iterator<Item = (&Transaction, &Change)> {
    txns.iter()
        .flat_map(|t| t.changes.iter().map(move |c| (t, c)))
}

fn legal(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::*;
    matches!(
        (from, to),
        (Created, Paid)
            | (Paid, Shipped)
            | (Shipped, Delivered)
            | (Created, Cancelled)
            | (Cancelled, Refunded)
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn lsns_are_dense_and_increase_per_key(cfg in small_config(), seed in any::<u64>()) {
        let txns = run(&cfg, seed, 4_000);
        let mut last_by_key = BTreeMap::new();
        let mut expected_lsn = 1;
        let mut last_commit = 0;
        let mut last_txid = None;
        for t in &txns {
            prop_assert!(t.commit_ms >= last_commit && t.commit_ms < 4_000);
            last_commit = t.commit_ms;
            prop_assert!(last_txid.is_none_or(|l| t.txid == l + 1));
            prop_assert!(last_txid.is_some() || t.txid <= 1);
            last_txid = Some(t.txid);
            prop_assert!(!t.changes.is_empty());
            for c in &t.changes {
                prop_assert_eq!(c.lsn, expected_lsn);
                prop_assert_eq!(c.txid, t.txid);
                expected_lsn += 1;
                if let Some(prev) = last_by_key.insert(c.key, c.lsn) {
                    prop_assert!(prev < c.lsn);
                }
                let row = c.after.as_ref().or(c.before.as_ref()).unwrap();
                prop_assert_eq!(row.key(), c.key);
            }
        }
    }

    #[test]
    fn images_chain_and_balances_add_up(cfg in small_config(), seed in any::<u64>()) {
        let txns = run(&cfg, seed, 4_000);
        let mut current: BTreeMap<_, Row> = BTreeMap::new();
        let mut opening = BTreeMap::new();
        let mut effect: BTreeMap<u64, i64> = BTreeMap::new();
        for (t, c) in changes(&txns) {
            match c.op {
                Op::Read | Op::Create => prop_assert!(c.before.is_none()),
                Op::Update | Op::Delete => {
                    prop_assert_eq!(current.get(&c.key), c.before.as_ref());
                }
            }
            if c.op == Op::Create {
                prop_assert!(!current.contains_key(&c.key));
            }
            match &c.after {
                Some(row) => { current.insert(c.key, row.clone()); }
                None => { current.remove(&c.key); }
            }
            match &c.after {
                Some(Row::Account(a)) if c.op == Op::Read => {
                    prop_assert_eq!(t.txid, 0);
                    prop_assert_eq!(a.customer_id, a.account_id);
                    opening.insert(a.account_id, a.balance_cents);
                }
                Some(Row::CardTransaction(ct)) => {
                    prop_assert_eq!(ct.ts_ms, t.commit_ms);
                    *effect.entry(ct.account_id).or_default() -= ct.amount_cents;
                    // The same transaction updates the account it charges.
                    let charged = t.changes.iter().any(|o| o.key.table == Table::Accounts
                        && o.key.id == ct.account_id && o.op == Op::Update);
                    prop_assert!(charged);
                }
                _ => {}
            }
        }
        if cfg.kind != WorkloadKind::Order {
            prop_assert_eq!(opening.len() as u64, cfg.accounts);
        }
        for (id, open) in &opening {
            let key = nrtsim_workloads::Key { table: Table::Accounts, id: *id };
            let Some(Row::Account(fin)) = current.get(&key) else { panic!("account {id} lost") };
            prop_assert_eq!(fin.balance_cents, open + effect.get(id).copied().unwrap_or(0));
        }
    }

    #[test]
    fn order_lifecycles_are_legal(cfg in small_config(), seed in any::<u64>()) {
        let txns = run(&cfg, seed, 6_000);
        for (_, c) in changes(&txns) {
            let status = |r: &Option<Row>| match r {
                Some(Row::Order(o)) => Some(o.status),
                _ => None,
            };
            if c.key.table != Table::Orders {
                continue;
            }
            prop_assert_eq!(c.partition_key(), match &c.after {
                Some(Row::Order(o)) => o.customer_id,
                _ => unreachable!(),
            });
            match c.op {
                Op::Create => prop_assert_eq!(status(&c.after), Some(OrderStatus::Created)),
                Op::Update => {
                    let (from, to) = (status(&c.before).unwrap(), status(&c.after).unwrap());
                    prop_assert!(legal(from, to), "{:?} -> {:?}", from, to);
                }
                op => prop_assert!(false, "unexpected op {:?} on an order", op),
            }
        }
    }

    #[test]
    fn streams_are_a_function_of_the_seed(cfg in small_config(), seed in any::<u64>()) {
        let a = run(&cfg, seed, 3_000);
        prop_assert_eq!(&a, &run(&cfg, seed, 3_000));
        let b = run(&cfg, seed.wrapping_add(1), 3_000);
        // Only a run with draws can differ: at least a few changes with randomness in them.
        let draws = a.iter().map(|t| t.changes.len()).sum::<usize>();
        if draws > 20 && (cfg.accounts > 1 || cfg.kind != WorkloadKind::Card) {
            prop_assert_ne!(a, b);
        }
    }

    #[test]
    fn envelopes_round_trip_and_poison_is_rejected(cfg in small_config(), seed in any::<u64>()) {
        let txns = run(&cfg, seed, 2_000);
        for (t, c) in changes(&txns) {
            let bytes = encode_change(c, t.commit_ms);
            match decode_change(&bytes) {
                Ok(env) => {
                    prop_assert!(!c.poison);
                    prop_assert_eq!(env.ts_ms, t.commit_ms);
                    prop_assert_eq!(&env.into_change(), c);
                }
                Err(e) => prop_assert!(c.poison, "lsn {}: {}", c.lsn, e),
            }
        }
    }
}

/// A decoder that remembers schema blocks reads every envelope as [`decode_change`] does, the
/// same change or the same error, whatever blocks it has met before: envelopes of several
/// schema versions (after DDL) and poison ones, read in order by one decoder.
#[test]
fn a_decoder_that_remembers_schema_blocks_decodes_as_decode_change_does() {
    use nrtsim_workloads::schema::DdlKind;
    use nrtsim_workloads::{
        encode_change_into, ColumnType, DdlConfig, EnvelopeDecoder, SchemaTimeline, SimDuration,
    };
    let timeline = SchemaTimeline::new(&[DdlConfig {
        at: SimDuration::from_ms(1_000),
        table: Table::CardTransactions,
        change: DdlKind::AddColumn,
        column: "channel".into(),
        ty: Some(ColumnType::String),
    }])
    .unwrap();
    let cfg = WorkloadConfig {
        poison_ratio: 0.05,
        kind: WorkloadKind::Mixed,
        ..WorkloadConfig::default()
    };
    let mut decoder = EnvelopeDecoder::default();
    let (mut read, mut refused) = (0, 0);
    for t in run(&cfg, 11, 2_000) {
        for c in &t.changes {
            let mut bytes = Vec::new();
            encode_change_into(
                c,
                t.commit_ms,
                timeline.at(c.key.table, t.commit_ms),
                &mut bytes,
            );
            let fast = decoder.decode(&bytes);
            match (fast, decode_change(&bytes)) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b);
                    read += 1;
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a.to_string(), b.to_string());
                    refused += 1;
                }
                (a, b) => panic!("lsn {}: {a:?} against {b:?}", c.lsn),
            }
        }
    }
    assert!(
        read > 1_000 && refused > 100,
        "{read} read, {refused} refused"
    );
}

/// An envelope written after DDL carries the new schema, and its rows are read back by that
/// schema: the added column null, the dropped one gone, the retyped one text. The reader that
/// knows only the table's first columns refuses it.
#[test]
fn envelopes_follow_the_ddl_of_their_time() {
    use nrtsim_workloads::schema::DdlKind;
    use nrtsim_workloads::{
        decode_change_by_schema, parse_schema_block, ColumnType, DdlConfig, SchemaTimeline,
        SimDuration, Table,
    };
    let ddl = |at: u64, change, column: &str| DdlConfig {
        at: SimDuration::from_ms(at),
        table: Table::CardTransactions,
        change,
        column: column.into(),
        ty: Some(ColumnType::String),
    };
    let timeline = SchemaTimeline::new(&[
        ddl(1_000, DdlKind::AddColumn, "channel"),
        ddl(2_000, DdlKind::RetypeColumn, "amount_cents"),
    ])
    .unwrap();
    let mut wl = Workload::new(&WorkloadConfig::default(), &SeedTree::new(3), 3_000);
    let mut seen = [false; 3];
    while let Some(t) = wl.next_transaction() {
        for c in t
            .changes
            .iter()
            .filter(|c| c.key.table == Table::CardTransactions && !c.poison)
        {
            let schema = timeline.at(c.key.table, t.commit_ms);
            let mut buf = Vec::new();
            nrtsim_workloads::encode_change_into(c, t.commit_ms, schema, &mut buf);
            let (env, read) = decode_change_by_schema(&buf, &mut |text| {
                parse_schema_block(text).map(std::sync::Arc::new)
            })
            .expect("an envelope reads by its own schema");
            assert_eq!(read.version, schema.version);
            assert_eq!(env.key_id(), Some(c.key.id));
            let after = env.after.unwrap();
            match schema.version {
                1 => assert!(!after.contains_key("channel")),
                2 => assert!(after["channel"].is_null()),
                _ => assert!(after["amount_cents"].is_string()),
            }
            seen[schema.version as usize - 1] = true;
            let typed = nrtsim_workloads::decode_change(&buf);
            assert_eq!(typed.is_ok(), schema.version == 1, "{typed:?}");
        }
    }
    assert_eq!(seen, [true; 3]);
}
