//! A seeded Zipf sampler over the ids `0..n`: id `k` is drawn with probability proportional to
//! `1 / (k + 1)^s`, so id 0 is the hottest key. Account and customer skew come from here.
//!
//! Sampling uses rejection-inversion (Hörmann and Derflinger, 1996): it needs no table, so a
//! sampler over a million ids costs a few floats, and a draw costs a few `ln`/`exp` calls with
//! an acceptance rate close to one. Those come from the pure-Rust `libm`, not the platform's C
//! library, so a seed draws the same keys on every machine.

use rand::Rng;

/// A Zipf distribution over `0..n` with exponent `s`; `s <= 0` (or not finite) is uniform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Zipf {
    n: u64,
    s: f64,
    uniform: bool,
    /// `H(1.5) - 1`: the top of the range `u` is drawn from.
    h_x1: f64,
    /// `H(n + 0.5)`: the bottom of that range.
    h_n: f64,
    /// Draws with `k - x` below this are accepted without evaluating `H` again.
    squeeze: f64,
}

impl Zipf {
    /// A sampler over `0..n` with exponent `s`. `n` must be at least 1.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn new(n: u64, s: f64) -> Self {
        assert!(n >= 1, "a Zipf distribution needs at least one id");
        let uniform = s.is_nan() || s <= 0.0 || !s.is_finite() || n == 1;
        let mut z = Zipf {
            n,
            s,
            uniform,
            h_x1: 0.0,
            h_n: 0.0,
            squeeze: 0.0,
        };
        if !uniform {
            z.h_x1 = z.big_h(1.5) - 1.0;
            z.h_n = z.big_h(n as f64 + 0.5);
            z.squeeze = 2.0 - z.big_h_inv(z.big_h(2.5) - z.small_h(2.0));
        }
        z
    }

    /// How many ids there are.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// The exponent.
    pub fn exponent(&self) -> f64 {
        self.s
    }

    /// One id in `0..n`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        if self.uniform {
            return rng.gen_range(0..self.n);
        }
        let n = self.n as f64;
        loop {
            let u = self.h_n + rng.gen::<f64>() * (self.h_x1 - self.h_n);
            let x = self.big_h_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, n);
            if k - x <= self.squeeze || u >= self.big_h(k + 0.5) - self.small_h(k) {
                return k as u64 - 1;
            }
        }
    }

    /// The unnormalised density `x^-s` of rank `x`.
    fn small_h(&self, x: f64) -> f64 {
        libm::exp(-self.s * libm::log(x))
    }

    /// An antiderivative of `small_h`: `(x^(1-s) - 1) / (1 - s)`, or `ln x` when `s = 1`,
    /// written so that it stays accurate near `s = 1`.
    fn big_h(&self, x: f64) -> f64 {
        let log_x = libm::log(x);
        exp_m1_over_x((1.0 - self.s) * log_x) * log_x
    }

    /// The inverse of `big_h`.
    fn big_h_inv(&self, y: f64) -> f64 {
        let t = (y * (1.0 - self.s)).max(-1.0);
        libm::exp(ln_1p_over_x(t) * y)
    }
}

/// `ln(1 + x) / x`, continuous at 0.
fn ln_1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        libm::log1p(x) / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, continuous at 0.
fn exp_m1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        libm::expm1(x) / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeedTree;

    fn histogram(z: &Zipf, draws: usize) -> Vec<f64> {
        let mut rng = SeedTree::new(7).fork("zipf-test");
        let mut counts = vec![0u64; z.n() as usize];
        for _ in 0..draws {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn exact(n: u64, s: f64) -> Vec<f64> {
        let w: Vec<f64> = (1..=n).map(|k| libm::pow(k as f64, -s)).collect();
        let total: f64 = w.iter().sum();
        w.iter().map(|x| x / total).collect()
    }

    #[test]
    fn matches_the_exact_distribution() {
        for s in [0.5, 1.0, 1.1, 2.0] {
            let z = Zipf::new(20, s);
            let got = histogram(&z, 200_000);
            for (k, (g, e)) in got.iter().zip(exact(20, s)).enumerate() {
                assert!((g - e).abs() < 0.01, "s={s} k={k}: got {g}, expected {e}");
            }
        }
    }

    #[test]
    fn zero_exponent_is_uniform() {
        let got = histogram(&Zipf::new(10, 0.0), 100_000);
        for g in got {
            assert!((g - 0.1).abs() < 0.01);
        }
    }

    #[test]
    fn stays_in_range_for_large_n() {
        let z = Zipf::new(1_000_000, 1.1);
        let mut rng = SeedTree::new(1).fork("zipf-large");
        let mut zeros = 0;
        for _ in 0..100_000 {
            let k = z.sample(&mut rng);
            assert!(k < 1_000_000);
            zeros += u64::from(k == 0);
        }
        // Rank 1 holds about 1/zeta-ish of the mass: far more than uniform.
        assert!(zeros > 5_000, "{zeros}");
        assert_eq!(Zipf::new(1, 1.1).sample(&mut rng), 0);
    }
}
