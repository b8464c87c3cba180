//! One `[[faults]]` entry of a scenario: what goes wrong, to whom, when and for how long.

use crate::target::Target;
use nrtsim_workloads::SimDuration;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The largest slowdown a `slow` fault takes: past it a run stands still rather than slows.
pub const MAX_SLOWDOWN: f64 = 1000.0;

/// The kinds of fault a scenario can schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A host dies and, after `duration`, restarts.
    Crash,
    /// Like `crash`, but the target must be a broker (a name, a glob over brokers, or a role).
    BrokerCrash,
    /// The host loses power: a broker also loses what it had not flushed to disk (brokers
    /// acknowledge before they fsync); it restarts after `duration`.
    PowerLoss,
    /// No traffic between two sides until healed.
    Partition,
    /// Traffic from `from` to `to` is dropped; the other direction still flows.
    PartitionOneway,
    /// Traffic between two sides is held, then released in one burst.
    Hold,
    /// The latency of the links between two sides changes for a while.
    Latency,
    /// Brokers append a `rate` share of produce batches but answer them with a retriable error
    /// (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND), so producers retry what already landed.
    ProduceErrors,
    /// The job manager gives up on a stream task and starts a second instance of it on a
    /// standby host, while the first, unaware, may still be running: a zombie once it is
    /// reachable again. Permanent: the standby keeps the task.
    Failover,
    /// The hosts work `factor` times slower (a noisy neighbour, a throttled CPU, a slow disk):
    /// a task's per-record and commit costs, a broker's append cost. Their network is as fast
    /// as before.
    Slow,
}

impl FaultKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Crash,
        FaultKind::BrokerCrash,
        FaultKind::PowerLoss,
        FaultKind::Partition,
        FaultKind::PartitionOneway,
        FaultKind::Hold,
        FaultKind::Latency,
        FaultKind::ProduceErrors,
        FaultKind::Failover,
        FaultKind::Slow,
    ];

    /// The kind as a scenario spells it, such as `broker-crash`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::BrokerCrash => "broker-crash",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneway => "partition-oneway",
            FaultKind::Hold => "hold",
            FaultKind::Latency => "latency",
            FaultKind::ProduceErrors => "produce-errors",
            FaultKind::Failover => "failover",
            FaultKind::Slow => "slow",
        }
    }

    /// Which of the optional fields this kind needs (all of them required).
    fn required_fields(self) -> &'static [&'static str] {
        match self {
            FaultKind::Crash
            | FaultKind::BrokerCrash
            | FaultKind::PowerLoss
            | FaultKind::Failover => &["target"],
            FaultKind::Partition | FaultKind::Hold => &["between"],
            FaultKind::Latency => &["between", "latency"],
            FaultKind::PartitionOneway => &["from", "to"],
            FaultKind::ProduceErrors => &["target", "rate"],
            FaultKind::Slow => &["target", "factor"],
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown fault kind {s:?}; expected one of {}",
                    known.join(", ")
                )
            })
    }
}

/// A fault's link latency: each message is delayed by a value drawn from `min..=max`.
/// Written `"1ms..5ms"`, or `"50ms"` for a fixed latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultLatency {
    /// The least one-way latency.
    pub min: SimDuration,
    /// The most one-way latency.
    pub max: SimDuration,
}

impl FromStr for FaultLatency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once("..").unwrap_or((s, s));
        let min: SimDuration = a.parse().map_err(|e| format!("{e}"))?;
        let max: SimDuration = b.parse().map_err(|e| format!("{e}"))?;
        if min > max {
            return Err(format!(
                "latency range {s:?} has its minimum above its maximum"
            ));
        }
        Ok(Self { min, max })
    }
}

impl fmt::Display for FaultLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

impl Serialize for FaultLatency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FaultLatency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// One side of a partition, hold or latency fault: one target, or a list of targets.
/// A scenario writes `"cdc"` or `["broker-0", "leader-of:raw/3"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side(pub Vec<String>);

impl Side {
    /// A side of the given target strings.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(targets: I) -> Self {
        Side(targets.into_iter().map(Into::into).collect())
    }
}

impl Serialize for Side {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Side {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SideVisitor;

        impl<'de> Visitor<'de> for SideVisitor {
            type Value = Side;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a target string or a list of target strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Side, E> {
                Ok(Side(vec![v.to_string()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Side, A::Error> {
                let mut targets = Vec::new();
                while let Some(t) = seq.next_element::<String>()? {
                    targets.push(t);
                }
                Ok(Side(targets))
            }
        }

        d.deserialize_any(SideVisitor)
    }
}

/// One `[[faults]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// When the fault starts, from the start of the run.
    pub at: SimDuration,
    /// What kind of fault.
    pub kind: FaultKind,
    /// The host or hosts a `crash` or `broker-crash` hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The two sides of a `partition`, `hold` or `latency` fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<[Side; 2]>,
    /// The sending side of a `partition-oneway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Side>,
    /// The receiving side of a `partition-oneway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Side>,
    /// How long the fault lasts; absent, it is permanent (a crashed host stays down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<SimDuration>,
    /// The link latency while a `latency` fault lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<FaultLatency>,
    /// The share of produce batches a `produce-errors` fault answers with an error (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// How many times longer a `slow` fault's hosts take over their work (above 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
}

/// Why a fault entry is not valid: the field at fault (relative to the entry) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FaultSpecError {
    /// The field within the entry, such as `target` or `between[1][0]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FaultSpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl FaultSpec {
    /// A fault of `kind` starting at `at` with no other fields set.
    pub fn new(at: SimDuration, kind: FaultKind) -> Self {
        Self {
            at,
            kind,
            target: None,
            between: None,
            from: None,
            to: None,
            duration: None,
            latency: None,
            rate: None,
            factor: None,
        }
    }

    /// The end of the fault, if it has one.
    pub fn end(&self) -> Option<SimDuration> {
        self.duration
            .map(|d| SimDuration::from_us(self.at.us.saturating_add(d.us)))
    }

    /// Which optional fields are present, by name.
    fn present_fields(&self) -> Vec<&'static str> {
        let mut present = Vec::new();
        let flags = [
            ("target", self.target.is_some()),
            ("between", self.between.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("latency", self.latency.is_some()),
            ("rate", self.rate.is_some()),
            ("factor", self.factor.is_some()),
        ];
        for (name, is_set) in flags {
            if is_set {
                present.push(name);
            }
        }
        present
    }

    /// Checks that the entry has the fields its kind needs, no fields its kind does not use,
    /// a non-zero duration if any, and target strings that parse.
    pub fn validate(&self) -> Result<(), FaultSpecError> {
        let required = self.kind.required_fields();
        let present = self.present_fields();
        for field in required {
            if !present.contains(field) {
                return Err(FaultSpecError::new(
                    *field,
                    format!("a `{}` fault needs `{field}`", self.kind),
                ));
            }
        }
        if let Some(extra) = present.iter().find(|f| !required.contains(f)) {
            return Err(FaultSpecError::new(
                *extra,
                format!(
                    "a `{}` fault does not use `{extra}`; it takes {}",
                    self.kind,
                    describe_fields(required)
                ),
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(FaultSpecError::new(
                    "rate",
                    format!("a rate is a share above 0 and at most 1, not {rate}"),
                ));
            }
        }
        if let Some(factor) = self.factor {
            if !(factor > 1.0 && factor <= MAX_SLOWDOWN) {
                return Err(FaultSpecError::new(
                    "factor",
                    format!(
                        "a slowdown factor is above 1 and at most {MAX_SLOWDOWN}, not {factor}"
                    ),
                ));
            }
        }
        if self.kind == FaultKind::Failover && self.duration.is_some() {
            return Err(FaultSpecError::new(
                "duration",
                "a `failover` fault is permanent (the standby keeps the task); leave `duration` out",
            ));
        }
        if self.duration == Some(SimDuration::from_us(0)) {
            return Err(FaultSpecError::new(
                "duration",
                "a fault's duration must be above zero; leave it out for a permanent fault",
            ));
        }
        for (field, text) in self.target_strings() {
            text.parse::<Target>()
                .map_err(|e| FaultSpecError::new(field, e.to_string()))?;
        }
        for (field, side) in self.sides() {
            if side.0.is_empty() {
                return Err(FaultSpecError::new(
                    field,
                    "a side must name at least one target",
                ));
            }
        }
        Ok(())
    }

    /// Checks, after [`FaultSpec::validate`], that every target names hosts of a platform with
    /// these `hosts` and `partitions` per topic: names exist, globs match, role partitions exist,
    /// and a `broker-crash` hits only brokers.
    pub fn check_hosts(&self, hosts: &[String], partitions: u32) -> Result<(), FaultSpecError> {
        for (field, text) in self.target_strings() {
            let target: Target = text.parse().map_err(|e: crate::target::TargetError| {
                FaultSpecError::new(&field, e.to_string())
            })?;
            target
                .check_static(hosts, partitions)
                .map_err(|m| FaultSpecError::new(&field, m))?;
            if self.kind == FaultKind::BrokerCrash && !target.only_brokers(hosts) {
                return Err(FaultSpecError::new(
                    &field,
                    format!(
                        "a `broker-crash` must target brokers: a broker-N name, a glob that \
                         matches only brokers, leader-of:TOPIC/P or follower-of:TOPIC/P; got {text:?}"
                    ),
                ));
            }
            if self.kind == FaultKind::Slow && !target.only_working_hosts(hosts) {
                return Err(FaultSpecError::new(
                    &field,
                    format!(
                        "a `slow` fault targets hosts whose work has a cost: brokers, `cdc`, \
                         and the tasks (standardize-N, enrich-N, lake-N, fraud-N, spend-N); \
                         the controller and the coordinators have none; got {text:?}"
                    ),
                ));
            }
            // One task by its name: its standby host is registered under that name.
            let stream_task = matches!(&target, Target::Name(t)
                if ["standardize-", "enrich-"].iter().any(|job| t
                    .strip_prefix(job)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))));
            if self.kind == FaultKind::Failover && !stream_task {
                return Err(FaultSpecError::new(
                    &field,
                    format!(
                        "a `failover` targets one stream task by name (standardize-N or \
                         enrich-N); got {text:?}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every target string in the entry, each with its field path within the entry.
    pub fn target_strings(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(t) = &self.target {
            out.push(("target".to_string(), t.as_str()));
        }
        for (field, side) in self.sides() {
            for (i, t) in side.0.iter().enumerate() {
                out.push((format!("{field}[{i}]"), t.as_str()));
            }
        }
        out
    }

    /// The sides present, each with its field path within the entry.
    fn sides(&self) -> Vec<(String, &Side)> {
        let mut out = Vec::new();
        if let Some([a, b]) = &self.between {
            out.push(("between[0]".to_string(), a));
            out.push(("between[1]".to_string(), b));
        }
        if let Some(s) = &self.from {
            out.push(("from".to_string(), s));
        }
        if let Some(s) = &self.to {
            out.push(("to".to_string(), s));
        }
        out
    }
}

fn describe_fields(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    let mut text = quoted.join(", ");
    text.push_str(", `at`, `kind` and an optional `duration`");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> SimDuration {
        SimDuration::from_ms(n)
    }

    #[test]
    fn kind_parses_and_lists_known_kinds_on_error() {
        assert_eq!(
            "partition-oneway".parse::<FaultKind>().unwrap(),
            FaultKind::PartitionOneway
        );
        let err = "meteor".parse::<FaultKind>().unwrap_err();
        assert!(
            err.contains("broker-crash") && err.contains("latency"),
            "{err}"
        );
    }

    #[test]
    fn latency_parses_ranges_and_single_values() {
        let l: FaultLatency = "1ms..5ms".parse().unwrap();
        assert_eq!((l.min.ms(), l.max.ms()), (1, 5));
        let l: FaultLatency = "50ms".parse().unwrap();
        assert_eq!((l.min.ms(), l.max.ms()), (50, 50));
        assert_eq!(l.to_string(), "50ms");
        assert!("5ms..1ms".parse::<FaultLatency>().is_err());
        assert!("fast".parse::<FaultLatency>().is_err());
    }

    #[test]
    fn crash_needs_a_target() {
        let spec = FaultSpec::new(ms(10), FaultKind::Crash);
        assert_eq!(spec.validate().unwrap_err().field, "target");
    }

    #[test]
    fn fields_a_kind_does_not_use_are_rejected() {
        let mut spec = FaultSpec::new(ms(10), FaultKind::Crash);
        spec.target = Some("cdc".into());
        spec.latency = Some("5ms".parse().unwrap());
        let err = spec.validate().unwrap_err();
        assert_eq!(err.field, "latency");
        assert!(err.message.contains("does not use"), "{err}");
    }

    #[test]
    fn latency_needs_between_and_latency() {
        let mut spec = FaultSpec::new(ms(10), FaultKind::Latency);
        spec.between = Some([Side::new(["cdc"]), Side::new(["broker-*"])]);
        assert_eq!(spec.validate().unwrap_err().field, "latency");
        spec.latency = Some("5ms".parse().unwrap());
        spec.validate().unwrap();
    }

    #[test]
    fn oneway_needs_from_and_to() {
        let mut spec = FaultSpec::new(ms(10), FaultKind::PartitionOneway);
        spec.from = Some(Side::new(["cdc"]));
        assert_eq!(spec.validate().unwrap_err().field, "to");
    }

    #[test]
    fn bad_targets_and_empty_sides_name_their_field() {
        let mut spec = FaultSpec::new(ms(10), FaultKind::Partition);
        spec.between = Some([Side::new(["cdc"]), Side::new(["broker-0", "leader-of:raw"])]);
        assert_eq!(spec.validate().unwrap_err().field, "between[1][1]");
        spec.between = Some([Side(vec![]), Side::new(["cdc"])]);
        assert_eq!(spec.validate().unwrap_err().field, "between[0]");
    }

    #[test]
    fn zero_duration_is_rejected() {
        let mut spec = FaultSpec::new(ms(10), FaultKind::Crash);
        spec.target = Some("cdc".into());
        spec.duration = Some(ms(0));
        assert_eq!(spec.validate().unwrap_err().field, "duration");
    }

    #[test]
    fn broker_crash_must_hit_brokers() {
        let hosts: Vec<String> = ["broker-0", "broker-1", "cdc"].map(String::from).to_vec();
        let mut spec = FaultSpec::new(ms(10), FaultKind::BrokerCrash);
        spec.target = Some("cdc".into());
        assert_eq!(spec.check_hosts(&hosts, 3).unwrap_err().field, "target");
        spec.target = Some("broker-*".into());
        spec.check_hosts(&hosts, 3).unwrap();
        spec.target = Some("leader-of:raw/2".into());
        spec.check_hosts(&hosts, 3).unwrap();
        spec.target = Some("leader-of:raw/3".into());
        assert!(spec.check_hosts(&hosts, 3).is_err());
    }
}
