//! The messages hosts exchange, and how they cross the simulated network. A simulated TCP
//! stream carries an 8-byte handle per message; the message itself waits in a shared arena
//! until the receiver takes it. Turmoil still decides when (and whether) the handle arrives,
//! so latency, partitions, holds and crashes act on every message, while record payloads are
//! shared between replicas instead of copied.

use crate::cluster::ClusterMeta;
use crate::partition_log::{ProducerBatch, SharedRecord};
use nrtsim_history::TopicName;
use nrtsim_pipeline::schema::RegistryError;
use nrtsim_pipeline::{Acks, Isolation, Record, TaskCheckpoint, TopicPartition};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

/// The port brokers serve clients and followers on.
pub const BROKER_PORT: u16 = 9092;
/// The port the controller serves brokers on.
pub const CONTROLLER_PORT: u16 = 9093;
/// The port the transaction coordinator serves producers on.
pub const TXN_COORDINATOR_PORT: u16 = 9094;
/// The port the group coordinator serves consumers on.
pub const GROUP_COORDINATOR_PORT: u16 = 9095;
/// The port the schema registry serves its clients on.
pub const SCHEMA_REGISTRY_PORT: u16 = 9096;

/// A produce request's per-partition part.
#[derive(Clone, Debug)]
pub struct ProducePart {
    /// Target partition.
    pub tp: TopicPartition,
    /// The idempotent (or transactional) producer and the batch's base sequence number.
    pub producer: Option<ProducerBatch>,
    /// The records.
    pub records: Vec<Record>,
}

/// A fetch request's per-partition part.
#[derive(Clone, Copy, Debug)]
pub struct FetchPart {
    /// Partition.
    pub tp: TopicPartition,
    /// First offset wanted.
    pub offset: u64,
    /// A follower's newest epoch, to detect divergence.
    pub last_epoch: Option<u32>,
}

/// Requests.
#[derive(Clone, Debug)]
pub enum Request {
    /// Append records.
    Produce {
        /// Acknowledgement level.
        acks: Acks,
        /// Per-partition batches.
        parts: Vec<ProducePart>,
        /// How long the broker may hold the request waiting for replication.
        timeout_ms: u64,
    },
    /// Read records (a consumer, or a follower when `replica` is set).
    Fetch {
        /// The fetching follower's broker id.
        replica: Option<u32>,
        /// Partitions and offsets.
        parts: Vec<FetchPart>,
        /// Longest wait for data, in ms.
        max_wait_ms: u64,
        /// Records per partition at most.
        max_records: usize,
        /// Which records a consumer may see.
        isolation: Isolation,
    },
    /// A broker's heartbeat to the controller, with the metadata version it holds.
    Heartbeat {
        /// Broker id.
        broker: u32,
        /// Counts the broker's starts: a new one tells the controller the broker restarted.
        incarnation: u64,
        /// Metadata version the broker knows.
        known_version: u64,
    },
    /// A leader asks the controller to change a partition's ISR.
    AlterIsr {
        /// Partition.
        tp: TopicPartition,
        /// The asking leader.
        leader: u32,
        /// Its leader epoch.
        leader_epoch: u32,
        /// The partition epoch of the state the change was worked out from.
        partition_epoch: u32,
        /// The ISR it wants.
        isr: Vec<u32>,
    },
    /// The transaction coordinator writes a transaction's markers on a partition leader.
    WriteTxnMarkers {
        /// Producer id.
        pid: u64,
        /// Producer epoch.
        epoch: u32,
        /// Commit or abort.
        commit: bool,
        /// The partitions the transaction touched that this broker leads.
        partitions: Vec<TopicPartition>,
        /// How long the broker may wait for the markers to replicate.
        timeout_ms: u64,
    },
    /// A transactional producer's start: the coordinator fences any older instance (bumping
    /// the epoch) and aborts its open transaction.
    InitProducerId {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// `transaction.timeout.ms`.
        timeout_ms: u64,
    },
    /// Partitions a transaction is about to write to.
    AddPartitionsToTxn {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// Producer id.
        pid: u64,
        /// Producer epoch.
        epoch: u32,
        /// New partitions.
        partitions: Vec<TopicPartition>,
    },
    /// Commits or aborts the open transaction, with the consumer offsets it covers.
    EndTxn {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// Producer id.
        pid: u64,
        /// Producer epoch.
        epoch: u32,
        /// Commit or abort.
        commit: bool,
        /// The consumer whose input positions commit with the transaction.
        group: String,
        /// Input positions committed with the transaction (consume-transform-produce).
        offsets: CommittedOffsets,
        /// A source connector's position committed with the transaction (Kafka Connect's
        /// exactly-once source support writes it to its offsets topic in the transaction).
        position: Option<Box<TaskCheckpoint>>,
    },
    /// The input positions `group` last committed in a transaction.
    FetchOffsets {
        /// The consumer (a stream task's name).
        group: String,
    },
    /// The source position `group` last committed in a transaction.
    FetchPosition {
        /// The source connector (its task's name).
        group: String,
    },
    /// A consumer asks to join (or rejoin) its group. Answered at once: `Pending` while the
    /// group's rebalance waits for its other members, after which the consumer asks again.
    JoinGroup {
        /// Group id.
        group: String,
        /// The consumer's client id, which the member id is made from.
        client: String,
        /// Its member id, if it has one.
        member: Option<String>,
        /// Topics it reads, with their partition counts.
        topics: Vec<(TopicName, u32)>,
        /// `session.timeout.ms`.
        session_timeout_ms: u64,
    },
    /// A member of a completed generation asks for its assignment.
    SyncGroup {
        /// Group id.
        group: String,
        /// Member id.
        member: String,
        /// The generation it joined.
        generation: u32,
    },
    /// A member's heartbeat.
    GroupHeartbeat {
        /// Group id.
        group: String,
        /// Member id.
        member: String,
        /// Its generation.
        generation: u32,
    },
    /// A member commits positions.
    OffsetCommit {
        /// Group id.
        group: String,
        /// Member id.
        member: String,
        /// Its generation.
        generation: u32,
        /// Positions.
        offsets: CommittedOffsets,
    },
    /// The positions a group has committed.
    OffsetFetch {
        /// Group id.
        group: String,
    },
    /// Registers a schema under a subject (the registry's `POST /subjects/{s}/versions`).
    RegisterSchema {
        /// The subject.
        subject: String,
        /// The schema, as Avro JSON.
        schema: String,
    },
    /// The schema with an id (the registry's `GET /schemas/ids/{id}`).
    GetSchema {
        /// The id.
        id: u32,
    },
}

/// Why the group coordinator refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupError {
    /// The group is rebalancing: join again.
    RebalanceInProgress,
    /// The member is not in the group (its session expired).
    UnknownMember,
    /// The member's generation is not the group's.
    IllegalGeneration,
}

/// How a join request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The rebalance waits for other members; ask again.
    Pending {
        /// The member id given.
        member: String,
    },
    /// The rebalance completed with this member in the new generation.
    Joined {
        /// The member id.
        member: String,
        /// The new generation.
        generation: u32,
    },
}

/// Why the transaction coordinator refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnError {
    /// A newer instance holds the `transactional.id` (Kafka's PRODUCER_FENCED).
    Fenced,
    /// The open transaction was aborted by the coordinator (it timed out); the producer must
    /// start again from its last committed input positions.
    Aborted,
    /// The previous transaction is still being completed; retry.
    Concurrent,
}

/// Per-partition errors, as Kafka names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartError {
    /// This broker does not lead the partition.
    NotLeader,
    /// acks=all with too small an ISR.
    NotEnoughReplicas,
    /// The records were appended, but the broker answers with an error (Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND); a retry appends them again unless the producer is
    /// idempotent.
    NotEnoughReplicasAfterAppend,
    /// A gap in the idempotent producer's sequence numbers.
    OutOfOrderSequence,
    /// The replicas did not acknowledge in time.
    Timeout,
    /// The producer's epoch is older than the partition has seen: a fenced instance.
    Fenced,
}

/// A committed input position: the offset to read from next and, when the committer knew it,
/// the leader epoch of the record read just before it (Kafka's OffsetCommit carries it too),
/// so that a reader restored there can tell a log truncated under it (KIP-320).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to read.
    pub offset: u64,
    /// The leader epoch of the record before `offset`.
    pub leader_epoch: Option<u32>,
}

/// Committed positions per partition.
pub type CommittedOffsets = BTreeMap<TopicPartition, Committed>;

/// A produce result for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceResult {
    /// Appended at this base offset by the leader of this epoch.
    Appended {
        /// Where the first appended record went: the batch's record `skipped`.
        base_offset: u64,
        /// The leader epoch the leader appended under.
        leader_epoch: u32,
        /// How many of the batch's first records were already in the log (an idempotent
        /// retry that partly overlaps an earlier try) and were dropped.
        skipped: u64,
    },
    /// Already in the log, from an earlier try.
    Duplicate {
        /// Where the earlier try's first record went, when the leader still knows.
        base_offset: Option<u64>,
        /// The epoch of the leader that answers.
        leader_epoch: u32,
    },
    /// Refused.
    Error(PartError),
}

/// A fetch result for one partition.
#[derive(Clone, Debug)]
pub enum FetchResult {
    /// Records from `base_offset`, and the high watermark.
    Records {
        /// The offset fetched from.
        base_offset: u64,
        /// The records: every one from `base_offset` for a follower; for a consumer, data
        /// only, at `offsets`.
        records: Vec<SharedRecord>,
        /// A consumer's records' offsets (empty for a follower).
        offsets: Vec<u64>,
        /// Where to fetch next.
        next_offset: u64,
        /// The leader epoch of the record just before `next_offset` (control records
        /// included), which the reader sends with its next fetch from there.
        last_epoch: Option<u32>,
        /// High watermark, or for a `read_committed` consumer the last stable offset.
        high_watermark: u64,
    },
    /// The reader's log, or what it read, diverges from ours: a follower truncates to this
    /// offset, a consumer goes back to it, and either fetches again from there.
    Diverging {
        /// Where the two agree up to.
        truncate_to: u64,
        /// The leader epoch of our record just before `truncate_to`, which the reader sends
        /// with its next fetch from there (Kafka's consumer keeps it with the position it seeks
        /// to, so a second truncation before it reads is caught too).
        epoch: Option<u32>,
        /// The end this reader can reach: the log end for a follower; the high watermark, or
        /// for a `read_committed` consumer the last stable offset.
        high_watermark: u64,
    },
    /// A consumer's offset is before the log start (retention has deleted it) or past the log
    /// end (a truncating leader change, when the consumer could not say its epoch); a
    /// follower's, before the log start.
    OutOfRange {
        /// The oldest offset held.
        log_start: u64,
        /// The end this reader can reach (the log end for a follower; the high watermark,
        /// or the last stable offset for `read_committed`, for a consumer).
        latest: u64,
    },
    /// Refused.
    Error(PartError),
}

/// Responses.
#[derive(Clone, Debug)]
pub enum Response {
    /// Per partition, in request order.
    Produce(Vec<ProduceResult>),
    /// Per partition, in request order.
    Fetch(Vec<(TopicPartition, FetchResult)>),
    /// The controller's answer to a heartbeat: newer metadata, if any.
    Heartbeat(Option<Box<ClusterMeta>>),
    /// The partition's new partition epoch if the ISR change was accepted.
    AlterIsr(Option<u32>),
    /// Per partition, in request order: whether the marker is written and replicated.
    WriteTxnMarkers(Vec<bool>),
    /// The producer id and its new epoch.
    InitProducerId(Result<(u64, u32), TxnError>),
    /// The number the coordinator gave the open transaction.
    AddPartitionsToTxn(Result<u64, TxnError>),
    /// Whether the transaction ended as asked, and the producer's epoch for the next one.
    EndTxn(Result<u32, TxnError>),
    /// The committed input positions, or `Concurrent` while a transaction carrying some of
    /// them is being committed.
    FetchOffsets(Result<CommittedOffsets, TxnError>),
    /// The committed source position (none before the first commit), or `Concurrent` while a
    /// transaction carrying one is being committed.
    FetchPosition(Result<Option<Box<TaskCheckpoint>>, TxnError>),
    /// Where the join stands.
    JoinGroup(Result<JoinOutcome, GroupError>),
    /// The member's partitions for the generation.
    SyncGroup(Result<Vec<TopicPartition>, GroupError>),
    /// Whether the member may go on.
    GroupHeartbeat(Result<(), GroupError>),
    /// Whether the positions were committed.
    OffsetCommit(Result<(), GroupError>),
    /// The group's committed positions.
    OffsetFetch(CommittedOffsets),
    /// The registered schema's id.
    RegisterSchema(Result<u32, RegistryError>),
    /// The schema.
    GetSchema(Result<String, RegistryError>),
}

/// A message in the arena.
#[derive(Debug)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Messages in flight, by handle.
#[derive(Default)]
pub struct Arena {
    next: u64,
    messages: BTreeMap<u64, Message>,
}

/// The shared arena.
pub type SharedArena = Rc<RefCell<Arena>>;

/// Sends a message on `stream`.
pub async fn send(arena: &SharedArena, stream: &mut TcpStream, msg: Message) -> io::Result<()> {
    let handle = {
        let mut a = arena.borrow_mut();
        a.next += 1;
        let h = a.next;
        a.messages.insert(h, msg);
        h
    };
    stream.write_all(&handle.to_le_bytes()).await
}

/// Receives the next message from `stream`.
pub async fn recv(arena: &SharedArena, stream: &mut TcpStream) -> io::Result<Message> {
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).await?;
    let handle = u64::from_le_bytes(buf);
    arena
        .borrow_mut()
        .messages
        .remove(&handle)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown message handle"))
}

/// A client connection to one server: one request in flight at a time, dropped on any error
/// or timeout (a simulated stream that lost a segment never recovers, as a real client that
/// hit `request.timeout.ms` reconnects).
pub struct Connection {
    addr: (String, u16),
    stream: Option<TcpStream>,
    arena: SharedArena,
}

impl Connection {
    /// A connection to `host:port`, opened on first use.
    pub fn new(arena: SharedArena, host: &str, port: u16) -> Self {
        Self {
            addr: (host.to_string(), port),
            stream: None,
            arena,
        }
    }

    /// Sends `req` and waits up to `timeout` for the answer.
    pub async fn call(&mut self, req: Request, timeout: Duration) -> io::Result<Response> {
        let res = tokio::time::timeout(timeout, self.call_inner(req)).await;
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
            }
        }
    }

    /// Sends every request at once, then reads the answers in order (a pipeline of in-flight
    /// requests on one connection). Each answer may take up to `timeout` after the previous
    /// one; after a failure the connection is dropped and the rest fail with it.
    pub async fn call_many(
        &mut self,
        reqs: Vec<Request>,
        timeout: Duration,
    ) -> Vec<io::Result<Response>> {
        let n = reqs.len();
        let arena = self.arena.clone();
        let sent = tokio::time::timeout(timeout, async {
            let stream = self.connected().await?;
            for req in reqs {
                send(&arena, stream, Message::Request(req)).await?;
            }
            io::Result::Ok(())
        })
        .await;
        let mut out = Vec::with_capacity(n);
        if !matches!(sent, Ok(Ok(()))) {
            self.stream = None;
            out.resize_with(n, || {
                Err(io::Error::new(io::ErrorKind::TimedOut, "send failed"))
            });
            return out;
        }
        while out.len() < n {
            let Some(stream) = self.stream.as_mut() else {
                break;
            };
            match tokio::time::timeout(timeout, recv(&arena, stream)).await {
                Ok(Ok(Message::Response(r))) => out.push(Ok(r)),
                _ => {
                    self.stream = None;
                    break;
                }
            }
        }
        out.resize_with(n, || {
            Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
        });
        out
    }

    /// Sends `req` without waiting for an answer (acks=0).
    pub async fn send_only(&mut self, req: Request, timeout: Duration) -> io::Result<()> {
        let arena = self.arena.clone();
        let res = tokio::time::timeout(timeout, async {
            let stream = self.connected().await?;
            send(&arena, stream, Message::Request(req)).await
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            _ => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "send failed"))
            }
        }
    }

    async fn connected(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect((self.addr.0.as_str(), self.addr.1)).await?;
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }

    async fn call_inner(&mut self, req: Request) -> io::Result<Response> {
        let arena = self.arena.clone();
        let stream = self.connected().await?;
        send(&arena, stream, Message::Request(req)).await?;
        match recv(&arena, stream).await? {
            Message::Response(r) => Ok(r),
            Message::Request(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request where a response belongs",
            )),
        }
    }
}
