//! History files: both formats round-trip every observation kind, damage is reported as an
//! error naming the file, and the hand-written fixture parses.

use nrtsim_history::{
    parse_jsonl, read_history, write_history, FaultPhase, HistoryError, HistoryFormat,
    HistoryWriter, LakeRow, Observation, RouteReason, RunHeader, SourceChange, Stage, TopicName,
};
use nrtsim_workloads::{Key, Op, Table};
use std::path::Path;

/// A few hundred observations, every kind many times, with varied field values.
fn sample() -> Vec<Observation> {
    let mut out = vec![Observation::Header(RunHeader {
        scenario: "round-trip".into(),
        seed: u64::MAX,
        replay: "nrtsim run x.toml --seed 18446744073709551615".into(),
        nrtsim_version: "0.1.0".into(),
        scenario_toml: String::new(),
    })];
    let key = |i: u64| Key {
        table: Table::ALL[(i % 3) as usize],
        id: i * 7919,
    };
    for i in 0..40u64 {
        let ids: Vec<u64> = (i..i + (i % 5)).collect();
        out.push(Observation::SourceCommit {
            t_ms: i,
            txid: i,
            changes: (0..i % 4)
                .map(|j| SourceChange {
                    lsn: i * 4 + j,
                    key: key(i + j),
                    op: [Op::Create, Op::Update, Op::Delete, Op::Read][(j % 4) as usize],
                    digest: (j != 2).then_some(i ^ 0xdead_beef),
                    poison: j == 3,
                    payment: (j == 0).then_some(nrtsim_history::Payment {
                        account_id: i,
                        amount_cents: -(i as i64) * 100,
                    }),
                    balance_cents: (j == 1).then_some(i as i64 * 7),
                })
                .collect(),
        });
        out.push(Observation::Produced {
            t_ms: i + 1,
            stage: [Stage::Cdc, Stage::Standardize, Stage::Enrich, Stage::Lake][(i % 4) as usize],
            host: format!("standardize-{i}"),
            topic: TopicName::ALL[(i % 5) as usize],
            partition: i as u32,
            base_offset: i * 1000,
            change_ids: ids.clone(),
            txn: (i % 2 == 0).then_some(i),
            leader_epoch: (i % 3 == 0).then_some(i as u32),
        });
        out.push(Observation::KafkaTxn {
            t_ms: i + 1,
            txn: i,
            producer: format!("enrich-{i}"),
            committed: i % 3 != 0,
            timed_out: i % 5 == 0,
        });
        out.push(Observation::AbortMarker {
            t_ms: i + 1,
            topic: TopicName::ALL[(i % 5) as usize],
            partition: i as u32,
            offsets: vec![i, i + 3],
            change_ids: ids.iter().take(2).copied().collect(),
        });
        out.push(Observation::Read {
            t_ms: i + 2,
            stage: Stage::Enrich,
            host: "enrich-0".into(),
            topic: TopicName::ALL[(i % 5) as usize],
            partition: 3,
            base_offset: u64::MAX - i,
            change_ids: ids,
        });
        out.push(Observation::Routed {
            t_ms: i + 3,
            change_id: i,
            to: if i % 2 == 0 {
                TopicName::Redo
            } else {
                TopicName::Critical
            },
            reason: [
                RouteReason::Poison,
                RouteReason::ReferenceMiss,
                RouteReason::RedoExhausted,
            ][(i % 3) as usize],
            attempt: i as u32,
        });
        out.push(Observation::LakeCommit {
            t_ms: i + 4,
            host: "lake-1".into(),
            checkpoint_id: i,
            snapshot_id: i + 1,
            rows: (0..i % 3)
                .map(|j| LakeRow {
                    change_id: j,
                    key: key(j),
                    digest: (j == 0).then_some(j),
                    folded: j == 1,
                    balance_cents: None,
                })
                .collect(),
            files: Default::default(),
        });
        out.push(Observation::Checkpoint {
            t_ms: i + 5,
            host: String::new(),
            checkpoint_id: i,
        });
        out.push(Observation::Aggregate {
            t_ms: i + 5,
            account_id: i * 31,
            window_start_ms: i * 60_000,
            window_ms: 60_000,
            spend_cents: i as i64 * -7,
            payments: i as u32,
        });
        out.push(Observation::Watermark {
            t_ms: i + 5,
            watermark_ms: i * 1_000,
            window_ms: 60_000,
            late_dropped: i / 3,
        });
        out.push(Observation::TxnEnd {
            t_ms: i + 5,
            txid: i,
            event_count: i % 4,
        });
        out.push(Observation::FraudAlert {
            t_ms: i + 5,
            change_id: i,
            score: (i % 101) as u32,
            reasons: "velocity,amount".into(),
        });
        out.push(Observation::Fault {
            t_ms: i + 6,
            kind: "partition".into(),
            target: "broker-1 | broker-2 \"quoted\" ✓".into(),
            phase: if i % 2 == 0 {
                FaultPhase::Start
            } else {
                FaultPhase::End
            },
        });
        out.push(Observation::OffsetReset {
            t_ms: i + 6,
            stage: Stage::Enrich,
            host: format!("enrich-{i}"),
            topic: TopicName::Redo,
            partition: (i % 6) as u32,
            from: i,
            to: i * 3,
            log_start: i * 2,
        });
        out.push(Observation::RetentionDeleted {
            t_ms: i + 6,
            host: "broker-2".into(),
            topic: TopicName::Enriched,
            partition: (i % 6) as u32,
            log_start: i * 11,
        });
        out.push(Observation::TruncationDetected {
            t_ms: i + 6,
            stage: Stage::Lake,
            host: format!("lake-{i}"),
            topic: TopicName::Enriched,
            partition: (i % 6) as u32,
            from: i * 5,
            to: i * 4,
        });
        out.push(Observation::LeaderChange {
            t_ms: i + 6,
            host: "broker-0".into(),
            topic: TopicName::Raw,
            partition: (i % 6) as u32,
            epoch: i as u32,
            log_end: i * 7,
        });
        out.push(Observation::LakeRolledBack {
            t_ms: i + 6,
            host: "lake-0".into(),
            checkpoint_id: i,
            pre_committed_ms: i + 1,
            change_ids: vec![i, i + 2],
        });
        out.push(Observation::AppendedUnacknowledged {
            t_ms: i + 6,
            host: "broker-1".into(),
            topic: TopicName::Critical,
            partition: (i % 6) as u32,
            base_offset: i * 3,
            change_ids: vec![i],
        });
        out.push(Observation::WorkloadEnd { t_ms: i + 7 });
        out.push(Observation::RunEnd {
            t_ms: i + 8,
            drained: i % 2 == 0,
        });
    }
    out
}

fn read_all(path: &Path) -> Result<Vec<Observation>, HistoryError> {
    read_history(path)?.collect()
}

#[test]
fn both_formats_round_trip_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let observations = sample();
    assert!(observations.len() > 300);
    for (name, format) in [
        ("h.bin", HistoryFormat::Binary),
        ("h.jsonl", HistoryFormat::Jsonl),
    ] {
        let path = dir.path().join(name);
        write_history(&path, format, &observations).unwrap();
        let reader = read_history(&path).unwrap();
        assert_eq!(reader.format(), format);
        let back: Vec<Observation> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(back, observations, "{name}");
    }
    // Only the two finished files are left: no temporary files.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn nothing_appears_until_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history");
    let mut w = HistoryWriter::create(&path, HistoryFormat::Binary).unwrap();
    w.write(&Observation::WorkloadEnd { t_ms: 1 }).unwrap();
    assert_eq!(w.written(), 1);
    assert!(!path.exists());
    drop(w);
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn damaged_binary_histories_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.bin");
    write_history(&path, HistoryFormat::Binary, &sample()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for keep in [5, 12, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let cut = dir.path().join(format!("cut-{keep}"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let Err(err) = read_all(&cut) else {
            panic!("a file cut to {keep} bytes read cleanly");
        };
        assert!(err.to_string().contains(&format!("cut-{keep}")), "{err}");
    }
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let bad = dir.path().join("flipped");
    std::fs::write(&bad, &flipped).unwrap();
    assert!(read_all(&bad).is_err());
}

#[test]
fn formats_are_detected_and_strangers_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t");
    std::fs::write(&text, "\n  {\"type\":\"workload_end\",\"t_ms\":3}\n").unwrap();
    assert_eq!(
        read_all(&text).unwrap(),
        vec![Observation::WorkloadEnd { t_ms: 3 }]
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    assert!(read_all(&empty).unwrap().is_empty());
    let stranger = dir.path().join("stranger");
    std::fs::write(&stranger, "PK\x03\x04 not a history").unwrap();
    assert!(matches!(
        read_history(&stranger),
        Err(HistoryError::UnknownFormat { .. })
    ));
    let other_zstd = dir.path().join("other.zst");
    std::fs::write(
        &other_zstd,
        zstd::encode_all(&b"hello world"[..], 3).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        read_history(&other_zstd),
        Err(HistoryError::UnknownFormat { .. })
    ));
    assert!(matches!(
        read_history(dir.path().join("missing")),
        Err(HistoryError::Io { .. })
    ));
}

#[test]
fn bad_json_lines_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"type\":\"workload_end\",\"t_ms\":3}\n{\"type\":\"nonsense\"}\n",
    )
    .unwrap();
    let results: Vec<_> = read_history(&path).unwrap().collect();
    assert_eq!(results.len(), 2);
    let err = results[1].as_ref().unwrap_err();
    assert!(matches!(err, HistoryError::Json { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("bad.jsonl"));
    let err =
        parse_jsonl("{\"type\":\"run_end\",\"t_ms\":1,\"drained\":true}\n\n{oops").unwrap_err();
    assert!(matches!(err, HistoryError::Json { line: 3, .. }), "{err}");
}

#[test]
fn the_hand_written_fixture_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clean.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed = parse_jsonl(&text).unwrap();
    assert_eq!(parsed.len(), 13);
    assert!(matches!(parsed[0], Observation::Header(_)));
    assert_eq!(read_all(&path).unwrap(), parsed);
    assert!(matches!(
        parsed.last(),
        Some(Observation::RunEnd { drained: true, .. })
    ));
}
