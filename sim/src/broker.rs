//! A broker host: serves produce and fetch requests for the partitions it leads, replicates
//! the partitions it follows by fetching from their leaders, truncates its log where it
//! diverges from a new leader, keeps the high watermark, shrinks and expands the ISR through
//! the controller, and heartbeats to the controller to learn the cluster's metadata.

use crate::cluster::ClusterMeta;
use crate::host_env::{sim_instant, sim_now_ms, Slowdowns};
use crate::partition_log::{LeaderAppend, PartitionLog};
use crate::progress::Recorder;
use crate::wire::{
    self, Connection, FetchPart, FetchResult, Message, PartError, ProducePart, ProduceResult,
    Request, Response, SharedArena, BROKER_PORT, CONTROLLER_PORT,
};
use crate::PlatformConfig;
use nrtsim_history::{Observation, TopicName};
use nrtsim_pipeline::{slowed_us, Acks, Isolation, TopicPartition};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use turmoil::net::{TcpListener, TcpStream};

/// What a broker keeps on disk: its replica logs. A crash keeps them whole (the page cache
/// survives a process's death); a power loss keeps only what was flushed.
#[derive(Default)]
pub struct BrokerDisk {
    /// One log per partition replica the broker holds.
    pub logs: BTreeMap<TopicPartition, PartitionLog>,
    /// How often the broker has started.
    pub starts: u64,
}

impl BrokerDisk {
    /// Loses every log's unflushed tail.
    pub fn lose_unflushed(&mut self) {
        for log in self.logs.values_mut() {
            log.lose_unflushed();
        }
    }
}

/// Produce errors injected into brokers: per broker, the share of batches it answers with a
/// retriable error, half of them refused (NOT_ENOUGH_REPLICAS) and half appended anyway
/// (NOT_ENOUGH_REPLICAS_AFTER_APPEND), and the seeded draws that pick them. Shared by every
/// broker.
pub struct ProduceErrors {
    rates: BTreeMap<u32, f64>,
    rng: ChaCha8Rng,
}

impl ProduceErrors {
    /// No errors yet; draws from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rates: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Sets the share of batches `broker` answers with an error (0 stops it).
    pub fn set_rate(&mut self, broker: u32, rate: f64) {
        if rate > 0.0 {
            self.rates.insert(broker, rate);
        } else {
            self.rates.remove(&broker);
        }
    }

    /// Whether to fail this batch, and if so whether before or after appending it.
    fn strike(&mut self, broker: u32) -> Option<Strike> {
        let rate = *self.rates.get(&broker)?;
        if self.rng.gen::<f64>() >= rate {
            return None;
        }
        Some(if self.rng.gen::<bool>() {
            Strike::BeforeAppend
        } else {
            Strike::AfterAppend
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strike {
    BeforeAppend,
    AfterAppend,
}

/// Everything a broker host needs to start (again).
#[derive(Clone)]
pub struct BrokerSetup {
    /// Broker id.
    pub id: u32,
    /// The broker's disk.
    pub disk: Rc<RefCell<BrokerDisk>>,
    /// The message arena.
    pub arena: SharedArena,
    /// Cluster settings.
    pub platform: PlatformConfig,
    /// Simulated time per record appended, in µs.
    pub append_us: u64,
    /// Injected produce errors.
    pub errors: Rc<RefCell<ProduceErrors>>,
    /// The hosts a `slow` fault holds, and how much slower their appends are.
    pub slowdowns: Rc<RefCell<Slowdowns>>,
    /// Where the broker records what it alone sees: abort markers with the records they abort,
    /// leader changes with their log ends, and log starts retention moved.
    pub recorder: Rc<RefCell<Recorder>>,
}

#[derive(Clone, Copy)]
struct Follower {
    leo: u64,
    caught_up_at: Instant,
    /// The leader's log end and the time at the follower's previous fetch: a follower that
    /// has now reached that end was caught up then (Kafka's rule, which keeps a follower that
    /// trails steady traffic by a little in the ISR).
    previous_fetch: Option<(u64, Instant)>,
    /// Whether it has fetched in this leadership (a silent replica never rejoins the ISR).
    fetched: bool,
}

/// A broker's state that dies with it.
struct Live {
    id: u32,
    view: ClusterMeta,
    hw: BTreeMap<TopicPartition, u64>,
    followers: BTreeMap<TopicPartition, BTreeMap<u32, Follower>>,
    /// ISR changes sent to the controller and not answered yet, with the partition epoch each
    /// was worked out from.
    proposed_isr: BTreeMap<TopicPartition, (u32, Vec<u32>)>,
}

impl Live {
    fn leads(&self, tp: &TopicPartition) -> Option<u32> {
        self.view
            .get(tp)
            .filter(|m| m.leader == Some(self.id))
            .map(|m| m.leader_epoch)
    }

    /// Whether the high watermark waits for `replica`: it is in the ISR, or a change of the ISR
    /// on its way to the controller adds it (Kafka's maximal ISR, KIP-497). A replica the
    /// controller may already count as in sync is one a new leader may be chosen from, so
    /// nothing is acknowledged that it lacks.
    fn in_maximal_isr(&self, tp: &TopicPartition, replica: u32) -> bool {
        let Some(m) = self.view.get(tp) else {
            return false;
        };
        m.isr.contains(&replica)
            || self.proposed_isr.get(tp).is_some_and(|(epoch, proposed)| {
                *epoch == m.partition_epoch && proposed.contains(&replica)
            })
    }

    /// Whether `tp`'s ISR, as this broker knows it, has at least `min` replicas.
    fn isr_holds_min(&self, tp: &TopicPartition, min: u32) -> bool {
        self.view.get(tp).is_some_and(|m| m.isr.len() as u32 >= min)
    }
}

struct Broker {
    setup: BrokerSetup,
    live: RefCell<Live>,
    changed: Notify,
}

fn broker_name(id: u32) -> String {
    format!("broker-{id}")
}

impl Broker {
    /// How much slower than its costs say this broker works now (a `slow` fault).
    fn slowdown(&self) -> f64 {
        let slowdowns = self.setup.slowdowns.borrow();
        if slowdowns.is_empty() {
            1.0
        } else {
            slowdowns.of(&broker_name(self.setup.id))
        }
    }
}

/// Runs a broker until the host is crashed.
pub async fn run_broker(setup: BrokerSetup) -> turmoil::Result {
    setup.disk.borrow_mut().starts += 1;
    let hw = setup
        .disk
        .borrow()
        .logs
        .iter()
        .map(|(tp, l)| (*tp, l.hw_checkpoint))
        .collect();
    let broker = Rc::new(Broker {
        live: RefCell::new(Live {
            id: setup.id,
            view: ClusterMeta::default(),
            hw,
            followers: BTreeMap::new(),
            proposed_isr: BTreeMap::new(),
        }),
        setup,
        changed: Notify::new(),
    });
    let listener = TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
    tokio::task::spawn_local(heartbeat_loop(broker.clone()));
    tokio::task::spawn_local(isr_loop(broker.clone()));
    tokio::task::spawn_local(flush_loop(broker.clone()));
    tokio::task::spawn_local(retention_loop(broker.clone()));
    let others: Vec<u32> = (0..broker.setup.platform.brokers)
        .filter(|b| *b != broker.setup.id)
        .collect();
    for leader in others {
        tokio::task::spawn_local(replica_fetcher(broker.clone(), leader));
    }
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(serve(broker.clone(), stream));
    }
}

async fn serve(broker: Rc<Broker>, mut stream: TcpStream) {
    let arena = broker.setup.arena.clone();
    while let Ok(msg) = wire::recv(&arena, &mut stream).await {
        let Message::Request(req) = msg else { return };
        let reply = match req {
            Request::Produce {
                acks,
                parts,
                timeout_ms,
            } => {
                let results = produce(&broker, acks, parts, timeout_ms).await;
                if acks == Acks::None {
                    // No answer is sent; on an error the broker closes the connection instead,
                    // as Kafka's does, so that the producer notices and asks for the leaders.
                    if results.iter().any(|r| matches!(r, ProduceResult::Error(_))) {
                        return;
                    }
                    continue;
                }
                Response::Produce(results)
            }
            Request::Fetch {
                replica,
                parts,
                max_wait_ms,
                max_records,
                isolation,
            } => Response::Fetch(
                fetch(
                    &broker,
                    replica,
                    &parts,
                    max_wait_ms,
                    max_records,
                    isolation,
                )
                .await,
            ),
            Request::WriteTxnMarkers {
                pid,
                epoch,
                commit,
                partitions,
                timeout_ms,
            } => Response::WriteTxnMarkers(
                write_markers(&broker, pid, epoch, commit, &partitions, timeout_ms).await,
            ),
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

/// Records where an acks=0 batch went: its producer hears nothing, so only the leader can.
fn record_unacknowledged(broker: &Broker, part: &ProducePart, base_offset: u64, skipped: u64) {
    broker
        .setup
        .recorder
        .borrow_mut()
        .record(Observation::AppendedUnacknowledged {
            t_ms: sim_now_ms(),
            host: broker_name(broker.setup.id),
            topic: part.tp.topic,
            partition: part.tp.partition,
            base_offset,
            change_ids: part
                .records
                .iter()
                .skip(skipped as usize)
                .map(|r| r.meta.change_id)
                .collect(),
        });
}

async fn produce(
    broker: &Broker,
    acks: Acks,
    parts: Vec<ProducePart>,
    timeout_ms: u64,
) -> Vec<ProduceResult> {
    let mut results = Vec::with_capacity(parts.len());
    let mut waits: Vec<(usize, TopicPartition, u32, u64)> = Vec::new();
    let mut appended = 0u64;
    for part in &parts {
        let strike = if acks == Acks::None {
            None
        } else {
            broker.setup.errors.borrow_mut().strike(broker.setup.id)
        };
        let res = {
            let live = broker.live.borrow();
            match (live.leads(&part.tp), live.view.get(&part.tp)) {
                (Some(epoch), Some(meta)) => {
                    let too_few = acks == Acks::All
                        && (meta.isr.len() as u32) < broker.setup.platform.min_insync_replicas;
                    if too_few || strike == Some(Strike::BeforeAppend) {
                        ProduceResult::Error(PartError::NotEnoughReplicas)
                    } else {
                        let mut disk = broker.setup.disk.borrow_mut();
                        let log = disk.logs.entry(part.tp).or_default();
                        match log.append_leader(sim_now_ms(), epoch, &part.records, part.producer) {
                            LeaderAppend::Appended {
                                base_offset,
                                count,
                                skipped,
                            } => {
                                appended += count;
                                if acks == Acks::None && part.tp.topic != TopicName::Schemas {
                                    record_unacknowledged(broker, part, base_offset, skipped);
                                }
                                if strike == Some(Strike::AfterAppend) {
                                    ProduceResult::Error(PartError::NotEnoughReplicasAfterAppend)
                                } else {
                                    waits.push((
                                        results.len(),
                                        part.tp,
                                        epoch,
                                        base_offset + count,
                                    ));
                                    ProduceResult::Appended {
                                        base_offset,
                                        leader_epoch: epoch,
                                        skipped,
                                    }
                                }
                            }
                            LeaderAppend::Duplicate { end, base_offset } => {
                                // Acknowledged only once committed, like a first try: the
                                // original may still be waiting for the followers.
                                waits.push((results.len(), part.tp, epoch, end));
                                ProduceResult::Duplicate {
                                    base_offset,
                                    leader_epoch: epoch,
                                }
                            }
                            LeaderAppend::OutOfOrder => {
                                ProduceResult::Error(PartError::OutOfOrderSequence)
                            }
                            LeaderAppend::Fenced => ProduceResult::Error(PartError::Fenced),
                        }
                    }
                }
                _ => ProduceResult::Error(PartError::NotLeader),
            }
        };
        results.push(res);
    }
    if appended > 0 {
        let us = slowed_us(broker.setup.append_us * appended, broker.slowdown());
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        for (_, tp, _, _) in &waits {
            advance_hw(broker, tp);
        }
        broker.changed.notify_waiters();
    }
    if acks != Acks::All {
        return results;
    }
    // acks=all: answer once the high watermark covers every appended batch, and only if the
    // ISR still holds min.insync.replicas then. The ISR may have shrunk while the batch waited,
    // and the watermark moved with it: the batch may then be on the leader alone, which is not
    // what acks=all promises, so the producer is told NOT_ENOUGH_REPLICAS_AFTER_APPEND and
    // retries (as Kafka's leader answers at that point).
    let deadline = sim_instant() + Duration::from_millis(timeout_ms);
    for (i, tp, epoch, end) in waits {
        loop {
            let notified = broker.changed.notified();
            {
                let live = broker.live.borrow();
                if live.leads(&tp) != Some(epoch) {
                    results[i] = ProduceResult::Error(PartError::NotLeader);
                    break;
                }
                if live.hw.get(&tp).copied().unwrap_or(0) >= end {
                    if !live.isr_holds_min(&tp, broker.setup.platform.min_insync_replicas) {
                        results[i] = ProduceResult::Error(PartError::NotEnoughReplicasAfterAppend);
                    }
                    break;
                }
            }
            if sim_instant() >= deadline {
                results[i] = ProduceResult::Error(PartError::Timeout);
                break;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
    results
}

/// Writes a transaction's markers on the partitions this broker leads and waits until they
/// are replicated to the ISR (a marker that a new leader lacked would leave the transaction
/// open there for ever). `true` per partition once it is.
async fn write_markers(
    broker: &Broker,
    pid: u64,
    producer_epoch: u32,
    commit: bool,
    partitions: &[TopicPartition],
    timeout_ms: u64,
) -> Vec<bool> {
    let mut done = vec![false; partitions.len()];
    let mut waits = Vec::new();
    for (i, tp) in partitions.iter().enumerate() {
        let Some(epoch) = broker.live.borrow().leads(tp) else {
            continue;
        };
        // Markers are written as acks=all writes are, refused while the ISR is below
        // min.insync.replicas: a marker only the leader held could be lost with it, leaving
        // the transaction open there (or, closed by a later marker, decided the wrong way).
        let isr = broker.live.borrow().view.get(tp).map_or(0, |m| m.isr.len());
        if (isr as u32) < broker.setup.platform.min_insync_replicas {
            continue;
        }
        let mut disk = broker.setup.disk.borrow_mut();
        let log = disk.logs.entry(*tp).or_default();
        match log.append_marker(sim_now_ms(), epoch, pid, producer_epoch, commit) {
            Some(offset) => {
                let aborted = if commit {
                    Vec::new()
                } else {
                    log.aborted_by(offset)
                };
                waits.push((i, *tp, epoch, offset + 1, aborted));
            }
            // The producer has moved to a newer epoch here: nothing of this one is open.
            None => done[i] = true,
        }
    }
    if waits.is_empty() {
        return done;
    }
    for (_, tp, _, _, _) in &waits {
        advance_hw(broker, tp);
    }
    broker.changed.notify_waiters();
    let deadline = sim_instant() + Duration::from_millis(timeout_ms);
    for (i, tp, epoch, end, aborted) in waits {
        // Whether the high watermark came to cover the marker.
        let mut covered = false;
        loop {
            let notified = broker.changed.notified();
            {
                let live = broker.live.borrow();
                if live.leads(&tp) != Some(epoch) {
                    break;
                }
                if live.hw.get(&tp).copied().unwrap_or(0) >= end {
                    covered = true;
                    // Written under the same rule as an acks=all batch: not done if the ISR
                    // fell below min.insync.replicas while it waited, and the coordinator
                    // writes it again.
                    done[i] = live.isr_holds_min(&tp, broker.setup.platform.min_insync_replicas);
                    break;
                }
            }
            if sim_instant() >= deadline {
                break;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        // Reported once the abort is replicated to the ISR: an unreplicated marker (and the
        // records it names) may yet be truncated away, and those offsets written again. A
        // covered marker is reported even when it is to be written again: the second one
        // finds nothing open, and names no records.
        if covered && !aborted.is_empty() {
            let (offsets, change_ids) = aborted.into_iter().unzip();
            broker
                .setup
                .recorder
                .borrow_mut()
                .record(Observation::AbortMarker {
                    t_ms: sim_now_ms(),
                    topic: tp.topic,
                    partition: tp.partition,
                    offsets,
                    change_ids,
                });
        }
    }
    done
}

/// Recomputes a led partition's high watermark from the ISR's log ends; never moves it back.
fn advance_hw(broker: &Broker, tp: &TopicPartition) {
    let mut live = broker.live.borrow_mut();
    let Some(meta) = live.view.get(tp).cloned() else {
        return;
    };
    if meta.leader != Some(live.id) {
        return;
    }
    let leo = broker
        .setup
        .disk
        .borrow()
        .logs
        .get(tp)
        .map_or(0, PartitionLog::leo);
    let mut hw = leo;
    let waited_for = meta
        .replicas
        .iter()
        .filter(|&&r| r != live.id && live.in_maximal_isr(tp, r));
    for r in waited_for {
        let f = live
            .followers
            .get(tp)
            .and_then(|m| m.get(r))
            .map_or(0, |f| f.leo);
        hw = hw.min(f);
    }
    let cur = live.hw.entry(*tp).or_insert(0);
    if hw > *cur {
        *cur = hw;
        if let Some(log) = broker.setup.disk.borrow_mut().logs.get_mut(tp) {
            log.hw_checkpoint = hw;
        }
    }
}

async fn fetch(
    broker: &Broker,
    replica: Option<u32>,
    parts: &[FetchPart],
    max_wait_ms: u64,
    max_records: usize,
    isolation: Isolation,
) -> Vec<(TopicPartition, FetchResult)> {
    if let Some(r) = replica {
        let now = sim_instant();
        for part in parts {
            note_follower(broker, r, part, now);
        }
        broker.changed.notify_waiters();
    }
    let deadline = sim_instant() + Duration::from_millis(max_wait_ms);
    loop {
        let notified = broker.changed.notified();
        let results: Vec<(TopicPartition, FetchResult)> = parts
            .iter()
            .map(|p| (p.tp, fetch_one(broker, replica, p, max_records, isolation)))
            .collect();
        let ready = results.iter().zip(parts).any(|((_, r), p)| match r {
            FetchResult::Records { next_offset, .. } => *next_offset > p.offset,
            _ => true,
        });
        if ready || sim_instant() >= deadline {
            return results;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn note_follower(broker: &Broker, replica: u32, part: &FetchPart, now: Instant) {
    {
        let mut live = broker.live.borrow_mut();
        if live.leads(&part.tp).is_none() {
            return;
        }
        let (leo, diverging) = {
            let disk = broker.setup.disk.borrow();
            let log = disk.logs.get(&part.tp);
            let leo = log.map_or(0, PartitionLog::leo);
            // A follower whose log diverges from ours holds nothing of ours yet: it neither
            // counts toward the high watermark nor rejoins the ISR until it has truncated.
            let held = |epoch| log.and_then(|l| l.epoch_end(epoch));
            let diverging = part.offset > leo
                || part.last_epoch.is_some_and(|e| {
                    held(e).is_none_or(|(held, end)| held != e || end < part.offset)
                });
            (leo, diverging)
        };
        if diverging {
            return;
        }
        let f = live
            .followers
            .entry(part.tp)
            .or_default()
            .entry(replica)
            .or_insert(Follower {
                leo: 0,
                caught_up_at: now,
                previous_fetch: None,
                fetched: false,
            });
        f.leo = part.offset.min(leo);
        f.fetched = true;
        if part.offset >= leo {
            f.caught_up_at = now;
        } else if let Some((end, at)) = f.previous_fetch {
            if part.offset >= end {
                f.caught_up_at = f.caught_up_at.max(at);
            }
        }
        f.previous_fetch = Some((leo, now));
    }
    advance_hw(broker, &part.tp);
}

fn fetch_one(
    broker: &Broker,
    replica: Option<u32>,
    p: &FetchPart,
    max: usize,
    isolation: Isolation,
) -> FetchResult {
    let live = broker.live.borrow();
    if live.leads(&p.tp).is_none() {
        return FetchResult::Error(PartError::NotLeader);
    }
    let disk = broker.setup.disk.borrow();
    let empty = PartitionLog::default();
    let log = disk.logs.get(&p.tp).unwrap_or(&empty);
    let hw = live.hw.get(&p.tp).copied().unwrap_or(0);
    // Consumers read only what every in-sync replica has; read_committed readers only up to
    // the last stable offset, and nothing of an aborted transaction.
    let committed_only = isolation == Isolation::ReadCommitted;
    let end = if committed_only {
        log.last_stable_offset(hw)
    } else {
        hw
    };
    let reachable = if replica.is_some() { log.leo() } else { end };
    // The epoch of the record before the offset asked for, from a follower or a consumer
    // (KIP-320): when this log's epoch ended before that offset, the logs have diverged there
    // (a truncating leader change), and the reader goes back to where they agree.
    if let Some(epoch) = p.last_epoch {
        let held = log.epoch_end(epoch);
        let agreed = held.map_or(log.log_start(), |(_, end)| end);
        if agreed < p.offset {
            return FetchResult::Diverging {
                truncate_to: agreed,
                epoch: log.epoch_at(agreed.wrapping_sub(1)),
                high_watermark: reachable,
            };
        }
        // A follower whose newest epoch this log does not hold has records of it that this
        // log lacks, below our end too (KIP-279): it truncates to where its own records of
        // the largest epoch we share end, no further than ours. (One that shares no epoch
        // with us is behind our log start, and starts again there below.)
        if replica.is_some() && held.is_some_and(|(e, _)| e != epoch) {
            return FetchResult::Diverging {
                truncate_to: agreed,
                epoch: held.map(|(e, _)| e),
                high_watermark: reachable,
            };
        }
    }
    if p.offset > log.leo() {
        if replica.is_some() {
            // A follower past our end (its epochs could not tell where it diverged): it cuts
            // back to our end.
            return FetchResult::Diverging {
                truncate_to: log.leo(),
                epoch: log.epoch_at(log.leo().wrapping_sub(1)),
                high_watermark: reachable,
            };
        }
        return FetchResult::OutOfRange {
            log_start: log.log_start(),
            latest: end,
        };
    }
    if p.offset < log.log_start() {
        return FetchResult::OutOfRange {
            log_start: log.log_start(),
            latest: reachable,
        };
    }
    if replica.is_some() {
        // Followers read to the log end, markers and all.
        let records = log.read(p.offset, log.leo(), max);
        let next_offset = p.offset + records.len() as u64;
        return FetchResult::Records {
            base_offset: p.offset,
            next_offset,
            last_epoch: log.epoch_at(next_offset.wrapping_sub(1)),
            records,
            offsets: Vec::new(),
            high_watermark: hw,
        };
    }
    let read = log.read_for_consumer(p.offset, end, max, committed_only);
    let (offsets, records) = read.records.into_iter().unzip();
    FetchResult::Records {
        base_offset: p.offset,
        records,
        offsets,
        next_offset: read.next_offset,
        last_epoch: log.epoch_at(read.next_offset.wrapping_sub(1)),
        high_watermark: end,
    }
}

async fn heartbeat_loop(broker: Rc<Broker>) {
    let mut conn = Connection::new(broker.setup.arena.clone(), "controller", CONTROLLER_PORT);
    loop {
        let known_version = broker.live.borrow().view.version;
        let req = Request::Heartbeat {
            broker: broker.setup.id,
            incarnation: broker.setup.disk.borrow().starts,
            known_version,
        };
        if let Ok(Response::Heartbeat(Some(meta))) = conn.call(req, Duration::from_secs(1)).await {
            apply_view(&broker, *meta);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn apply_view(broker: &Broker, mut meta: ClusterMeta) {
    let now = sim_instant();
    let id = broker.setup.id;
    {
        // An ISR change the controller accepted after it sent this metadata is newer than it:
        // keep it (the answer to this broker's own change may overtake the metadata).
        let live = broker.live.borrow();
        for (tp, m) in &mut meta.partitions {
            if let Some(ours) = live.view.get(tp) {
                if (ours.leader, ours.leader_epoch) == (m.leader, m.leader_epoch)
                    && ours.partition_epoch > m.partition_epoch
                {
                    *m = ours.clone();
                }
            }
        }
    }
    // Partitions this broker takes over, with their epochs and log ends; and those with a log
    // retention has moved the start of.
    let mut took_over: Vec<(TopicPartition, u32, u64)> = Vec::new();
    let mut started: Vec<(TopicPartition, u64)> = Vec::new();
    {
        let mut live = broker.live.borrow_mut();
        let mut disk = broker.setup.disk.borrow_mut();
        for (tp, m) in &meta.partitions {
            if !m.replicas.contains(&id) {
                continue;
            }
            let was = live.view.get(tp).map(|o| (o.leader, o.leader_epoch));
            if m.leader == Some(id) && was != Some((m.leader, m.leader_epoch)) {
                // A new leadership: start the epoch at our log end and give followers a grace
                // period before they count as lagging.
                let log = disk.logs.entry(*tp).or_default();
                log.begin_epoch(m.leader_epoch);
                took_over.push((*tp, m.leader_epoch, log.leo()));
                if log.log_start() > 0 {
                    started.push((*tp, log.log_start()));
                }
                // Start from the high watermark learnt as a follower, not from nothing.
                // A high watermark kept from an earlier leadership is no guide past a log end a
                // truncation has since moved back.
                let cur = live.hw.entry(*tp).or_insert(0);
                *cur = (*cur).max(log.hw_checkpoint).min(log.leo());
                let followers = m
                    .replicas
                    .iter()
                    .filter(|r| **r != id)
                    .map(|r| {
                        let f = Follower {
                            leo: 0,
                            caught_up_at: now,
                            previous_fetch: None,
                            fetched: false,
                        };
                        (*r, f)
                    })
                    .collect();
                live.followers.insert(*tp, followers);
            }
        }
        live.view = meta;
    }
    for (tp, epoch, log_end) in took_over {
        broker
            .setup
            .recorder
            .borrow_mut()
            .record(Observation::LeaderChange {
                t_ms: sim_now_ms(),
                host: broker_name(id),
                topic: tp.topic,
                partition: tp.partition,
                epoch,
                log_end,
            });
    }
    for (tp, log_start) in started {
        record_log_start(broker, tp, log_start);
    }
    let led: Vec<TopicPartition> = {
        let live = broker.live.borrow();
        live.view
            .partitions
            .keys()
            .filter(|tp| live.leads(tp).is_some())
            .copied()
            .collect()
    };
    for tp in &led {
        advance_hw(broker, tp);
    }
    broker.changed.notify_waiters();
}

async fn replica_fetcher(broker: Rc<Broker>, leader: u32) {
    let mut conn = Connection::new(
        broker.setup.arena.clone(),
        &broker_name(leader),
        BROKER_PORT,
    );
    let id = broker.setup.id;
    loop {
        // What to fetch, and the leader epoch each partition is followed in.
        let (parts, following): (Vec<FetchPart>, BTreeMap<TopicPartition, u32>) = {
            let live = broker.live.borrow();
            let disk = broker.setup.disk.borrow();
            live.view
                .partitions
                .iter()
                .filter(|(_, m)| m.leader == Some(leader) && m.replicas.contains(&id))
                .map(|(tp, m)| {
                    let log = disk.logs.get(tp);
                    let part = FetchPart {
                        tp: *tp,
                        offset: log.map_or(0, PartitionLog::leo),
                        last_epoch: log.and_then(PartitionLog::last_epoch),
                    };
                    (part, (*tp, m.leader_epoch))
                })
                .unzip()
        };
        if parts.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let req = Request::Fetch {
            replica: Some(id),
            parts,
            max_wait_ms: 100,
            max_records: 2000,
            isolation: Isolation::ReadUncommitted,
        };
        match conn.call(req, Duration::from_secs(1)).await {
            Ok(Response::Fetch(results)) => {
                let mut appended = 0u64;
                for (tp, res) in results {
                    // An answer that arrives after this broker stopped following `leader` for
                    // the partition in that epoch (it now leads it, or follows a newer leader)
                    // is dropped, as Kafka's fetcher drops answers for partitions it no longer
                    // fetches: applied, a new leader would append the deposed one's records
                    // under its own, newer epoch, and its readers would find the log diverging
                    // where it does not.
                    let still_following = broker.live.borrow().view.get(&tp).is_some_and(|m| {
                        m.leader == Some(leader) && Some(&m.leader_epoch) == following.get(&tp)
                    });
                    if !still_following {
                        continue;
                    }
                    let mut disk = broker.setup.disk.borrow_mut();
                    let log = disk.logs.entry(tp).or_default();
                    match res {
                        FetchResult::Records {
                            base_offset,
                            records,
                            high_watermark,
                            ..
                        } => {
                            if base_offset == log.leo() && !records.is_empty() {
                                log.append_follower(&records);
                                appended += records.len() as u64;
                            }
                            let hw = high_watermark.min(log.leo());
                            log.hw_checkpoint = log.hw_checkpoint.max(hw);
                        }
                        FetchResult::Diverging {
                            truncate_to, epoch, ..
                        } => {
                            // No further than where our own records of the leader's epoch
                            // end: past there we hold a newer epoch the leader lacks.
                            let to = epoch.map_or(truncate_to, |e| {
                                truncate_to.min(log.end_offset_for_epoch(e))
                            });
                            log.truncate_to(to);
                            log.forget_epochs_from(to);
                        }
                        // The leader's retention has deleted past our log end: what we lack
                        // is gone, so start again, empty, where the leader's log starts.
                        FetchResult::OutOfRange { log_start, .. } => {
                            log.truncate_fully_and_start_at(log_start);
                        }
                        FetchResult::Error(_) => {}
                    }
                }
                let us = slowed_us(broker.setup.append_us * appended, broker.slowdown());
                if us > 0 {
                    tokio::time::sleep(Duration::from_micros(us)).await;
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn flush_loop(broker: Rc<Broker>) {
    let interval = broker.setup.platform.log_flush_interval.to_std();
    loop {
        tokio::time::sleep(interval).await;
        for log in broker.setup.disk.borrow_mut().logs.values_mut() {
            log.flush();
        }
    }
}

/// Deletes, every `retention_check_interval`, the records each replica holds that are older
/// than their topic's retention, up to the high watermark it knows.
async fn retention_loop(broker: Rc<Broker>) {
    let platform = broker.setup.platform.clone();
    let interval = platform.retention_check_interval.to_std();
    loop {
        tokio::time::sleep(interval).await;
        let now = sim_now_ms();
        let live = broker.live.borrow();
        for (tp, log) in broker.setup.disk.borrow_mut().logs.iter_mut() {
            let Some(retention) = platform.retention_of(tp.topic) else {
                continue;
            };
            let Some(cutoff) = now.checked_sub(retention.ms()) else {
                continue;
            };
            let bound = log.hw_checkpoint;
            let moved = log.delete_expired(cutoff, bound);
            if let (Some((_, log_start)), Some(_)) = (moved, live.leads(tp)) {
                record_log_start(&broker, *tp, log_start);
            }
        }
    }
}

/// Records that the log readers of `tp` are served from (this broker leads it) now starts at
/// `log_start`.
fn record_log_start(broker: &Broker, tp: TopicPartition, log_start: u64) {
    broker
        .setup
        .recorder
        .borrow_mut()
        .record(Observation::RetentionDeleted {
            t_ms: sim_now_ms(),
            host: broker_name(broker.setup.id),
            topic: tp.topic,
            partition: tp.partition,
            log_start,
        });
}

async fn isr_loop(broker: Rc<Broker>) {
    let mut conn = Connection::new(broker.setup.arena.clone(), "controller", CONTROLLER_PORT);
    let lag_max = broker.setup.platform.replica_lag_time_max.to_std();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sim_instant();
        let changes: Vec<(TopicPartition, u32, u32, Vec<u32>)> = {
            let live = broker.live.borrow();
            let disk = broker.setup.disk.borrow();
            let mut out = Vec::new();
            for (tp, m) in &live.view.partitions {
                if m.leader != Some(live.id) {
                    continue;
                }
                let leo = disk.logs.get(tp).map_or(0, PartitionLog::leo);
                let hw = live.hw.get(tp).copied().unwrap_or(0);
                let followers = live.followers.get(tp);
                let mut isr: BTreeSet<u32> = m.isr.iter().copied().collect();
                for r in m.replicas.iter().filter(|r| **r != live.id) {
                    let Some(f) = followers.and_then(|fs| fs.get(r)) else {
                        continue;
                    };
                    if isr.contains(r) && now.duration_since(f.caught_up_at) > lag_max {
                        isr.remove(r);
                    } else if !isr.contains(r) && f.fetched && f.leo >= hw.min(leo) {
                        isr.insert(*r);
                    }
                }
                isr.insert(live.id);
                let new: Vec<u32> = m
                    .replicas
                    .iter()
                    .filter(|r| isr.contains(r))
                    .copied()
                    .collect();
                if new != m.isr {
                    out.push((*tp, m.leader_epoch, m.partition_epoch, new));
                }
            }
            out
        };
        for (tp, leader_epoch, partition_epoch, isr) in changes {
            {
                // An unanswered change from the same state may have been applied: keep
                // counting the replicas it added.
                let mut live = broker.live.borrow_mut();
                let proposed = live
                    .proposed_isr
                    .entry(tp)
                    .or_insert((partition_epoch, Vec::new()));
                if proposed.0 != partition_epoch {
                    *proposed = (partition_epoch, Vec::new());
                }
                for r in &isr {
                    if !proposed.1.contains(r) {
                        proposed.1.push(*r);
                    }
                }
            }
            let req = Request::AlterIsr {
                tp,
                leader: broker.setup.id,
                leader_epoch,
                partition_epoch,
                isr: isr.clone(),
            };
            let answer = conn.call(req, Duration::from_secs(1)).await;
            // Accepted: the controller's answer is the new state (as Kafka's AlterPartition
            // answer is), not the next metadata the heartbeat brings. Refused or unanswered,
            // the proposal still counts until newer metadata moves the partition epoch on: an
            // earlier try from the same state may have been accepted after its answer was
            // lost.
            if let Ok(Response::AlterIsr(Some(new_epoch))) = answer {
                let mut live = broker.live.borrow_mut();
                live.proposed_isr.remove(&tp);
                if let Some(m) = live.view.partitions.get_mut(&tp) {
                    if (m.leader_epoch, m.partition_epoch) == (leader_epoch, partition_epoch) {
                        m.isr = isr;
                        m.partition_epoch = new_epoch;
                    }
                }
            }
            // A smaller ISR may let the high watermark move on.
            advance_hw(&broker, &tp);
            broker.changed.notify_waiters();
        }
    }
}
