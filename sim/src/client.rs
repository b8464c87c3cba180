//! The Kafka client every simulated job uses: [`Log`] over the simulated brokers. It keeps a
//! copy of the cluster metadata, taken again when a request fails or the copy ages out, and
//! finds leaders in it; it sends one request per leader concurrently, retries
//! retriable failures with backoff as the producer is configured, and numbers records for the
//! brokers' de-duplication when the producer is idempotent. A transactional client also
//! talks to the transaction coordinator: it registers each partition before writing to it,
//! and ends each transaction with the input offsets it covers. A consumer-group member talks
//! to the group coordinator: it joins and syncs, heartbeats, and commits positions.

use crate::cluster::ClusterMeta;
use crate::partition_log::ProducerBatch;
use crate::wire::{
    Committed, CommittedOffsets, Connection, FetchPart, FetchResult, GroupError, JoinOutcome,
    PartError, ProducePart, ProduceResult, Request, Response, SharedArena, TxnError, BROKER_PORT,
    GROUP_COORDINATOR_PORT, SCHEMA_REGISTRY_PORT, TXN_COORDINATOR_PORT,
};
use nrtsim_history::TopicName;
use nrtsim_pipeline::schema::RegistryError;
use nrtsim_pipeline::{
    Acks, Appended, Assignment, ConsumerConfig, Fetched, Log, LogError, Moved, OffsetReset,
    ProduceBatch, ProducerConfig, ProducerState, TaskCheckpoint, TopicPartition,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use tokio::task::JoinSet;

/// A simulated Kafka client for one task.
pub struct SimLog {
    arena: SharedArena,
    meta: Rc<RefCell<ClusterMeta>>,
    conns: BTreeMap<u32, Connection>,
    producer: ProducerConfig,
    consumer: ConsumerConfig,
    state: ProducerState,
    /// Producer ids that met a gap in their sequence numbers: as in Kafka, that is fatal for
    /// the producer, which carries on under a new id and never uses the old one again.
    retired: BTreeSet<u64>,
    /// The transactional side, when the client has a `transactional.id`.
    txn: Option<TxnClient>,
    /// `client.id`: what a group member's id is made from.
    client_id: String,
    /// The consumer-group side, once the client has joined a group.
    group: Option<GroupClient>,
    /// The connection to the schema registry, once used.
    registry: Option<Connection>,
    /// When the last fetch that returned records did: the records a task makes from them
    /// start their batch then, and `linger` counts from there.
    batch_opened: Option<tokio::time::Instant>,
    /// Positions `auto_offset_reset = "none"` has refused to move, each reported once.
    refused: BTreeSet<(TopicPartition, u64)>,
    /// Per partition read: the position reached and the leader epoch of the record before it,
    /// sent with the next fetch from there so the leader can tell a diverged log (KIP-320).
    read_epochs: BTreeMap<TopicPartition, (u64, u32)>,
    /// The leaders as this client last learned them, and when (Kafka's metadata cache). It
    /// asks again when a request fails or the copy is older than `metadata_max_age`; until
    /// then it goes on sending to a leader the controller has replaced, which answers as long
    /// as it does not know that itself.
    view: Option<(ClusterMeta, tokio::time::Instant)>,
}

/// A consumer-group member's dealings with the group coordinator.
struct GroupClient {
    group: String,
    conn: Connection,
    /// The member id the coordinator gave.
    member: Option<String>,
    /// The generation this member last synced.
    generation: Option<u32>,
}

fn group_error(e: GroupError) -> LogError {
    match e {
        GroupError::RebalanceInProgress => LogError::RebalanceInProgress,
        GroupError::UnknownMember | GroupError::IllegalGeneration => LogError::NotMember,
    }
}

/// A transactional producer's dealings with the coordinator.
struct TxnClient {
    id: String,
    /// The consumer whose positions commit with its transactions.
    group: String,
    timeout_ms: u64,
    conn: Connection,
    /// The epoch `InitProducerId` gave (none before it succeeded).
    epoch: Option<u32>,
    /// Whether a transaction has begun.
    open: bool,
    /// The coordinator's number for the open transaction, once it has a partition.
    number: Option<u64>,
    /// Partitions registered with the open transaction.
    added: BTreeSet<TopicPartition>,
    /// The number of the transaction the last produce call wrote in, kept when that call
    /// aborted it (see [`Log::produced_in_transaction`]).
    produced_in: Option<u64>,
}

fn txn_error(e: TxnError) -> LogError {
    match e {
        TxnError::Fenced => LogError::Fenced,
        TxnError::Aborted => LogError::TransactionAborted,
        TxnError::Concurrent => LogError::Timeout,
    }
}

impl SimLog {
    /// Kafka's `linger.ms`: the batches of one produce call wait until `linger` has passed
    /// since they opened, unless every one of them is full. A task hands over what it made of
    /// one poll in a single call, so its batches open when that poll returned (or now, for the
    /// CDC connector, which polls no topic), and the time the task spent on the records counts
    /// towards the wait.
    async fn linger(&mut self, pending: &[(usize, ProducePart)]) {
        let opened = self.batch_opened.take();
        let linger = self.producer.linger.to_std();
        let cap = self.producer.batch_records as usize;
        if linger.is_zero() || pending.iter().all(|(_, p)| p.records.len() >= cap) {
            return;
        }
        let opened = opened.unwrap_or_else(tokio::time::Instant::now);
        tokio::time::sleep_until(opened + linger).await;
    }

    /// A client with the given producer id (0 for a producer without idempotence).
    pub fn new(
        arena: SharedArena,
        meta: Rc<RefCell<ClusterMeta>>,
        producer: ProducerConfig,
        consumer: ConsumerConfig,
        producer_id: u64,
    ) -> Self {
        let producer_id = if producer.idempotence { producer_id } else { 0 };
        Self {
            arena,
            meta,
            conns: BTreeMap::new(),
            producer,
            consumer,
            state: ProducerState {
                producer_id,
                next_seq: BTreeMap::new(),
            },
            retired: BTreeSet::new(),
            txn: None,
            client_id: "client".into(),
            group: None,
            registry: None,
            batch_opened: None,
            refused: BTreeSet::new(),
            read_epochs: BTreeMap::new(),
            view: None,
        }
    }

    /// The leader of `tp` as this client knows it, asking the controller first when its copy
    /// is missing or too old.
    fn leader(&mut self, tp: &TopicPartition) -> Option<u32> {
        let now = tokio::time::Instant::now();
        let max_age = self.producer.metadata_max_age.to_std();
        if self
            .view
            .as_ref()
            .is_none_or(|(_, at)| now.duration_since(*at) >= max_age)
        {
            self.refresh_metadata();
        }
        self.view.as_ref().and_then(|(m, _)| m.leader(tp))
    }

    /// Positions to commit, each with the leader epoch of the record this client read just
    /// before it, where that is what it last read there.
    fn with_epochs(&self, offsets: &BTreeMap<TopicPartition, u64>) -> CommittedOffsets {
        offsets
            .iter()
            .map(|(tp, &offset)| {
                (
                    *tp,
                    Committed {
                        offset,
                        leader_epoch: self.epoch_before(tp, offset),
                    },
                )
            })
            .collect()
    }

    /// The leader epoch of the record before `offset` on `tp`, when this client's last read
    /// there ended at `offset` (or it was restored there with one).
    fn epoch_before(&self, tp: &TopicPartition, offset: u64) -> Option<u32> {
        self.read_epochs
            .get(tp)
            .filter(|(at, _)| *at == offset)
            .map(|(_, epoch)| *epoch)
    }

    /// Restored positions: the epochs committed with them are sent with the next fetch from
    /// there, so a log truncated below them since is found out (KIP-320).
    fn restored(&mut self, offsets: CommittedOffsets) -> BTreeMap<TopicPartition, u64> {
        offsets
            .into_iter()
            .map(|(tp, c)| {
                match c.leader_epoch {
                    Some(epoch) => self.read_epochs.insert(tp, (c.offset, epoch)),
                    None => self.read_epochs.remove(&tp),
                };
                (tp, c.offset)
            })
            .collect()
    }

    /// Takes a fresh copy of the leaders (a request failed, or the copy aged out).
    fn refresh_metadata(&mut self) {
        self.view = Some((self.meta.borrow().clone(), tokio::time::Instant::now()));
    }

    /// Sets `client.id`.
    pub fn client_id(mut self, id: &str) -> Self {
        self.client_id = id.to_string();
        self
    }

    /// Calls the group coordinator once.
    async fn call_group(&mut self, req: Request) -> Result<Response, LogError> {
        let timeout = self.producer.request_timeout.to_std();
        let g = self
            .group
            .as_mut()
            .ok_or(LogError::Unsupported("consumer groups"))?;
        match g.conn.call(req, timeout).await {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(LogError::Timeout),
            Err(e) => Err(LogError::Connection(e.to_string())),
        }
    }

    async fn call_registry(&mut self, req: Request) -> Result<Response, RegistryError> {
        let timeout = self.producer.request_timeout.to_std();
        let arena = self.arena.clone();
        let conn = self
            .registry
            .get_or_insert_with(|| Connection::new(arena, "schema-registry", SCHEMA_REGISTRY_PORT));
        conn.call(req, timeout)
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))
    }

    /// The member id and generation of a group member, for a request.
    fn membership(&self) -> Result<(String, String, u32), LogError> {
        let g = self
            .group
            .as_ref()
            .ok_or(LogError::Unsupported("consumer groups"))?;
        match (&g.member, g.generation) {
            (Some(m), Some(gen)) => Ok((g.group.clone(), m.clone(), gen)),
            _ => Err(LogError::NotMember),
        }
    }

    /// Makes the client transactional under `transactional_id`, with transactions aborted by
    /// the coordinator after `timeout_ms`. [`Log::init_transactions`] must succeed before the
    /// first transaction.
    pub fn transactional(mut self, transactional_id: &str, group: &str, timeout_ms: u64) -> Self {
        self.txn = Some(TxnClient {
            id: transactional_id.to_string(),
            group: group.to_string(),
            timeout_ms,
            conn: Connection::new(self.arena.clone(), "txn-coordinator", TXN_COORDINATOR_PORT),
            epoch: None,
            open: false,
            number: None,
            added: BTreeSet::new(),
            produced_in: None,
        });
        self
    }

    /// Calls the transaction coordinator, retrying timeouts and concurrent-transaction
    /// refusals as the producer's retries allow.
    async fn call_coordinator(&mut self, make: impl Fn() -> Request) -> Result<Response, LogError> {
        let timeout = self.producer.request_timeout.to_std();
        let backoff = self.producer.retry_backoff.to_std();
        let retries = self.producer.retries;
        let txn = self
            .txn
            .as_mut()
            .ok_or(LogError::Unsupported("transactions"))?;
        let mut attempt = 0;
        loop {
            let err = match txn.conn.call(make(), timeout).await {
                Ok(Response::InitProducerId(Err(TxnError::Concurrent)))
                | Ok(Response::AddPartitionsToTxn(Err(TxnError::Concurrent)))
                | Ok(Response::EndTxn(Err(TxnError::Concurrent)))
                | Ok(Response::FetchOffsets(Err(TxnError::Concurrent)))
                | Ok(Response::FetchPosition(Err(TxnError::Concurrent))) => LogError::Timeout,
                Ok(r) => return Ok(r),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => LogError::Timeout,
                Err(e) => LogError::Connection(e.to_string()),
            };
            if attempt >= retries {
                return Err(err);
            }
            attempt += 1;
            tokio::time::sleep(backoff).await;
        }
    }

    /// Registers with the open transaction the partitions of `batches` it does not have yet.
    async fn add_partitions(&mut self, batches: &[ProduceBatch]) -> Result<(), LogError> {
        let (id, pid, epoch, new) = {
            let Some(txn) = self.txn.as_ref() else {
                return Ok(());
            };
            if !txn.open {
                return Err(LogError::Unsupported("producing outside a transaction"));
            }
            let epoch = txn.epoch.ok_or(LogError::Fenced)?;
            let new: Vec<TopicPartition> = batches
                .iter()
                .map(|b| b.tp)
                .filter(|tp| !txn.added.contains(tp))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            (txn.id.clone(), self.state.producer_id, epoch, new)
        };
        if new.is_empty() {
            return Ok(());
        }
        let answer = self
            .call_coordinator(|| Request::AddPartitionsToTxn {
                transactional_id: id.clone(),
                pid,
                epoch,
                partitions: new.clone(),
            })
            .await?;
        match answer {
            Response::AddPartitionsToTxn(Ok(number)) => {
                let txn = self.txn.as_mut().expect("transactional");
                txn.number = Some(number);
                txn.added.extend(new);
                Ok(())
            }
            Response::AddPartitionsToTxn(Err(e)) => Err(txn_error(e)),
            _ => Err(LogError::Connection("unexpected response".into())),
        }
    }

    /// Ends the open transaction with the coordinator.
    async fn end_transaction(
        &mut self,
        commit: bool,
        offsets: &BTreeMap<TopicPartition, u64>,
        position: Option<&TaskCheckpoint>,
    ) -> Result<(), LogError> {
        let position = position.map(|p| Box::new(p.clone()));
        let committed = self.with_epochs(offsets);
        let (id, group, pid, epoch) = {
            let txn = self
                .txn
                .as_ref()
                .ok_or(LogError::Unsupported("transactions"))?;
            (
                txn.id.clone(),
                txn.group.clone(),
                self.state.producer_id,
                txn.epoch.ok_or(LogError::Fenced)?,
            )
        };
        let answer = self
            .call_coordinator(|| Request::EndTxn {
                transactional_id: id.clone(),
                pid,
                epoch,
                commit,
                group: group.clone(),
                offsets: committed.clone(),
                position: position.clone(),
            })
            .await;
        let txn = self.txn.as_mut().expect("transactional");
        txn.open = false;
        txn.number = None;
        txn.added.clear();
        match answer? {
            Response::EndTxn(Ok(epoch)) => {
                // The next transaction runs under a new epoch, numbering from zero again.
                if txn.epoch != Some(epoch) {
                    txn.epoch = Some(epoch);
                    self.state.next_seq.clear();
                }
                Ok(())
            }
            Response::EndTxn(Err(e)) => Err(txn_error(e)),
            _ => Err(LogError::Connection("unexpected response".into())),
        }
    }

    /// Asks the transaction coordinator what this producer's group last committed (`make`
    /// builds the request for the group); `what` names it when the client is not
    /// transactional.
    async fn fetch_committed(
        &mut self,
        what: &'static str,
        make: impl Fn(String) -> Request,
    ) -> Result<Response, LogError> {
        let group = match &self.txn {
            Some(t) => t.group.clone(),
            None => return Err(LogError::Unsupported(what)),
        };
        self.call_coordinator(|| make(group.clone())).await
    }

    /// Leaves a producer id whose sequence numbers no longer match the brokers' (acknowledged
    /// records were lost): a fresh id, numbering from zero.
    fn retire_producer(&mut self) {
        let old = self.state.producer_id;
        self.retired.insert(old);
        let mut fresh = old.wrapping_add(1 << 48);
        while self.retired.contains(&fresh) {
            fresh = fresh.wrapping_add(1 << 48);
        }
        self.state = ProducerState {
            producer_id: fresh,
            next_seq: BTreeMap::new(),
        };
    }

    /// `auto.offset.reset` for a position out of range (retention has deleted past it, or it is
    /// past the log end after a truncating leader change the reader could not detect by its
    /// epoch): an empty read that moves the position to the log start or to the end this
    /// reader can reach. Under `none`, the first refusal at a position is an empty read that
    /// leaves it where it is (so the task can report it), and every later one an error.
    fn reset_position(
        &mut self,
        tp: TopicPartition,
        position: u64,
        log_start: u64,
        latest: u64,
    ) -> Result<Fetched, LogError> {
        // Whatever epoch was known for this partition is of no use at the new position.
        self.read_epochs.remove(&tp);
        let to = match self.consumer.auto_offset_reset {
            OffsetReset::Earliest => log_start,
            OffsetReset::Latest => latest.max(log_start),
            OffsetReset::None if self.refused.insert((tp, position)) => position,
            OffsetReset::None => return Err(LogError::OffsetOutOfRange(tp)),
        };
        Ok(Fetched {
            tp,
            base_offset: position,
            records: Vec::new(),
            offsets: Vec::new(),
            next_offset: to,
            high_watermark: latest,
            moved: Some(Moved::Reset { log_start }),
        })
    }

    /// The leader's log diverges below `position` from what this reader read (a truncating
    /// leader change; KIP-320): an empty read that moves the reader back to `agreed`, where
    /// the logs agree, to read the records that now stand there. Under
    /// `auto_offset_reset = "none"` the reader is refused instead, as a Kafka consumer with no
    /// reset policy fails with a log-truncation error: the first refusal leaves it where it
    /// is (so the task can report it), every later one is an error.
    fn diverged(
        &mut self,
        tp: TopicPartition,
        position: u64,
        (agreed, epoch): (u64, Option<u32>),
        high_watermark: u64,
    ) -> Result<Fetched, LogError> {
        let to = match self.consumer.auto_offset_reset {
            OffsetReset::None if self.refused.insert((tp, position)) => position,
            OffsetReset::None => return Err(LogError::OffsetOutOfRange(tp)),
            OffsetReset::Earliest | OffsetReset::Latest => {
                // Keep the leader's epoch for the new position, so that a second truncation
                // before the next read is caught as well.
                match epoch {
                    Some(e) => self.read_epochs.insert(tp, (agreed, e)),
                    None => self.read_epochs.remove(&tp),
                };
                agreed
            }
        };
        Ok(Fetched {
            tp,
            base_offset: position,
            records: Vec::new(),
            offsets: Vec::new(),
            next_offset: to,
            high_watermark,
            moved: Some(Moved::Diverged),
        })
    }

    fn take_conn(&mut self, broker: u32) -> Connection {
        self.conns.remove(&broker).unwrap_or_else(|| {
            Connection::new(self.arena.clone(), &format!("broker-{broker}"), BROKER_PORT)
        })
    }

    /// Sends each broker its requests, all brokers at once; to one broker at most
    /// `in_flight` requests are outstanding. Returns each broker's answers, in order.
    async fn scatter(
        &mut self,
        requests: Vec<(u32, Vec<Request>)>,
        in_flight: usize,
        timeout: Duration,
    ) -> Vec<(u32, Vec<std::io::Result<Response>>)> {
        let mut set = JoinSet::new();
        for (broker, reqs) in requests {
            let mut conn = self.take_conn(broker);
            set.spawn_local(async move {
                let mut answers = Vec::with_capacity(reqs.len());
                let mut reqs = reqs.into_iter().peekable();
                while reqs.peek().is_some() {
                    let window: Vec<Request> = reqs.by_ref().take(in_flight).collect();
                    answers.extend(conn.call_many(window, timeout).await);
                }
                (broker, conn, answers)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (broker, conn, answers) = joined.expect("request tasks do not panic");
            self.conns.insert(broker, conn);
            out.push((broker, answers));
        }
        out.sort_by_key(|(b, _)| *b);
        out
    }

    /// acks=0: every batch is sent once, and nothing is waited for.
    async fn send_unacknowledged(
        &mut self,
        pending: Vec<(usize, ProducePart)>,
        results: &mut [Option<Result<Appended, LogError>>],
        timeout: Duration,
    ) {
        for (i, part) in pending {
            let Some(broker) = self.leader(&part.tp) else {
                results[i] = Some(Err(LogError::NotLeader(part.tp)));
                self.refresh_metadata();
                continue;
            };
            let req = Request::Produce {
                acks: Acks::None,
                parts: vec![part],
                timeout_ms: timeout.as_millis() as u64,
            };
            let mut conn = self.take_conn(broker);
            let sent = conn.send_only(req, timeout).await;
            self.conns.insert(broker, conn);
            if sent.is_err() {
                self.refresh_metadata();
            }
            results[i] = Some(
                sent.map(|_| Appended::Unacknowledged)
                    .map_err(|e| LogError::Connection(e.to_string())),
            );
        }
    }

    /// Sends every pending batch once: to each leader a pipeline of requests, each holding at
    /// most one batch per partition, at most `max_in_flight` at a time. Records what succeeded
    /// in `results`; returns what failed and may be retried.
    async fn produce_round(
        &mut self,
        pending: Vec<(usize, ProducePart)>,
        results: &mut [Option<Result<Appended, LogError>>],
        timeout: Duration,
    ) -> Vec<(usize, ProducePart, LogError)> {
        let mut failed = Vec::new();
        // Per leader, per partition, the batches in order.
        let mut by_leader: BTreeMap<u32, BTreeMap<TopicPartition, Vec<(usize, ProducePart)>>> =
            BTreeMap::new();
        for (i, part) in pending {
            match self.leader(&part.tp) {
                Some(b) => by_leader
                    .entry(b)
                    .or_default()
                    .entry(part.tp)
                    .or_default()
                    .push((i, part)),
                None => {
                    let tp = part.tp;
                    failed.push((i, part, LogError::NotLeader(tp)));
                }
            }
        }
        // Request j carries the j-th batch of every partition.
        let mut plans: Vec<(u32, Vec<RequestParts>)> = Vec::new();
        for (broker, parts) in by_leader {
            let mut requests: Vec<Vec<(usize, ProducePart)>> = Vec::new();
            for (_, batches) in parts {
                for (j, batch) in batches.into_iter().enumerate() {
                    if requests.len() <= j {
                        requests.push(Vec::new());
                    }
                    requests[j].push(batch);
                }
            }
            plans.push((broker, requests));
        }
        let acks = self.producer.acks;
        let in_flight = self.producer.max_in_flight.max(1) as usize;
        let wire: Vec<(u32, Vec<Request>)> = plans
            .iter()
            .map(|(broker, requests)| {
                let reqs = requests
                    .iter()
                    .map(|parts| Request::Produce {
                        acks,
                        parts: parts.iter().map(|(_, p)| p.clone()).collect(),
                        timeout_ms: timeout.as_millis() as u64,
                    })
                    .collect();
                (*broker, reqs)
            })
            .collect();
        let answers = self.scatter(wire, in_flight, timeout).await;
        for ((_, requests), (_, responses)) in plans.into_iter().zip(answers) {
            // A partition whose earlier batch failed this round: its later batches' sequence
            // gaps are expected, and they are retried after it.
            let mut behind: BTreeSet<TopicPartition> = BTreeSet::new();
            for (parts, answer) in requests.into_iter().zip(responses) {
                match answer {
                    Ok(Response::Produce(rs)) if rs.len() == parts.len() => {
                        for ((i, part), r) in parts.into_iter().zip(rs) {
                            let tp = part.tp;
                            match r {
                                // A retry answered with where its first try went is, to
                                // the producer, acknowledged like any append.
                                ProduceResult::Appended {
                                    base_offset,
                                    leader_epoch,
                                    skipped,
                                } => {
                                    results[i] = Some(Ok(Appended::At {
                                        base_offset,
                                        leader_epoch: Some(leader_epoch),
                                        skipped: skipped as usize,
                                    }))
                                }
                                ProduceResult::Duplicate {
                                    base_offset: Some(base_offset),
                                    leader_epoch,
                                } => {
                                    results[i] = Some(Ok(Appended::At {
                                        base_offset,
                                        leader_epoch: Some(leader_epoch),
                                        skipped: 0,
                                    }))
                                }
                                ProduceResult::Duplicate {
                                    base_offset: None, ..
                                } => results[i] = Some(Ok(Appended::Duplicate)),
                                ProduceResult::Error(PartError::OutOfOrderSequence)
                                    if !behind.contains(&tp) =>
                                {
                                    results[i] = Some(Err(LogError::OutOfOrderSequence(tp)));
                                }
                                // Not retriable: the partition has seen a newer epoch.
                                ProduceResult::Error(PartError::Fenced) => {
                                    results[i] = Some(Err(LogError::Fenced));
                                }
                                ProduceResult::Error(e) => {
                                    behind.insert(tp);
                                    failed.push((i, part, part_error(tp, e)));
                                }
                            }
                        }
                    }
                    other => {
                        let err = match other {
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => LogError::Timeout,
                            Err(e) => LogError::Connection(e.to_string()),
                            Ok(_) => LogError::Connection("unexpected response".into()),
                        };
                        for (i, part) in parts {
                            behind.insert(part.tp);
                            failed.push((i, part, err.clone()));
                        }
                    }
                }
            }
        }
        failed
    }
}

/// The batches of one produce request, each with its index among the caller's batches.
type RequestParts = Vec<(usize, ProducePart)>;

fn finish(results: Vec<Option<Result<Appended, LogError>>>) -> Vec<Result<Appended, LogError>> {
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(LogError::Connection("not sent".into()))))
        .collect()
}

fn part_error(tp: TopicPartition, e: PartError) -> LogError {
    match e {
        PartError::NotLeader => LogError::NotLeader(tp),
        PartError::NotEnoughReplicas | PartError::NotEnoughReplicasAfterAppend => {
            LogError::NotEnoughReplicas(tp)
        }
        PartError::OutOfOrderSequence => LogError::OutOfOrderSequence(tp),
        PartError::Timeout => LogError::Timeout,
        PartError::Fenced => LogError::Fenced,
    }
}

impl Log for SimLog {
    fn partitions(&self, topic: TopicName) -> u32 {
        self.meta
            .borrow()
            .topic_partitions
            .get(&topic)
            .copied()
            .unwrap_or(1)
    }

    async fn produce(&mut self, batches: Vec<ProduceBatch>) -> Vec<Result<Appended, LogError>> {
        let added = self.add_partitions(&batches).await;
        // Taken now: a fenced batch below aborts the transaction, which clears its number.
        if let Some(txn) = self.txn.as_mut() {
            txn.produced_in = added.is_ok().then_some(txn.number).flatten();
        }
        if let Err(e) = added {
            return vec![Err(e); batches.len()];
        }
        let pid = self.state.producer_id;
        let (epoch, transactional) = match &self.txn {
            Some(t) => (t.epoch.unwrap_or(0), true),
            None => (0, false),
        };
        // Sequence numbers are fixed when a batch is made, so every retry carries the same ones.
        let mut pending: Vec<(usize, ProducePart)> = batches
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let producer = (pid != 0).then(|| {
                    let seq = self.state.next_seq.entry(b.tp).or_insert(0);
                    let base = *seq;
                    *seq += b.records.len() as u64;
                    ProducerBatch {
                        pid,
                        epoch,
                        base_seq: base,
                        transactional,
                    }
                });
                (
                    i,
                    ProducePart {
                        tp: b.tp,
                        producer,
                        records: b.records,
                    },
                )
            })
            .collect();
        self.linger(&pending).await;
        let mut results: Vec<Option<Result<Appended, LogError>>> = vec![None; pending.len()];
        let timeout = self.producer.request_timeout.to_std();
        if self.producer.acks == Acks::None {
            self.send_unacknowledged(pending, &mut results, timeout)
                .await;
            return finish(results);
        }
        let mut attempt = 0;
        while !pending.is_empty() {
            let mut failed = self.produce_round(pending, &mut results, timeout).await;
            if failed.is_empty() {
                break;
            }
            if attempt >= self.producer.retries {
                for (i, _, e) in failed {
                    results[i] = Some(Err(e));
                }
                self.refresh_metadata();
                break;
            }
            attempt += 1;
            tokio::time::sleep(self.producer.retry_backoff.to_std()).await;
            // Asked after the backoff, so that a leader elected meanwhile is found.
            self.refresh_metadata();
            // Retries go out in the order the batches were made.
            failed.sort_by_key(|(i, _, _)| *i);
            pending = failed.into_iter().map(|(i, p, _)| (i, p)).collect();
        }
        let mut results = finish(results);
        if results
            .iter()
            .any(|r| matches!(r, Err(LogError::OutOfOrderSequence(_))))
        {
            self.retire_producer();
        }
        if self.txn.is_some() && results.iter().any(|r| r == &Err(LogError::Fenced)) {
            // A newer epoch on a partition: another instance took over, or the coordinator
            // aborted the transaction on its timeout. Only the coordinator can tell which.
            let verdict = match self.end_transaction(false, &BTreeMap::new(), None).await {
                Err(LogError::Fenced) => LogError::Fenced,
                _ => LogError::TransactionAborted,
            };
            for r in &mut results {
                if r == &Err(LogError::Fenced) {
                    *r = Err(verdict.clone());
                }
            }
        }
        results
    }

    async fn fetch(
        &mut self,
        positions: &[(TopicPartition, u64)],
    ) -> Vec<Result<Fetched, LogError>> {
        if positions.is_empty() {
            tokio::time::sleep(self.consumer.fetch_max_wait.to_std()).await;
            return Vec::new();
        }
        let mut results: Vec<Result<Fetched, LogError>> = positions
            .iter()
            .map(|(tp, _)| Err(LogError::NotLeader(*tp)))
            .collect();
        // A position read, or committed, under a newer leader epoch than this client's copy of
        // the leaders knows: the copy is stale, and asked for again before the fetch (as
        // Kafka's consumer does), lest a deposed leader answer for the partition.
        let stale = positions.iter().any(|(tp, _)| {
            let known = self
                .view
                .as_ref()
                .and_then(|(m, _)| m.get(tp))
                .map(|m| m.leader_epoch);
            self.read_epochs
                .get(tp)
                .zip(known)
                .is_some_and(|((_, read), known)| *read > known)
        });
        if stale {
            self.refresh_metadata();
        }
        let mut by_leader: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, (tp, _)) in positions.iter().enumerate() {
            if let Some(b) = self.leader(tp) {
                by_leader.entry(b).or_default().push(i);
            }
        }
        let max_wait = self.consumer.fetch_max_wait.to_std();
        let requests: Vec<(u32, Vec<Request>)> = by_leader
            .iter()
            .map(|(b, idx)| {
                let parts = idx
                    .iter()
                    .map(|&i| {
                        let (tp, offset) = positions[i];
                        FetchPart {
                            tp,
                            offset,
                            last_epoch: self.epoch_before(&tp, offset),
                        }
                    })
                    .collect();
                let req = Request::Fetch {
                    replica: None,
                    parts,
                    max_wait_ms: max_wait.as_millis() as u64,
                    max_records: self.consumer.max_poll_records as usize,
                    isolation: self.consumer.isolation,
                };
                (*b, vec![req])
            })
            .collect();
        let timeout = max_wait + self.producer.request_timeout.to_std();
        let answers: Vec<(u32, std::io::Result<Response>)> = if requests.is_empty() {
            Vec::new()
        } else {
            let answers = self.scatter(requests, 1, timeout).await;
            answers
                .into_iter()
                .map(|(b, mut rs)| {
                    (
                        b,
                        rs.pop()
                            .unwrap_or_else(|| Err(std::io::ErrorKind::TimedOut.into())),
                    )
                })
                .collect()
        };
        let mut any_records = false;
        for (broker, answer) in answers {
            let idx = by_leader.remove(&broker).unwrap_or_default();
            match answer {
                Ok(Response::Fetch(rs)) if rs.len() == idx.len() => {
                    for (i, (tp, r)) in idx.into_iter().zip(rs) {
                        results[i] = match r {
                            FetchResult::Records {
                                base_offset,
                                records,
                                offsets,
                                next_offset,
                                last_epoch,
                                high_watermark,
                            } => {
                                any_records |= next_offset > base_offset;
                                if let Some(epoch) = last_epoch {
                                    self.read_epochs.insert(tp, (next_offset, epoch));
                                }
                                Ok(Fetched {
                                    tp,
                                    base_offset,
                                    records: records
                                        .into_iter()
                                        .map(|s| s.record.clone())
                                        .collect(),
                                    offsets,
                                    next_offset,
                                    high_watermark,
                                    moved: None,
                                })
                            }
                            FetchResult::Diverging {
                                truncate_to,
                                epoch,
                                high_watermark,
                            } if truncate_to < positions[i].1 => self.diverged(
                                tp,
                                positions[i].1,
                                (truncate_to, epoch),
                                high_watermark,
                            ),
                            FetchResult::Diverging { .. } => Err(LogError::NotLeader(tp)),
                            FetchResult::OutOfRange { log_start, latest } => {
                                self.reset_position(tp, positions[i].1, log_start, latest)
                            }
                            FetchResult::Error(e) => Err(part_error(tp, e)),
                        };
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    for i in idx {
                        results[i] = Err(LogError::Connection(e.to_string()));
                    }
                }
            }
        }
        // Only a poll that returned records opens a batch; after any other, a batch opens
        // when it is handed over.
        self.batch_opened = any_records.then(tokio::time::Instant::now);
        let leaders_failed = results.iter().any(|r| {
            matches!(
                r,
                Err(LogError::NotLeader(_) | LogError::Timeout | LogError::Connection(_))
            )
        });
        if !any_records && results.iter().any(Result::is_err) {
            // Nothing to read and something failed without waiting: back off, so a task whose
            // leaders are all gone does not spin in zero simulated time.
            tokio::time::sleep(self.producer.retry_backoff.to_std()).await;
        }
        if leaders_failed {
            self.refresh_metadata();
        }
        results
    }

    fn producer_state(&self) -> ProducerState {
        self.state.clone()
    }

    fn restore_producer_state(&mut self, state: ProducerState) {
        if self.state.producer_id == 0 || self.txn.is_some() {
            // A transactional producer's identity comes from the coordinator.
            return;
        }
        if self.retired.contains(&state.producer_id) {
            // The checkpoint's producer was retired since: keep the fresh one.
            self.state.next_seq.clear();
        } else {
            self.state = state;
        }
    }

    async fn init_transactions(&mut self) -> Result<(), LogError> {
        let (id, timeout_ms) = match &self.txn {
            Some(t) => (t.id.clone(), t.timeout_ms),
            None => return Err(LogError::Unsupported("transactions")),
        };
        let answer = self
            .call_coordinator(|| Request::InitProducerId {
                transactional_id: id.clone(),
                timeout_ms,
            })
            .await?;
        match answer {
            Response::InitProducerId(Ok((pid, epoch))) => {
                self.state = ProducerState {
                    producer_id: pid,
                    next_seq: BTreeMap::new(),
                };
                let txn = self.txn.as_mut().expect("transactional");
                txn.epoch = Some(epoch);
                txn.open = false;
                txn.number = None;
                txn.added.clear();
                Ok(())
            }
            Response::InitProducerId(Err(e)) => Err(txn_error(e)),
            _ => Err(LogError::Connection("unexpected response".into())),
        }
    }

    async fn begin_transaction(&mut self) -> Result<(), LogError> {
        let txn = self
            .txn
            .as_mut()
            .ok_or(LogError::Unsupported("transactions"))?;
        if txn.epoch.is_none() {
            return Err(LogError::Fenced);
        }
        txn.open = true;
        Ok(())
    }

    async fn commit_transaction(
        &mut self,
        offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), LogError> {
        self.end_transaction(true, offsets, None).await
    }

    async fn commit_transaction_with_position(
        &mut self,
        position: &TaskCheckpoint,
    ) -> Result<(), LogError> {
        self.end_transaction(true, &BTreeMap::new(), Some(position))
            .await
    }

    async fn committed_position(&mut self) -> Result<Option<TaskCheckpoint>, LogError> {
        match self
            .fetch_committed("committed positions", |group| Request::FetchPosition {
                group,
            })
            .await?
        {
            Response::FetchPosition(Ok(position)) => Ok(position.map(|p| *p)),
            Response::FetchPosition(Err(e)) => Err(txn_error(e)),
            _ => Err(LogError::Connection("unexpected response".into())),
        }
    }

    async fn abort_transaction(&mut self) -> Result<(), LogError> {
        self.end_transaction(false, &BTreeMap::new(), None).await
    }

    fn produced_in_transaction(&self) -> Option<u64> {
        self.txn.as_ref().and_then(|t| t.produced_in)
    }

    fn in_transaction(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.open)
    }

    async fn join_group(
        &mut self,
        group: &str,
        topics: &[TopicName],
    ) -> Result<Assignment, LogError> {
        if self.group.as_ref().is_none_or(|g| g.group != group) {
            self.group = Some(GroupClient {
                group: group.to_string(),
                conn: Connection::new(
                    self.arena.clone(),
                    "group-coordinator",
                    GROUP_COORDINATOR_PORT,
                ),
                member: None,
                generation: None,
            });
        }
        let topics: Vec<(TopicName, u32)> =
            topics.iter().map(|t| (*t, self.partitions(*t))).collect();
        let session_timeout_ms = self.consumer.session_timeout.ms();
        // Asked again while the rebalance waits for the other members; every answer counts
        // as a sign of life, so the wait cannot outlast this member's session.
        let poll = Duration::from_millis(100);
        loop {
            let member = self.group.as_ref().expect("joining").member.clone();
            let req = Request::JoinGroup {
                group: group.to_string(),
                client: self.client_id.clone(),
                member,
                topics: topics.clone(),
                session_timeout_ms,
            };
            let generation = match self.call_group(req).await? {
                Response::JoinGroup(Ok(JoinOutcome::Pending { member })) => {
                    self.group.as_mut().expect("joining").member = Some(member);
                    tokio::time::sleep(poll).await;
                    continue;
                }
                Response::JoinGroup(Ok(JoinOutcome::Joined { member, generation })) => {
                    self.group.as_mut().expect("joining").member = Some(member);
                    generation
                }
                Response::JoinGroup(Err(e)) => return Err(group_error(e)),
                _ => return Err(LogError::Connection("unexpected response".into())),
            };
            let member = self
                .group
                .as_ref()
                .and_then(|g| g.member.clone())
                .expect("joined");
            let req = Request::SyncGroup {
                group: group.to_string(),
                member,
                generation,
            };
            match self.call_group(req).await? {
                Response::SyncGroup(Ok(partitions)) => {
                    self.group.as_mut().expect("joined").generation = Some(generation);
                    return Ok(Assignment {
                        generation,
                        partitions,
                    });
                }
                // Another rebalance began before the sync: join it.
                Response::SyncGroup(Err(GroupError::RebalanceInProgress))
                | Response::SyncGroup(Err(GroupError::IllegalGeneration)) => {
                    self.group.as_mut().expect("joined").generation = Some(generation);
                }
                Response::SyncGroup(Err(GroupError::UnknownMember)) => {
                    let g = self.group.as_mut().expect("joined");
                    g.member = None;
                    g.generation = None;
                }
                _ => return Err(LogError::Connection("unexpected response".into())),
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), LogError> {
        let (group, member, generation) = self.membership()?;
        let req = Request::GroupHeartbeat {
            group,
            member,
            generation,
        };
        match self.call_group(req).await? {
            Response::GroupHeartbeat(Ok(())) => Ok(()),
            Response::GroupHeartbeat(Err(e)) => {
                if e == GroupError::UnknownMember {
                    let g = self.group.as_mut().expect("member");
                    g.member = None;
                    g.generation = None;
                }
                Err(group_error(e))
            }
            _ => Err(LogError::Connection("unexpected response".into())),
        }
    }

    async fn commit_offsets(
        &mut self,
        offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), LogError> {
        let (group, member, generation) = self.membership()?;
        let committed = self.with_epochs(offsets);
        let backoff = self.producer.retry_backoff.to_std();
        let mut attempt = 0;
        loop {
            let req = Request::OffsetCommit {
                group: group.clone(),
                member: member.clone(),
                generation,
                offsets: committed.clone(),
            };
            let err = match self.call_group(req).await {
                Ok(Response::OffsetCommit(Ok(()))) => return Ok(()),
                Ok(Response::OffsetCommit(Err(_))) => return Err(LogError::NotMember),
                Ok(_) => LogError::Connection("unexpected response".into()),
                Err(e) => e,
            };
            if attempt >= self.producer.retries {
                return Err(err);
            }
            attempt += 1;
            tokio::time::sleep(backoff).await;
        }
    }

    async fn group_offsets(&mut self) -> Result<BTreeMap<TopicPartition, u64>, LogError> {
        let group = self
            .group
            .as_ref()
            .map(|g| g.group.clone())
            .ok_or(LogError::Unsupported("consumer groups"))?;
        match self.call_group(Request::OffsetFetch { group }).await? {
            Response::OffsetFetch(offsets) => Ok(self.restored(offsets)),
            _ => Err(LogError::Connection("unexpected response".into())),
        }
    }

    async fn register_schema(&mut self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let req = Request::RegisterSchema {
            subject: subject.to_string(),
            schema: schema.to_string(),
        };
        match self.call_registry(req).await? {
            Response::RegisterSchema(answer) => answer,
            _ => Err(RegistryError::Unavailable("unexpected response".into())),
        }
    }

    async fn schema_by_id(&mut self, id: u32) -> Result<String, RegistryError> {
        match self.call_registry(Request::GetSchema { id }).await? {
            Response::GetSchema(answer) => answer,
            _ => Err(RegistryError::Unavailable("unexpected response".into())),
        }
    }

    async fn committed_offsets(&mut self) -> Result<BTreeMap<TopicPartition, u64>, LogError> {
        match self
            .fetch_committed("committed offsets", |group| Request::FetchOffsets { group })
            .await?
        {
            Response::FetchOffsets(Ok(offsets)) => Ok(self.restored(offsets)),
            Response::FetchOffsets(Err(e)) => Err(txn_error(e)),
            _ => Err(LogError::Connection("unexpected response".into())),
        }
    }
}
