//! Renderers of a [`Report`]: JSON (`report.json`), Markdown (`report.md`), JUnit XML
//! (`junit.xml`) and the one-screen terminal summary `nrtsim run` prints last.

use std::fmt::Write as _;

use crate::analysis::{offsets_reset_over, Completeness, Conservation, SchemaReport};
use crate::anomaly::AnomalyKind;
use crate::latency::{Percentiles, Tiers};
use crate::report::Report;

/// The report as pretty JSON, fields in their declared order.
pub fn to_json(report: &Report) -> String {
    // A report holds only strings, integers, finite floats and plain structs, so this cannot fail.
    let mut s = serde_json::to_string_pretty(report).expect("a report always serialises");
    s.push('\n');
    s
}

/// A duration for people: `12ms`, `1.4s`, `2m03s`, `1h05m`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = ms / 100;
        format!("{}.{}s", tenths / 10, tenths % 10)
    } else if ms < 3_600_000 {
        let s = ms / 1_000;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = ms / 60_000;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// The counts a report shows, in order. The fraud scorer's and the spend aggregator's are
/// left out of a run that has no such consumer (as the summary leaves them out), so that no
/// count reads 0 where nothing was measured.
pub(crate) fn count_rows(r: &Report) -> Vec<(&'static str, u64)> {
    let c = &r.counts;
    let has_fraud = c.fraud_scored + c.fraud_unscored > 0;
    let has_spend = r.exactly_once.aggregate_mismatch.is_some();
    let rows = [
        ("source changes", c.source_changes),
        ("of which snapshot", c.snapshot_changes),
        ("absorbed by snapshot", c.absorbed_by_snapshot),
        ("raw", c.raw),
        ("standard", c.standard),
        ("enriched", c.enriched),
        ("lake rows", c.lake_rows),
        ("lake keys (final)", c.lake_keys),
        ("redo", c.redo),
        ("parked in redo", c.parked_in_redo),
        ("critical", c.critical),
        ("unfinished (not drained)", c.unfinished),
        ("fraud: scored", c.fraud_scored),
        ("fraud: unscored", c.fraud_unscored),
        ("fraud: alerts", c.fraud_alerts),
        ("spend: aggregates reconciled", c.aggregates_reconciled),
        ("spend: payments dropped late", c.late_dropped),
    ];
    rows.into_iter()
        .filter(|(name, _)| {
            (has_fraud || !name.starts_with("fraud:")) && (has_spend || !name.starts_with("spend:"))
        })
        .collect()
}

/// Writes `head` and then each item two spaces apart, wrapping lines at 100 columns with the
/// continuation indented under the first item.
fn write_wrapped(out: &mut String, head: &str, items: impl IntoIterator<Item = String>) {
    let mut line = head.to_string();
    for item in items {
        if line.len() > head.len() && line.len() + 2 + item.len() > 100 {
            let _ = writeln!(out, "{line}");
            line = " ".repeat(head.len());
        }
        line.push_str("  ");
        line.push_str(&item);
    }
    let _ = writeln!(out, "{line}");
}

/// The conservation line in words.
pub(crate) fn conservation_line(c: &Conservation) -> String {
    // The snapshot term appears only in runs with an incremental snapshot.
    let absorbed = if c.absorbed_by_snapshot > 0 {
        format!(" + absorbed by snapshot {}", c.absorbed_by_snapshot)
    } else {
        String::new()
    };
    format!(
        "conserved  source {} = enriched {} + redo {} + critical {}{absorbed} + unaccounted {}  {}",
        c.source,
        c.enriched,
        c.waiting_in_redo,
        c.critical,
        c.unaccounted,
        if c.holds { "holds" } else { "BROKEN" }
    )
}

/// The schema registry's decisions in one line: versions registered, schemas refused, and
/// records sent to `critical` for their schema.
pub(crate) fn schema_line(sc: &SchemaReport) -> String {
    let registered = sc.decisions.iter().filter(|d| d.id.is_some()).count();
    let refused = sc.decisions.len() - registered;
    if sc.decisions.is_empty() {
        return format!(
            "schemas  no registry; to critical for a changed table schema: {}",
            sc.rejected_records
        );
    }
    format!(
        "schemas  {registered} registered, {refused} refused; to critical: {} refused, {} unreadable",
        sc.rejected_records, sc.unreadable_records
    )
}

/// The completeness oracle in words.
pub(crate) fn completeness_line(c: &Completeness) -> String {
    format!(
        "txn ENDs   {} of {} transactions announced  miscounted {}  incomplete {}",
        c.announced, c.transactions, c.miscounted, c.incomplete
    )
}

/// One latency path's cells as every table shows them: p50, p90, p99, p99.9, max, count.
pub(crate) fn percentile_cells(p: &Percentiles) -> [String; 6] {
    [
        human_ms(p.p50_ms),
        human_ms(p.p90_ms),
        human_ms(p.p99_ms),
        human_ms(p.p999_ms),
        human_ms(p.max_ms),
        p.count.to_string(),
    ]
}

/// The latency paths every report shows, in order, with the end-to-end paths' tiers.
pub(crate) fn latency_rows(r: &Report) -> Vec<(&'static str, &Percentiles, Option<&Tiers>)> {
    let l = &r.latency;
    let mut rows = vec![
        ("ingest", &l.stages.ingest, None),
        ("standardize", &l.stages.standardize, None),
        ("enrich", &l.stages.enrich, None),
        ("lake (stage)", &l.stages.lake, None),
        ("bus (e2e)", &l.bus, Some(&r.tiers.bus)),
        ("lake (e2e)", &l.lake, Some(&r.tiers.lake)),
    ];
    if let Some(fraud) = &l.fraud {
        rows.push(("fraud (e2e)", fraud, r.tiers.fraud.as_ref()));
    }
    rows
}

/// The report as Markdown: summary, counts, latency, tiers, anomalies, SLOs, faults, replay.
pub fn to_markdown(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# nrtsim report: {}\n", r.scenario);
    let _ = writeln!(
        md,
        "**Verdict: {}** (exit code {}) · seed {} · simulated {} · wall {} · {:.0} changes/s · {}\n",
        r.verdict.name().to_uppercase(),
        r.exit_code,
        r.seed,
        human_ms(r.sim_duration_ms),
        human_ms(r.wall_ms),
        r.changes_per_wall_s,
        if r.drained { "drained" } else { "**not drained**" },
    );
    if let Some(e) = &r.expectation {
        let _ = writeln!(
            md,
            "Expectation (`[expect]` exit code {}, anomalies [{}]): **{}**",
            e.exit_code.map_or("any".to_string(), |c| c.to_string()),
            e.anomalies.join(", "),
            if e.met { "met" } else { "NOT met" }
        );
        for reason in &e.reasons {
            let _ = writeln!(md, "- {reason}");
        }
        md.push('\n');
    }
    md.push_str("## Counts\n\n| place | changes |\n|---|---:|\n");
    for (name, n) in count_rows(r) {
        let _ = writeln!(md, "| {name} | {n} |");
    }
    md.push_str("\n## Latency (from the source commit)\n\n");
    md.push_str("| path | p50 | p90 | p99 | p99.9 | max | count |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for (name, p, _) in latency_rows(r) {
        let _ = writeln!(md, "| {name} | {} |", percentile_cells(p).join(" | "));
    }
    let b = &r.tiers.bounds;
    let _ = writeln!(
        md,
        "\n## Tiers\n\n| path | sub-second (<{}) | seconds (<{}) | minutes (<{}) | late |",
        human_ms(b.seconds_ms),
        human_ms(b.minutes_ms),
        human_ms(b.late_ms)
    );
    md.push_str("|---|---:|---:|---:|---:|\n");
    let fraud = r.tiers.fraud.as_ref().map(|t| ("fraud", t));
    let paths = [("bus", &r.tiers.bus), ("lake", &r.tiers.lake)];
    for (name, t) in paths.into_iter().chain(fraud) {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            t.sub_second, t.seconds, t.minutes, t.late
        );
    }
    md.push_str("\n## Exactly-once\n\n| anomaly | count |\n|---|---:|\n");
    for kind in r.exactly_once.checked() {
        let _ = writeln!(md, "| {} | {} |", kind.name(), r.exactly_once.count(kind));
    }
    if !r.exactly_once.examples.is_empty() {
        md.push_str("\n| anomaly | change | key | where |\n|---|---:|---|---|\n");
        for e in &r.exactly_once.examples {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                e.anomaly,
                e.change_id.map_or("-".to_string(), |id| id.to_string()),
                e.key.as_deref().unwrap_or("-"),
                e.location.replace('|', "\\|")
            );
        }
    }
    md.push_str("\n## SLOs\n\n");
    if r.slo.is_empty() {
        md.push_str("None declared.\n");
    } else {
        md.push_str("| SLO | limit | actual | result |\n|---|---:|---:|---|\n");
        for s in &r.slo {
            let result = match &s.error {
                Some(e) => format!("fail: {e}"),
                None if s.pass => "pass".to_string(),
                None => "**breached**".to_string(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {result} |",
                s.name,
                human_ms(s.limit_ms),
                human_ms(s.actual_ms)
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Conservation\n\n{}",
        conservation_line(&r.conservation)
    );
    let _ = writeln!(
        md,
        "\n## Transaction completeness\n\n{}",
        completeness_line(&r.completeness)
    );
    for e in &r.completeness.examples {
        let _ = writeln!(md, "- {e}");
    }
    if let Some(sc) = &r.schemas {
        let _ = writeln!(
            md,
            "\n## Schema registry\n\n{}\n\n| at | subject | table version | id | refused because |\n|---:|---|---:|---:|---|",
            schema_line(sc)
        );
        for d in &sc.decisions {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                human_ms(d.t_ms),
                d.subject,
                d.table_version,
                d.id.map_or("-".to_string(), |id| id.to_string()),
                d.reason.as_deref().unwrap_or("")
            );
        }
    }
    let l = &r.lake;
    let _ = write!(
        md,
        "\n## Lake files\n\n| snapshots | files written | per snapshot | small written | live files | small live | versions folded | pre-commits rolled back |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {:.1} | {} | {} | {} | {} | {} |\n",
        l.snapshots, l.files_written, l.files_per_snapshot, l.small_files_written, l.live_files, l.small_files,
        l.versions_folded, l.pre_commits_rolled_back
    );
    md.push_str("\n## Skew (max/min load; flagged past 10x)\n\n| over | max | min | ratio | flagged |\n|---|---:|---:|---:|---|\n");
    for sp in &r.skew {
        let ratio = if sp.ratio < 0.0 {
            "idle place".to_string()
        } else {
            format!("{:.1}", sp.ratio)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {ratio} | {} |",
            sp.name,
            sp.max,
            sp.min,
            if sp.flagged { "yes" } else { "no" }
        );
    }
    md.push_str("\n## Faults\n\n");
    if r.faults.is_empty() {
        md.push_str("None.\n");
    } else {
        md.push_str("| kind | target | start | end |\n|---|---|---:|---:|\n");
        for f in &r.faults {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                f.kind,
                f.target,
                human_ms(f.start_ms),
                f.end_text()
            );
        }
    }
    if !r.offset_resets.is_empty() {
        md.push_str(
            "\n## Offset resets\n\nReaders whose position was out of range, moved by \
             `auto_offset_reset` (or stopped, under `none`): from before the log start, which \
             retention had moved past it (they never read the offsets in between), or from past \
             the end of a log a leader change had truncated (`deleted` 0: those they had read \
             are gone, and under `latest` what was written since the truncation is skipped).\n\n\
             | time | reader | partition | from | to | deleted | held but skipped |\n\
             |---:|---|---|---:|---:|---:|---:|\n",
        );
        for x in &r.offset_resets {
            let _ = writeln!(
                md,
                "| {} | {} | {} p{} | {} | {} | {} | {} |",
                human_ms(x.t_ms),
                x.host,
                x.topic.name(),
                x.partition,
                x.from,
                x.to_text(),
                x.deleted(),
                x.skipped_held()
            );
        }
    }
    if !r.leader_cuts.is_empty() {
        md.push_str(
            "\n## Leader changes that cut acknowledged records\n\nA broker took over a \
             partition with its log ending before what earlier leaders had acknowledged (acks=1 \
             writes no follower had yet, an unclean election, or a leader back from a power loss \
             without its unflushed tail), or the leader it replaced went on acknowledging writes \
             after it, not knowing yet: the records from its log end on are gone, unless \
             written again.\n\n\
             | time | new leader | partition | epoch | log end | acknowledged to | cut |\n\
             |---:|---|---|---:|---:|---:|---:|\n",
        );
        for x in &r.leader_cuts {
            let _ = writeln!(
                md,
                "| {} | {} | {} p{} | {} | {} | {} | {} |",
                human_ms(x.t_ms),
                x.host,
                x.topic.name(),
                x.partition,
                x.epoch,
                x.log_end,
                x.acknowledged_end,
                x.cut()
            );
        }
    }
    if !r.truncations_detected.is_empty() {
        md.push_str(
            "\n## Truncations detected\n\nReaders whose leader's log, after a leader change, \
             no longer held what they had read (an unclean election, or a leader that lost its \
             unflushed tail): the leader epoch of the last record read told (KIP-320), and they \
             went back to where the two logs agree, to read what now stands there (or stopped, \
             under `auto_offset_reset = \"none\"`).\n\n\
             | time | reader | partition | from | to | offsets diverged |\n\
             |---:|---|---|---:|---:|---:|\n",
        );
        for x in &r.truncations_detected {
            let _ = writeln!(
                md,
                "| {} | {} | {} p{} | {} | {} | {} |",
                human_ms(x.t_ms),
                x.host,
                x.topic.name(),
                x.partition,
                x.from,
                x.to_text(),
                x.diverged()
            );
        }
    }
    let _ = writeln!(md, "\n## Replay\n\n```\n{}\n```", r.replay);
    md
}

/// Escapes text for an XML attribute or element.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// One JUnit testcase: a name, and a failure message with details when it failed.
struct Case {
    class: &'static str,
    name: String,
    failure: Option<(String, String)>,
}

/// The report as JUnit XML: one testsuite `nrtsim.<scenario>` with a testcase per anomaly, per
/// SLO, one for draining and one for the expectation. When the scenario has an `[expect]`, the
/// expectation alone decides pass or fail, and the other testcases report what they found as
/// output instead of failing (a canary is meant to show anomalies).
pub fn to_junit(r: &Report) -> String {
    let judged_by_expectation = r.expectation.is_some();
    let mut cases = Vec::new();
    for kind in r.exactly_once.checked() {
        let n = r.exactly_once.count(kind);
        // A warning (torn transactions, unless the scenario makes them a violation) is
        // reported in the other renderers but fails no testcase.
        let warning =
            kind == AnomalyKind::TornTransaction && !r.exactly_once.torn_transaction_is_violation;
        let failure = (n > 0 && !warning).then(|| {
            let details: Vec<String> = r
                .exactly_once
                .examples_of(kind)
                .map(|e| {
                    format!(
                        "change {} key {}: {}",
                        e.change_id.map_or("-".to_string(), |id| id.to_string()),
                        e.key.as_deref().unwrap_or("-"),
                        e.location
                    )
                })
                .collect();
            (format!("{n} {} found", kind.name()), details.join("\n"))
        });
        cases.push(Case {
            class: "exactly_once",
            name: kind.name().to_string(),
            failure,
        });
    }
    for s in &r.slo {
        let failure = (!s.pass).then(|| {
            let msg = match &s.error {
                Some(e) => e.clone(),
                None => format!(
                    "{} is {}, above the limit {}",
                    s.name,
                    human_ms(s.actual_ms),
                    human_ms(s.limit_ms)
                ),
            };
            (msg, String::new())
        });
        cases.push(Case {
            class: "slo",
            name: s.name.clone(),
            failure,
        });
    }
    cases.push(Case {
        class: "liveness",
        name: "drain".to_string(),
        failure: (!r.drained).then(|| {
            (
                "the pipeline did not drain before the drain timeout".to_string(),
                String::new(),
            )
        }),
    });
    if let Some(e) = &r.expectation {
        cases.push(Case {
            class: "expectation",
            name: "expect".to_string(),
            failure: (!e.met).then(|| {
                (
                    "the [expect] section did not hold".to_string(),
                    e.reasons.join("\n"),
                )
            }),
        });
    }

    let suite = format!("nrtsim.{}", r.scenario);
    let failures = cases
        .iter()
        .filter(|c| c.failure.is_some() && (!judged_by_expectation || c.class == "expectation"))
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"nrtsim\" tests=\"{}\" failures=\"{failures}\">",
        cases.len()
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">",
        xml_escape(&suite),
        cases.len(),
        r.wall_ms as f64 / 1000.0
    );
    x.push_str("    <properties>\n");
    for (name, value) in [
        ("seed", r.seed.to_string()),
        ("exit_code", r.exit_code.to_string()),
        ("replay", r.replay.clone()),
    ] {
        let _ = writeln!(
            x,
            "      <property name=\"{name}\" value=\"{}\"/>",
            xml_escape(&value)
        );
    }
    x.push_str("    </properties>\n");
    for c in &cases {
        let _ = write!(
            x,
            "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"0\"",
            xml_escape(&suite),
            c.class,
            xml_escape(&c.name)
        );
        match &c.failure {
            None => x.push_str("/>\n"),
            Some((msg, body)) if !judged_by_expectation || c.class == "expectation" => {
                let _ = writeln!(
                    x,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml_escape(msg),
                    xml_escape(body)
                );
            }
            Some((msg, body)) => {
                let _ = writeln!(
                    x,
                    ">\n      <system-out>{}</system-out>\n    </testcase>",
                    xml_escape(&format!("{msg} (judged by [expect])\n{body}"))
                );
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// The one-screen terminal summary (under 30 lines, under 100 columns) `nrtsim run` prints last.
pub fn summary_text(r: &Report) -> String {
    let mut s = String::new();
    let c = &r.counts;
    let b = &r.tiers.bounds;
    let _ = writeln!(
        s,
        "scenario {}  seed {}  simulated {}  wall {}  ({:.0} changes/s)",
        r.scenario,
        r.seed,
        human_ms(r.sim_duration_ms),
        human_ms(r.wall_ms),
        r.changes_per_wall_s
    );
    let _ = writeln!(
        s,
        "counts   source {} (snapshot {})  raw {}  standard {}  enriched {}",
        c.source_changes, c.snapshot_changes, c.raw, c.standard, c.enriched
    );
    let _ = writeln!(
        s,
        "         lake rows {} (keys {})  redo {} (parked {})  critical {}{}",
        c.lake_rows,
        c.lake_keys,
        c.redo,
        c.parked_in_redo,
        c.critical,
        if c.unfinished > 0 {
            format!("  unfinished {}", c.unfinished)
        } else {
            String::new()
        }
    );
    if r.exactly_once.aggregate_mismatch.is_some() {
        let _ = writeln!(
            s,
            "         spend aggregates reconciled {}  payments dropped as late {}",
            c.aggregates_reconciled, c.late_dropped
        );
    }
    if c.fraud_scored + c.fraud_unscored > 0 {
        let _ = writeln!(
            s,
            "         fraud scored {}  unscored {}  alerts {}",
            c.fraud_scored, c.fraud_unscored, c.fraud_alerts
        );
    }
    let _ = writeln!(
        s,
        "{:<15}{:>7} {:>7} {:>7} {:>7} {:>7} {:>8} | {:>6} {:>6} {:>6} {:>5}",
        "latency",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "count",
        format!("<{}", human_ms(b.seconds_ms)),
        format!("<{}", human_ms(b.minutes_ms)),
        format!("<{}", human_ms(b.late_ms)),
        "late"
    );
    for (name, p, tiers) in latency_rows(r) {
        let _ = write!(
            s,
            "  {:<13}{:>7} {:>7} {:>7} {:>7} {:>7} {:>8} |",
            name,
            human_ms(p.p50_ms),
            human_ms(p.p90_ms),
            human_ms(p.p99_ms),
            human_ms(p.p999_ms),
            human_ms(p.max_ms),
            p.count
        );
        match tiers {
            Some(t) => {
                let _ = writeln!(
                    s,
                    " {:>6} {:>6} {:>6} {:>5}",
                    t.sub_second, t.seconds, t.minutes, t.late
                );
            }
            None => s.push('\n'),
        }
    }
    let eo = &r.exactly_once;
    let warning = |kind: AnomalyKind| {
        kind == AnomalyKind::TornTransaction && !eo.torn_transaction_is_violation
    };
    let counts = eo
        .checked()
        .filter(|k| !warning(*k))
        .map(|k| format!("{} {}", k.name(), eo.count(k)));
    write_wrapped(&mut s, "anomalies", counts);
    let warned: Vec<String> = eo
        .checked()
        .filter(|k| warning(*k) && eo.count(*k) > 0)
        .map(|k| format!("  {} {}", k.name(), eo.count(k)))
        .collect();
    if !warned.is_empty() {
        let _ = writeln!(
            s,
            "warnings{}  (not failures under this scenario's [checks])",
            warned.concat()
        );
    }
    // Examples of what fails the run; warnings' examples are in the full reports.
    let failing = eo
        .examples
        .iter()
        .filter(|e| AnomalyKind::from_name(&e.anomaly).is_some_and(|k| !warning(k)));
    for e in failing.take(4) {
        let line = format!(
            "  {} change {} {}: {}",
            e.anomaly,
            e.change_id.map_or("-".to_string(), |id| id.to_string()),
            e.key.as_deref().unwrap_or("-"),
            e.location
        );
        let _ = writeln!(s, "{}", clip(&line, 99));
    }
    for slo in r.slo.iter().take(6) {
        let _ = writeln!(
            s,
            "slo {:<22} limit {:>7}  actual {:>7}  {}",
            slo.name,
            human_ms(slo.limit_ms),
            human_ms(slo.actual_ms),
            if slo.pass { "pass" } else { "BREACHED" }
        );
    }
    let l = &r.lake;
    let _ = writeln!(
        s,
        "lake     {} snapshots  {} files ({:.1}/snapshot, {} small)  {} live ({} small)  {} folded",
        l.snapshots,
        l.files_written,
        l.files_per_snapshot,
        l.small_files_written,
        l.live_files,
        l.small_files,
        l.versions_folded
    );
    if l.pre_commits_rolled_back > 0 {
        let n = l.pre_commits_rolled_back;
        let _ = writeln!(
            s,
            "         {n} pre-commit{} rolled back past the pre-commit timeout: no snapshot \
             shows {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "its rows" } else { "their rows" }
        );
    }
    let skew: Vec<String> = r
        .skew
        .iter()
        .map(|sp| {
            let flag = if sp.flagged { " SKEWED" } else { "" };
            if sp.ratio < 0.0 {
                format!("{} idle{flag}", sp.name)
            } else {
                format!("{} {:.1}x{flag}", sp.name, sp.ratio)
            }
        })
        .collect();
    if !skew.is_empty() {
        write_wrapped(&mut s, "skew     max/min load:", skew);
    }
    let line = conservation_line(&r.conservation);
    match line.split_once(" + absorbed") {
        // Too wide for one screen line: the snapshot term and the rest go on a second.
        Some((head, tail)) if line.len() > 100 => {
            let _ = writeln!(s, "{head}\n           + absorbed{tail}");
        }
        _ => {
            let _ = writeln!(s, "{line}");
        }
    }
    let _ = writeln!(s, "{}", completeness_line(&r.completeness));
    if let Some(sc) = &r.schemas {
        let _ = writeln!(s, "{}", schema_line(sc));
    }
    if !r.offset_resets.is_empty() {
        let (stopped, moved): (Vec<_>, Vec<_>) = r.offset_resets.iter().partition(|x| x.stopped());
        if !moved.is_empty() {
            let (deleted, held) = offsets_reset_over(&moved);
            let _ = writeln!(
                s,
                "resets   {} by auto_offset_reset: {deleted} offsets deleted unread, {held} held \
                 but skipped",
                moved.len()
            );
            let past_end = moved.iter().filter(|x| x.past_end()).count();
            if past_end > 0 {
                let _ = writeln!(
                    s,
                    "         {past_end} of them from past the end of a log a leader change \
                     truncated"
                );
            }
        }
        if !stopped.is_empty() {
            let (deleted, _) = offsets_reset_over(&stopped);
            let _ = writeln!(
                s,
                "resets   {} refused by auto_offset_reset = none (reader stopped): {deleted} \
                 offsets deleted unread",
                stopped.len()
            );
        }
    }
    if !r.leader_cuts.is_empty() {
        let cut: u64 = r.leader_cuts.iter().map(|x| x.cut()).sum();
        let n = r.leader_cuts.len();
        let _ = writeln!(
            s,
            "leaders  {n} leader {} cut away {cut} offsets below the acknowledged end",
            if n == 1 { "change" } else { "changes" }
        );
    }
    if !r.truncations_detected.is_empty() {
        let (stopped, back): (Vec<_>, Vec<_>) =
            r.truncations_detected.iter().partition(|x| x.stopped());
        if !back.is_empty() {
            let diverged: u64 = back.iter().map(|x| x.diverged()).sum();
            let _ = writeln!(
                s,
                "truncated  readers went back by leader epoch {}x, over {diverged} diverged offsets",
                back.len()
            );
        }
        if !stopped.is_empty() {
            let _ = writeln!(
                s,
                "truncated  readers refused by auto_offset_reset = none {}x (each stopped there)",
                stopped.len()
            );
        }
    }
    let open = r.faults.iter().filter(|f| f.never_healed()).count();
    let _ = writeln!(
        s,
        "faults {} ({} never healed)  {}  parked in redo {}",
        r.faults.len(),
        open,
        if r.drained { "drained" } else { "NOT DRAINED" },
        r.parked_in_redo
    );
    if let Some(e) = &r.expectation {
        let _ = writeln!(
            s,
            "expectation {}{}",
            if e.met { "met" } else { "NOT met: " },
            clip(&e.reasons.join("; "), 80)
        );
    }
    let _ = writeln!(
        s,
        "verdict {}  exit code {}",
        r.verdict.name().to_uppercase(),
        r.exit_code
    );
    let _ = writeln!(s, "replay: {}", r.replay);
    s
}

/// Cuts a line to `max` characters, marking the cut.
fn clip(line: &str, max: usize) -> String {
    if line.chars().count() <= max {
        line.to_string()
    } else {
        let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ms(0), "0ms");
        assert_eq!(human_ms(12), "12ms");
        assert_eq!(human_ms(1_432), "1.4s");
        assert_eq!(human_ms(59_999), "59.9s");
        assert_eq!(human_ms(123_000), "2m03s");
        assert_eq!(human_ms(3_900_000), "1h05m");
    }

    #[test]
    fn xml_escape_covers_markup() {
        assert_eq!(
            xml_escape("a<b & \"c\" 'd'>\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;?"
        );
    }

    #[test]
    fn a_failover_is_permanent_not_unhealed() {
        let window = |kind: &str, end_ms| crate::FaultWindow {
            kind: kind.to_string(),
            target: "enrich-0".to_string(),
            start_ms: 1_000,
            end_ms,
        };
        let failover = window("failover", None);
        assert!(failover.is_permanent() && !failover.never_healed());
        assert_eq!(failover.end_text(), "permanent");
        let crash = window("crash", None);
        assert!(crash.never_healed());
        assert_eq!(crash.end_text(), "never healed");
        assert_eq!(window("crash", Some(2_500)).end_text(), "2.5s");
    }

    #[test]
    fn clip_marks_the_cut() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
