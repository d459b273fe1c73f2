//! A coarse monotonic clock in milliseconds, cheap to copy and compare, for timestamps kept in
//! atomics (back-off deadlines) and for the `now` that schedulers receive as a parameter.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Milliseconds since this process first asked for the time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// The current time.
    pub fn now() -> Self {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        Self(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// This time plus `ms` milliseconds.
    pub fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// `at + after`, or a time ten years after `at` when the sum would overflow the clock: the
/// one way a configured duration meets a deadline, so none can panic.
pub fn deadline(at: tokio::time::Instant, after: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(10 * 365 * 86_400);
    at.checked_add(after)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_never_overflow() {
        let now = tokio::time::Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(deadline(now, Duration::MAX) > now);
    }
}
