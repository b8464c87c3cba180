//! Swarm testing and shrinking. In swarm mode the seed decides which of a scenario's faults
//! are on and adds random ones, so a thousand seeds explore a thousand different worlds. When
//! one fails, shrinking removes faults one at a time for as long as the run still fails the
//! same way, leaving the smallest schedule that shows the failure.

use crate::spec::{FaultKind, FaultSpec, Side};
use crate::target::does_work;
use nrtsim_workloads::{SeedTree, SimDuration};
use rand::seq::SliceRandom;
use rand::Rng;

/// A swarm schedule for `seed`: each of the scenario's own faults kept with even odds, plus
/// one to four random faults (crashes, power losses, partitions, held links, produce errors,
/// slowed hosts) over `hosts`, starting within the first `horizon` of the run.
pub fn swarm_schedule(
    seed: u64,
    own: &[FaultSpec],
    hosts: &[String],
    horizon: SimDuration,
) -> Vec<FaultSpec> {
    let mut rng = SeedTree::new(seed).fork("swarm");
    let mut faults: Vec<FaultSpec> = own.iter().filter(|_| rng.gen_bool(0.5)).cloned().collect();
    let brokers: Vec<&String> = hosts.iter().filter(|h| h.starts_with("broker-")).collect();
    // From the first second on, or from the middle of a run shorter than two seconds: never
    // at or past `horizon`, so that a shrunk schedule still loads.
    let horizon_ms = horizon.ms().max(1);
    let first_ms = 1_000.min(horizon_ms / 2);
    for _ in 0..rng.gen_range(1..=4) {
        let at = SimDuration::from_ms(rng.gen_range(first_ms..horizon_ms));
        let duration = SimDuration::from_ms(rng.gen_range(500..15_000));
        let host = hosts.choose(&mut rng).cloned().unwrap_or_default();
        let kind = *[
            FaultKind::Crash,
            FaultKind::PowerLoss,
            FaultKind::Partition,
            FaultKind::Hold,
            FaultKind::ProduceErrors,
            FaultKind::Slow,
        ]
        .choose(&mut rng)
        .expect("a non-empty list");
        let mut spec = FaultSpec::new(at, kind);
        spec.duration = Some(duration);
        match kind {
            FaultKind::Partition | FaultKind::Hold => {
                let other = hosts.iter().filter(|h| **h != host).collect::<Vec<_>>();
                let other = other
                    .choose(&mut rng)
                    .map(|h| (*h).clone())
                    .unwrap_or_default();
                spec.between = Some([Side::new([host]), Side::new([other])]);
            }
            FaultKind::ProduceErrors => {
                let broker = brokers
                    .choose(&mut rng)
                    .map(|b| (*b).clone())
                    .unwrap_or_default();
                spec.target = Some(broker);
                spec.rate = Some(rng.gen_range(0.01..0.2));
            }
            FaultKind::Slow => {
                let working = hosts.iter().filter(|h| does_work(h)).collect::<Vec<_>>();
                spec.target = working.choose(&mut rng).map(|h| (*h).clone());
                spec.factor = Some(f64::from(rng.gen_range(2u32..=50)));
            }
            _ => spec.target = Some(host),
        }
        faults.push(spec);
    }
    faults.sort_by_key(|f| f.at);
    faults
}

/// Removes faults from `faults` one at a time while `still_fails` holds for what is left;
/// returns the smallest schedule found (each fault in it is needed for the failure).
pub fn shrink(
    faults: Vec<FaultSpec>,
    mut still_fails: impl FnMut(&[FaultSpec]) -> bool,
) -> Vec<FaultSpec> {
    let mut current = faults;
    let mut i = 0;
    while i < current.len() {
        let mut candidate = current.clone();
        candidate.remove(i);
        if still_fails(&candidate) {
            current = candidate;
        } else {
            i += 1;
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        [
            "broker-0",
            "broker-1",
            "broker-2",
            "controller",
            "cdc",
            "enrich-0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn a_seed_always_draws_the_same_valid_schedule() {
        let horizon = SimDuration::from_secs(60);
        for seed in 0..50 {
            let a = swarm_schedule(seed, &[], &hosts(), horizon);
            assert_eq!(a, swarm_schedule(seed, &[], &hosts(), horizon));
            assert!((1..=4).contains(&a.len()));
            for f in &a {
                f.validate()
                    .unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
                assert!(f.at < horizon);
            }
        }
        assert_ne!(
            swarm_schedule(1, &[], &hosts(), horizon),
            swarm_schedule(2, &[], &hosts(), horizon)
        );
        // A run shorter than the first second still gets faults within it.
        let short = SimDuration::from_ms(500);
        for seed in 0..50 {
            for f in swarm_schedule(seed, &[], &hosts(), short) {
                assert!(f.at < short, "seed {seed}: {:?}", f.at);
            }
        }
    }

    #[test]
    fn shrinking_keeps_only_the_faults_the_failure_needs() {
        let faults: Vec<FaultSpec> = (0..6)
            .map(|i| FaultSpec::new(SimDuration::from_secs(i), FaultKind::Crash))
            .collect();
        // The "run" fails whenever the faults at 2 s and 4 s are both present.
        let needs = |fs: &[FaultSpec]| {
            [2, 4]
                .iter()
                .all(|s| fs.iter().any(|f| f.at == SimDuration::from_secs(*s)))
        };
        let mut runs = 0;
        let min = shrink(faults, |fs| {
            runs += 1;
            needs(fs)
        });
        let at: Vec<u64> = min.iter().map(|f| f.at.ms() / 1000).collect();
        assert_eq!(at, vec![2, 4]);
        assert!(runs <= 6);
    }
}
