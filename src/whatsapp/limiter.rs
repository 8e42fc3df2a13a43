//! Pacing of sends: each number's throughput (Meta's per-number limit, 80
//! messages a second by default) and the spacing between two messages from
//! one number to one user (Meta's pair rate limit).
//!
//! A number's sends are spaced evenly, one every `1/rate` seconds, rather
//! than let through in bursts: in any one-second window a number then sends
//! at most `rate` messages, which a token bucket (a full bucket, then the
//! refill) would not guarantee. Both limits are per process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pair entries older than this many intervals are forgotten.
const PAIR_MEMORY: u32 = 4;

/// The pacing of one process's sends.
#[derive(Debug)]
pub struct Limiter {
    /// The next free send slot of each number.
    numbers: Mutex<HashMap<String, Instant>>,
    /// When each (number, user) may next be sent to.
    pairs: Mutex<HashMap<(String, String), Instant>>,
    pair_interval: Duration,
}

impl Limiter {
    /// A limiter whose pairs are spaced `pair_interval` apart.
    pub fn new(pair_interval: Duration) -> Limiter {
        Limiter {
            numbers: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
            pair_interval,
        }
    }

    /// Takes the next send slot of `number` at `rate` a second; the send may
    /// start at the returned instant and not before.
    pub fn reserve(&self, number: &str, rate: u32) -> Instant {
        let interval = Duration::from_secs(1) / rate.max(1);
        let now = Instant::now();
        let Ok(mut numbers) = self.numbers.lock() else {
            return now;
        };
        let next = numbers.entry(number.to_string()).or_insert(now);
        let slot = (*next).max(now);
        *next = slot + interval;
        slot
    }

    /// Waits for the next send slot of `number`.
    pub async fn acquire(&self, number: &str, rate: u32) {
        let slot = self.reserve(number, rate);
        tokio::time::sleep_until(tokio::time::Instant::from_std(slot)).await;
    }

    /// Holds every send of `number` back for `pause` (Meta said it sends too fast).
    pub fn pause(&self, number: &str, pause: Duration) {
        let until = Instant::now() + pause;
        if let Ok(mut numbers) = self.numbers.lock() {
            let next = numbers.entry(number.to_string()).or_insert(until);
            *next = (*next).max(until);
        }
    }

    /// Takes the turn of the pair (`number`, `to`) now, or says how long
    /// until it is free.
    pub fn pair(&self, number: &str, to: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut pairs) = self.pairs.lock() else {
            return Ok(());
        };
        if pairs.len() > 100_000 {
            let horizon = self.pair_interval * PAIR_MEMORY;
            pairs.retain(|_, free| now.saturating_duration_since(*free) < horizon);
        }
        let key = (number.to_string(), to.to_string());
        match pairs.get(&key) {
            Some(free) if *free > now => Err(*free - now),
            _ => {
                pairs.insert(key, now + self.pair_interval);
                Ok(())
            }
        }
    }

    /// Holds the pair (`number`, `to`) back for `pause` (Meta's 131056).
    pub fn pause_pair(&self, number: &str, to: &str, pause: Duration) {
        let until = Instant::now() + pause;
        if let Ok(mut pairs) = self.pairs.lock() {
            let free = pairs
                .entry((number.to_string(), to.to_string()))
                .or_insert(until);
            *free = (*free).max(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbers_slots_are_spaced_by_its_rate_and_never_more_than_rate_in_a_second() {
        let limiter = Limiter::new(Duration::from_secs(6));
        let slots: Vec<Instant> = (0..200).map(|_| limiter.reserve("1", 80)).collect();
        for pair in slots.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_secs(1) / 80);
        }
        // Any half-open one-second window holds at most 80 slots.
        for (i, start) in slots.iter().enumerate() {
            let inside = slots[i..]
                .iter()
                .take_while(|s| **s < *start + Duration::from_secs(1))
                .count();
            assert!(inside <= 80, "{inside} slots in one second");
        }
        // Another number has its own slots.
        let other = limiter.reserve("2", 80);
        assert!(other < slots[1]);
    }

    #[test]
    fn a_pause_holds_the_number_back() {
        let limiter = Limiter::new(Duration::from_secs(6));
        limiter.pause("1", Duration::from_secs(30));
        assert!(limiter.reserve("1", 80) >= Instant::now() + Duration::from_secs(29));
        assert!(limiter.reserve("2", 80) <= Instant::now());
    }

    #[test]
    fn a_pair_waits_its_interval_and_other_users_do_not() {
        let limiter = Limiter::new(Duration::from_secs(6));
        assert!(limiter.pair("1", "9198").is_ok());
        let wait = limiter.pair("1", "9198").expect_err("too soon");
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(6));
        assert!(limiter.pair("1", "9199").is_ok());
        assert!(limiter.pair("2", "9198").is_ok());
        limiter.pause_pair("1", "9199", Duration::from_secs(60));
        assert!(limiter.pair("1", "9199").expect_err("paused") > Duration::from_secs(59));
    }
}
