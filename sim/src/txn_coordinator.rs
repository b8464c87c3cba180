//! The transaction coordinator host (`txn-coordinator`): hands out producer ids and epochs
//! per `transactional.id`, fencing an older instance when a newer one starts; tracks each
//! transaction's partitions; commits or aborts it by writing markers on every partition it
//! touched; aborts a transaction left open past its timeout; and keeps what commits with each
//! transaction: a stream task's input offsets (consume-transform-produce), or the CDC
//! connector's source position (where Kafka Connect's exactly-once source keeps it in its
//! offsets topic).
//!
//! Its state is durable (Kafka keeps it in the replicated `__transaction_state` topic), so a
//! crash loses only what was in flight: after a restart it completes every transaction it had
//! decided but not finished marking.

use crate::cluster::ClusterMeta;
use crate::host_env::sim_now_ms;
use crate::progress::Recorder;
use crate::wire::{
    self, CommittedOffsets, Connection, Message, Request, Response, SharedArena, TxnError,
    BROKER_PORT, TXN_COORDINATOR_PORT,
};
use nrtsim_history::Observation;
use nrtsim_pipeline::{TaskCheckpoint, TopicPartition};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use turmoil::net::{TcpListener, TcpStream};

/// Producer ids the coordinator hands out start here, apart from those of plain idempotent
/// producers.
const FIRST_PID: u64 = 1 << 56;

/// Where a `transactional.id`'s current transaction stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// No transaction since the producer started.
    Empty,
    /// Open: partitions are being written.
    Ongoing,
    /// Decided to commit; markers are being written.
    PrepareCommit,
    /// Decided to abort; markers are being written.
    PrepareAbort,
    /// Committed, markers written.
    CompleteCommit,
    /// Aborted, markers written.
    CompleteAbort,
}

/// One `transactional.id`'s entry.
#[derive(Clone, Debug)]
pub struct TxnMeta {
    /// Producer id.
    pub pid: u64,
    /// Current epoch.
    pub epoch: u32,
    /// State of the current (or last) transaction.
    pub state: TxnState,
    /// Partitions the current transaction touched.
    pub partitions: BTreeSet<TopicPartition>,
    /// The coordinator's number for the current transaction.
    pub txn: u64,
    /// When the current transaction began, in simulated ms.
    pub started_ms: u64,
    /// `transaction.timeout.ms`.
    pub timeout_ms: u64,
    /// The epoch whose transaction the coordinator aborted on timeout: that producer is told
    /// its transaction was aborted, not that it was fenced.
    pub timed_out_epoch: Option<u32>,
    /// The epoch and outcome of the last transaction ended: a retried `EndTxn` of it is
    /// answered as the first was.
    pub last_end: Option<(u32, bool)>,
    /// What commits with the transaction being committed.
    pub pending: Committing,
}

/// What a transaction commits besides its records: a consumer's input positions
/// (consume-transform-produce), or a source connector's position.
#[derive(Clone, Debug, Default)]
pub struct Committing {
    /// Whose: the consumer, or the source connector.
    pub group: String,
    /// Input positions.
    pub offsets: CommittedOffsets,
    /// The source connector's position.
    pub position: Option<Box<TaskCheckpoint>>,
}

impl Committing {
    fn carries_some(&self) -> bool {
        !self.offsets.is_empty() || self.position.is_some()
    }
}

/// The coordinator's durable state.
#[derive(Debug)]
pub struct TxnStore {
    next_pid: u64,
    next_txn: u64,
    /// Per `transactional.id`.
    pub ids: BTreeMap<String, TxnMeta>,
    /// Input offsets committed in transactions, per consumer.
    pub offsets: BTreeMap<String, CommittedOffsets>,
    /// Source positions committed in transactions, per source connector.
    pub positions: BTreeMap<String, Box<TaskCheckpoint>>,
}

impl Default for TxnStore {
    fn default() -> Self {
        Self {
            next_pid: FIRST_PID,
            next_txn: 1,
            ids: BTreeMap::new(),
            offsets: BTreeMap::new(),
            positions: BTreeMap::new(),
        }
    }
}

impl TxnStore {
    /// The positions `group` committed, or `Concurrent` while a transaction committing some
    /// of them is between its decision and its completion: answering then with the older
    /// positions would have a new reader redo what that transaction wrote (Kafka answers
    /// UNSTABLE_OFFSET_COMMIT for the same reason).
    pub fn committed_offsets(&self, group: &str) -> Result<CommittedOffsets, TxnError> {
        self.stable(group)?;
        Ok(self.offsets.get(group).cloned().unwrap_or_default())
    }

    /// The source position `group` committed, on the same terms as
    /// [`TxnStore::committed_offsets`].
    pub fn committed_position(&self, group: &str) -> Result<Option<Box<TaskCheckpoint>>, TxnError> {
        self.stable(group)?;
        Ok(self.positions.get(group).cloned())
    }

    fn stable(&self, group: &str) -> Result<(), TxnError> {
        let unstable = self.ids.values().any(|m| {
            m.state == TxnState::PrepareCommit
                && m.pending.group == group
                && m.pending.carries_some()
        });
        if unstable {
            return Err(TxnError::Concurrent);
        }
        Ok(())
    }

    /// Makes what `done` carries the committed state of its group.
    fn apply(&mut self, done: Committing) {
        let Committing {
            group,
            offsets,
            position,
        } = done;
        if !offsets.is_empty() {
            self.offsets
                .entry(group.clone())
                .or_default()
                .extend(offsets);
        }
        if let Some(position) = position {
            self.positions.insert(group, position);
        }
    }
}

/// Everything the coordinator host needs to start (again).
#[derive(Clone)]
pub struct TxnCoordinatorSetup {
    /// Durable state.
    pub store: Rc<RefCell<TxnStore>>,
    /// Cluster metadata, to find partition leaders for the markers.
    pub meta: Rc<RefCell<ClusterMeta>>,
    /// The message arena.
    pub arena: SharedArena,
    /// Where transaction outcomes are recorded.
    pub recorder: Rc<RefCell<Recorder>>,
    /// How long a marker write may wait for replication.
    pub request_timeout_ms: u64,
}

struct Coordinator {
    setup: TxnCoordinatorSetup,
    /// Transactions whose markers a task of this incarnation is writing.
    completing: RefCell<BTreeSet<String>>,
}

/// Runs the transaction coordinator until the host is crashed.
pub async fn run_txn_coordinator(setup: TxnCoordinatorSetup) -> turmoil::Result {
    let coord = Rc::new(Coordinator {
        setup,
        completing: RefCell::new(BTreeSet::new()),
    });
    let listener = TcpListener::bind(("0.0.0.0", TXN_COORDINATOR_PORT)).await?;
    // Finish what the previous incarnation decided.
    let unfinished: Vec<String> = coord
        .setup
        .store
        .borrow()
        .ids
        .iter()
        .filter(|(_, m)| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
        .map(|(id, _)| id.clone())
        .collect();
    for id in unfinished {
        let coord = coord.clone();
        tokio::task::spawn_local(async move { complete(&coord, &id).await });
    }
    tokio::task::spawn_local(timeout_loop(coord.clone()));
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(serve(coord.clone(), stream));
    }
}

async fn serve(coord: Rc<Coordinator>, mut stream: TcpStream) {
    let arena = coord.setup.arena.clone();
    while let Ok(Message::Request(req)) = wire::recv(&arena, &mut stream).await {
        let reply = match req {
            Request::InitProducerId {
                transactional_id,
                timeout_ms,
            } => Response::InitProducerId(init(&coord, &transactional_id, timeout_ms).await),
            Request::AddPartitionsToTxn {
                transactional_id,
                pid,
                epoch,
                partitions,
            } => Response::AddPartitionsToTxn(add_partitions(
                &coord,
                &transactional_id,
                pid,
                epoch,
                partitions,
            )),
            Request::EndTxn {
                transactional_id,
                pid,
                epoch,
                commit,
                group,
                offsets,
                position,
            } => Response::EndTxn(
                end_txn(
                    &coord,
                    &transactional_id,
                    pid,
                    epoch,
                    commit,
                    Committing {
                        group,
                        offsets,
                        position,
                    },
                )
                .await,
            ),
            Request::FetchOffsets { group } => {
                Response::FetchOffsets(coord.setup.store.borrow().committed_offsets(&group))
            }
            Request::FetchPosition { group } => {
                Response::FetchPosition(coord.setup.store.borrow().committed_position(&group))
            }
            _ => return,
        };
        if wire::send(&arena, &mut stream, Message::Response(reply))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Checks a request's producer id and epoch against the current ones.
fn check_epoch(meta: &TxnMeta, pid: u64, epoch: u32) -> Result<(), TxnError> {
    if meta.pid == pid && meta.epoch == epoch {
        return Ok(());
    }
    if meta.pid == pid && meta.timed_out_epoch == Some(epoch) {
        return Err(TxnError::Aborted);
    }
    Err(TxnError::Fenced)
}

async fn init(coord: &Coordinator, id: &str, timeout_ms: u64) -> Result<(u64, u32), TxnError> {
    let open = {
        let mut store = coord.setup.store.borrow_mut();
        let store = &mut *store;
        let meta = store.ids.entry(id.to_string()).or_insert_with(|| {
            let pid = store.next_pid;
            store.next_pid += 1;
            TxnMeta {
                pid,
                // Bumped below to 0 for the first instance.
                epoch: u32::MAX,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                txn: 0,
                started_ms: 0,
                timeout_ms,
                timed_out_epoch: None,
                last_end: None,
                pending: Committing::default(),
            }
        });
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(TxnError::Concurrent),
            TxnState::Ongoing => {
                // The previous instance's transaction is aborted, under a new epoch that
                // fences it.
                meta.epoch = meta.epoch.wrapping_add(1);
                meta.state = TxnState::PrepareAbort;
                true
            }
            _ => false,
        }
    };
    if open {
        decided(coord, id, false, false);
        complete(coord, id).await;
    }
    let mut store = coord.setup.store.borrow_mut();
    let meta = store.ids.get_mut(id).expect("registered above");
    if matches!(
        meta.state,
        TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::Ongoing
    ) {
        return Err(TxnError::Concurrent);
    }
    meta.epoch = meta.epoch.wrapping_add(1);
    meta.timeout_ms = timeout_ms;
    meta.timed_out_epoch = None;
    meta.state = TxnState::Empty;
    Ok((meta.pid, meta.epoch))
}

fn add_partitions(
    coord: &Coordinator,
    id: &str,
    pid: u64,
    epoch: u32,
    partitions: Vec<TopicPartition>,
) -> Result<u64, TxnError> {
    let mut store = coord.setup.store.borrow_mut();
    let store = &mut *store;
    let meta = store.ids.get_mut(id).ok_or(TxnError::Fenced)?;
    check_epoch(meta, pid, epoch)?;
    match meta.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::Concurrent),
        TxnState::Ongoing => {
            meta.partitions.extend(partitions);
            Ok(meta.txn)
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            meta.state = TxnState::Ongoing;
            meta.txn = store.next_txn;
            store.next_txn += 1;
            meta.started_ms = sim_now_ms();
            meta.partitions = partitions.into_iter().collect();
            Ok(meta.txn)
        }
    }
}

async fn end_txn(
    coord: &Coordinator,
    id: &str,
    pid: u64,
    epoch: u32,
    commit: bool,
    carried: Committing,
) -> Result<u32, TxnError> {
    {
        let mut store = coord.setup.store.borrow_mut();
        let store = &mut *store;
        let meta = store.ids.get_mut(id).ok_or(TxnError::Fenced)?;
        if meta.pid == pid && meta.epoch != epoch && meta.last_end == Some((epoch, commit)) {
            // A retry of the request that ended the last transaction (its answer was lost).
            return Ok(meta.epoch);
        }
        check_epoch(meta, pid, epoch)?;
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(TxnError::Concurrent),
            TxnState::Ongoing => {
                meta.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                meta.pending = carried;
            }
            // Nothing written since the last transaction ended (or a retry of a commit that
            // completed): only the positions, if committing.
            _ => {
                let epoch = meta.epoch;
                if commit {
                    store.apply(carried);
                }
                return Ok(epoch);
            }
        }
    }
    decided(coord, id, commit, false);
    complete(coord, id).await;
    let epoch = coord.setup.store.borrow().ids[id].epoch;
    Ok(epoch)
}

/// Records the decision on the current transaction of `id` (already in a prepare state).
fn decided(coord: &Coordinator, id: &str, committed: bool, timed_out: bool) {
    let store = coord.setup.store.borrow();
    let Some(meta) = store.ids.get(id) else {
        return;
    };
    if meta.txn == 0 {
        return;
    }
    coord
        .setup
        .recorder
        .borrow_mut()
        .record(Observation::KafkaTxn {
            t_ms: sim_now_ms(),
            txn: meta.txn,
            producer: id.to_string(),
            committed,
            timed_out,
        });
}

/// Writes the markers of `id`'s decided transaction on every partition it touched, retrying
/// until each leader has them replicated, then completes it (committing its offsets).
async fn complete(coord: &Coordinator, id: &str) {
    if !coord.completing.borrow_mut().insert(id.to_string()) {
        // Another task of this incarnation is on it; wait for it to finish.
        while coord.completing.borrow().contains(id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return;
    }
    let (pid, epoch, commit, mut left) = {
        let store = coord.setup.store.borrow();
        let meta = &store.ids[id];
        (
            meta.pid,
            meta.epoch,
            meta.state == TxnState::PrepareCommit,
            meta.partitions.clone(),
        )
    };
    let timeout_ms = coord.setup.request_timeout_ms;
    let mut conns: BTreeMap<u32, Connection> = BTreeMap::new();
    while !left.is_empty() {
        let mut by_leader: BTreeMap<u32, Vec<TopicPartition>> = BTreeMap::new();
        for tp in &left {
            if let Some(b) = coord.setup.meta.borrow().leader(tp) {
                by_leader.entry(b).or_default().push(*tp);
            }
        }
        for (broker, partitions) in by_leader {
            let conn = conns.entry(broker).or_insert_with(|| {
                Connection::new(
                    coord.setup.arena.clone(),
                    &format!("broker-{broker}"),
                    BROKER_PORT,
                )
            });
            let req = Request::WriteTxnMarkers {
                pid,
                epoch,
                commit,
                partitions: partitions.clone(),
                timeout_ms,
            };
            let wait = Duration::from_millis(timeout_ms + 500);
            if let Ok(Response::WriteTxnMarkers(done)) = conn.call(req, wait).await {
                for (tp, ok) in partitions.iter().zip(done) {
                    if ok {
                        left.remove(tp);
                    }
                }
            }
        }
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    {
        let mut store = coord.setup.store.borrow_mut();
        let store = &mut *store;
        let meta = store.ids.get_mut(id).expect("known");
        let carried = std::mem::take(&mut meta.pending);
        meta.partitions.clear();
        meta.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        // Every transaction ends with a new epoch (as KIP-890 has it), so a marker request
        // that arrives late, after the producer has begun its next transaction, is stale and
        // cannot end that one.
        meta.last_end = Some((epoch, commit));
        meta.epoch = meta.epoch.wrapping_add(1);
        if commit {
            store.apply(carried);
        }
    }
    coord.completing.borrow_mut().remove(id);
}

/// Aborts every transaction open longer than its timeout, bumping the epoch so its producer
/// cannot go on writing to it.
async fn timeout_loop(coord: Rc<Coordinator>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sim_now_ms();
        let expired: Vec<String> = {
            let mut store = coord.setup.store.borrow_mut();
            let mut out = Vec::new();
            for (id, meta) in store.ids.iter_mut() {
                if meta.state == TxnState::Ongoing
                    && now.saturating_sub(meta.started_ms) > meta.timeout_ms
                {
                    meta.timed_out_epoch = Some(meta.epoch);
                    meta.epoch = meta.epoch.wrapping_add(1);
                    meta.state = TxnState::PrepareAbort;
                    out.push(id.clone());
                }
            }
            out
        };
        for id in expired {
            decided(&coord, &id, false, true);
            let coord = coord.clone();
            tokio::task::spawn_local(async move { complete(&coord, &id).await });
        }
    }
}
