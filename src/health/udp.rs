//! The `udp` check: send a datagram from a connected socket and wait for a reply that contains
//! `expect`. Silence until the timeout fails, and so does an ICMP port unreachable (seen as a
//! refused receive on the connected socket).

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::net::UdpSocket;

use super::{common::contains, machine::Outcome};
use crate::{config::format_duration, proxy_header::Header};

/// Sends `send` to `address` (after a PROXY v2 LOCAL header with `send_proxy`) and judges
/// the reply.
pub(super) async fn check(
    address: SocketAddr,
    send: &str,
    expect: &str,
    send_proxy: bool,
    timeout: Duration,
) -> Outcome {
    let exchange = async {
        let local: SocketAddr = if address.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(address).await?;
        let mut datagram = Vec::with_capacity(16 + send.len());
        if send_proxy {
            datagram.extend_from_slice(Header::local().as_bytes());
        }
        datagram.extend_from_slice(send.as_bytes());
        socket.send(&datagram).await?;
        let mut reply = vec![0u8; 2048];
        let len = socket.recv(&mut reply).await?;
        reply.truncate(len);
        Ok::<_, io::Error>(reply)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Outcome::fail(format!("no reply within {}", format_duration(timeout))),
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
            Outcome::fail("ICMP port unreachable")
        }
        Ok(Err(error)) => Outcome::io_failure(&error, format!("udp exchange failed: {error}")),
        Ok(Ok(reply)) if contains(&reply, expect.as_bytes()) => Outcome::pass("reply received"),
        Ok(Ok(_)) => Outcome::fail(format!("reply lacks {expect:?}")),
    }
}
