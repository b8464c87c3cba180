//! Running an explicit fault schedule: starting and ending each fault at its time, resolving
//! targets when a fault starts, and healing exactly what was broken when it ends.
//!
//! Faults may overlap on the same host or link. A host two faults hold down restarts when the
//! last of them ends (never, if one of them is permanent); a link two partitions cut heals when
//! the last heals; a link two holds hold is released by the last. A latency, produce-error
//! rate or slowdown that two faults set is the newest one's while it lasts, and the older one's
//! again when it ends. Faults of different kinds on one link (a partition and a hold) are not
//! reconciled: the simulator keeps one state per link, and the latest call sets it.

use crate::control::Control;
use crate::spec::{FaultKind, FaultLatency, FaultSpec, Side};
use crate::target::Target;
use nrtsim_history::{FaultPhase, Observation};
use std::collections::BTreeMap;

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
    holds: Holds,
}

/// What the active faults hold, so that overlapping faults heal only what no other still
/// holds (see the module docs).
#[derive(Clone, Debug, Default)]
struct Holds {
    /// Per host: the active faults that stopped it.
    down: BTreeMap<String, u32>,
    /// Per link direction (from, to): the active partitions that cut it.
    cut: BTreeMap<(String, String), u32>,
    /// Per link: the active holds on it.
    held: BTreeMap<Link, u32>,
    /// Per link: the active latency faults' latencies.
    latency: BTreeMap<Link, Stack<Option<FaultLatency>>>,
    /// Per broker: the active produce-error faults' rates, oldest first.
    produce_errors: BTreeMap<String, Stack<f64>>,
    /// Per host: the active slow faults' factors, oldest first.
    slow: BTreeMap<String, Stack<f64>>,
}

/// Two hosts, the smaller name first.
type Link = (String, String);

/// The values the active faults set on one host or link, oldest first, each with its fault's
/// place in the schedule.
type Stack<V> = Vec<(usize, V)>;

/// The link between `a` and `b`, the same whichever way round.
fn link(a: &str, b: &str) -> Link {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Every pair of a host in `a` and another in `b`, each once.
fn pairs<'a>(a: &'a [String], b: &'a [String]) -> Vec<(&'a String, &'a String)> {
    let mut out: Vec<(&String, &String)> = Vec::new();
    for (x, y) in a.iter().flat_map(|x| b.iter().map(move |y| (x, y))) {
        if x != y && !out.contains(&(x, y)) {
            out.push((x, y));
        }
    }
    out
}

/// Every link between a host in `a` and another in `b`, each once whichever way round: the
/// pairs a fault that acts on both directions touches.
fn links<'a>(a: &'a [String], b: &'a [String]) -> Vec<(&'a String, &'a String)> {
    let mut out = pairs(a, b);
    let mut seen: Vec<Link> = Vec::new();
    out.retain(|(x, y)| {
        let l = link(x, y);
        let fresh = !seen.contains(&l);
        seen.push(l);
        fresh
    });
    out
}

/// Every link between a host in `a` and another in `b`, each way once: the directions a
/// partition cuts.
fn both_ways<'a>(a: &'a [String], b: &'a [String]) -> Vec<(&'a String, &'a String)> {
    links(a, b)
        .into_iter()
        .flat_map(|(x, y)| [(x, y), (y, x)])
        .collect()
}

/// The link directions a partition (both ways) or a one-way cut (from `a` to `b`) cuts.
fn cut_ways<'a>(
    kind: FaultKind,
    a: &'a [String],
    b: &'a [String],
) -> Vec<(&'a String, &'a String)> {
    if kind == FaultKind::Partition {
        both_ways(a, b)
    } else {
        pairs(a, b)
    }
}

/// Adds one to `key`'s count; true if it was 0.
fn take<K: Ord>(counts: &mut BTreeMap<K, u32>, key: K) -> bool {
    let n = counts.entry(key).or_insert(0);
    *n += 1;
    *n == 1
}

/// Takes one from `key`'s count; true if that was the last.
fn give_back<K: Ord>(counts: &mut BTreeMap<K, u32>, key: &K) -> bool {
    match counts.get_mut(key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            counts.remove(key);
            true
        }
        None => false,
    }
}

/// Pushes fault `idx`'s value onto `key`'s stack.
fn push_value<K: Ord, V>(stacks: &mut BTreeMap<K, Vec<(usize, V)>>, key: K, idx: usize, v: V) {
    stacks.entry(key).or_default().push((idx, v));
}

/// Removes fault `idx`'s value from `key`'s stack; returns the value in force after it (the
/// newest left), or `None` when no fault sets one any more.
fn pop_value<K: Ord, V: Copy>(
    stacks: &mut BTreeMap<K, Vec<(usize, V)>>,
    key: &K,
    idx: usize,
) -> Option<V> {
    let stack = stacks.get_mut(key)?;
    stack.retain(|(i, _)| *i != idx);
    let top = stack.last().map(|(_, v)| *v);
    if stack.is_empty() {
        stacks.remove(key);
    }
    top
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
        Injector {
            entries,
            holds: Holds::default(),
        }
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
                    let (resolved, description) = start(&entry.spec, idx, &mut self.holds, ctl);
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
                    end(&entry.spec, idx, &resolved, &mut self.holds, ctl);
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

/// Resolves the fault's targets now and applies its start: fault `idx` of the schedule.
fn start<C: Control + ?Sized>(
    spec: &FaultSpec,
    idx: usize,
    holds: &mut Holds,
    ctl: &mut C,
) -> (Resolved, String) {
    match resolve(spec, ctl) {
        Err(why) => (Resolved::Nothing, format!("unresolved: {why}")),
        Ok((resolved, description)) => {
            match (&resolved, spec.kind) {
                (Resolved::Hosts(hosts), FaultKind::PowerLoss) => {
                    // A host already down loses its unflushed writes all the same.
                    for h in hosts {
                        take(&mut holds.down, h.clone());
                        ctl.power_loss(h);
                    }
                }
                (Resolved::Hosts(hosts), FaultKind::Crash | FaultKind::BrokerCrash) => {
                    for h in hosts {
                        if take(&mut holds.down, h.clone()) {
                            ctl.crash(h);
                        }
                    }
                }
                (Resolved::Hosts(hosts), FaultKind::ProduceErrors) => {
                    let rate = spec.rate.unwrap_or(0.0);
                    for h in hosts {
                        push_value(&mut holds.produce_errors, h.clone(), idx, rate);
                        ctl.set_produce_errors(h, rate);
                    }
                }
                (Resolved::Hosts(hosts), FaultKind::Slow) => {
                    let factor = spec.factor.unwrap_or(1.0);
                    for h in hosts {
                        push_value(&mut holds.slow, h.clone(), idx, factor);
                        ctl.set_slowdown(h, factor);
                    }
                }
                (Resolved::Hosts(hosts), FaultKind::Failover) => {
                    hosts.iter().for_each(|h| ctl.fail_over(h))
                }
                (
                    Resolved::Sides(a, b),
                    kind @ (FaultKind::Partition | FaultKind::PartitionOneway),
                ) => {
                    let ways = cut_ways(kind, a, b);
                    let all = if kind == FaultKind::Partition {
                        C::partition
                    } else {
                        C::partition_oneway
                    };
                    let fresh: Vec<bool> = ways
                        .iter()
                        .map(|(x, y)| take(&mut holds.cut, ((*x).clone(), (*y).clone())))
                        .collect();
                    on_changed(ctl, (a, b), &ways, &fresh, all, C::partition_oneway);
                }
                (Resolved::Sides(a, b), FaultKind::Hold) => {
                    let pairs = links(a, b);
                    let fresh: Vec<bool> = pairs
                        .iter()
                        .map(|(x, y)| take(&mut holds.held, link(x, y)))
                        .collect();
                    on_changed(ctl, (a, b), &pairs, &fresh, C::hold, C::hold);
                }
                (Resolved::Sides(a, b), FaultKind::Latency) => {
                    for (x, y) in links(a, b) {
                        push_value(&mut holds.latency, link(x, y), idx, spec.latency);
                    }
                    ctl.set_latency(a, b, spec.latency);
                }
                (
                    Resolved::Sides(..),
                    FaultKind::Crash
                    | FaultKind::BrokerCrash
                    | FaultKind::PowerLoss
                    | FaultKind::ProduceErrors
                    | FaultKind::Failover
                    | FaultKind::Slow,
                )
                | (
                    Resolved::Hosts(_),
                    FaultKind::Partition
                    | FaultKind::PartitionOneway
                    | FaultKind::Hold
                    | FaultKind::Latency,
                )
                | (Resolved::Nothing, _) => {}
            }
            (resolved, description)
        }
    }
}

/// A one-host side.
fn one(host: &String) -> &[String] {
    std::slice::from_ref(host)
}

/// Acts on the pairs whose state changed (`changed[i]` for `pairs[i]`): `all` once on the two
/// sides when every pair changed (always, unless another fault overlaps), else `each` on every
/// pair that did, from its first host to its second.
fn on_changed<C: Control + ?Sized>(
    ctl: &mut C,
    (a, b): (&[String], &[String]),
    pairs: &[(&String, &String)],
    changed: &[bool],
    all: fn(&mut C, &[String], &[String]),
    each: fn(&mut C, &[String], &[String]),
) {
    if changed.iter().all(|&c| c) {
        all(ctl, a, b);
    } else {
        for ((x, y), _) in pairs.iter().zip(changed).filter(|(_, &c)| c) {
            each(ctl, one(x), one(y));
        }
    }
}

/// Heals what fault `idx`'s start broke, on the hosts it resolved to then, except what another
/// active fault still holds.
fn end<C: Control + ?Sized>(
    spec: &FaultSpec,
    idx: usize,
    resolved: &Resolved,
    holds: &mut Holds,
    ctl: &mut C,
) {
    match (resolved, spec.kind) {
        (Resolved::Hosts(hosts), FaultKind::ProduceErrors) => {
            for h in hosts {
                let rate = pop_value(&mut holds.produce_errors, h, idx).unwrap_or(0.0);
                ctl.set_produce_errors(h, rate);
            }
        }
        (Resolved::Hosts(hosts), FaultKind::Slow) => {
            for h in hosts {
                let factor = pop_value(&mut holds.slow, h, idx).unwrap_or(1.0);
                ctl.set_slowdown(h, factor);
            }
        }
        // Permanent: nothing to heal.
        (Resolved::Hosts(_), FaultKind::Failover) => {}
        (
            Resolved::Hosts(hosts),
            FaultKind::Crash | FaultKind::BrokerCrash | FaultKind::PowerLoss,
        ) => {
            for h in hosts {
                if give_back(&mut holds.down, h) {
                    ctl.restart(h);
                }
            }
        }
        (Resolved::Sides(a, b), kind @ (FaultKind::Partition | FaultKind::PartitionOneway)) => {
            let ways = cut_ways(kind, a, b);
            let all = if kind == FaultKind::Partition {
                C::repair
            } else {
                C::repair_oneway
            };
            let last: Vec<bool> = ways
                .iter()
                .map(|(x, y)| give_back(&mut holds.cut, &((*x).clone(), (*y).clone())))
                .collect();
            on_changed(ctl, (a, b), &ways, &last, all, C::repair_oneway);
        }
        (Resolved::Sides(a, b), FaultKind::Hold) => {
            let pairs = links(a, b);
            let last: Vec<bool> = pairs
                .iter()
                .map(|(x, y)| give_back(&mut holds.held, &link(x, y)))
                .collect();
            on_changed(ctl, (a, b), &pairs, &last, C::release, C::release);
        }
        (Resolved::Sides(a, b), FaultKind::Latency) => {
            let pairs = links(a, b);
            let after: Vec<Option<Option<FaultLatency>>> = pairs
                .iter()
                .map(|(x, y)| pop_value(&mut holds.latency, &link(x, y), idx))
                .collect();
            if after.iter().all(Option::is_none) {
                ctl.set_latency(a, b, None);
            } else {
                for ((x, y), latency) in pairs.into_iter().zip(after) {
                    ctl.set_latency(one(x), one(y), latency.flatten());
                }
            }
        }
        (
            Resolved::Sides(..),
            FaultKind::Crash
            | FaultKind::BrokerCrash
            | FaultKind::PowerLoss
            | FaultKind::ProduceErrors
            | FaultKind::Failover
            | FaultKind::Slow,
        )
        | (
            Resolved::Hosts(_),
            FaultKind::Partition
            | FaultKind::PartitionOneway
            | FaultKind::Hold
            | FaultKind::Latency,
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
            let (hosts, mut description) = resolve_side(&Side::new([text]), ctl)?;
            if let Some(factor) = spec.factor {
                description.push_str(&format!(" {factor}x slower"));
            }
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
