//! The fault injector against a fake simulator that records every call it receives.

use nrtsim_faults::{Control, FaultEvent, FaultKind, FaultLatency, FaultSpec, Injector, Side};
use nrtsim_history::{FaultPhase, Observation, TopicName};
use nrtsim_workloads::SimDuration;
use std::collections::BTreeMap;

/// A fake simulator: fixed hosts, leaders the test can move, and a log of calls.
#[derive(Default)]
struct FakeSim {
    hosts: Vec<String>,
    leaders: BTreeMap<(TopicName, u32), String>,
    calls: Vec<String>,
}

impl FakeSim {
    fn new() -> Self {
        let hosts = [
            "broker-0",
            "broker-1",
            "broker-2",
            "controller",
            "cdc",
            "standardize-0",
            "enrich-0",
            "enrich-1",
            "lake-0",
        ];
        let mut sim = FakeSim {
            hosts: hosts.map(String::from).to_vec(),
            ..Default::default()
        };
        sim.leaders.insert((TopicName::Raw, 3), "broker-2".into());
        sim
    }

    fn take_calls(&mut self) -> Vec<String> {
        std::mem::take(&mut self.calls)
    }
}

fn list(hosts: &[String]) -> String {
    hosts.join(",")
}

impl Control for FakeSim {
    fn host_names(&self) -> Vec<String> {
        self.hosts.clone()
    }
    fn leader_of(&self, topic: TopicName, partition: u32) -> Option<String> {
        self.leaders.get(&(topic, partition)).cloned()
    }
    fn followers_of(&self, topic: TopicName, partition: u32) -> Vec<String> {
        match self.leaders.get(&(topic, partition)) {
            Some(leader) => self
                .hosts
                .iter()
                .filter(|h| h.starts_with("broker-") && *h != leader)
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }
    fn crash(&mut self, host: &str) {
        self.calls.push(format!("crash {host}"));
    }
    fn restart(&mut self, host: &str) {
        self.calls.push(format!("restart {host}"));
    }
    fn power_loss(&mut self, host: &str) {
        self.calls.push(format!("power-loss {host}"));
    }
    fn set_produce_errors(&mut self, host: &str, rate: f64) {
        self.calls.push(format!("produce-errors {host} {rate}"));
    }
    fn set_slowdown(&mut self, host: &str, factor: f64) {
        self.calls.push(format!("slow {host} {factor}"));
    }
    fn partition(&mut self, a: &[String], b: &[String]) {
        self.calls
            .push(format!("partition {} | {}", list(a), list(b)));
    }
    fn repair(&mut self, a: &[String], b: &[String]) {
        self.calls.push(format!("repair {} | {}", list(a), list(b)));
    }
    fn partition_oneway(&mut self, from: &[String], to: &[String]) {
        self.calls
            .push(format!("partition_oneway {} -> {}", list(from), list(to)));
    }
    fn repair_oneway(&mut self, from: &[String], to: &[String]) {
        self.calls
            .push(format!("repair_oneway {} -> {}", list(from), list(to)));
    }
    fn hold(&mut self, a: &[String], b: &[String]) {
        self.calls.push(format!("hold {} | {}", list(a), list(b)));
    }
    fn release(&mut self, a: &[String], b: &[String]) {
        self.calls
            .push(format!("release {} | {}", list(a), list(b)));
    }
    fn set_latency(&mut self, a: &[String], b: &[String], latency: Option<FaultLatency>) {
        let l = latency.map_or("default".to_string(), |l| l.to_string());
        self.calls
            .push(format!("latency {} | {} = {l}", list(a), list(b)));
    }
    fn fail_over(&mut self, host: &str) {
        self.calls.push(format!("failover {host}"));
    }
}

fn d(text: &str) -> SimDuration {
    text.parse().unwrap()
}

fn crash(at: &str, target: &str, duration: Option<&str>) -> FaultSpec {
    let mut spec = FaultSpec::new(d(at), FaultKind::BrokerCrash);
    spec.target = Some(target.into());
    spec.duration = duration.map(d);
    spec
}

fn between(kind: FaultKind, at: &str, a: &[&str], b: &[&str], duration: &str) -> FaultSpec {
    let mut spec = FaultSpec::new(d(at), kind);
    spec.between = Some([Side::new(a.iter().copied()), Side::new(b.iter().copied())]);
    spec.duration = Some(d(duration));
    spec
}

/// Steps the injector through every due time, as the simulator would.
fn run_all(injector: &mut Injector, sim: &mut FakeSim) -> Vec<FaultEvent> {
    let mut events = Vec::new();
    while let Some(t) = injector.next_due_ms() {
        events.extend(injector.apply_due(t, sim));
    }
    events
}

#[test]
fn crash_then_restart_of_the_leader_resolved_at_the_start() {
    let mut sim = FakeSim::new();
    let mut injector = Injector::new(vec![crash("1m", "leader-of:raw/3", Some("30s"))]);
    assert_eq!(injector.next_due_ms(), Some(60_000));
    assert!(injector.apply_due(59_999, &mut sim).is_empty());

    let started = injector.apply_due(60_000, &mut sim);
    assert_eq!(
        started,
        vec![FaultEvent {
            t_ms: 60_000,
            kind: "broker-crash".into(),
            target: "broker-2 (leader-of:raw/3)".into(),
            phase: FaultPhase::Start,
        }]
    );
    assert_eq!(sim.take_calls(), ["crash broker-2"]);

    // The controller elects a new leader while broker-2 is down.
    sim.leaders.insert((TopicName::Raw, 3), "broker-0".into());
    assert_eq!(injector.next_due_ms(), Some(90_000));
    let ended = injector.apply_due(90_000, &mut sim);
    assert_eq!(ended[0].phase, FaultPhase::End);
    assert_eq!(ended[0].target, "broker-2 (leader-of:raw/3)");
    assert_eq!(sim.take_calls(), ["restart broker-2"]);
    assert!(injector.is_finished());
}

#[test]
fn permanent_crash_never_restarts() {
    let mut sim = FakeSim::new();
    let mut injector = Injector::new(vec![crash("10s", "broker-1", None)]);
    let events = run_all(&mut injector, &mut sim);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].target, "broker-1");
    assert_eq!(sim.take_calls(), ["crash broker-1"]);
    assert_eq!(injector.next_due_ms(), None);
    assert!(injector.apply_due(u64::MAX, &mut sim).is_empty());
    assert!(sim.calls.is_empty());
}

#[test]
fn partition_sides_with_globs_are_repaired_as_they_were_cut() {
    let mut sim = FakeSim::new();
    let spec = between(
        FaultKind::Partition,
        "5s",
        &["enrich-*"],
        &["broker-0", "cdc"],
        "10s",
    );
    let mut injector = Injector::new(vec![spec]);
    let events = run_all(&mut injector, &mut sim);
    assert_eq!(
        sim.take_calls(),
        [
            "partition enrich-0,enrich-1 | broker-0,cdc",
            "repair enrich-0,enrich-1 | broker-0,cdc",
        ]
    );
    assert_eq!(
        events[0].target,
        "[enrich-0, enrich-1 (enrich-*)] <-> [broker-0, cdc]"
    );
    assert_eq!((events[0].t_ms, events[1].t_ms), (5_000, 15_000));
}

#[test]
fn oneway_hold_and_latency_heal_the_way_they_started() {
    let mut sim = FakeSim::new();
    let mut oneway = FaultSpec::new(d("1s"), FaultKind::PartitionOneway);
    oneway.from = Some(Side::new(["cdc"]));
    oneway.to = Some(Side::new(["follower-of:raw/3"]));
    oneway.duration = Some(d("1s"));
    let hold = between(FaultKind::Hold, "3s", &["lake-0"], &["broker-1"], "1s");
    let mut latency = between(FaultKind::Latency, "5s", &["cdc"], &["broker-2"], "1s");
    latency.latency = Some("20ms..40ms".parse().unwrap());
    let mut injector = Injector::new(vec![oneway, hold, latency]);
    let events = run_all(&mut injector, &mut sim);
    assert_eq!(
        sim.take_calls(),
        [
            "partition_oneway cdc -> broker-0,broker-1",
            "repair_oneway cdc -> broker-0,broker-1",
            "hold lake-0 | broker-1",
            "release lake-0 | broker-1",
            "latency cdc | broker-2 = 20ms..40ms",
            "latency cdc | broker-2 = default",
        ]
    );
    assert_eq!(
        events[0].target,
        "cdc -> [broker-0, broker-1 (follower-of:raw/3)]"
    );
    assert_eq!(events[4].target, "cdc <-> broker-2 at 20ms..40ms");
}

#[test]
fn at_equal_times_ends_come_first_then_schedule_order() {
    let mut sim = FakeSim::new();
    let specs = vec![
        crash("2s", "broker-1", Some("1s")),
        crash("1s", "broker-0", Some("2s")),
        crash("3s", "broker-0", Some("1s")),
    ];
    let mut injector = Injector::new(specs);
    let events = run_all(&mut injector, &mut sim);
    assert_eq!(
        sim.take_calls(),
        [
            "crash broker-0",
            "crash broker-1",
            "restart broker-1",
            "restart broker-0",
            "crash broker-0",
            "restart broker-0",
        ]
    );
    let times: Vec<u64> = events.iter().map(|e| e.t_ms).collect();
    assert_eq!(times, [1_000, 2_000, 3_000, 3_000, 3_000, 4_000]);
}

#[test]
fn a_late_call_applies_everything_due_in_order() {
    let mut sim = FakeSim::new();
    let mut injector = Injector::new(vec![
        crash("1s", "broker-0", Some("1s")),
        crash("500ms", "cdc", Some("10s")),
    ]);
    let events = injector.apply_due(5_000, &mut sim);
    assert_eq!(
        sim.take_calls(),
        ["crash cdc", "crash broker-0", "restart broker-0"]
    );
    assert_eq!(events.len(), 3);
    assert_eq!(injector.next_due_ms(), Some(10_500));
}

#[test]
fn an_unresolved_target_does_nothing_at_start_or_end() {
    let mut sim = FakeSim::new();
    let mut injector = Injector::new(vec![crash("1s", "leader-of:raw/1", Some("1s"))]);
    let events = run_all(&mut injector, &mut sim);
    assert!(sim.calls.is_empty());
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].target,
        "unresolved: leader-of:raw/1 has no leader"
    );
    assert_eq!(events[1].phase, FaultPhase::End);

    let mut injector = Injector::new(vec![crash("1s", "broker-7", None)]);
    let events = run_all(&mut injector, &mut sim);
    assert_eq!(events[0].target, "unresolved: broker-7 is not a host");
    assert!(sim.calls.is_empty());
}

#[test]
fn coordinator_roles_are_unresolved_until_coordinators_exist() {
    let mut sim = FakeSim::new();
    let mut spec = FaultSpec::new(d("1s"), FaultKind::Crash);
    spec.target = Some("coordinator-of:risk".into());
    let events = run_all(&mut Injector::new(vec![spec.clone()]), &mut sim);
    assert!(
        events[0]
            .target
            .starts_with("unresolved: coordinator-of:risk"),
        "{:?}",
        events[0]
    );

    sim.hosts.push("group-coordinator".into());
    let events = run_all(&mut Injector::new(vec![spec]), &mut sim);
    assert_eq!(events[0].target, "group-coordinator (coordinator-of:risk)");
    assert_eq!(sim.take_calls(), ["crash group-coordinator"]);
}

#[test]
fn events_become_history_observations() {
    let event = FaultEvent {
        t_ms: 7,
        kind: "hold".into(),
        target: "cdc <-> broker-0".into(),
        phase: FaultPhase::End,
    };
    assert_eq!(
        event.into_observation(),
        Observation::Fault {
            t_ms: 7,
            kind: "hold".into(),
            target: "cdc <-> broker-0".into(),
            phase: FaultPhase::End,
        }
    );
}

#[test]
fn a_failover_starts_the_standby_once_and_never_heals() {
    let mut sim = FakeSim::new();
    let mut spec = FaultSpec::new(d("23s"), FaultKind::Failover);
    spec.target = Some("enrich-0".into());
    let mut injector = Injector::new(vec![spec.clone()]);
    let events = run_all(&mut injector, &mut sim);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "failover");
    assert_eq!(sim.take_calls(), ["failover enrich-0"]);
    assert!(injector.is_finished());

    // Permanent: a duration is refused, and so is a target other than a stream task.
    let mut timed = spec.clone();
    timed.duration = Some(d("5s"));
    assert_eq!(timed.validate().unwrap_err().field, "duration");
    let mut broker = spec;
    broker.target = Some("broker-1".into());
    let hosts: Vec<String> = ["broker-1", "enrich-0"].map(String::from).to_vec();
    let err = broker.check_hosts(&hosts, 4).unwrap_err();
    assert_eq!(err.field, "target");
    assert!(err.message.contains("stream task"), "{}", err.message);
    // A glob names no one task: its standby would be a host nobody starts.
    let mut glob = broker;
    glob.target = Some("enrich-*".into());
    let err = glob.check_hosts(&hosts, 4).unwrap_err();
    assert!(err.message.contains("stream task"), "{}", err.message);
}

#[test]
fn a_slow_fault_slows_its_hosts_and_restores_their_pace() {
    let mut sim = FakeSim::new();
    let mut spec = FaultSpec::new(d("10s"), FaultKind::Slow);
    spec.target = Some("enrich-*".into());
    spec.factor = Some(20.0);
    spec.duration = Some(d("5s"));
    spec.validate().expect("a valid slow fault");
    let mut injector = Injector::new(vec![spec.clone()]);
    let events = run_all(&mut injector, &mut sim);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, "slow");
    assert_eq!(events[0].target, "enrich-0, enrich-1 (enrich-*) 20x slower");
    assert_eq!(
        sim.take_calls(),
        [
            "slow enrich-0 20",
            "slow enrich-1 20",
            "slow enrich-0 1",
            "slow enrich-1 1"
        ]
    );

    // A factor of at most 1, or past the limit, is refused; so is a missing one.
    for bad in [1.0, 0.5, 5000.0, f64::NAN] {
        let mut s = spec.clone();
        s.factor = Some(bad);
        assert_eq!(s.validate().unwrap_err().field, "factor", "{bad}");
    }
    let mut none = spec.clone();
    none.factor = None;
    assert_eq!(none.validate().unwrap_err().field, "factor");
    // Hosts whose work has no modelled cost cannot be slowed.
    let hosts: Vec<String> = ["broker-0", "controller", "enrich-0"]
        .map(String::from)
        .to_vec();
    for ok in ["enrich-0", "broker-*", "leader-of:raw/1"] {
        let mut s = spec.clone();
        s.target = Some(ok.into());
        s.check_hosts(&hosts, 4)
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let mut controller = spec;
    controller.target = Some("controller".into());
    let err = controller.check_hosts(&hosts, 4).unwrap_err();
    assert_eq!(err.field, "target");
    assert!(err.message.contains("have none"), "{}", err.message);
}

#[test]
fn a_host_two_faults_stop_restarts_when_the_last_ends_and_never_under_a_permanent_one() {
    let mut sim = FakeSim::new();
    let mut early = FaultSpec::new(d("1s"), FaultKind::Crash);
    early.target = Some("enrich-*".into());
    early.duration = Some(d("4s"));
    let mut late = FaultSpec::new(d("2s"), FaultKind::Crash);
    late.target = Some("enrich-1".into());
    late.duration = Some(d("1s"));
    let mut forever = FaultSpec::new(d("6s"), FaultKind::Crash);
    forever.target = Some("enrich-0".into());
    let mut brief = FaultSpec::new(d("7s"), FaultKind::Crash);
    brief.target = Some("enrich-0".into());
    brief.duration = Some(d("1s"));
    let mut injector = Injector::new(vec![early, late, forever, brief]);
    let events = run_all(&mut injector, &mut sim);
    assert_eq!(events.len(), 7, "every start and end is still recorded");
    assert_eq!(
        sim.take_calls(),
        [
            "crash enrich-0",
            "crash enrich-1",
            // enrich-1's second crash finds it down, and its end leaves it to the first's.
            "restart enrich-0",
            "restart enrich-1",
            "crash enrich-0",
            // The brief crash ends, but the permanent one still holds enrich-0 down.
        ]
    );
}

#[test]
fn overlapping_link_faults_heal_only_what_no_other_still_holds() {
    let mut sim = FakeSim::new();
    let wide = between(
        FaultKind::Partition,
        "5s",
        &["enrich-*"],
        &["broker-0"],
        "10s",
    );
    let narrow = between(
        FaultKind::Partition,
        "10s",
        &["enrich-0"],
        &["broker-0"],
        "10s",
    );
    let mut oneway = FaultSpec::new(d("12s"), FaultKind::PartitionOneway);
    oneway.from = Some(Side::new(["broker-0"]));
    oneway.to = Some(Side::new(["enrich-1"]));
    oneway.duration = Some(d("10s"));
    let mut injector = Injector::new(vec![wide, narrow, oneway]);
    run_all(&mut injector, &mut sim);
    assert_eq!(
        sim.take_calls(),
        [
            "partition enrich-0,enrich-1 | broker-0",
            // At 15 s the wide partition ends: enrich-0 stays cut by the narrow one, and the
            // way from broker-0 to enrich-1 by the one-way cut.
            "repair_oneway enrich-1 -> broker-0",
            "repair enrich-0 | broker-0",
            "repair_oneway broker-0 -> enrich-1",
        ]
    );

    let slow = |at: &str, factor: f64, duration: &str| {
        let mut spec = FaultSpec::new(d(at), FaultKind::Slow);
        spec.target = Some("lake-0".into());
        spec.factor = Some(factor);
        spec.duration = Some(d(duration));
        spec
    };
    let mut a = between(FaultKind::Latency, "1s", &["cdc"], &["broker-2"], "10s");
    a.latency = Some("20ms".parse().unwrap());
    let mut b = between(FaultKind::Latency, "2s", &["cdc"], &["broker-2"], "2s");
    b.latency = Some("300ms".parse().unwrap());
    let mut injector = Injector::new(vec![a, b, slow("1s", 4.0, "3s"), slow("2s", 9.0, "5s")]);
    run_all(&mut injector, &mut sim);
    assert_eq!(
        sim.take_calls(),
        [
            "latency cdc | broker-2 = 20ms",
            "slow lake-0 4",
            "latency cdc | broker-2 = 300ms",
            "slow lake-0 9",
            // The newer latency ends first: the older one's comes back.
            "latency cdc | broker-2 = 20ms",
            // The older slowdown ends first: the newer one stays in force.
            "slow lake-0 9",
            "slow lake-0 1",
            "latency cdc | broker-2 = default",
        ]
    );
}

#[test]
fn a_partition_of_a_group_from_itself_cuts_and_heals_each_link_once() {
    let mut sim = FakeSim::new();
    let spec = between(
        FaultKind::Partition,
        "1s",
        &["broker-*"],
        &["broker-*"],
        "1s",
    );
    let mut injector = Injector::new(vec![spec]);
    run_all(&mut injector, &mut sim);
    let all = "broker-0,broker-1,broker-2";
    assert_eq!(
        sim.take_calls(),
        [
            format!("partition {all} | {all}"),
            format!("repair {all} | {all}")
        ]
    );
}
