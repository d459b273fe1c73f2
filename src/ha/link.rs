//! The sync sockets: the master's sender, which sends the flows its workers queued (every
//! [`FLUSH`], in messages of at most 1472 bytes) to the multicast group or to each peer, and the
//! backup's receiver, which takes messages from the group or the peers into its flow table.
//! What arrives is checked whole before anything of it is taken; a message from a host that is
//! not a peer (when peers are set), of another sync id, or malformed is counted and dropped.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::{
    clock::Millis,
    config::SyncConfig,
    log::Throttle,
    lvs::plane::PacketShared,
    packet::sync::{MAX_MESSAGE_LEN, Message, MessageWriter, decode},
    table::TableHandle,
};

/// How often the sender sends what was queued (IPVS sends full buffers at once and holds a
/// partial one at most 2 s; a failover wants the flows sooner).
pub(crate) const FLUSH: Duration = Duration::from_millis(50);

/// The first IPv4 address of `interface`.
pub(crate) fn interface_address(interface: &str) -> io::Result<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .map_err(io::Error::from)?
        .filter(|entry| entry.interface_name == interface)
        .find_map(|entry| entry.address?.as_sockaddr_in().map(|address| address.ip()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("interface {interface} has no IPv4 address to send sync messages from"),
            )
        })
}

/// The sender's socket: from `interface`'s address, multicast out of it with TTL 1 and no
/// loopback (as the kernel's master).
pub(crate) fn sender_socket(config: &SyncConfig) -> io::Result<UdpSocket> {
    let address = interface_address(&config.interface)?;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&SocketAddr::from((address, 0)).into())?;
    socket.set_multicast_if_v4(&address)?;
    socket.set_multicast_ttl_v4(1)?;
    socket.set_multicast_loop_v4(false)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// The receiver's socket: the sync port on `interface`, in the multicast group unless peers
/// are set.
pub(crate) fn receiver_socket(config: &SyncConfig) -> io::Result<UdpSocket> {
    let address = interface_address(&config.interface)?;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.bind_device(Some(config.interface.as_bytes()))?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port)).into())?;
    if config.peers.is_empty() {
        socket.join_multicast_v4(&config.group, &address)?;
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Sends what the workers queued, every [`FLUSH`], while this director is the master.
pub(crate) async fn send(socket: UdpSocket, config: SyncConfig, packets: Arc<PacketShared>) {
    let targets: Vec<SocketAddr> = if config.peers.is_empty() {
        vec![SocketAddrV4::new(config.group, config.port).into()]
    } else {
        config
            .peers
            .iter()
            .map(|&peer| SocketAddr::new(peer, config.port))
            .collect()
    };
    static FAILED: Throttle = Throttle::new(Duration::from_secs(10));
    let mut writer = MessageWriter::new(config.syncid, MAX_MESSAGE_LEN);
    let mut clock = tokio::time::interval(FLUSH);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        clock.tick().await;
        let conns = packets.flows.sync.take();
        if conns.is_empty() {
            continue;
        }
        let mut messages = Vec::new();
        for conn in &conns {
            if !writer.push(conn) {
                messages.push(writer.take());
                if !writer.push(conn) {
                    continue;
                }
            }
        }
        if !writer.is_empty() {
            messages.push(writer.take());
        }
        packets
            .flows
            .sync
            .counters
            .flows_sent
            .fetch_add(conns.len() as u64, Relaxed);
        for message in &messages {
            for target in &targets {
                match socket.send_to(message, target).await {
                    Ok(_) => {
                        packets.flows.sync.counters.messages_sent.fetch_add(1, Relaxed);
                    }
                    Err(error) => {
                        if let Some(suppressed) = FAILED.ready() {
                            tracing::warn!(%target, %error, suppressed, "sync message not sent");
                        }
                    }
                }
            }
        }
    }
}

/// Takes messages into the flow table while this director is a backup.
pub(crate) async fn receive(
    socket: UdpSocket,
    config: SyncConfig,
    packets: Arc<PacketShared>,
    table: Arc<TableHandle>,
) {
    static REFUSED: Throttle = Throttle::new(Duration::from_secs(10));
    let counters = &packets.flows.sync.counters;
    let own = interface_address(&config.interface).ok().map(IpAddr::V4);
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if Some(from.ip()) == own || packets.flows.sync.is_master() {
            continue;
        }
        if !config.peers.is_empty() && !config.peers.contains(&from.ip()) {
            counters.messages_refused.fetch_add(1, Relaxed);
            if let Some(suppressed) = REFUSED.ready() {
                tracing::warn!(%from, suppressed, "sync message from a host that is not a peer dropped");
            }
            continue;
        }
        if let Err(error) =
            decode(&buffer[..len], config.syncid).map(|message| install(&message, &packets, &table))
        {
            counters.messages_refused.fetch_add(1, Relaxed);
            if let Some(suppressed) = REFUSED.ready() {
                tracing::warn!(%from, %error, suppressed, "sync message dropped");
            }
        }
    }
}

/// Takes one sync message (of any sync id) into the flow table; how many entries it installed.
/// A malformed message is counted as refused and nothing of it is taken.
pub(crate) fn take(datagram: &[u8], syncid: u8, packets: &PacketShared, table: &TableHandle) -> usize {
    match decode(datagram, syncid) {
        Ok(message) => install(&message, packets, table),
        Err(error) => {
            packets.flows.sync.counters.messages_refused.fetch_add(1, Relaxed);
            tracing::warn!(%error, "sync message dropped");
            0
        }
    }
}

/// Installs a checked message's entries; how many were taken.
fn install(message: &Message, packets: &PacketShared, table: &TableHandle) -> usize {
    let counters = &packets.flows.sync.counters;
    counters.messages_received.fetch_add(1, Relaxed);
    let now = Millis::now();
    counters.last_received.store(now.0.max(1), Relaxed);
    let services = table.snapshot();
    let mut taken = 0;
    for conn in &message.conns {
        match packets.flows.install(conn, &services, now) {
            Ok(()) => taken += 1,
            Err(_) => {
                counters.flows_unbound.fetch_add(1, Relaxed);
            }
        }
    }
    counters.flows_received.fetch_add(taken as u64, Relaxed);
    counters.flows_unbound.fetch_add(message.skipped as u64, Relaxed);
    taken
}
