//! Exploring many seeds of one scenario: each seed is a different world (and, in swarm mode,
//! a different set of faults drawn from the seed). The first seed that fails is shrunk, one
//! fault at a time, to a schedule that still fails the same way (the same exit code, drained or
//! not as before, the same anomalies found) and from which no single fault can be dropped, and
//! written out as a scenario file that replays it.
//!
//! A canary (a scenario whose `[expect]` declares a defect) can also miss: a seed on which the
//! run passes, so the defect it is there to show did not happen. Dropping faults cannot make a
//! defect appear, so such a seed is not shrunk; the first one is written out as it ran.

use crate::runner;
use crate::scenario::Scenario;
use anyhow::{Context, Result};
use nrtsim_faults::{shrink, swarm_schedule, FaultSpec};
use nrtsim_reports::report::EXIT_SLO_BREACHED;
use nrtsim_reports::{AnomalyKind, Expect, Report};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How to explore.
pub struct ExploreOptions {
    /// How many seeds, from the scenario's own.
    pub seeds: u64,
    /// Runs at once (each run is single-threaded).
    pub jobs: usize,
    /// Let each seed decide which faults are on, and add random ones.
    pub swarm: bool,
    /// Judge seeds on correctness and liveness alone: a run whose only failure is a latency
    /// SLO (exit 3) counts as a pass where a pass was expected. Random faults break latency
    /// limits set for a scenario's own faults as a matter of course.
    pub ignore_slo: bool,
    /// Where the shrunk scenario is written.
    pub out: PathBuf,
}

/// One seed's run.
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// The faults it ran with.
    pub faults: Vec<FaultSpec>,
    /// Its report.
    pub report: Report,
    /// Whether it ended as the scenario says it should (see [`ended_as_expected`]).
    expected: bool,
    /// Whether it passed where the scenario expects a defect (see [`SeedRun::missed`]).
    missed: bool,
}

impl SeedRun {
    /// Whether the run ended as the scenario says it should (its `[expect]`, or a pass; with
    /// [`ExploreOptions::ignore_slo`], an SLO breach alone counts as a pass).
    pub fn as_expected(&self) -> bool {
        self.expected
    }

    /// Whether the run did not end as expected, and passed (with
    /// [`ExploreOptions::ignore_slo`], passed but for an SLO) where the scenario's `[expect]`
    /// declares a defect: the canary did not show it.
    pub fn missed(&self) -> bool {
        self.missed
    }

    /// Whether the run failed in a way a smaller fault schedule can reproduce: it did not end
    /// as expected, and it did not merely pass where a defect was expected.
    pub fn failed(&self) -> bool {
        !self.expected && !self.missed
    }
}

/// Whether `report` ended as `expect` says (without one, whether it passed). With
/// `ignore_slo`, a run that breached only a latency SLO counts as a pass where the scenario
/// expects one: exit 3 (so exactly-once held, as exit 1 would win over it) and drained (exit 3
/// also wins over exit 4).
fn ended_as_expected(report: &Report, expect: Option<&Expect>, ignore_slo: bool) -> bool {
    let met = match report.expectation_met {
        Some(met) => met,
        None => report.exit_code == 0,
    };
    met || (ignore_slo && expects_pass(expect) && passed_but_for_slo(report))
}

/// Whether `expect` (or its absence) asks for a pass: no exit code but 0, no anomaly.
fn expects_pass(expect: Option<&Expect>) -> bool {
    expect.is_none_or(|e| e.exit_code.unwrap_or(0) == 0 && e.anomalies.is_empty())
}

/// Whether the run's only failure is a latency SLO: exit 3 (so exactly-once held, as exit 1
/// would win over it) and drained (exit 3 also wins over exit 4).
fn passed_but_for_slo(report: &Report) -> bool {
    report.exit_code == EXIT_SLO_BREACHED && report.drained
}

/// Whether the run ended as expected, and if not, whether it missed the defect `expect`
/// declares.
fn judge(report: &Report, expect: Option<&Expect>, ignore_slo: bool) -> (bool, bool) {
    let expected = ended_as_expected(report, expect, ignore_slo);
    (
        expected,
        !expected && missed_defect(report, expect, ignore_slo),
    )
}

/// Whether the run passed (or, with `ignore_slo`, passed but for an SLO) where `expect`
/// declares a defect.
fn missed_defect(report: &Report, expect: Option<&Expect>, ignore_slo: bool) -> bool {
    let passed = report.exit_code == 0 || (ignore_slo && passed_but_for_slo(report));
    passed && !expects_pass(expect)
}

/// How a run failed, for shrinking to keep to the same failure: its exit code, whether it
/// drained, and which anomalies it found (torn transactions only where they fail the run).
fn failure(report: &Report) -> (i32, bool, Vec<AnomalyKind>) {
    let eo = &report.exactly_once;
    let found = eo
        .checked()
        .filter(|&k| eo.count(k) > 0)
        .filter(|&k| k != AnomalyKind::TornTransaction || eo.torn_transaction_is_violation)
        .collect();
    (report.exit_code, report.drained, found)
}

/// What exploring found.
pub struct Exploration {
    /// Every seed's run, by seed.
    pub runs: Vec<SeedRun>,
    /// For the first seed that [failed](SeedRun::failed): the shrunk faults and the scenario
    /// file written for them.
    pub shrunk: Option<(u64, Vec<FaultSpec>, PathBuf)>,
    /// For the first seed that [missed](SeedRun::missed) the scenario's defect: the scenario
    /// file that replays it, with the faults it ran with.
    pub missed: Option<(u64, PathBuf)>,
}

fn faults_for(scenario: &Scenario, seed: u64, swarm: bool) -> Vec<FaultSpec> {
    if !swarm {
        return scenario.faults.clone();
    }
    swarm_schedule(
        seed,
        &scenario.faults,
        &scenario.host_names(),
        scenario.duration,
    )
}

fn run_with(scenario: &Scenario, seed: u64, faults: &[FaultSpec]) -> Result<Report> {
    let mut s = scenario.clone();
    s.faults = faults.to_vec();
    runner::run_judged(&s, seed)
}

/// Runs `opts.seeds` seeds of `scenario`, `opts.jobs` at a time, and shrinks the first
/// failure. `progress` is told of each finished seed.
pub fn explore(
    scenario: &Scenario,
    opts: &ExploreOptions,
    progress: impl Fn(&SeedRun) + Sync,
) -> Result<Exploration> {
    let seeds: Vec<u64> = (0..opts.seeds)
        .map(|i| scenario.seed.wrapping_add(i))
        .collect();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Result<SeedRun>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let faults = faults_for(scenario, seed, opts.swarm);
                let expect = scenario.expect.as_ref();
                let run = run_with(scenario, seed, &faults).map(|report| {
                    let (expected, missed) = judge(&report, expect, opts.ignore_slo);
                    SeedRun {
                        seed,
                        expected,
                        missed,
                        faults,
                        report,
                    }
                });
                if let Ok(r) = &run {
                    progress(r);
                }
                done.lock().expect("no poisoned lock").push(run);
            });
        }
    });
    let mut runs = done
        .into_inner()
        .expect("no poisoned lock")
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    runs.sort_by_key(|r| r.seed);
    let shrunk = match runs.iter().find(|r| r.failed()) {
        None => None,
        Some(first) => Some(shrink_failure(scenario, first, opts)?),
    };
    let missed = match runs.iter().find(|r| r.missed()) {
        None => None,
        Some(first) => {
            let mut as_ran = scenario.clone();
            as_ran.name = format!("{}-seed{}", scenario.name, first.seed);
            as_ran.description = format!(
                "{} seed {}: the run passed where the scenario expects a defect",
                scenario.name, first.seed
            );
            as_ran.seed = first.seed;
            as_ran.faults = first.faults.clone();
            Some((first.seed, write_scenario(&as_ran, &opts.out)?))
        }
    };
    Ok(Exploration {
        runs,
        shrunk,
        missed,
    })
}

/// Writes `scenario` as `<name>.toml` under `out`; returns the file's path.
fn write_scenario(scenario: &Scenario, out: &Path) -> Result<PathBuf> {
    let text = scenario.to_toml().context("writing the scenario")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("{}.toml", scenario.name));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn shrink_failure(
    scenario: &Scenario,
    failed: &SeedRun,
    opts: &ExploreOptions,
) -> Result<(u64, Vec<FaultSpec>, PathBuf)> {
    let seed = failed.seed;
    let code = failed.report.exit_code;
    let how = failure(&failed.report);
    let minimal = shrink(failed.faults.clone(), |faults| {
        run_with(scenario, seed, faults).is_ok_and(|r| {
            !ended_as_expected(&r, scenario.expect.as_ref(), opts.ignore_slo) && failure(&r) == how
        })
    });
    let mut min = scenario.clone();
    min.name = format!("{}-seed{seed}-min", scenario.name);
    min.description = format!(
        "Shrunk from {} seed {seed}: a fault schedule that still fails the same way (exit {code})",
        scenario.name
    );
    min.seed = seed;
    min.faults = minimal.clone();
    Ok((seed, minimal, write_scenario(&min, &opts.out)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_report() -> Report {
        let text = "name = \"tiny\"\nseed = 3\nduration = \"2s\"\n\n[workload]\nkind = \"card\"\nrate_per_s = 50\naccounts = 50\n";
        let scenario = Scenario::parse(text, "tiny.toml").expect("a valid scenario");
        runner::run_judged(&scenario, 3).expect("it runs")
    }

    /// Exit 3 wins over exit 4, so an SLO breach can hide a run that never drained: under
    /// `--ignore-slo` such a run is not a pass.
    #[test]
    fn ignoring_slos_does_not_pass_a_run_that_did_not_drain() {
        let mut report = small_report();
        assert!(
            ended_as_expected(&report, None, false),
            "the tiny run passes"
        );
        report.exit_code = EXIT_SLO_BREACHED;
        report.expectation_met = None;
        assert!(!ended_as_expected(&report, None, false));
        assert!(ended_as_expected(&report, None, true));
        report.drained = false;
        assert!(!ended_as_expected(&report, None, true));
    }

    /// A canary's seed that passed missed its defect; one that failed otherwise is a failure;
    /// a seed of a scenario that expects a pass never misses.
    #[test]
    fn a_pass_where_a_defect_is_expected_is_a_miss_not_a_failure() {
        let passed = small_report();
        let lost = Expect {
            exit_code: Some(1),
            anomalies: vec!["lost".into()],
        };
        assert!(missed_defect(&passed, Some(&lost), false));
        assert!(!missed_defect(&passed, None, false));
        let mut slow = passed.clone();
        slow.exit_code = EXIT_SLO_BREACHED;
        assert!(
            !missed_defect(&slow, Some(&lost), false),
            "exit 3 is a failure"
        );
        assert!(
            missed_defect(&slow, Some(&lost), true),
            "but for the SLO it passed"
        );
        slow.drained = false;
        assert!(!missed_defect(&slow, Some(&lost), true), "it did not drain");
        let mut duplicated = passed;
        duplicated.exit_code = 1;
        assert!(!missed_defect(&duplicated, Some(&lost), false));
        // A scenario that expects exit 3 (an SLO breach) and got it ended as expected, even
        // judged with SLOs ignored: it is no miss.
        let mut breach = small_report();
        breach.exit_code = EXIT_SLO_BREACHED;
        let slow = Expect {
            exit_code: Some(EXIT_SLO_BREACHED),
            anomalies: Vec::new(),
        };
        breach.expectation_met = Some(true);
        assert_eq!(judge(&breach, Some(&slow), true), (true, false));
        breach.exit_code = 0;
        breach.expectation_met = Some(false);
        assert_eq!(judge(&breach, Some(&slow), false), (false, true));
    }

    /// Shrinking keeps to the failure it started from: another anomaly under the same exit
    /// code is another failure.
    #[test]
    fn a_failure_is_its_exit_code_its_drain_and_its_anomalies() {
        let mut lost = small_report();
        lost.exit_code = 1;
        lost.exactly_once.lost = 3;
        let mut duplicated = lost.clone();
        duplicated.exactly_once.lost = 0;
        duplicated.exactly_once.duplicated = 2;
        assert_ne!(failure(&lost), failure(&duplicated));
        let mut more = lost.clone();
        more.exactly_once.lost = 9;
        assert_eq!(failure(&lost), failure(&more), "counts may differ");
        assert_eq!(failure(&lost).2, vec![AnomalyKind::Lost]);
    }
}
