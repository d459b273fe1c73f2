//! Logging helpers: warnings about events that can repeat thousands of times a second (a full
//! table, a refused connection) are written at most once per interval, with a count of those
//! held back, so that a flood never becomes a flood of log lines.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use crate::clock::Millis;

/// Lets one line through per interval and counts the rest. Lock-free, so one throttle may
/// serve a task, a worker, or (as a `static`) every thread.
#[derive(Debug)]
pub(crate) struct Throttle {
    every_ms: u64,
    /// When the next line may be written (ms of [`Millis`]).
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle letting one line through every `every`.
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            every_ms: every.as_millis() as u64,
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now; `None` when
    /// this one is held back (and counted).
    pub(crate) fn ready(&self) -> Option<u64> {
        self.ready_at(Millis::now())
    }

    /// As [`ready`](Self::ready), at `now`.
    pub(crate) fn ready_at(&self, now: Millis) -> Option<u64> {
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
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        throttle.next.store(0, Relaxed);
        assert_eq!(throttle.ready(), Some(2));
        let shared = Throttle::new(Duration::from_secs(1));
        assert_eq!(shared.ready_at(Millis(5_000)), Some(0));
        assert_eq!(shared.ready_at(Millis(5_999)), None);
        assert_eq!(shared.ready_at(Millis(6_000)), Some(1));
    }
}
