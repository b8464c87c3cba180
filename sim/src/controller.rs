//! The controller host: watches broker heartbeats, declares a broker dead after the session
//! timeout, elects new leaders from the in-sync replicas (or, with unclean election, from any
//! live replica), accepts ISR changes from leaders, and hands brokers the metadata.

use crate::cluster::ClusterMeta;
use crate::host_env::sim_instant;
use crate::wire::{self, Message, Request, Response, SharedArena, CONTROLLER_PORT};
use crate::PlatformConfig;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;
use turmoil::net::{TcpListener, TcpStream};

/// Everything the controller host needs to start (again).
#[derive(Clone)]
pub struct ControllerSetup {
    /// The authoritative metadata (durable, like a metadata quorum's log).
    pub meta: Rc<RefCell<ClusterMeta>>,
    /// The message arena.
    pub arena: SharedArena,
    /// Cluster settings.
    pub platform: PlatformConfig,
}

struct State {
    setup: ControllerSetup,
    last_heartbeat: RefCell<BTreeMap<u32, Instant>>,
    alive: RefCell<BTreeMap<u32, bool>>,
}

/// Runs the controller until the host is crashed.
pub async fn run_controller(setup: ControllerSetup) -> turmoil::Result {
    let now = sim_instant();
    let brokers = setup.platform.brokers;
    let state = Rc::new(State {
        last_heartbeat: RefCell::new((0..brokers).map(|b| (b, now)).collect()),
        alive: RefCell::new((0..brokers).map(|b| (b, true)).collect()),
        setup,
    });
    let listener = TcpListener::bind(("0.0.0.0", CONTROLLER_PORT)).await?;
    tokio::task::spawn_local(liveness_loop(state.clone()));
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(serve(state.clone(), stream));
    }
}

async fn serve(state: Rc<State>, mut stream: TcpStream) {
    let arena = state.setup.arena.clone();
    while let Ok(Message::Request(req)) = wire::recv(&arena, &mut stream).await {
        let reply = match req {
            Request::Heartbeat {
                broker,
                incarnation,
                known_version,
            } => {
                state
                    .last_heartbeat
                    .borrow_mut()
                    .insert(broker, sim_instant());
                let known = state
                    .setup
                    .meta
                    .borrow_mut()
                    .incarnations
                    .insert(broker, incarnation);
                let was_alive = state.alive.borrow().get(&broker).copied().unwrap_or(false);
                if was_alive && known.is_some_and(|k| k != incarnation) {
                    // It restarted within the session timeout and may have lost what it had
                    // not flushed, so it must not carry on leading as before: fence it as a
                    // failed broker, then let it rejoin.
                    broker_down(&state, broker);
                    broker_up(&state, broker);
                } else if !was_alive {
                    state.alive.borrow_mut().insert(broker, true);
                    broker_up(&state, broker);
                }
                let meta = state.setup.meta.borrow();
                Response::Heartbeat((meta.version > known_version).then(|| Box::new(meta.clone())))
            }
            Request::AlterIsr {
                tp,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let mut meta = state.setup.meta.borrow_mut();
                // A change worked out from an older state (the controller has since dropped a
                // dead broker from the ISR, say) is refused, not applied over it.
                let accepted = match meta.partitions.get_mut(&tp) {
                    Some(m)
                        if m.leader == Some(leader)
                            && m.leader_epoch == leader_epoch
                            && m.partition_epoch == partition_epoch =>
                    {
                        m.isr = isr;
                        m.partition_epoch += 1;
                        Some(m.partition_epoch)
                    }
                    _ => None,
                };
                if accepted.is_some() {
                    meta.version += 1;
                }
                Response::AlterIsr(accepted)
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

async fn liveness_loop(state: Rc<State>) {
    let timeout = state.setup.platform.broker_session_timeout.to_std();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sim_instant();
        let expired: Vec<u32> = state
            .last_heartbeat
            .borrow()
            .iter()
            .filter(|(b, t)| {
                now.duration_since(**t) > timeout
                    && state.alive.borrow().get(b).copied().unwrap_or(false)
            })
            .map(|(b, _)| *b)
            .collect();
        for b in expired {
            state.alive.borrow_mut().insert(b, false);
            broker_down(&state, b);
        }
    }
}

fn is_alive(state: &State, b: u32) -> bool {
    state.alive.borrow().get(&b).copied().unwrap_or(false)
}

fn broker_down(state: &State, dead: u32) {
    let unclean = state.setup.platform.unclean_leader_election;
    let mut meta = state.setup.meta.borrow_mut();
    for m in meta.partitions.values_mut() {
        if !m.replicas.contains(&dead) {
            continue;
        }
        let before = (m.leader, m.isr.clone());
        if m.isr.len() > 1 {
            m.isr.retain(|r| *r != dead);
        }
        if m.leader == Some(dead) {
            let clean = m
                .isr
                .iter()
                .copied()
                .find(|r| *r != dead && is_alive(state, *r));
            let chosen = clean.or_else(|| {
                unclean
                    .then(|| {
                        m.replicas
                            .iter()
                            .copied()
                            .find(|r| *r != dead && is_alive(state, *r))
                    })
                    .flatten()
            });
            if let Some(new) = chosen {
                if clean.is_none() {
                    m.isr = vec![new];
                }
            }
            m.leader = chosen;
            m.leader_epoch += 1;
        }
        if (m.leader, &m.isr) != (before.0, &before.1) {
            m.partition_epoch += 1;
        }
    }
    meta.version += 1;
}

fn broker_up(state: &State, back: u32) {
    let unclean = state.setup.platform.unclean_leader_election;
    let mut meta = state.setup.meta.borrow_mut();
    for m in meta.partitions.values_mut() {
        if m.leader.is_some() || !m.replicas.contains(&back) {
            continue;
        }
        if m.isr.contains(&back) {
            m.leader = Some(back);
            m.leader_epoch += 1;
            m.partition_epoch += 1;
        } else if unclean {
            m.leader = Some(back);
            m.isr = vec![back];
            m.leader_epoch += 1;
            m.partition_epoch += 1;
        }
    }
    meta.version += 1;
}
