//! Exponential backoff with jitter, checked when built, for everything that
//! retries (registration, watches, log shipping).

use std::time::Duration;

/// A backoff setting that makes no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBackoff {
    /// The minimum delay is zero.
    #[error("backoff minimum must be greater than zero")]
    ZeroMin,
    /// The maximum is below the minimum.
    #[error("backoff maximum {max:?} is below its minimum {min:?}")]
    MaxBelowMin {
        /// The minimum.
        min: Duration,
        /// The maximum.
        max: Duration,
    },
    /// The jitter is not a fraction in [0, 1].
    #[error("backoff jitter {0} is not between 0 and 1")]
    Jitter(f64),
}

/// How retries space out: doubling from `min` up to `max`, each delay
/// shortened by up to `jitter` of itself at random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_secs(2),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// A backoff from `min` to `max` with `jitter` (a fraction from 0 to 1).
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Result<Self, InvalidBackoff> {
        if min.is_zero() {
            return Err(InvalidBackoff::ZeroMin);
        }
        if max < min {
            return Err(InvalidBackoff::MaxBelowMin { min, max });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(InvalidBackoff::Jitter(jitter));
        }
        Ok(Backoff { min, max, jitter })
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        let base = self.min.saturating_mul(factor).min(self.max);
        let random = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
        base.mul_f64(1.0 - self.jitter * random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nonsense() {
        let s = Duration::from_secs(1);
        assert_eq!(
            Backoff::new(Duration::ZERO, s, 0.0),
            Err(InvalidBackoff::ZeroMin)
        );
        assert!(matches!(
            Backoff::new(s * 2, s, 0.0),
            Err(InvalidBackoff::MaxBelowMin { .. })
        ));
        assert_eq!(Backoff::new(s, s, 1.5), Err(InvalidBackoff::Jitter(1.5)));
    }

    #[test]
    fn doubles_up_to_the_maximum_with_bounded_jitter() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 0.5).unwrap();
        for attempt in 0..40 {
            let base = Duration::from_millis(100)
                .saturating_mul(2u32.saturating_pow(attempt.min(30)))
                .min(Duration::from_secs(1));
            let d = b.delay(attempt);
            assert!(d <= base && d >= base / 2, "attempt {attempt}: {d:?}");
        }
    }
}
