//! The TCP relay: bytes both ways between the client and the real server, with half-close
//! (a FIN one way is passed on and the other way stays open), reset propagation (an error on
//! either side resets both), per-real byte counters and the idle timeouts of IPVS's
//! ESTABLISHED (`timeouts.tcp`) and FIN_WAIT (`timeouts.tcp_fin`) states.
//!
//! It is readiness-driven: it waits for a socket to become readable before it takes a buffer
//! from the worker's pool, and gives the buffer back as soon as it has been written out.

use std::{
    future::poll_fn,
    io,
    pin::pin,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    flows::{FlowRecord, FlowState},
    pool,
    stream::Stream,
};
use crate::table::FlowBinding;

/// How a relay ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// Both sides closed cleanly.
    Closed,
    /// No bytes moved for the idle timeout.
    IdleTimeout,
    /// A side failed or was reset; both were reset.
    Error(io::Error),
    /// Killed (`lbadm kill-flows`, `on_down: shutdown`); both sides were reset.
    Killed,
}

/// Idle timeouts of a relayed connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleTimeouts {
    /// While both directions are open.
    pub(crate) established: Duration,
    /// After one direction has closed.
    pub(crate) half_closed: Duration,
}

/// What a relay did: how it ended, and the bytes it carried each way.
#[derive(Debug)]
pub(crate) struct Relayed {
    /// How it ended.
    pub(crate) end: RelayEnd,
    /// Bytes from the client to the real.
    pub(crate) bytes_in: u64,
    /// Bytes from the real to the client.
    pub(crate) bytes_out: u64,
}

/// Relays until both directions have closed, an error, or the idle timeout. `binding` is moved
/// to InActConn when the first direction closes.
pub(crate) async fn relay(
    client: &Stream,
    server: &Stream,
    binding: &mut FlowBinding,
    record: &FlowRecord,
    timeouts: IdleTimeouts,
) -> Relayed {
    let real = binding.real().clone();
    let mut upstream = Direction::default();
    let mut downstream = Direction::default();
    let mut last_activity = Instant::now();
    let mut idle = pin!(tokio::time::sleep(timeouts.established));
    let mut armed_for = timeouts.established;
    let end = poll_fn(|cx| {
        if record.poll_killed(cx).is_ready() {
            return Poll::Ready(RelayEnd::Killed);
        }
        let mut moved = false;
        for (direction, from, to, counter) in [
            (&mut upstream, client, server, &real.bytes_in),
            (&mut downstream, server, client, &real.bytes_out),
        ] {
            if direction.finished {
                continue;
            }
            match direction.poll(cx, from, to, counter, &mut moved) {
                Poll::Ready(Ok(())) => direction.finished = true,
                Poll::Ready(Err(error)) => return Poll::Ready(RelayEnd::Error(error)),
                Poll::Pending => {}
            }
        }
        let timeout = match (upstream.finished, downstream.finished) {
            (true, true) => return Poll::Ready(RelayEnd::Closed),
            (false, false) => timeouts.established,
            _ => {
                binding.set_active(false);
                record.set_state(FlowState::FinWait);
                timeouts.half_closed
            }
        };
        if moved {
            // A plain store: the timer is re-armed only when it fires, not on every read.
            last_activity = Instant::now();
            record.touch();
        }
        while idle.as_mut().poll(cx).is_ready() {
            let deadline = crate::clock::deadline(last_activity, timeout);
            if deadline <= Instant::now() {
                return Poll::Ready(RelayEnd::IdleTimeout);
            }
            idle.as_mut().reset(deadline);
        }
        if timeout != armed_for {
            // Entering half-close: the (usually shorter) FIN timeout starts now.
            armed_for = timeout;
            idle.as_mut()
                .reset(crate::clock::deadline(last_activity, timeout));
            if idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(RelayEnd::IdleTimeout);
            }
        }
        Poll::Pending
    })
    .await;
    let (bytes_in, bytes_out) = (upstream.bytes, downstream.bytes);
    for mut direction in [upstream, downstream] {
        direction.release();
    }
    if let RelayEnd::Error(_) | RelayEnd::Killed = end {
        for stream in [client, server] {
            // Closing with a zero linger sends RST, passing the reset on.
            let _ = stream.set_zero_linger();
        }
    }
    Relayed {
        end,
        bytes_in,
        bytes_out,
    }
}

/// One direction of the relay.
#[derive(Default)]
struct Direction {
    /// Bytes read and not yet written: `buffer[start..end]`.
    buffer: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// The source sent FIN.
    eof: bool,
    /// EOF was passed on; this direction is done.
    finished: bool,
    /// Bytes read this way so far.
    bytes: u64,
}

impl Direction {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &Stream,
        to: &Stream,
        counter: &AtomicU64,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some(buffer) = &self.buffer {
                self.start += ready!(to.poll_write(cx, &buffer[self.start..self.end]))?;
                if self.start == self.end {
                    self.release();
                }
                continue;
            }
            if self.eof {
                // Pass the FIN on; the other direction stays open.
                return Poll::Ready(to.shutdown_write());
            }
            // Take a buffer only once there is something to read.
            ready!(from.poll_read_ready(cx))?;
            let mut buffer = pool::take();
            match from.poll_read(cx, &mut buffer) {
                Poll::Ready(Ok(0)) => {
                    pool::give(buffer);
                    self.eof = true;
                }
                Poll::Ready(Ok(n)) => {
                    counter.fetch_add(n as u64, Relaxed);
                    self.bytes += n as u64;
                    *moved = true;
                    (self.start, self.end) = (0, n);
                    self.buffer = Some(buffer);
                }
                Poll::Ready(Err(error)) => {
                    pool::give(buffer);
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => {
                    pool::give(buffer);
                    return Poll::Pending;
                }
            }
        }
    }

    fn release(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            pool::give(buffer);
        }
    }
}
