//! A coarse monotonic clock in milliseconds, cheap to copy and compare, for timestamps kept in
//! atomics (back-off deadlines) and for the `now` that schedulers receive as a parameter.

use std::{sync::OnceLock, time::Instant};

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
