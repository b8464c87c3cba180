//! The exactly-once checker, latency tiers and report renderers of nrtsim. It reads only the
//! history (and the workload's types), never the pipeline, so it cannot share the pipeline's
//! bugs.
//!
//! The flow: feed a history to [`Checker`] (or [`analyze`]) to get an [`Analysis`]; build a
//! [`Report`] from it with [`Report::build`]; render the report with [`to_json`],
//! [`to_markdown`], [`to_junit`] or [`summary_text`].

pub mod analysis;
pub mod anomaly;
pub mod checker;
pub mod expect;
pub mod html;
pub mod latency;
pub mod render;
pub mod report;
pub mod skew;
pub mod slo;
pub mod torn;

pub use analysis::{
    Analysis, Completeness, Conservation, Counts, FaultWindow, LakeStats, LatencyPaths,
    LeaderCutSeen, OffsetResetSeen, TimelineSecond, TruncationSeen,
};
pub use anomaly::{AnomalyExample, AnomalyKind, ExactlyOnce};
pub use checker::{analyze, CheckOptions, Checker};
pub use expect::Expect;
pub use html::to_html;
pub use latency::{LatencyPath, Percentiles, TierBounds, Tiers};
pub use render::{human_ms, summary_text, to_json, to_junit, to_markdown};
pub use report::{
    ExpectationResult, LatencyReport, Report, ReportInputs, SloResult, StageLatency, TiersReport,
    Verdict,
};
pub use skew::Spread;
pub use slo::{SloMetric, SloName};
pub use torn::{Checks, LakeHistory, TornPolicy};
