//! Real servers' MAC addresses for direct routing, read from the kernel's neighbour tables
//! (ARP for IPv4, NDP for IPv6, one netlink dump) and refreshed every second, so a real whose
//! MAC changes is followed. A real not in the table yet is resolved by sending it one small
//! UDP datagram (the kernel asks ARP or NDP for it); its first packets are dropped meanwhile,
//! and the client retransmits.

use std::{
    collections::HashMap,
    net::{IpAddr, UdpSocket},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
};

/// A MAC address.
pub type Mac = [u8; 6];

/// The neighbour table as last read.
#[derive(Debug)]
pub struct Neighbours {
    table: ArcSwap<HashMap<IpAddr, Mac>>,
    asked: Mutex<HashMap<IpAddr, Instant>>,
    /// A real was asked for: read the table again soon, not a second later.
    missed: AtomicBool,
}

impl Neighbours {
    /// Reads the table now and refreshes it every second until `stop`.
    pub fn start(stop: Arc<AtomicBool>) -> Arc<Self> {
        let neighbours = Arc::new(Self {
            table: ArcSwap::from_pointee(read().unwrap_or_default()),
            asked: Mutex::new(HashMap::new()),
            missed: AtomicBool::new(false),
        });
        let refreshed = Arc::clone(&neighbours);
        let _ = thread::Builder::new()
            .name("lbd-neighbours".to_owned())
            .spawn(move || {
                let mut failing = false;
                let mut last = Instant::now();
                while !stop.load(Relaxed) {
                    // Every second, or 50 ms after a miss (the kernel has resolved it by then,
                    // usually), so that a real's first packets wait less.
                    thread::sleep(Duration::from_millis(50));
                    if last.elapsed() < Duration::from_secs(1) && !refreshed.missed.swap(false, Relaxed) {
                        continue;
                    }
                    last = Instant::now();
                    match read() {
                        Ok(table) => {
                            refreshed.table.store(Arc::new(table));
                            failing = false;
                        }
                        Err(error) if !failing => {
                            tracing::warn!(%error, "cannot read the neighbour table; dr keeps the MACs it knows");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            });
        neighbours
    }

    /// The MAC of `ip`, or `None` after asking the kernel to resolve it (at most once a
    /// second per address).
    pub fn mac(&self, ip: IpAddr) -> Option<Mac> {
        if let Some(mac) = self.table.load().get(&ip) {
            return Some(*mac);
        }
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if asked
            .get(&ip)
            .is_none_or(|at| now.duration_since(*at) > Duration::from_secs(1))
        {
            asked.insert(ip, now);
            self.missed.store(true, Relaxed);
            let any = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            if let Ok(socket) = UdpSocket::bind(any) {
                let _ = socket.send_to(&[0], (ip, 9));
            }
        }
        None
    }
}

/// The complete entries of the kernel's neighbour tables, both families, in one netlink dump.
fn read() -> std::io::Result<HashMap<IpAddr, Mac>> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    let socket = Socket::new(NETLINK_ROUTE)?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default())),
    );
    request.finalize();
    let mut bytes = vec![0; request.header.length as usize];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    let mut table = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buf[..], 0)?;
        let mut at = 0;
        while at < size {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..size])
                .map_err(|error| std::io::Error::other(error.to_string()))?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(table),
                NetlinkPayload::Error(error) => return Err(std::io::Error::other(format!("{error:?}"))),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(entry)) => {
                    if let Some((ip, mac)) = complete(&entry) {
                        table.insert(ip, mac);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

/// An entry's address and MAC, if it is complete (the kernel knows the MAC and may use it).
fn complete(entry: &NeighbourMessage) -> Option<(IpAddr, Mac)> {
    let usable = matches!(
        entry.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    );
    if !usable {
        return None;
    }
    let ip = entry.attributes.iter().find_map(|attribute| match attribute {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let mac = entry.attributes.iter().find_map(|attribute| match attribute {
        NeighbourAttribute::LinkLayerAddress(bytes) => Mac::try_from(bytes.as_slice()).ok(),
        _ => None,
    })?;
    Some((ip, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: IpAddr, state: NeighbourState, lladdr: &[u8]) -> NeighbourMessage {
        let mut entry = NeighbourMessage::default();
        entry.header.state = state;
        entry.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        entry
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
        entry
    }

    #[test]
    fn complete_entries_of_either_family_are_read() {
        let mac = [2, 0, 0, 0, 0, 0x0b];
        let v4: IpAddr = "10.77.0.11".parse().unwrap();
        let v6: IpAddr = "fd00:10::11".parse().unwrap();
        assert_eq!(
            complete(&entry(v4, NeighbourState::Reachable, &mac)),
            Some((v4, mac))
        );
        assert_eq!(complete(&entry(v6, NeighbourState::Stale, &mac)), Some((v6, mac)));
        assert_eq!(complete(&entry(v4, NeighbourState::Incomplete, &[0; 6])), None);
        assert_eq!(complete(&entry(v6, NeighbourState::Failed, &mac)), None);
        assert_eq!(
            complete(&entry(v4, NeighbourState::Reachable, &[1, 2])),
            None,
            "not a MAC"
        );
    }

    #[test]
    fn this_hosts_table_can_be_read() {
        // Whatever it holds (maybe nothing), the dump itself must work unprivileged.
        assert!(read().is_ok());
    }
}
