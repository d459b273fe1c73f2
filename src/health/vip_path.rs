//! Checks through a VIP's own path (`health_check.via_vip`, for dr and tun reals, as Seesaw's
//! DSR checks): the check connects to the VIP, not to the real's address. Its socket carries
//! [`CHECK_MARK`], which a policy rule routes into lbd's TUN device (on a backup too); before
//! the first packet, the check pins its connection to the real it checks in the packet plane's
//! flow table, so lbd forwards the check's packets to that real exactly as a client's (dr: to
//! its MAC; tun: inside IPIP). The real answers from the VIP straight to this host, as it
//! answers clients. A real without the VIP on its loopback, or without its tunnel, does not
//! answer: it is found down instead of black-holing its clients' flows.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::net::{TcpSocket, TcpStream};

use super::{common::Target, machine::Outcome};
use crate::{
    clock::Millis,
    config::{CHECK_MARK, Protocol, ServiceKey},
    lvs::{flow_table::FlowKey, plane::PacketShared},
    table::TableHandle,
};

/// What checks through a VIP's path need from the director: its table (to find the real) and
/// the packet plane (to pin their connections).
#[derive(Clone)]
pub(crate) struct VipPaths {
    /// The service table.
    pub(crate) table: Arc<TableHandle>,
    /// The packet plane's shared state.
    pub(crate) packet: Arc<PacketShared>,
}

impl std::fmt::Debug for VipPaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VipPaths")
    }
}

/// A check's connection pinned to its real; unpinned when dropped.
pub(super) struct Pinned {
    packet: Arc<PacketShared>,
    key: FlowKey,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.packet.flows.unpin(self.key, Millis::now());
    }
}

/// Connects to `vip` through the path of `target`'s real within `timeout`; the pin lasts as
/// long as the returned guard.
pub(super) async fn connect(
    paths: &VipPaths,
    target: &Target,
    vip: SocketAddr,
    timeout: Duration,
) -> Result<(TcpStream, Pinned), Outcome> {
    let failed = |what: &str, error: std::io::Error| Outcome::io_failure(&error, format!("{what}: {error}"));
    let source = source_for(vip).map_err(|error| failed("no route to the VIP for the check", error))?;
    let socket = if vip.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|error| failed("cannot open a socket", error))?;
    socket2::SockRef::from(&socket)
        .set_mark(CHECK_MARK)
        .map_err(|error| failed("cannot mark the check's socket (needs CAP_NET_ADMIN)", error))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|error| failed("cannot bind the check's socket", error))?;
    let client = socket
        .local_addr()
        .map_err(|error| failed("cannot name the check's socket", error))?;
    let key = FlowKey {
        protocol: Protocol::Tcp,
        client,
        vip,
    };
    {
        let table = paths.table.load();
        let service = ServiceKey {
            protocol: Protocol::Tcp,
            listen: vip,
        };
        let real = table
            .service(&service)
            .and_then(|service| service.real(target.real))
            .ok_or_else(|| Outcome::fail("not in the table any more"))?;
        let hold = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1_000);
        paths
            .packet
            .flows
            .pin(key, real, Millis(hold), Millis::now())
            .map_err(|_| Outcome::fail("the connection table is full"))?;
    }
    let pinned = Pinned {
        packet: Arc::clone(&paths.packet),
        key,
    };
    match tokio::time::timeout(timeout, socket.connect(vip)).await {
        Ok(Ok(stream)) => Ok((stream, pinned)),
        Ok(Err(error)) => Err(Outcome::io_failure(
            &error,
            format!("through the VIP {vip}: {error}"),
        )),
        Err(_) => Err(Outcome::fail(format!(
            "no answer through the VIP {vip} within {} (is the VIP on the real's loopback?)",
            crate::config::format_duration(timeout)
        ))),
    }
}

/// The address this host sends the check's marked packets to `vip` from.
fn source_for(vip: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if vip.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(any)?;
    socket2::SockRef::from(&probe).set_mark(CHECK_MARK)?;
    probe.connect(vip)?;
    Ok(probe.local_addr()?.ip())
}
