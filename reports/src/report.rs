//! The run report (`report.json`): the contract of DESIGN §4 built from an [`Analysis`], with
//! the exit code, the verdict, the SLO results and, for scenarios that declare one, whether the
//! `[expect]` section held.

use serde::{Deserialize, Serialize};

use crate::analysis::{
    Analysis, Completeness, Conservation, Counts, FaultWindow, LakeStats, LeaderCutSeen,
    OffsetResetSeen, SchemaReport, TimelineSecond, TruncationSeen,
};
use crate::anomaly::{AnomalyKind, ExactlyOnce};
use crate::expect::Expect;
use crate::latency::{Percentiles, TierBounds, Tiers};
use crate::slo::SloName;

/// Exit code: every check and SLO passed.
pub const EXIT_PASS: i32 = 0;
/// Exit code: an exactly-once violation.
pub const EXIT_VIOLATION: i32 = 1;
/// Exit code: bad input (scenario or arguments); decided by the runner, never by a report.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code: a latency SLO was breached while correctness held.
pub const EXIT_SLO_BREACHED: i32 = 3;
/// Exit code: the pipeline did not drain before the drain timeout.
pub const EXIT_NOT_DRAINED: i32 = 4;

/// Whether the run passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Exit code 0.
    Pass,
    /// Any other exit code.
    Fail,
}

impl Verdict {
    /// `pass` or `fail`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        }
    }
}

/// Latency per stage, each from the change's arrival in the previous stage's topic (its first
/// acknowledgement there, or the commit of the transaction that wrote it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLatency {
    /// Source commit to the raw topic.
    pub ingest: Percentiles,
    /// Raw topic to the standard topic.
    pub standardize: Percentiles,
    /// Standard topic to the enriched topic.
    pub enrich: Percentiles,
    /// Enriched topic to a lake commit.
    pub lake: Percentiles,
}

/// The `latency` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Source commit to visible in the enriched topic.
    pub bus: Percentiles,
    /// Source commit to visible in a lake snapshot.
    pub lake: Percentiles,
    /// Per stage.
    pub stages: StageLatency,
    /// Source commit to scored by the fraud scorer, for card payments; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<Percentiles>,
}

impl LatencyReport {
    /// The summary of an SLO path (`bus`, `lake`, `stages.<stage>`), if it names one.
    pub fn path(&self, path: &str) -> Option<&Percentiles> {
        Some(match path {
            "bus" => &self.bus,
            "lake" => &self.lake,
            "stages.ingest" => &self.stages.ingest,
            "stages.standardize" => &self.stages.standardize,
            "stages.enrich" => &self.stages.enrich,
            "stages.lake" => &self.stages.lake,
            "fraud" => return self.fraud.as_ref(),
            _ => return None,
        })
    }
}

/// The `tiers` section: end-to-end latency tiers and the bounds they were counted with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TiersReport {
    /// Tiers of the bus path.
    pub bus: Tiers,
    /// Tiers of the lake path.
    pub lake: Tiers,
    /// Tiers of the fraud path; absent without a fraud scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<Tiers>,
    /// The tier bounds used.
    pub bounds: TierBounds,
}

/// One SLO and whether the run kept it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SloResult {
    /// The SLO as the scenario named it, such as `bus.p99`.
    pub name: String,
    /// The limit, in milliseconds.
    pub limit_ms: u64,
    /// The measured statistic, in milliseconds.
    pub actual_ms: u64,
    /// Whether `actual_ms <= limit_ms`.
    pub pass: bool,
    /// Why the SLO could not be evaluated (an unknown name); it then fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The scenario's `[expect]` section and whether the run met it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// The exit code the scenario expects, if it names one.
    pub exit_code: Option<i32>,
    /// Anomalies that must have been found.
    pub anomalies: Vec<String>,
    /// Whether every part of the expectation held.
    pub met: bool,
    /// Why not, one reason per failed part; empty when met.
    pub reasons: Vec<String>,
}

/// The report of one run: the DESIGN §4 contract plus a few extras.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The command that replays this run.
    pub replay: String,
    /// Simulated run time.
    pub sim_duration_ms: u64,
    /// Wall-clock time the run took (measured by the runner, outside the simulation).
    pub wall_ms: u64,
    /// `pass` iff `exit_code` is 0.
    pub verdict: Verdict,
    /// 0 pass, 1 exactly-once violation, 3 SLO breached, 4 not drained; lowest non-zero wins.
    pub exit_code: i32,
    /// Whether the scenario's `[expect]` held; only present when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectation_met: Option<bool>,
    /// Source changes per wall-clock second (0 when the wall time is 0).
    pub changes_per_wall_s: f64,
    /// Whether the pipeline drained before the drain timeout.
    pub drained: bool,
    /// Changes parked in redo at the end (not a failure).
    pub parked_in_redo: u64,
    /// What reached each place.
    pub counts: Counts,
    /// Latency per path.
    pub latency: LatencyReport,
    /// End-to-end latency tiers.
    pub tiers: TiersReport,
    /// Exactly-once anomalies.
    pub exactly_once: ExactlyOnce,
    /// SLO results, in the order given.
    pub slo: Vec<SloResult>,
    /// Faults in the order they began.
    pub faults: Vec<FaultWindow>,
    /// Readers moved by `auto.offset.reset` from a position out of range (before the log start,
    /// which retention had moved past it, or past the end of a truncated log), in the order
    /// they were; absent when none was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offset_resets: Vec<OffsetResetSeen>,
    /// Readers that found, by leader epoch, that their leader's log had diverged from what
    /// they had read (a truncating leader change), and went back to where the two agree; in
    /// the order they did; absent when none did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncations_detected: Vec<TruncationSeen>,
    /// Leader changes whose new leader's log ended before what earlier leaders had
    /// acknowledged, in the order they happened: the records between are gone unless written
    /// again. Absent when none was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leader_cuts: Vec<LeaderCutSeen>,
    /// The lake's snapshots and files.
    pub lake: LakeStats,
    /// Load over each topic's partitions and over the tasks; flagged past 10× max/min.
    pub skew: Vec<crate::skew::Spread>,
    /// Where every source change ended: source = enriched + waiting in redo + critical +
    /// absorbed by an incremental snapshot + unaccounted.
    #[serde(default)]
    pub conservation: Conservation,
    /// Transaction ENDs held against the source and the enriched topic.
    #[serde(default)]
    pub completeness: Completeness,
    /// The schema registry's decisions and the records sent to `critical` for their schema;
    /// absent when the run had no registry and no such record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<SchemaReport>,
    /// Per simulated second: committed, made visible, and the worst lake latency.
    pub timeline: Vec<TimelineSecond>,
    /// The scenario's `[expect]` and whether it held; only present when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectation: Option<ExpectationResult>,
}

/// What a report needs besides the analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportInputs {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The command that replays the run.
    pub replay: String,
    /// Wall-clock time of the run.
    pub wall_ms: u64,
    /// The scenario's `[slo]` entries: name (`bus.p99`) and limit in milliseconds.
    pub slos: Vec<(String, u64)>,
    /// The scenario's `[expect]` section, if any.
    pub expect: Option<Expect>,
}

impl Report {
    /// Builds the report of an analysed run.
    pub fn build(analysis: &Analysis, inputs: ReportInputs) -> Report {
        let lat = &analysis.latency;
        let latency = LatencyReport {
            bus: lat.bus.percentiles(),
            lake: lat.lake.percentiles(),
            stages: StageLatency {
                ingest: lat.ingest.percentiles(),
                standardize: lat.standardize.percentiles(),
                enrich: lat.enrich.percentiles(),
                lake: lat.lake_stage.percentiles(),
            },
            fraud: (lat.fraud.tiers.total() > 0).then(|| lat.fraud.percentiles()),
        };
        let slo: Vec<SloResult> = inputs
            .slos
            .iter()
            .map(|(name, limit_ms)| evaluate_slo(name, *limit_ms, &latency))
            .collect();
        let exit_code = exit_code(
            &analysis.exactly_once,
            slo.iter().all(|s| s.pass),
            analysis.drained,
        );
        let expectation = inputs
            .expect
            .as_ref()
            .map(|e| judge_expectation(e, exit_code, &analysis.exactly_once));
        let changes_per_wall_s = if inputs.wall_ms == 0 {
            0.0
        } else {
            analysis.counts.source_changes as f64 * 1000.0 / inputs.wall_ms as f64
        };
        Report {
            scenario: inputs.scenario,
            seed: inputs.seed,
            replay: inputs.replay,
            sim_duration_ms: analysis.sim_duration_ms,
            wall_ms: inputs.wall_ms,
            verdict: if exit_code == EXIT_PASS {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            exit_code,
            expectation_met: expectation.as_ref().map(|e| e.met),
            changes_per_wall_s,
            drained: analysis.drained,
            parked_in_redo: analysis.counts.parked_in_redo,
            counts: analysis.counts,
            latency,
            tiers: TiersReport {
                bus: lat.bus.tiers,
                lake: lat.lake.tiers,
                fraud: (lat.fraud.tiers.total() > 0).then_some(lat.fraud.tiers),
                bounds: analysis.tier_bounds,
            },
            exactly_once: analysis.exactly_once.clone(),
            slo,
            faults: analysis.faults.clone(),
            offset_resets: analysis.offset_resets.clone(),
            truncations_detected: analysis.truncations.clone(),
            leader_cuts: analysis.leader_cuts.clone(),
            lake: LakeStats {
                files_per_snapshot: if analysis.lake.snapshots == 0 {
                    0.0
                } else {
                    analysis.lake.files_written as f64 / analysis.lake.snapshots as f64
                },
                ..analysis.lake
            },
            skew: analysis.skew.clone(),
            conservation: analysis.conservation,
            completeness: analysis.completeness.clone(),
            schemas: analysis.schemas.clone(),
            timeline: analysis.timeline.clone(),
            expectation,
        }
    }
}

/// The exit code of a run: 1 for any anomaly, else 3 for a breached SLO, else 4 when it did not
/// drain, else 0 (the lowest non-zero code wins).
pub fn exit_code(exactly_once: &ExactlyOnce, slos_kept: bool, drained: bool) -> i32 {
    if !exactly_once.is_clean() {
        EXIT_VIOLATION
    } else if !slos_kept {
        EXIT_SLO_BREACHED
    } else if !drained {
        EXIT_NOT_DRAINED
    } else {
        EXIT_PASS
    }
}

/// Reads the SLO's statistic from the latency summary and compares it with the limit.
pub fn evaluate_slo(name: &str, limit_ms: u64, latency: &LatencyReport) -> SloResult {
    let parsed = name
        .parse::<SloName>()
        .and_then(|n| match latency.path(&n.path) {
            Some(p) => Ok(n.metric.of(p)),
            None => Err(format!("unknown latency path {:?}", n.path)),
        });
    match parsed {
        Ok(actual_ms) => SloResult {
            name: name.to_string(),
            limit_ms,
            actual_ms,
            pass: actual_ms <= limit_ms,
            error: None,
        },
        Err(e) => SloResult {
            name: name.to_string(),
            limit_ms,
            actual_ms: 0,
            pass: false,
            error: Some(e),
        },
    }
}

/// Judges a scenario's `[expect]`: the exit code must match (when given) and every listed
/// anomaly must have been found; an anomaly this checker or this run does not check cannot
/// be met.
pub fn judge_expectation(
    expect: &Expect,
    exit_code: i32,
    exactly_once: &ExactlyOnce,
) -> ExpectationResult {
    let mut reasons = Vec::new();
    if let Some(want) = expect.exit_code {
        if want != exit_code {
            reasons.push(format!(
                "expected exit code {want}, the run ended with {exit_code}"
            ));
        }
    }
    for name in &expect.anomalies {
        match AnomalyKind::from_name(name) {
            Some(kind) if exactly_once.count(kind) > 0 => {}
            Some(kind) if !exactly_once.checked().any(|k| k == kind) => reasons.push(format!(
                "expected anomaly {name}, which this run does not check (aborted_read needs \
                 Kafka transactions, aggregate_mismatch a spend aggregator, balance_mismatch \
                 account balances)"
            )),
            Some(_) => reasons.push(format!("expected anomaly {name}, none was found")),
            None => reasons.push(format!(
                "expected anomaly {name:?}, which this checker does not check"
            )),
        }
    }
    ExpectationResult {
        exit_code: expect.exit_code,
        anomalies: expect.anomalies.clone(),
        met: reasons.is_empty(),
        reasons,
    }
}
