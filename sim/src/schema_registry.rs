//! The schema registry host (`schema-registry`), as Confluent's works: every registration is
//! written to the `_schemas` topic (acks=all) before it is answered, and reads are served from
//! memory. At every start the registry rebuilds its memory by reading `_schemas` from the
//! beginning, so a crash loses nothing it acknowledged; while it is down, only new
//! registrations stop, since its clients cache the schemas they already have.

use crate::client::SimLog;
use crate::cluster::ClusterMeta;
use crate::wire::{self, Message, Request, Response, SharedArena, SCHEMA_REGISTRY_PORT};
use bytes::Bytes;
use nrtsim_history::TopicName;
use nrtsim_pipeline::schema::{Compatibility, Decision, Registration, Registry, RegistryError};
use nrtsim_pipeline::{
    Acks, Appended, ConsumerConfig, Log, ProduceBatch, ProducerConfig, Record, RecordMeta,
    TopicPartition,
};
use nrtsim_workloads::SimDuration;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use turmoil::net::{TcpListener, TcpStream};

/// Everything the registry host needs to start (again).
#[derive(Clone)]
pub struct SchemaRegistrySetup {
    /// The message arena.
    pub arena: SharedArena,
    /// Cluster metadata, for its Kafka client.
    pub meta: Rc<RefCell<ClusterMeta>>,
    /// Every subject's compatibility mode.
    pub compatibility: Compatibility,
}

struct State {
    registry: RefCell<Registry>,
    /// The next `_schemas` offset to read: everything before it is applied.
    offset: std::cell::Cell<u64>,
    /// One registration at a time, as the registry's single writer does.
    writer: tokio::sync::Mutex<SimLog>,
}

fn schemas_tp() -> TopicPartition {
    TopicPartition::new(TopicName::Schemas, 0)
}

fn client(setup: &SchemaRegistrySetup) -> SimLog {
    // Each registration is one record the registry waits for: nothing to linger for.
    let producer = ProducerConfig {
        acks: Acks::All,
        idempotence: false,
        linger: SimDuration::from_ms(0),
        ..ProducerConfig::default()
    };
    SimLog::new(
        setup.arena.clone(),
        setup.meta.clone(),
        producer,
        ConsumerConfig::default(),
        0,
    )
    .client_id("schema-registry")
}

/// Reads `_schemas` from where the registry stopped to its high watermark, and at least past
/// `past` when given, applying each registration in log order (the first record of an id or
/// of a subject's version wins; a later one that conflicts is ignored, as every replay will).
async fn catch_up(
    log: &mut SimLog,
    registry: &RefCell<Registry>,
    offset: &std::cell::Cell<u64>,
    past: Option<u64>,
) -> Result<(), RegistryError> {
    // A write acknowledged by every in-sync replica is not truncated under clean elections;
    // under an unclean one it may be, and then it is never read: give up after a while.
    let mut idle_rounds = 0;
    loop {
        let fetched = log.fetch(&[(schemas_tp(), offset.get())]).await.pop();
        let f = match fetched {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(RegistryError::Unavailable(format!("_schemas: {e}"))),
            None => return Err(RegistryError::Unavailable("_schemas: no answer".into())),
        };
        for r in &f.records {
            if let Ok(reg) = serde_json::from_slice::<Registration>(&r.value) {
                registry.borrow_mut().apply(&reg);
            }
        }
        // Forward past what was read; or where a reset or a truncating leader change moved
        // the reader, which may be back.
        offset.set(if f.moved.is_some() {
            f.next_offset
        } else {
            f.next_offset.max(offset.get())
        });
        let reached = past.is_none_or(|p| offset.get() > p);
        if offset.get() >= f.high_watermark && reached {
            return Ok(());
        }
        idle_rounds = if f.records.is_empty() {
            idle_rounds + 1
        } else {
            0
        };
        if idle_rounds > 20 {
            return Err(RegistryError::Unavailable(
                "_schemas: its own write never became readable".into(),
            ));
        }
    }
}

/// Runs the registry until the host is crashed.
pub async fn run_schema_registry(setup: SchemaRegistrySetup) -> turmoil::Result {
    let mut log = client(&setup);
    let registry = RefCell::new(Registry::new(setup.compatibility));
    let offset = std::cell::Cell::new(0);
    while catch_up(&mut log, &registry, &offset, None).await.is_err() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let state = Rc::new(State {
        registry,
        offset,
        writer: tokio::sync::Mutex::new(log),
    });
    let listener = TcpListener::bind(("0.0.0.0", SCHEMA_REGISTRY_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(serve(setup.arena.clone(), state.clone(), stream));
    }
}

async fn serve(arena: SharedArena, state: Rc<State>, mut stream: TcpStream) {
    while let Ok(Message::Request(req)) = wire::recv(&arena, &mut stream).await {
        let reply = match req {
            Request::RegisterSchema { subject, schema } => {
                Response::RegisterSchema(register(&state, &subject, &schema).await)
            }
            Request::GetSchema { id } => Response::GetSchema(
                state
                    .registry
                    .borrow()
                    .schema(id)
                    .map(str::to_string)
                    .ok_or(RegistryError::NotFound(id)),
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

/// Decides, and stores a new version in `_schemas` before answering with its id. The
/// registry learns its own registration, like every other, by reading it back from the log:
/// a write that failed may still have landed, and the log, not memory, says which id it took.
async fn register(state: &State, subject: &str, schema: &str) -> Result<u32, RegistryError> {
    let mut log = state.writer.lock().await;
    catch_up(&mut log, &state.registry, &state.offset, None).await?;
    let decision = state.registry.borrow().decide(subject, schema)?;
    let reg = match decision {
        Decision::Existing(id) => return Ok(id),
        Decision::New(reg) => reg,
    };
    let value = serde_json::to_vec(&reg).expect("a registration serializes");
    let batch = ProduceBatch {
        tp: schemas_tp(),
        records: vec![Record {
            key: u64::from(reg.id),
            value: Bytes::from(value),
            meta: RecordMeta {
                change_id: 0,
                txid: 0,
                commit_ms: 0,
                attempt: 0,
            },
        }],
    };
    let at = match log.produce(vec![batch]).await.pop() {
        Some(Ok(Appended::At { base_offset, .. })) => Some(base_offset),
        Some(Ok(_)) => None,
        Some(Err(e)) => return Err(RegistryError::Unavailable(format!("_schemas: {e}"))),
        None => return Err(RegistryError::Unavailable("_schemas: no answer".into())),
    };
    catch_up(&mut log, &state.registry, &state.offset, at).await?;
    let registry = state.registry.borrow();
    match registry.decide(subject, schema) {
        Ok(Decision::Existing(id)) => Ok(id),
        // An earlier write that had seemed to fail took the id first: the client retries.
        _ => Err(RegistryError::Unavailable(
            "_schemas: the registration lost its id to an earlier write; try again".into(),
        )),
    }
}
