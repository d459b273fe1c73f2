//! Listening sockets for the proxy: one per worker, all bound to the service address with
//! `SO_REUSEPORT`, so the kernel spreads new connections (and UDP clients) over the workers.

use std::{
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
};

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use thiserror::Error;

use crate::config::{Protocol, ServiceKey};

/// Backlog of each TCP listener (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// A service address could not be bound.
#[derive(Debug, Error)]
#[error("cannot listen on {key}: {reason}")]
pub struct BindError {
    /// The service.
    pub key: ServiceKey,
    /// What went wrong, in words a user can act on.
    pub reason: String,
}

/// One bound socket per worker for a service.
#[derive(Debug)]
pub(crate) enum Listeners {
    /// TCP listeners.
    Tcp(Vec<TcpListener>),
    /// UDP sockets.
    Udp(Vec<UdpSocket>),
}

/// Binds `count` sockets for `key`. With `freebind` (a director of an HA pair), the VIP need
/// not be local yet: keepalived adds it to the master, and the listeners serve from then on.
pub(crate) fn bind(
    key: ServiceKey,
    ipv6_only: bool,
    count: usize,
    freebind: bool,
) -> Result<Listeners, BindError> {
    let fail = |error: io::Error| {
        let reason = match error.kind() {
            io::ErrorKind::AddrInUse => {
                "address already in use (another lbd, or another server, listens there)".to_owned()
            }
            io::ErrorKind::AddrNotAvailable => {
                "address not available (no local interface has this IP)".to_owned()
            }
            io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".to_owned()
            }
            _ => error.to_string(),
        };
        BindError { key, reason }
    };
    // SO_REUSEPORT would let us join a group that another process of the same user already
    // bound; probe with a plain socket first so "in use" is reported, not silently shared.
    drop(new_socket(key, ipv6_only, false, freebind).map_err(fail)?);
    match key.protocol {
        Protocol::Tcp => (0..count)
            .map(|_| {
                let socket = new_socket(key, ipv6_only, true, freebind)?;
                socket.listen(BACKLOG)?;
                Ok(TcpListener::from(socket))
            })
            .collect::<io::Result<_>>()
            .map(Listeners::Tcp)
            .map_err(fail),
        Protocol::Udp => (0..count)
            .map(|_| new_socket(key, ipv6_only, true, freebind).map(UdpSocket::from))
            .collect::<io::Result<_>>()
            .map(Listeners::Udp)
            .map_err(fail),
    }
}

fn new_socket(key: ServiceKey, ipv6_only: bool, reuse_port: bool, freebind: bool) -> io::Result<Socket> {
    let addr: SocketAddr = key.listen;
    let socket = match key.protocol {
        Protocol::Tcp => Socket::new(Domain::for_address(addr), Type::STREAM, Some(SockProtocol::TCP))?,
        Protocol::Udp => Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProtocol::UDP))?,
    };
    if addr.is_ipv6() {
        socket.set_only_v6(ipv6_only)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    if freebind {
        if addr.is_ipv6() {
            socket.set_freebind_v6(true)?;
        } else {
            socket.set_freebind_v4(true)?;
        }
    }
    socket.set_nonblocking(true)?;
    if key.protocol == Protocol::Tcp {
        // Accepted sockets inherit TCP_NODELAY from the listener.
        socket.set_tcp_nodelay(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}
