//! Telling a pipeline that has finished from one that is stuck. After the workload stops, the
//! run waits until every committed change has reached its end. When some never do, the question
//! is whether they are still on their way (a liveness failure) or gone (a loss). The probe here
//! answers it from durable state only: the pipeline has *settled* when the CDC connector's
//! committed position covers the whole source log and every consuming task's committed
//! position (in its checkpoints, or its consumer group's) has reached the end of its input
//! partitions on their current leaders. Nothing is
//! then left in flight, and a change that has not arrived never will.

use crate::broker::BrokerDisk;
use crate::cluster::ClusterMeta;
use crate::group_coordinator::GroupStore;
use crate::host_env::SharedCheckpoints;
use nrtsim_history::TopicName;
use nrtsim_pipeline::lake::LakeTable;
use nrtsim_pipeline::{CheckpointStore, TopicPartition};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A task that consumes a topic, and the partitions it owns.
#[derive(Clone, Debug)]
pub struct Reader {
    /// The task's host name.
    pub host: String,
    /// The topic it consumes.
    pub topic: TopicName,
    /// Its partitions.
    pub partitions: Vec<u32>,
    /// Whether its positions are committed to the consumer group named `host` rather than
    /// kept in its checkpoints.
    pub group: bool,
}

/// Reads the durable state of the world to judge whether the pipeline has settled.
pub struct DrainProbe {
    /// Cluster metadata (for the current leaders).
    pub meta: Rc<RefCell<ClusterMeta>>,
    /// Every broker's disk, by broker id.
    pub disks: Vec<Rc<RefCell<BrokerDisk>>>,
    /// Task checkpoints: a task's committed positions are those of the checkpoint it would
    /// restore (for a two-phase lake sink, the rows they cover are committed or pre-committed).
    pub checkpoints: SharedCheckpoints,
    /// Every consuming task.
    pub readers: Vec<Reader>,
    /// The consumer groups' committed positions.
    pub groups: Rc<RefCell<GroupStore>>,
    /// The lake table: which of a two-phase sink's pre-commits it has committed.
    pub lake: Rc<RefCell<LakeTable>>,
}

impl DrainProbe {
    /// Whether nothing is left in flight, given that the source log ends at `last_lsn`.
    pub fn settled(&self, last_lsn: u64) -> bool {
        let cdc_done = self
            .checkpoints
            .load("cdc")
            .is_some_and(|c| c.next_lsn > last_lsn);
        cdc_done && self.readers.iter().all(|r| self.caught_up(r))
    }

    fn caught_up(&self, r: &Reader) -> bool {
        let committed: BTreeMap<TopicPartition, u64> = if r.group {
            self.groups
                .borrow()
                .offsets(&r.host)
                .into_iter()
                .map(|(tp, c)| (tp, c.offset))
                .collect()
        } else {
            let cp = self.checkpoints.load(&r.host).unwrap_or_default();
            // A two-phase lake sink's checkpoint covers rows it has only pre-committed: they
            // are on their way until the lake commits them (or has rolled them back).
            let lake = self.lake.borrow();
            let pending = cp.staged.keys().any(|&id| {
                lake.last_commit(&r.host).is_none_or(|c| c.0 < id)
                    && lake.rolled_back_at(&r.host, id).is_none()
            });
            if pending {
                return false;
            }
            cp.offsets
        };
        r.partitions.iter().all(|&p| {
            let tp = TopicPartition::new(r.topic, p);
            let Some(leader) = self.meta.borrow().leader(&tp) else {
                return false;
            };
            let end = self.disks[leader as usize]
                .borrow()
                .logs
                .get(&tp)
                .map_or(0, |l| l.leo());
            // Past the end only after a leader change truncated the log under the reader: it
            // waits there (or was stopped) and is not caught up.
            committed.get(&tp).copied().unwrap_or(0) == end
        })
    }
}
