//! Rate profiles: when, in whole simulated milliseconds, each source transaction commits.
//!
//! Every profile is a rate `r(t)` in transactions per second. The clock walks the run one
//! millisecond at a time and adds `r(t) × 1 ms` to an accumulator kept in millionths of a
//! transaction; each whole transaction in the accumulator commits in that millisecond. So
//! commits are evenly spaced (not Poisson), many may share one millisecond, the count over any
//! window is the integral of the rate rounded down, and no randomness is involved at all.
//!
//! - `steady`: `r(t) = base`.
//! - `diurnal`: a day compressed into the run, `r(t) = base × (1 − 0.8 cos(2π t / duration))`:
//!   0.2× at the start and end, 1.8× in the middle, `base` on average.
//! - `burst`: `base`, except for the last 2 s of every 30 s, when it is 5× `base`.
//!
//! Only IEEE basic arithmetic is used (the cosine is a short series, not the platform's libm),
//! so the commit times are the same on every machine.

use crate::RateProfile;

/// Length of one burst cycle, in ms.
pub const BURST_PERIOD_MS: u64 = 30_000;
/// How long each burst lasts, in ms; it ends each cycle.
pub const BURST_LENGTH_MS: u64 = 2_000;
/// The rate during a burst, as a multiple of the base rate.
pub const BURST_FACTOR: u64 = 5;
/// The diurnal swing: the rate goes from `1 − DIURNAL_SWING` to `1 + DIURNAL_SWING` times base.
pub const DIURNAL_SWING: f64 = 0.8;

const MICRO: u64 = 1_000_000;

/// The commit times of a run, in order: an iterator of simulated ms, all below the duration.
#[derive(Clone, Debug)]
pub struct CommitClock {
    profile: RateProfile,
    rate_per_s: u64,
    duration_ms: u64,
    /// The next millisecond whose share of the rate has not been added yet.
    next_ms: u64,
    /// The millisecond the pending commits belong to.
    current_ms: u64,
    /// Commits still to hand out in `current_ms`.
    pending: u64,
    /// Fractional transactions carried over, in millionths.
    carry_micro: u64,
}

impl CommitClock {
    /// The commit times of a run of `duration_ms` at `rate_per_s` shaped by `profile`.
    pub fn new(profile: RateProfile, rate_per_s: u64, duration_ms: u64) -> Self {
        Self {
            profile,
            rate_per_s,
            duration_ms,
            next_ms: 0,
            current_ms: 0,
            pending: 0,
            carry_micro: 0,
        }
    }

    /// The run's duration in ms.
    pub fn duration_ms(&self) -> u64 {
        self.duration_ms
    }

    /// The commit time of the next transaction, or `None` once the run is over.
    pub fn next_commit_ms(&mut self) -> Option<u64> {
        while self.pending == 0 {
            if self.next_ms >= self.duration_ms {
                return None;
            }
            let ms = self.next_ms;
            self.next_ms += 1;
            self.carry_micro += self.micro_transactions_in(ms);
            self.pending = self.carry_micro / MICRO;
            self.carry_micro %= MICRO;
            self.current_ms = ms;
        }
        self.pending -= 1;
        Some(self.current_ms)
    }

    /// The rate in transactions per second in millisecond `t_ms` of the run.
    pub fn rate_at(&self, t_ms: u64) -> f64 {
        self.micro_transactions_in(t_ms) as f64 / 1000.0
    }

    /// Millionths of a transaction that commit in millisecond `ms`: `r(ms) × 1 ms`.
    fn micro_transactions_in(&self, ms: u64) -> u64 {
        let base = self.rate_per_s.saturating_mul(MICRO / 1000);
        match self.profile {
            RateProfile::Steady => base,
            RateProfile::Burst => {
                if ms % BURST_PERIOD_MS >= BURST_PERIOD_MS - BURST_LENGTH_MS {
                    base.saturating_mul(BURST_FACTOR)
                } else {
                    base
                }
            }
            RateProfile::Diurnal => {
                // Sample the rate in the middle of the millisecond.
                let turns = (ms as f64 + 0.5) / self.duration_ms.max(1) as f64;
                let factor = 1.0 - DIURNAL_SWING * cos_turns(turns);
                (base as f64 * factor).round() as u64
            }
        }
    }
}

impl Iterator for CommitClock {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        self.next_commit_ms()
    }
}

/// `cos(2π × turns)` from basic arithmetic only, accurate to about 1e-10.
fn cos_turns(turns: f64) -> f64 {
    // Reduce to [-0.5, 0.5] turns, then to [0, 0.25] with cos(π − θ) = −cos θ.
    let mut t = (turns - turns.round()).abs();
    let mut sign = 1.0;
    if t > 0.25 {
        t = 0.5 - t;
        sign = -1.0;
    }
    let theta = t * std::f64::consts::TAU;
    let x2 = theta * theta;
    // Taylor series of cos up to θ^18, evaluated from the highest term down.
    let mut sum = 1.0;
    for k in (1..=9).rev() {
        let n = (2 * k) as f64;
        sum = 1.0 - x2 / (n * (n - 1.0)) * sum;
    }
    sign * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(profile: RateProfile, rate: u64, duration_ms: u64) -> Vec<u64> {
        CommitClock::new(profile, rate, duration_ms).collect()
    }

    #[test]
    fn cosine_is_accurate() {
        for i in 0..=1000 {
            let t = i as f64 / 1000.0 * 3.0 - 1.0;
            let want = (t * std::f64::consts::TAU).cos();
            assert!((cos_turns(t) - want).abs() < 1e-9, "{t}");
        }
    }

    #[test]
    fn steady_is_evenly_spaced() {
        let t = times(RateProfile::Steady, 1000, 2_000);
        assert_eq!(t.len(), 2000);
        assert_eq!(t, (0..2000).collect::<Vec<_>>());
        let t = times(RateProfile::Steady, 4, 1_000);
        assert_eq!(t, vec![249, 499, 749, 999]);
        let t = times(RateProfile::Steady, 5000, 10);
        assert_eq!(t.len(), 50);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        assert!(times(RateProfile::Steady, 0, 10_000).is_empty());
    }

    #[test]
    fn diurnal_has_its_shape_and_mean() {
        let d = 100_000;
        let t = times(RateProfile::Diurnal, 1000, d);
        let total = t.len() as f64;
        assert!((total - 100_000.0).abs() < 2.0, "{total}");
        let in_window = |lo: u64, hi: u64| t.iter().filter(|&&x| x >= lo && x < hi).count();
        let start = in_window(0, 1000) as f64;
        let middle = in_window(49_500, 50_500) as f64;
        assert!((start - 200.0).abs() < 10.0, "{start}");
        assert!((middle - 1800.0).abs() < 10.0, "{middle}");
        assert!(t.iter().all(|&x| x < d));
    }

    #[test]
    fn burst_is_five_times_base_for_two_seconds_every_thirty() {
        let t = times(RateProfile::Burst, 100, 60_000);
        let in_window = |lo: u64, hi: u64| t.iter().filter(|&&x| x >= lo && x < hi).count();
        assert_eq!(in_window(0, 28_000), 2800);
        assert_eq!(in_window(28_000, 30_000), 1000);
        assert_eq!(in_window(30_000, 58_000), 2800);
        assert_eq!(in_window(58_000, 60_000), 1000);
    }
}
