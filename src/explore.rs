//! Exploring many seeds of one scenario: each seed is a different world (and, in swarm mode,
//! a different set of faults drawn from the seed). The first seed that fails is shrunk to the
//! smallest fault schedule that still fails the same way, and written out as a scenario file
//! that replays it.

use crate::runner;
use crate::scenario::Scenario;
use anyhow::{Context, Result};
use nrtsim_faults::{shrink, swarm_schedule, FaultSpec};
use nrtsim_reports::report::EXIT_SLO_BREACHED;
use nrtsim_reports::{Expect, Report};
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
}

impl SeedRun {
    /// Whether the run ended as the scenario says it should (its `[expect]`, or a pass; with
    /// [`ExploreOptions::ignore_slo`], an SLO breach alone counts as a pass).
    pub fn as_expected(&self) -> bool {
        self.expected
    }
}

/// Whether `report` ended as `expect` says (without one, whether it passed). With
/// `ignore_slo`, a run that breached only a latency SLO (exit 3) counts as a pass where the
/// scenario expects one.
fn ended_as_expected(report: &Report, expect: Option<&Expect>, ignore_slo: bool) -> bool {
    let met = match report.expectation_met {
        Some(met) => met,
        None => report.exit_code == 0,
    };
    let expects_pass =
        expect.is_none_or(|e| e.exit_code.unwrap_or(0) == 0 && e.anomalies.is_empty());
    met || (ignore_slo && expects_pass && report.exit_code == EXIT_SLO_BREACHED)
}

/// What exploring found.
pub struct Exploration {
    /// Every seed's run, by seed.
    pub runs: Vec<SeedRun>,
    /// For the first failing seed: the shrunk faults and the scenario file written for them.
    pub shrunk: Option<(u64, Vec<FaultSpec>, PathBuf)>,
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
                let run = run_with(scenario, seed, &faults).map(|report| SeedRun {
                    seed,
                    expected: ended_as_expected(&report, scenario.expect.as_ref(), opts.ignore_slo),
                    faults,
                    report,
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
    let shrunk = match runs.iter().find(|r| !r.as_expected()) {
        None => None,
        Some(first) => Some(shrink_failure(scenario, first, opts)?),
    };
    Ok(Exploration { runs, shrunk })
}

fn shrink_failure(
    scenario: &Scenario,
    failed: &SeedRun,
    opts: &ExploreOptions,
) -> Result<(u64, Vec<FaultSpec>, PathBuf)> {
    let seed = failed.seed;
    let code = failed.report.exit_code;
    let minimal = shrink(failed.faults.clone(), |faults| {
        run_with(scenario, seed, faults).is_ok_and(|r| {
            !ended_as_expected(&r, scenario.expect.as_ref(), opts.ignore_slo) && r.exit_code == code
        })
    });
    let out: &Path = &opts.out;
    let mut min = scenario.clone();
    min.name = format!("{}-seed{seed}-min", scenario.name);
    min.description = format!(
        "Shrunk from {} seed {seed}: the smallest fault schedule that still ends with exit {code}",
        scenario.name
    );
    min.seed = seed;
    min.faults = minimal.clone();
    let text = min.to_toml().context("writing the shrunk scenario")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("{}.toml", min.name));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok((seed, minimal, path))
}
