//! Running a scenario: build the simulated world from the scenario and seed, drive its fault
//! schedule, collect the history, judge it, and write the report files.

use crate::scenario::Scenario;
use anyhow::{Context, Result};
use nrtsim_faults::{FaultKind, Injector};
use nrtsim_history::file::{HistoryFormat, HistoryWriter};
use nrtsim_history::Observation;
use nrtsim_reports::{analyze, CheckOptions, Report, ReportInputs};
use nrtsim_sim::{RunSpec, World};
use std::path::{Path, PathBuf};

/// The simulation's result: its history and how long it took on the wall clock.
pub struct Simulated {
    /// Every observation, in order.
    pub history: Vec<Observation>,
    /// Wall-clock milliseconds the simulation took (the only wall-time figure).
    pub wall_ms: u64,
}

/// The command that replays `scenario` with `seed`.
pub fn replay_command(scenario: &Scenario, seed: u64) -> String {
    let path = scenario.source.as_ref().map_or_else(
        || format!("{}.toml", scenario.name),
        |p| p.display().to_string(),
    );
    format!("nrtsim run {path} --seed {seed}")
}

/// What the simulator needs from a scenario.
pub fn run_spec(scenario: &Scenario, seed: u64) -> RunSpec {
    RunSpec {
        scenario: scenario.name.clone(),
        seed,
        replay: replay_command(scenario, seed),
        scenario_toml: scenario.to_toml().unwrap_or_default(),
        duration_ms: scenario.duration.ms(),
        drain_timeout_ms: scenario.drain_timeout.ms(),
        workload: scenario.workload.clone(),
        platform: scenario.platform.clone(),
        pipeline: scenario.pipeline.clone(),
        costs: scenario.costs.clone(),
        network: scenario.network.clone(),
        standbys: scenario
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Failover)
            .filter_map(|f| f.target.clone())
            .collect(),
    }
}

/// Runs `scenario` with `seed` in simulation.
pub fn simulate(scenario: &Scenario, seed: u64) -> Result<Simulated> {
    let started = std::time::Instant::now();
    let mut world = World::new(&run_spec(scenario, seed));
    let mut injector = Injector::new(scenario.faults.clone());
    loop {
        let finished = world.step()?;
        let now = world.now_ms();
        if injector.next_due_ms().is_some_and(|t| t <= now) {
            for event in injector.apply_due(now, &mut world) {
                world.record(event.into_observation());
            }
        }
        if finished {
            break;
        }
    }
    Ok(Simulated {
        history: world.into_history(),
        wall_ms: started.elapsed().as_millis() as u64,
    })
}

/// Judges a history against the scenario's SLOs and expectation.
pub fn judge(scenario: &Scenario, seed: u64, history: &[Observation], wall_ms: u64) -> Report {
    let analysis = analyze(history.iter(), &check_options(Some(scenario)));
    let inputs = ReportInputs {
        scenario: scenario.name.clone(),
        seed,
        replay: replay_command(scenario, seed),
        wall_ms,
        slos: scenario
            .slo
            .iter()
            .map(|(name, limit)| (name.clone(), limit.ms()))
            .collect(),
        expect: scenario.expect.clone(),
    };
    Report::build(&analysis, inputs)
}

/// Judges a saved history on its own: the scenario (SLOs, expectation) is read back from the
/// history's header, so the verdict is the one the run printed.
pub fn judge_history(history: &[Observation]) -> Result<Report> {
    let header = history.iter().find_map(|o| match o {
        Observation::Header(h) => Some(h.clone()),
        _ => None,
    });
    let header = header.context("the history has no header observation")?;
    let scenario = if header.scenario_toml.is_empty() {
        None
    } else {
        Some(
            Scenario::parse(&header.scenario_toml, "<history header>")
                .map_err(|e| anyhow::anyhow!("the scenario in the history header: {e}"))?,
        )
    };
    let analysis = analyze(history.iter(), &check_options(scenario.as_ref()));
    let inputs = ReportInputs {
        scenario: header.scenario.clone(),
        seed: header.seed,
        replay: header.replay.clone(),
        wall_ms: 0,
        slos: scenario
            .as_ref()
            .map(|s| s.slo.iter().map(|(n, l)| (n.clone(), l.ms())).collect())
            .unwrap_or_default(),
        expect: scenario.and_then(|s| s.expect),
    };
    Ok(Report::build(&analysis, inputs))
}

/// The checker's options as the scenario sets them.
fn check_options(scenario: Option<&Scenario>) -> CheckOptions {
    CheckOptions {
        torn_transaction: scenario
            .map(|s| s.checks.torn_transaction)
            .unwrap_or_default(),
        lake_history: scenario.map(|s| s.checks.lake_history).unwrap_or_default(),
        ..CheckOptions::default()
    }
}

/// The default output folder: `target/nrtsim/<scenario>/<seed>/`.
pub fn default_out_dir(scenario: &Scenario, seed: u64) -> PathBuf {
    PathBuf::from("target")
        .join("nrtsim")
        .join(&scenario.name)
        .join(seed.to_string())
}

/// Writes `report.json`, `report.md`, `report.html`, `junit.xml` and the history to `dir`. Each file is
/// written to a temporary name and renamed, so a file is there whole or not at all.
pub fn write_outputs(
    dir: &Path,
    report: &Report,
    history: &[Observation],
    history_format: HistoryFormat,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut writer = HistoryWriter::create(dir.join("history"), history_format)
        .with_context(|| format!("writing the history to {}", dir.display()))?;
    for obs in history {
        writer.write(obs)?;
    }
    writer.finish()?;
    write_whole(&dir.join("report.md"), &nrtsim_reports::to_markdown(report))?;
    write_whole(&dir.join("report.html"), &nrtsim_reports::to_html(report))?;
    write_whole(&dir.join("junit.xml"), &nrtsim_reports::to_junit(report))?;
    // The JSON report last: its presence says the run's outputs are complete.
    write_whole(&dir.join("report.json"), &nrtsim_reports::to_json(report))?;
    Ok(())
}

fn write_whole(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The first observation where two histories of the same seed differ, if any.
pub fn first_divergence(a: &[Observation], b: &[Observation]) -> Option<(usize, String, String)> {
    let n = a.len().max(b.len());
    (0..n).find_map(|i| match (a.get(i), b.get(i)) {
        (Some(x), Some(y)) if x == y => None,
        (x, y) => Some((i, describe(x), describe(y))),
    })
}

fn describe(obs: Option<&Observation>) -> String {
    obs.map_or_else(|| "(history ended)".to_string(), |o| format!("{o:?}"))
}
