//! Reconnect delays: exponential backoff with jitter, so that many cameras behind one failed switch do not
//! reconnect in lockstep.

use std::time::Duration;

/// Exponential backoff: attempt `k` (from 1) waits a random time in `[d/2, d]` where `d = min(initial·factorᵏ⁻¹, max)`
/// ("equal jitter": never less than half the nominal delay, never in lockstep).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Nominal delay before the first reconnect.
    pub initial: Duration,
    /// Largest nominal delay.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The nominal (un-jittered) delay of attempt `attempt` (1-based).
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()).max(0.0))
    }

    /// The delay of attempt `attempt` with `unit` in `[0, 1)` choosing where in `[nominal/2, nominal]` it falls.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let nominal = self.nominal(attempt);
        nominal.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// A small deterministic generator of `[0, 1)` values (SplitMix64) for jitter; seeded per stream so streams differ.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from `seed` (for example a hash of the stream id and the start time).
    pub fn new(seed: u64) -> Self {
        Jitter(seed)
    }

    /// The next value in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_delay_doubles_up_to_the_cap() {
        let b = Backoff::default();
        let secs: Vec<f64> = (1..=9).map(|k| b.nominal(k).as_secs_f64()).collect();
        assert_eq!(secs, vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jittered_delays_stay_within_half_to_full_nominal_and_spread() {
        let b = Backoff::default();
        let mut jitter = Jitter::new(7);
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(4, jitter.next_unit())).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_secs(2) && *d <= Duration::from_secs(4)));
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(
            *max - *min > Duration::from_millis(1500),
            "jitter spreads: {min:?}..{max:?}"
        );
        assert_ne!(
            Jitter::new(1).next_unit(),
            Jitter::new(2).next_unit(),
            "streams seeded differently reconnect at different times"
        );
    }
}
