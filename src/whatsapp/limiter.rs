//! Pacing of sends: each number's throughput (Meta's per-number limit, 80
//! messages a second by default) and the spacing between two messages from
//! one number to one user (Meta's pair rate limit).
//!
//! A number's sends are spaced evenly, one every `WINDOW/rate`, rather than
//! let through in bursts as a token bucket would (a full bucket, then the
//! refill: twice the rate in one second). On top of the spacing, the start
//! of each of the number's last `rate` sends is kept, and a send waits until
//! the oldest is a whole `WINDOW` old: however the scheduler bunches sends
//! that were spaced, no `WINDOW` ever holds more than `rate` of them.
//! `WINDOW` is a little over a second (1.02 s) so that the milliseconds a request
//! takes to reach Meta, which vary, cannot push `rate + 1` into one of Meta's
//! seconds. Both limits are per process.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pair entries older than this many intervals are forgotten.
const PAIR_MEMORY: u32 = 4;

/// The window in which a number sends at most `rate` messages: a second,
/// and 2% for the time requests take to arrive (measured at the sandbox
/// under load, 5 ms was not enough; see the README's performance section).
pub const WINDOW: Duration = Duration::from_millis(1_020);

/// The pacing of one process's sends.
#[derive(Debug)]
pub struct Limiter {
    /// The next free send slot of each number.
    numbers: Mutex<HashMap<String, Instant>>,
    /// When each of a number's last `rate` sends started.
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// When each (number, user) may next be sent to.
    pairs: Mutex<HashMap<(String, String), Instant>>,
    pair_interval: Duration,
}

impl Limiter {
    /// A limiter whose pairs are spaced `pair_interval` apart.
    pub fn new(pair_interval: Duration) -> Limiter {
        Limiter {
            numbers: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
            pair_interval,
        }
    }

    /// Takes the next send slot of `number` at `rate` a second; the send may
    /// start at the returned instant and not before.
    pub fn reserve(&self, number: &str, rate: u32) -> Instant {
        let interval = WINDOW / rate.max(1);
        let now = Instant::now();
        let Ok(mut numbers) = self.numbers.lock() else {
            return now;
        };
        let next = numbers.entry(number.to_string()).or_insert(now);
        let slot = (*next).max(now);
        *next = slot + interval;
        slot
    }

    /// Waits for the next send slot of `number`, and until fewer than
    /// `rate` of its sends started within the last `WINDOW`.
    pub async fn acquire(&self, number: &str, rate: u32) {
        let slot = self.reserve(number, rate);
        tokio::time::sleep_until(tokio::time::Instant::from_std(slot)).await;
        while let Some(wait) = self.admit(number, rate) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Records a send of `number` starting now, or says how long until one may.
    fn admit(&self, number: &str, rate: u32) -> Option<Duration> {
        let rate = rate.max(1) as usize;
        let now = Instant::now();
        let Ok(mut recent) = self.recent.lock() else {
            return None;
        };
        let starts = recent.entry(number.to_string()).or_default();
        while starts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            starts.pop_front();
        }
        if starts.len() < rate {
            starts.push_back(now);
            return None;
        }
        starts
            .front()
            .map(|t| (*t + WINDOW).saturating_duration_since(now))
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
            assert_eq!(pair[1] - pair[0], WINDOW / 80);
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
    fn no_window_admits_more_than_the_rate_however_sends_bunch() {
        let limiter = Limiter::new(Duration::from_secs(6));
        // Ten sends arrive at once (a scheduler that held them back): the
        // first `rate` go, the next waits for the oldest to leave the window.
        for _ in 0..5 {
            assert_eq!(limiter.admit("1", 5), None);
        }
        let wait = limiter.admit("1", 5).expect("the window is full");
        assert!(wait > WINDOW - Duration::from_millis(50) && wait <= WINDOW);
        assert_eq!(
            limiter.admit("2", 5),
            None,
            "another number has its own window"
        );
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
