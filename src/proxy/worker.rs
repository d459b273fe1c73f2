//! Data-plane worker threads. Each runs a single-threaded tokio runtime and owns one socket
//! per service; the control plane hands it sockets and orders through a channel.

use std::{collections::HashMap, io, thread};

use tokio::{
    net::{TcpListener, UdpSocket},
    sync::mpsc,
    task::LocalSet,
};
use tokio_util::sync::CancellationToken;

use super::{Shared, tcp, udp};
use crate::config::{Protocol, ServiceKey};

/// A socket for one worker to serve.
#[derive(Debug)]
pub enum WorkerSocket {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A UDP service socket.
    Udp(std::net::UdpSocket),
}

/// Orders from the control plane.
#[derive(Debug)]
pub enum Command {
    /// Serve this socket for this service (replacing any socket it had for it).
    Listen(ServiceKey, WorkerSocket),
    /// Stop serving the service: close its socket. TCP flows in progress go on.
    Close(ServiceKey),
    /// Stop taking new flows: close TCP listeners; UDP sockets keep serving existing sessions.
    Drain,
}

/// A running worker thread.
#[derive(Debug)]
pub struct Worker {
    orders: mpsc::UnboundedSender<Command>,
}

impl Worker {
    /// Starts worker number `index`.
    pub fn spawn(index: usize, shared: Shared) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (orders, inbox) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name(format!("lbd-worker-{index}"))
            .spawn(move || LocalSet::new().block_on(&runtime, run(inbox, shared)))?;
        Ok(Self { orders })
    }

    /// Sends an order; a worker that has stopped ignores it.
    pub fn send(&self, command: Command) {
        let _ = self.orders.send(command);
    }
}

async fn run(mut inbox: mpsc::UnboundedReceiver<Command>, shared: Shared) {
    let drain = CancellationToken::new();
    let mut serving: HashMap<ServiceKey, CancellationToken> = HashMap::new();
    while let Some(command) = inbox.recv().await {
        match command {
            Command::Listen(key, socket) => {
                let stop = CancellationToken::new();
                let started = match socket {
                    WorkerSocket::Tcp(listener) => TcpListener::from_std(listener).map(|listener| {
                        tokio::task::spawn_local(tcp::accept_loop(
                            listener,
                            key,
                            shared.clone(),
                            stop.clone(),
                        ))
                    }),
                    WorkerSocket::Udp(socket) => UdpSocket::from_std(socket).map(|socket| {
                        tokio::task::spawn_local(udp::serve(
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
