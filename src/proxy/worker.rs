//! Data-plane worker threads. Each runs a single-threaded tokio runtime and owns one socket
//! per service; the control plane hands it sockets and orders through a channel.
//!
//! Every task is spawned on the worker's runtime itself (no `LocalSet`): waking a `LocalSet`
//! task goes through the runtime's `block_on` waker, which writes the worker's eventfd even
//! from its own thread, a syscall per wake-up that the plain scheduler does not pay.

use std::{collections::HashMap, io, thread, time::Duration};

use tokio::{net::UdpSocket, sync::mpsc};
use tokio_util::sync::CancellationToken;

use super::{Shared, stream::Listener, tcp, udp};
use crate::config::{Protocol, ServiceKey};

/// A socket for one worker to serve.
#[derive(Debug)]
pub(crate) enum WorkerSocket {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A UDP service socket.
    Udp(std::net::UdpSocket),
}

/// Orders from the control plane.
#[derive(Debug)]
pub(crate) enum Command {
    /// Serve this socket for this service (replacing any socket it had for it).
    Listen(ServiceKey, WorkerSocket),
    /// Stop serving the service: close its socket. TCP flows in progress go on.
    Close(ServiceKey),
    /// Stop taking new flows: close TCP listeners; UDP sockets keep serving existing sessions.
    Drain,
}

/// A running worker thread.
#[derive(Debug)]
pub(crate) struct Worker {
    orders: mpsc::UnboundedSender<Command>,
}

impl Worker {
    /// Starts worker number `index`.
    pub(crate) fn spawn(index: usize, shared: Shared) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (orders, inbox) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name(format!("lbd-worker-{index}"))
            .spawn(move || {
                super::flows::use_shard(index);
                runtime.block_on(run(inbox, shared));
            })?;
        Ok(Self { orders })
    }

    /// Sends an order; a worker that has stopped ignores it.
    pub(crate) fn send(&self, command: Command) {
        let _ = self.orders.send(command);
    }
}

/// Period of the worker's heartbeat timer.
///
/// tokio's time driver wakes its own reactor (an eventfd write) whenever a timer is inserted
/// that expires before the driver's next planned wake-up. Every connect timeout and every
/// relay's idle timer would do so on a worker with nothing earlier pending: a syscall per
/// connection. A heartbeat keeps the next wake-up at most this far ahead, so timers of a
/// second or more never cost that write; it costs one wake-up per second when idle. It also
/// releases closed flows whose TIME_WAIT or CLOSE period is over ([`super::linger`]).
const HEARTBEAT: Duration = Duration::from_secs(1);

async fn run(mut inbox: mpsc::UnboundedReceiver<Command>, shared: Shared) {
    tokio::spawn(async {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            heartbeat.tick().await;
            // Closed flows whose TIME_WAIT or CLOSE period is over stop counting.
            super::linger::release_expired(crate::clock::Millis::now());
        }
    });
    let drain = CancellationToken::new();
    let mut serving: HashMap<ServiceKey, CancellationToken> = HashMap::new();
    while let Some(command) = inbox.recv().await {
        match command {
            Command::Listen(key, socket) => {
                let stop = CancellationToken::new();
                let started = match socket {
                    WorkerSocket::Tcp(listener) => Listener::new(listener).map(|listener| {
                        tokio::spawn(tcp::accept_loop(listener, key, shared.clone(), stop.clone()))
                    }),
                    WorkerSocket::Udp(socket) => UdpSocket::from_std(socket).map(|socket| {
                        tokio::spawn(udp::serve(
                            socket,
                            key,
                            shared.clone(),
                            stop.clone(),
                            drain.clone(),
                        ))
                    }),
                };
                if let Err(error) = started {
                    tracing::error!(service = %key, %error, "worker cannot serve the socket");
                    continue;
                }
                if let Some(previous) = serving.insert(key, stop) {
                    previous.cancel();
                }
            }
            Command::Close(key) => {
                if let Some(stop) = serving.remove(&key) {
                    stop.cancel();
                }
            }
            Command::Drain => {
                drain.cancel();
                serving.retain(|key, stop| {
                    let keep = key.protocol == Protocol::Udp;
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
            }
        }
    }
}
