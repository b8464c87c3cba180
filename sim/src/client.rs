//! The Kafka client every simulated job uses: [`Log`] over the simulated brokers. It finds
//! leaders in the cluster metadata, sends one request per leader concurrently, retries
//! retriable failures with backoff as the producer is configured, and numbers records for the
//! brokers' de-duplication when the producer is idempotent.

use crate::cluster::ClusterMeta;
use crate::wire::{
    Connection, FetchPart, FetchResult, PartError, ProducePart, ProduceResult, Request, Response,
    SharedArena, BROKER_PORT,
};
use nrtsim_history::TopicName;
use nrtsim_pipeline::{
    Acks, Appended, ConsumerConfig, Fetched, Log, LogError, ProduceBatch, ProducerConfig,
    ProducerState, TopicPartition,
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
}

impl SimLog {
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
        }
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

    fn take_conn(&mut self, broker: u32) -> Connection {
        self.conns.remove(&broker).unwrap_or_else(|| {
            Connection::new(self.arena.clone(), &format!("broker-{broker}"), BROKER_PORT)
        })
    }

    /// Sends one request per broker at once; returns each broker's answer (or failure).
    async fn scatter(
        &mut self,
        requests: Vec<(u32, Request)>,
        timeout: Duration,
    ) -> Vec<(u32, std::io::Result<Response>)> {
        let mut set = JoinSet::new();
        for (broker, req) in requests {
            let mut conn = self.take_conn(broker);
            set.spawn_local(async move {
                let res = conn.call(req, timeout).await;
                (broker, conn, res)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (broker, conn, res) = joined.expect("request tasks do not panic");
            self.conns.insert(broker, conn);
            out.push((broker, res));
        }
        out.sort_by_key(|(b, _)| *b);
        out
    }
}

fn part_error(tp: TopicPartition, e: PartError) -> LogError {
    match e {
        PartError::NotLeader => LogError::NotLeader(tp),
        PartError::NotEnoughReplicas => LogError::NotEnoughReplicas(tp),
        PartError::OutOfOrderSequence => LogError::OutOfOrderSequence(tp),
        PartError::Timeout => LogError::Timeout,
        PartError::OffsetOutOfRange => LogError::OffsetOutOfRange(tp),
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
        let pid = self.state.producer_id;
        // Sequence numbers are fixed when a batch is made, so every retry carries the same ones.
        let mut pending: Vec<(usize, ProducePart)> = batches
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let producer = (pid != 0).then(|| {
                    let seq = self.state.next_seq.entry(b.tp).or_insert(0);
                    let base = *seq;
                    *seq += b.records.len() as u64;
                    (pid, base)
                });
                let records = b.records;
                (
                    i,
                    ProducePart {
                        tp: b.tp,
                        producer,
                        records,
                    },
                )
            })
            .collect();
        let mut results: Vec<Option<Result<Appended, LogError>>> = vec![None; pending.len()];
        let timeout = self.producer.request_timeout.to_std();
        let mut attempt = 0;
        while !pending.is_empty() {
            let mut by_leader: BTreeMap<u32, Vec<(usize, ProducePart)>> = BTreeMap::new();
            let mut failed: Vec<(usize, ProducePart, LogError)> = Vec::new();
            for (i, part) in pending.drain(..) {
                match self.meta.borrow().leader(&part.tp) {
                    Some(b) => by_leader.entry(b).or_default().push((i, part)),
                    None => {
                        let tp = part.tp;
                        failed.push((i, part, LogError::NotLeader(tp)));
                    }
                }
            }
            if self.producer.acks == Acks::None {
                for (broker, parts) in by_leader {
                    let req = Request::Produce {
                        acks: Acks::None,
                        parts: parts.iter().map(|(_, p)| p.clone()).collect(),
                        timeout_ms: timeout.as_millis() as u64,
                    };
                    let mut conn = self.take_conn(broker);
                    let sent = conn.send_only(req, timeout).await;
                    self.conns.insert(broker, conn);
                    for (i, _) in parts {
                        results[i] = Some(
                            sent.as_ref()
                                .map(|_| Appended::Unacknowledged)
                                .map_err(|e| LogError::Connection(e.to_string())),
                        );
                    }
                }
                for (i, _, e) in failed {
                    results[i] = Some(Err(e));
                }
                break;
            }
            let requests: Vec<(u32, Request)> = by_leader
                .iter()
                .map(|(b, parts)| {
                    let req = Request::Produce {
                        acks: self.producer.acks,
                        parts: parts.iter().map(|(_, p)| p.clone()).collect(),
                        timeout_ms: timeout.as_millis() as u64,
                    };
                    (*b, req)
                })
                .collect();
            let answers = self.scatter(requests, timeout).await;
            for (broker, answer) in answers {
                let parts = by_leader.remove(&broker).unwrap_or_default();
                match answer {
                    Ok(Response::Produce(rs)) if rs.len() == parts.len() => {
                        for ((i, part), r) in parts.into_iter().zip(rs) {
                            match r {
                                ProduceResult::Appended(base) => {
                                    results[i] = Some(Ok(Appended::At(base)))
                                }
                                ProduceResult::Duplicate => {
                                    results[i] = Some(Ok(Appended::Duplicate))
                                }
                                ProduceResult::Error(PartError::OutOfOrderSequence) => {
                                    results[i] = Some(Err(LogError::OutOfOrderSequence(part.tp)));
                                }
                                ProduceResult::Error(e) => {
                                    let tp = part.tp;
                                    failed.push((i, part, part_error(tp, e)));
                                }
                            }
                        }
                    }
                    Ok(_) => {
                        for (i, part) in parts {
                            failed.push((
                                i,
                                part,
                                LogError::Connection("unexpected response".into()),
                            ));
                        }
                    }
                    Err(e) => {
                        let err = if e.kind() == std::io::ErrorKind::TimedOut {
                            LogError::Timeout
                        } else {
                            LogError::Connection(e.to_string())
                        };
                        for (i, part) in parts {
                            failed.push((i, part, err.clone()));
                        }
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            if attempt >= self.producer.retries {
                for (i, _, e) in failed {
                    results[i] = Some(Err(e));
                }
                break;
            }
            attempt += 1;
            tokio::time::sleep(self.producer.retry_backoff.to_std()).await;
            pending = failed.into_iter().map(|(i, p, _)| (i, p)).collect();
        }
        let results: Vec<Result<Appended, LogError>> = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(LogError::Connection("not sent".into()))))
            .collect();
        if results
            .iter()
            .any(|r| matches!(r, Err(LogError::OutOfOrderSequence(_))))
        {
            self.retire_producer();
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
        let mut by_leader: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, (tp, _)) in positions.iter().enumerate() {
            if let Some(b) = self.meta.borrow().leader(tp) {
                by_leader.entry(b).or_default().push(i);
            }
        }
        let max_wait = self.consumer.fetch_max_wait.to_std();
        let requests: Vec<(u32, Request)> = by_leader
            .iter()
            .map(|(b, idx)| {
                let parts = idx
                    .iter()
                    .map(|&i| FetchPart {
                        tp: positions[i].0,
                        offset: positions[i].1,
                        last_epoch: None,
                    })
                    .collect();
                let req = Request::Fetch {
                    replica: None,
                    parts,
                    max_wait_ms: max_wait.as_millis() as u64,
                    max_records: self.consumer.max_poll_records as usize,
                    isolation: self.consumer.isolation,
                };
                (*b, req)
            })
            .collect();
        let timeout = max_wait + self.producer.request_timeout.to_std();
        let answers = if requests.is_empty() {
            Vec::new()
        } else {
            self.scatter(requests, timeout).await
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
                                high_watermark,
                            } => {
                                any_records |= !records.is_empty();
                                Ok(Fetched {
                                    tp,
                                    base_offset,
                                    records: records.into_iter().map(|s| s.record).collect(),
                                    high_watermark,
                                })
                            }
                            FetchResult::Diverging { .. } => Err(LogError::NotLeader(tp)),
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
        if !any_records && results.iter().any(Result::is_err) {
            // Nothing to read and something failed without waiting: back off, so a task whose
            // leaders are all gone does not spin in zero simulated time.
            tokio::time::sleep(self.producer.retry_backoff.to_std()).await;
        }
        results
    }

    fn producer_state(&self) -> ProducerState {
        self.state.clone()
    }

    fn restore_producer_state(&mut self, state: ProducerState) {
        if self.state.producer_id == 0 {
            return;
        }
        if self.retired.contains(&state.producer_id) {
            // The checkpoint's producer was retired since: keep the fresh one.
            self.state.next_seq.clear();
        } else {
            self.state = state;
        }
    }
}
