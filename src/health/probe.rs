//! One check of one real, by type: what to do, and how to read the answer. Each check finishes
//! within its `timeout` and turns every error into a failed [`Outcome`] whose reason says
//! what went wrong.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpSocket, TcpStream};

use super::{agent, exec, http, machine::Outcome, udp};
use crate::config::{HealthCheckConfig, HealthCheckKind};

/// What a check is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service's name, for `{service}` and logs.
    pub service: String,
    /// The real server.
    pub real: SocketAddr,
}

impl Target {
    /// The address checked: the real's, on the check's `port` if it has one.
    pub fn checked(&self, check: &HealthCheckConfig) -> SocketAddr {
        SocketAddr::new(self.real.ip(), check.port.unwrap_or(self.real.port()))
    }
}

/// Runs one check of `target`.
pub(super) async fn run(check: &HealthCheckConfig, target: &Target) -> Outcome {
    let address = target.checked(check);
    let timeout = check.timeout;
    match &check.kind {
        HealthCheckKind::None => Outcome::pass("not checked"),
        HealthCheckKind::Tcp => match handshake(address, timeout).await {
            Ok(()) => Outcome::pass("connected"),
            Err(failed) => failed,
        },
        HealthCheckKind::Http {
            path,
            host,
            expect_status,
            expect_body,
        } => {
            let request = http::Request {
                path,
                host: host.clone().unwrap_or_else(|| address.to_string()),
                expect_status,
                expect_body: expect_body.as_deref(),
            };
            within(
                timeout,
                "no HTTP response",
                http::check(address, &request, timeout),
            )
            .await
        }
        HealthCheckKind::Udp { send, expect } => udp::check(address, send, expect, timeout).await,
        HealthCheckKind::Exec { command } => exec::check(command, target, address, timeout).await,
        HealthCheckKind::Agent { agent_port } => {
            let agent = SocketAddr::new(address.ip(), *agent_port);
            within(timeout, "no agent reply", agent::check(agent, timeout)).await
        }
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
async fn handshake(address: SocketAddr, timeout: Duration) -> Result<(), Outcome> {
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

/// Makes the close of `stream` send a reset, as HAProxy's checks do: the director keeps no
/// TIME_WAIT per check.
pub(super) fn close_with_reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
