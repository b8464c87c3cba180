//! `nrtsim gen`: a workload's change events as Debezium JSON lines, one event per line.
//!
//! Snapshot rows (`op` `r`) come first and, as Debezium writes them, without transaction
//! markers; every log transaction is written whole as BEGIN, its change envelopes, END. Output
//! stops at the first point at or after `events` change events where it can stop cleanly: in
//! the snapshot that is exactly `events`; in the log it is the end of the transaction that
//! reached the count (so a card run may print one event more than asked).

use crate::envelope::{encode_begin_into, encode_change_into, encode_end_into};
use crate::schema::SchemaTimeline;
use crate::{SeedTree, Workload, WorkloadConfig};
use std::io::Write;

/// Flush the line buffer to the output once it holds this many bytes.
const FLUSH_BYTES: usize = 64 * 1024;

/// Writes the workload `cfg` seeded with `seed` as JSON lines to `out` until `events` change
/// events have been written; returns how many change events were written (boundary events not
/// counted). The run lasts long enough to reach `events` unless the rate is 0.
pub fn write_jsonl(
    cfg: &WorkloadConfig,
    seed: u64,
    events: u64,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let duration_ms = gen_duration_ms(cfg.rate_per_s, events);
    let mut workload = Workload::new(cfg, &SeedTree::new(seed), duration_ms);
    let schemas = SchemaTimeline::new(&cfg.ddl).map_err(|(i, e)| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("ddl[{i}]: {e}"))
    })?;
    let mut buf = Vec::with_capacity(FLUSH_BYTES + 4096);
    let mut written = 0u64;
    while written < events {
        let Some(txn) = workload.next_transaction() else {
            break;
        };
        let snapshot = txn.txid == 0;
        if !snapshot {
            encode_begin_into(txn.txid, txn.commit_ms, &mut buf);
            buf.push(b'\n');
        }
        for change in &txn.changes {
            if snapshot && written == events {
                break;
            }
            let schema = schemas.at(change.key.table, txn.commit_ms);
            encode_change_into(change, txn.commit_ms, schema, &mut buf);
            buf.push(b'\n');
            written += 1;
            if buf.len() >= FLUSH_BYTES {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        if !snapshot {
            encode_end_into(txn.txid, txn.changes.len() as u64, txn.commit_ms, &mut buf);
            buf.push(b'\n');
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(written)
}

/// A run long enough for `events` change events at `rate_per_s`: every log transaction has at
/// least one change and every profile averages at least the base rate, so twice the time the
/// base rate needs is plenty.
fn gen_duration_ms(rate_per_s: u64, events: u64) -> u64 {
    if rate_per_s == 0 {
        return 0;
    }
    (events / rate_per_s + 1).saturating_mul(2_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{decode_boundary, decode_change};
    use crate::{RateProfile, WorkloadKind};

    fn lines(cfg: &WorkloadConfig, events: u64) -> (u64, Vec<String>) {
        let mut out = Vec::new();
        let n = write_jsonl(cfg, 42, events, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        (n, text.lines().map(str::to_string).collect())
    }

    #[test]
    fn ten_card_events_stay_in_the_snapshot() {
        let (n, lines) = lines(&WorkloadConfig::default(), 10);
        assert_eq!(n, 10);
        assert_eq!(lines.len(), 10);
        assert!(lines.iter().all(|l| l.contains(r#""op":"r""#)));
    }

    #[test]
    fn log_transactions_are_whole_and_bracketed() {
        let cfg = WorkloadConfig {
            accounts: 3,
            poison_ratio: 0.0,
            profile: RateProfile::Diurnal,
            ..WorkloadConfig::default()
        };
        let (n, lines) = lines(&cfg, 10);
        assert!(n == 10 || n == 11, "{n}");
        let changes = lines.iter().filter(|l| decode_change(l.as_bytes()).is_ok());
        assert_eq!(changes.count() as u64, n);
        let last = decode_boundary(lines.last().unwrap().as_bytes()).unwrap();
        assert_eq!(last.event_count, Some(2));
    }

    #[test]
    fn order_events_are_exact_and_many_work() {
        let cfg = WorkloadConfig {
            kind: WorkloadKind::Order,
            rate_per_s: 10,
            ..WorkloadConfig::default()
        };
        let (n, lines) = lines(&cfg, 1000);
        assert_eq!(n, 1000);
        assert_eq!(lines.len(), 3000);
    }
}
