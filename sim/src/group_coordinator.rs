//! The group coordinator host (`group-coordinator`): consumer groups for the plain Kafka
//! consumers. Members join and sync in generations; a new member, a member that asks to
//! rejoin, or one whose session expired starts a rebalance; the rebalance completes when
//! every member still in the group has rejoined (or its deadline passes and the laggards are
//! dropped), with a new generation and a range assignment of the partitions. Positions are
//! committed per group, and only by a member of the current generation, so a member that
//! was dropped cannot overwrite what its successor commits.
//!
//! The assignment is computed by the coordinator, as Kafka's newer group protocol does, but
//! still handed out in the classic join-then-sync round trips. Its state is durable (Kafka
//! keeps it in `__consumer_offsets`); after a restart every member's session starts afresh.

use crate::host_env::sim_now_ms;
use crate::wire::{
    self, CommittedOffsets, GroupError, JoinOutcome, Message, Request, Response, SharedArena,
    GROUP_COORDINATOR_PORT,
};
use nrtsim_history::TopicName;
use nrtsim_pipeline::TopicPartition;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use turmoil::net::{TcpListener, TcpStream};

/// Where a group stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupPhase {
    /// No members.
    Empty,
    /// Waiting for the members to rejoin.
    PreparingRebalance,
    /// Every member has its assignment for the current generation.
    Stable,
}

/// One member of a group.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its session timeout.
    pub session_timeout_ms: u64,
    /// When the coordinator last heard from it.
    pub last_seen_ms: u64,
    /// Whether it has rejoined the rebalance in progress.
    pub joined: bool,
    /// The generation it was last assigned in.
    pub generation: u32,
    /// Topics it reads, with their partition counts.
    pub topics: Vec<(TopicName, u32)>,
    /// Its partitions in `generation`.
    pub assignment: Vec<TopicPartition>,
}

/// One consumer group.
#[derive(Clone, Debug)]
pub struct Group {
    /// Current generation (0 before the first rebalance completes).
    pub generation: u32,
    /// Where it stands.
    pub phase: GroupPhase,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// When a rebalance in progress stops waiting for members that have not rejoined.
    pub rebalance_deadline_ms: u64,
    /// Committed positions.
    pub offsets: CommittedOffsets,
}

impl Group {
    fn new() -> Self {
        Self {
            generation: 0,
            phase: GroupPhase::Empty,
            members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            offsets: BTreeMap::new(),
        }
    }

    /// The longest session timeout among the members: how long a rebalance waits for them.
    fn longest_session_ms(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.session_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn start_rebalance(&mut self, now: u64) {
        if self.phase == GroupPhase::PreparingRebalance {
            return;
        }
        self.phase = GroupPhase::PreparingRebalance;
        self.rebalance_deadline_ms = now + self.longest_session_ms();
        for m in self.members.values_mut() {
            m.joined = false;
        }
    }

    /// Completes the rebalance in progress if every member rejoined or its deadline passed.
    fn try_complete(&mut self, now: u64) {
        if self.phase != GroupPhase::PreparingRebalance {
            return;
        }
        if !self.members.values().all(|m| m.joined) && now < self.rebalance_deadline_ms {
            return;
        }
        self.members.retain(|_, m| m.joined);
        self.generation += 1;
        if self.members.is_empty() {
            self.phase = GroupPhase::Empty;
            return;
        }
        let generation = self.generation;
        let assignment = range_assignment(&self.members);
        for (id, m) in self.members.iter_mut() {
            m.joined = false;
            m.generation = generation;
            m.assignment = assignment.get(id).cloned().unwrap_or_default();
        }
        self.phase = GroupPhase::Stable;
    }
}

/// Kafka's range assignor: per topic, the members in id order take contiguous ranges of its
/// partitions, the first `partitions % members` one more than the rest.
fn range_assignment(members: &BTreeMap<String, Member>) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut topics: BTreeMap<TopicName, u32> = BTreeMap::new();
    for m in members.values() {
        for (t, n) in &m.topics {
            let e = topics.entry(*t).or_insert(0);
            *e = (*e).max(*n);
        }
    }
    let mut out: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    for (topic, partitions) in topics {
        let readers: Vec<&String> = members
            .iter()
            .filter(|(_, m)| m.topics.iter().any(|(t, _)| *t == topic))
            .map(|(id, _)| id)
            .collect();
        let k = readers.len() as u32;
        let (each, extra) = (partitions / k, partitions % k);
        let mut next = 0;
        for (i, id) in readers.into_iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            out.entry(id.clone())
                .or_default()
                .extend((next..next + take).map(|p| TopicPartition::new(topic, p)));
            next += take;
        }
    }
    out
}

/// The coordinator's durable state.
#[derive(Debug, Default)]
pub struct GroupStore {
    next_member: u64,
    /// Groups by id.
    pub groups: BTreeMap<String, Group>,
}

impl GroupStore {
    /// A join (or a rejoin, or a join asked again while the rebalance is pending).
    pub fn join(
        &mut self,
        group: &str,
        client: &str,
        member: Option<&str>,
        topics: &[(TopicName, u32)],
        session_timeout_ms: u64,
        now: u64,
    ) -> JoinOutcome {
        let g = self
            .groups
            .entry(group.to_string())
            .or_insert_with(Group::new);
        let known = member.filter(|m| g.members.contains_key(*m));
        let id = match known {
            Some(id) => id.to_string(),
            None => {
                // A new member (or one whose session expired: it starts over).
                self.next_member += 1;
                let id = format!("{client}-{}", self.next_member);
                g.members.insert(
                    id.clone(),
                    Member {
                        session_timeout_ms,
                        last_seen_ms: now,
                        joined: false,
                        generation: 0,
                        topics: topics.to_vec(),
                        assignment: Vec::new(),
                    },
                );
                g.start_rebalance(now);
                id
            }
        };
        let m = g.members.get_mut(&id).expect("member present");
        m.last_seen_ms = now;
        let same_topics = m.topics == topics;
        m.topics = topics.to_vec();
        m.session_timeout_ms = session_timeout_ms;
        if g.phase == GroupPhase::Stable && m.generation == g.generation && same_topics {
            // Either the rebalance this member was waiting on completed, or a member of the
            // current generation asks again with nothing changed: as Kafka does, it is
            // answered with the current generation, and nobody else is disturbed.
            return JoinOutcome::Joined {
                member: id,
                generation: g.generation,
            };
        }
        if g.phase != GroupPhase::PreparingRebalance {
            // A member whose subscription changed: a new rebalance.
            g.start_rebalance(now);
        }
        g.members.get_mut(&id).expect("member present").joined = true;
        g.try_complete(now);
        if g.phase == GroupPhase::Stable {
            JoinOutcome::Joined {
                member: id,
                generation: g.generation,
            }
        } else {
            JoinOutcome::Pending { member: id }
        }
    }

    fn member_mut(
        &mut self,
        group: &str,
        member: &str,
        now: u64,
    ) -> Result<&mut Group, GroupError> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or(GroupError::UnknownMember)?;
        let m = g.members.get_mut(member).ok_or(GroupError::UnknownMember)?;
        m.last_seen_ms = now;
        Ok(g)
    }

    /// A member's assignment for `generation`.
    pub fn sync(
        &mut self,
        group: &str,
        member: &str,
        generation: u32,
        now: u64,
    ) -> Result<Vec<TopicPartition>, GroupError> {
        let g = self.member_mut(group, member, now)?;
        if g.phase == GroupPhase::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if generation != g.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(g.members[member].assignment.clone())
    }

    /// A heartbeat: keeps the session; tells the member of a rebalance.
    pub fn heartbeat(
        &mut self,
        group: &str,
        member: &str,
        generation: u32,
        now: u64,
    ) -> Result<(), GroupError> {
        let g = self.member_mut(group, member, now)?;
        if g.phase == GroupPhase::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if generation != g.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// Commits positions for a member of the current generation (also while a rebalance is
    /// being prepared, so that a member can commit before it gives its partitions up).
    pub fn commit(
        &mut self,
        group: &str,
        member: &str,
        generation: u32,
        offsets: &CommittedOffsets,
        now: u64,
    ) -> Result<(), GroupError> {
        let g = self.member_mut(group, member, now)?;
        if generation != g.generation {
            return Err(GroupError::IllegalGeneration);
        }
        g.offsets.extend(offsets.iter().map(|(tp, o)| (*tp, *o)));
        Ok(())
    }

    /// A group's committed positions.
    pub fn offsets(&self, group: &str) -> CommittedOffsets {
        self.groups
            .get(group)
            .map(|g| g.offsets.clone())
            .unwrap_or_default()
    }

    /// Drops members whose session expired and completes rebalances whose deadline passed.
    pub fn tick(&mut self, now: u64) {
        for g in self.groups.values_mut() {
            let before = g.members.len();
            g.members
                .retain(|_, m| now.saturating_sub(m.last_seen_ms) <= m.session_timeout_ms);
            if g.members.len() < before {
                if g.members.is_empty() {
                    g.phase = GroupPhase::Empty;
                    g.generation += 1;
                } else {
                    g.start_rebalance(now);
                }
            }
            g.try_complete(now);
        }
    }

    /// After a coordinator restart: every member's session starts now.
    pub fn restarted(&mut self, now: u64) {
        for g in self.groups.values_mut() {
            for m in g.members.values_mut() {
                m.last_seen_ms = now;
            }
            // Members could not rejoin while the coordinator was down: the rebalance's wait
            // starts over, or they would be dropped while still reading their partitions.
            if g.phase == GroupPhase::PreparingRebalance {
                g.rebalance_deadline_ms = g.rebalance_deadline_ms.max(now + g.longest_session_ms());
            }
        }
    }
}

/// Everything the coordinator host needs to start (again).
#[derive(Clone)]
pub struct GroupCoordinatorSetup {
    /// Durable state.
    pub store: Rc<RefCell<GroupStore>>,
    /// The message arena.
    pub arena: SharedArena,
}

/// Runs the group coordinator until the host is crashed.
pub async fn run_group_coordinator(setup: GroupCoordinatorSetup) -> turmoil::Result {
    setup.store.borrow_mut().restarted(sim_now_ms());
    let listener = TcpListener::bind(("0.0.0.0", GROUP_COORDINATOR_PORT)).await?;
    let store = setup.store.clone();
    tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.borrow_mut().tick(sim_now_ms());
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(serve(setup.clone(), stream));
    }
}

async fn serve(setup: GroupCoordinatorSetup, mut stream: TcpStream) {
    while let Ok(Message::Request(req)) = wire::recv(&setup.arena, &mut stream).await {
        let reply = answer(&mut setup.store.borrow_mut(), req, sim_now_ms());
        let Some(reply) = reply else { return };
        if wire::send(&setup.arena, &mut stream, Message::Response(reply))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The coordinator's answer to `req`; none for a request it does not serve.
fn answer(store: &mut GroupStore, req: Request, now: u64) -> Option<Response> {
    let reply = match req {
        Request::JoinGroup {
            group,
            client,
            member,
            topics,
            session_timeout_ms,
        } => Response::JoinGroup(Ok(store.join(
            &group,
            &client,
            member.as_deref(),
            &topics,
            session_timeout_ms,
            now,
        ))),
        Request::SyncGroup {
            group,
            member,
            generation,
        } => Response::SyncGroup(store.sync(&group, &member, generation, now)),
        Request::GroupHeartbeat {
            group,
            member,
            generation,
        } => Response::GroupHeartbeat(store.heartbeat(&group, &member, generation, now)),
        Request::OffsetCommit {
            group,
            member,
            generation,
            offsets,
        } => Response::OffsetCommit(store.commit(&group, &member, generation, &offsets, now)),
        Request::OffsetFetch { group } => Response::OffsetFetch(store.offsets(&group)),
        _ => return None,
    };
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Committed;

    const TOPICS: &[(TopicName, u32)] = &[(TopicName::Enriched, 5)];

    fn joined(o: JoinOutcome) -> (String, u32) {
        match o {
            JoinOutcome::Joined { member, generation } => (member, generation),
            JoinOutcome::Pending { member } => panic!("{member} still pending"),
        }
    }

    fn member(o: &JoinOutcome) -> String {
        match o {
            JoinOutcome::Joined { member, .. } | JoinOutcome::Pending { member } => member.clone(),
        }
    }

    /// Two members in a stable generation.
    fn two_members(s: &mut GroupStore) -> (String, String, u32) {
        let (a, g1) = joined(s.join("g", "a", None, TOPICS, 10_000, 0));
        assert_eq!(g1, 1, "a lone member completes the first rebalance");
        let b_pending = s.join("g", "b", None, TOPICS, 10_000, 10);
        let b = member(&b_pending);
        assert!(matches!(b_pending, JoinOutcome::Pending { .. }));
        assert_eq!(
            s.heartbeat("g", &a, 1, 20),
            Err(GroupError::RebalanceInProgress),
            "the new member's join tells the old one to rejoin"
        );
        let (_, g2) = joined(s.join("g", "a", Some(&a), TOPICS, 10_000, 30));
        assert_eq!(g2, 2);
        let (_, gb) = joined(s.join("g", "b", Some(&b), TOPICS, 10_000, 40));
        assert_eq!(
            gb, 2,
            "b learns the completed generation when it asks again"
        );
        (a, b, 2)
    }

    #[test]
    fn members_share_the_partitions_in_ranges() {
        let mut s = GroupStore::default();
        let (a, b, generation) = two_members(&mut s);
        let pa = s.sync("g", &a, generation, 50).unwrap();
        let pb = s.sync("g", &b, generation, 50).unwrap();
        let nums = |v: &[TopicPartition]| v.iter().map(|tp| tp.partition).collect::<Vec<_>>();
        assert_eq!(nums(&pa), vec![0, 1, 2]);
        assert_eq!(nums(&pb), vec![3, 4]);
        assert_eq!(s.sync("g", &a, 1, 50), Err(GroupError::IllegalGeneration));
    }

    #[test]
    fn a_member_that_misses_its_session_loses_its_partitions() {
        let mut s = GroupStore::default();
        let (a, b, generation) = two_members(&mut s);
        // a keeps heartbeating; b falls silent.
        for t in (1_000..=10_000).step_by(1_000) {
            assert_eq!(s.heartbeat("g", &a, generation, t), Ok(()));
            s.tick(t);
        }
        s.tick(10_100);
        assert_eq!(
            s.heartbeat("g", &a, generation, 10_200),
            Err(GroupError::RebalanceInProgress)
        );
        let (_, g3) = joined(s.join("g", "a", Some(&a), TOPICS, 10_000, 10_300));
        assert_eq!(g3, 3, "the survivor alone completes the rebalance");
        assert_eq!(s.sync("g", &a, g3, 10_300).unwrap().len(), 5);
        // The dropped member can neither commit nor heartbeat.
        let offsets = BTreeMap::from([(
            TopicPartition::new(TopicName::Enriched, 4),
            Committed {
                offset: 99,
                leader_epoch: Some(2),
            },
        )]);
        assert_eq!(
            s.commit("g", &b, generation, &offsets, 10_400),
            Err(GroupError::UnknownMember)
        );
        assert_eq!(
            s.commit("g", &a, generation, &offsets, 10_400),
            Err(GroupError::IllegalGeneration),
            "a commit from an older generation is refused"
        );
        assert_eq!(s.commit("g", &a, g3, &offsets, 10_400), Ok(()));
        assert_eq!(s.offsets("g"), offsets);
    }

    #[test]
    fn a_current_member_asking_again_disturbs_nobody() {
        let mut s = GroupStore::default();
        let (a, b, generation) = two_members(&mut s);
        let again = s.join("g", "a", Some(&a), TOPICS, 10_000, 100);
        assert_eq!(
            again,
            JoinOutcome::Joined {
                member: a.clone(),
                generation
            }
        );
        assert_eq!(s.heartbeat("g", &b, generation, 200), Ok(()));
    }

    #[test]
    fn a_coordinator_restart_gives_a_pending_rebalance_a_full_wait() {
        let mut s = GroupStore::default();
        let (a, b, generation) = two_members(&mut s);
        let _c = s.join("g", "c", None, TOPICS, 10_000, 1_000);
        // The coordinator is down from 1_100 to 30_000, past the rebalance's deadline.
        s.restarted(30_000);
        s.tick(30_100);
        assert_eq!(s.groups["g"].phase, GroupPhase::PreparingRebalance);
        assert_eq!(s.groups["g"].members.len(), 3, "nobody dropped at once");
        assert_eq!(
            s.heartbeat("g", &a, generation, 31_000),
            Err(GroupError::RebalanceInProgress)
        );
        let _ = s.join("g", "a", Some(&a), TOPICS, 10_000, 31_100);
        let (_, g) = joined(s.join("g", "b", Some(&b), TOPICS, 10_000, 31_200));
        assert_eq!(g, generation + 1);
        assert_eq!(s.groups["g"].members.len(), 3);
    }

    #[test]
    fn a_rebalance_drops_members_that_do_not_rejoin_by_its_deadline() {
        let mut s = GroupStore::default();
        let (a, b, generation) = two_members(&mut s);
        // a new member joins; b heartbeats (so its session holds) but never rejoins.
        let c = member(&s.join("g", "c", None, TOPICS, 10_000, 1_000));
        assert_eq!(
            s.heartbeat("g", &b, generation, 1_100),
            Err(GroupError::RebalanceInProgress)
        );
        assert!(matches!(
            s.join("g", "a", Some(&a), TOPICS, 10_000, 1_200),
            JoinOutcome::Pending { .. }
        ));
        for t in (2_000..11_000).step_by(1_000) {
            let _ = s.heartbeat("g", &b, generation, t);
            let _ = s.heartbeat("g", &a, generation, t);
            let _ = s.heartbeat("g", &c, generation, t);
            s.tick(t);
        }
        s.tick(11_001);
        assert_eq!(s.groups["g"].phase, GroupPhase::Stable);
        assert_eq!(s.groups["g"].members.len(), 2, "b missed the deadline");
        assert_eq!(
            s.heartbeat("g", &b, generation, 11_100),
            Err(GroupError::UnknownMember)
        );
    }
}
