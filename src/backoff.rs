//! One retry policy for everything the service retries: WhatsApp sends,
//! notifications to endpoints, and webhook events it could not process yet.
//! Each keeps its own numbers (a send retries within minutes, a receiver
//! that is down gets a day), but the shape is the same: a wait that doubles
//! per failed attempt from `first`, capped at `max`, with jitter so that
//! many things that failed together do not all come back at once.

use std::time::Duration;

/// How much of each wait is random.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform between the floor and the ceiling: spreads retries the most,
    /// for receivers that may all come back at the same moment.
    Full,
    /// Half the ceiling fixed, half random: never much sooner than the
    /// doubling says, for a peer that told us to slow down.
    Equal,
}

/// A doubling, capped, jittered wait between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling after the first failed attempt.
    pub first: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// No wait is shorter than this.
    pub floor: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    /// The longest wait after `attempt` failed attempts (1 after the
    /// first): `first` doubled `attempt - 1` times, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // Past 30 doublings every cap has long been reached; stopping there
        // keeps the multiplication in range.
        let doublings = attempt.saturating_sub(1).min(30);
        self.first
            .saturating_mul(1u32 << doublings)
            .min(self.max)
            .max(self.floor)
    }

    /// How long to wait after `attempt` failed attempts before the next.
    pub fn wait(&self, attempt: u32) -> Duration {
        self.wait_with(attempt, rand::random::<f64>())
    }

    /// [`Backoff::wait`] with the random draw given (`0.0..1.0`), for tests.
    pub fn wait_with(&self, attempt: u32, draw: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let draw = draw.clamp(0.0, 1.0);
        let wait = match self.jitter {
            Jitter::Full => self.floor + (ceiling - self.floor).mul_f64(draw),
            Jitter::Equal => ceiling / 2 + (ceiling / 2).mul_f64(draw),
        };
        wait.max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(60),
        floor: Duration::from_millis(500),
        jitter: Jitter::Full,
    };

    #[test]
    fn the_ceiling_doubles_stays_capped_and_never_overflows() {
        let ceilings: Vec<u64> = (1..=9).map(|n| FULL.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(FULL.ceiling(0), Duration::from_secs(1));
        assert_eq!(FULL.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn full_jitter_spans_floor_to_ceiling() {
        assert_eq!(FULL.wait_with(3, 0.0), Duration::from_millis(500));
        assert_eq!(FULL.wait_with(3, 1.0), Duration::from_secs(4));
        let draws: std::collections::BTreeSet<Duration> = (0..200).map(|_| FULL.wait(8)).collect();
        assert!(draws.len() > 100, "jittered draws differ");
        assert!(draws
            .iter()
            .all(|w| *w >= Duration::from_millis(500) && *w <= Duration::from_secs(60)));
    }

    #[test]
    fn equal_jitter_keeps_half_the_ceiling() {
        let sends = Backoff {
            first: Duration::from_secs(2),
            max: Duration::from_secs(600),
            floor: Duration::ZERO,
            jitter: Jitter::Equal,
        };
        assert_eq!(sends.wait_with(4, 0.0), Duration::from_secs(8));
        assert_eq!(sends.wait_with(4, 1.0), Duration::from_secs(16));
        assert_eq!(sends.wait_with(40, 0.5), Duration::from_secs(450));
    }
}
