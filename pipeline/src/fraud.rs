//! The fraud scorer: a second-level consumer of the enriched topic that scores every card
//! payment by two rules, each adding to a score out of 100:
//! - velocity: more than `velocity_limit` payments on the account within `velocity_window` of
//!   event time (the one being scored included), and more than `velocity_factor` times as many as the account usually makes in
//!   such a window (so a busy account at its usual pace is not flagged, a burst is);
//! - amount: a payment more than `amount_factor` times the account's usual (the running mean
//!   of its earlier payments, once it has `min_history` of them).
//!
//! A payment scoring `flag_score` or more raises an alert. The scorer's state (recent payments
//! and the running mean per account) lives in memory; a restarted scorer rebuilds it from the
//! payments it reads again.

use nrtsim_workloads::{CardTransaction, SimDuration};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The `pipeline.fraud` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FraudConfig {
    /// Whether a fraud scorer (`fraud-0`) reads the enriched topic. Default false.
    pub enabled: bool,
    /// The event-time window the velocity rule counts payments in. Default 60s.
    pub velocity_window: SimDuration,
    /// Payments within the window from which the velocity rule may fire. Default 5.
    pub velocity_limit: u32,
    /// How many times the account's usual pace the window must hold. Default 3.
    pub velocity_factor: f64,
    /// How many times the account's usual amount fires the amount rule. Default 5.
    pub amount_factor: f64,
    /// Earlier payments the account needs before the amount rule applies. Default 3.
    pub min_history: u32,
    /// The score at which a payment raises an alert. Default 50.
    pub flag_score: u32,
}

impl Default for FraudConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            velocity_window: SimDuration::from_secs(60),
            velocity_limit: 5,
            velocity_factor: 3.0,
            amount_factor: 5.0,
            min_history: 3,
            flag_score: 50,
        }
    }
}

/// What the scorer made of one payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Score {
    /// 0 to 100.
    pub score: u32,
    /// Which rules fired, in words (empty when none did).
    pub reasons: Vec<&'static str>,
    /// Whether the score reaches the alert threshold.
    pub flagged: bool,
}

#[derive(Clone, Debug, Default)]
struct Account {
    /// Event times of the payments within the velocity window, oldest first.
    recent: VecDeque<u64>,
    first_ts_ms: u64,
    payments: u64,
    mean_cents: f64,
}

/// Per-account state and the rules.
#[derive(Clone, Debug)]
pub struct FraudScorer {
    cfg: FraudConfig,
    accounts: BTreeMap<u64, Account>,
}

impl FraudScorer {
    /// A scorer with no history.
    pub fn new(cfg: FraudConfig) -> Self {
        Self {
            cfg,
            accounts: BTreeMap::new(),
        }
    }

    /// Scores `t` and adds it to its account's history.
    pub fn score(&mut self, t: &CardTransaction) -> Score {
        let window = self.cfg.velocity_window.ms();
        let a = self.accounts.entry(t.account_id).or_default();
        while a
            .recent
            .front()
            .is_some_and(|&ts| ts.saturating_add(window) < t.ts_ms)
        {
            a.recent.pop_front();
        }
        let amount = t.amount_cents.unsigned_abs() as f64;
        let mut score = 0;
        let mut reasons = Vec::new();
        if a.payments == 0 {
            a.first_ts_ms = t.ts_ms;
        }
        // Payments the account makes in a window at its usual pace (its whole history).
        let span = t.ts_ms.saturating_sub(a.first_ts_ms).max(window).max(1);
        let usual = a.payments as f64 * window as f64 / span as f64;
        let in_window = a.recent.len() + 1;
        if in_window > self.cfg.velocity_limit as usize
            && in_window as f64 > self.cfg.velocity_factor * usual.max(1.0)
        {
            score += 60;
            reasons.push("velocity");
        }
        if a.payments >= u64::from(self.cfg.min_history)
            && amount > self.cfg.amount_factor * a.mean_cents
        {
            score += 50;
            reasons.push("amount");
        }
        a.recent.push_back(t.ts_ms);
        a.payments += 1;
        a.mean_cents += (amount - a.mean_cents) / a.payments as f64;
        let score = score.min(100);
        Score {
            score,
            reasons,
            flagged: score >= self.cfg.flag_score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nrtsim_workloads::CardTxnKind;

    fn payment(account_id: u64, amount_cents: i64, ts_ms: u64) -> CardTransaction {
        CardTransaction {
            txn_id: ts_ms,
            account_id,
            merchant_id: 1,
            amount_cents,
            kind: CardTxnKind::Authorisation,
            ts_ms,
        }
    }

    #[test]
    fn velocity_fires_on_a_burst_above_the_accounts_usual_pace() {
        let mut s = FraudScorer::new(FraudConfig::default());
        // One payment every ten minutes for ten hours: the usual pace.
        for i in 0..60 {
            assert!(!s.score(&payment(1, 1_000, i * 600_000)).flagged);
        }
        // Then six within ten seconds.
        let t0 = 60 * 600_000;
        for i in 0..5 {
            assert!(!s.score(&payment(1, 1_000, t0 + i * 1_000)).flagged, "{i}");
        }
        let sixth = s.score(&payment(1, 1_000, t0 + 5_000));
        assert_eq!(
            (sixth.flagged, sixth.reasons.clone()),
            (true, vec!["velocity"])
        );
        // Another account is unaffected; and a minute later the window has emptied.
        assert!(!s.score(&payment(2, 1_000, t0)).flagged);
        assert!(!s.score(&payment(1, 1_000, t0 + 200_000)).flagged);
    }

    #[test]
    fn a_busy_account_at_its_usual_pace_is_not_flagged() {
        let mut s = FraudScorer::new(FraudConfig::default());
        // Ten payments a minute, for an hour.
        let flagged = (0..600u64)
            .filter(|i| s.score(&payment(1, 1_000, i * 6_000)).flagged)
            .count();
        assert!(flagged < 10, "{flagged}");
    }

    #[test]
    fn an_amount_far_above_the_accounts_usual_is_flagged() {
        let mut s = FraudScorer::new(FraudConfig::default());
        let big = s.score(&payment(1, 100_000, 0));
        assert!(!big.flagged, "no history yet");
        for i in 1..4 {
            s.score(&payment(3, 1_000, i * 100_000));
        }
        let usual = s.score(&payment(3, 2_000, 500_000));
        assert!(!usual.flagged);
        let odd = s.score(&payment(3, 50_000, 600_000));
        assert_eq!((odd.flagged, odd.reasons), (true, vec!["amount"]));
    }
}
