//! The nrtsim command line: run, validate, check, gen.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nrtsim::explore::ExploreOptions;
use nrtsim::runner::{self, first_divergence};
use nrtsim::scenario::{validate_files, Scenario};
use nrtsim_history::file::{read_history, HistoryFormat};
use nrtsim_pipeline::Delivery;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

// jemalloc rather than the system allocator: under glibc's malloc a run spends about a sixth
// of its time allocating and freeing (the simulation makes and drops many small buffers a
// tick); see README, "How fast it runs". It changes no output: nothing depends on where
// memory lies.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Deterministic simulation and benchmark harness for near-real-time bank data platforms.
#[derive(Parser)]
#[command(name = "nrtsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Simulated brokers and jobs, in simulated time.
    Sim,
    /// A real Kafka cluster through rdkafka.
    Kafka,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario and judge it.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// The seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write the report and history (default target/nrtsim/<scenario>/<seed>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Simulated or against a real cluster.
        #[arg(long, value_enum, default_value_t = Mode::Sim)]
        mode: Mode,
        /// Bootstrap servers for --mode kafka.
        #[arg(long)]
        bootstrap: Option<String>,
        /// Run the seed twice and name the first observation where the histories differ.
        #[arg(long)]
        check_determinism: bool,
        /// The history file's form: compact binary, or JSON lines to read by eye.
        #[arg(long, value_enum, default_value_t = HistoryForm::Binary)]
        history_format: HistoryForm,
    },
    /// Check scenario files without running them.
    Validate {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// Run many seeds of a scenario; shrink the first failure to a minimal scenario file.
    Explore {
        /// The scenario file.
        scenario: PathBuf,
        /// How many seeds, counting from the scenario's (1 to 1,000,000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=MAX_SEEDS))]
        seeds: u64,
        /// Runs at once (default: the machine's cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Let each seed decide which faults are on, and add random ones.
        #[arg(long)]
        swarm: bool,
        /// Judge seeds on correctness and liveness alone: a run that drained and breached only
        /// a latency SLO (exit 3) counts as a pass (random faults break latency limits set for
        /// the scenario's own).
        #[arg(long)]
        ignore_slo: bool,
        /// Where the shrunk scenario (or a canary's missed seed) goes (default
        /// target/nrtsim/<scenario>/explore/).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run scenarios side by side: latency, correctness and cost in one table.
    Compare {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Seeds per scenario, counting from each scenario's (1 to 1,000,000).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_SEEDS))]
        seeds: u64,
    },
    /// Re-run the checker on a saved history.
    Check {
        /// The history file (binary or JSON lines).
        history: PathBuf,
    },
    /// Print a workload's change events as Debezium-style JSON lines.
    Gen {
        /// Which workload.
        #[arg(long, value_enum, default_value_t = GenWorkload::Card)]
        workload: GenWorkload,
        /// How many change events.
        #[arg(long, default_value_t = 100)]
        events: u64,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HistoryForm {
    /// zstd-compressed binary frames.
    Binary,
    /// One JSON observation per line.
    Jsonl,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GenWorkload {
    Card,
    Order,
    Mixed,
}

/// Prints a line on stdout, as `println!` does, except that stdout failing does not end the
/// command: a reader who has gone away (`nrtsim run … | head -1`) ends the printing quietly,
/// and any other failure (a full disk behind a redirect) is told once on stderr. Either way
/// the outputs are still written and the exit code still gives the verdict.
macro_rules! say {
    ($($arg:tt)*) => {
        say_raw(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `text` on stdout; see [`say!`].
fn say_raw(text: std::fmt::Arguments) {
    static TOLD: AtomicBool = AtomicBool::new(false);
    if let Err(e) = std::io::stdout().lock().write_fmt(text) {
        if e.kind() != ErrorKind::BrokenPipe && !TOLD.swap(true, Ordering::Relaxed) {
            eprintln!("warning: stdout failed ({e}); going on without the printed summary");
        }
    }
}

/// Exit code: bad input.
const EXIT_BAD_INPUT: u8 = 2;
/// The most seeds `explore` and `compare` take: each seed is a whole run.
const MAX_SEEDS: u64 = 1_000_000;
/// Exit code: the same seed gave two different histories.
const EXIT_NONDETERMINISTIC: u8 = 5;
/// Exit code of `explore`: no seed failed, but on some seed a canary (a scenario whose
/// `[expect]` declares a defect) passed, so the defect it is there to show did not happen.
const EXIT_CANARY_MISSED: u8 = 6;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Run {
            scenario,
            seed,
            out,
            mode,
            bootstrap,
            check_determinism,
            history_format,
        } => {
            let format = match history_format {
                HistoryForm::Binary => HistoryFormat::Binary,
                HistoryForm::Jsonl => HistoryFormat::Jsonl,
            };
            let args = RunArgs {
                seed,
                out,
                mode,
                bootstrap,
                check_determinism,
                format,
            };
            run(scenario, args)
        }
        Command::Validate { scenarios } => {
            let mut bad = 0;
            for (path, res) in scenarios.iter().zip(validate_files(&scenarios)) {
                match res {
                    Ok(s) => say!("ok: {} ({})", path.display(), s.name),
                    Err(e) => {
                        eprintln!("{e}");
                        bad += 1;
                    }
                }
            }
            Ok(if bad > 0 { EXIT_BAD_INPUT } else { 0 })
        }
        Command::Check { history } => check(history),
        Command::Explore {
            scenario,
            seeds,
            jobs,
            swarm,
            ignore_slo,
            out,
        } => explore(scenario, seeds, jobs, swarm, ignore_slo, out),
        Command::Compare { scenarios, seeds } => {
            let mut loaded = Vec::new();
            for path in &scenarios {
                let Some(s) = load_scenario(path) else {
                    return Ok(EXIT_BAD_INPUT);
                };
                loaded.push(s);
            }
            let rows = nrtsim::compare::compare(&loaded, seeds)?;
            say_raw(format_args!("{}", nrtsim::compare::table(&rows)));
            Ok(0)
        }
        Command::Gen {
            workload,
            events,
            seed,
        } => {
            let kind = match workload {
                GenWorkload::Card => nrtsim_workloads::WorkloadKind::Card,
                GenWorkload::Order => nrtsim_workloads::WorkloadKind::Order,
                GenWorkload::Mixed => nrtsim_workloads::WorkloadKind::Mixed,
            };
            let cfg = nrtsim_workloads::WorkloadConfig {
                kind,
                ..Default::default()
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match nrtsim_workloads::write_jsonl(&cfg, seed, events, &mut out)
                .and_then(|_| out.flush())
            {
                // The reader took what it wanted (`nrtsim gen … | head`).
                Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(0),
                r => r.map(|()| 0).map_err(Into::into),
            }
        }
    }
}

struct RunArgs {
    seed: Option<u64>,
    out: Option<PathBuf>,
    mode: Mode,
    bootstrap: Option<String>,
    check_determinism: bool,
    format: HistoryFormat,
}

fn run(path: PathBuf, args: RunArgs) -> Result<u8> {
    let RunArgs {
        seed,
        out,
        mode,
        bootstrap,
        check_determinism,
        format,
    } = args;
    let Some(scenario) = load_scenario(&path) else {
        return Ok(EXIT_BAD_INPUT);
    };
    let seed = seed.unwrap_or(scenario.seed);
    say!("seed={seed} scenario={}", scenario.name);
    if mode == Mode::Kafka {
        let target = bootstrap.unwrap_or_else(|| "an embedded mock cluster".into());
        eprintln!(
            "error: --mode kafka (against {target}) needs the rdkafka backend, which this build \
             does not include yet; run with --mode sim"
        );
        return Ok(EXIT_BAD_INPUT);
    }
    let dir = out.unwrap_or_else(|| runner::default_out_dir(&scenario, seed));
    let report = if check_determinism {
        // Comparing two runs needs both histories whole.
        let sim = runner::simulate(&scenario, seed)?;
        let again = runner::simulate(&scenario, seed)?;
        if let Some((i, a, b)) = first_divergence(&sim.history, &again.history) {
            eprintln!("non-deterministic: the histories of seed {seed} differ at observation {i}");
            eprintln!("  first run:  {a}");
            eprintln!("  second run: {b}");
            return Ok(EXIT_NONDETERMINISTIC);
        }
        say!(
            "deterministic: two runs of seed {seed} gave identical histories ({} observations)",
            sim.history.len()
        );
        let report = runner::judge(&scenario, seed, &sim.history, sim.wall_ms);
        runner::write_outputs(&dir, &report, &sim.history, format)
            .with_context(|| format!("writing the run's outputs to {}", dir.display()))?;
        report
    } else {
        runner::run_to(&scenario, seed, &dir, format)?
    };
    say!("{}", nrtsim_reports::summary_text(&report));
    say!("outputs: {}", dir.display());
    Ok(report.exit_code as u8)
}

/// Loads a scenario, or prints where it is wrong (file, line, column, field).
fn load_scenario(path: &Path) -> Option<Scenario> {
    Scenario::load(path).map_err(|e| eprintln!("{e}")).ok()
}

fn explore(
    path: PathBuf,
    seeds: u64,
    jobs: Option<usize>,
    swarm: bool,
    ignore_slo: bool,
    out: Option<PathBuf>,
) -> Result<u8> {
    let Some(scenario) = load_scenario(&path) else {
        return Ok(EXIT_BAD_INPUT);
    };
    say!(
        "seed={} scenario={} seeds={seeds} swarm={swarm}",
        scenario.seed,
        scenario.name
    );
    if swarm {
        let promise = match scenario.pipeline.delivery {
            Delivery::ExactlyOnce => None,
            Delivery::AtLeastOnce => Some("at-least-once: a job crash duplicates records"),
            Delivery::AtMostOnce => Some("at-most-once: a job crash loses records"),
        };
        if let Some(promise) = promise {
            say!(
                "note: delivery is {promise} by design, and swarm faults crash jobs; \
                 seeds whose crash catches a job mid-write fail the exactly-once verdict"
            );
        }
    }
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let out = out.unwrap_or_else(|| {
        PathBuf::from("target/nrtsim")
            .join(&scenario.name)
            .join("explore")
    });
    let opts = ExploreOptions {
        seeds,
        jobs,
        swarm,
        ignore_slo,
        out,
    };
    let found = nrtsim::explore::explore(&scenario, &opts, |_| {})?;
    for run in &found.runs {
        let eo = &run.report.exactly_once;
        let how = if run.as_expected() {
            "as expected"
        } else if run.missed() {
            "MISSED"
        } else {
            "FAILED"
        };
        say!(
            "seed {}: {how} exit {}  faults {}  lost {}  duplicated {}  reordered {}  lake_mismatch {}",
            run.seed,
            run.report.exit_code,
            run.faults.len(),
            eo.lost,
            eo.duplicated,
            eo.reordered,
            eo.lake_mismatch
        );
    }
    let failed = found.runs.iter().filter(|r| r.failed()).count();
    let missed = found.runs.iter().filter(|r| r.missed()).count();
    say!(
        "explored {} seeds: {}",
        found.runs.len(),
        if missed == 0 {
            format!("{failed} did not end as expected")
        } else {
            format!(
                "{failed} failed; on {missed} the run passed where the scenario expects a defect"
            )
        }
    );
    if let Some((seed, file)) = &found.missed {
        say!(
            "first miss: seed {seed} passed where the scenario expects a defect (not shrunk: \
             dropping faults cannot make a defect appear): {}",
            file.display()
        );
        say!("replay: nrtsim run {}", file.display());
    }
    let Some((seed, faults, file)) = found.shrunk else {
        return Ok(if missed > 0 { EXIT_CANARY_MISSED } else { 0 });
    };
    let first = found
        .runs
        .iter()
        .find(|r| r.seed == seed)
        .expect("the shrunk seed was run");
    say!(
        "first failure: seed {seed}, exit {}; shrunk from {} to {} faults: {}",
        first.report.exit_code,
        first.faults.len(),
        faults.len(),
        file.display()
    );
    say!("replay: nrtsim run {}", file.display());
    // A failed seed's code is never 0: a run that passed either ended as expected or missed.
    Ok(first.report.exit_code as u8)
}

fn check(path: PathBuf) -> Result<u8> {
    let reader = read_history(&path).with_context(|| format!("reading {}", path.display()))?;
    let report = runner::judge_history(reader)?;
    say!("{}", nrtsim_reports::summary_text(&report));
    Ok(report.exit_code as u8)
}
