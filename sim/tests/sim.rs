//! The simulated brokers on their own: ISR shrink and expand, fencing a restarted broker,
//! replicas that agree after a leader change truncated one of them, readers (restored ones
//! too) that find such a truncation by leader epoch, retention, a producer that stays with a
//! deposed leader it can still reach, an acks=0 producer that finds the new one, and a
//! transactional producer fenced in the middle of a produce call.

use nrtsim_history::{Observation, TopicName};
use nrtsim_pipeline::{
    Acks, ConsumerConfig, Delivery, OffsetReset, PipelineConfig, ProducerConfig, TopicPartition,
};
use nrtsim_sim::{RunSpec, World};
use nrtsim_workloads::WorkloadConfig;

fn spec(pipeline: PipelineConfig) -> RunSpec {
    RunSpec {
        scenario: "broker-model".into(),
        seed: 3,
        replay: String::new(),
        scenario_toml: String::new(),
        duration_ms: 60_000,
        drain_timeout_ms: 60_000,
        workload: WorkloadConfig {
            rate_per_s: 300,
            accounts: 1000,
            ..Default::default()
        },
        platform: Default::default(),
        pipeline,
        costs: Default::default(),
        network: Default::default(),
        standbys: Vec::new(),
    }
}

fn step_to(world: &mut World, t_ms: u64) {
    while world.now_ms() < t_ms {
        assert!(
            !world.step().expect("the simulation runs"),
            "the run ended early"
        );
    }
}

fn broker(name: &str) -> u32 {
    name.strip_prefix("broker-")
        .and_then(|n| n.parse().ok())
        .expect("a broker name")
}

const RAW_0: TopicPartition = TopicPartition::new(TopicName::Raw, 0);

/// A world that may elect an unclean leader, with raw/0's leader cut off from its followers at
/// 3 s: once `replica_lag_time_max` (10 s) has passed it is the ISR alone, and with
/// min.insync.replicas = 1 it acknowledges writes only it holds. Returns it and that leader.
fn lone_leader_world(pipeline: PipelineConfig) -> (World, String) {
    let mut s = spec(pipeline);
    s.platform.min_insync_replicas = 1;
    s.platform.unclean_leader_election = true;
    let mut world = World::new(&s);
    step_to(&mut world, 3_000);
    let leader = world.leader_of(RAW_0).expect("a leader");
    let followers = world.followers_of(RAW_0);
    world.partition(&[leader.clone()], &followers);
    (world, leader)
}

#[test]
fn a_cut_off_follower_leaves_the_isr_and_rejoins_after_healing() {
    let mut world = World::new(&spec(PipelineConfig::default()));
    step_to(&mut world, 3_000);
    let leader = world.leader_of(RAW_0).expect("a leader");
    let follower = world.followers_of(RAW_0)[0].clone();
    assert!(world
        .partition_state(RAW_0)
        .unwrap()
        .isr
        .contains(&broker(&follower)));

    world.partition(&[leader.clone()], &[follower.clone()]);
    // replica_lag_time_max is 10 s by default.
    step_to(&mut world, 16_000);
    let state = world.partition_state(RAW_0).unwrap();
    assert!(
        !state.isr.contains(&broker(&follower)),
        "still in the ISR: {state:?}"
    );
    assert_eq!(state.leader, Some(broker(&leader)), "the leader stays");

    world.repair(&[leader], &[follower.clone()]);
    step_to(&mut world, 22_000);
    let state = world.partition_state(RAW_0).unwrap();
    assert!(
        state.isr.contains(&broker(&follower)),
        "did not rejoin: {state:?}"
    );
}

#[test]
fn a_restarted_broker_is_fenced_before_it_leads_again() {
    let mut world = World::new(&spec(PipelineConfig::default()));
    step_to(&mut world, 3_000);
    let leader = world.leader_of(RAW_0).expect("a leader");
    let before = world.partition_state(RAW_0).unwrap();
    // Back well within the 6 s session timeout: only its new incarnation tells.
    world.crash(&leader);
    step_to(&mut world, 3_300);
    world.restart(&leader);
    step_to(&mut world, 5_000);
    let after = world.partition_state(RAW_0).unwrap();
    assert_ne!(
        after.leader,
        Some(broker(&leader)),
        "the restarted broker kept leading"
    );
    assert!(after.leader_epoch > before.leader_epoch);
    step_to(&mut world, 12_000);
    let later = world.partition_state(RAW_0).unwrap();
    assert!(
        later.isr.contains(&broker(&leader)),
        "never rejoined the ISR: {later:?}"
    );
}

/// After a leader change that truncates the old leader's log, every in-sync replica holds the
/// same records up to the high watermark.
#[test]
fn replicas_agree_after_a_truncating_leader_change() {
    let pipeline = PipelineConfig {
        delivery: Delivery::AtLeastOnce,
        producer: ProducerConfig {
            acks: Acks::Leader,
            idempotence: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut world = World::new(&spec(pipeline));
    step_to(&mut world, 3_000);
    let leader = world.leader_of(RAW_0).expect("a leader");
    let followers = world.followers_of(RAW_0);
    // Followers lag, so the leader holds acknowledged writes no one else has; then it dies.
    let slow = nrtsim_sim::LatencyRange {
        min: nrtsim_workloads::SimDuration::from_ms(300),
        max: nrtsim_workloads::SimDuration::from_ms(500),
    };
    world.set_latency(&[leader.clone()], &followers, Some(slow));
    step_to(&mut world, 8_000);
    let (old_log, _) = world.replica_log(broker(&leader), RAW_0);
    world.crash(&leader);
    step_to(&mut world, 20_000);
    world.set_latency(&[leader.clone()], &followers, None);
    world.restart(&leader);
    step_to(&mut world, 30_000);

    let state = world.partition_state(RAW_0).unwrap();
    let new_leader = state.leader.expect("a leader");
    assert_ne!(new_leader, broker(&leader));
    let (leader_log, hw) = world.replica_log(new_leader, RAW_0);
    for replica in &state.isr {
        let (log, _) = world.replica_log(*replica, RAW_0);
        let n = hw.min(log.len() as u64) as usize;
        assert_eq!(
            log[..n],
            leader_log[..n],
            "broker-{replica} diverges below the high watermark"
        );
    }
    // The old leader gave up the tail no one else had: its log now follows the new leader's.
    let (rejoined, _) = world.replica_log(broker(&leader), RAW_0);
    let common = rejoined.len().min(leader_log.len());
    assert_eq!(rejoined[..common], leader_log[..common]);
    let lost: Vec<u64> = old_log
        .iter()
        .filter(|id| !leader_log.contains(id))
        .copied()
        .collect();
    assert!(
        !lost.is_empty(),
        "the crash should have cost the old leader's unreplicated tail"
    );
    // The new leader recorded its takeover, with its log ending short of the old leader's.
    let took_over: Vec<u64> = world
        .into_history()
        .iter()
        .filter_map(|o| match o {
            Observation::LeaderChange {
                topic: TopicName::Raw,
                partition: 0,
                host,
                log_end,
                ..
            } if *host == format!("broker-{new_leader}") => Some(*log_end),
            _ => None,
        })
        .collect();
    assert!(
        took_over.iter().any(|end| *end < old_log.len() as u64),
        "no takeover short of the old leader's log ({}): {took_over:?}",
        old_log.len()
    );
}

/// An unclean election truncates records the standardize task had read from raw/0. The task
/// sends the leader epoch of the last record it read with its next fetch, learns where the new
/// leader's log diverges from what it read (KIP-320), goes back there and reads what the new
/// leader holds. Under `auto_offset_reset = "none"` it is refused and reads raw/0 no more.
#[test]
fn a_reader_goes_back_where_a_truncated_log_diverged() {
    let run = |auto_offset_reset: OffsetReset| {
        let (mut world, leader) = lone_leader_world(PipelineConfig {
            delivery: Delivery::AtLeastOnce,
            consumer: ConsumerConfig {
                auto_offset_reset,
                ..Default::default()
            },
            ..Default::default()
        });
        // The task reads what the lone leader acknowledges; then it dies and a stale
        // follower leads.
        step_to(&mut world, 16_000);
        world.crash(&leader);
        step_to(&mut world, 40_000);
        world.into_history()
    };
    let raw_0 = |o: &Observation| match o {
        Observation::TruncationDetected {
            topic,
            partition,
            host,
            from,
            to,
            t_ms,
            ..
        } if (*topic, *partition) == (TopicName::Raw, 0) => Some((host.clone(), *from, *to, *t_ms)),
        _ => None,
    };
    let reads_from = |history: &[Observation], reader: &str, after: u64| -> Vec<u64> {
        history
            .iter()
            .filter_map(|o| match o {
                Observation::Read {
                    t_ms,
                    topic: TopicName::Raw,
                    partition: 0,
                    host,
                    base_offset,
                    ..
                } if host == reader && *t_ms >= after => Some(*base_offset),
                _ => None,
            })
            .collect()
    };

    let history = run(OffsetReset::Latest);
    let found: Vec<_> = history.iter().filter_map(raw_0).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let (reader, from, to, at) = found[0].clone();
    assert!(to < from, "did not go back: {from} -> {to}");
    let later = reads_from(&history, &reader, at);
    assert_eq!(
        later.first(),
        Some(&to),
        "the reader should read on from where the logs agree"
    );

    let history = run(OffsetReset::None);
    let found: Vec<_> = history.iter().filter_map(raw_0).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let (reader, from, to, at) = found[0].clone();
    assert_eq!(from, to, "refused, the reader stays");
    assert!(reads_from(&history, &reader, at).is_empty());
}

/// Retention deletes from the front of every replica; a follower that was down longer than
/// the retention finds the leader's log starting past its own end, starts again, empty, at the
/// leader's log start, and catches up into the ISR.
#[test]
fn a_follower_down_longer_than_retention_starts_again_at_the_leaders_log_start() {
    let mut s = spec(PipelineConfig::default());
    s.platform.retention = nrtsim_workloads::SimDuration::from_secs(4);
    s.platform.retention_check_interval = nrtsim_workloads::SimDuration::from_ms(500);
    let mut world = World::new(&s);
    step_to(&mut world, 2_000);
    let follower = world.followers_of(RAW_0)[0].clone();
    let (_, end_before) = world
        .replica_bounds(broker(&follower), RAW_0)
        .expect("the follower holds raw/0");
    world.crash(&follower);
    step_to(&mut world, 15_000);
    let leader = broker(&world.leader_of(RAW_0).expect("a leader"));
    let (leader_start, _) = world.replica_bounds(leader, RAW_0).unwrap();
    assert!(
        leader_start > end_before,
        "retention should have deleted past the follower's log end ({end_before}); the \
         leader's log starts at {leader_start}"
    );
    world.restart(&follower);
    step_to(&mut world, 25_000);
    let (start, end) = world.replica_bounds(broker(&follower), RAW_0).unwrap();
    let (leader_start, leader_end) = world.replica_bounds(leader, RAW_0).unwrap();
    assert!(start > end_before, "the follower kept its old records");
    assert!(
        end > leader_start,
        "the follower has not caught up: {start}..{end}"
    );
    // From where both hold records, the follower's are the leader's.
    let (ids, _) = world.replica_log(broker(&follower), RAW_0);
    let (leader_ids, _) = world.replica_log(leader, RAW_0);
    let from = start.max(leader_start);
    let to = end.min(leader_end);
    assert!(from < to);
    assert_eq!(
        ids[(from - start) as usize..(to - start) as usize],
        leader_ids[(from - leader_start) as usize..(to - leader_start) as usize]
    );
    let state = world.partition_state(RAW_0).unwrap();
    assert!(
        state.isr.contains(&broker(&follower)),
        "never rejoined the ISR: {state:?}"
    );
}

/// A producer goes on writing to a leader the controller has replaced for as long as that
/// leader still answers (it is cut off from the controller and its followers, not from the
/// producer), each write acknowledged under the old epoch; once its copy of the leaders is
/// older than `metadata_max_age` it asks again and moves to the new leader.
#[test]
fn a_producer_stays_with_a_deposed_leader_it_can_still_reach() {
    let run = |max_age_ms: u64| {
        let pipeline = PipelineConfig {
            delivery: Delivery::AtLeastOnce,
            producer: ProducerConfig {
                acks: Acks::Leader,
                idempotence: false,
                metadata_max_age: nrtsim_workloads::SimDuration::from_ms(max_age_ms),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut world = World::new(&spec(pipeline));
        step_to(&mut world, 3_000);
        let leader = world.leader_of(RAW_0).expect("a leader");
        let old_epoch = world.partition_state(RAW_0).unwrap().leader_epoch;
        let mut others = world.followers_of(RAW_0);
        others.push("controller".to_string());
        world.partition(&[leader.clone()], &others);
        step_to(&mut world, 15_000);
        let now = world.partition_state(RAW_0).unwrap();
        assert_ne!(now.leader, Some(broker(&leader)), "no new leader: {now:?}");
        let history = world.into_history();
        let takeover = history
            .iter()
            .find_map(|o| match o {
                Observation::LeaderChange {
                    t_ms,
                    topic: TopicName::Raw,
                    partition: 0,
                    epoch,
                    ..
                } if *epoch == now.leader_epoch => Some(*t_ms),
                _ => None,
            })
            .expect("the takeover is recorded");
        let late: Vec<u64> = history
            .iter()
            .filter_map(|o| match o {
                Observation::Produced {
                    t_ms,
                    topic: TopicName::Raw,
                    partition: 0,
                    leader_epoch: Some(e),
                    ..
                } if *e == old_epoch && *t_ms > takeover => Some(*t_ms),
                _ => None,
            })
            .collect();
        (takeover, late)
    };
    let (takeover, late) = run(300_000);
    assert!(
        late.last().is_some_and(|t| *t > takeover + 5_000),
        "the deposed leader's acknowledgements stopped early: takeover {takeover}, {late:?}"
    );
    let (takeover, late) = run(1_000);
    assert!(
        late.iter().all(|t| *t <= takeover + 1_500),
        "stayed past its metadata's age: takeover {takeover}, {late:?}"
    );
}

/// A transactional task commits, with each input position, the leader epoch of the record it
/// read before it. Restarted after an unclean election truncated what it had read and
/// committed, it sends that epoch with its first fetch and finds the divergence (KIP-320),
/// instead of being reset by `auto_offset_reset` as a reader with offsets only is.
#[test]
fn a_restored_reader_finds_a_truncation_by_its_committed_epoch() {
    let (mut world, leader) = lone_leader_world(PipelineConfig {
        checkpoint_interval: nrtsim_workloads::SimDuration::from_ms(1_000),
        ..Default::default()
    });
    // standardize-0 reads what the lone leader acknowledges, commits past it, then stops.
    step_to(&mut world, 15_500);
    world.crash("standardize-0");
    step_to(&mut world, 16_000);
    world.crash(&leader);
    // A stale follower is elected after the 6 s session timeout.
    step_to(&mut world, 24_000);
    world.restart("standardize-0");
    step_to(&mut world, 40_000);
    let history = world.into_history();
    let on_raw_0 = |o: &&Observation| match o {
        Observation::TruncationDetected {
            host,
            topic,
            partition,
            t_ms,
            ..
        }
        | Observation::OffsetReset {
            host,
            topic,
            partition,
            t_ms,
            ..
        } => {
            host == "standardize-0" && (*topic, *partition) == (TopicName::Raw, 0) && *t_ms > 24_000
        }
        _ => false,
    };
    let seen: Vec<&Observation> = history.iter().filter(on_raw_0).collect();
    assert!(
        !seen.is_empty()
            && seen.iter().all(
                |o| matches!(o, Observation::TruncationDetected { from, to, .. } if to < from)
            ),
        "{seen:?}"
    );
}

/// An acks=0 producer hears nothing back, so a leader that is no longer the leader closes its
/// connection instead of answering, as Kafka's does: the producer then asks for the leaders
/// again and writes to the new one, rather than into a broker that drops every batch until
/// the producer's copy of the leaders ages out.
#[test]
fn an_acks_0_producer_finds_the_new_leader_when_the_old_one_closes_its_connection() {
    let mut world = World::new(&spec(PipelineConfig {
        delivery: Delivery::AtMostOnce,
        producer: ProducerConfig {
            acks: Acks::None,
            idempotence: false,
            ..Default::default()
        },
        ..Default::default()
    }));
    step_to(&mut world, 3_000);
    let leader = world.leader_of(RAW_0).expect("a leader");
    let mut others = world.followers_of(RAW_0);
    others.push("controller".to_string());
    // Cut off from the controller, the leader is replaced; the producer, whose sends still
    // go through, keeps naming it. Healed, it learns it no longer leads.
    world.partition(&[leader.clone()], &others);
    step_to(&mut world, 12_000);
    world.repair(&[leader.clone()], &others);
    step_to(&mut world, 25_000);
    assert_ne!(world.leader_of(RAW_0), Some(leader));
    let history = world.into_history();
    let read_late = history.iter().any(|o| {
        matches!(o, Observation::Read { t_ms, topic: TopicName::Raw, partition: 0, .. } if *t_ms > 18_000)
    });
    assert!(
        read_late,
        "nothing written to raw/0 reached a reader after the healing"
    );
}

/// A transactional task whose produce call outlives its transaction: one broker is slow to
/// reach from it, so its batches to that broker's partitions arrive after the coordinator has
/// aborted the transaction on its timeout and marked every partition of it with a newer epoch.
/// That broker refuses them as fenced, and the client aborts the transaction there and then.
/// The batches the same call had appended to the other brokers are still recorded as records
/// of that (aborted) transaction: a record of a transactional task recorded with no
/// transaction would reach its readers, for the checker, at its acknowledgement.
#[test]
fn batches_appended_before_a_fence_in_the_same_call_keep_their_transaction() {
    // Whether a call straddles the fence depends on the network's draws: several seeds are
    // run, every one must record nothing outside a transaction, and at least one must show
    // records of a transaction that timed out.
    let mut exercised = Vec::new();
    for seed in 1..=4 {
        let (timed_out, enrich_produced) = slow_enrich_broker_run(seed);
        let outside: Vec<&(u64, Option<u64>)> = enrich_produced
            .iter()
            .filter(|(_, txn)| txn.is_none())
            .collect();
        assert!(
            outside.is_empty(),
            "seed {seed}: recorded with no transaction: {outside:?}"
        );
        if enrich_produced
            .iter()
            .any(|(_, txn)| txn.is_some_and(|n| timed_out.contains(&n)))
        {
            exercised.push(seed);
        }
    }
    assert!(
        !exercised.is_empty(),
        "no seed recorded anything of a transaction that timed out"
    );
}

/// A run in which enrich-0 reaches the leader of enriched/0 only after 1.8 s for 10 s, with
/// 1 s transactions: the numbers of enrich-0's transactions that timed out, and the time and
/// transaction of each batch it produced.
fn slow_enrich_broker_run(seed: u64) -> (Vec<u64>, Vec<(u64, Option<u64>)>) {
    let pipeline = PipelineConfig {
        parallelism: nrtsim_pipeline::Parallelism {
            standardize: 1,
            enrich: 1,
            lake: 1,
        },
        producer: ProducerConfig {
            request_timeout: nrtsim_workloads::SimDuration::from_secs(10),
            ..Default::default()
        },
        transactions: nrtsim_pipeline::TransactionsConfig {
            timeout: nrtsim_workloads::SimDuration::from_ms(1_000),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(pipeline.transactional());
    let mut world = World::new(&RunSpec {
        seed,
        ..spec(pipeline)
    });
    step_to(&mut world, 5_000);
    let enriched_0 = TopicPartition::new(TopicName::Enriched, 0);
    let slow = world.leader_of(enriched_0).expect("a leader");
    let latency = "1800ms".parse().expect("a latency");
    world.set_latency(&["enrich-0".to_string()], &[slow.clone()], Some(latency));
    step_to(&mut world, 15_000);
    world.set_latency(&["enrich-0".to_string()], &[slow], None);
    step_to(&mut world, 25_000);
    let history = world.into_history();
    let timed_out: Vec<u64> = history
        .iter()
        .filter_map(|o| match o {
            Observation::KafkaTxn {
                txn,
                producer,
                timed_out: true,
                ..
            } if producer.starts_with("enrich-0") => Some(*txn),
            _ => None,
        })
        .collect();
    assert!(
        !timed_out.is_empty(),
        "seed {seed}: no enrich-0 transaction timed out"
    );
    let produced = history
        .iter()
        .filter_map(|o| match o {
            Observation::Produced {
                t_ms, host, txn, ..
            } if host == "enrich-0" => Some((*t_ms, *txn)),
            _ => None,
        })
        .collect();
    (timed_out, produced)
}
