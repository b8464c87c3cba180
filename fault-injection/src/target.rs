//! Fault targets: a host name, a glob over host names, or a role (the leader or followers of a
//! partition, the coordinator of a group) resolved to hosts when the fault starts.

use crate::control::Control;
use nrtsim_history::TopicName;
use std::fmt;
use std::str::FromStr;

/// The host that coordinates consumer groups, once the simulator has one.
pub const GROUP_COORDINATOR_HOST: &str = "group-coordinator";

/// What a fault hits, as a scenario writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One host by name, such as `broker-1`, `cdc`, `enrich-0` or `controller`.
    Name(String),
    /// Every host whose name matches a pattern with `*` (any run) and `?` (any one character).
    Glob(String),
    /// The current leader of a topic partition: `leader-of:raw/3`.
    LeaderOf {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: u32,
    },
    /// Every current follower of a topic partition: `follower-of:raw/3`.
    FollowerOf {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: u32,
    },
    /// The coordinator of a consumer group: `coordinator-of:GROUP`.
    CoordinatorOf(String),
}

/// Why a target string did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {input:?}: {reason}; a target is a host name (broker-1, cdc, enrich-0, controller), a glob over host names (enrich-*), leader-of:TOPIC/PARTITION, follower-of:TOPIC/PARTITION or coordinator-of:GROUP")]
pub struct TargetError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

fn parse_topic_partition(input: &str, rest: &str) -> Result<(TopicName, u32), TargetError> {
    let err = |reason: String| TargetError {
        input: input.to_string(),
        reason,
    };
    let (topic, partition) = rest
        .split_once('/')
        .ok_or_else(|| err("a role needs TOPIC/PARTITION, such as raw/3".to_string()))?;
    let topic = TopicName::from_name(topic).ok_or_else(|| {
        let known: Vec<&str> = TopicName::ALL
            .iter()
            .chain(&[TopicName::Schemas])
            .map(|t| t.name())
            .collect();
        err(format!(
            "unknown topic {topic:?}; expected one of {}",
            known.join(", ")
        ))
    })?;
    let partition = partition
        .parse()
        .map_err(|_| err(format!("partition {partition:?} is not a whole number")))?;
    Ok((topic, partition))
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| TargetError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some((role, rest)) = s.split_once(':') {
            return match role {
                "leader-of" => {
                    let (topic, partition) = parse_topic_partition(s, rest)?;
                    Ok(Target::LeaderOf { topic, partition })
                }
                "follower-of" => {
                    let (topic, partition) = parse_topic_partition(s, rest)?;
                    Ok(Target::FollowerOf { topic, partition })
                }
                "coordinator-of" if !rest.is_empty() => Ok(Target::CoordinatorOf(rest.to_string())),
                "coordinator-of" => Err(err("coordinator-of needs a group name")),
                _ => Err(err(&format!("unknown role {role:?}"))),
            };
        }
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if let Some(bad) = s.chars().find(|&c| !name_char(c) && c != '*' && c != '?') {
            return Err(err(&format!(
                "{bad:?} cannot appear in a host name or glob"
            )));
        }
        if s.contains(['*', '?']) {
            Ok(Target::Glob(s.to_string()))
        } else {
            Ok(Target::Name(s.to_string()))
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Name(n) | Target::Glob(n) => f.write_str(n),
            Target::LeaderOf { topic, partition } => {
                write!(f, "leader-of:{}/{partition}", topic.name())
            }
            Target::FollowerOf { topic, partition } => {
                write!(f, "follower-of:{}/{partition}", topic.name())
            }
            Target::CoordinatorOf(group) => write!(f, "coordinator-of:{group}"),
        }
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters and `?` any one.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point for the last `*`: linear in practice.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn is_broker(host: &str) -> bool {
    host.strip_prefix("broker-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the host's work has a modelled cost: a broker, the CDC connector, a task or a
/// task's standby.
pub(crate) fn does_work(host: &str) -> bool {
    is_broker(host)
        || host == "cdc"
        || ["standardize-", "enrich-", "lake-", "fraud-", "spend-"]
            .iter()
            .any(|job| host.starts_with(job))
}

impl Target {
    /// The hosts this target stands for right now, or why it stands for none.
    pub fn resolve<C: Control + ?Sized>(&self, ctl: &C) -> Result<Vec<String>, String> {
        match self {
            Target::Name(name) => {
                if ctl.host_names().iter().any(|h| h == name) {
                    Ok(vec![name.clone()])
                } else {
                    Err(format!("{name} is not a host"))
                }
            }
            Target::Glob(pattern) => {
                let hosts: Vec<String> = ctl
                    .host_names()
                    .into_iter()
                    .filter(|h| glob_matches(pattern, h))
                    .collect();
                if hosts.is_empty() {
                    Err(format!("{pattern} matches no host"))
                } else {
                    Ok(hosts)
                }
            }
            Target::LeaderOf { topic, partition } => ctl
                .leader_of(*topic, *partition)
                .map(|h| vec![h])
                .ok_or_else(|| format!("{self} has no leader")),
            Target::FollowerOf { topic, partition } => {
                let followers = ctl.followers_of(*topic, *partition);
                if followers.is_empty() {
                    Err(format!("{self} has no followers"))
                } else {
                    Ok(followers)
                }
            }
            Target::CoordinatorOf(_) => {
                if ctl.host_names().iter().any(|h| h == GROUP_COORDINATOR_HOST) {
                    Ok(vec![GROUP_COORDINATOR_HOST.to_string()])
                } else {
                    Err(format!(
                        "{self}: the simulation has no coordinator hosts yet"
                    ))
                }
            }
        }
    }

    /// Checks, before any run, that the target can name hosts of a platform with these `hosts`
    /// and `partitions` per topic. Roles are checked only for their partition, since who holds
    /// them is known only during the run.
    pub fn check_static(&self, hosts: &[String], partitions: u32) -> Result<(), String> {
        match self {
            Target::Name(name) => {
                if hosts.iter().any(|h| h == name) {
                    Ok(())
                } else {
                    Err(format!(
                        "no host is called {name:?}; the hosts are {}",
                        hosts.join(", ")
                    ))
                }
            }
            Target::Glob(pattern) => {
                if hosts.iter().any(|h| glob_matches(pattern, h)) {
                    Ok(())
                } else {
                    Err(format!(
                        "{pattern:?} matches no host; the hosts are {}",
                        hosts.join(", ")
                    ))
                }
            }
            Target::LeaderOf {
                topic: TopicName::Schemas,
                partition,
            }
            | Target::FollowerOf {
                topic: TopicName::Schemas,
                partition,
            } => {
                if !hosts.iter().any(|h| h == "schema-registry") {
                    Err(format!(
                        "{self}: the _schemas topic exists only with [pipeline.schema_registry] \
                         enabled"
                    ))
                } else if *partition != 0 {
                    Err(format!("{self}: the _schemas topic has one partition, 0"))
                } else {
                    Ok(())
                }
            }
            Target::LeaderOf { partition, .. } | Target::FollowerOf { partition, .. } => {
                if *partition < partitions {
                    Ok(())
                } else {
                    Err(format!(
                        "{self} names partition {partition}, but topics have {partitions} \
                         partitions (0..{partitions})"
                    ))
                }
            }
            Target::CoordinatorOf(_) => {
                if hosts.iter().any(|h| h == GROUP_COORDINATOR_HOST) {
                    Ok(())
                } else {
                    Err(format!(
                        "{self}: the simulation has no coordinator hosts yet"
                    ))
                }
            }
        }
    }

    /// Whether every host this target can stand for is a broker (`broker-N`).
    pub fn only_brokers(&self, hosts: &[String]) -> bool {
        match self {
            Target::Name(name) => is_broker(name),
            Target::Glob(pattern) => hosts
                .iter()
                .filter(|h| glob_matches(pattern, h))
                .all(|h| is_broker(h)),
            Target::LeaderOf { .. } | Target::FollowerOf { .. } => true,
            Target::CoordinatorOf(_) => false,
        }
    }

    /// Whether every host this target can stand for does work with a modelled cost: a broker,
    /// the CDC connector or a task (a `slow` fault slows nothing else).
    pub fn only_working_hosts(&self, hosts: &[String]) -> bool {
        match self {
            Target::Name(name) => does_work(name),
            Target::Glob(pattern) => hosts
                .iter()
                .filter(|h| glob_matches(pattern, h))
                .all(|h| does_work(h)),
            Target::LeaderOf { .. } | Target::FollowerOf { .. } => true,
            Target::CoordinatorOf(_) => false,
        }
    }

    /// Whether the target is a role or glob, whose hosts are worth spelling out in a report.
    pub fn is_indirect(&self) -> bool {
        !matches!(self, Target::Name(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "broker-1".parse::<Target>().unwrap(),
            Target::Name("broker-1".into())
        );
        assert_eq!(
            "enrich-*".parse::<Target>().unwrap(),
            Target::Glob("enrich-*".into())
        );
        assert_eq!(
            "leader-of:raw/3".parse::<Target>().unwrap(),
            Target::LeaderOf {
                topic: TopicName::Raw,
                partition: 3
            }
        );
        assert_eq!(
            "follower-of:enriched/0".parse::<Target>().unwrap(),
            Target::FollowerOf {
                topic: TopicName::Enriched,
                partition: 0
            }
        );
        assert_eq!(
            "coordinator-of:risk".parse::<Target>().unwrap(),
            Target::CoordinatorOf("risk".into())
        );
        for text in [
            "broker-1",
            "enrich-*",
            "leader-of:raw/3",
            "coordinator-of:risk",
        ] {
            assert_eq!(text.parse::<Target>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn parse_errors_explain_the_accepted_forms() {
        for bad in [
            "leader-of:raw",
            "leader-of:ledger/1",
            "leader-of:raw/x",
            "boss-of:x",
            "",
            "a b",
        ] {
            let err = bad.parse::<Target>().unwrap_err().to_string();
            assert!(err.contains("leader-of:TOPIC/PARTITION"), "{bad:?}: {err}");
        }
        let err = "leader-of:ledger/1"
            .parse::<Target>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ledger") && err.contains("standard") && err.contains("_schemas"),
            "{err}"
        );
    }

    #[test]
    fn the_schemas_topic_is_a_target_only_with_a_registry() {
        let hosts = |registry: bool| -> Vec<String> {
            let mut h = vec!["broker-0".to_string(), "controller".to_string()];
            if registry {
                h.push("schema-registry".to_string());
            }
            h
        };
        let t: Target = "leader-of:_schemas/0".parse().unwrap();
        assert_eq!(t.check_static(&hosts(true), 6), Ok(()));
        let err = t.check_static(&hosts(false), 6).unwrap_err();
        assert!(err.contains("schema_registry"), "{err}");
        let t: Target = "follower-of:_schemas/2".parse().unwrap();
        let err = t.check_static(&hosts(true), 6).unwrap_err();
        assert!(err.contains("one partition"), "{err}");
    }

    #[test]
    fn globs_match_stars_and_question_marks() {
        assert!(glob_matches("enrich-*", "enrich-0"));
        assert!(glob_matches("enrich-*", "enrich-"));
        assert!(!glob_matches("enrich-*", "standardize-0"));
        assert!(glob_matches("broker-?", "broker-2"));
        assert!(!glob_matches("broker-?", "broker-12"));
        assert!(glob_matches("*-0", "lake-0"));
        assert!(glob_matches("*", "controller"));
        assert!(glob_matches("b*r*-1", "broker-1"));
        assert!(!glob_matches("b*r*-1", "broker-2"));
    }

    #[test]
    fn static_checks_against_a_host_list() {
        let hosts: Vec<String> = ["broker-0", "cdc", "enrich-0"].map(String::from).to_vec();
        assert!(Target::Name("cdc".into()).check_static(&hosts, 1).is_ok());
        assert!(Target::Name("broker-9".into())
            .check_static(&hosts, 1)
            .is_err());
        assert!(Target::Glob("lake-*".into())
            .check_static(&hosts, 1)
            .is_err());
        let role = Target::LeaderOf {
            topic: TopicName::Raw,
            partition: 1,
        };
        assert!(role.check_static(&hosts, 1).is_err());
        assert!(role.check_static(&hosts, 2).is_ok());
        assert!(Target::CoordinatorOf("g".into())
            .check_static(&hosts, 1)
            .is_err());
    }
}
