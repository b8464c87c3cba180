//! The checkpoint coordinator: checkpoint *n* of a job is triggered at `n × interval` of
//! simulated time; each task snapshots its input positions and state when it sees the trigger
//! and acknowledges it by storing the snapshot; the checkpoint completes once every task of
//! the job has acknowledged it. A task that restarts restores its snapshot of the job's last
//! completed checkpoint, never a newer one of its own that some other task did not reach.
//!
//! Jobs the coordinator does not know (the CDC connector, at-most-once tasks that commit per
//! poll) keep one snapshot per task, and a restart restores the newest.

use crate::env::TaskCheckpoint;
use std::collections::{BTreeMap, BTreeSet};

/// The job a task belongs to: its name without the `-<index>` suffix (`enrich-1` → `enrich`).
pub fn job_of(task: &str) -> &str {
    match task.rsplit_once('-') {
        Some((job, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => job,
        _ => task,
    }
}

/// Which checkpoint is due at `now_ms`: the number of whole intervals since the run began.
pub fn trigger_at(now_ms: u64, interval_ms: u64) -> u64 {
    now_ms / interval_ms.max(1)
}

#[derive(Clone, Debug, Default)]
struct Job {
    tasks: BTreeSet<String>,
    /// Per checkpoint id, the tasks that acknowledged it (only ids not yet completed).
    acks: BTreeMap<u64, BTreeSet<String>>,
    completed: u64,
}

/// Snapshots of every task, and which checkpoints of each coordinated job have completed.
#[derive(Clone, Debug, Default)]
pub struct Coordinator {
    jobs: BTreeMap<String, Job>,
    /// Per task, its snapshots by checkpoint id: for coordinated jobs those from the last
    /// completed one on; for the others just the newest.
    snapshots: BTreeMap<String, BTreeMap<u64, TaskCheckpoint>>,
}

impl Coordinator {
    /// Coordinates `job`, whose checkpoints complete when all of `tasks` acknowledged them.
    pub fn coordinate(&mut self, job: &str, tasks: impl IntoIterator<Item = String>) {
        self.jobs.insert(
            job.to_string(),
            Job {
                tasks: tasks.into_iter().collect(),
                ..Job::default()
            },
        );
    }

    /// Stores `task`'s snapshot for checkpoint `snapshot.id`: its acknowledgement.
    pub fn acknowledge(&mut self, task: &str, snapshot: TaskCheckpoint) {
        let id = snapshot.id;
        let mine = self.snapshots.entry(task.to_string()).or_default();
        let Some(job) = self.jobs.get_mut(job_of(task)) else {
            // Not coordinated: only the newest snapshot matters.
            mine.clear();
            mine.insert(id, snapshot);
            return;
        };
        // A checkpoint that completed (or was superseded) is closed: a late snapshot must not
        // replace a restore point.
        if id <= job.completed {
            return;
        }
        mine.insert(id, snapshot);
        let acked = job.acks.entry(id).or_default();
        acked.insert(task.to_string());
        if !job.tasks.iter().all(|t| acked.contains(t)) {
            return;
        }
        job.completed = id;
        job.acks = job.acks.split_off(&(id + 1));
        // Each task keeps its restore point (its newest snapshot up to `id`) and what is newer.
        for t in &job.tasks {
            if let Some(s) = self.snapshots.get_mut(t) {
                let newer = s.split_off(&(id + 1));
                let base = s.pop_last();
                *s = newer;
                if let Some((k, v)) = base {
                    s.insert(k, v);
                }
            }
        }
    }

    /// `task` failed and is starting again: the checkpoints its job has not completed are
    /// aborted, as a job manager aborts its pending checkpoints when a task fails over. An
    /// acknowledgement from the instance that died must not complete a checkpoint once the
    /// other tasks acknowledge it too: the restarted instance goes back to the last completed
    /// checkpoint, and would commit other work under that id than the snapshot describes.
    /// Nothing happens for a task whose job is not coordinated.
    pub fn fail(&mut self, task: &str) {
        let Some(job) = self.jobs.get_mut(job_of(task)) else {
            return;
        };
        job.acks.clear();
        if let Some(mine) = self.snapshots.get_mut(task) {
            mine.split_off(&(job.completed + 1));
        }
    }

    /// The last completed checkpoint of `task`'s job (0 before the first, or when the job is
    /// not coordinated).
    pub fn completed(&self, task: &str) -> u64 {
        self.jobs.get(job_of(task)).map_or(0, |j| j.completed)
    }

    /// The snapshot `task` restores from: its snapshot of the job's last completed checkpoint
    /// (or the newest before it); for a job not coordinated, its newest.
    pub fn restore(&self, task: &str) -> Option<TaskCheckpoint> {
        let mine = self.snapshots.get(task)?;
        match self.jobs.get(job_of(task)) {
            Some(job) => mine
                .range(..=job.completed)
                .next_back()
                .map(|(_, s)| s.clone()),
            None => mine.last_key_value().map(|(_, s)| s.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: u64, offset: u64) -> TaskCheckpoint {
        TaskCheckpoint {
            id,
            next_lsn: offset,
            ..TaskCheckpoint::default()
        }
    }

    #[test]
    fn a_task_belongs_to_the_job_its_name_says() {
        assert_eq!(job_of("enrich-1"), "enrich");
        assert_eq!(job_of("lake-12"), "lake");
        assert_eq!(job_of("cdc"), "cdc");
        assert_eq!(job_of("a-b"), "a-b");
        assert_eq!(trigger_at(29_999, 10_000), 2);
        assert_eq!(trigger_at(30_000, 10_000), 3);
    }

    #[test]
    fn a_checkpoint_completes_when_every_task_acknowledged_it() {
        let mut c = Coordinator::default();
        c.coordinate("enrich", ["enrich-0".to_string(), "enrich-1".to_string()]);
        c.acknowledge("enrich-0", snap(1, 10));
        assert_eq!(c.completed("enrich-0"), 0, "enrich-1 has not acknowledged");
        assert_eq!(c.restore("enrich-0"), None, "nothing completed to restore");
        c.acknowledge("enrich-1", snap(1, 11));
        assert_eq!(c.completed("enrich-1"), 1);
        // enrich-0 goes on to checkpoint 2, enrich-1 is down and misses it.
        c.acknowledge("enrich-0", snap(2, 20));
        assert_eq!(c.completed("enrich-0"), 1);
        assert_eq!(
            c.restore("enrich-0").unwrap().next_lsn,
            10,
            "a restart goes back to the completed checkpoint, not its own newer one"
        );
        // Checkpoint 3 is acknowledged by both: it completes, and 2 never will.
        c.acknowledge("enrich-1", snap(3, 31));
        c.acknowledge("enrich-0", snap(3, 30));
        assert_eq!(c.completed("enrich-0"), 3);
        assert_eq!(c.restore("enrich-0").unwrap().next_lsn, 30);
        assert_eq!(c.restore("enrich-1").unwrap().next_lsn, 31);
        c.acknowledge("enrich-0", snap(2, 99));
        assert_eq!(
            c.completed("enrich-0"),
            3,
            "a late acknowledgement changes nothing"
        );
    }

    /// lake-0 acknowledges checkpoint 2 and dies; lake-1 acknowledges 2 after lake-0 restarted
    /// from 1. Checkpoint 2 must not complete on the dead instance's snapshot, only on the one
    /// the restarted instance makes.
    #[test]
    fn a_failed_tasks_pending_acknowledgements_complete_nothing() {
        let mut c = Coordinator::default();
        c.coordinate("lake", ["lake-0".to_string(), "lake-1".to_string()]);
        c.acknowledge("lake-0", snap(1, 10));
        c.acknowledge("lake-1", snap(1, 11));
        c.acknowledge("lake-0", snap(2, 20));
        c.fail("lake-0");
        assert_eq!(c.restore("lake-0").unwrap().next_lsn, 10);
        c.acknowledge("lake-1", snap(2, 21));
        assert_eq!(
            c.completed("lake-1"),
            1,
            "lake-0's acknowledgement of 2 was withdrawn"
        );
        // The restarted lake-0 acknowledges 2 anew: 2 completes on the snapshot it would
        // restore, not on the dead instance's.
        c.acknowledge("lake-0", snap(2, 25));
        assert_eq!(c.completed("lake-0"), 2);
        assert_eq!(c.restore("lake-0").unwrap().next_lsn, 25);
        c.acknowledge("lake-0", snap(3, 30));
        c.acknowledge("lake-1", snap(3, 31));
        assert_eq!(c.completed("lake-0"), 3);
        assert_eq!(c.restore("lake-0").unwrap().next_lsn, 30);
        // An uncoordinated task's failure changes nothing.
        c.acknowledge("cdc", snap(4, 40));
        c.fail("cdc");
        assert_eq!(c.restore("cdc").unwrap().next_lsn, 40);
    }

    #[test]
    fn an_uncoordinated_task_restores_its_newest_snapshot() {
        let mut c = Coordinator::default();
        c.acknowledge("cdc", snap(4, 40));
        c.acknowledge("cdc", snap(5, 50));
        assert_eq!(c.restore("cdc").unwrap().next_lsn, 50);
        assert_eq!(c.completed("cdc"), 0);
    }
}
