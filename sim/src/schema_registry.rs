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
    Acks, ConsumerConfig, Log, ProduceBatch, ProducerConfig, Record, RecordMeta, TopicPartition,
};
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
    /// One registration at a time, as the registry's single writer does.
    writer: tokio::sync::Mutex<SimLog>,
}

fn schemas_tp() -> TopicPartition {
    TopicPartition::new(TopicName::Schemas, 0)
}

fn client(setup: &SchemaRegistrySetup) -> SimLog {
    let producer = ProducerConfig {
        acks: Acks::All,
        idempotence: false,
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

/// Reads `_schemas` from the start to its end into a registry.
async fn replay(log: &mut SimLog, compatibility: Compatibility) -> Registry {
    let mut registry = Registry::new(compatibility);
    let mut offset = 0;
    loop {
        match log.fetch(&[(schemas_tp(), offset)]).await.pop() {
            Some(Ok(f)) => {
                for r in &f.records {
                    if let Ok(reg) = serde_json::from_slice::<Registration>(&r.value) {
                        registry.apply(&reg);
                    }
                }
                offset = f.next_offset;
                if offset >= f.high_watermark {
                    return registry;
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Runs the registry until the host is crashed.
pub async fn run_schema_registry(setup: SchemaRegistrySetup) -> turmoil::Result {
    let mut log = client(&setup);
    let registry = replay(&mut log, setup.compatibility).await;
    let state = Rc::new(State {
        registry: RefCell::new(registry),
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

/// Decides, and stores a new version in `_schemas` before answering with its id.
async fn register(state: &State, subject: &str, schema: &str) -> Result<u32, RegistryError> {
    let mut log = state.writer.lock().await;
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
    match log.produce(vec![batch]).await.pop() {
        Some(Ok(_)) => {
            state.registry.borrow_mut().apply(&reg);
            Ok(reg.id)
        }
        Some(Err(e)) => Err(RegistryError::Unavailable(format!("_schemas: {e}"))),
        None => Err(RegistryError::Unavailable("_schemas: no answer".into())),
    }
}
