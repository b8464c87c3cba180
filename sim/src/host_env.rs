//! The simulated implementations of what jobs need besides the log: the clock and the history
//! recorder, durable checkpoint storage, and the source database's commit log.

use crate::progress::Recorder;
use nrtsim_history::Observation;
use nrtsim_pipeline::checkpoint::Coordinator;
use nrtsim_pipeline::{CheckpointStore, Env, SourceLog, TaskCheckpoint};
use nrtsim_workloads::{Change, Key, SchemaTimeline, Table, TableSchema, Transaction};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// The host's clock: tokio's, which turmoil drives in simulated time (never the wall clock).
pub fn sim_instant() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Milliseconds of simulated time since the run began.
pub fn sim_now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// How much slower than their costs say the hosts a `slow` fault holds work, by host name.
#[derive(Debug, Default)]
pub struct Slowdowns(BTreeMap<String, f64>);

impl Slowdowns {
    /// The host's slowdown: 1 unless a `slow` fault holds it.
    pub fn of(&self, host: &str) -> f64 {
        self.0.get(host).copied().unwrap_or(1.0)
    }

    /// Whether no host is slowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets the host's slowdown; 1 restores its pace.
    pub fn set(&mut self, host: &str, factor: f64) {
        if factor == 1.0 {
            self.0.remove(host);
        } else {
            self.0.insert(host.to_string(), factor);
        }
    }
}

/// A job host's environment.
pub struct SimEnv {
    host: String,
    /// The simulated machine the task runs on: its name, or for a standby instance
    /// `<task>-standby`. Faults that slow a machine look it up by this.
    machine: String,
    recorder: Rc<RefCell<Recorder>>,
    slowdowns: Rc<RefCell<Slowdowns>>,
}

impl SimEnv {
    /// The environment of `host`.
    pub fn new(
        host: &str,
        recorder: Rc<RefCell<Recorder>>,
        slowdowns: Rc<RefCell<Slowdowns>>,
    ) -> Self {
        Self {
            host: host.to_string(),
            machine: host.to_string(),
            recorder,
            slowdowns,
        }
    }

    /// The same environment for an instance of the task running on `machine` (a standby).
    pub fn on_machine(mut self, machine: &str) -> Self {
        self.machine = machine.to_string();
        self
    }
}

impl Env for SimEnv {
    fn host(&self) -> &str {
        &self.host
    }

    fn now_ms(&self) -> u64 {
        sim_now_ms()
    }

    fn record(&self, obs: Observation) {
        self.recorder.borrow_mut().record(obs);
    }

    fn slowdown(&self) -> f64 {
        self.slowdowns.borrow().of(&self.machine)
    }
}

#[derive(Default)]
struct CheckpointTables {
    coordinator: Coordinator,
    starts: BTreeMap<String, u64>,
}

/// Checkpoint storage that outlives any host (a state backend on durable storage).
#[derive(Clone, Default)]
pub struct SharedCheckpoints {
    inner: Rc<RefCell<CheckpointTables>>,
}

impl SharedCheckpoints {
    /// Coordinates `job`'s checkpoints over `tasks` (see [`Coordinator`]).
    pub fn coordinate(&self, job: &str, tasks: impl IntoIterator<Item = String>) {
        self.inner.borrow_mut().coordinator.coordinate(job, tasks);
    }

    /// `task` fails over to another instance: its job's pending checkpoints are aborted (see
    /// [`Coordinator::fail`]).
    pub fn fail(&self, task: &str) {
        self.inner.borrow_mut().coordinator.fail(task);
    }
}

impl CheckpointStore for SharedCheckpoints {
    fn load(&self, task: &str) -> Option<TaskCheckpoint> {
        self.inner.borrow().coordinator.restore(task)
    }

    fn save(&self, task: &str, checkpoint: TaskCheckpoint) {
        self.inner
            .borrow_mut()
            .coordinator
            .acknowledge(task, checkpoint);
    }

    fn completed(&self, task: &str) -> u64 {
        self.inner.borrow().coordinator.completed(task)
    }

    fn next_incarnation(&self, task: &str) -> u64 {
        let mut inner = self.inner.borrow_mut();
        let n = inner.starts.entry(task.to_string()).or_insert(0);
        *n += 1;
        let n = *n;
        if n > 1 {
            // A restart: the job's pending checkpoints are aborted.
            inner.coordinator.fail(task);
        }
        n
    }
}

/// The source database's commit log: transactions appended as the workload commits them.
#[derive(Clone, Default)]
pub struct SharedSource {
    txns: Rc<RefCell<Vec<Transaction>>>,
    /// The tables as they stand: per live row, where the change that last wrote it sits in
    /// `txns` (transaction index, change index).
    rows: Rc<RefCell<BTreeMap<Key, (usize, usize)>>>,
    schemas: Rc<SchemaTimeline>,
}

impl SharedSource {
    /// An empty log whose tables change as `schemas` says.
    pub fn with_schemas(schemas: SchemaTimeline) -> Self {
        Self {
            txns: Rc::default(),
            rows: Rc::default(),
            schemas: Rc::new(schemas),
        }
    }

    /// Appends a committed transaction.
    pub fn commit(&self, txn: Transaction) {
        let mut txns = self.txns.borrow_mut();
        let mut rows = self.rows.borrow_mut();
        let t = txns.len();
        for (i, c) in txn.changes.iter().enumerate() {
            if c.after.is_some() {
                rows.insert(c.key, (t, i));
            } else {
                rows.remove(&c.key);
            }
        }
        txns.push(txn);
    }
}

impl SourceLog for SharedSource {
    fn head_lsn(&self) -> u64 {
        let txns = self.txns.borrow();
        txns.iter()
            .rev()
            .find_map(|t| t.changes.last())
            .map_or(0, |c| c.lsn)
    }

    fn scan(&self, table: Table, from_id: u64, max: usize) -> Vec<(Change, u64)> {
        let txns = self.txns.borrow();
        let rows = self.rows.borrow();
        let from = Key { table, id: from_id };
        rows.range(from..)
            .take_while(|(k, _)| k.table == table)
            .take(max)
            .map(|(_, &(t, i))| (txns[t].changes[i].clone(), txns[t].commit_ms))
            .collect()
    }

    fn table_schema(&self, table: Table, commit_ms: u64) -> Arc<TableSchema> {
        self.schemas.at(table, commit_ms).clone()
    }

    fn last_lsn_of(&self, txid: u64) -> Option<u64> {
        let txns = self.txns.borrow();
        // Transaction ids increase in commit order.
        let i = txns.partition_point(|t| t.txid < txid);
        txns.get(i)
            .filter(|t| t.txid == txid)
            .and_then(|t| t.changes.last())
            .map(|c| c.lsn)
    }

    fn read_from(&self, from_lsn: u64, max_changes: usize) -> Vec<Transaction> {
        let txns = self.txns.borrow();
        // Transactions hold consecutive LSNs in commit order: find the first one that ends at
        // or after `from_lsn`.
        let start = txns.partition_point(|t| t.changes.last().is_none_or(|c| c.lsn < from_lsn));
        let mut out = Vec::new();
        let mut n = 0;
        for t in &txns[start..] {
            let fresh: Vec<_> = t
                .changes
                .iter()
                .filter(|c| c.lsn >= from_lsn)
                .cloned()
                .collect();
            if fresh.len() > max_changes {
                // A transaction larger than one read (the initial snapshot): hand it over in
                // pieces.
                if n == 0 {
                    out.push(Transaction {
                        txid: t.txid,
                        commit_ms: t.commit_ms,
                        changes: fresh[..max_changes].to_vec(),
                    });
                }
                break;
            }
            n += fresh.len();
            out.push(Transaction {
                txid: t.txid,
                commit_ms: t.commit_ms,
                changes: fresh,
            });
            if n >= max_changes {
                break;
            }
        }
        out
    }
}
