//! Per-account spend in event-time windows, as a stream processor computes it: tumbling
//! windows of `window`, a watermark that trails the event time seen by `max_out_of_orderness`,
//! and `allowed_lateness` after a window fires during which a late payment still updates it.
//!
//! The watermark is the minimum over the input partitions of the largest event time each has
//! delivered, less the out-of-orderness bound, so one slow partition holds every window back.
//! With `idle_timeout` a partition that has delivered nothing for that long (in processing
//! time) no longer holds the watermark back; when it resumes, what it delivers may be behind
//! the watermark and, past the allowed lateness, is dropped: the late-drop half of a known
//! event-time defect.

use nrtsim_workloads::SimDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `pipeline.spend` settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpendConfig {
    /// Whether a spend aggregator (`spend-0`) reads the enriched topic. Default false.
    pub enabled: bool,
    /// Tumbling window length. Default 1m.
    pub window: SimDuration,
    /// How far behind the largest event time seen the watermark trails. Default 2s.
    pub max_out_of_orderness: SimDuration,
    /// How long after a window fires a late payment still updates it. Default 1m.
    pub allowed_lateness: SimDuration,
    /// A partition silent for this long stops holding the watermark back; 0 never. Default 0.
    pub idle_timeout: SimDuration,
}

impl Default for SpendConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            window: SimDuration::from_secs(60),
            max_out_of_orderness: SimDuration::from_secs(2),
            allowed_lateness: SimDuration::from_secs(60),
            idle_timeout: SimDuration::from_us(0),
        }
    }
}

/// A window's result as emitted (again, when a late payment updates a fired window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowResult {
    /// The account.
    pub account_id: u64,
    /// Window start, event time in ms.
    pub window_start_ms: u64,
    /// Sum of the payments.
    pub spend_cents: i64,
    /// Payments counted.
    pub payments: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Partition {
    /// The largest event time this partition delivered.
    max_event_ms: u64,
    /// When (processing time) it last delivered.
    last_seen_ms: u64,
}

/// The aggregator's state: open windows, per-partition progress, the watermark. It is part of
/// the aggregating task's checkpoint, restored with its input positions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendAggregator {
    cfg: SpendConfig,
    /// Open windows by (window start, account): spend and payments.
    windows: BTreeMap<(u64, u64), (i64, u32)>,
    partitions: BTreeMap<u32, Partition>,
    watermark: u64,
    late_dropped: u64,
}

impl SpendAggregator {
    /// An aggregator over `partitions`, none of which has delivered anything yet.
    pub fn new(cfg: SpendConfig, partitions: &[u32]) -> Self {
        Self {
            cfg,
            windows: BTreeMap::new(),
            partitions: partitions
                .iter()
                .map(|&p| (p, Partition::default()))
                .collect(),
            watermark: 0,
            late_dropped: 0,
        }
    }

    fn window_ms(&self) -> u64 {
        self.cfg.window.ms().max(1)
    }

    /// The watermark: event time up to which every window has fired.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Payments dropped because they came after their window's allowed lateness.
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// Adds a payment read from `partition` at processing time `now_ms`. Returns the window's
    /// updated result when the window had already fired (a late firing), `None` otherwise
    /// (counted for the window's first firing, or dropped as too late).
    pub fn add(
        &mut self,
        partition: u32,
        account_id: u64,
        amount_cents: i64,
        event_ms: u64,
        now_ms: u64,
    ) -> Option<WindowResult> {
        let p = self.partitions.entry(partition).or_default();
        p.max_event_ms = p.max_event_ms.max(event_ms);
        p.last_seen_ms = now_ms;
        let w = self.window_ms();
        let start = event_ms - event_ms % w;
        let end = start + w;
        if end + self.cfg.allowed_lateness.ms() <= self.watermark {
            self.late_dropped += 1;
            return None;
        }
        let slot = self.windows.entry((start, account_id)).or_insert((0, 0));
        slot.0 += amount_cents;
        slot.1 += 1;
        let fired = end <= self.watermark;
        fired.then_some(WindowResult {
            account_id,
            window_start_ms: start,
            spend_cents: slot.0,
            payments: slot.1,
        })
    }

    /// Advances the watermark as of processing time `now_ms`; returns the windows that fire
    /// now, in (window, account) order. Windows past their allowed lateness are forgotten.
    pub fn advance(&mut self, now_ms: u64) -> Vec<WindowResult> {
        let idle = self.cfg.idle_timeout.ms();
        let active = self
            .partitions
            .values()
            .filter(|p| idle == 0 || now_ms.saturating_sub(p.last_seen_ms) < idle);
        let Some(min_event) = active.map(|p| p.max_event_ms).min() else {
            return Vec::new();
        };
        let candidate = min_event.saturating_sub(self.cfg.max_out_of_orderness.ms());
        if candidate <= self.watermark {
            return Vec::new();
        }
        let (old, new) = (self.watermark, candidate);
        self.watermark = new;
        let w = self.window_ms();
        let fired = self
            .windows
            .iter()
            .filter(|((start, _), _)| start + w > old && start + w <= new)
            .map(
                |(&(start, account_id), &(spend_cents, payments))| WindowResult {
                    account_id,
                    window_start_ms: start,
                    spend_cents,
                    payments,
                },
            )
            .collect();
        let lateness = self.cfg.allowed_lateness.ms();
        self.windows
            .retain(|(start, _), _| start + w + lateness > new);
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lateness_s: u64, idle_s: u64) -> SpendConfig {
        SpendConfig {
            enabled: true,
            window: SimDuration::from_secs(10),
            max_out_of_orderness: SimDuration::from_secs(1),
            allowed_lateness: SimDuration::from_secs(lateness_s),
            idle_timeout: SimDuration::from_secs(idle_s),
        }
    }

    #[test]
    fn a_window_fires_once_every_partition_is_past_it() {
        let mut a = SpendAggregator::new(cfg(0, 0), &[0, 1]);
        assert_eq!(a.add(0, 7, 100, 1_000, 1_000), None);
        assert_eq!(a.add(1, 7, 50, 2_000, 2_000), None);
        assert_eq!(a.add(0, 7, 1, 12_000, 12_000), None);
        assert!(a.advance(12_000).is_empty(), "partition 1 is still at 2 s");
        a.add(1, 8, 1, 11_500, 12_500);
        let fired = a.advance(12_500);
        assert_eq!(a.watermark(), 10_500);
        assert_eq!(
            fired,
            vec![WindowResult {
                account_id: 7,
                window_start_ms: 0,
                spend_cents: 150,
                payments: 2
            }]
        );
    }

    #[test]
    fn a_window_ending_exactly_at_the_watermark_has_fired_and_its_state_survives_a_restore() {
        let mut a = SpendAggregator::new(cfg(5, 0), &[0]);
        a.add(0, 7, 100, 0, 0);
        // Event time 11 s: the watermark reaches exactly 10 s, the first window's end.
        a.add(0, 7, 1, 11_000, 11_000);
        let fired = a.advance(11_000);
        assert_eq!(a.watermark(), 10_000);
        assert_eq!(fired.len(), 1, "end == watermark fires");
        // The snapshot taken now (the checkpoint store keeps a copy), restored after a crash,
        // goes on where it was.
        let mut restored = a.clone();
        // Within the allowed lateness (5 s past the end): a late firing, from either.
        let late = restored
            .add(0, 7, 50, 9_000, 12_000)
            .expect("a late firing");
        assert_eq!((late.spend_cents, late.payments), (150, 2));
        // Past it, the window is gone and the payment dropped.
        restored.add(0, 7, 1, 16_000, 16_000);
        restored.advance(16_000);
        assert_eq!(restored.watermark(), 15_000);
        assert_eq!(restored.add(0, 7, 50, 9_500, 16_000), None);
        assert_eq!(restored.late_dropped(), 1);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_and_its_late_payments_drop() {
        let mut strict = SpendAggregator::new(cfg(0, 5), &[0, 1]);
        let mut lenient = SpendAggregator::new(cfg(60, 5), &[0, 1]);
        for a in [&mut strict, &mut lenient] {
            a.add(1, 7, 100, 1_000, 1_000);
            a.add(0, 7, 10, 30_000, 30_000);
            // Partition 1 has been silent for 29 s: idle, so the watermark moves on.
            let fired = a.advance(30_000);
            assert_eq!(a.watermark(), 29_000);
            assert_eq!(fired.len(), 1);
        }
        // Partition 1 resumes with a payment from the first window.
        assert_eq!(strict.add(1, 7, 5, 2_000, 31_000), None);
        assert_eq!(strict.late_dropped(), 1);
        let update = lenient.add(1, 7, 5, 2_000, 31_000).expect("a late firing");
        assert_eq!((update.spend_cents, update.payments), (105, 2));
        assert_eq!(lenient.late_dropped(), 0);
    }
}
