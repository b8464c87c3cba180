//! The run's recorder: it keeps the observations made since the runner last took them, in
//! order, and, beside them, how far each source change has got, so the run knows when the
//! pipeline has drained. This bookkeeping is the simulator's own; the checker derives its
//! verdict from the history alone.

use nrtsim_history::{Observation, TopicName};
use nrtsim_workloads::Key;
use std::collections::BTreeMap;

const PENDING: u8 = 0;
const PARKED: u8 = 1;
const DONE: u8 = 2;

/// Observations not yet taken, and the state of every source change.
#[derive(Default)]
pub struct Recorder {
    observations: Vec<Observation>,
    /// Per LSN (index = LSN): pending, parked in redo, or done.
    state: Vec<u8>,
    /// Per LSN, the LSN of the same key's change before it (0 for none).
    prev_same_key: Vec<u64>,
    /// Per key, its latest LSN.
    last_of_key: BTreeMap<Key, u64>,
    pending: u64,
    /// Whether a change parked in redo is still pending (the scenario waits for redo).
    wait_for_redo: bool,
}

impl Recorder {
    /// A recorder for a run that does (`true`) or does not wait for redo to empty.
    pub fn new(wait_for_redo: bool) -> Self {
        Self {
            wait_for_redo,
            ..Self::default()
        }
    }

    /// Records an observation.
    pub fn record(&mut self, obs: Observation) {
        match &obs {
            Observation::SourceCommit { changes, .. } => {
                for c in changes {
                    let i = c.lsn as usize;
                    if self.state.len() <= i {
                        self.state.resize(i + 1, DONE);
                        self.prev_same_key.resize(i + 1, 0);
                    }
                    self.state[i] = PENDING;
                    self.prev_same_key[i] = self.last_of_key.insert(c.key, c.lsn).unwrap_or(0);
                    self.pending += 1;
                }
            }
            Observation::LakeCommit { rows, .. } => {
                for r in rows {
                    self.settle(r.change_id, DONE);
                }
            }
            Observation::Routed { change_id, to, .. } => {
                let to = if *to == TopicName::Critical {
                    DONE
                } else if self.wait_for_redo {
                    PENDING
                } else {
                    PARKED
                };
                self.settle(*change_id, to);
            }
            Observation::Produced {
                topic: TopicName::Enriched,
                change_ids,
                ..
            } => {
                // A change replayed out of redo is on its way again.
                for id in change_ids {
                    if self.state.get(*id as usize) == Some(&PARKED) {
                        self.state[*id as usize] = PENDING;
                        self.pending += 1;
                    }
                }
            }
            Observation::SnapshotChunk { rows, .. } => {
                // A snapshot row takes up its key's earlier changes: they will not be
                // streamed on their own.
                for &id in rows {
                    let mut prev = self.prev_same_key.get(id as usize).copied().unwrap_or(0);
                    while prev != 0 && self.state.get(prev as usize) == Some(&PENDING) {
                        self.settle(prev, DONE);
                        prev = self.prev_same_key[prev as usize];
                    }
                }
            }
            _ => {}
        }
        self.observations.push(obs);
    }

    fn settle(&mut self, id: u64, to: u8) {
        let Some(s) = self.state.get_mut(id as usize) else {
            return;
        };
        if *s == PENDING {
            self.pending -= 1;
        }
        if *s != DONE {
            *s = to;
        }
        if *s == PENDING {
            self.pending += 1;
        }
    }

    /// Source changes that have not reached the lake, critical, or a parking place in redo.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Takes the observations not taken yet.
    pub fn take(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    /// How many observations are held.
    pub fn held(&self) -> usize {
        self.observations.len()
    }

    /// Hands the observations made so far over in `into`, which is cleared and kept to record
    /// the next ones in: the two buffers take turns, so nothing is allocated again.
    pub fn swap_into(&mut self, into: &mut Vec<Observation>) {
        into.clear();
        std::mem::swap(&mut self.observations, into);
    }
}
