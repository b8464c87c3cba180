//! The checker's integration tests: one tiny hand-written history per anomaly, showing it is
//! caught with the right count and example; clean histories that must pass; exit codes; the
//! report contract; and a property test that random clean histories pass and a single injected
//! loss or duplicate is always caught.

use nrtsim_history::{
    FaultPhase, LakeRow, Observation, RouteReason, RunHeader, SourceChange, Stage, TopicName,
};
use nrtsim_reports::{
    analyze, summary_text, to_json, to_junit, to_markdown, Analysis, AnomalyKind, CheckOptions,
    Checker, Expect, Report, ReportInputs,
};
use nrtsim_workloads::{Key, Op, Table};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// History building blocks.

fn key(id: u64) -> Key {
    Key {
        table: Table::Accounts,
        id,
    }
}

fn change(lsn: u64, key_id: u64, op: Op, digest: Option<u64>) -> SourceChange {
    SourceChange {
        lsn,
        key: key(key_id),
        op,
        digest,
        poison: false,
        payment: None,
        balance_cents: None,
    }
}

fn header() -> Observation {
    Observation::Header(RunHeader {
        scenario: "tiny".to_string(),
        seed: 7,
        replay: "nrtsim run scenarios/tiny.toml --seed 7".to_string(),
        nrtsim_version: "0.1.0".to_string(),
        scenario_toml: String::new(),
    })
}

fn commit(t_ms: u64, txid: u64, changes: Vec<SourceChange>) -> Observation {
    Observation::SourceCommit {
        t_ms,
        txid,
        changes,
    }
}

fn producer_of(topic: TopicName) -> Stage {
    match topic {
        TopicName::Raw => Stage::Cdc,
        TopicName::Standard => Stage::Standardize,
        _ => Stage::Enrich,
    }
}

fn produced(t_ms: u64, topic: TopicName, partition: u32, base: u64, ids: &[u64]) -> Observation {
    let stage = producer_of(topic);
    Observation::Produced {
        t_ms,
        stage,
        host: format!("{}-0", stage.name()),
        topic,
        partition,
        base_offset: base,
        change_ids: ids.to_vec(),
        txn: None,
        leader_epoch: None,
    }
}

fn read(t_ms: u64, topic: TopicName, partition: u32, base: u64, ids: &[u64]) -> Observation {
    let stage = match topic {
        TopicName::Raw => Stage::Standardize,
        TopicName::Standard | TopicName::Redo => Stage::Enrich,
        _ => Stage::Lake,
    };
    Observation::Read {
        t_ms,
        stage,
        host: format!("{}-0", stage.name()),
        topic,
        partition,
        base_offset: base,
        change_ids: ids.to_vec(),
    }
}

fn routed(t_ms: u64, change_id: u64, to: TopicName, reason: RouteReason) -> Observation {
    Observation::Routed {
        t_ms,
        change_id,
        to,
        reason,
        attempt: 1,
    }
}

fn lake(t_ms: u64, checkpoint_id: u64, rows: &[(u64, u64, Option<u64>)]) -> Observation {
    Observation::LakeCommit {
        t_ms,
        host: "lake-0".to_string(),
        checkpoint_id,
        snapshot_id: checkpoint_id,
        rows: rows
            .iter()
            .map(|&(change_id, key_id, digest)| LakeRow {
                change_id,
                key: key(key_id),
                digest,
                folded: false,
                balance_cents: None,
            })
            .collect(),
        files: Default::default(),
    }
}

fn run_end(t_ms: u64, drained: bool) -> Observation {
    Observation::RunEnd { t_ms, drained }
}

/// The source side of the tiny history: a snapshot of keys 1 and 2, then an update of key 1
/// and an insert of key 3, then a delete of key 2.
fn source() -> Vec<Observation> {
    vec![
        header(),
        commit(
            0,
            0,
            vec![
                change(1, 1, Op::Read, Some(10)),
                change(2, 2, Op::Read, Some(20)),
            ],
        ),
        commit(
            100,
            1,
            vec![
                change(3, 1, Op::Update, Some(11)),
                change(4, 3, Op::Create, Some(30)),
            ],
        ),
        commit(200, 2, vec![change(5, 2, Op::Delete, None)]),
    ]
}

/// The rows the lake should get for changes 1..=5.
fn lake_rows(ids: &[u64]) -> Vec<(u64, u64, Option<u64>)> {
    let all = [
        (1, 1, Some(10)),
        (2, 2, Some(20)),
        (3, 1, Some(11)),
        (4, 3, Some(30)),
        (5, 2, None),
    ];
    ids.iter().map(|id| all[(*id - 1) as usize]).collect()
}

/// Changes 1..=5 through raw, standard and enriched (all on partition 0), read by the lake sink
/// and applied in one commit.
fn clean() -> Vec<Observation> {
    let all = [1, 2, 3, 4, 5];
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(produced(220, TopicName::Standard, 0, 0, &all));
    h.push(produced(230, TopicName::Enriched, 0, 0, &all));
    h.push(read(240, TopicName::Enriched, 0, 0, &all));
    h.push(lake(300, 1, &lake_rows(&all)));
    h.push(run_end(400, true));
    h
}

/// `host` takes partition 0 of `topic` as leader of `epoch`, its log ending at `log_end`.
fn leader_change(t_ms: u64, host: &str, topic: TopicName, epoch: u32, log_end: u64) -> Observation {
    Observation::LeaderChange {
        t_ms,
        host: host.to_string(),
        topic,
        partition: 0,
        epoch,
        log_end,
    }
}

/// Kafka transaction `txn` of `enrich-0` ends at `t_ms`, committed or aborted.
fn txn_end(t_ms: u64, txn: u64, committed: bool) -> Observation {
    Observation::KafkaTxn {
        t_ms,
        txn,
        producer: "enrich-0".to_string(),
        committed,
        timed_out: false,
    }
}

/// Inserts observations just before the final `RunEnd`.
fn before_end(mut h: Vec<Observation>, extra: Vec<Observation>) -> Vec<Observation> {
    let end = h.pop().expect("history has a RunEnd");
    h.extend(extra);
    h.push(end);
    h
}

fn check(h: &[Observation]) -> Analysis {
    analyze(h, &CheckOptions::default())
}

fn report(analysis: &Analysis, slos: &[(&str, u64)], expect: Option<Expect>) -> Report {
    Report::build(
        analysis,
        ReportInputs {
            scenario: "tiny".to_string(),
            seed: 7,
            replay: "nrtsim run scenarios/tiny.toml --seed 7".to_string(),
            wall_ms: 1_000,
            slos: slos.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
            expect,
        },
    )
}

/// The anomaly counts in report order: lost, duplicated, reordered, phantom, lake_mismatch.
fn counts(a: &Analysis) -> [u64; 5] {
    let e = &a.exactly_once;
    [
        e.lost,
        e.duplicated,
        e.reordered,
        e.phantom,
        e.lake_mismatch,
    ]
}

// ---------------------------------------------------------------------------------------------
// Clean histories.

#[test]
fn clean_history_passes_with_all_zeros() {
    let a = check(&clean());
    assert_eq!(counts(&a), [0; 5]);
    assert!(a.exactly_once.examples.is_empty());
    let c = a.counts;
    assert_eq!(
        (
            c.source_changes,
            c.snapshot_changes,
            c.raw,
            c.standard,
            c.enriched
        ),
        (5, 2, 5, 5, 5)
    );
    assert_eq!(
        (c.lake_rows, c.redo, c.critical, c.parked_in_redo),
        (5, 0, 0, 0)
    );
    assert_eq!(c.lake_keys, 2, "key 2 was deleted; keys 1 and 3 remain");
    assert!(a.drained);
    assert_eq!(a.sim_duration_ms, 400);
    let r = report(&a, &[], None);
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.verdict.name(), "pass");
}

#[test]
fn latency_is_measured_from_the_commit_and_skips_the_snapshot() {
    let r = report(&check(&clean()), &[], None);
    let l = &r.latency;
    // Changes 3 and 4 committed at 100, change 5 at 200; the snapshot (1, 2) is not measured.
    assert_eq!(l.stages.ingest.count, 3);
    assert_eq!(l.stages.ingest.max_ms, 110);
    assert_eq!(l.stages.ingest.p50_ms, 110);
    assert_eq!(l.stages.standardize.max_ms, 10);
    assert_eq!(l.stages.enrich.max_ms, 10);
    assert_eq!(l.stages.lake.max_ms, 70);
    assert_eq!((l.bus.p50_ms, l.bus.max_ms, l.bus.count), (140, 140, 3));
    assert_eq!((l.lake.max_ms, l.lake.count), (200, 3));
    assert_eq!(r.tiers.bus.sub_second, 3);
    assert_eq!(r.tiers.lake.total(), 3);
}

#[test]
fn a_reread_of_the_same_offset_is_not_a_duplicate() {
    let all = [1, 2, 3, 4, 5];
    let h = before_end(
        clean(),
        vec![
            read(500, TopicName::Enriched, 0, 0, &all),
            read(510, TopicName::Enriched, 0, 2, &all[2..]),
        ],
    );
    assert_eq!(counts(&check(&h)), [0; 5]);
}

#[test]
fn a_change_parked_in_redo_is_not_lost() {
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
    h.push(produced(226, TopicName::Redo, 0, 0, &[4]));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
    assert_eq!((a.counts.redo, a.counts.parked_in_redo), (1, 1));
    assert_eq!(a.counts.lake_keys, 1, "key 3 is parked, key 2 deleted");
    assert_eq!(report(&a, &[], None).exit_code, 0);
}

/// A change parked in redo whose redo record retention deleted, or a replay's reset skipped,
/// before a replay read it is not waiting any more: it is lost (drained or not), and said to
/// be. Deletion below its offset, and a reset that skipped other offsets, do not count.
#[test]
fn a_parked_change_whose_redo_record_retention_deleted_is_lost() {
    let history = |log_start: u64, reset: Option<(u64, u64)>, drained: bool| {
        let mut h = source();
        h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
        h.push(produced(226, TopicName::Redo, 0, 7, &[4]));
        h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
        h.push(Observation::RetentionDeleted {
            t_ms: 350,
            host: "broker-0".to_string(),
            topic: TopicName::Redo,
            partition: 0,
            log_start,
        });
        if let Some((from, to)) = reset {
            h.push(Observation::OffsetReset {
                t_ms: 360,
                stage: Stage::Enrich,
                host: "enrich-0".to_string(),
                topic: TopicName::Redo,
                partition: 0,
                from,
                to,
                log_start,
            });
        }
        h.push(run_end(400, drained));
        check(&h)
    };
    let parked = |log_start: u64| history(log_start, None, true);
    let kept = parked(7);
    assert_eq!(counts(&kept), [0; 5], "{:?}", kept.exactly_once.examples);
    assert_eq!(kept.counts.parked_in_redo, 1);
    let elsewhere = history(2, Some((0, 7)), true);
    assert_eq!(
        elsewhere.counts.parked_in_redo, 1,
        "the reset stopped short of it"
    );
    let skipped = history(2, Some((0, 9)), true);
    assert_eq!(skipped.counts.parked_in_redo, 0);
    assert_eq!(counts(&skipped), [1, 0, 0, 0, 1]);
    let stalled = history(8, None, false);
    assert_eq!(
        (stalled.exactly_once.lost, stalled.counts.unfinished),
        (1, 0),
        "gone, not on its way"
    );
    let deleted = parked(8);
    assert_eq!(deleted.counts.parked_in_redo, 0);
    assert_eq!(counts(&deleted), [1, 0, 0, 0, 1]);
    let ex = deleted
        .exactly_once
        .examples
        .iter()
        .find(|e| e.anomaly == "lost")
        .expect("a lost example");
    assert_eq!(ex.change_id, Some(4));
    assert!(
        ex.location
            .contains("retention, a reset or a leader change took"),
        "{}",
        ex.location
    );
    assert_eq!(report(&deleted, &[], None).exit_code, 1);
}

/// A new leader whose log ends before what was acknowledged on its partition is reported with
/// the offsets it cut away; one that has everything is not. A change parked in redo whose redo
/// record a leader change cut away is lost, unless it was written to redo again.
#[test]
fn leader_changes_that_cut_acknowledged_records_are_reported() {
    let cut_to = |t_ms: u64, topic: TopicName, log_end: u64| {
        leader_change(t_ms, "broker-2", topic, 3, log_end)
    };
    let history = |redo_log_end: u64, written_again: bool| {
        let mut h = source();
        h.push(cut_to(1, TopicName::Raw, 0));
        h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
        // An earlier copy of change 4's redo record, routed there before a restart.
        h.push(produced(224, TopicName::Redo, 0, 2, &[4]));
        h.push(produced(226, TopicName::Redo, 0, 7, &[4]));
        h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
        // raw/0 loses its last two acknowledged offsets; the standard leader has everything.
        h.push(cut_to(310, TopicName::Raw, 3));
        h.push(cut_to(311, TopicName::Standard, 5));
        h.push(cut_to(312, TopicName::Redo, redo_log_end));
        if written_again {
            h.push(produced(320, TopicName::Redo, 0, redo_log_end, &[4]));
        }
        h.push(run_end(400, true));
        check(&h)
    };
    let a = history(8, false);
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
    assert_eq!(a.counts.parked_in_redo, 1, "its redo record is kept");
    let r = report(&a, &[], None);
    let cuts: Vec<(TopicName, u64, u64, u64)> = r
        .leader_cuts
        .iter()
        .map(|x| (x.topic, x.log_end, x.acknowledged_end, x.cut()))
        .collect();
    assert_eq!(cuts, [(TopicName::Raw, 3, 5, 2)]);
    let text = summary_text(&r);
    assert!(
        text.contains("leaders  1 leader change cut away 2 offsets below the acknowledged end"),
        "{text}"
    );
    assert!(to_markdown(&r).contains("| broker-2 | raw p0 | 3 | 3 | 5 | 2 |"));

    let cut = history(2, false);
    assert_eq!(cut.counts.parked_in_redo, 0);
    assert_eq!(counts(&cut), [1, 0, 0, 0, 1]);
    let ex = cut
        .exactly_once
        .examples
        .iter()
        .find(|e| e.anomaly == "lost")
        .expect("a lost example");
    assert_eq!(ex.change_id, Some(4));
    assert!(
        ex.location.contains("a leader change took"),
        "{}",
        ex.location
    );
    assert_eq!(report(&cut, &[], None).leader_cuts.len(), 2);
    // A deposed leader applying a stale view late says nothing about the log.
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(cut_to(310, TopicName::Raw, 5));
    h.push(leader_change(320, "broker-0", TopicName::Raw, 2, 1));
    assert!(report(&check(&h), &[], None).leader_cuts.is_empty());

    let older_kept = history(3, false);
    assert_eq!(
        older_kept.counts.parked_in_redo, 1,
        "its first redo record, at offset 2, is kept"
    );
    let again = history(2, true);
    assert_eq!(counts(&again), [0; 5], "{:?}", again.exactly_once.examples);
    assert_eq!(again.counts.parked_in_redo, 1);
}

/// An acknowledgement a deposed leader gave after a newer leadership was recorded (it did not
/// know yet) belongs to the cut of the first leader change after its epoch: that cut is
/// reported, a redo record among it is gone, and a later leader change does not count it again.
/// The same acknowledgement from the new leader is the partition's to keep, and so is one the
/// old leader appended before the change (the new leader took over holding it), until a later
/// leader change cuts it.
#[test]
fn a_deposed_leaders_late_acknowledgements_count_in_the_cut_that_took_them() {
    let leadership = |t_ms: u64, host: &str, epoch: u32, log_end: u64| {
        leader_change(t_ms, host, TopicName::Redo, epoch, log_end)
    };
    let history = |ack_epoch: u32, takeover_end: u64, third_end: u64| {
        let mut h = source();
        h.push(leadership(1, "broker-0", 1, 0));
        h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
        // broker-2 takes redo/0 over before change 4's redo record is acknowledged.
        h.push(leadership(226, "broker-2", 2, takeover_end));
        let mut redo = produced(227, TopicName::Redo, 0, 0, &[4]);
        if let Observation::Produced { leader_epoch, .. } = &mut redo {
            *leader_epoch = Some(ack_epoch);
        }
        h.push(redo);
        h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
        h.push(leadership(310, "broker-1", 3, third_end));
        h.push(run_end(400, true));
        check(&h)
    };
    let late = history(1, 0, 1);
    assert_eq!(late.counts.parked_in_redo, 0);
    assert_eq!(counts(&late), [1, 0, 0, 0, 1], "change 4 is gone");
    let r = report(&late, &[], None);
    let cuts: Vec<(u32, u64, u64)> = r
        .leader_cuts
        .iter()
        .map(|x| (x.epoch, x.log_end, x.acknowledged_end))
        .collect();
    assert_eq!(cuts, [(2, 0, 1)], "counted once, in broker-2's takeover");
    assert_eq!(r.leader_cuts[0].t_ms, 226);

    for (kept, what) in [
        (history(2, 0, 1), "the new leader's"),
        (history(1, 1, 1), "appended before the change"),
    ] {
        assert_eq!(
            counts(&kept),
            [0; 5],
            "{what}: {:?}",
            kept.exactly_once.examples
        );
        assert_eq!(kept.counts.parked_in_redo, 1, "{what}");
        assert!(report(&kept, &[], None).leader_cuts.is_empty(), "{what}");
    }
    let cut_later = history(1, 1, 0);
    assert_eq!(counts(&cut_later), [1, 0, 0, 0, 1]);
    let r = report(&cut_later, &[], None);
    let cuts: Vec<(u32, u64, u64)> = r
        .leader_cuts
        .iter()
        .map(|x| (x.epoch, x.log_end, x.acknowledged_end))
        .collect();
    assert_eq!(
        cuts,
        [(3, 0, 1)],
        "the third leader cut what the second kept"
    );
}

/// A replay reset back from past the end of a truncated redo log (`latest`) skips what the new
/// leader wrote before the reset: a change parked there is lost; one written at or past where
/// the reset took the reader is still parked.
#[test]
fn a_redo_record_a_reset_skipped_after_a_truncation_is_lost() {
    let history = |reset_to: u64| {
        let mut h = source();
        h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(leader_change(222, "broker-1", TopicName::Redo, 2, 5));
        h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
        h.push(produced(226, TopicName::Redo, 0, 6, &[4]));
        h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
        h.push(Observation::OffsetReset {
            t_ms: 310,
            stage: Stage::Enrich,
            host: "enrich-0".to_string(),
            topic: TopicName::Redo,
            partition: 0,
            from: 9,
            to: reset_to,
            log_start: 0,
        });
        h.push(run_end(400, true));
        check(&h)
    };
    let skipped = history(7);
    assert_eq!(skipped.counts.parked_in_redo, 0);
    assert_eq!(counts(&skipped), [1, 0, 0, 0, 1]);
    let kept = history(6);
    assert_eq!(counts(&kept), [0; 5], "{:?}", kept.exactly_once.examples);
    assert_eq!(kept.counts.parked_in_redo, 1);
}

/// The summary's totals of offsets reset over count a range once per reader and partition,
/// however often a restored reader is moved over it again; another reader's range counts on
/// its own.
#[test]
fn offsets_reset_over_count_each_readers_range_once() {
    let reset =
        |t_ms: u64, host: &str, from: u64, to: u64, log_start: u64| Observation::OffsetReset {
            t_ms,
            stage: Stage::Lake,
            host: host.to_string(),
            topic: TopicName::Enriched,
            partition: 0,
            from,
            to,
            log_start,
        };
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 4, 5])));
    // lake-0 is moved from 10 to 20 (10..15 deleted, 15..20 held) twice, then from 12 to 25.
    h.push(reset(310, "lake-0", 10, 20, 15));
    h.push(reset(320, "lake-0", 10, 20, 15));
    h.push(reset(330, "lake-0", 12, 25, 16));
    // fraud-0, another reader, skips the same deleted range.
    h.push(reset(340, "fraud-0", 10, 15, 15));
    h.push(run_end(400, true));
    let r = report(&check(&h), &[], None);
    assert_eq!(r.offset_resets.len(), 4);
    let text = summary_text(&r);
    assert!(
        text.contains(
            "resets   4 by auto_offset_reset: 11 offsets deleted unread, 9 held but skipped"
        ),
        "{text}"
    );
}

/// Readers that went back after a truncating leader change are listed in the report, the
/// summary and the Markdown; a refused reader that says so again after a restart is listed
/// once; and a history without any leaves the field out of the JSON.
#[test]
fn truncations_detected_are_reported() {
    let clean = || {
        let mut h = source();
        h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(read(215, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 4, 5])));
        h
    };
    let truncation = |t_ms: u64, host: &str, from: u64, to: u64| Observation::TruncationDetected {
        t_ms,
        stage: Stage::Standardize,
        host: host.to_string(),
        topic: TopicName::Raw,
        partition: 0,
        from,
        to,
    };
    let mut h = clean();
    h.push(truncation(310, "standardize-0", 5, 2));
    h.push(truncation(320, "standardize-1", 5, 5));
    h.push(truncation(330, "standardize-1", 5, 5));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
    let r = report(&a, &[], None);
    let seen: Vec<(&str, u64, u64, bool)> = r
        .truncations_detected
        .iter()
        .map(|x| (x.host.as_str(), x.from, x.to, x.stopped()))
        .collect();
    assert_eq!(
        seen,
        [
            ("standardize-0", 5, 2, false),
            ("standardize-1", 5, 5, true)
        ]
    );
    assert_eq!(r.truncations_detected[0].diverged(), 3);
    let text = summary_text(&r);
    assert!(
        text.contains("truncated  readers went back by leader epoch 1x, over 3 diverged offsets"),
        "{text}"
    );
    assert!(
        text.contains("truncated  readers refused by auto_offset_reset = none 1x"),
        "{text}"
    );
    let md = to_markdown(&r);
    assert!(md.contains("## Truncations detected"), "{md}");
    assert!(
        md.contains("| standardize-1 | raw p0 | 5 | stopped | 0 |"),
        "{md}"
    );
    assert!(to_json(&r).contains("\"truncations_detected\""));

    let mut h = clean();
    h.push(run_end(400, true));
    let r = report(&check(&h), &[], None);
    assert!(r.truncations_detected.is_empty());
    assert!(!to_json(&r).contains("truncations_detected"));
    assert!(!summary_text(&r).contains("truncated"));
}

#[test]
fn a_change_that_comes_back_from_redo_is_not_parked() {
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5, 4]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5, 4]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5, 4])));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
    assert_eq!((a.counts.redo, a.counts.parked_in_redo), (1, 0));
}

#[test]
fn poison_routed_to_critical_is_not_lost() {
    let mut h = source();
    if let Observation::SourceCommit { changes, .. } = &mut h[2] {
        changes[1].poison = true; // change 4
    }
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(routed(215, 4, TopicName::Critical, RouteReason::Poison));
    h.push(produced(216, TopicName::Critical, 0, 0, &[4]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 5]));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
    assert_eq!(a.counts.critical, 1);
    assert_eq!(report(&a, &[], None).exit_code, 0);
}

/// Change 4 routed to `to` (poison to critical, a reference miss to redo) with one record
/// there, at p0@0; `gone` takes that record away (a leader change cuts it, or its transaction
/// aborts), and `again` writes a second record in a transaction that commits.
fn routed_then(to: TopicName, gone: &str, again: bool) -> Vec<Observation> {
    let mut h = source();
    let reason = if to == TopicName::Critical {
        if let Observation::SourceCommit { changes, .. } = &mut h[2] {
            changes[1].poison = true; // change 4
        }
        RouteReason::Poison
    } else {
        RouteReason::ReferenceMiss
    };
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(routed(225, 4, to, reason));
    h.push(in_txn(7, produced(226, to, 0, 0, &[4])));
    match gone {
        "cut" => {
            h.push(txn_end(227, 7, true));
            h.push(leader_change(228, "broker-2", to, 1, 0));
        }
        "aborted" => h.push(txn_end(227, 7, false)),
        _ => h.push(txn_end(227, 7, true)),
    }
    if again {
        h.push(routed(229, 4, to, reason));
        h.push(in_txn(8, produced(229, to, 0, 1, &[4])));
        h.push(txn_end(229, 8, true));
    }
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
    h.push(run_end(400, true));
    h
}

#[test]
fn a_change_whose_critical_or_redo_record_is_gone_did_not_get_there() {
    for to in [TopicName::Critical, TopicName::Redo] {
        let reached = |a: &Analysis| {
            if to == TopicName::Critical {
                a.counts.critical
            } else {
                a.counts.parked_in_redo
            }
        };
        let a = check(&routed_then(to, "kept", false));
        assert_eq!(counts(&a), [0; 5], "{to:?}: {:?}", a.exactly_once.examples);
        assert_eq!(reached(&a), 1, "{to:?}");
        for gone in ["cut", "aborted"] {
            let a = check(&routed_then(to, gone, false));
            assert_eq!(
                a.exactly_once.lost, 1,
                "{to:?} {gone}: {:?}",
                a.exactly_once.examples
            );
            assert_eq!(reached(&a), 0, "{to:?} {gone}");
            let lost = a.exactly_once.examples.iter().find(|e| e.anomaly == "lost");
            assert_eq!(lost.and_then(|e| e.change_id), Some(4), "{to:?} {gone}");
            // Written again, in a transaction that commits: there after all.
            let a = check(&routed_then(to, gone, true));
            assert_eq!(
                counts(&a),
                [0; 5],
                "{to:?} {gone}: {:?}",
                a.exactly_once.examples
            );
            assert_eq!(reached(&a), 1, "{to:?} {gone}");
        }
    }
}

#[test]
fn a_change_whose_latest_redo_record_is_cut_is_lost_if_the_replay_read_the_one_before() {
    // Change 4 misses the store and is parked in redo (p0@0). The replay reads it, misses
    // again, and parks it once more (p0@1); a leader change then cuts that record away.
    // With `late`, the deposed leader's acknowledgement of the second record comes after the
    // leader change is known.
    let history = |replayed: bool, late: bool| {
        let mut h = source();
        h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
        h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
        let mut first = produced(226, TopicName::Redo, 0, 0, &[4]);
        let mut second = produced(229, TopicName::Redo, 0, 1, &[4]);
        for p in [&mut first, &mut second] {
            if let Observation::Produced { leader_epoch, .. } = p {
                *leader_epoch = Some(0);
            }
        }
        h.push(first);
        if replayed {
            h.push(read(228, TopicName::Redo, 0, 0, &[4]));
        }
        // Without the replay's read, the second record is a duplicate routing (a restarted
        // task parked the change again): the first one still waits to be replayed.
        h.push(routed(229, 4, TopicName::Redo, RouteReason::ReferenceMiss));
        if !late {
            h.push(second.clone());
        }
        h.push(leader_change(229, "broker-2", TopicName::Redo, 1, 1));
        if late {
            h.push(second);
        }
        h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
        h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
        h.push(run_end(400, true));
        h
    };
    for late in [false, true] {
        let a = check(&history(true, late));
        assert_eq!(
            a.exactly_once.lost, 1,
            "late {late}: {:?}",
            a.exactly_once.examples
        );
        assert_eq!(a.counts.parked_in_redo, 0, "late {late}");
        // In a run that did not drain, a replay restarting from before the record it read
        // may still read it again: the change still waits.
        let mut h = history(true, late);
        h.pop();
        h.push(run_end(400, false));
        let a = check(&h);
        assert_eq!(
            a.exactly_once.lost, 0,
            "late {late}: {:?}",
            a.exactly_once.examples
        );
        assert_eq!(a.counts.parked_in_redo, 1, "late {late}");
        let a = check(&history(false, late));
        assert_eq!(
            counts(&a),
            [0; 5],
            "late {late}: {:?}",
            a.exactly_once.examples
        );
        assert_eq!(a.counts.parked_in_redo, 1, "late {late}");
    }
}

/// Changes 1..=5 written to enriched in transaction 7, which aborts; transaction 8 writes them
/// again (without change 4 unless `all_again`) and commits, and the lake applies what it
/// reads.
fn enriched_then_aborted(all_again: bool) -> Vec<Observation> {
    let again: &[u64] = if all_again {
        &[1, 2, 3, 4, 5]
    } else {
        &[1, 2, 3, 5]
    };
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(in_txn(
        7,
        produced(225, TopicName::Enriched, 0, 0, &[1, 2, 3, 4, 5]),
    ));
    h.push(txn_end(226, 7, false));
    h.push(in_txn(8, produced(230, TopicName::Enriched, 0, 6, again)));
    h.push(txn_end(231, 8, true));
    h.push(read(240, TopicName::Enriched, 0, 6, again));
    h.push(lake(300, 1, &lake_rows(again)));
    h.push(run_end(400, true));
    h
}

#[test]
fn a_change_whose_enriched_records_were_all_aborted_did_not_reach_enriched() {
    let a = check(&enriched_then_aborted(false));
    assert_eq!(a.exactly_once.lost, 1, "{:?}", a.exactly_once.examples);
    assert_eq!(a.counts.enriched, 4);
    let c = &a.conservation;
    assert_eq!((c.unaccounted, c.holds), (1, false), "{c:?}");
    let lost = a.exactly_once.examples.iter().find(|e| e.anomaly == "lost");
    assert!(
        lost.is_some_and(|e| e.location.ends_with("last seen: produced to standard")),
        "{lost:?}"
    );
    // Written again in a transaction that commits, it is there.
    let a = check(&enriched_then_aborted(true));
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
    assert_eq!(a.counts.enriched, 5);
    assert!(a.conservation.holds);
}

#[test]
fn a_stage_is_timed_from_the_record_that_committed_not_from_an_aborted_one() {
    let all = [1, 2, 3, 4, 5];
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    // Standardized at 220 in a transaction that aborts; again at 224 in one that commits.
    h.push(in_txn(6, produced(220, TopicName::Standard, 0, 0, &all)));
    h.push(txn_end(221, 6, false));
    h.push(in_txn(7, produced(224, TopicName::Standard, 0, 6, &all)));
    h.push(txn_end(225, 7, true));
    // Enriched at 230, aborted; again at 236, committed.
    h.push(in_txn(8, produced(230, TopicName::Enriched, 0, 0, &all)));
    h.push(txn_end(231, 8, false));
    h.push(in_txn(9, produced(236, TopicName::Enriched, 0, 6, &all)));
    h.push(txn_end(237, 9, true));
    h.push(read(240, TopicName::Enriched, 0, 6, &all));
    h.push(lake(300, 1, &lake_rows(&all)));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
    let lowest = |path: &nrtsim_reports::LatencyPath| path.histogram.min();
    // A transaction's records are there when it commits.
    assert_eq!(lowest(&a.latency.standardize), 225 - 210);
    assert_eq!(lowest(&a.latency.enrich), 237 - 225);
    assert_eq!((a.counts.standard, a.counts.enriched), (5, 5));
    // A change first written in a transaction that commits keeps that time when a later
    // transaction writing it again aborts (a duplicate that was taken back).
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(in_txn(6, produced(220, TopicName::Standard, 0, 0, &all)));
    h.push(txn_end(221, 6, true));
    h.push(in_txn(7, produced(224, TopicName::Standard, 0, 6, &all)));
    h.push(txn_end(225, 7, false));
    h.extend(clean().into_iter().skip(source().len() + 2));
    let a = check(&h);
    assert_eq!(lowest(&a.latency.standardize), 221 - 210);
    // A zombie's transaction writes the changes at 230; the task's live instance writes them
    // again at 232 and commits at 233; the zombie's transaction is aborted at 235. The changes
    // reached enriched when the live one committed.
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(produced(220, TopicName::Standard, 0, 0, &all));
    h.push(in_txn(6, produced(230, TopicName::Enriched, 0, 0, &all)));
    h.push(in_txn(7, produced(232, TopicName::Enriched, 0, 5, &all)));
    h.push(txn_end(233, 7, true));
    h.push(txn_end(235, 6, false));
    h.push(read(240, TopicName::Enriched, 0, 5, &all));
    h.push(lake(300, 1, &lake_rows(&all)));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
    assert_eq!(lowest(&a.latency.enrich), 233 - 220);
    assert_eq!(a.counts.enriched, 5);
    // Cut off before anyone read them, they still count as enriched.
    h.truncate(h.len() - 3);
    h.push(run_end(400, false));
    assert_eq!(check(&h).counts.enriched, 5);
}

#[test]
fn a_transactions_records_cut_before_it_commits_never_arrive_whichever_is_recorded_first() {
    let all = [1, 2, 3, 4, 5];
    for ack_first in [true, false] {
        let mut h = source();
        h.push(produced(210, TopicName::Raw, 0, 0, &all));
        let mut standard = in_txn(5, produced(220, TopicName::Standard, 0, 0, &all));
        if let Observation::Produced { leader_epoch, .. } = &mut standard {
            *leader_epoch = Some(0);
        }
        let cut = leader_change(221, "broker-2", TopicName::Standard, 1, 0);
        if ack_first {
            h.extend([standard, cut]);
        } else {
            h.extend([cut, standard]);
        }
        h.push(txn_end(222, 5, true));
        h.push(run_end(400, true));
        let a = check(&h);
        assert_eq!(a.exactly_once.lost, 5, "ack first {ack_first}");
        assert_eq!(a.counts.standard, 0, "ack first {ack_first}");
        assert_eq!(
            a.latency.standardize.histogram.len(),
            0,
            "ack first {ack_first}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One tiny history per anomaly.

#[test]
fn lost_change_is_caught() {
    // Change 4 was acknowledged to enriched but vanished: the reader and the lake never saw it.
    let kept = [1, 2, 3, 5];
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(read(240, TopicName::Enriched, 0, 0, &kept));
    h.push(lake(300, 1, &lake_rows(&kept)));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(a.exactly_once.lost, 1);
    let ex = a
        .exactly_once
        .examples
        .iter()
        .find(|e| e.anomaly == "lost")
        .unwrap();
    assert_eq!(ex.change_id, Some(4));
    assert_eq!(ex.lsn, Some(4));
    assert_eq!(ex.key.as_deref(), Some("accounts/3"));
    assert!(
        ex.location.contains("produced to enriched"),
        "{}",
        ex.location
    );
    // Key 3 should hold change 4's row; the lake has nothing.
    assert_eq!(a.exactly_once.lake_mismatch, 1);
    assert_eq!(report(&a, &[], None).exit_code, 1);
}

/// A two-phase sink's commit that finds its pre-commit rolled back: the rows it held are lost,
/// and the example says where; a row a later commit applied is not lost.
#[test]
fn rows_of_a_rolled_back_pre_commit_are_lost_and_say_why() {
    let all = [1, 2, 3, 4, 5];
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(produced(220, TopicName::Standard, 0, 0, &all));
    h.push(produced(230, TopicName::Enriched, 0, 0, &all));
    h.push(read(240, TopicName::Enriched, 0, 0, &all));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3])));
    let rolled_back = |t_ms| Observation::LakeRolledBack {
        t_ms,
        host: "lake-0".to_string(),
        checkpoint_id: 2,
        pre_committed_ms: 250,
        change_ids: vec![4, 5],
    };
    // Refused twice (a restart in between): one pre-commit rolled back.
    h.push(rolled_back(90_000));
    h.push(rolled_back(95_000));
    h.push(lake(96_000, 3, &lake_rows(&[5])));
    h.push(run_end(97_000, true));
    let a = check(&h);
    assert_eq!(a.exactly_once.lost, 1, "change 5 reached a later snapshot");
    assert_eq!(a.lake.pre_commits_rolled_back, 1);
    let ex = a
        .exactly_once
        .examples
        .iter()
        .find(|e| e.anomaly == "lost")
        .unwrap();
    assert_eq!(ex.change_id, Some(4));
    assert!(
        ex.location
            .contains("lake-0 pre-committed it for checkpoint 2 at 0:00, and its commit at 1:30"),
        "{}",
        ex.location
    );
    let text = summary_text(&report(&a, &[], None));
    assert!(text.contains("1 pre-commit rolled back"), "{text}");
}

/// A replay's enriched copy whose transaction aborts does not end a change's stay in redo:
/// its redo record stands, so it is parked, not lost.
#[test]
fn an_aborted_replay_leaves_the_change_parked_in_redo() {
    let txn = |t_ms, txn, producer: &str, committed| Observation::KafkaTxn {
        t_ms,
        txn,
        producer: producer.to_string(),
        committed,
        timed_out: !committed,
    };
    let in_txn = |o: Observation, n| match o {
        Observation::Produced {
            t_ms,
            stage,
            host,
            topic,
            partition,
            base_offset,
            change_ids,
            ..
        } => Observation::Produced {
            t_ms,
            stage,
            host,
            topic,
            partition,
            base_offset,
            change_ids,
            txn: Some(n),
            leader_epoch: None,
        },
        o => o,
    };
    let mut h = vec![
        header(),
        commit(5, 1, vec![change(1, 7, Op::Create, Some(11))]),
    ];
    h.push(in_txn(produced(6, TopicName::Raw, 0, 0, &[1]), 1));
    h.push(txn(7, 1, "cdc", true));
    h.push(read(8, TopicName::Raw, 0, 0, &[1]));
    h.push(in_txn(produced(9, TopicName::Standard, 0, 0, &[1]), 2));
    h.push(txn(10, 2, "standardize-0", true));
    h.push(read(11, TopicName::Standard, 0, 0, &[1]));
    h.push(in_txn(produced(12, TopicName::Redo, 0, 0, &[1]), 3));
    h.push(routed(12, 1, TopicName::Redo, RouteReason::ReferenceMiss));
    h.push(txn(13, 3, "enrich-0", true));
    h.push(read(60_000, TopicName::Redo, 0, 0, &[1]));
    h.push(in_txn(produced(60_001, TopicName::Enriched, 0, 0, &[1]), 4));
    h.push(txn(120_002, 4, "enrich-0", false));
    h.push(Observation::AbortMarker {
        t_ms: 120_003,
        topic: TopicName::Enriched,
        partition: 0,
        offsets: vec![0],
        change_ids: vec![1],
    });
    let mut committed = h.clone();
    h.push(run_end(130_000, true));
    let a = check(&h);
    assert_eq!(a.exactly_once.lost, 0, "{:?}", a.exactly_once.examples);
    assert_eq!(a.counts.parked_in_redo, 1);
    // Had the replay's transaction committed, the enriched copy would stand and the lake
    // would owe the row.
    let last = committed.len() - 2;
    committed[last] = txn(120_002, 4, "enrich-0", true);
    committed.pop();
    committed.push(run_end(130_000, true));
    let a = check(&committed);
    assert_eq!(a.counts.parked_in_redo, 0);
    assert_eq!(a.exactly_once.lost, 1);
}

#[test]
fn duplicate_in_the_lake_is_caught() {
    let h = before_end(clean(), vec![lake(350, 2, &lake_rows(&[3]))]);
    let a = check(&h);
    assert_eq!(counts(&a), [0, 1, 0, 0, 0]);
    let ex = &a.exactly_once.examples[0];
    assert_eq!((ex.anomaly.as_str(), ex.change_id), ("duplicated", Some(3)));
    assert_eq!(ex.key.as_deref(), Some("accounts/1"));
    assert!(
        ex.location.starts_with("lake snapshot 2"),
        "{}",
        ex.location
    );
    assert_eq!(report(&a, &[], None).exit_code, 1);
}

#[test]
fn duplicate_within_one_lake_commit_is_caught() {
    let mut h = source();
    let all = [1, 2, 3, 4, 5];
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(produced(220, TopicName::Standard, 0, 0, &all));
    h.push(produced(230, TopicName::Enriched, 0, 0, &all));
    h.push(read(240, TopicName::Enriched, 0, 0, &all));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 4, 4, 5])));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0, 1, 0, 0, 0]);
    assert_eq!(a.exactly_once.examples[0].change_id, Some(4));
}

#[test]
fn duplicate_in_the_enriched_topic_is_caught() {
    // The enrich job re-produced change 4 after a restart: it sits at offsets 3 and 5.
    let h = before_end(
        clean(),
        vec![
            produced(310, TopicName::Enriched, 0, 5, &[4]),
            read(320, TopicName::Enriched, 0, 5, &[4]),
        ],
    );
    let a = check(&h);
    assert_eq!(counts(&a), [0, 1, 0, 0, 0]);
    let ex = &a.exactly_once.examples[0];
    assert_eq!(ex.change_id, Some(4));
    assert_eq!(ex.location, "enriched p0@3 and p0@5");
}

/// Three changes to one key (LSN 1, 2, 3) through raw and standard.
fn one_key_source() -> Vec<Observation> {
    vec![
        header(),
        commit(100, 1, vec![change(1, 1, Op::Create, Some(1))]),
        commit(110, 2, vec![change(2, 1, Op::Update, Some(2))]),
        commit(120, 3, vec![change(3, 1, Op::Update, Some(3))]),
        produced(130, TopicName::Raw, 0, 0, &[1, 2, 3]),
        produced(140, TopicName::Standard, 0, 0, &[1, 2, 3]),
    ]
}

#[test]
fn reordering_in_the_lake_is_caught() {
    let mut h = one_key_source();
    h.push(produced(150, TopicName::Enriched, 0, 0, &[1, 2, 3]));
    h.push(read(160, TopicName::Enriched, 0, 0, &[1, 2, 3]));
    h.push(lake(
        200,
        1,
        &[(2, 1, Some(2)), (1, 1, Some(1)), (3, 1, Some(3))],
    ));
    h.push(run_end(300, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0, 0, 1, 0, 0]);
    let ex = &a.exactly_once.examples[0];
    assert_eq!((ex.anomaly.as_str(), ex.change_id), ("reordered", Some(1)));
    assert_eq!(
        ex.location,
        "lake snapshot 1 (checkpoint 1): lsn 1 after lsn 2"
    );
}

#[test]
fn reordering_in_the_enriched_topic_is_caught() {
    let mut h = one_key_source();
    h.push(produced(150, TopicName::Enriched, 0, 0, &[2, 1, 3]));
    h.push(read(160, TopicName::Enriched, 0, 0, &[2, 1, 3]));
    // A sink that sorts by LSN still applies in order; the topic is what is wrong.
    h.push(lake(
        200,
        1,
        &[(1, 1, Some(1)), (2, 1, Some(2)), (3, 1, Some(3))],
    ));
    h.push(run_end(300, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0, 0, 1, 0, 0]);
    let ex = &a.exactly_once.examples[0];
    assert_eq!(ex.change_id, Some(1));
    assert_eq!(ex.location, "enriched p0@1: lsn 1 after lsn 2");
}

#[test]
fn rereading_old_offsets_does_not_look_like_reordering() {
    let mut h = one_key_source();
    h.push(produced(150, TopicName::Enriched, 0, 0, &[1, 2, 3]));
    h.push(read(160, TopicName::Enriched, 0, 0, &[1, 2, 3]));
    h.push(read(170, TopicName::Enriched, 0, 0, &[1]));
    h.push(lake(
        200,
        1,
        &[(1, 1, Some(1)), (2, 1, Some(2)), (3, 1, Some(3))],
    ));
    h.push(run_end(300, true));
    assert_eq!(counts(&check(&h)), [0; 5]);
}

#[test]
fn phantom_is_caught() {
    let h = before_end(clean(), vec![read(330, TopicName::Enriched, 0, 5, &[99])]);
    let a = check(&h);
    assert_eq!(counts(&a), [0, 0, 0, 1, 0]);
    let ex = &a.exactly_once.examples[0];
    assert_eq!((ex.anomaly.as_str(), ex.change_id), ("phantom", Some(99)));
    assert_eq!(ex.location, "read from enriched p0@5");
}

#[test]
fn a_change_seen_before_its_commit_is_a_phantom() {
    let mut h = vec![header(), produced(5, TopicName::Raw, 0, 0, &[1])];
    h.push(commit(10, 1, vec![change(1, 1, Op::Create, Some(1))]));
    h.push(produced(20, TopicName::Raw, 0, 1, &[1]));
    h.push(produced(30, TopicName::Enriched, 0, 0, &[1]));
    h.push(read(40, TopicName::Enriched, 0, 0, &[1]));
    h.push(lake(50, 1, &[(1, 1, Some(1))]));
    h.push(run_end(60, true));
    let a = check(&h);
    assert_eq!(counts(&a), [0, 0, 0, 1, 0]);
    assert_eq!(a.exactly_once.examples[0].location, "produced to raw p0@0");
}

#[test]
fn lake_mismatch_is_caught() {
    let mut rows = lake_rows(&[1, 2, 3, 4, 5]);
    rows[3].2 = Some(31); // change 4 wrote the wrong row for key 3
    let mut h = clean();
    h[8] = lake(300, 1, &rows);
    let a = check(&h);
    assert_eq!(counts(&a), [0, 0, 0, 0, 1]);
    let ex = &a.exactly_once.examples[0];
    assert_eq!(ex.anomaly, "lake_mismatch");
    assert_eq!(ex.key.as_deref(), Some("accounts/3"));
    assert_eq!(
        ex.location,
        "expected 0x000000000000001e (lsn 4), lake has 0x000000000000001f (change 4)"
    );
}

#[test]
fn a_poison_change_in_the_lake_is_a_lake_mismatch() {
    let mut h = clean();
    if let Observation::SourceCommit { changes, .. } = &mut h[2] {
        changes[0].poison = true; // change 3, key 1
    }
    let a = check(&h);
    assert_eq!(counts(&a), [0, 0, 0, 0, 1]);
    let ex = &a.exactly_once.examples[0];
    assert_eq!(ex.key.as_deref(), Some("accounts/1"));
    assert_eq!(ex.location, "lake applied poison change 3");
}

#[test]
fn a_poison_change_that_never_reached_critical_is_lost() {
    let mut h = source();
    if let Observation::SourceCommit { changes, .. } = &mut h[2] {
        changes[1].poison = true; // change 4
    }
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 5]));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(counts(&a), [1, 0, 0, 0, 0]);
    assert!(a.exactly_once.examples[0]
        .location
        .starts_with("poison change never reached critical"));
}

#[test]
fn examples_are_capped_at_eight_per_anomaly() {
    let mut h = vec![header()];
    let ids: Vec<u64> = (1..=20).collect();
    h.push(commit(
        0,
        1,
        ids.iter()
            .map(|&i| change(i, i, Op::Create, Some(i)))
            .collect(),
    ));
    h.push(run_end(10, true));
    let a = check(&h);
    assert_eq!(a.exactly_once.lost, 20);
    assert_eq!(a.exactly_once.lake_mismatch, 20);
    assert_eq!(a.exactly_once.examples.len(), 16);
    assert_eq!(a.exactly_once.examples[0].change_id, Some(1));
}

// ---------------------------------------------------------------------------------------------
// Exit codes, SLOs, expectations, faults.

#[test]
fn slo_kept_passes_and_slo_breached_exits_3() {
    let a = check(&clean());
    let kept = report(&a, &[("bus.p99", 1_000), ("stages.ingest.max", 110)], None);
    assert_eq!(kept.exit_code, 0);
    assert!(kept.slo.iter().all(|s| s.pass));
    assert_eq!(kept.slo[1].actual_ms, 110);
    let breached = report(&a, &[("bus.p99", 1_000), ("lake.p99", 50)], None);
    assert_eq!(breached.exit_code, 3);
    assert_eq!(breached.verdict.name(), "fail");
    assert!(!breached.slo[1].pass);
    assert_eq!(breached.slo[1].actual_ms, 200);
}

#[test]
fn an_unknown_slo_name_fails_with_a_reason() {
    let r = report(&check(&clean()), &[("kafka.p99", 10)], None);
    assert_eq!(r.exit_code, 3);
    assert!(r.slo[0]
        .error
        .as_deref()
        .unwrap()
        .contains("unknown latency path"));
}

#[test]
fn not_drained_exits_4() {
    let mut h = clean();
    *h.last_mut().unwrap() = run_end(400, false);
    let a = check(&h);
    assert!(!a.drained);
    assert_eq!(report(&a, &[], None).exit_code, 4);
}

#[test]
fn in_flight_changes_of_a_stalled_run_are_unfinished_not_lost() {
    // Change 4 is still on its way when a run that did not drain ends: a liveness failure.
    let kept = [1, 2, 3, 5];
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &kept));
    h.push(produced(230, TopicName::Enriched, 0, 0, &kept));
    h.push(read(240, TopicName::Enriched, 0, 0, &kept));
    h.push(lake(300, 1, &lake_rows(&kept)));
    h.push(run_end(400, false));
    let a = check(&h);
    assert_eq!(a.counts.unfinished, 1);
    assert_eq!(a.exactly_once.lost, 0);
    // Key 3's final row cannot be judged while its change is still on its way.
    assert_eq!(a.exactly_once.lake_mismatch, 0);
    assert_eq!(report(&a, &[], None).exit_code, 4);
    // The same history, drained, is a loss.
    *h.last_mut().unwrap() = run_end(400, true);
    let a = check(&h);
    assert_eq!((a.counts.unfinished, a.exactly_once.lost), (0, 1));
    assert_eq!(report(&a, &[], None).exit_code, 1);
}

#[test]
fn a_history_without_run_end_did_not_drain() {
    let mut h = clean();
    h.pop();
    let a = check(&h);
    assert!(!a.run_ended && !a.drained);
    assert_eq!(a.sim_duration_ms, 300);
}

#[test]
fn the_lowest_non_zero_exit_code_wins() {
    // SLO breached and not drained: 3.
    let mut h = clean();
    *h.last_mut().unwrap() = run_end(400, false);
    let a = check(&h);
    assert_eq!(report(&a, &[("lake.p99", 1)], None).exit_code, 3);
    // Add a duplicate as well: 1.
    let h = before_end(h, vec![lake(350, 2, &lake_rows(&[3]))]);
    let a = check(&h);
    assert_eq!(report(&a, &[("lake.p99", 1)], None).exit_code, 1);
}

#[test]
fn expectations_are_judged() {
    let h = before_end(clean(), vec![lake(350, 2, &lake_rows(&[3]))]);
    let a = check(&h);
    let met = report(
        &a,
        &[],
        Some(Expect {
            exit_code: Some(1),
            anomalies: vec!["duplicated".to_string()],
        }),
    );
    assert_eq!(met.expectation_met, Some(true));
    assert!(met.expectation.as_ref().unwrap().reasons.is_empty());
    let missed = report(
        &a,
        &[],
        Some(Expect {
            exit_code: Some(0),
            anomalies: vec!["lost".to_string(), "aborted_read".to_string()],
        }),
    );
    assert_eq!(missed.expectation_met, Some(false));
    let reasons = &missed.expectation.as_ref().unwrap().reasons;
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[2].contains("does not check"));
    let none = report(&a, &[], None);
    assert_eq!(none.expectation_met, None);
    let json: serde_json::Value = serde_json::from_str(&to_json(&none)).unwrap();
    assert!(json.get("expectation").is_none() && json.get("expectation_met").is_none());
}

#[test]
fn faults_are_listed_with_their_windows() {
    let fault = |t_ms, target: &str, phase| Observation::Fault {
        t_ms,
        kind: "crash".to_string(),
        target: target.to_string(),
        phase,
    };
    let h = before_end(
        clean(),
        vec![
            fault(50, "broker-1", FaultPhase::Start),
            fault(60, "enrich-0", FaultPhase::Start),
            fault(90, "broker-1", FaultPhase::End),
        ],
    );
    let r = report(&check(&h), &[], None);
    assert_eq!(r.faults.len(), 2);
    assert_eq!((r.faults[0].start_ms, r.faults[0].end_ms), (50, Some(90)));
    assert_eq!(
        (r.faults[1].target.as_str(), r.faults[1].end_ms),
        ("enrich-0", None)
    );
}

#[test]
fn the_checker_can_be_fed_one_observation_at_a_time() {
    let h = clean();
    let mut checker = Checker::new(CheckOptions::default());
    for obs in &h {
        checker.observe(obs);
    }
    let a = checker.finish();
    let b = analyze(h, &CheckOptions::default());
    assert_eq!(a.counts, b.counts);
    assert_eq!(a.exactly_once, b.exactly_once);
}

// ---------------------------------------------------------------------------------------------
// Rendering and the report contract.

#[test]
fn json_leaves_unchecked_anomalies_out_and_round_trips() {
    let r = report(&check(&clean()), &[("bus.p99", 1_000)], None);
    let text = to_json(&r);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let eo = &json["exactly_once"];
    for absent in ["aborted_read", "aggregate_mismatch"] {
        assert!(eo.get(absent).is_none(), "{absent} must be absent");
    }
    assert_eq!(eo["torn_transaction"], 0, "checked, so present");
    assert_eq!(eo["inconsistent_offsets"], 0, "checked, so present");
    assert_eq!(json["verdict"], "pass");
    assert_eq!(json["latency"]["stages"]["lake"]["count"], 3);
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    // Fields keep the contract's order.
    let s = text.find("\"scenario\"").unwrap();
    let v = text.find("\"verdict\"").unwrap();
    let f = text.find("\"faults\"").unwrap();
    assert!(s < v && v < f);
}

#[test]
fn markdown_junit_and_summary_render() {
    let h = before_end(clean(), vec![lake(350, 2, &lake_rows(&[3]))]);
    let r = report(&check(&h), &[("bus.p99", 1_000), ("lake.p99", 50)], None);
    let md = to_markdown(&r);
    for section in [
        "# nrtsim report: tiny",
        "## Counts",
        "## Latency",
        "## Tiers",
        "## Exactly-once",
        "## SLOs",
        "## Faults",
        "## Replay",
    ] {
        assert!(md.contains(section), "missing {section}");
    }
    assert!(md.contains("| duplicated | 1 |"));

    let xml = to_junit(&r);
    assert!(
        xml.contains("<testsuite name=\"nrtsim.tiny\" tests=\"10\" failures=\"2\""),
        "{xml}"
    );
    assert!(xml.contains(
        "name=\"duplicated\" time=\"0\">\n      <failure message=\"1 duplicated found\">"
    ));
    assert!(xml.contains("name=\"drain\" time=\"0\"/>"));
    assert_eq!(xml.matches("<testcase").count(), 10);

    let text = summary_text(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() <= 30, "{} lines:\n{text}", lines.len());
    for line in &lines {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
    assert!(text.contains("duplicated 1"));
    assert!(text.contains("BREACHED"));
    assert!(text.contains("verdict FAIL  exit code 1"));
    assert!(text.contains("replay: nrtsim run scenarios/tiny.toml --seed 7"));
    println!("{text}");
}

#[test]
fn junit_with_an_expectation_fails_only_on_the_expectation() {
    let h = before_end(clean(), vec![lake(350, 2, &lake_rows(&[3]))]);
    let expect = Expect {
        exit_code: Some(1),
        anomalies: vec!["duplicated".to_string()],
    };
    let xml = to_junit(&report(&check(&h), &[], Some(expect)));
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(xml.contains("<system-out>1 duplicated found (judged by [expect])"));
    assert!(xml.contains("name=\"expect\" time=\"0\"/>"));
}

fn contract_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/report-contract.py")
}

#[test]
fn reports_keep_the_contract() {
    let script = contract_script();
    if !script.exists() {
        println!("note: {} is absent; contract not checked", script.display());
        return;
    }
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("note: python3 is absent; contract not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lost = {
        let mut h = clean();
        h[7] = read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]);
        h[8] = lake(300, 1, &lake_rows(&[1, 2, 3, 5]));
        h
    };
    let cases = [
        (report(&check(&clean()), &[("bus.p99", 1_000)], None), 0),
        (report(&check(&lost), &[("bus.p99", 1)], None), 1),
        (
            report(
                &check(&clean()),
                &[("lake.max", 1)],
                Some(Expect {
                    exit_code: Some(3),
                    anomalies: vec![],
                }),
            ),
            3,
        ),
    ];
    for (i, (r, code)) in cases.iter().enumerate() {
        assert_eq!(r.exit_code, *code);
        let path = dir.path().join(format!("report-{i}.json"));
        std::fs::write(&path, to_json(r)).unwrap();
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(&path)
            .arg("--exit-code")
            .arg(code.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "report {i} breaks the contract:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Random clean histories, and a single injected fault that must be caught.

/// A small deterministic generator (splitmix64): proptest picks the seed, this makes the draws.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// What to break in a generated history.
#[derive(Clone, Copy, Debug)]
enum Inject {
    Nothing,
    /// Drop one applied change from the enriched reads and the lake commits.
    Loss,
    /// Apply one change to the lake a second time.
    LakeDuplicate,
    /// Produce and read one change again at a new enriched offset.
    EnrichedDuplicate,
}

/// Splits `items` into batches of random size (1..=max).
fn batches<T: Clone>(d: &mut Draw, items: &[T], max: u64) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let n = (d.range(1, max) as usize).min(items.len() - i);
        out.push(items[i..i + n].to_vec());
        i += n;
    }
    out
}

/// A random history of keys, changes, poison, redo and batching that a correct pipeline could
/// have produced, with `inject` applied; returns it and the change id the injection touched.
fn generated(seed: u64, inject: Inject) -> (Vec<Observation>, Option<u64>) {
    let mut d = Draw(seed);
    let n_keys = d.range(1, 6);
    let partitions = d.range(1, 3) as u32;
    let mut t = 0u64;
    let mut h = vec![header()];
    let mut exists = vec![false; n_keys as usize + 1];
    let mut lsn = 0u64;
    // (change, poison, parked, comes back from redo)
    let mut all: Vec<(SourceChange, bool)> = Vec::new();
    let mut snapshot = Vec::new();
    for k in 1..=n_keys {
        if d.one_in(2) {
            lsn += 1;
            exists[k as usize] = true;
            snapshot.push(change(lsn, k, Op::Read, Some(d.next())));
        }
    }
    all.extend(snapshot.iter().map(|c| (c.clone(), false)));
    h.push(commit(0, 0, snapshot));
    for txid in 1..=d.range(1, 25) {
        t += d.range(0, 50);
        let mut changes = Vec::new();
        for _ in 0..d.range(1, 3) {
            let k = d.range(1, n_keys);
            lsn += 1;
            let (op, digest) = if !exists[k as usize] {
                (Op::Create, Some(d.next()))
            } else if d.one_in(5) {
                (Op::Delete, None)
            } else {
                (Op::Update, Some(d.next()))
            };
            let mut c = change(lsn, k, op, digest);
            c.poison = d.one_in(12);
            if !c.poison {
                exists[k as usize] = digest.is_some();
            }
            let parked = !c.poison && d.one_in(12);
            all.push((c.clone(), parked));
            changes.push(c);
        }
        h.push(commit(t, txid, changes));
    }

    let part = |c: &SourceChange| (c.key.id % u64::from(partitions)) as u32;
    let mut enriched_logs: Vec<Vec<u64>> = vec![Vec::new(); partitions as usize];
    for p in 0..partitions {
        let of_p: Vec<&(SourceChange, bool)> = all.iter().filter(|(c, _)| part(c) == p).collect();
        let raw: Vec<u64> = of_p.iter().map(|(c, _)| c.lsn).collect();
        let mut base = 0;
        for b in batches(&mut d, &raw, 4) {
            t += d.range(0, 20);
            h.push(produced(t, TopicName::Raw, p, base, &b));
            base += b.len() as u64;
        }
        let mut standard = Vec::new();
        for (c, _) in &of_p {
            if c.poison {
                h.push(routed(t, c.lsn, TopicName::Critical, RouteReason::Poison));
            } else {
                standard.push(c.lsn);
            }
        }
        let mut base = 0;
        for b in batches(&mut d, &standard, 4) {
            t += d.range(0, 20);
            h.push(produced(t, TopicName::Standard, p, base, &b));
            base += b.len() as u64;
        }
        for (c, parked) in &of_p {
            if c.poison {
                continue;
            }
            if *parked || d.one_in(10) {
                h.push(routed(
                    t,
                    c.lsn,
                    TopicName::Redo,
                    RouteReason::ReferenceMiss,
                ));
            }
            if !*parked {
                enriched_logs[p as usize].push(c.lsn);
            }
        }
        let mut base = 0;
        for b in batches(&mut d, &enriched_logs[p as usize].clone(), 4) {
            t += d.range(0, 20);
            h.push(produced(t, TopicName::Enriched, p, base, &b));
            base += b.len() as u64;
        }
    }

    let applied: Vec<u64> = enriched_logs.iter().flatten().copied().collect();
    let target =
        (!applied.is_empty()).then(|| applied[d.range(0, applied.len() as u64 - 1) as usize]);
    let dropped = match inject {
        Inject::Loss => target,
        _ => None,
    };
    if let (Inject::EnrichedDuplicate, Some(id)) = (inject, target) {
        let p = enriched_logs.iter().position(|l| l.contains(&id)).unwrap();
        let base = enriched_logs[p].len() as u64;
        t += 1;
        h.push(produced(t, TopicName::Enriched, p as u32, base, &[id]));
        enriched_logs[p].push(id);
    }

    // Read batches per partition (with an occasional re-read after a "restart"), interleaved
    // across partitions at random; the lake applies what it reads, committing at random points.
    let mut queues: Vec<Vec<(u32, u64, Vec<u64>)>> = Vec::new();
    for (p, log) in enriched_logs.iter().enumerate() {
        let mut q = Vec::new();
        let mut base = 0u64;
        for b in batches(&mut d, log, 5) {
            q.push((p as u32, base, b.clone()));
            base += b.len() as u64;
        }
        q.reverse();
        queues.push(q);
    }
    let mut pending_rows: Vec<u64> = Vec::new();
    let mut checkpoint = 0;
    let mut already_applied = std::collections::BTreeSet::new();
    loop {
        let live: Vec<usize> = (0..queues.len())
            .filter(|i| !queues[*i].is_empty())
            .collect();
        if live.is_empty() {
            break;
        }
        let qi = live[d.range(0, live.len() as u64 - 1) as usize];
        let (p, base, ids) = queues[qi].pop().unwrap();
        t += d.range(0, 30);
        // Read around the dropped change, as if it had been truncated away.
        let mut start = 0;
        for (i, id) in ids.iter().enumerate() {
            if Some(*id) == dropped {
                if i > start {
                    h.push(read(
                        t,
                        TopicName::Enriched,
                        p,
                        base + start as u64,
                        &ids[start..i],
                    ));
                }
                start = i + 1;
            }
        }
        if start < ids.len() {
            h.push(read(
                t,
                TopicName::Enriched,
                p,
                base + start as u64,
                &ids[start..],
            ));
        }
        if d.one_in(6) && !ids.iter().any(|id| Some(*id) == dropped) {
            // A restarted reader fetches the same positions again: not a duplicate.
            h.push(read(t, TopicName::Enriched, p, base, &ids));
        }
        // The sink applies each change once, even when it was produced twice.
        for id in ids {
            if Some(id) != dropped && already_applied.insert(id) {
                pending_rows.push(id);
            }
        }
        if d.one_in(3) {
            checkpoint += 1;
            t += d.range(0, 30);
            h.push(lake_commit_of(&all, t, checkpoint, &pending_rows));
            pending_rows.clear();
        }
    }
    if let (Inject::LakeDuplicate, Some(id)) = (inject, target) {
        pending_rows.push(id);
    }
    checkpoint += 1;
    t += 10;
    h.push(lake_commit_of(&all, t, checkpoint, &pending_rows));
    h.push(run_end(t + 10, true));
    (h, target)
}

fn lake_commit_of(
    all: &[(SourceChange, bool)],
    t_ms: u64,
    checkpoint: u64,
    ids: &[u64],
) -> Observation {
    let rows: Vec<(u64, u64, Option<u64>)> = ids
        .iter()
        .map(|id| {
            let c = &all[(*id - 1) as usize].0;
            (c.lsn, c.key.id, c.digest)
        })
        .collect();
    lake(t_ms, checkpoint, &rows)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_clean_histories_pass(seed in any::<u64>()) {
        let (h, _) = generated(seed, Inject::Nothing);
        let a = check(&h);
        prop_assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once.examples);
        prop_assert_eq!(report(&a, &[], None).exit_code, 0);
        prop_assert_eq!(
            a.counts.lake_rows + a.counts.critical + a.counts.parked_in_redo,
            a.counts.source_changes
        );
    }

    #[test]
    fn a_single_loss_is_always_caught(seed in any::<u64>()) {
        let (h, target) = generated(seed, Inject::Loss);
        let a = check(&h);
        if let Some(id) = target {
            prop_assert_eq!(a.exactly_once.lost, 1);
            let ex = a.exactly_once.examples.iter().find(|e| e.anomaly == "lost").unwrap();
            prop_assert_eq!(ex.change_id, Some(id));
            prop_assert_eq!(a.exactly_once.duplicated + a.exactly_once.reordered, 0);
            prop_assert_eq!(report(&a, &[], None).exit_code, 1);
        }
    }

    #[test]
    fn a_single_lake_duplicate_is_always_caught(seed in any::<u64>()) {
        let (h, target) = generated(seed, Inject::LakeDuplicate);
        let a = check(&h);
        if let Some(id) = target {
            prop_assert_eq!(a.exactly_once.duplicated, 1);
            prop_assert_eq!(a.exactly_once.examples[0].change_id, Some(id));
            prop_assert_eq!(a.exactly_once.lost + a.exactly_once.reordered, 0);
            prop_assert_eq!(report(&a, &[], None).exit_code, 1);
        }
    }

    #[test]
    fn a_single_enriched_duplicate_is_always_caught(seed in any::<u64>()) {
        let (h, target) = generated(seed, Inject::EnrichedDuplicate);
        let a = check(&h);
        if let Some(id) = target {
            prop_assert_eq!(counts(&a), [0, 1, 0, 0, 0], "{:?}", a.exactly_once.examples);
            prop_assert_eq!(a.exactly_once.examples[0].change_id, Some(id));
        }
    }
}

#[test]
fn a_change_lost_after_coming_back_from_redo_is_lost_not_parked() {
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5, 4]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(a.exactly_once.lost, 1);
    assert_eq!(a.counts.parked_in_redo, 0);
}

#[test]
fn html_has_the_verdict_tables_and_charts() {
    let a = check(&clean());
    let r = report(&a, &[("bus.p99", 1_000)], None);
    assert!(!r.timeline.is_empty(), "the timeline covers the run");
    assert_eq!(
        r.timeline.iter().map(|t| t.committed).sum::<u64>(),
        3,
        "log changes only"
    );
    let html = nrtsim_reports::to_html(&r);
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("PASS"));
    assert_eq!(html.matches("<svg").count(), 2, "two charts");
    assert!(!html.contains("chart not drawn"));
    assert!(html.contains("bus.p99"));
    assert!(html.contains("nrtsim run scenarios/tiny.toml --seed 7"));
}

#[test]
fn a_transaction_the_lake_shows_in_part_is_torn_and_the_scenario_decides_its_weight() {
    // Transaction 1 (changes 3 and 4) becomes visible in two snapshots.
    let mut h = source();
    let all = [1, 2, 3, 4, 5];
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(produced(220, TopicName::Standard, 0, 0, &all));
    h.push(produced(230, TopicName::Enriched, 0, 0, &all));
    h.push(read(240, TopicName::Enriched, 0, 0, &all));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3])));
    h.push(lake(400, 2, &lake_rows(&[4, 5])));
    h.push(run_end(500, true));
    let warn = check(&h);
    assert_eq!(warn.exactly_once.torn_transaction, 1);
    let ex = warn
        .exactly_once
        .examples
        .iter()
        .find(|e| e.anomaly == "torn_transaction")
        .unwrap();
    assert_eq!(ex.change_id, Some(3));
    assert!(
        ex.location.contains("more than one snapshot"),
        "{}",
        ex.location
    );
    assert_eq!(
        report(&warn, &[], None).exit_code,
        0,
        "a warning by default"
    );

    let strict = CheckOptions {
        torn_transaction: nrtsim_reports::TornPolicy::Violation,
        ..CheckOptions::default()
    };
    let a = analyze(&h, &strict);
    assert_eq!(
        report(&a, &[], None).exit_code,
        1,
        "a violation when the scenario says so"
    );

    // The clean history applies the transaction in one snapshot: not torn.
    assert_eq!(check(&clean()).exactly_once.torn_transaction, 0);
}

#[test]
fn skew_over_partitions_is_flagged_past_ten_times() {
    let h = before_end(
        clean(),
        vec![
            produced(250, TopicName::Raw, 1, 0, &[1]),
            produced(251, TopicName::Raw, 1, 1, &[2]),
        ],
    );
    // Partition 0 took 5 records, partition 1 took 2: not skewed.
    let a = check(&h);
    let raw = a.skew.iter().find(|s| s.name == "raw").expect("raw spread");
    assert_eq!((raw.max, raw.min), (5, 2));
    assert!(!raw.flagged);
    // Twenty-two records on partition 0 against two on partition 1: flagged.
    let ids: Vec<u64> = (1..=5).cycle().take(17).collect();
    let hot = before_end(h, vec![produced(260, TopicName::Raw, 0, 5, &ids)]);
    let raw = check(&hot)
        .skew
        .into_iter()
        .find(|s| s.name == "raw")
        .expect("raw spread");
    assert_eq!((raw.max, raw.min), (22, 2));
    assert!(raw.flagged, "{raw:?}");
}

#[test]
fn two_reads_that_disagree_about_an_offset_are_inconsistent() {
    // Offset 1 of raw/0 held change 2 when first read, change 3 when read again (a leader
    // change replaced the record under the readers).
    let h = before_end(
        clean(),
        vec![
            read(250, TopicName::Raw, 0, 0, &[1, 2]),
            read(260, TopicName::Raw, 0, 0, &[1, 3]),
            read(270, TopicName::Raw, 0, 1, &[4]),
        ],
    );
    let a = check(&h);
    assert_eq!(
        a.exactly_once.inconsistent_offsets, 1,
        "reported once per offset"
    );
    let ex = a
        .exactly_once
        .examples
        .iter()
        .find(|e| e.anomaly == "inconsistent_offsets")
        .unwrap();
    assert!(
        ex.location
            .starts_with("raw p0@1: change 2 first, change 3 later"),
        "{}",
        ex.location
    );
    assert_eq!(report(&a, &[], None).exit_code, 1);
    // Reading the same records again is consistent.
    let again = before_end(clean(), vec![read(250, TopicName::Raw, 0, 0, &[1, 2])]);
    assert_eq!(check(&again).exactly_once.inconsistent_offsets, 0);
}

/// `clean()` as an upsert lake commits it: changes 1 and 2 are folded into 3 and 5, the later
/// versions of their keys in the same commit.
fn clean_upsert() -> Vec<Observation> {
    clean()
        .into_iter()
        .map(|o| match o {
            Observation::LakeCommit {
                t_ms,
                host,
                checkpoint_id,
                snapshot_id,
                mut rows,
                files,
            } => {
                for r in &mut rows {
                    r.folded = r.change_id <= 2;
                }
                Observation::LakeCommit {
                    t_ms,
                    host,
                    checkpoint_id,
                    snapshot_id,
                    rows,
                    files,
                }
            }
            o => o,
        })
        .collect()
}

#[test]
fn folded_versions_are_lost_only_when_every_change_must_reach_the_lake() {
    let every = CheckOptions {
        lake_history: nrtsim_reports::LakeHistory::EveryChange,
        ..CheckOptions::default()
    };
    // End state is enough: folding is what an upsert table does.
    let a = check(&clean_upsert());
    assert_eq!(a.exactly_once.total(), 0, "{:?}", a.exactly_once);
    // Every change needed: the two folded versions never showed in any snapshot.
    let a = analyze(&clean_upsert(), &every);
    assert_eq!(a.exactly_once.lost, 2);
    assert_eq!(a.exactly_once.total(), 2, "{:?}", a.exactly_once);
    let ids: Vec<Option<u64>> = a
        .exactly_once
        .examples
        .iter()
        .map(|e| e.change_id)
        .collect();
    assert_eq!(ids, vec![Some(1), Some(2)]);
    let ex = &a.exactly_once.examples[0];
    assert!(ex.location.contains("folded"), "{ex:?}");
    assert_eq!(report(&a, &[], None).exit_code, 1);
    // A changelog lake folds nothing: the same check passes.
    let a = analyze(&clean(), &every);
    assert_eq!(a.exactly_once.total(), 0, "{:?}", a.exactly_once);
}

#[test]
fn the_conservation_line_accounts_for_every_change_once() {
    let c = check(&clean()).conservation;
    assert_eq!(
        (c.source, c.enriched, c.unaccounted, c.holds),
        (5, 5, 0, true)
    );

    // Change 4 waits in redo, change 5 went to critical, changes 1-3 were enriched.
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(routed(225, 4, TopicName::Redo, RouteReason::ReferenceMiss));
    h.push(routed(226, 5, TopicName::Critical, RouteReason::Poison));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3])));
    h.push(run_end(400, true));
    let c = check(&h).conservation;
    assert_eq!(
        (
            c.source,
            c.enriched,
            c.waiting_in_redo,
            c.critical,
            c.unaccounted
        ),
        (5, 3, 1, 1, 0)
    );
    assert!(c.holds);

    // The same, with change 3 dropped before the enriched topic: unaccounted, and lost.
    let h: Vec<Observation> = h
        .into_iter()
        .map(|o| match o {
            Observation::Produced {
                topic: TopicName::Enriched,
                ..
            } => produced(230, TopicName::Enriched, 0, 0, &[1, 2]),
            Observation::Read { .. } => read(240, TopicName::Enriched, 0, 0, &[1, 2]),
            Observation::LakeCommit { .. } => lake(300, 1, &lake_rows(&[1, 2])),
            o => o,
        })
        .collect();
    let a = check(&h);
    assert_eq!(
        (a.conservation.unaccounted, a.conservation.holds),
        (1, false)
    );
    assert_eq!(a.exactly_once.lost, 1);
}

/// A lake commit of card transactions `ids` (key id = change id = digest).
fn card_lake(t_ms: u64, ids: &[u64]) -> Observation {
    Observation::LakeCommit {
        t_ms,
        host: "lake-0".to_string(),
        checkpoint_id: 1,
        snapshot_id: 1,
        rows: ids
            .iter()
            .map(|&id| LakeRow {
                change_id: id,
                key: Key {
                    table: Table::CardTransactions,
                    id,
                },
                digest: Some(id),
                folded: false,
                balance_cents: None,
            })
            .collect(),
        files: Default::default(),
    }
}

#[test]
fn the_fraud_scorer_has_its_own_latency_path_and_unscored_payments_are_counted() {
    let payment = |lsn: u64, id: u64| SourceChange {
        lsn,
        key: Key {
            table: Table::CardTransactions,
            id,
        },
        op: Op::Create,
        digest: Some(lsn),
        poison: false,
        payment: None,
        balance_cents: None,
    };
    let fraud_read = |t_ms: u64, base: u64, ids: &[u64]| Observation::Read {
        t_ms,
        stage: Stage::Fraud,
        host: "fraud-0".to_string(),
        topic: TopicName::Enriched,
        partition: 0,
        base_offset: base,
        change_ids: ids.to_vec(),
    };
    let mut h = vec![
        header(),
        commit(1_000, 1, vec![payment(1, 1)]),
        commit(2_000, 2, vec![payment(2, 2)]),
    ];
    h.push(produced(2_100, TopicName::Enriched, 0, 0, &[1, 2]));
    h.push(read(2_200, TopicName::Enriched, 0, 0, &[1, 2]));
    h.push(fraud_read(2_500, 0, &[1]));
    h.push(Observation::FraudAlert {
        t_ms: 2_500,
        change_id: 1,
        score: 60,
        reasons: "velocity".to_string(),
    });
    h.push(card_lake(3_000, &[1, 2]));
    h.push(run_end(4_000, true));
    let a = check(&h);
    assert_eq!(a.exactly_once.total(), 0, "{:?}", a.exactly_once);
    assert_eq!(
        (
            a.counts.fraud_scored,
            a.counts.fraud_unscored,
            a.counts.fraud_alerts
        ),
        (1, 1, 1)
    );
    let r = report(&a, &[("fraud.p99", 1_000)], None);
    assert!(to_markdown(&r).contains("| fraud: unscored | 1 |"));
    let fraud = r.latency.fraud.clone().expect("a fraud path");
    assert_eq!((fraud.count, fraud.max_ms), (1, 1_500));
    assert!(!r.slo[0].pass, "1.5 s is over the 1 s limit");
    // The bus path still ends at the lake sink's read, not the scorer's.
    assert_eq!(r.latency.bus.max_ms, 1_200);
    // A record no source change produced, read by the scorer alone, is a phantom.
    h.insert(h.len() - 1, fraud_read(3_500, 2, &[77]));
    let a = check(&h);
    assert_eq!(a.exactly_once.phantom, 1, "{:?}", a.exactly_once);
    let ex = &a.exactly_once.examples[0];
    assert_eq!(ex.change_id, Some(77));
    assert_eq!(ex.location, "read by the fraud scorer from enriched p0@2");
    // Without a scorer, the path is absent from the report, and so are its counts (no 0
    // that nothing measured), as are the spend aggregator's.
    let plain = report(&check(&clean()), &[], None);
    assert!(plain.latency.fraud.is_none());
    assert!(!to_json(&plain).contains("\"fraud\""));
    let md = to_markdown(&plain);
    assert!(md.contains("| critical |"), "{md}");
    assert!(!md.contains("fraud:") && !md.contains("spend:"), "{md}");
    assert!(!nrtsim_reports::to_html(&plain).contains("fraud:"));
}

#[test]
fn spend_aggregates_are_reconciled_against_the_source_for_windows_that_fired() {
    let pay = |lsn: u64, id: u64, account: u64, amount: i64| SourceChange {
        lsn,
        key: Key {
            table: Table::CardTransactions,
            id,
        },
        op: Op::Create,
        digest: Some(lsn),
        poison: false,
        payment: Some(nrtsim_history::Payment {
            account_id: account,
            amount_cents: amount,
        }),
        balance_cents: None,
    };
    let agg = |t_ms: u64, account: u64, start: u64, spend: i64, n: u32| Observation::Aggregate {
        t_ms,
        account_id: account,
        window_start_ms: start,
        window_ms: 10_000,
        spend_cents: spend,
        payments: n,
    };
    let wm = |t_ms: u64, watermark_ms: u64| Observation::Watermark {
        t_ms,
        watermark_ms,
        window_ms: 10_000,
        late_dropped: 1,
    };
    // Account 7 pays 100 and 50 in window 0..10 s, 30 in window 10..20 s; account 8 pays 5.
    let source = vec![
        header(),
        commit(1_000, 1, vec![pay(1, 1, 7, 100)]),
        commit(2_000, 2, vec![pay(2, 2, 7, 50), pay(3, 3, 8, 5)]),
        commit(12_000, 3, vec![pay(4, 4, 7, 30)]),
    ];
    let through = |mut h: Vec<Observation>, extra: Vec<Observation>| {
        let ids = [1, 2, 3, 4];
        h.push(produced(12_100, TopicName::Enriched, 0, 0, &ids));
        h.push(read(12_200, TopicName::Enriched, 0, 0, &ids));
        h.push(card_lake(13_000, &ids));
        h.extend(extra);
        h.push(run_end(20_000, true));
        h
    };
    // Only window 0..10 s has fired (watermark 11 s); window 10..20 s is not judged yet.
    let good = through(
        source.clone(),
        vec![
            agg(12_300, 7, 0, 150, 2),
            agg(12_300, 8, 0, 5, 1),
            wm(12_300, 11_000),
        ],
    );
    let a = check(&good);
    assert_eq!(a.exactly_once.aggregate_mismatch, Some(0));
    assert_eq!(a.counts.aggregates_reconciled, 2);
    assert_eq!(a.counts.late_dropped, 1);
    let md = to_markdown(&report(&a, &[], None));
    assert!(md.contains("| spend: payments dropped late | 1 |"), "{md}");
    // The stream dropped account 7's second payment: its window no longer matches.
    let bad = through(
        source.clone(),
        vec![
            agg(12_300, 7, 0, 100, 1),
            agg(12_300, 8, 0, 5, 1),
            wm(12_300, 11_000),
        ],
    );
    let a = check(&bad);
    assert_eq!(a.exactly_once.aggregate_mismatch, Some(1));
    let ex = a
        .exactly_once
        .examples_of(nrtsim_reports::AnomalyKind::AggregateMismatch)
        .next()
        .expect("an example");
    assert_eq!(ex.key.as_deref(), Some("accounts/7"));
    assert!(ex
        .location
        .contains("streamed 100 cents over 1 payments, batch 150 over 2"));
    assert_eq!(report(&a, &[], None).exit_code, 1);
    // A late firing that corrects the window counts: the last emission is the value.
    let corrected = through(
        source.clone(),
        vec![
            agg(12_300, 7, 0, 100, 1),
            agg(12_300, 8, 0, 5, 1),
            wm(12_300, 11_000),
            agg(12_400, 7, 0, 150, 2),
        ],
    );
    assert_eq!(check(&corrected).exactly_once.aggregate_mismatch, Some(0));
    // An aggregator whose watermark never passed a window compared nothing: the anomaly is
    // not measured, so absent rather than 0, and the count says why.
    let a = check(&through(source.clone(), vec![wm(100, 0)]));
    assert_eq!(a.exactly_once.aggregate_mismatch, None);
    assert_eq!(a.counts.aggregates_reconciled, 0);
    // Without a spend aggregator the anomaly is not checked, so not reported.
    let a = check(&through(source, vec![]));
    assert_eq!(a.exactly_once.aggregate_mismatch, None);
    assert!(!to_json(&report(&a, &[], None)).contains("aggregate_mismatch"));
}

#[test]
fn a_key_read_out_of_lsn_order_in_raw_is_reordered_but_a_replay_is_not() {
    // The CDC connector's batch of changes 1-2 was retried and landed after changes 3-5:
    // change 1 after change 3 of the same key, change 2 after change 5 of the same key.
    let mut h = source();
    h.push(read(210, TopicName::Raw, 0, 0, &[3, 4, 5]));
    h.push(read(211, TopicName::Raw, 0, 3, &[1, 2]));
    h.extend(clean().into_iter().skip(source().len()));
    let a = check(&h);
    assert_eq!(counts(&a), [0, 0, 2, 0, 0], "{:?}", a.exactly_once.examples);
    let wheres: Vec<&str> = a
        .exactly_once
        .examples
        .iter()
        .map(|e| e.location.as_str())
        .collect();
    assert_eq!(
        wheres,
        ["raw p0@3: lsn 1 after lsn 3", "raw p0@4: lsn 2 after lsn 5"]
    );

    // Changes of one key on two partitions (keyed at random) have no order between the
    // partitions in raw: change 1 on p1 read after change 3 on p0 is no reordering there.
    let mut h = source();
    h.push(read(210, TopicName::Raw, 0, 0, &[2, 3, 4, 5]));
    h.push(read(211, TopicName::Raw, 1, 0, &[1]));
    h.extend(clean().into_iter().skip(source().len()));
    let a = check(&h);
    assert_eq!(counts(&a)[2], 0, "{:?}", a.exactly_once.examples);

    // Change 4 lands after change 5, but they are changes to different keys: the partition's
    // order across keys is no contract, so nothing is reordered.
    let mut h = source();
    h.push(read(210, TopicName::Raw, 0, 0, &[1, 2, 5]));
    h.push(read(211, TopicName::Raw, 0, 3, &[3, 4]));
    h.extend(clean().into_iter().skip(source().len()));
    let a = check(&h);
    assert_eq!(counts(&a), [0, 0, 0, 0, 0], "{:?}", a.exactly_once.examples);

    // In order, then replayed from the start after a restart: duplicates in raw, not a
    // reordering (and a re-read of old offsets is neither).
    let mut h = source();
    h.push(read(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(read(211, TopicName::Raw, 0, 0, &[1, 2]));
    h.push(read(212, TopicName::Raw, 0, 5, &[1, 2, 3, 4, 5]));
    h.extend(clean().into_iter().skip(source().len()));
    assert_eq!(counts(&check(&h))[2], 0);
}

#[test]
fn transaction_ends_are_held_against_the_source_and_the_enriched_topic() {
    let end = |txid: u64, event_count: u64| Observation::TxnEnd {
        t_ms: 205,
        txid,
        event_count,
    };
    let c = check(&before_end(clean(), vec![end(0, 2), end(1, 2), end(2, 1)])).completeness;
    assert_eq!(
        (c.transactions, c.announced, c.miscounted, c.incomplete),
        (3, 3, 0, 0)
    );
    assert!(c.examples.is_empty());

    // The connector's END for transaction 1 counts one event of two.
    let c = check(&before_end(clean(), vec![end(0, 2), end(1, 1)])).completeness;
    assert_eq!((c.announced, c.miscounted, c.incomplete), (2, 1, 0));
    assert_eq!(
        c.examples,
        ["transaction 1: END says 1 events, the source committed 2"]
    );

    // Change 4 (transaction 1) never reaches the enriched topic.
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(end(1, 2));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!((a.completeness.incomplete, a.exactly_once.lost), (1, 1));
    assert_eq!(
        a.completeness.examples,
        ["transaction 1: 1 of its 2 events never reached enriched"]
    );
    assert_eq!(
        a.exactly_once.torn_transaction, 1,
        "the lake shows it in part"
    );

    // The same, with an END that counts only the change that arrived (as for a table the
    // connector does not capture): miscounted, and still one torn transaction, not two.
    let h: Vec<Observation> = h
        .into_iter()
        .map(|o| match o {
            Observation::TxnEnd { txid: 1, .. } => end(1, 1),
            o => o,
        })
        .collect();
    let a = check(&h);
    assert_eq!(
        (a.completeness.miscounted, a.completeness.incomplete),
        (1, 1)
    );
    assert_eq!(a.exactly_once.torn_transaction, 1);
}

// ---------------------------------------------------------------------------------------------
// Kafka transactions: aborted reads.

/// A produce acknowledgement tagged with Kafka transaction `n`.
fn in_txn(n: u64, mut o: Observation) -> Observation {
    if let Observation::Produced { txn, .. } = &mut o {
        *txn = Some(n);
    }
    o
}

/// Changes 1..=5 to enriched partition 0 through transactions: transaction 1 writes changes 1
/// and 2 at offsets 0 and 1 and is aborted (its marker at 2); transaction 2 writes all five at
/// 3..=7 and commits. `read_aborted` makes the lake sink read offsets 0 and 1 as well, as a
/// `read_uncommitted` reader does.
fn transactional(read_aborted: bool, acknowledged: bool) -> Vec<Observation> {
    let all = [1, 2, 3, 4, 5];
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(produced(220, TopicName::Standard, 0, 0, &all));
    if acknowledged {
        h.push(in_txn(1, produced(225, TopicName::Enriched, 0, 0, &[1, 2])));
        h.push(txn_end(226, 1, false));
    } else {
        // The producer crashed before the acknowledgement: only the leader knows.
        h.push(Observation::AbortMarker {
            t_ms: 226,
            topic: TopicName::Enriched,
            partition: 0,
            offsets: vec![0, 1],
            change_ids: vec![1, 2],
        });
    }
    if read_aborted {
        h.push(read(227, TopicName::Enriched, 0, 0, &[1, 2]));
    }
    h.push(in_txn(2, produced(230, TopicName::Enriched, 0, 3, &all)));
    h.push(txn_end(231, 2, true));
    h.push(read(240, TopicName::Enriched, 0, 3, &all));
    h.push(lake(300, 1, &lake_rows(&all)));
    h.push(run_end(400, true));
    h
}

#[test]
fn a_reader_of_an_aborted_transaction_is_caught() {
    for acknowledged in [true, false] {
        let a = check(&transactional(true, acknowledged));
        let eo = &a.exactly_once;
        assert_eq!(eo.aborted_read, Some(2), "acknowledged: {acknowledged}");
        let ex: Vec<_> = eo
            .examples
            .iter()
            .filter(|e| e.anomaly == "aborted_read")
            .collect();
        assert_eq!(ex[0].change_id, Some(1));
        assert!(
            ex[0].location.contains("enriched p0@0") && ex[0].location.contains("aborted"),
            "{}",
            ex[0].location
        );
        // The aborted copies and the committed ones sit at different offsets.
        assert_eq!(eo.duplicated, 2);
        assert!(!eo.is_clean());
    }
}

/// Transaction 1 writes changes 1 and 2 to enriched partition 0 at offsets 0 and 1; a leader
/// change cuts the partition back to 0, and transaction 1 is aborted; transaction 2 writes the
/// same changes again at the same offsets and commits, and the lake reads them there.
/// `read_before_cut` makes a `read_uncommitted` reader read the first copies before the cut.
fn rewritten_after_a_cut(read_before_cut: bool) -> Vec<Observation> {
    let all = [1, 2, 3, 4, 5];
    let mut h = source();
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(produced(220, TopicName::Standard, 0, 0, &all));
    h.push(in_txn(1, produced(225, TopicName::Enriched, 0, 0, &[1, 2])));
    if read_before_cut {
        h.push(read(226, TopicName::Enriched, 0, 0, &[1, 2]));
    }
    h.push(leader_change(227, "broker-2", TopicName::Enriched, 1, 0));
    h.push(txn_end(228, 1, false));
    h.push(in_txn(2, produced(230, TopicName::Enriched, 0, 0, &all)));
    h.push(txn_end(231, 2, true));
    h.push(read(240, TopicName::Enriched, 0, 0, &all));
    h.push(lake(300, 1, &lake_rows(&all)));
    h.push(run_end(400, true));
    h
}

#[test]
fn a_committed_copy_written_where_a_cut_took_an_aborted_one_is_no_aborted_read() {
    let a = check(&rewritten_after_a_cut(false));
    assert_eq!(
        a.exactly_once.aborted_read,
        Some(0),
        "{:?}",
        a.exactly_once.examples
    );
    // Read before the cut, the aborted copies were read all the same.
    let a = check(&rewritten_after_a_cut(true));
    assert_eq!(
        a.exactly_once.aborted_read,
        Some(2),
        "{:?}",
        a.exactly_once.examples
    );
}

#[test]
fn a_read_committed_reader_skipping_aborted_records_is_clean() {
    for acknowledged in [true, false] {
        let a = check(&transactional(false, acknowledged));
        let eo = &a.exactly_once;
        assert_eq!(eo.aborted_read, Some(0), "measured, and none");
        assert!(eo.is_clean(), "{:?}", eo.examples);
        let json: serde_json::Value =
            serde_json::from_str(&to_json(&report(&a, &[], None))).unwrap();
        assert_eq!(json["exactly_once"]["aborted_read"], 0);
    }
    // Without transactions the anomaly is not measured, so it is absent.
    assert_eq!(check(&clean()).exactly_once.aborted_read, None);
}

// ---------------------------------------------------------------------------------------------
// Balance conservation.

/// Account 1 opens at 1000; a payment of 100 moves it to 900 (account update and card row in
/// one transaction); the lake's final row for the account holds `lake_balance`.
fn balance_history(lake_balance: i64) -> Vec<Observation> {
    let account = |lsn: u64, op: Op, balance: i64| SourceChange {
        balance_cents: Some(balance),
        ..change(lsn, 1, op, Some(balance as u64))
    };
    let card = SourceChange {
        key: Key {
            table: Table::CardTransactions,
            id: 1,
        },
        payment: Some(nrtsim_history::Payment {
            account_id: 1,
            amount_cents: 100,
        }),
        ..change(3, 0, Op::Create, Some(77))
    };
    let row = |change_id: u64, key: Key, digest: u64, balance: Option<i64>| LakeRow {
        change_id,
        key,
        digest: Some(digest),
        folded: false,
        balance_cents: balance,
    };
    vec![
        header(),
        commit(0, 0, vec![account(1, Op::Read, 1000)]),
        commit(100, 1, vec![account(2, Op::Update, 900), card.clone()]),
        Observation::LakeCommit {
            t_ms: 300,
            host: "lake-0".to_string(),
            checkpoint_id: 1,
            snapshot_id: 1,
            rows: vec![
                row(1, key(1), 1000, Some(1000)),
                row(2, key(1), 900, Some(lake_balance)),
                row(3, card.key, 77, None),
            ],
            files: Default::default(),
        },
        run_end(400, true),
    ]
}

#[test]
fn balances_that_add_up_pass_the_conservation_oracle() {
    let a = check(&balance_history(900));
    assert_eq!(
        a.exactly_once.balance_mismatch,
        Some(0),
        "{:?}",
        a.exactly_once
    );
    assert!(a.exactly_once.is_clean(), "{:?}", a.exactly_once);
    // Without account balances in the history the oracle is not run, and says so by absence.
    assert_eq!(check(&clean()).exactly_once.balance_mismatch, None);
}

#[test]
fn a_payment_the_lake_lost_breaks_balance_conservation() {
    // The balance update reached the lake, its card transaction did not.
    let mut h = balance_history(900);
    if let Observation::LakeCommit { rows, .. } = &mut h[3] {
        rows.pop();
    }
    let a = check(&h);
    assert_eq!(
        a.exactly_once.balance_mismatch,
        Some(1),
        "{:?}",
        a.exactly_once
    );
    assert_eq!(a.exactly_once.lost, 1);
    assert_eq!(a.exactly_once.lake_mismatch, 1);
    // A payment routed to critical is accounted for.
    let h = before_end(
        h,
        vec![routed(350, 3, TopicName::Critical, RouteReason::Poison)],
    );
    let a = check(&h);
    assert_eq!(
        a.exactly_once.balance_mismatch,
        Some(0),
        "{:?}",
        a.exactly_once
    );
}

#[test]
fn a_lake_balance_that_does_not_add_up_is_a_balance_mismatch() {
    let a = check(&balance_history(950));
    assert_eq!(
        a.exactly_once.balance_mismatch,
        Some(1),
        "{:?}",
        a.exactly_once
    );
    assert_eq!(
        a.exactly_once.lake_mismatch, 0,
        "the row's digest matches the source"
    );
    let ex = a
        .exactly_once
        .examples
        .iter()
        .find(|e| e.anomaly == "balance_mismatch")
        .expect("an example");
    assert_eq!(ex.key.as_deref(), Some("accounts/1"));
    assert!(
        ex.location
            .contains("lake balance 950, expected 900 (opening 1000, payments held"),
        "{}",
        ex.location
    );
}

fn schema_decision(t_ms: u64, version: u32, id: Option<u32>, reason: &str) -> Observation {
    Observation::SchemaDecision {
        t_ms,
        host: "standardize-0".into(),
        subject: "standard-bank.accounts".into(),
        table_version: version,
        id,
        reason: reason.into(),
    }
}

/// Without a registry the schema check is absent; with one and nothing refused it is 0.
#[test]
fn schema_rejected_is_absent_without_a_registry_and_zero_with_a_clean_one() {
    let a = check(&clean());
    assert_eq!(a.exactly_once.schema_rejected, None);
    assert!(a.schemas.is_none());
    let h = before_end(clean(), vec![schema_decision(150, 1, Some(1), "")]);
    let a = check(&h);
    assert_eq!(a.exactly_once.schema_rejected, Some(0));
    let sc = a.schemas.expect("a registry report");
    assert_eq!(sc.decisions.len(), 1);
    assert_eq!(report(&check(&h), &[], None).exit_code, 0);
}

/// A change routed to `critical` because the registry refused its schema is not lost, but it
/// is a `schema_rejected` violation that names the change, and the refusal's reason is kept
/// once however many tasks met it.
#[test]
fn a_change_refused_for_its_schema_is_caught() {
    let mut h = source();
    h.push(schema_decision(200, 1, Some(1), ""));
    h.push(schema_decision(
        205,
        2,
        None,
        "new schema is not BACKWARD compatible",
    ));
    h.push(schema_decision(
        206,
        2,
        None,
        "new schema is not BACKWARD compatible",
    ));
    h.push(produced(210, TopicName::Raw, 0, 0, &[1, 2, 3, 4, 5]));
    h.push(routed(
        215,
        4,
        TopicName::Critical,
        RouteReason::SchemaRejected,
    ));
    h.push(produced(216, TopicName::Critical, 0, 0, &[4]));
    // A restarted task routes the same change again: still one change.
    h.push(routed(
        217,
        4,
        TopicName::Critical,
        RouteReason::SchemaRejected,
    ));
    h.push(produced(220, TopicName::Standard, 0, 0, &[1, 2, 3, 5]));
    h.push(produced(230, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(read(240, TopicName::Enriched, 0, 0, &[1, 2, 3, 5]));
    h.push(lake(300, 1, &lake_rows(&[1, 2, 3, 5])));
    h.push(run_end(400, true));
    let a = check(&h);
    assert_eq!(a.exactly_once.lost, 0);
    assert_eq!(a.exactly_once.schema_rejected, Some(1));
    let ex: Vec<_> = a
        .exactly_once
        .examples_of(AnomalyKind::SchemaRejected)
        .collect();
    assert_eq!(ex[0].change_id, Some(4));
    assert!(
        ex[0].location.contains("could not carry on"),
        "{}",
        ex[0].location
    );
    let sc = a.schemas.clone().expect("a registry report");
    assert_eq!(sc.rejected_records, 1);
    assert_eq!(sc.decisions.len(), 2);
    assert_eq!(
        sc.decisions[1].reason.as_deref(),
        Some("new schema is not BACKWARD compatible")
    );
    assert_eq!(report(&a, &[], None).exit_code, 1);
}

// ---------------------------------------------------------------------------------------------
// Incremental snapshots.

fn snapshot_chunk(t_ms: u64, high_lsn: u64, rows: &[u64]) -> Observation {
    Observation::SnapshotChunk {
        t_ms,
        host: "cdc".into(),
        table: Table::Accounts,
        from_id: 0,
        to_id: None,
        low_lsn: high_lsn,
        high_lsn,
        rows: rows.to_vec(),
    }
}

/// An incremental snapshot taken at LSN 4 (after key 1's update) and the log after it:
/// `rows` are the snapshot's rows in key order, `streamed` the changes the log phase emits.
fn snapshot_then_log(rows: &[u64], streamed: &[u64]) -> Vec<Observation> {
    let all: Vec<u64> = rows.iter().chain(streamed).copied().collect();
    snapshot_writing(rows, &all)
}

/// The snapshot of [`snapshot_then_log`] reading `rows`, where only `written` (snapshot rows
/// and changes of the log) reach `raw` and go on to the lake.
fn snapshot_writing(rows: &[u64], written: &[u64]) -> Vec<Observation> {
    let mut h = source();
    let end = h.pop().expect("the delete of key 2");
    h.push(snapshot_chunk(150, 4, rows));
    h.push(end);
    h.push(produced(210, TopicName::Raw, 0, 0, written));
    h.push(read(212, TopicName::Raw, 0, 0, written));
    h.push(produced(220, TopicName::Standard, 0, 0, written));
    h.push(produced(230, TopicName::Enriched, 0, 0, written));
    h.push(read(240, TopicName::Enriched, 0, 0, written));
    h.push(lake(300, 1, &lake_rows(written)));
    h.push(run_end(400, true));
    h
}

/// Snapshot rows in key order (LSNs 3, 2, 4) followed by the log from the high watermark: the
/// change the row of key 1 took up is absorbed, not lost; the key order is not a reordering;
/// the rows stay out of the latency figures; conservation counts the absorbed change.
#[test]
fn a_watermarked_snapshot_absorbs_earlier_changes_and_passes() {
    let a = check(&snapshot_then_log(&[3, 2, 4], &[5]));
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once);
    assert_eq!(a.counts.absorbed_by_snapshot, 1);
    assert_eq!(a.conservation.absorbed_by_snapshot, 1);
    assert!(a.conservation.holds);
    assert_eq!(
        a.latency.bus.histogram.len(),
        1,
        "only the streamed change is timed"
    );
    assert_eq!(report(&a, &[], None).exit_code, 0);
}

/// A change the snapshot absorbed and that later reached `raw` but went no further is still
/// absorbed, and the count and the conservation term agree on it.
#[test]
fn an_absorbed_change_streamed_late_is_counted_once_as_absorbed() {
    let mut h = snapshot_then_log(&[3, 2, 4], &[5]);
    let end = h.pop().expect("the run end");
    h.push(produced(250, TopicName::Raw, 1, 0, &[1]));
    h.push(end);
    let a = check(&h);
    assert_eq!(counts(&a), [0; 5], "{:?}", a.exactly_once);
    assert_eq!(a.counts.absorbed_by_snapshot, 1);
    assert_eq!(a.conservation.absorbed_by_snapshot, 1);
    assert!(a.conservation.holds);
}

/// A snapshot row that was recorded but never written (its write failed under at-most-once)
/// stands for nothing: the change it would have absorbed is lost along with it.
#[test]
fn an_unwritten_snapshot_row_absorbs_nothing() {
    let a = check(&snapshot_writing(&[3, 2, 4], &[2, 4, 5]));
    assert_eq!(a.exactly_once.lost, 2, "{:?}", a.exactly_once);
    let mut ids: Vec<_> = a
        .exactly_once
        .examples_of(AnomalyKind::Lost)
        .filter_map(|e| e.change_id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(a.counts.absorbed_by_snapshot, 0);
}

/// The log started past the snapshot's high watermark without it: key 2's delete, made after
/// its row was read, never arrives. It is lost, and the lake keeps the deleted row.
#[test]
fn a_change_after_the_snapshot_that_the_log_skips_is_lost() {
    let a = check(&snapshot_then_log(&[3, 2, 4], &[]));
    assert_eq!(a.exactly_once.lost, 1);
    assert_eq!(a.exactly_once.lake_mismatch, 1);
    let ex: Vec<_> = a.exactly_once.examples_of(AnomalyKind::Lost).collect();
    assert_eq!(ex[0].change_id, Some(5));
    assert_eq!(report(&a, &[], None).exit_code, 1);
}

/// A row that does not stand at the chunk's high watermark (key 1 as of LSN 1, though LSN 3
/// updated it before the mark) absorbs nothing after it: the update is lost, not excused.
#[test]
fn a_stale_snapshot_row_does_not_excuse_the_changes_after_it() {
    let a = check(&snapshot_then_log(&[1, 2, 4], &[5]));
    assert_eq!(a.exactly_once.lost, 1);
    let ex: Vec<_> = a.exactly_once.examples_of(AnomalyKind::Lost).collect();
    assert_eq!(ex[0].change_id, Some(3));
    assert_eq!(a.counts.absorbed_by_snapshot, 0);
}

/// A source transaction whose rows an incremental snapshot read in different chunks reaches
/// the lake in more than one snapshot: backfill, not a torn transaction, even where torn
/// transactions are violations.
#[test]
fn a_transaction_read_by_snapshot_chunks_is_not_torn() {
    let mut h = source();
    let end = h.pop().expect("the delete of key 2");
    h.push(snapshot_chunk(150, 4, &[3]));
    h.push(snapshot_chunk(160, 4, &[2, 4]));
    h.push(end);
    let all = [3, 2, 4, 5];
    h.push(produced(210, TopicName::Raw, 0, 0, &all));
    h.push(produced(230, TopicName::Enriched, 0, 0, &all));
    h.push(read(240, TopicName::Enriched, 0, 0, &all));
    h.push(lake(300, 1, &lake_rows(&[3])));
    h.push(lake(400, 2, &lake_rows(&[2, 4, 5])));
    h.push(run_end(500, true));
    let opts = CheckOptions {
        torn_transaction: nrtsim_reports::TornPolicy::Violation,
        ..CheckOptions::default()
    };
    let a = analyze(&h, &opts);
    assert_eq!(a.exactly_once.torn_transaction, 0, "{:?}", a.exactly_once);
    assert_eq!(counts(&a), [0; 5]);
    // The same lake commits without the snapshot are a split transaction.
    let mut plain = source();
    plain.pop();
    plain.push(commit(200, 2, vec![change(5, 2, Op::Delete, None)]));
    let ids = [1, 2, 3, 4, 5];
    plain.push(produced(210, TopicName::Raw, 0, 0, &ids));
    plain.push(produced(230, TopicName::Enriched, 0, 0, &ids));
    plain.push(read(240, TopicName::Enriched, 0, 0, &ids));
    plain.push(lake(300, 1, &lake_rows(&[1, 2, 3])));
    plain.push(lake(400, 2, &lake_rows(&[4, 5])));
    plain.push(run_end(500, true));
    assert_eq!(analyze(&plain, &opts).exactly_once.torn_transaction, 1);
}
