//! Logging helpers: warnings about events that can repeat thousands of times a second (a full
//! table, a refused connection) are written at most once per interval, with a count of those
//! held back, so that a flood never becomes a flood of log lines.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use crate::clock::Millis;

/// Lets one line through per interval and counts the rest.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle letting one line through every `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            next: None,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now; `None` when
    /// this one is held back (and counted).
    pub(crate) fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + self.every);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A [`Throttle`] shared by every task and thread that may write the line (a `static`).
#[derive(Debug)]
pub(crate) struct SharedThrottle {
    every_ms: u64,
    /// When the next line may be written (ms of [`Millis`]).
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl SharedThrottle {
    /// A throttle letting one line through every `every_ms` milliseconds.
    pub(crate) const fn new(every_ms: u64) -> Self {
        Self {
            every_ms,
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// As [`Throttle::ready`], at `now`.
    pub(crate) fn ready(&self, now: Millis) -> Option<u64> {
        let next = self.next.load(Relaxed);
        if now.0 < next
            || self
                .next
                .compare_exchange(next, now.plus(self.every_ms).0, Relaxed, Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let mut throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        throttle.next = Some(Instant::now());
        assert_eq!(throttle.ready(), Some(2));
        let shared = SharedThrottle::new(1_000);
        assert_eq!(shared.ready(Millis(5_000)), Some(0));
        assert_eq!(shared.ready(Millis(5_999)), None);
        assert_eq!(shared.ready(Millis(6_000)), Some(1));
    }
}
