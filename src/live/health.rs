//! Health as the table publishes it: for every real under an active check, one [`CheckStatus`]
//! that its checker (control plane) writes and that snapshot builds and listings read. The
//! data plane reads only what a snapshot baked in (up or down, effective weight); it writes
//! here only to report a failed connect ([`CheckStatus::note_passive_failure`]).
//!
//! The rules that move a status (rise, fall, dynamic weights) live in `crate::health`; this
//! module only holds the data.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::SystemTime,
};

use tokio::sync::Notify;

use crate::config::{MAX_WEIGHT, OnDown, ServiceKey};

/// The live health of one checked real of one service.
#[derive(Debug)]
pub struct CheckStatus {
    record: Mutex<CheckRecord>,
    passive_streak: AtomicU32,
    passive_signal: Notify,
    passed: AtomicU64,
    failed: AtomicU64,
}

impl CheckStatus {
    /// A status before any verdict: up or down as `health_check.start` says.
    pub fn new(up: bool) -> Self {
        Self {
            record: Mutex::new(CheckRecord {
                up,
                weight: DynamicWeight::Configured,
                drain: false,
                successes: 0,
                failures: 0,
                last: None,
                since: SystemTime::now(),
            }),
            passive_streak: AtomicU32::new(0),
            passive_signal: Notify::new(),
            passed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// A copy of the record.
    pub fn record(&self) -> CheckRecord {
        self.lock().clone()
    }

    /// The record, for the checker to update. Held only for a few field updates.
    pub fn lock(&self) -> MutexGuard<'_, CheckRecord> {
        // A checker that panicked mid-update leaves fields that are each still valid.
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What a snapshot publishes for this real: `(up, weight)`, given its configured weight
    /// and what the service does with a down real. A quiesced down real stays in scheduling
    /// at weight 0, as keepalived's `inhibit_on_failure`; a removed one is down.
    pub fn published(&self, configured: u32, on_down: OnDown) -> (bool, u32) {
        let record = self.lock();
        let weight = record.effective_weight(configured);
        match (record.up, on_down) {
            (true, _) => (true, weight),
            (false, OnDown::Quiesce) => (true, 0),
            (false, OnDown::Remove | OnDown::Shutdown) => (false, weight),
        }
    }

    /// Counts one active check by its result.
    pub fn count_check(&self, passed: bool) {
        if passed { &self.passed } else { &self.failed }.fetch_add(1, Relaxed);
    }

    /// Active checks run so far: (passed, failed).
    pub fn counts(&self) -> (u64, u64) {
        (self.passed.load(Relaxed), self.failed.load(Relaxed))
    }

    /// Data plane: a connect to this real failed, the `streak`th in a row since the last one
    /// that succeeded. The checker hears of it at once, without waiting for its next check.
    pub fn note_passive_failure(&self, streak: u32) {
        self.passive_streak.store(streak, Relaxed);
        self.passive_signal.notify_one();
    }

    /// The streak of failed connects the data plane last reported.
    pub fn passive_streak(&self) -> u32 {
        self.passive_streak.load(Relaxed)
    }

    /// Completes after the next [`note_passive_failure`](Self::note_passive_failure) (or at
    /// once if one came since the last wait).
    pub async fn passive_failure(&self) {
        self.passive_signal.notified().await;
    }
}

/// The state of one checked real: verdict, streaks, weight set by the checks, last result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    /// The verdict: up or down.
    pub up: bool,
    /// The weight the checks set (exec exit codes, agent percentages).
    pub weight: DynamicWeight,
    /// The agent asked for no new flows (weight 0) while keeping the flows in progress.
    pub drain: bool,
    /// Consecutive passed checks.
    pub successes: u32,
    /// Consecutive failed checks (passive connect failures included).
    pub failures: u32,
    /// The latest result, active or passive.
    pub last: Option<CheckResult>,
    /// When the verdict last changed (or the checker started).
    pub since: SystemTime,
}

impl CheckRecord {
    /// The weight new flows are scheduled with while up: 0 while draining, else the
    /// configured weight as the checks adjusted it.
    pub fn effective_weight(&self, configured: u32) -> u32 {
        if self.drain {
            return 0;
        }
        match self.weight {
            DynamicWeight::Configured => configured,
            DynamicWeight::Fixed(weight) => weight.min(MAX_WEIGHT),
            DynamicWeight::Percent(percent) => {
                let scaled = u64::from(configured) * u64::from(percent) / 100;
                // A real asked to take some share keeps at least weight 1, as HAProxy does.
                let floor = u64::from(percent > 0 && configured > 0);
                scaled.max(floor).min(u64::from(MAX_WEIGHT)) as u32
            }
        }
    }
}

/// A weight set by health checks, applied over the configured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicWeight {
    /// The configured weight.
    Configured,
    /// This weight (exec exit code − 2, keepalived's `misc_dynamic`).
    Fixed(u32),
    /// This percentage of the configured weight (HAProxy agent `N%`).
    Percent(u32),
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Whether it passed.
    pub passed: bool,
    /// What was seen: "connected", "HTTP 503", "exec exit 1", "agent: drain"…
    pub reason: String,
    /// When.
    pub at: SystemTime,
}

/// The statuses of every checked real, by (service, real address): what the control plane
/// hands to [`ServiceTable::build`](crate::table::ServiceTable::build).
#[derive(Debug, Default, Clone)]
pub struct HealthView(HashMap<(ServiceKey, SocketAddr), Arc<CheckStatus>>);

impl HealthView {
    /// The status of a real, if it is checked.
    pub fn get(&self, service: &ServiceKey, real: SocketAddr) -> Option<&Arc<CheckStatus>> {
        self.0.get(&(*service, real))
    }

    /// Publishes a real's status.
    pub fn insert(&mut self, service: ServiceKey, real: SocketAddr, status: Arc<CheckStatus>) {
        self.0.insert((service, real), status);
    }

    /// Drops the statuses `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&ServiceKey, SocketAddr) -> bool) {
        self.0.retain(|(service, real), _| keep(service, *real));
    }

    /// How many reals are checked.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no real is checked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(weight: DynamicWeight, drain: bool) -> CheckRecord {
        let status = CheckStatus::new(true);
        let mut record = status.record();
        record.weight = weight;
        record.drain = drain;
        record
    }

    #[test]
    fn effective_weight_follows_the_checks() {
        assert_eq!(record(DynamicWeight::Configured, false).effective_weight(4), 4);
        assert_eq!(record(DynamicWeight::Fixed(5), false).effective_weight(1), 5);
        assert_eq!(record(DynamicWeight::Percent(50), false).effective_weight(4), 2);
        assert_eq!(record(DynamicWeight::Percent(10), false).effective_weight(4), 1);
        assert_eq!(record(DynamicWeight::Percent(0), false).effective_weight(4), 0);
        assert_eq!(
            record(DynamicWeight::Percent(400), false).effective_weight(65_535),
            MAX_WEIGHT
        );
        assert_eq!(record(DynamicWeight::Percent(100), true).effective_weight(4), 0);
    }

    #[test]
    fn a_down_real_is_removed_or_quiesced() {
        let status = CheckStatus::new(false);
        assert_eq!(status.published(3, OnDown::Remove), (false, 3));
        assert_eq!(status.published(3, OnDown::Quiesce), (true, 0));
        status.lock().up = true;
        assert_eq!(status.published(3, OnDown::Quiesce), (true, 3));
    }
}
