//! The `[expect]` section: what a scenario is meant to show (canaries and the defect catalogue).

use serde::{Deserialize, Serialize};

/// What a scenario declares it must produce. Absent, a scenario is expected to pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expect {
    /// The exit code the run must end with.
    pub exit_code: Option<i32>,
    /// Anomalies (by their report name, such as `lost`) whose count must be above zero.
    pub anomalies: Vec<String>,
}
