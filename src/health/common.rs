//! What every check uses: what it is aimed at, connecting to it within the check's timeout
//! (an error of this host gives no verdict), and closing with a reset.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
};

use super::machine::Outcome;
use crate::{
    config::HealthCheckConfig,
    proxy_header::{Header, Transport, Version},
};

/// What a check is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The service's name, for `{service}` and logs.
    pub service: String,
    /// The real server.
    pub real: SocketAddr,
    /// The PROXY protocol version its checks start with, if they send the header.
    pub send_proxy: Option<Version>,
    /// `via_vip`: the VIP (and port) its checks connect to, through the real's VIP path.
    pub via_vip: Option<SocketAddr>,
}

impl Target {
    /// The address checked: the real's, on the check's `port` if it has one.
    pub(crate) fn checked(&self, check: &HealthCheckConfig) -> SocketAddr {
        SocketAddr::new(self.real.ip(), check.port.unwrap_or(self.real.port()))
    }
}

/// Runs `check`, failing with "`what` within `timeout`" if it takes longer.
pub(super) async fn within(timeout: Duration, what: &str, check: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(timeout, check).await.unwrap_or_else(|_| {
        Outcome::fail(format!(
            "{what} within {}",
            crate::config::format_duration(timeout)
        ))
    })
}

/// Connects to `address` within `timeout`; the error is the check's outcome (a failure, or no
/// verdict when this host lacked a descriptor or a port).
pub(super) async fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream, Outcome> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    connect_socket(socket, address, timeout).await
}

/// The `tcp` check: the server's kernel answers the SYN within `timeout`. As HAProxy's pure
/// connect check does, the handshake's last ACK is held back (no quick ACK) and the socket is
/// then closed with a reset, so the server's application never sees a connection to accept
/// and close, and neither side keeps a TIME_WAIT.
pub(super) async fn handshake(address: SocketAddr, timeout: Duration) -> Result<(), Outcome> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    if let Ok(socket) = &socket {
        let _ = socket2::SockRef::from(socket).set_tcp_quickack(false);
    }
    let stream = connect_socket(socket, address, timeout).await?;
    close_with_reset(&stream);
    Ok(())
}

async fn connect_socket(
    socket: io::Result<TcpSocket>,
    address: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, Outcome> {
    let socket =
        socket.map_err(|error| Outcome::io_failure(&error, format!("cannot open a socket: {error}")))?;
    match tokio::time::timeout(timeout, socket.connect(address)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(Outcome::io_failure(&error, connect_error(&error))),
        Err(_) => Err(Outcome::fail(format!(
            "connect timed out after {}",
            crate::config::format_duration(timeout)
        ))),
    }
}

/// A short reason for a failed connect.
fn connect_error(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        _ => format!("connect failed: {error}"),
    }
}

/// Sends the check's PROXY header first, if it has one: version 2's LOCAL (the director's own
/// connection), or a version 1 line with the connection's own addresses.
pub(super) async fn send_proxy(stream: &mut TcpStream, version: Option<Version>) -> Result<(), Outcome> {
    let header = match version {
        None => return Ok(()),
        Some(Version::V2) => Header::local(),
        Some(Version::V1) => {
            let (local, peer) = stream
                .local_addr()
                .and_then(|local| Ok((local, stream.peer_addr()?)))
                .map_err(|error| Outcome::fail(format!("cannot name the connection's addresses: {error}")))?;
            Header::new(Version::V1, Transport::Stream, local, peer)
        }
    };
    stream
        .write_all(header.as_bytes())
        .await
        .map_err(|error| Outcome::fail(format!("cannot send the PROXY header: {error}")))
}

/// Makes the close of `stream` send a reset, as HAProxy's checks do: the director keeps no
/// TIME_WAIT per check.
pub(super) fn close_with_reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Whether `needle` is in `haystack` (an empty needle always is).
pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}
