//! Running a scenario: build the simulated world from the scenario and seed, drive its fault
//! schedule, hand its observations to the checker and the history file as they are made (or
//! keep them, where two runs are compared), and write the report files.

use crate::scenario::Scenario;
use anyhow::{Context, Result};
use nrtsim_faults::Injector;
use nrtsim_history::file::{HistoryFormat, HistoryWriter};
use nrtsim_history::Observation;
use nrtsim_reports::{analyze, Analysis, CheckOptions, Checker, Report, ReportInputs};
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
        standbys: scenario.standbys(),
    }
}

/// Runs `scenario` with `seed` in simulation and keeps its whole history.
pub fn simulate(scenario: &Scenario, seed: u64) -> Result<Simulated> {
    let mut history = Vec::new();
    let wall_ms = simulate_into(scenario, seed, |batch| {
        history.append(batch);
        Ok(())
    })?;
    Ok(Simulated { history, wall_ms })
}

/// How many observations [`simulate_into`] gathers before it hands them over.
const HANDOVER_BATCH: usize = 1 << 16;

/// Runs `scenario` with `seed` in simulation, handing the observations to `sink` in order, in
/// batches of at least 65,536 and once more at the end (`sink` may drain each batch), so that
/// nothing needs to hold the whole history. Returns the wall-clock milliseconds the simulation
/// took, without the time spent in `sink`.
pub fn simulate_into(
    scenario: &Scenario,
    seed: u64,
    sink: impl FnMut(&mut Vec<Observation>) -> Result<()>,
) -> Result<u64> {
    simulate_batched(scenario, seed, HANDOVER_BATCH, sink)
}

/// [`simulate_into`], handing over once at least `batch` observations have gathered.
fn simulate_batched(
    scenario: &Scenario,
    seed: u64,
    batch_len: usize,
    mut sink: impl FnMut(&mut Vec<Observation>) -> Result<()>,
) -> Result<u64> {
    let started = std::time::Instant::now();
    let mut in_sink = std::time::Duration::ZERO;
    let mut world = World::new(&run_spec(scenario, seed));
    let mut injector = Injector::new(scenario.faults.clone());
    let mut batch = Vec::new();
    loop {
        let finished = world.step()?;
        let now = world.now_ms();
        if injector.next_due_ms().is_some_and(|t| t <= now) {
            for event in injector.apply_due(now, &mut world) {
                world.record(event.into_observation());
            }
        }
        // Handed over in large batches: often enough to keep memory flat, seldom enough that
        // checking and writing do not keep pushing the simulation out of the caches.
        if finished || world.new_observations() >= batch_len {
            world.take_new_observations(&mut batch);
            let handing = std::time::Instant::now();
            sink(&mut batch)?;
            batch.clear();
            in_sink += handing.elapsed();
        }
        if finished {
            break;
        }
    }
    // The world's teardown counts as simulation, as it did when the history was taken whole.
    drop(world);
    Ok(started.elapsed().saturating_sub(in_sink).as_millis() as u64)
}

/// Runs `scenario` with `seed` and judges it as it runs, keeping no history: for runs whose
/// report is all that is wanted (`explore`, `compare`).
pub fn run_judged(scenario: &Scenario, seed: u64) -> Result<Report> {
    let checker = Checker::new(check_options(Some(scenario)));
    let (wall_ms, checker) =
        simulate_beside(scenario, seed, HANDOVER_BATCH, checker, |checker, batch| {
            batch.iter().for_each(|obs| checker.observe(obs));
            Ok(())
        })?;
    Ok(report_for(scenario, seed, &checker.finish(), wall_ms))
}

/// [`simulate_batched`], with each batch handed to `consume` on a second thread, which owns
/// `state` and gives it back at the end: checking and writing the history overlap the
/// simulation instead of pausing it. The simulation itself stays on the calling thread, and
/// `consume` sees the observations in the order they were made, so what it computes is what it
/// would compute inline. An error from `consume` ends the run and is the one returned.
fn simulate_beside<S: Send>(
    scenario: &Scenario,
    seed: u64,
    batch_len: usize,
    state: S,
    mut consume: impl FnMut(&mut S, &[Observation]) -> Result<()> + Send,
) -> Result<(u64, S)> {
    use std::sync::mpsc;
    std::thread::scope(|scope| {
        // One batch queued while another is consumed: the simulation runs at most a batch
        // ahead, so memory stays bounded when the consumer is the slower side.
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<Observation>>(1);
        let (spare_tx, spare_rx) = mpsc::channel::<Vec<Observation>>();
        let consumer = scope.spawn(move || -> Result<S> {
            let mut state = state;
            for mut batch in full_rx {
                consume(&mut state, &batch)?;
                batch.clear();
                // The simulation may have finished and stopped taking spares back.
                let _ = spare_tx.send(batch);
            }
            Ok(state)
        });
        let simulated = simulate_batched(scenario, seed, batch_len, |batch| {
            let spare = spare_rx.try_recv().unwrap_or_default();
            full_tx
                .send(std::mem::replace(batch, spare))
                .map_err(|_| anyhow::anyhow!("the history's consumer stopped"))
        });
        drop(full_tx);
        let consumed = match consumer.join() {
            Ok(consumed) => consumed,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // The consumer's own error, if it stopped, explains the simulation's.
        let state = consumed?;
        Ok((simulated?, state))
    })
}

/// Runs `scenario` with `seed`, judging it and writing its history to `dir` as it runs, then
/// writes the reports there: memory grows with the checker's state, not with the history.
/// The history file appears only once it is complete, and `report.json` last.
pub fn run_to(
    scenario: &Scenario,
    seed: u64,
    dir: &Path,
    history_format: HistoryFormat,
) -> Result<Report> {
    run_to_batched(scenario, seed, dir, history_format, HANDOVER_BATCH)
}

fn run_to_batched(
    scenario: &Scenario,
    seed: u64,
    dir: &Path,
    history_format: HistoryFormat,
    batch_len: usize,
) -> Result<Report> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let written = write_run(scenario, seed, dir, history_format, batch_len);
    if written.is_err() && created {
        // A run that failed leaves no empty folder behind (a folder with files in it stays).
        let _ = std::fs::remove_dir(dir);
    }
    written
}

/// [`run_to`] into `dir`, which exists.
fn write_run(
    scenario: &Scenario,
    seed: u64,
    dir: &Path,
    history_format: HistoryFormat,
    batch_len: usize,
) -> Result<Report> {
    let writer = HistoryWriter::create(dir.join("history"), history_format)
        .with_context(|| format!("writing the history to {}", dir.display()))?;
    let checker = Checker::new(check_options(Some(scenario)));
    let (wall_ms, (checker, writer)) = simulate_beside(
        scenario,
        seed,
        batch_len,
        (checker, writer),
        |(checker, writer), batch| {
            for obs in batch {
                checker.observe(obs);
                writer.write(obs)?;
            }
            Ok(())
        },
    )?;
    finish_history(dir, writer)?;
    let report = report_for(scenario, seed, &checker.finish(), wall_ms);
    write_reports(dir, &report)?;
    Ok(report)
}

/// Moves a complete history into place in `dir`. An earlier run's `report.json` there goes
/// first: until this run's is written, the folder has no `report.json` to pair with a history
/// it does not describe. A run that fails before this leaves the earlier outputs as they were.
fn finish_history(dir: &Path, writer: HistoryWriter) -> Result<()> {
    let stale = dir.join("report.json");
    match std::fs::remove_file(&stale) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the earlier {}", stale.display()));
        }
        _ => {}
    }
    writer.finish()?;
    Ok(())
}

/// Judges a history against the scenario's SLOs and expectation.
pub fn judge(scenario: &Scenario, seed: u64, history: &[Observation], wall_ms: u64) -> Report {
    let analysis = analyze(history.iter(), &check_options(Some(scenario)));
    report_for(scenario, seed, &analysis, wall_ms)
}

/// The report on a run of `scenario` with `seed` whose history was analysed as `analysis`.
fn report_for(scenario: &Scenario, seed: u64, analysis: &Analysis, wall_ms: u64) -> Report {
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
    Report::build(analysis, inputs)
}

/// How many observations a history may have before its header (one written by hand, say).
const MAX_BEFORE_HEADER: usize = 4096;

/// Judges a saved history on its own: the scenario (SLOs, expectation) is read back from the
/// history's header, so the verdict is the one the run printed. The history is judged as it is
/// read, in one pass: memory grows with the checker's state (keys,
/// every change, open transactions), not with the observations. The first read error
/// ends the judgement with that error; no report is built from part of a history.
pub fn judge_history<E>(
    history: impl IntoIterator<Item = std::result::Result<Observation, E>>,
) -> Result<Report>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut history = history.into_iter();
    // The header comes first in every history nrtsim writes; a hand-written one may put
    // observations before it, which are kept until it is found.
    let mut before = Vec::new();
    let header = loop {
        match history.next() {
            Some(Ok(Observation::Header(h))) => break h,
            Some(Ok(obs)) if before.len() < MAX_BEFORE_HEADER => before.push(obs),
            Some(Ok(_)) => anyhow::bail!(
                "the history has no header observation among its first {MAX_BEFORE_HEADER}"
            ),
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("the history has no header observation"),
        }
    };
    let scenario = if header.scenario_toml.is_empty() {
        None
    } else {
        Some(
            Scenario::parse(&header.scenario_toml, "<history header>")
                .map_err(|e| anyhow::anyhow!("the scenario in the history header: {e}"))?,
        )
    };
    let mut failure = None;
    let rest = history.map_while(|r| r.map_err(|e| failure = Some(e)).ok());
    let observations = before
        .into_iter()
        .chain(std::iter::once(Observation::Header(header.clone())))
        .chain(rest);
    let analysis = analyze(observations, &check_options(scenario.as_ref()));
    if let Some(e) = failure {
        return Err(e.into());
    }
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

/// Writes `report.json`, `report.md`, `report.html`, `junit.xml` and the history to `dir`.
/// Each file is written to a temporary name and renamed, so a file is there whole or not at
/// all.
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
    finish_history(dir, writer)?;
    write_reports(dir, report)
}

/// Writes `report.md`, `report.html`, `junit.xml` and, last, `report.json` to `dir`, each whole
/// or not at all.
fn write_reports(dir: &Path, report: &Report) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use nrtsim_history::file::read_history;
    use std::io;

    /// Small, with a crash, so that every kind of step makes observations.
    const SCENARIO: &str = r#"
name = "streamed"
seed = 5
duration = "8s"

[workload]
kind = "order"
rate_per_s = 200
accounts = 200

[pipeline]
checkpoint_interval = "2s"

[[faults]]
at = "3s"
kind = "crash"
target = "standardize-0"
duration = "1s"
"#;

    /// A report with the wall-time fields taken out.
    fn comparable(report: &Report) -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&nrtsim_reports::to_json(report)).expect("the report is JSON");
        let fields = v.as_object_mut().expect("an object");
        fields.remove("wall_ms");
        fields.remove("changes_per_wall_s");
        v
    }

    /// The history of a run stepped directly, with nothing handed over on the way.
    fn stepped_whole(scenario: &Scenario, seed: u64) -> Vec<Observation> {
        let mut world = World::new(&run_spec(scenario, seed));
        let mut injector = Injector::new(scenario.faults.clone());
        loop {
            let finished = world.step().expect("steps");
            let now = world.now_ms();
            for event in injector.apply_due(now, &mut world) {
                world.record(event.into_observation());
            }
            if finished {
                return world.into_history();
            }
        }
    }

    #[test]
    fn a_run_checked_and_written_as_it_goes_matches_one_held_whole() {
        let scenario = Scenario::parse(SCENARIO, "streamed.toml").unwrap_or_else(|e| panic!("{e}"));
        let whole = stepped_whole(&scenario, 5);
        assert!(whole.iter().any(|o| matches!(o, Observation::Fault { .. })));

        let (mut batches, mut streamed) = (0, Vec::new());
        simulate_batched(&scenario, 5, 500, |batch| {
            batches += 1;
            streamed.append(batch);
            Ok(())
        })
        .expect("simulates");
        assert!(batches > 3, "only {batches} hand-overs");
        assert_eq!(first_divergence(&whole, &streamed), None);

        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let report =
            run_to_batched(&scenario, 5, &out, HistoryFormat::Jsonl, 500).expect("runs and writes");
        let judged = judge(&scenario, 5, &whole, 0);
        assert_eq!(comparable(&report), comparable(&judged));
        let written = read_history(out.join("history"))
            .expect("opens")
            .collect::<Result<Vec<_>, _>>()
            .expect("reads");
        assert_eq!(first_divergence(&whole, &written), None);
        let mut files: Vec<String> = std::fs::read_dir(&out)
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "history",
                "junit.xml",
                "report.html",
                "report.json",
                "report.md"
            ],
            "no temporary file is left"
        );

        assert_eq!(
            comparable(&run_judged(&scenario, 5).expect("runs")),
            comparable(&judged)
        );
    }

    #[test]
    fn a_rerun_never_leaves_the_old_report_beside_the_new_history() {
        let scenario = Scenario::parse(SCENARIO, "streamed.toml").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path();
        std::fs::write(out.join("report.json"), "an earlier run's report").expect("write");
        std::fs::write(out.join("history"), "an earlier run's history").expect("write");
        // The reports cannot be written (their temporary name is taken by a folder), so the run
        // fails after its history is in place.
        std::fs::create_dir(out.join("report.tmp")).expect("mkdir");
        assert!(run_to_batched(&scenario, 5, out, HistoryFormat::Jsonl, 500).is_err());
        assert!(
            !out.join("report.json").exists(),
            "the earlier report is gone"
        );
        let history = std::fs::read_to_string(out.join("history")).expect("read");
        assert!(history.starts_with('{'), "the new history is in place");
    }

    #[test]
    fn a_saved_history_is_judged_as_it_is_read() {
        let scenario = Scenario::parse(SCENARIO, "streamed.toml").unwrap_or_else(|e| panic!("{e}"));
        let whole = stepped_whole(&scenario, 5);
        let judged = comparable(&judge(&scenario, 5, &whole, 0));
        let read = |h: Vec<Observation>| judge_history(h.into_iter().map(Ok::<_, io::Error>));
        assert_eq!(comparable(&read(whole.clone()).expect("judged")), judged);

        // A hand-written history may put observations before its header.
        let mut moved = whole.clone();
        let header = moved.remove(0);
        assert!(matches!(header, Observation::Header(_)));
        moved.insert(3, header);
        assert_eq!(comparable(&read(moved).expect("judged")), judged);

        let headless = whole[1..].to_vec();
        let err = read(headless).expect_err("no header");
        assert!(err.to_string().contains("no header"), "{err}");

        // A read error ends the judgement with it: no report from part of a history.
        let failing = whole[..whole.len() / 2]
            .iter()
            .cloned()
            .map(Ok)
            .chain(std::iter::once(Err(io::Error::other("damaged frame 1234"))))
            .chain(whole[whole.len() / 2..].iter().cloned().map(Ok));
        let err = judge_history(failing).expect_err("a read error");
        assert!(err.to_string().contains("damaged frame 1234"), "{err}");
    }
}
