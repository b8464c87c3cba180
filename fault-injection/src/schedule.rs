//! Running an explicit fault schedule: starting and ending each fault at its time, resolving
//! targets when a fault starts, and healing exactly what was broken when it ends.

use crate::control::Control;
use crate::spec::{FaultKind, FaultSpec, Side};
use crate::target::Target;
use nrtsim_history::{FaultPhase, Observation};

/// A fault that started or ended, ready for the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    /// When it took effect, in simulated milliseconds.
    pub t_ms: u64,
    /// The fault kind as the scenario spelt it.
    pub kind: String,
    /// What it hit, resolved: `broker-2 (leader-of:raw/3)`, or why it hit nothing.
    pub target: String,
    /// Start or end.
    pub phase: FaultPhase,
}

impl FaultEvent {
    /// The history record of this event.
    pub fn into_observation(self) -> Observation {
        Observation::Fault {
            t_ms: self.t_ms,
            kind: self.kind,
            target: self.target,
            phase: self.phase,
        }
    }
}

/// The hosts a started fault acts on, kept so that its end heals the same hosts.
#[derive(Clone, Debug)]
enum Resolved {
    /// A crash: the hosts that were killed.
    Hosts(Vec<String>),
    /// A link fault: the two sides (or `from` and `to`).
    Sides(Vec<String>, Vec<String>),
    /// The target stood for no host, so nothing was done and nothing will be undone.
    Nothing,
}

#[derive(Clone, Debug)]
enum State {
    Pending,
    Active {
        resolved: Resolved,
        description: String,
    },
    Done,
}

#[derive(Clone, Debug)]
struct Entry {
    spec: FaultSpec,
    state: State,
}

impl Entry {
    /// The next transition of this entry and when it is due, in milliseconds.
    fn next(&self) -> Option<(u64, FaultPhase)> {
        match &self.state {
            State::Pending => Some((self.spec.at.ms(), FaultPhase::Start)),
            State::Active { .. } => self.spec.end().map(|end| (end.ms(), FaultPhase::End)),
            State::Done => None,
        }
    }
}

/// Starts and ends the faults of an explicit schedule as simulated time passes.
///
/// Events due at the same millisecond apply in a fixed order: every end before any start (so a
/// host restarted and crashed again at one instant ends up down), then in schedule order.
#[derive(Clone, Debug)]
pub struct Injector {
    entries: Vec<Entry>,
}

/// Ends sort before starts at the same instant.
fn phase_rank(phase: FaultPhase) -> u8 {
    match phase {
        FaultPhase::End => 0,
        FaultPhase::Start => 1,
    }
}

impl Injector {
    /// An injector for these faults, none of them started.
    pub fn new(specs: Vec<FaultSpec>) -> Injector {
        let entries = specs
            .into_iter()
            .map(|spec| Entry {
                spec,
                state: State::Pending,
            })
            .collect();
        Injector { entries }
    }

    /// The faults of the schedule, in schedule order.
    pub fn specs(&self) -> impl Iterator<Item = &FaultSpec> {
        self.entries.iter().map(|e| &e.spec)
    }

    /// When the next start or end is due, in simulated milliseconds; `None` when nothing is left.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter_map(|e| e.next().map(|(t, _)| t))
            .min()
    }

    /// Whether every fault has started and every fault with a duration has ended.
    pub fn is_finished(&self) -> bool {
        self.next_due_ms().is_none()
    }

    /// Applies every start and end due at or before `now_ms`, in order, and returns what happened.
    pub fn apply_due<C: Control + ?Sized>(&mut self, now_ms: u64, ctl: &mut C) -> Vec<FaultEvent> {
        let mut events = Vec::new();
        // Pick one transition at a time: a start may make its own end due (a late call).
        while let Some((_, _, idx)) = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.next().map(|(t, p)| (t, phase_rank(p), i)))
            .filter(|&(t, _, _)| t <= now_ms)
            .min()
        {
            let entry = &mut self.entries[idx];
            let event = match std::mem::replace(&mut entry.state, State::Done) {
                State::Pending => {
                    let (resolved, description) = start(&entry.spec, ctl);
                    if entry.spec.duration.is_some() {
                        entry.state = State::Active {
                            resolved,
                            description: description.clone(),
                        };
                    }
                    FaultEvent {
                        t_ms: now_ms,
                        kind: entry.spec.kind.as_str().to_string(),
                        target: description,
                        phase: FaultPhase::Start,
                    }
                }
                State::Active {
                    resolved,
                    description,
                } => {
                    end(&entry.spec, &resolved, ctl);
                    FaultEvent {
                        t_ms: now_ms,
                        kind: entry.spec.kind.as_str().to_string(),
                        target: description,
                        phase: FaultPhase::End,
                    }
                }
                // A finished fault has no next transition, so it is never picked.
                State::Done => continue,
            };
            events.push(event);
        }
        events
    }
}

/// Hosts of one side and how to describe them, or why the side stands for no host.
fn resolve_side<C: Control + ?Sized>(
    side: &Side,
    ctl: &C,
) -> Result<(Vec<String>, String), String> {
    let mut hosts: Vec<String> = Vec::new();
    let mut parts = Vec::new();
    for text in &side.0 {
        let target: Target = text
            .parse()
            .map_err(|e: crate::target::TargetError| e.to_string())?;
        let found = target.resolve(ctl)?;
        parts.push(if target.is_indirect() {
            format!("{} ({target})", found.join(", "))
        } else {
            found.join(", ")
        });
        for host in found {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    if hosts.is_empty() {
        return Err("a side names no target".to_string());
    }
    Ok((hosts, parts.join(", ")))
}

/// Resolves a side of a link fault; a side of several hosts is described in brackets.
fn resolve_link_side<C: Control + ?Sized>(
    side: &Side,
    ctl: &C,
) -> Result<(Vec<String>, String), String> {
    let (hosts, description) = resolve_side(side, ctl)?;
    if side.0.len() > 1 || hosts.len() > 1 {
        Ok((hosts, format!("[{description}]")))
    } else {
        Ok((hosts, description))
    }
}

fn side_or_missing<'a>(side: Option<&'a Side>, field: &str) -> Result<&'a Side, String> {
    side.ok_or_else(|| format!("the fault has no `{field}`"))
}

/// Resolves the fault's targets now and applies its start.
fn start<C: Control + ?Sized>(spec: &FaultSpec, ctl: &mut C) -> (Resolved, String) {
    match resolve(spec, ctl) {
        Err(why) => (Resolved::Nothing, format!("unresolved: {why}")),
        Ok((resolved, description)) => {
            match (&resolved, spec.kind) {
                (Resolved::Hosts(hosts), FaultKind::PowerLoss) => {
                    hosts.iter().for_each(|h| ctl.power_loss(h))
                }
                (Resolved::Hosts(hosts), FaultKind::ProduceErrors) => {
                    let rate = spec.rate.unwrap_or(0.0);
                    hosts.iter().for_each(|h| ctl.set_produce_errors(h, rate))
                }
                (Resolved::Hosts(hosts), FaultKind::Failover) => {
                    hosts.iter().for_each(|h| ctl.fail_over(h))
                }
                (Resolved::Hosts(hosts), FaultKind::Slow) => {
                    let factor = spec.factor.unwrap_or(1.0);
                    hosts.iter().for_each(|h| ctl.set_slowdown(h, factor))
                }
                (Resolved::Hosts(hosts), _) => hosts.iter().for_each(|h| ctl.crash(h)),
                (Resolved::Sides(a, b), FaultKind::Partition) => ctl.partition(a, b),
                (Resolved::Sides(a, b), FaultKind::PartitionOneway) => ctl.partition_oneway(a, b),
                (Resolved::Sides(a, b), FaultKind::Hold) => ctl.hold(a, b),
                (Resolved::Sides(a, b), FaultKind::Latency) => ctl.set_latency(a, b, spec.latency),
                (
                    Resolved::Sides(..),
                    FaultKind::Crash
                    | FaultKind::BrokerCrash
                    | FaultKind::PowerLoss
                    | FaultKind::ProduceErrors
                    | FaultKind::Failover
                    | FaultKind::Slow,
                )
                | (Resolved::Nothing, _) => {}
            }
            (resolved, description)
        }
    }
}

/// Heals what the fault's start broke, on the hosts it resolved to then.
fn end<C: Control + ?Sized>(spec: &FaultSpec, resolved: &Resolved, ctl: &mut C) {
    match (resolved, spec.kind) {
        (Resolved::Hosts(hosts), FaultKind::ProduceErrors) => {
            hosts.iter().for_each(|h| ctl.set_produce_errors(h, 0.0))
        }
        (Resolved::Hosts(hosts), FaultKind::Slow) => {
            hosts.iter().for_each(|h| ctl.set_slowdown(h, 1.0))
        }
        // Permanent: nothing to heal.
        (Resolved::Hosts(_), FaultKind::Failover) => {}
        (Resolved::Hosts(hosts), _) => hosts.iter().for_each(|h| ctl.restart(h)),
        (Resolved::Sides(a, b), FaultKind::Partition) => ctl.repair(a, b),
        (Resolved::Sides(a, b), FaultKind::PartitionOneway) => ctl.repair_oneway(a, b),
        (Resolved::Sides(a, b), FaultKind::Hold) => ctl.release(a, b),
        (Resolved::Sides(a, b), FaultKind::Latency) => ctl.set_latency(a, b, None),
        (
            Resolved::Sides(..),
            FaultKind::Crash
            | FaultKind::BrokerCrash
            | FaultKind::PowerLoss
            | FaultKind::ProduceErrors
            | FaultKind::Failover
            | FaultKind::Slow,
        )
        | (Resolved::Nothing, _) => {}
    }
}

/// The hosts the fault acts on and a description of them, or why there are none.
fn resolve<C: Control + ?Sized>(spec: &FaultSpec, ctl: &C) -> Result<(Resolved, String), String> {
    spec.validate().map_err(|e| format!("invalid fault: {e}"))?;
    match spec.kind {
        FaultKind::Crash
        | FaultKind::BrokerCrash
        | FaultKind::PowerLoss
        | FaultKind::ProduceErrors
        | FaultKind::Failover
        | FaultKind::Slow => {
            let text = spec.target.as_deref().ok_or("the fault has no `target`")?;
            let (hosts, description) = resolve_side(&Side::new([text]), ctl)?;
            Ok((Resolved::Hosts(hosts), description))
        }
        FaultKind::Partition | FaultKind::Hold | FaultKind::Latency => {
            let [a, b] = spec.between.as_ref().ok_or("the fault has no `between`")?;
            let (a, da) = resolve_link_side(a, ctl)?;
            let (b, db) = resolve_link_side(b, ctl)?;
            let mut description = format!("{da} <-> {db}");
            if let Some(latency) = spec.latency {
                description.push_str(&format!(" at {latency}"));
            }
            Ok((Resolved::Sides(a, b), description))
        }
        FaultKind::PartitionOneway => {
            let (a, da) = resolve_link_side(side_or_missing(spec.from.as_ref(), "from")?, ctl)?;
            let (b, db) = resolve_link_side(side_or_missing(spec.to.as_ref(), "to")?, ctl)?;
            Ok((Resolved::Sides(a, b), format!("{da} -> {db}")))
        }
    }
}
