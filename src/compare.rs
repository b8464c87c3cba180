//! Comparing configurations side by side: each scenario run over the same number of seeds,
//! with latency, correctness and cost in one table.

use crate::runner;
use crate::scenario::Scenario;
use anyhow::Result;
use nrtsim_reports::{human_ms, Report};

/// One scenario's runs.
pub struct Compared {
    /// The scenario's name.
    pub name: String,
    /// One report per seed.
    pub reports: Vec<Report>,
}

/// Runs each scenario over `seeds` seeds from its own.
pub fn compare(scenarios: &[Scenario], seeds: u64) -> Result<Vec<Compared>> {
    scenarios
        .iter()
        .map(|s| {
            let reports = (0..seeds.max(1))
                .map(|i| {
                    let seed = s.seed.wrapping_add(i);
                    runner::run_judged(s, seed)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Compared {
                name: s.name.clone(),
                reports,
            })
        })
        .collect()
}

/// The comparison as a Markdown table: worst latency over the seeds, anomalies summed, exit
/// codes, the lake's file cost (the most files, and small files, any seed's run wrote: what a
/// shorter checkpoint interval buys its latency with) and wall time.
pub fn table(rows: &[Compared]) -> String {
    let mut out = String::from(
        "| scenario | seeds | exit codes | bus p50 | bus p99 | lake p99 | lost | duplicated | reordered | lake mismatch | lake files | small files | wall |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let max = |f: fn(&Report) -> u64| row.reports.iter().map(f).max().unwrap_or(0);
        let sum = |f: fn(&Report) -> u64| row.reports.iter().map(f).sum::<u64>();
        let mut codes: Vec<i32> = row.reports.iter().map(|r| r.exit_code).collect();
        codes.sort_unstable();
        codes.dedup();
        let codes: Vec<String> = codes.iter().map(i32::to_string).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.name,
            row.reports.len(),
            codes.join(", "),
            human_ms(max(|r| r.latency.bus.p50_ms)),
            human_ms(max(|r| r.latency.bus.p99_ms)),
            human_ms(max(|r| r.latency.lake.p99_ms)),
            sum(|r| r.exactly_once.lost),
            sum(|r| r.exactly_once.duplicated),
            sum(|r| r.exactly_once.reordered),
            sum(|r| r.exactly_once.lake_mismatch),
            max(|r| r.lake.files_written),
            max(|r| r.lake.small_files_written),
            human_ms(sum(|r| r.wall_ms)),
        ));
    }
    out
}
