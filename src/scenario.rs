//! Scenario files: loading, defaults and validation. A scenario is declarative data (a TOML
//! file, DESIGN §4); every error names the file, line, column and dotted field it is about, so
//! the CLI can print it as it is and exit 2.

mod locate;

use locate::DocIndex;
use nrtsim_faults::{FaultKind, FaultSpec};
use nrtsim_history::TopicName;
use nrtsim_pipeline::{Acks, Delivery};
use nrtsim_pipeline::{CostConfig, PipelineConfig};
use nrtsim_reports::{AnomalyKind, Checks, Expect, SloName};
use nrtsim_sim::{NetworkConfig, PlatformConfig};
use nrtsim_workloads::{SimDuration, WorkloadConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed and validated scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name, used in reports and output paths. Required.
    pub name: String,
    /// What the scenario shows. Default empty.
    #[serde(default)]
    pub description: String,
    /// The seed used when the command line gives none. Default 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How long the workload runs, in simulated time. Default 60s.
    #[serde(default = "default_duration")]
    pub duration: SimDuration,
    /// How long the pipeline may take to drain after the workload stops. Default 5m.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: SimDuration,
    /// The `[workload]` section.
    #[serde(default)]
    pub workload: WorkloadConfig,
    /// The `[platform]` section.
    #[serde(default)]
    pub platform: PlatformConfig,
    /// The `[pipeline]` section.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The `[costs]` section.
    #[serde(default)]
    pub costs: CostConfig,
    /// The `[network]` section.
    #[serde(default)]
    pub network: NetworkConfig,
    /// The `[[faults]]` entries, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultSpec>,
    /// The `[slo]` table: latency limits by SLO name, such as `"bus.p99" = "1s"`.
    #[serde(default)]
    pub slo: BTreeMap<String, SimDuration>,
    /// The `[checks]` section: how strict the checker is where the scenario decides.
    #[serde(default)]
    pub checks: Checks,
    /// The `[expect]` section, if the scenario is meant to fail in a given way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// The file the scenario was loaded from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_seed() -> u64 {
    1
}

fn default_duration() -> SimDuration {
    SimDuration::from_secs(60)
}

fn default_drain_timeout() -> SimDuration {
    SimDuration::from_secs(300)
}

/// Why a scenario could not be loaded: where, which field, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The file, as given on the command line.
    pub file: String,
    /// 1-based line; 0 when the error is about the file as a whole (it could not be read).
    pub line: usize,
    /// 1-based column, in characters; 0 when `line` is 0.
    pub column: usize,
    /// Dotted path of the field, such as `pipeline.producer.acks` or `faults[0].target`;
    /// empty when the error is about the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Builds errors located in one scenario text.
struct Locator<'a> {
    file: &'a str,
    index: DocIndex<'a>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str, file: &'a str) -> Self {
        Self {
            file,
            index: DocIndex::new(text),
        }
    }

    fn error_at(&self, offset: usize, field: String, message: String) -> ScenarioError {
        let (line, column) = self.index.line_column(offset);
        ScenarioError {
            file: self.file.to_string(),
            line,
            column,
            field,
            message,
        }
    }

    /// An error about the field at `path`, placed where that field (or its table) is written.
    fn field_error(&self, path: &str, message: impl Into<String>) -> ScenarioError {
        self.error_at(self.index.offset_of(path), path.to_string(), message.into())
    }

    /// Turns a deserializer error (a byte span and a message) into a located error.
    fn toml_error(&self, err: &toml::de::Error) -> ScenarioError {
        let offset = err.span().map_or(0, |s| s.start);
        let mut message = err.message().trim().replace('\n', "; ");
        if message == "wanted string or table" {
            // What toml says when an enum value is given as a number or a bare word.
            message.push_str("; this field takes one of a fixed set of names, written in quotes");
        }
        let field = match (err.span(), missing_field(&message)) {
            // A missing field is reported with the span of its whole table; name the field.
            (_, Some(missing)) => {
                let table = self.index.table_at(offset);
                if table.is_empty() {
                    missing.to_string()
                } else {
                    format!("{table}.{missing}")
                }
            }
            (Some(_), None) => self.index.path_at(offset),
            (None, None) => String::new(),
        };
        self.error_at(offset, field, message)
    }
}

/// The field a "missing field `x`" message is about.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

impl Scenario {
    /// Reads, parses and validates the scenario file at `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the scenario file: {e}"),
        })?;
        let mut scenario = Self::parse(&text, &file)?;
        scenario.source = Some(path.to_path_buf());
        Ok(scenario)
    }

    /// Parses and validates scenario `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = match toml::from_str(text) {
            Ok(s) => s,
            Err(e) => return Err(Locator::new(text, file).toml_error(&e)),
        };
        scenario.validate(&Locator::new(text, file))?;
        Ok(scenario)
    }

    /// Every host of this scenario's platform, in a stable order: the brokers, the controller,
    /// the CDC connector, then each job's tasks.
    pub fn host_names(&self) -> Vec<String> {
        // The simulator names its hosts; validation must agree with it exactly.
        let mut hosts = nrtsim_sim::host_names(&self.platform, &self.pipeline);
        // A failover's standby (`<task>-standby`) is a host from the start, as the runner
        // registers it, so that later faults can hit it.
        for task in self.standbys() {
            let standby = format!("{task}-standby");
            if !hosts.contains(&standby) {
                hosts.push(standby);
            }
        }
        hosts
    }

    /// The stream tasks a `failover` fault moves to a standby instance.
    pub fn standbys(&self) -> Vec<String> {
        self.faults
            .iter()
            .filter(|f| f.kind == FaultKind::Failover)
            .filter_map(|f| f.target.clone())
            .collect()
    }

    /// The SLOs with their names parsed. Names were checked when the scenario was loaded.
    pub fn slos(&self) -> Vec<(SloName, SimDuration)> {
        self.slo
            .iter()
            .filter_map(|(name, limit)| name.parse().ok().map(|n| (n, *limit)))
            .collect()
    }

    /// The scenario as TOML text that [`Scenario::parse`] reads back to an equal scenario
    /// (apart from `source`); used to write shrunk scenarios.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Checks what the types alone cannot: ranges, cross-field rules, SLO names and faults.
    fn validate(&self, at: &Locator<'_>) -> Result<(), ScenarioError> {
        let check = |ok: bool, path: &str, message: &str| -> Result<(), ScenarioError> {
            if ok {
                Ok(())
            } else {
                Err(at.field_error(path, message))
            }
        };
        check(
            !self.name.trim().is_empty(),
            "name",
            "the scenario needs a non-empty name",
        )?;
        check(
            self.duration.us > 0,
            "duration",
            "the workload must run for more than zero time",
        )?;
        self.validate_workload(at)?;
        self.validate_platform(at)?;
        self.validate_pipeline(at)?;
        for name in self.slo.keys() {
            if let Err(message) = name.parse::<SloName>() {
                let path = format!("slo.{}", quote_key(name));
                return Err(at.field_error(&path, message));
            }
        }
        if let Some(expect) = &self.expect {
            if let Some(code) = expect.exit_code {
                check(
                    (0..=4).contains(&code),
                    "expect.exit_code",
                    "an exit code is 0 to 4",
                )?;
            }
            for (i, anomaly) in expect.anomalies.iter().enumerate() {
                let names: Vec<&str> = AnomalyKind::ALL.iter().map(|k| k.name()).collect();
                let message = format!(
                    "unknown anomaly {anomaly:?}; expected one of {}",
                    names.join(", ")
                );
                check(
                    AnomalyKind::from_name(anomaly).is_some(),
                    &format!("expect.anomalies[{i}]"),
                    &message,
                )?;
            }
        }
        self.validate_faults(at)
    }

    fn validate_workload(&self, at: &Locator<'_>) -> Result<(), ScenarioError> {
        let w = &self.workload;
        let ratio = |x: f64| (0.0..=1.0).contains(&x);
        let checks = [
            (
                w.rate_per_s >= 1,
                "workload.rate_per_s",
                "must be at least 1",
            ),
            (w.accounts >= 1, "workload.accounts", "must be at least 1"),
            (w.merchants >= 1, "workload.merchants", "must be at least 1"),
            (
                w.key_skew.is_finite() && w.key_skew >= 0.0,
                "workload.key_skew",
                "must be 0 or more",
            ),
            (
                ratio(w.unknown_merchant_ratio),
                "workload.unknown_merchant_ratio",
                "must be between 0 and 1",
            ),
            (
                ratio(w.poison_ratio),
                "workload.poison_ratio",
                "must be between 0 and 1",
            ),
        ];
        first_failure(at, &checks)?;
        if let Err((i, message)) = nrtsim_workloads::SchemaTimeline::new(&w.ddl) {
            return Err(at.field_error(&format!("workload.ddl[{i}].column"), message));
        }
        Ok(())
    }

    fn validate_platform(&self, at: &Locator<'_>) -> Result<(), ScenarioError> {
        let p = &self.platform;
        let rf = format!(
            "must be between 1 and the number of brokers ({}); it is {}",
            p.brokers, p.replication_factor
        );
        let isr = format!(
            "must be between 1 and replication_factor ({}); it is {}",
            p.replication_factor, p.min_insync_replicas
        );
        let checks = [
            (p.brokers >= 1, "platform.brokers", "must be at least 1"),
            (
                p.partitions >= 1,
                "platform.partitions",
                "must be at least 1",
            ),
            (
                (1..=p.brokers).contains(&p.replication_factor),
                "platform.replication_factor",
                rf.as_str(),
            ),
            (
                (1..=p.replication_factor).contains(&p.min_insync_replicas),
                "platform.min_insync_replicas",
                isr.as_str(),
            ),
            (
                p.retention.ms() > 0,
                "platform.retention",
                "must be at least 1ms",
            ),
            (
                p.retention_check_interval.ms() > 0,
                "platform.retention_check_interval",
                "must be at least 1ms",
            ),
        ];
        first_failure(at, &checks)?;
        for (topic, retention) in &p.topic_retention {
            let field = format!("platform.topic_retention.{}", topic_key(*topic));
            if *topic == TopicName::Schemas {
                return Err(at.field_error(
                    &field,
                    "the schema registry's topic is compacted and never expires; name raw, \
                     standard, enriched, redo or critical"
                        .to_string(),
                ));
            }
            if retention.ms() == 0 {
                return Err(at.field_error(&field, "must be at least 1ms".to_string()));
            }
        }
        Ok(())
    }

    fn validate_pipeline(&self, at: &Locator<'_>) -> Result<(), ScenarioError> {
        let p = &self.pipeline;
        let positive = "must be above zero";
        let at_least_one = "must be at least 1";
        let checks = [
            (
                p.checkpoint_interval.us > 0,
                "pipeline.checkpoint_interval",
                positive,
            ),
            (
                p.producer.max_in_flight >= 1,
                "pipeline.producer.max_in_flight",
                at_least_one,
            ),
            (
                p.producer.batch_records >= 1,
                "pipeline.producer.batch_records",
                at_least_one,
            ),
            (
                p.producer.request_timeout.us > 0,
                "pipeline.producer.request_timeout",
                positive,
            ),
            (
                p.consumer.max_poll_records >= 1,
                "pipeline.consumer.max_poll_records",
                at_least_one,
            ),
            (
                p.parallelism.standardize >= 1,
                "pipeline.parallelism.standardize",
                at_least_one,
            ),
            (
                p.parallelism.enrich >= 1,
                "pipeline.parallelism.enrich",
                at_least_one,
            ),
            (
                p.parallelism.lake >= 1,
                "pipeline.parallelism.lake",
                at_least_one,
            ),
            (
                p.enrich.store_refresh.us > 0,
                "pipeline.enrich.store_refresh",
                positive,
            ),
            // Kafka refuses an idempotent producer that does not wait for every in-sync
            // replica, and exactly-once delivery is built on idempotent producers.
            (
                !p.producer.idempotence || p.producer.acks == Acks::All,
                "pipeline.producer.acks",
                "an idempotent producer needs acks = \"all\" (Kafka refuses idempotence with \
                 acks 0 or 1); set acks = \"all\" or idempotence = false",
            ),
            // Kafka's producer refuses idempotence with more than five requests in flight: the
            // broker keeps the last five batches per producer to tell a retry from a gap.
            (
                !p.producer.idempotence || p.producer.max_in_flight <= 5,
                "pipeline.producer.max_in_flight",
                "an idempotent producer allows at most 5 requests in flight (Kafka refuses \
                 more); lower it, or set idempotence = false",
            ),
            (
                p.lake.buckets >= 1 && p.lake.small_file_rows >= 1,
                "pipeline.lake",
                "buckets and small_file_rows must be at least 1",
            ),
            (
                p.lake.pre_commit_timeout.us > 0 && p.lake.commit_interval.us > 0,
                "pipeline.lake",
                "pre_commit_timeout and commit_interval must be above zero",
            ),
            (p.spend.window.us > 0, "pipeline.spend.window", positive),
            (
                p.fraud.velocity_window.us > 0,
                "pipeline.fraud.velocity_window",
                positive,
            ),
            (
                !p.consumer.group || !p.two_phase_lake_sink(),
                "pipeline.consumer.group",
                "the exactly-once lake sink is a two-phase-commit sink whose positions live in \
                 its checkpoints, not in a consumer group; consumer groups apply to an \
                 at-least-once or at-most-once sink, or one with lake.commit = \"timer\"",
            ),
            (
                p.consumer.heartbeat_interval.us > 0
                    && p.consumer.heartbeat_interval.us < p.consumer.session_timeout.us,
                "pipeline.consumer.heartbeat_interval",
                "must be above zero and below session_timeout (Kafka requires it)",
            ),
            (
                !p.consumer.enable_auto_commit || p.consumer.group,
                "pipeline.consumer.enable_auto_commit",
                "auto-commit commits a consumer group's positions, and only a lake sink in a \
                 consumer group has them (consumer.group = true); without a group each task \
                 checkpoints its own positions",
            ),
            (
                p.consumer.auto_commit_interval.us > 0,
                "pipeline.consumer.auto_commit_interval",
                positive,
            ),
            (
                p.cdc.chunk_rows >= 1,
                "pipeline.cdc.chunk_rows",
                at_least_one,
            ),
            (
                p.delivery != Delivery::ExactlyOnce || p.producer.idempotence,
                "pipeline.delivery",
                "exactly-once delivery needs idempotent producers (producer.idempotence = true \
                 and acks = \"all\"); use at-least-once or at-most-once otherwise",
            ),
        ];
        first_failure(at, &checks)?;
        if let Err(e) = p.cdc.capture() {
            let message = format!("not a regular expression: {e}");
            return Err(at.field_error("pipeline.cdc.tables", message));
        }
        Ok(())
    }

    fn validate_faults(&self, at: &Locator<'_>) -> Result<(), ScenarioError> {
        let hosts = self.host_names();
        let horizon = SimDuration::from_us(self.duration.us.saturating_add(self.drain_timeout.us));
        for (i, fault) in self.faults.iter().enumerate() {
            let located = |e: nrtsim_faults::FaultSpecError| {
                at.field_error(&format!("faults[{i}].{}", e.field), e.message)
            };
            fault.validate().map_err(located)?;
            fault
                .check_hosts(&hosts, self.platform.partitions)
                .map_err(located)?;
            if fault.at >= horizon {
                let message = format!(
                    "the fault starts at {}, after the run ends (duration {} + drain_timeout {})",
                    fault.at, self.duration, self.drain_timeout
                );
                return Err(at.field_error(&format!("faults[{i}].at"), message));
            }
        }
        Ok(())
    }
}

/// A topic as a key of `platform.topic_retention` is written.
fn topic_key(topic: TopicName) -> &'static str {
    match topic {
        TopicName::Schemas => "schemas",
        t => t.name(),
    }
}

/// The first failed `(ok, path, message)` check as a located error.
fn first_failure(at: &Locator<'_>, checks: &[(bool, &str, &str)]) -> Result<(), ScenarioError> {
    match checks.iter().find(|(ok, _, _)| !ok) {
        Some((_, path, message)) => Err(at.field_error(path, *message)),
        None => Ok(()),
    }
}

/// A table key as a dotted path writes it: quoted unless it is a bare key.
fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// Loads each file, for `nrtsim validate`: one result per path, in order.
pub fn validate_files(paths: &[PathBuf]) -> Vec<Result<Scenario, ScenarioError>> {
    paths.iter().map(|p| Scenario::load(p)).collect()
}

#[cfg(test)]
mod tests;
