//! The workload generator: the source database's commit log as a stream of transactions.
//!
//! The first transaction is the initial snapshot (txid 0, commit time 0, one `r` change per
//! existing account row); the CDC connector reads it before it follows the log. After it come
//! the log transactions, one per tick of the rate profile's [`CommitClock`]:
//!
//! - a **card payment** is one transaction of two changes: the account's balance update and
//!   the insert of the card transaction row. Every kind moves the balance by `-amount_cents`
//!   (authorisations and captures are positive amounts that debit it; reversals are negative
//!   amounts that credit it back).
//! - an **order step** is one transaction of one change on an order row: either a new order
//!   (`c`) or the next step of an order in flight (`u`): created → paid → shipped → delivered,
//!   or created → cancelled → refunded. A step falls due a random 100 ms to 3 s after the
//!   previous one; a tick takes the oldest due step if there is one, and creates a new order
//!   otherwise, so many orders are in flight at once and their steps interleave. Orders still
//!   in flight when the run ends stop where they are.
//! - **mixed** runs toss a fair coin per tick between the two.
//!
//! LSNs are dense from 1 across the whole run (the LSN is also the change id); log txids start
//! at 1. Each change is independently marked poison with probability `poison_ratio`.
//!
//! Every random choice comes from a stream forked by name from the run's [`SeedTree`], one per
//! concern, so the card stream does not shift when the order stream changes.

use crate::change::{
    Account, CardTransaction, CardTxnKind, Change, Key, Op, Order, OrderStatus, Row, Table,
    Transaction,
};
use crate::profile::CommitClock;
use crate::reference::unknown_pool_len;
use crate::zipf::Zipf;
use crate::{DdlKind, SeedTree, WorkloadConfig, WorkloadKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};

/// Zipf exponent of merchant popularity among known merchants.
pub const MERCHANT_SKEW: f64 = 0.8;
/// Share of orders that are cancelled (and then refunded) instead of paid.
pub const ORDER_CANCEL_RATIO: f64 = 0.1;
/// Shortest gap between two steps of one order, in ms.
pub const ORDER_STEP_MIN_MS: u64 = 100;
/// Longest gap between two steps of one order, in ms.
pub const ORDER_STEP_MAX_MS: u64 = 3_000;
/// Largest opening balance of an account, in minor units.
pub const MAX_OPENING_BALANCE_CENTS: i64 = 1_000_000;

/// An order in flight: its row as the last step left it.
#[derive(Clone, Copy, Debug)]
struct OrderState {
    order_id: u64,
    customer_id: u64,
    status: OrderStatus,
    amount_cents: i64,
    updated_ms: u64,
    /// The shard of `orders` it was inserted into.
    shard: u16,
}

impl OrderState {
    fn row(&self) -> Row {
        Row::Order(Order {
            order_id: self.order_id,
            customer_id: self.customer_id,
            status: self.status,
            amount_cents: self.amount_cents,
            updated_ms: self.updated_ms,
        })
    }
}

/// A seeded stream of source transactions for one run.
#[derive(Clone, Debug)]
pub struct Workload {
    kind: WorkloadKind,
    clock: CommitClock,
    snapshot_pending: bool,
    next_lsn: u64,
    next_txid: u64,
    next_card_txn_id: u64,
    next_order_id: u64,
    /// Balance and last update time of every account, by account id.
    accounts: Vec<(i64, u64)>,
    account_skew: Option<Zipf>,
    customer_skew: Zipf,
    merchant_skew: Option<Zipf>,
    unknown_merchants: (u64, u64),
    unknown_merchant_ratio: f64,
    unresolvable_merchant_ratio: f64,
    poison_ratio: f64,
    /// Orders waiting for their next step, by the ms it falls due, oldest first within a ms.
    orders_in_flight: BTreeMap<u64, VecDeque<OrderState>>,
    in_flight: usize,
    /// Emptied queues kept for reuse, so steady state does not allocate.
    spare_queues: Vec<VecDeque<OrderState>>,
    card_rng: ChaCha8Rng,
    order_rng: ChaCha8Rng,
    mix_rng: ChaCha8Rng,
    poison_rng: ChaCha8Rng,
    /// Per table, when DDL created each of its shards after the first (in order): rows
    /// inserted from then on go to the newest.
    shards: BTreeMap<Table, Vec<u64>>,
}

impl Workload {
    /// The workload `cfg` describes, drawn from `seeds`, committing for `duration_ms`.
    pub fn new(cfg: &WorkloadConfig, seeds: &SeedTree, duration_ms: u64) -> Self {
        let has_accounts = cfg.kind != WorkloadKind::Order;
        let mut snapshot_rng = seeds.fork("workload.snapshot");
        let accounts = if has_accounts {
            (0..cfg.accounts)
                .map(|_| (snapshot_rng.gen_range(0..=MAX_OPENING_BALANCE_CENTS), 0))
                .collect()
        } else {
            Vec::new()
        };
        let pool_start = cfg.merchants;
        let mut shards: BTreeMap<Table, Vec<u64>> = BTreeMap::new();
        for d in cfg.ddl.iter().filter(|d| d.change == DdlKind::CreateShard) {
            shards.entry(d.table).or_default().push(d.at.ms());
        }
        for times in shards.values_mut() {
            times.sort_unstable();
        }
        Self {
            kind: cfg.kind,
            clock: CommitClock::new(cfg.profile, cfg.rate_per_s, duration_ms),
            snapshot_pending: true,
            next_lsn: 1,
            next_txid: 1,
            next_card_txn_id: 1,
            next_order_id: 1,
            accounts,
            account_skew: (cfg.accounts > 0).then(|| Zipf::new(cfg.accounts, cfg.key_skew)),
            customer_skew: Zipf::new(cfg.accounts.max(1), cfg.key_skew),
            merchant_skew: (cfg.merchants > 0).then(|| Zipf::new(cfg.merchants, MERCHANT_SKEW)),
            unknown_merchants: (pool_start, unknown_pool_len(cfg.merchants)),
            unknown_merchant_ratio: cfg.unknown_merchant_ratio,
            unresolvable_merchant_ratio: cfg.unresolvable_merchant_ratio,
            poison_ratio: cfg.poison_ratio,
            orders_in_flight: BTreeMap::new(),
            in_flight: 0,
            spare_queues: Vec::new(),
            card_rng: seeds.fork("workload.card"),
            order_rng: seeds.fork("workload.order"),
            mix_rng: seeds.fork("workload.mix"),
            poison_rng: seeds.fork("workload.poison"),
            shards,
        }
    }

    /// The shard of `table` a row inserted at `t_ms` goes to.
    fn shard_at(&self, table: Table, t_ms: u64) -> u16 {
        self.shards.get(&table).map_or(0, |times| {
            u16::try_from(times.partition_point(|&at| at <= t_ms)).unwrap_or(u16::MAX)
        })
    }

    /// The next committed transaction, or `None` once the run's duration is over.
    pub fn next_transaction(&mut self) -> Option<Transaction> {
        if self.snapshot_pending {
            self.snapshot_pending = false;
            if !self.accounts.is_empty() {
                return Some(self.snapshot());
            }
        }
        loop {
            let t_ms = self.clock.next_commit_ms()?;
            let card = match self.kind {
                WorkloadKind::Card => true,
                WorkloadKind::Order => false,
                WorkloadKind::Mixed => self.mix_rng.gen_bool(0.5),
            };
            if !card {
                return Some(self.order_step(t_ms));
            }
            if !self.accounts.is_empty() {
                return Some(self.card_payment(t_ms));
            }
            // A card tick with no accounts to charge commits nothing.
        }
    }

    /// The LSN the next change will get; one more than the number of changes so far.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// How many orders have a step still to come.
    pub fn orders_in_flight(&self) -> usize {
        self.in_flight
    }

    fn change(
        &mut self,
        txid: u64,
        key: Key,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
        shard: u16,
    ) -> Change {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        let poison = self.poison_ratio > 0.0 && self.poison_rng.gen::<f64>() < self.poison_ratio;
        Change {
            lsn,
            txid,
            key,
            op,
            before,
            after,
            poison,
            shard,
        }
    }

    fn snapshot(&mut self) -> Transaction {
        let mut changes = Vec::with_capacity(self.accounts.len());
        for id in 0..self.accounts.len() as u64 {
            let row = self.account_row(id);
            let key = row.key();
            changes.push(self.change(0, key, Op::Read, None, Some(row), 0));
        }
        Transaction {
            txid: 0,
            commit_ms: 0,
            changes,
        }
    }

    fn account_row(&self, account_id: u64) -> Row {
        let (balance_cents, updated_ms) = self.accounts[account_id as usize];
        Row::Account(Account {
            account_id,
            customer_id: account_id,
            balance_cents,
            updated_ms,
        })
    }

    fn take_txid(&mut self) -> u64 {
        let txid = self.next_txid;
        self.next_txid += 1;
        txid
    }

    fn card_payment(&mut self, t_ms: u64) -> Transaction {
        let rng = &mut self.card_rng;
        let account_id = match &self.account_skew {
            Some(z) => z.sample(rng),
            None => 0,
        };
        let (pool_start, pool_len) = self.unknown_merchants;
        let merchant_id = match &self.merchant_skew {
            Some(z) => {
                let u = rng.gen::<f64>();
                if u >= self.unknown_merchant_ratio + self.unresolvable_merchant_ratio {
                    z.sample(rng)
                } else if u < self.unresolvable_merchant_ratio {
                    // Past the unknown pool: ids no store version learns.
                    pool_start + pool_len + rng.gen_range(0..pool_len)
                } else {
                    pool_start + rng.gen_range(0..pool_len)
                }
            }
            None => pool_start + rng.gen_range(0..pool_len),
        };
        let kind = match rng.gen_range(0..100u32) {
            0..=54 => CardTxnKind::Authorisation,
            55..=94 => CardTxnKind::Capture,
            _ => CardTxnKind::Reversal,
        };
        let size = if rng.gen_bool(0.8) {
            100..=5_000
        } else {
            5_000..=50_000
        };
        let mut amount_cents: i64 = rng.gen_range(size);
        if kind == CardTxnKind::Reversal {
            amount_cents = -amount_cents;
        }

        let txid = self.take_txid();
        let before = self.account_row(account_id);
        let slot = &mut self.accounts[account_id as usize];
        slot.0 -= amount_cents;
        slot.1 = t_ms;
        let after = self.account_row(account_id);
        let account_key = before.key();
        let txn_id = self.next_card_txn_id;
        self.next_card_txn_id += 1;
        let card_row = Row::CardTransaction(CardTransaction {
            txn_id,
            account_id,
            merchant_id,
            amount_cents,
            kind,
            ts_ms: t_ms,
        });
        let card_key = Key {
            table: Table::CardTransactions,
            id: txn_id,
        };
        let card_shard = self.shard_at(Table::CardTransactions, t_ms);
        let changes = vec![
            self.change(txid, account_key, Op::Update, Some(before), Some(after), 0),
            self.change(txid, card_key, Op::Create, None, Some(card_row), card_shard),
        ];
        Transaction {
            txid,
            commit_ms: t_ms,
            changes,
        }
    }

    fn order_step(&mut self, t_ms: u64) -> Transaction {
        let txid = self.take_txid();
        let (op, before, state) = if let Some(order) = self.pop_due_order(t_ms) {
            let before = order.row();
            let mut state = order;
            state.status = match state.status {
                OrderStatus::Created if self.order_rng.gen_bool(ORDER_CANCEL_RATIO) => {
                    OrderStatus::Cancelled
                }
                OrderStatus::Created => OrderStatus::Paid,
                OrderStatus::Paid => OrderStatus::Shipped,
                OrderStatus::Shipped => OrderStatus::Delivered,
                OrderStatus::Cancelled => OrderStatus::Refunded,
                // Finished orders never wait for another step.
                done @ (OrderStatus::Delivered | OrderStatus::Refunded) => done,
            };
            state.updated_ms = t_ms;
            (Op::Update, Some(before), state)
        } else {
            let order_id = self.next_order_id;
            self.next_order_id += 1;
            let state = OrderState {
                order_id,
                customer_id: self.customer_skew.sample(&mut self.order_rng),
                status: OrderStatus::Created,
                amount_cents: self.order_rng.gen_range(500..=50_000),
                updated_ms: t_ms,
                shard: self.shard_at(Table::Orders, t_ms),
            };
            (Op::Create, None, state)
        };
        if !matches!(state.status, OrderStatus::Delivered | OrderStatus::Refunded) {
            let gap = self
                .order_rng
                .gen_range(ORDER_STEP_MIN_MS..=ORDER_STEP_MAX_MS);
            self.push_order(t_ms + gap, state);
        }
        let key = Key {
            table: Table::Orders,
            id: state.order_id,
        };
        let change = self.change(txid, key, op, before, Some(state.row()), state.shard);
        Transaction {
            txid,
            commit_ms: t_ms,
            changes: vec![change],
        }
    }

    /// The order whose next step has waited longest, if one is due by `t_ms`.
    fn pop_due_order(&mut self, t_ms: u64) -> Option<OrderState> {
        let mut entry = self.orders_in_flight.first_entry()?;
        if *entry.key() > t_ms {
            return None;
        }
        let order = entry.get_mut().pop_front();
        if entry.get().is_empty() {
            self.spare_queues.push(entry.remove());
        }
        self.in_flight -= 1;
        order
    }

    fn push_order(&mut self, due_ms: u64, order: OrderState) {
        let spare = &mut self.spare_queues;
        self.orders_in_flight
            .entry(due_ms)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push_back(order);
        self.in_flight += 1;
    }
}

impl Iterator for Workload {
    type Item = Transaction;

    fn next(&mut self) -> Option<Transaction> {
        self.next_transaction()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: WorkloadKind) -> WorkloadConfig {
        WorkloadConfig {
            kind,
            rate_per_s: 500,
            accounts: 50,
            merchants: 20,
            ..WorkloadConfig::default()
        }
    }

    #[test]
    fn card_starts_with_the_snapshot() {
        let mut w = Workload::new(&cfg(WorkloadKind::Card), &SeedTree::new(1), 1_000);
        let snap = w.next_transaction().unwrap();
        assert_eq!((snap.txid, snap.commit_ms, snap.changes.len()), (0, 0, 50));
        assert!(snap.changes.iter().all(|c| c.op == Op::Read));
        assert_eq!(snap.changes[0].lsn, 1);
        let first = w.next_transaction().unwrap();
        assert_eq!(first.txid, 1);
        assert_eq!(first.changes[0].lsn, 51);
        assert_eq!(first.changes[0].key.table, Table::Accounts);
        assert_eq!(first.changes[1].key.table, Table::CardTransactions);
        let rest: Vec<_> = w.collect();
        assert_eq!(rest.len(), 499);
    }

    #[test]
    fn order_has_no_snapshot_and_keeps_orders_in_flight() {
        let mut w = Workload::new(&cfg(WorkloadKind::Order), &SeedTree::new(1), 5_000);
        let first = w.next_transaction().unwrap();
        assert_eq!((first.txid, first.changes[0].lsn), (1, 1));
        assert_eq!(first.changes[0].op, Op::Create);
        let mut max_in_flight = 0;
        while w.next_transaction().is_some() {
            max_in_flight = max_in_flight.max(w.orders_in_flight());
        }
        assert!(max_in_flight > 50, "{max_in_flight}");
    }

    /// After `create-shard`, new rows go to the new shard and rows already written stay in
    /// theirs, whatever step they take next.
    #[test]
    fn new_rows_go_to_the_newest_shard_and_old_rows_stay() {
        let ddl = |table| crate::DdlConfig {
            at: crate::SimDuration::from_ms(2_000),
            table,
            change: DdlKind::CreateShard,
            column: String::new(),
            ty: None,
        };
        for kind in [WorkloadKind::Card, WorkloadKind::Order] {
            let c = WorkloadConfig {
                ddl: vec![ddl(Table::CardTransactions), ddl(Table::Orders)],
                ..cfg(kind)
            };
            let mut shard_of: BTreeMap<Key, u16> = BTreeMap::new();
            let (mut old, mut new) = (0, 0);
            for t in Workload::new(&c, &SeedTree::new(3), 6_000) {
                for ch in &t.changes {
                    if ch.key.table == Table::Accounts {
                        assert_eq!(ch.shard, 0);
                        continue;
                    }
                    match ch.op {
                        Op::Create => {
                            assert_eq!(ch.shard, u16::from(t.commit_ms >= 2_000), "{ch:?}");
                            shard_of.insert(ch.key, ch.shard);
                        }
                        _ => assert_eq!(Some(&ch.shard), shard_of.get(&ch.key), "{ch:?}"),
                    }
                    if t.commit_ms >= 2_000 {
                        *(if ch.shard == 0 { &mut old } else { &mut new }) += 1;
                    }
                }
            }
            assert!(new > 0, "{kind:?}: nothing written to the new shard");
            if kind == WorkloadKind::Order {
                assert!(old > 0, "orders created before the shard keep moving in it");
            }
        }
    }

    #[test]
    fn mixed_has_both_kinds() {
        let w = Workload::new(&cfg(WorkloadKind::Mixed), &SeedTree::new(1), 2_000);
        let tables: Vec<Table> = w.skip(1).map(|t| t.changes[0].key.table).collect();
        let orders = tables.iter().filter(|t| **t == Table::Orders).count();
        assert!(orders > 300 && orders < 700, "{orders}");
    }

    #[test]
    fn poison_follows_the_ratio() {
        let c = WorkloadConfig {
            poison_ratio: 0.1,
            ..cfg(WorkloadKind::Card)
        };
        let changes: Vec<Change> = Workload::new(&c, &SeedTree::new(9), 10_000)
            .flat_map(|t| t.changes)
            .collect();
        let poison = changes.iter().filter(|c| c.poison).count() as f64;
        let share = poison / changes.len() as f64;
        assert!((share - 0.1).abs() < 0.01, "{share}");
    }

    #[test]
    fn unknown_merchants_come_from_the_pool() {
        let c = WorkloadConfig {
            unknown_merchant_ratio: 0.2,
            ..cfg(WorkloadKind::Card)
        };
        let mut unknown = 0;
        let mut total = 0;
        for t in Workload::new(&c, &SeedTree::new(2), 10_000).skip(1) {
            if let Some(Row::CardTransaction(ct)) = &t.changes[1].after {
                assert!(ct.merchant_id < 20 + 10);
                unknown += u32::from(ct.merchant_id >= 20);
                total += 1;
            }
        }
        let share = f64::from(unknown) / f64::from(total);
        assert!((share - 0.2).abs() < 0.03, "{share}");
    }

    #[test]
    fn unresolvable_merchants_lie_past_the_unknown_pool_and_no_version_knows_them() {
        let c = WorkloadConfig {
            unknown_merchant_ratio: 0.1,
            unresolvable_merchant_ratio: 0.1,
            ..cfg(WorkloadKind::Card)
        };
        let seeds = SeedTree::new(3);
        let refs = crate::reference::ReferenceData::new(&c, &seeds);
        let (mut unknown, mut unresolvable, mut total) = (0u32, 0u32, 0u32);
        for t in Workload::new(&c, &seeds, 10_000).skip(1) {
            if let Some(Row::CardTransaction(ct)) = &t.changes[1].after {
                total += 1;
                if refs.unknown_pool().contains(&ct.merchant_id) {
                    unknown += 1;
                } else if !refs.is_known(0, ct.merchant_id) {
                    assert!(!refs.is_known(1_000, ct.merchant_id));
                    unresolvable += 1;
                }
            }
        }
        for n in [unknown, unresolvable] {
            let share = f64::from(n) / f64::from(total);
            assert!((share - 0.1).abs() < 0.03, "{share}");
        }
    }
}
