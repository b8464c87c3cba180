//! Throughput benches: the card workload's raw generate+encode rate, the rate of the jobs' own
//! work on that workload with nothing simulated around it, and the end-to-end rate of the
//! `baseline-card` scenario through the whole simulated pipeline, all in source changes per
//! wall-second. After criterion's own report it prints the figures from timed passes (the best
//! of a few for the short ones, one of the baseline) and their ratios, so they are compared on
//! the same machine in the same run, with the checker's cost and the cost of simulated time at
//! idle split out. The end-to-end runs judge as they go, the checker on a second thread, as
//! `nrtsim run`, `explore` and `compare` do. The baseline also runs with Kafka transactions off (exactly-once by the
//! earlier scheme of restored sequence numbers), which prices the transaction protocol.

use criterion::{Criterion, Throughput};
use nrtsim::runner;
use nrtsim::scenario::Scenario;
use nrtsim_pipeline::canonical::{decode, Encoder, Enriched};
use nrtsim_pipeline::enrich::{enrich, EnrichOutcome, ReferenceStore};
use nrtsim_pipeline::lake::{LakeTable, PendingWrite};
use nrtsim_pipeline::standardize::{standardize, Standardized};
use nrtsim_pipeline::{LakeConfig, Record, RecordMeta};
use nrtsim_workloads::{
    encode_change_into, EnvelopeDecoder, ReferenceData, SchemaTimeline, SeedTree, Workload,
    WorkloadConfig,
};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

// The allocator the `nrtsim` binary runs with, so that every rate here is measured as users
// get it.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const GEN_DURATION_MS: u64 = 60_000;

fn card_config() -> WorkloadConfig {
    WorkloadConfig {
        rate_per_s: 2000,
        ..Default::default()
    }
}

/// Generates a minute of card traffic and encodes every change as its CDC envelope; returns
/// the number of changes.
fn generate_and_encode(cfg: &WorkloadConfig) -> u64 {
    let mut wl = Workload::new(cfg, &SeedTree::new(42), GEN_DURATION_MS);
    let schemas = SchemaTimeline::default();
    let mut buf = Vec::with_capacity(512);
    let mut n = 0;
    while let Some(txn) = wl.next_transaction() {
        for c in &txn.changes {
            buf.clear();
            encode_change_into(
                c,
                txn.commit_ms,
                schemas.at(c.key.table, txn.commit_ms),
                &mut buf,
            );
            black_box(&buf);
            n += 1;
        }
    }
    n
}

/// The jobs' own work on a minute of card traffic, with no brokers, network, checker or
/// history in between: each change is generated and encoded as its CDC envelope, standardized,
/// enriched, read back by the lake sink and upserted into a lake table committed every 10 s.
/// What the full pipeline costs beyond this is the simulated platform's. Returns the number of
/// changes, as [`generate_and_encode`] does.
fn job_logic(cfg: &WorkloadConfig) -> u64 {
    let seeds = SeedTree::new(42);
    let mut wl = Workload::new(cfg, &seeds, GEN_DURATION_MS);
    let schemas = SchemaTimeline::default();
    let store = ReferenceStore::new(Rc::new(ReferenceData::new(cfg, &seeds)), 3_600_000);
    let mut enc = Encoder::default();
    let mut decoder = EnvelopeDecoder::default();
    let mut lake = LakeTable::with_config(LakeConfig::default());
    let mut writes: Vec<PendingWrite> = Vec::new();
    let mut raw = Vec::with_capacity(512);
    let (mut n, mut checkpoint, mut next_commit_ms) = (0, 0, 10_000);
    let mut commit = |writes: &mut Vec<PendingWrite>, now_ms: u64| {
        checkpoint += 1;
        black_box(lake.commit("lake-0", checkpoint, writes, BTreeMap::new(), now_ms));
        writes.clear();
    };
    while let Some(txn) = wl.next_transaction() {
        if txn.commit_ms >= next_commit_ms {
            commit(&mut writes, txn.commit_ms);
            next_commit_ms += 10_000;
        }
        for c in &txn.changes {
            n += 1;
            raw.clear();
            let schema = schemas.at(c.key.table, txn.commit_ms);
            encode_change_into(c, txn.commit_ms, schema, &mut raw);
            let record = Record {
                key: c.key.id,
                value: bytes::Bytes::copy_from_slice(&raw),
                meta: RecordMeta {
                    change_id: c.lsn,
                    txid: txn.txid,
                    commit_ms: txn.commit_ms,
                    attempt: 0,
                },
            };
            let Standardized::Standard(standard) = standardize(&record, &mut decoder, &mut enc)
            else {
                continue;
            };
            let EnrichOutcome::Enriched(enriched) =
                enrich(&standard, &store, false, Some(3), &mut enc)
            else {
                continue;
            };
            let e: Enriched = decode(&enriched.value).expect("the enrich job's own record");
            writes.push(PendingWrite {
                key: e.change.key,
                change_id: enriched.meta.change_id,
                row: e.change.row.map(Into::into),
                merchant: e.merchant,
            });
        }
    }
    commit(&mut writes, GEN_DURATION_MS);
    n
}

fn baseline() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/baseline-card.toml");
    Scenario::load(&path).expect("the shipped baseline scenario loads")
}

/// The baseline without Kafka transactions.
fn baseline_without_transactions() -> Scenario {
    let mut s = baseline();
    s.pipeline.transactions.enabled = Some(false);
    s
}

/// The baseline's platform with almost no traffic (one payment a second, and the initial
/// snapshot): what simulated time costs by itself, whatever flows through it.
fn baseline_idle() -> Scenario {
    let mut s = baseline();
    s.workload.rate_per_s = 1;
    s
}

/// How many times the baseline's rate [`baseline_dense`] offers.
const DENSE: u64 = 5;

/// The baseline at [`DENSE`] times its rate, which it still carries within its SLOs.
fn baseline_dense() -> Scenario {
    let mut s = baseline();
    s.workload.rate_per_s *= DENSE;
    s
}

/// Runs the scenario once as `nrtsim explore` and `nrtsim compare` do (judged as it runs, the
/// checker beside the simulation on a second thread); returns the source changes it carried.
fn run_pipeline(scenario: &Scenario) -> u64 {
    run_measured(scenario).0
}

/// [`run_pipeline`]; returns the source changes it carried and the simulated ms.
fn run_measured(scenario: &Scenario) -> (u64, u64) {
    let report = runner::run_judged(scenario, scenario.seed).expect("the baseline runs");
    assert_eq!(
        report.exit_code, 0,
        "the baseline must pass while it is benchmarked"
    );
    (report.counts.source_changes, report.sim_duration_ms)
}

/// The wall seconds the checker takes to judge the scenario's history by itself, on one
/// thread, with the history already in memory.
fn checker_seconds(scenario: &Scenario) -> f64 {
    let sim = runner::simulate(scenario, scenario.seed).expect("the baseline runs");
    let t = Instant::now();
    let report = runner::judge(scenario, scenario.seed, &sim.history, sim.wall_ms);
    let judge_s = t.elapsed().as_secs_f64();
    assert_eq!(report.exit_code, 0, "the baseline passes when judged whole");
    judge_s
}

fn bench_workload(c: &mut Criterion) {
    let cfg = card_config();
    let changes = generate_and_encode(&cfg);
    let mut g = c.benchmark_group("workload");
    g.throughput(Throughput::Elements(changes));
    g.bench_function("card generate+encode", |b| {
        b.iter(|| generate_and_encode(&cfg))
    });
    g.bench_function("card job logic alone", |b| b.iter(|| job_logic(&cfg)));
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let scenario = baseline();
    let changes = run_pipeline(&scenario);
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.throughput(Throughput::Elements(changes));
    g.bench_function("baseline-card end-to-end", |b| {
        b.iter(|| run_pipeline(&scenario))
    });
    let plain = baseline_without_transactions();
    g.bench_function("baseline-card end-to-end, transactions off", |b| {
        b.iter(|| run_pipeline(&plain))
    });
    g.finish();
}

fn rate(changes: u64, started: Instant) -> f64 {
    changes as f64 / started.elapsed().as_secs_f64()
}

/// The best rate of `passes` timed passes of `f`, which returns the changes it carried: a
/// pass this short (a tenth of a second) is at the mercy of a busy moment of the machine.
fn best_rate(passes: u32, f: impl Fn() -> u64) -> f64 {
    (0..passes)
        .map(|_| {
            let t = Instant::now();
            rate(f(), t)
        })
        .fold(0.0, f64::max)
}

/// Timed passes of each, side by side.
fn ratio_summary() {
    let cfg = card_config();
    let raw = best_rate(5, || generate_and_encode(&cfg));
    let logic = best_rate(3, || job_logic(&cfg));
    let scenario = baseline();
    let t = Instant::now();
    let (changes, sim_ms) = run_measured(&scenario);
    let busy_s = t.elapsed().as_secs_f64();
    let judge_s = checker_seconds(&scenario);
    let e2e = changes as f64 / busy_s;
    let plain = baseline_without_transactions();
    let t = Instant::now();
    let off = rate(run_pipeline(&plain), t);
    println!("summary: card generate+encode {raw:.0} changes/s; baseline-card end-to-end {e2e:.0} changes/s; ratio 1/{:.1}", raw / e2e);
    // Where the budget goes: the jobs' own work, with nothing simulated around it, and the
    // checker's judgement of the run's history.
    println!(
        "summary: the jobs' own work alone (encode, standardize, enrich, lake upsert) {logic:.0} changes/s, \
         1/{:.1} of generate+encode; the checker judges the baseline's history in {judge_s:.2} s \
         ({:.1} us a change)",
        raw / logic,
        1e6 * judge_s / changes.max(1) as f64,
    );
    println!(
        "summary: baseline-card with transactions {e2e:.0} changes/s, without {off:.0} changes/s; \
         transactions cost {:.0}%",
        100.0 * (1.0 - e2e / off)
    );
    // Split the baseline's wall time into what simulated time costs on its own (every host
    // is stepped each simulated millisecond, busy or not) and what its changes cost.
    let idle = baseline_idle();
    let t = Instant::now();
    let (idle_changes, idle_sim_ms) = run_measured(&idle);
    let idle_s = t.elapsed().as_secs_f64();
    let floor_s = idle_s * sim_ms as f64 / idle_sim_ms.max(1) as f64;
    let per_change_us =
        1e6 * (busy_s - floor_s).max(0.0) / changes.saturating_sub(idle_changes).max(1) as f64;
    println!(
        "summary: baseline-card simulates {:.1} s in {busy_s:.2} s; the same platform with almost no \
         traffic simulates {:.1} s in {idle_s:.2} s ({:.0} simulated s per wall s)",
        sim_ms as f64 / 1e3,
        idle_sim_ms as f64 / 1e3,
        idle_sim_ms as f64 / 1e3 / idle_s,
    );
    println!(
        "summary: of the baseline's wall time, {floor_s:.2} s is simulated time at idle, which alone caps \
         its rate at {:.0} changes/s (1/{:.1} of generate+encode); the changes cost {per_change_us:.1} us each",
        changes as f64 / floor_s,
        raw * floor_s / changes as f64,
    );
    // The same platform under a denser load: the idle cost is spread over more changes, and
    // batches fill up. How far that goes is what the harness's rate depends on besides the
    // platform's size.
    let dense = baseline_dense();
    let t = Instant::now();
    let dense_rate = rate(run_pipeline(&dense), t);
    println!(
        "summary: the baseline's platform at {} payments/s ({DENSE}x its rate) runs end to end at \
         {dense_rate:.0} changes/s, 1/{:.1} of generate+encode",
        dense.workload.rate_per_s,
        raw / dense_rate,
    );
    // The target, end to end at 1/10 of generate+encode, as a budget per change: what
    // is left of it for the simulated platform once the jobs' work is paid. The checker runs
    // beside the simulation, on a second thread, so it is not in the budget while it keeps up.
    let us = |rate: f64| 1e6 / rate;
    let judge_us = 1e6 * judge_s / changes.max(1) as f64;
    println!(
        "summary: at 1/10 of generate+encode a change may cost {:.2} us end to end; the jobs' work \
         takes {:.2} us (the checker's {judge_us:.2} us runs beside the simulation), leaving {:.2} us \
         for the simulated platform, which costs {:.1} us",
        10.0 * us(raw),
        us(logic),
        10.0 * us(raw) - us(logic),
        us(e2e) - us(logic),
    );
}

// The macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench_workload, super::bench_pipeline);
}

fn main() {
    group::benches();
    Criterion::default().configure_from_args().final_summary();
    ratio_summary();
}
