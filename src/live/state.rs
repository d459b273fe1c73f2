//! Live per-real state shared by every snapshot that contains the real: counters, connection
//! counts with IPVS's overload hysteresis, and passive failure back-off. All atomics, so the
//! data plane updates them without locks.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
};

use crate::clock::Millis;

/// First passive back-off after a failed connect; it doubles per consecutive failure.
const BACKOFF_BASE_MS: u64 = 1_000;
/// Longest passive back-off.
const BACKOFF_MAX_MS: u64 = 30_000;
/// When a back-off ends, one flow may try the real (half-open); the others keep away this
/// long, until it has connected (the back-off is over) or failed (a longer one starts).
const TRIAL_MS: u64 = 1_000;

/// One active flow in [`SchedulingState::counts`].
const ACTIVE: u64 = 1 << 32;
/// One inactive flow in [`SchedulingState::counts`].
const INACTIVE: u64 = 1;

/// Counters and connection accounting of one real server of one service.
///
/// Laid out so that what schedulers read on every pick (connection counts, overload and
/// back-off) shares one cache line, apart from the traffic counters that workers write on
/// every read.
#[derive(Debug, Default)]
#[repr(C)]
pub struct RealState {
    scheduling: SchedulingState,
    /// Flows scheduled to this real (ipvsadm `Conns`).
    pub conns: AtomicU64,
    /// Bytes client → real.
    pub bytes_in: AtomicU64,
    /// Bytes real → client.
    pub bytes_out: AtomicU64,
    /// Packets (proxy: UDP datagrams) client → real.
    pub packets_in: AtomicU64,
    /// Packets (proxy: UDP datagrams) real → client.
    pub packets_out: AtomicU64,
    /// When this real's slow start began (ms, [`Millis`]); 0: not ramping.
    ramp_start: AtomicU64,
}

/// The fields read by every scheduling decision, in a cache line of their own.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct SchedulingState {
    /// ActiveConn in the high 32 bits, InActConn in the low 32: one load reads both, and a
    /// flow moves between them with one atomic add.
    counts: AtomicU64,
    overloaded: AtomicBool,
    /// No new flows before this time (ms): a back-off, or a trial under way. 0: none.
    backoff_until: AtomicU64,
    /// The end of the current back-off window: failures before it are the same failure.
    window_end: AtomicU64,
    max_conns: AtomicU32,
    min_conns: AtomicU32,
    failures: AtomicU32,
    /// The last weight above 0 (IPVS's `last_weight`, which `mh` builds its table from).
    last_weight: AtomicU32,
}

impl RealState {
    /// A new state with the given thresholds (ipvsadm `-x`, `-y`; 0 = none).
    pub fn new(max_conns: u32, min_conns: u32) -> Self {
        let state = Self::default();
        state.set_thresholds(max_conns, min_conns);
        state
    }

    /// Updates the thresholds. As in IPVS, raising or removing the upper threshold clears
    /// the overload flag.
    pub fn set_thresholds(&self, max_conns: u32, min_conns: u32) {
        let old = self.scheduling.max_conns.swap(max_conns, Relaxed);
        self.scheduling.min_conns.store(min_conns, Relaxed);
        if max_conns == 0 || max_conns > old {
            self.scheduling.overloaded.store(false, Relaxed);
        }
    }

    /// Starts this real's slow start at `now` (it came up, or was added).
    pub fn start_ramp(&self, now: Millis) {
        self.ramp_start.store(now.0.max(1), Relaxed);
    }

    /// When this real's slow start began, while it ramps.
    pub fn ramp_start(&self) -> Option<Millis> {
        match self.ramp_start.load(Relaxed) {
            0 => None,
            start => Some(Millis(start)),
        }
    }

    /// Ends the slow start: the real has its whole weight.
    pub fn end_ramp(&self) {
        self.ramp_start.store(0, Relaxed);
    }

    /// Records the real's configured weight; a weight above 0 becomes the last weight.
    pub fn note_weight(&self, weight: u32) {
        if weight > 0 {
            self.scheduling.last_weight.store(weight, Relaxed);
        }
    }

    /// IPVS's `last_weight`: `weight` when it is above 0, else the last weight above 0 this
    /// real had (0 if it never had one).
    pub fn last_weight(&self, weight: u32) -> u32 {
        if weight > 0 {
            weight
        } else {
            self.scheduling.last_weight.load(Relaxed)
        }
    }

    /// ActiveConn: flows established in both directions.
    pub fn active(&self) -> u32 {
        (self.scheduling.counts.load(Relaxed) >> 32) as u32
    }

    /// InActConn: flows connecting, half-closed, and every UDP flow.
    pub fn inactive(&self) -> u32 {
        self.scheduling.counts.load(Relaxed) as u32
    }

    /// ActiveConn + InActConn.
    fn total(&self) -> u32 {
        let counts = self.scheduling.counts.load(Relaxed);
        (counts >> 32) as u32 + counts as u32
    }

    /// IPVS's connection overhead: one active flow weighs as much as 256 inactive ones.
    pub fn overhead(&self) -> u64 {
        let counts = self.scheduling.counts.load(Relaxed);
        ((counts >> 32) << 8) + (counts & 0xffff_ffff)
    }

    /// Whether the upper threshold was reached and the lower one not yet passed.
    pub fn is_overloaded(&self) -> bool {
        self.scheduling.overloaded.load(Relaxed)
    }

    /// Whether a recent connect failure keeps this real out of new flows at `now`.
    ///
    /// When a back-off has ended but no connect has succeeded since, the real is half-open:
    /// the first caller to ask takes the one trial (false) and every other caller sees the
    /// real in back-off for `TRIAL_MS` more, so a real still down costs one failed connect
    /// per window, not one per flow in flight.
    pub fn in_backoff(&self, now: Millis) -> bool {
        let until = self.scheduling.backoff_until.load(Relaxed);
        if until == 0 {
            return false;
        }
        if until > now.0 {
            return true;
        }
        self.scheduling
            .backoff_until
            .compare_exchange(until, now.plus(TRIAL_MS).0, Relaxed, Relaxed)
            .is_err()
    }

    /// Counts a failed connect without back-off (a health check decides instead). Returns the
    /// number of consecutive failures.
    pub fn count_failure(&self) -> u32 {
        self.scheduling.failures.fetch_add(1, Relaxed).saturating_add(1)
    }

    /// Records a failed connect: the real gets no new flows for a back-off that doubles with
    /// each consecutive failure (1 s up to 30 s), like nginx's `max_fails`/`fail_timeout`.
    /// Failures within a back-off window (flows that were connecting when the real died) are
    /// one failure: only the first starts the window. Returns the consecutive failures.
    pub fn record_failure(&self, now: Millis) -> u32 {
        let scheduling = &self.scheduling;
        let end = scheduling.window_end.load(Relaxed);
        if now.0 < end {
            return scheduling.failures.load(Relaxed);
        }
        let failures = self.count_failure();
        let backoff = BACKOFF_BASE_MS
            .saturating_mul(1 << failures.min(16).saturating_sub(1))
            .min(BACKOFF_MAX_MS);
        let until = now.plus(backoff).0;
        if scheduling
            .window_end
            .compare_exchange(end, until, Relaxed, Relaxed)
            .is_ok()
        {
            scheduling.backoff_until.store(until, Relaxed);
        }
        failures
    }

    /// Records a successful connect, ending any back-off.
    pub fn record_success(&self) {
        if self.scheduling.failures.load(Relaxed) != 0 || self.scheduling.backoff_until.load(Relaxed) != 0 {
            self.scheduling.failures.store(0, Relaxed);
            self.scheduling.backoff_until.store(0, Relaxed);
            self.scheduling.window_end.store(0, Relaxed);
        }
    }

    /// Binds a new flow to this real: it counts in `Conns` and starts inactive, as in IPVS.
    pub fn bind(self: &Arc<Self>) -> FlowBinding {
        self.conns.fetch_add(1, Relaxed);
        self.scheduling.counts.fetch_add(INACTIVE, Relaxed);
        let max = self.scheduling.max_conns.load(Relaxed);
        if max != 0 && self.total() >= max {
            self.scheduling.overloaded.store(true, Relaxed);
        }
        FlowBinding {
            real: Arc::clone(self),
            active: false,
        }
    }

    fn unbind(&self, active: bool) {
        self.scheduling
            .counts
            .fetch_sub(if active { ACTIVE } else { INACTIVE }, Relaxed);
        let total = self.total();
        let (max, min) = (
            self.scheduling.max_conns.load(Relaxed),
            self.scheduling.min_conns.load(Relaxed),
        );
        let clear = if min != 0 {
            total < min
        } else if max != 0 {
            u64::from(total) * 4 < u64::from(max) * 3
        } else {
            true
        };
        if clear && self.is_overloaded() {
            self.scheduling.overloaded.store(false, Relaxed);
        }
    }

    /// Zeroes the traffic counters (ipvsadm `-Z`); connection counts are live and stay.
    pub fn zero(&self) {
        for counter in [
            &self.conns,
            &self.bytes_in,
            &self.bytes_out,
            &self.packets_in,
            &self.packets_out,
        ] {
            counter.store(0, Relaxed);
        }
    }
}

/// One flow's hold on a real: while it lives the flow counts in ActiveConn or InActConn.
/// Dropping it unbinds the flow.
#[derive(Debug)]
pub struct FlowBinding {
    real: Arc<RealState>,
    active: bool,
}

impl FlowBinding {
    /// The real this flow is bound to.
    pub fn real(&self) -> &Arc<RealState> {
        &self.real
    }

    /// Moves the flow between ActiveConn (established both ways) and InActConn.
    pub fn set_active(&mut self, active: bool) {
        if self.active == active {
            return;
        }
        // Inactive → active adds 2^32 - 1 (one up, one down, no borrow: this flow is counted
        // in the side it leaves); active → inactive subtracts it.
        let counts = &self.real.scheduling.counts;
        if active {
            counts.fetch_add(ACTIVE - INACTIVE, Relaxed);
        } else {
            counts.fetch_sub(ACTIVE - INACTIVE, Relaxed);
        }
        self.active = active;
    }
}

impl Drop for FlowBinding {
    fn drop(&mut self) {
        self.real.unbind(self.active);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_start_inactive_and_move() {
        let real = Arc::new(RealState::new(0, 0));
        let mut flow = real.bind();
        assert_eq!((real.active(), real.inactive()), (0, 1));
        flow.set_active(true);
        assert_eq!((real.active(), real.inactive()), (1, 0));
        assert_eq!(real.overhead(), 256);
        flow.set_active(false);
        assert_eq!((real.active(), real.inactive()), (0, 1));
        drop(flow);
        assert_eq!((real.active(), real.inactive()), (0, 0));
        assert_eq!(real.conns.load(Relaxed), 1);
    }

    #[test]
    fn overload_hysteresis_defaults_to_three_quarters() {
        let real = Arc::new(RealState::new(4, 0));
        let mut flows: Vec<_> = (0..3).map(|_| real.bind()).collect();
        assert!(!real.is_overloaded());
        flows.push(real.bind());
        assert!(real.is_overloaded(), "total 4 >= max_conns 4");
        flows.pop();
        assert!(real.is_overloaded(), "3*4 = 12 is not < 4*3 = 12");
        flows.pop();
        assert!(!real.is_overloaded(), "2*4 < 12");
    }

    #[test]
    fn overload_leaves_below_min_conns() {
        let real = Arc::new(RealState::new(4, 2));
        let mut flows: Vec<_> = (0..4).map(|_| real.bind()).collect();
        assert!(real.is_overloaded());
        flows.truncate(2);
        assert!(real.is_overloaded(), "2 is not < min_conns 2");
        flows.truncate(1);
        assert!(!real.is_overloaded());
    }

    #[test]
    fn raising_the_threshold_clears_overload() {
        let real = Arc::new(RealState::new(1, 0));
        let _flow = real.bind();
        assert!(real.is_overloaded());
        real.set_thresholds(10, 0);
        assert!(!real.is_overloaded());
    }

    #[test]
    fn backoff_doubles_per_window_and_success_clears_it() {
        let real = RealState::new(0, 0);
        let mut now = Millis(10_000);
        real.record_failure(now);
        assert!(real.in_backoff(now.plus(999)));
        // Ten flows that were connecting when it died: still one failure, one window.
        for _ in 0..10 {
            assert_eq!(real.record_failure(now.plus(1)), 1);
        }
        now = now.plus(1_000);
        assert!(!real.in_backoff(now), "the window is over: one trial");
        assert!(real.in_backoff(now), "and only one");
        assert_eq!(
            real.record_failure(now.plus(5)),
            2,
            "the trial failed: a 2 s window"
        );
        assert!(real.in_backoff(now.plus(2_004)));
        for _ in 0..20 {
            now = now.plus(60_000);
            assert!(!real.in_backoff(now));
            real.record_failure(now);
        }
        assert!(real.in_backoff(now.plus(29_999)));
        assert!(!real.in_backoff(now.plus(30_000)), "capped at 30 s");
        real.record_success();
        assert!(
            !real.in_backoff(now) && !real.in_backoff(now),
            "back: no trial needed"
        );
    }

    #[test]
    fn a_real_restarted_within_its_window_is_back_after_one_trial() {
        let real = RealState::new(0, 0);
        let now = Millis(5_000);
        for offset in 0..8 {
            real.record_failure(now.plus(offset));
        }
        let trial = now.plus(1_000);
        assert!(!real.in_backoff(trial));
        real.record_success();
        assert!(!real.in_backoff(trial.plus(1)));
    }
}
