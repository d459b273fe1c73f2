//! Closed TCP flows that still count, as IPVS counts them: a connection that closed cleanly
//! stays in the director's table in TIME_WAIT for 120 s, one that was reset in CLOSE for 10 s,
//! and both count in their real's InActConn meanwhile. That is what makes `lc`, `wlc`, `sed`
//! and `nq` honour weights under short connections: without it every real shows zero flows
//! between connections, and each new one goes to the first real in the list.
//!
//! A proxied flow's binding is therefore held here after its relay ends, in one queue per
//! period on the worker's own thread (entries leave in the order they came), and released by
//! the worker's heartbeat. Each queue is bounded: at [`HELD_MAX`] the oldest entry leaves
//! early.

use std::{cell::RefCell, collections::VecDeque};

use crate::{clock::Millis, table::FlowBinding};

/// IPVS's TIME_WAIT timeout: a cleanly closed connection counts this long.
pub(super) const TIME_WAIT_MS: u64 = 120_000;
/// IPVS's CLOSE timeout: a reset connection counts this long.
pub(super) const CLOSE_MS: u64 = 10_000;
/// Bindings held per queue and worker (about 6 MB): at 2,000 closes a second every one is
/// held its whole period; beyond that, the oldest go first.
const HELD_MAX: usize = 262_144;

/// Bindings held after close, released in order.
#[derive(Default)]
struct Held {
    time_wait: VecDeque<(Millis, FlowBinding)>,
    close: VecDeque<(Millis, FlowBinding)>,
}

thread_local! {
    static HELD: RefCell<Held> = RefCell::default();
}

/// How a relayed connection ended, for how long its flow keeps counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// Both sides closed cleanly: TIME_WAIT.
    Cleanly,
    /// Reset or failed: CLOSE.
    Reset,
}

/// Keeps `binding` counting as an inactive flow of its real for the period its close calls
/// for, from `now`.
pub(super) fn hold(mut binding: FlowBinding, closed: Closed, now: Millis) {
    binding.set_active(false);
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        let (queue, period) = match closed {
            Closed::Cleanly => (&mut held.time_wait, TIME_WAIT_MS),
            Closed::Reset => (&mut held.close, CLOSE_MS),
        };
        if queue.len() >= HELD_MAX {
            queue.pop_front();
        }
        queue.push_back((now.plus(period), binding));
    });
}

/// Releases the bindings of this thread whose period is over at `now`.
pub(super) fn release_expired(now: Millis) {
    HELD.with(|held| {
        let held = &mut *held.borrow_mut();
        for queue in [&mut held.time_wait, &mut held.close] {
            while queue.front().is_some_and(|(until, _)| *until <= now) {
                queue.pop_front();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::table::RealState;

    #[test]
    fn closed_flows_count_as_inactive_for_their_period() {
        let real = Arc::new(RealState::new(0, 0));
        let mut open = real.bind();
        open.set_active(true);
        let now = Millis(1_000);
        hold(open, Closed::Cleanly, now);
        hold(real.bind(), Closed::Reset, now);
        assert_eq!((real.active(), real.inactive()), (0, 2));
        release_expired(now.plus(CLOSE_MS));
        assert_eq!(real.inactive(), 1, "the reset one is gone after CLOSE");
        release_expired(now.plus(TIME_WAIT_MS - 1));
        assert_eq!(real.inactive(), 1);
        release_expired(now.plus(TIME_WAIT_MS));
        assert_eq!(real.inactive(), 0);
    }
}
