//! Scenario loading: the DESIGN example, defaults, and where each kind of error points.

use super::*;
use nrtsim_faults::FaultKind;
use nrtsim_pipeline::{Acks, Delivery};

const DESIGN_EXAMPLE: &str = r#"name = "card-broker-crash"
description = "Card payments at 2k/s; the leader of raw/3 crashes for 30s"
seed = 42
duration = "5m"          # workload runs this long in simulated time
drain_timeout = "10m"    # then the pipeline must drain within this

[workload]
kind = "card"            # card | order | mixed
rate_per_s = 2000
profile = "steady"       # steady | diurnal | burst
accounts = 100000
merchants = 5000
key_skew = 1.1           # Zipf exponent over accounts
unknown_merchant_ratio = 0.01   # misses in the reference store -> redo
poison_ratio = 0.0001           # malformed records -> critical

[platform]
brokers = 3
partitions = 12
replication_factor = 3
min_insync_replicas = 2
unclean_leader_election = false

[pipeline]
delivery = "exactly-once"   # at-most-once | at-least-once | exactly-once
checkpoint_interval = "10s"
producer = { acks = "all", idempotence = true, max_in_flight = 5, retries = 10, linger = "5ms" }
consumer = { isolation = "read_committed" }
parallelism = { standardize = 4, enrich = 4, lake = 2 }
enrich = { store_refresh = "1h", max_redo_attempts = 3 }
lake = { mode = "upsert", layout = "merge-on-read", compaction_interval = "5m" }

[network]
latency = "1ms..5ms"

[[faults]]
at = "1m"
kind = "broker-crash"
target = "leader-of:raw/3"
duration = "30s"

[slo]
"bus.p99" = "1s"       # source commit -> visible in the enriched topic
"lake.p99" = "90s"     # source commit -> visible in a lake snapshot

[expect]               # optional: what this scenario is meant to show (canaries, defect catalogue)
exit_code = 1
anomalies = ["lost"]   # each listed anomaly must be > 0
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(text, "scenarios/x.toml")
}

fn parse_err(text: &str) -> ScenarioError {
    match parse(text) {
        Ok(s) => panic!("expected an error, parsed {s:?}"),
        Err(e) => e,
    }
}

/// Asserts an error's line, column and field, and that its message mentions `needle`.
fn assert_err(err: &ScenarioError, line: usize, column: usize, field: &str, needle: &str) {
    assert_eq!(
        (err.line, err.column, err.field.as_str()),
        (line, column, field),
        "{err}"
    );
    assert!(err.message.contains(needle), "{needle:?} not in {err}");
    assert_eq!(err.file, "scenarios/x.toml");
}

#[test]
fn the_design_example_parses_with_its_values() {
    let s = parse(DESIGN_EXAMPLE).unwrap();
    assert_eq!(s.name, "card-broker-crash");
    assert_eq!(s.seed, 42);
    assert_eq!(s.duration.ms(), 300_000);
    assert_eq!(s.drain_timeout.ms(), 600_000);
    assert_eq!(s.workload.rate_per_s, 2000);
    assert_eq!(s.workload.accounts, 100_000);
    assert_eq!(s.workload.poison_ratio, 0.0001);
    assert_eq!(s.platform.partitions, 12);
    assert_eq!(s.pipeline.delivery, Delivery::ExactlyOnce);
    assert_eq!(s.pipeline.producer.acks, Acks::All);
    assert_eq!(s.pipeline.producer.linger.ms(), 5);
    // Fields an inline table leaves out keep their defaults.
    assert_eq!(s.pipeline.producer.batch_records, 500);
    assert_eq!(s.pipeline.parallelism.lake, 2);
    assert_eq!(s.pipeline.lake.compaction_interval.ms(), 300_000);
    assert_eq!(s.network.latency.max.ms(), 5);
    assert_eq!(s.faults.len(), 1);
    assert_eq!(s.faults[0].kind, FaultKind::BrokerCrash);
    assert_eq!(s.faults[0].target.as_deref(), Some("leader-of:raw/3"));
    assert_eq!(s.faults[0].duration.map(|d| d.ms()), Some(30_000));
    assert_eq!(s.slo["lake.p99"].ms(), 90_000);
    assert_eq!(s.slos().len(), 2);
    let expect = s.expect.unwrap();
    assert_eq!(expect.exit_code, Some(1));
    assert_eq!(expect.anomalies, ["lost"]);
}

#[test]
fn absent_sections_take_their_defaults() {
    let s = parse("name = \"minimal\"\n").unwrap();
    assert_eq!(s.description, "");
    assert_eq!(s.seed, 1);
    assert_eq!(s.duration.ms(), 60_000);
    assert_eq!(s.drain_timeout.ms(), 300_000);
    assert_eq!(s.workload, WorkloadConfig::default());
    assert_eq!(s.platform, PlatformConfig::default());
    assert_eq!(s.pipeline, PipelineConfig::default());
    assert_eq!(s.costs, CostConfig::default());
    assert_eq!(s.network, NetworkConfig::default());
    assert!(s.faults.is_empty() && s.slo.is_empty() && s.expect.is_none());
}

#[test]
fn host_names_follow_the_platform() {
    let s = parse("name = \"h\"\n[platform]\nbrokers = 2\nreplication_factor = 2\n").unwrap();
    assert_eq!(
        s.host_names(),
        [
            "broker-0",
            "broker-1",
            "controller",
            "txn-coordinator",
            "cdc",
            "standardize-0",
            "standardize-1",
            "enrich-0",
            "enrich-1",
            "lake-0"
        ]
    );
}

#[test]
fn a_missing_name_is_named() {
    let err = parse_err("seed = 3\n");
    assert_eq!(err.field, "name");
    assert!(err.message.contains("missing field `name`"), "{err}");
}

#[test]
fn unknown_top_level_field() {
    let err = parse_err("name = \"x\"\nspeed = 3\n");
    assert_err(&err, 2, 1, "speed", "unknown field `speed`");
    assert!(
        err.to_string()
            .starts_with("scenarios/x.toml:2:1: field `speed`: unknown field"),
        "{err}"
    );
}

#[test]
fn unknown_field_in_an_inline_producer_table() {
    let text = "name = \"x\"\n[pipeline]\nproducer = { acks = \"1\", lingr = \"5ms\" }\n";
    assert_err(
        &parse_err(text),
        3,
        26,
        "pipeline.producer.lingr",
        "unknown field `lingr`",
    );
}

#[test]
fn unknown_field_in_a_producer_table() {
    let text = "name = \"x\"\n[pipeline.producer]\nacks = \"1\"\n  bogus = true\n";
    assert_err(
        &parse_err(text),
        4,
        3,
        "pipeline.producer.bogus",
        "unknown field `bogus`",
    );
}

#[test]
fn unknown_field_in_a_fault() {
    let text = "name = \"x\"\n\n[[faults]]\nat = \"1s\"\nkind = \"crash\"\ntarget = \"cdc\"\n\n\
                [[faults]]\nat = \"2s\"\nkind = \"crash\"\ntarget = \"cdc\"\nwhen = \"now\"\n";
    assert_err(
        &parse_err(text),
        12,
        1,
        "faults[1].when",
        "unknown field `when`",
    );
}

#[test]
fn bad_duration() {
    let err = parse_err("name = \"x\"\nduration = \"5 minutes\"\n");
    assert_err(&err, 2, 12, "duration", "invalid duration");
    let text = "name = \"x\"\n[pipeline]\nenrich = { store_refresh = \"1d\" }\n";
    assert_err(
        &parse_err(text),
        3,
        28,
        "pipeline.enrich.store_refresh",
        "invalid duration",
    );
}

#[test]
fn bad_acks_variant() {
    let text = "name = \"x\"\n[pipeline]\nproducer = { acks = \"2\" }\n";
    let err = parse_err(text);
    assert_err(&err, 3, 21, "pipeline.producer.acks", "unknown variant `2`");
    assert!(err.message.contains("`all`"), "{err}");
}

#[test]
fn unquoted_enum_values_get_a_hint() {
    let err = parse_err("name = \"x\"\n[pipeline]\nproducer = { acks = 1 }\n");
    assert_err(&err, 3, 21, "pipeline.producer.acks", "written in quotes");
}

#[test]
fn wrong_type() {
    let err = parse_err("name = \"x\"\n[workload]\nrate_per_s = \"fast\"\n");
    assert_err(&err, 3, 14, "workload.rate_per_s", "invalid type");
}

#[test]
fn syntax_errors_are_located() {
    let err = parse_err("name = \"x\"\n[pipeline]\ndelivery = exactly-once\n");
    assert_eq!(
        (err.line, err.field.as_str()),
        (3, "pipeline.delivery"),
        "{err}"
    );
    assert!(err.column >= 12, "{err}");
}

#[test]
fn replication_factor_above_brokers() {
    let text = "name = \"x\"\n[platform]\nbrokers = 2\nreplication_factor = 3\n";
    assert_err(
        &parse_err(text),
        4,
        22,
        "platform.replication_factor",
        "number of brokers (2)",
    );
    // Left at its default (3), it is reported at the [platform] table.
    let text = "name = \"x\"\n[platform]\nbrokers = 1\nmin_insync_replicas = 1\n";
    assert_err(
        &parse_err(text),
        2,
        1,
        "platform.replication_factor",
        "number of brokers (1)",
    );
}

#[test]
fn other_ranges() {
    let err = parse_err("name = \"\"\n");
    assert_err(&err, 1, 8, "name", "non-empty");
    let err = parse_err("name = \"x\"\nduration = \"0s\"\n");
    assert_err(&err, 2, 12, "duration", "more than zero");
    let err = parse_err("name = \"x\"\n[workload]\npoison_ratio = 1.5\n");
    assert_err(&err, 3, 16, "workload.poison_ratio", "between 0 and 1");
    let err = parse_err("name = \"x\"\n[workload]\nkey_skew = -1.0\n");
    assert_err(&err, 3, 12, "workload.key_skew", "0 or more");
    let err = parse_err("name = \"x\"\n[pipeline]\nparallelism = { enrich = 0 }\n");
    assert_err(&err, 3, 26, "pipeline.parallelism.enrich", "at least 1");
    let err = parse_err("name = \"x\"\n[expect]\nanomalies = [\"lost\", \"gone\"]\n");
    assert_err(&err, 3, 22, "expect.anomalies[1]", "unknown anomaly");
}

#[test]
fn retention_settings_are_checked() {
    let ok = "name = \"x\"\n[platform]\nretention = \"1h\"\ntopic_retention = { raw = \"30s\" }\n\
              [pipeline]\nconsumer = { auto_offset_reset = \"earliest\" }\n";
    let s = parse(ok).unwrap_or_else(|e| panic!("{e}"));
    let secs = |t| s.platform.retention_of(t).map(|d| d.ms() / 1000);
    assert_eq!(secs(TopicName::Raw), Some(30));
    assert_eq!(secs(TopicName::Enriched), Some(3600));
    assert_eq!(secs(TopicName::Schemas), None);
    let err = parse_err("name = \"x\"\n[platform]\ntopic_retention = { schemas = \"1h\" }\n");
    assert_err(
        &err,
        3,
        31,
        "platform.topic_retention.schemas",
        "never expires",
    );
    let err = parse_err("name = \"x\"\n[platform]\ntopic_retention = { enriched = \"0s\" }\n");
    assert_err(
        &err,
        3,
        32,
        "platform.topic_retention.enriched",
        "at least 1ms",
    );
    let err = parse_err("name = \"x\"\n[platform]\nretention_check_interval = \"0s\"\n");
    assert_err(
        &err,
        3,
        28,
        "platform.retention_check_interval",
        "at least 1ms",
    );
    let err = parse_err("name = \"x\"\n[platform]\ntopic_retention = { lake = \"1h\" }\n");
    assert!(err.field.starts_with("platform.topic_retention"), "{err}");
    let err =
        parse_err("name = \"x\"\n[pipeline]\nconsumer = { auto_offset_reset = \"smallest\" }\n");
    assert_eq!(err.field, "pipeline.consumer.auto_offset_reset", "{err}");
}

#[test]
fn consumer_group_settings_are_checked() {
    // The default delivery is exactly-once, whose lake sink keeps positions in checkpoints.
    let err = parse_err("name = \"x\"\n[pipeline]\nconsumer = { group = true }\n");
    assert_err(
        &err,
        3,
        22,
        "pipeline.consumer.group",
        "two-phase-commit sink",
    );
    let ok =
        "name = \"x\"\n[pipeline]\ndelivery = \"at-least-once\"\nconsumer = { group = true }\n";
    let s = parse(ok).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.pipeline.group_lake_sink());
    assert!(s.host_names().contains(&"group-coordinator".to_string()));
    let err = parse_err(
        "name = \"x\"\n[pipeline]\ndelivery = \"at-least-once\"\n\
         consumer = { group = true, session_timeout = \"3s\", heartbeat_interval = \"3s\" }\n",
    );
    assert_eq!(err.field, "pipeline.consumer.heartbeat_interval", "{err}");
    assert!(err.message.contains("below session_timeout"), "{err}");
}

#[test]
fn unknown_fault_kind() {
    let text = "name = \"x\"\n[[faults]]\nat = \"1s\"\nkind = \"meteor\"\n";
    let err = parse_err(text);
    assert_err(&err, 4, 8, "faults[0].kind", "unknown variant `meteor`");
    assert!(err.message.contains("`partition-oneway`"), "{err}");
}

#[test]
fn fault_target_naming_a_nonexistent_host() {
    let text = "name = \"x\"\n[[faults]]\nat = \"1s\"\nkind = \"crash\"\ntarget = \"broker-3\"\n";
    assert_err(
        &parse_err(text),
        5,
        10,
        "faults[0].target",
        "no host is called \"broker-3\"",
    );
    let text = "name = \"x\"\n[[faults]]\nat = \"1s\"\nkind = \"hold\"\n\
                between = [\"cdc\", [\"broker-0\", \"lake-*\", \"lake-7*\"]]\nduration = \"1s\"\n";
    assert_err(
        &parse_err(text),
        5,
        42,
        "faults[0].between[1][2]",
        "matches no host",
    );
    let text =
        "name = \"x\"\n[[faults]]\nat = \"1s\"\nkind = \"crash\"\ntarget = \"follower-of:raw/6\"\n";
    assert_err(&parse_err(text), 5, 10, "faults[0].target", "partition 6");
}

#[test]
fn fault_fields_by_kind() {
    let text = "name = \"x\"\n[[faults]]\nat = \"1s\"\nkind = \"crash\"\n";
    assert_err(&parse_err(text), 2, 1, "faults[0].target", "needs `target`");
    let text = "name = \"x\"\n[[faults]]\nat = \"1s\"\nkind = \"crash\"\ntarget = \"cdc\"\n\
                latency = \"5ms\"\n";
    assert_err(
        &parse_err(text),
        6,
        11,
        "faults[0].latency",
        "does not use `latency`",
    );
    let text = "name = \"x\"\n[[faults]]\nkind = \"crash\"\ntarget = \"cdc\"\n";
    assert_err(&parse_err(text), 2, 1, "faults[0].at", "missing field `at`");
    let text = "name = \"x\"\n[[faults]]\nat = \"1s\"\nkind = \"crash\"\ntarget = \"cdc\"\n\
                [[faults]]\nat = \"2h\"\nkind = \"crash\"\ntarget = \"cdc\"\n";
    assert_err(&parse_err(text), 7, 6, "faults[1].at", "after the run ends");
}

#[test]
fn bad_slo_name() {
    let text = "name = \"x\"\n[slo]\n\"bus.p99\" = \"1s\"\n\"kafka.p99\" = \"2s\"\n";
    assert_err(
        &parse_err(text),
        4,
        15,
        "slo.\"kafka.p99\"",
        "unknown latency path",
    );
}

#[test]
fn round_trips_through_toml() {
    let s = parse(DESIGN_EXAMPLE).unwrap();
    let text = s.to_toml().unwrap();
    assert_eq!(parse(&text).unwrap(), s, "{text}");
}

#[test]
fn load_names_the_file_and_keeps_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&good, "name = \"good\"\n").unwrap();
    std::fs::write(&bad, "name = \"bad\"\nseed = -1\n").unwrap();
    let missing = dir.path().join("missing.toml");
    let results = validate_files(&[good.clone(), bad.clone(), missing]);
    assert_eq!(
        results[0].as_ref().unwrap().source.as_deref(),
        Some(good.as_path())
    );
    let err = results[1].as_ref().unwrap_err();
    assert_eq!((err.line, err.column, err.field.as_str()), (2, 8, "seed"));
    assert!(err
        .to_string()
        .starts_with(&format!("{}:2:8: field `seed`", bad.display())));
    let err = results[2].as_ref().unwrap_err();
    assert_eq!(err.line, 0);
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn checks_section_sets_the_torn_transaction_policy() {
    let s = Scenario::parse("name = \"x\"\n", "x.toml").unwrap();
    assert_eq!(
        s.checks.torn_transaction,
        nrtsim_reports::TornPolicy::Warning
    );
    let s = Scenario::parse(
        "name = \"x\"\n[checks]\ntorn_transaction = \"violation\"\n",
        "x.toml",
    )
    .unwrap();
    assert_eq!(
        s.checks.torn_transaction,
        nrtsim_reports::TornPolicy::Violation
    );
    let e =
        Scenario::parse("name = \"x\"\n[checks]\ntorn = \"violation\"\n", "x.toml").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (3, "checks.torn"), "{e}");
}

#[test]
fn a_changelog_lake_and_an_every_change_check_are_read() {
    let s = Scenario::parse(
        "name = \"x\"\n[pipeline]\nlake = { mode = \"changelog\" }\n\
         [checks]\nlake_history = \"every-change\"\n",
        "x.toml",
    )
    .unwrap();
    assert_eq!(s.pipeline.lake.mode, nrtsim_pipeline::LakeMode::Changelog);
    assert_eq!(
        s.checks.lake_history,
        nrtsim_reports::LakeHistory::EveryChange
    );
    let e =
        Scenario::parse("name = \"x\"\n[checks]\nlake_history = \"all\"\n", "x.toml").unwrap_err();
    assert_eq!(
        (e.line, e.field.as_str()),
        (3, "checks.lake_history"),
        "{e}"
    );
}

#[test]
fn settings_that_cannot_take_effect_are_refused() {
    for (text, field) in [
        (
            "[pipeline]\nspend = { enabled = true, window = \"0s\" }\n",
            "pipeline.spend.window",
        ),
        (
            "[pipeline]\nlake = { pre_commit_timeout = \"0s\" }\n",
            "pipeline.lake",
        ),
        (
            "[pipeline]\nfraud = { velocity_window = \"0s\" }\n",
            "pipeline.fraud.velocity_window",
        ),
        // Kafka refuses an idempotent producer with more than five requests in flight.
        (
            "[pipeline]\nproducer = { max_in_flight = 6 }\n",
            "pipeline.producer.max_in_flight",
        ),
        // Auto-commit is a consumer group's; a sink outside one would ignore it.
        (
            "[pipeline]\ndelivery = \"at-least-once\"\n\
             consumer = { enable_auto_commit = true }\n",
            "pipeline.consumer.enable_auto_commit",
        ),
    ] {
        let e = Scenario::parse(&format!("name = \"x\"\n{text}"), "x.toml").unwrap_err();
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn ddl_entries_are_read_and_checked() {
    let ok = "name = \"x\"\n\
              [[workload.ddl]]\nat = \"20s\"\ntable = \"accounts\"\nchange = \"add-column\"\n\
              column = \"nickname\"\ntype = \"string\"\n\
              [pipeline]\nschema_registry = { enabled = true, compatibility = \"full\" }\n";
    let s = parse(ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.workload.ddl.len(), 1);
    assert!(s.host_names().contains(&"schema-registry".to_string()));
    // The key column cannot be dropped: the error points at the entry's column.
    let err = parse_err(
        "name = \"x\"\n\
         [[workload.ddl]]\nat = \"20s\"\ntable = \"orders\"\nchange = \"drop-column\"\n\
         column = \"order_id\"\n",
    );
    assert_err(&err, 6, 10, "workload.ddl[0].column", "key of table orders");
    // An added column needs its type.
    let err = parse_err(
        "name = \"x\"\n\
         [[workload.ddl]]\nat = \"20s\"\ntable = \"orders\"\nchange = \"add-column\"\n\
         column = \"promo\"\n",
    );
    assert_eq!(err.field, "workload.ddl[0].column", "{err}");
    assert!(err.message.contains("needs a `type`"), "{err}");
    // Unknown fields and kinds are refused like everywhere else.
    let err = parse_err(
        "name = \"x\"\n[[workload.ddl]]\nat = \"20s\"\ntable = \"orders\"\n\
         change = \"rename-column\"\ncolumn = \"status\"\n",
    );
    assert_eq!(err.line, 5, "{err}");
    let err =
        parse_err("name = \"x\"\n[pipeline]\nschema_registry = { compatibility = \"strict\" }\n");
    assert_eq!(err.line, 3, "{err}");
}

#[test]
fn shards_and_the_capture_pattern_are_read_and_checked() {
    let ok = "name = \"x\"\n\
              [[workload.ddl]]\nat = \"20s\"\ntable = \"orders\"\nchange = \"create-shard\"\n\
              [pipeline]\ncdc = { tables = \"orders(_[0-9]+)?\" }\n";
    let s = parse(ok).unwrap_or_else(|e| panic!("{e}"));
    let re = s.pipeline.cdc.capture().unwrap().expect("a pattern");
    assert!(re.is_match("orders") && re.is_match("orders_12"));
    assert!(!re.is_match("card_transactions") && !re.is_match("orders_x"));
    // A shard has no column.
    let err = parse_err(
        "name = \"x\"\n\
         [[workload.ddl]]\nat = \"20s\"\ntable = \"orders\"\nchange = \"create-shard\"\n\
         column = \"status\"\n",
    );
    assert_eq!(err.field, "workload.ddl[0].column", "{err}");
    assert!(err.message.contains("create-shard takes no"), "{err}");
    // A column change needs its column.
    let err = parse_err(
        "name = \"x\"\n\
         [[workload.ddl]]\nat = \"20s\"\ntable = \"orders\"\nchange = \"drop-column\"\n",
    );
    assert!(err.message.contains("needs a `column`"), "{err}");
    // A pattern that does not compile is named with its place.
    let err = parse_err("name = \"x\"\n[pipeline]\ncdc = { tables = \"orders(\" }\n");
    assert_err(&err, 3, 18, "pipeline.cdc.tables", "unclosed group");
}
