//! The IPVS connection-synchronisation protocol, version 1, byte for byte as the kernel's
//! `ip_vs_sync.c` writes and reads it, so that a ulvs director and a kernel IPVS director
//! understand each other's messages. Pure: no I/O, and no input makes it panic.
//!
//! A message is one UDP datagram (to 224.0.0.81:8848, or to unicast peers):
//!
//! ```text
//! header, 8 bytes:  reserved = 0 (u8) | syncid (u8) | size (be16, the whole message)
//!                   nr_conns (u8) | version = 1 (u8) | spare = 0 (be16)
//! entry, 36 bytes (IPv4) or 72 (IPv6), then options, padded to 4 bytes before the next one:
//!                   type (u8, bit 0 = IPv6) | protocol (u8) | ver_size (be16: 4-bit version 0,
//!                   12-bit length of entry and options) | flags (be32) | state (be16) |
//!                   cport | vport | dport (be16) | fwmark (be32) | timeout (be32, seconds) |
//!                   caddr | vaddr | daddr (4 or 16 bytes each)
//! option:           type (u8) | length (u8, > 0) | data: 1 = sequence data (24 bytes),
//!                   2 = persistence-engine data (≤ 255), 3 = its name (≤ 16); a type with
//!                   bit 6 (64) set is optional and skipped when unknown
//! ```
//!
//! Version 0 (the first byte is the entry count, never 0 in practice) is not spoken: a message
//! that is not version 1 is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The IPVS sync multicast group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The IPVS sync UDP port.
pub const PORT: u16 = 8848;
/// The header's length.
pub const HEADER_LEN: usize = 8;
/// An IPv4 entry's length without options.
pub const V4_ENTRY_LEN: usize = 36;
/// An IPv6 entry's length without options.
pub const V6_ENTRY_LEN: usize = 72;
/// The largest message a master sends: a 1500-byte MTU less the IPv4 and UDP headers (as
/// the kernel's master).
pub const MAX_MESSAGE_LEN: usize = 1472;
/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;

const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
/// An option type with this bit is optional: skipped when unknown.
const OPT_OPTIONAL: u8 = 1 << 6;
const SEQ_DATA_LEN: usize = 24;
const PE_NAME_MAX: usize = 16;
const ENTRY_LEN_MASK: u16 = 0x0fff;

/// Connection flags (`IP_VS_CONN_F_*`), as they travel.
pub mod flags {
    /// The forwarding method's bits.
    pub const FWD_MASK: u32 = 0x0007;
    /// NAT (masquerading).
    pub const MASQ: u32 = 0x0000;
    /// IPIP tunnel.
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// The entry was made by sync (set by the receiver).
    pub const SYNC: u32 = 0x0020;
    /// Not established (counts in InActConn).
    pub const INACTIVE: u32 = 0x0100;
    /// Sequence adjustment in use.
    pub const SEQ_MASK: u32 = 0x0600;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// The bits a backup takes from a new entry (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = FWD_MASK | 0x0080 | INACTIVE | SEQ_MASK | 0x0800 | TEMPLATE;
}

/// Template states (`IP_VS_CTPL_S_*`).
pub mod template_state {
    /// Not yet assured.
    pub const NONE: u16 = 0;
    /// Assured (a connection of it was established).
    pub const ASSURED: u16 = 1;
}

/// One synchronised connection or persistence template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConn {
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    /// [`flags`], as sent.
    pub flags: u32,
    /// The IPVS state: a TCP state's number, 0 for UDP, a [`template_state`] for templates.
    pub state: u16,
    /// The client (a template: the client's masked network, port 0).
    pub client: SocketAddr,
    /// The virtual service.
    pub vip: SocketAddr,
    /// The real server.
    pub real: SocketAddr,
    /// Firewall mark (0 when the service is not a fwmark service).
    pub fwmark: u32,
    /// The entry's timeout in its state, seconds.
    pub timeout: u32,
    /// The persistence engine's name and data, when it has them (kept, not interpreted).
    pub persistence_engine: Option<(String, Vec<u8>)>,
}

impl SyncConn {
    /// Whether this is a persistence template.
    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    fn encoded_len(&self) -> usize {
        let base = if self.client.is_ipv6() {
            V6_ENTRY_LEN
        } else {
            V4_ENTRY_LEN
        };
        base + self
            .persistence_engine
            .as_ref()
            .map_or(0, |(name, data)| 2 + data.len() + 2 + name.len())
    }
}

/// Why a received message was refused. Nothing of a refused message is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Shorter than a header.
    #[error("sync message of {0} bytes is shorter than its header")]
    TooShort(usize),
    /// The header's size is not the datagram's.
    #[error("sync message says {declared} bytes but {received} arrived")]
    Size {
        /// The header's size.
        declared: usize,
        /// The datagram's.
        received: usize,
    },
    /// Another cluster's message (its sync id is not ours).
    #[error("sync message for sync id {0}, not ours")]
    OtherSyncId(u8),
    /// Not protocol version 1 (or not a well-formed version 1 header).
    #[error("sync message is not protocol version 1 (version byte {0})")]
    Version(u8),
    /// An entry is malformed.
    #[error("sync entry {index} is malformed: {reason}")]
    Entry {
        /// The entry's place, from 0.
        index: usize,
        /// What was wrong.
        reason: &'static str,
    },
}

/// A received message, checked whole: its entries and how many were skipped (a protocol,
/// family or option this director does not handle, as the kernel skips them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The sender's sync id.
    pub syncid: u8,
    /// The entries, in order.
    pub conns: Vec<SyncConn>,
    /// Entries passed over.
    pub skipped: usize,
}

/// Reads a datagram. `syncid` 0 accepts every sync id; another accepts only its own.
pub fn decode(datagram: &[u8], syncid: u8) -> Result<Message, SyncError> {
    if datagram.len() < HEADER_LEN {
        return Err(SyncError::TooShort(datagram.len()));
    }
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if declared != datagram.len() {
        return Err(SyncError::Size {
            declared,
            received: datagram.len(),
        });
    }
    let sender = datagram[1];
    if syncid != 0 && sender != syncid {
        return Err(SyncError::OtherSyncId(sender));
    }
    let (reserved, count, version, spare) = (datagram[0], datagram[4], datagram[5], &datagram[6..8]);
    if version != VERSION || reserved != 0 || spare != [0, 0] {
        return Err(SyncError::Version(if reserved != 0 { 0 } else { version }));
    }
    let mut message = Message {
        syncid: sender,
        conns: Vec::with_capacity(usize::from(count)),
        skipped: 0,
    };
    let mut at = HEADER_LEN;
    for index in 0..usize::from(count) {
        let bad = |reason| SyncError::Entry { index, reason };
        let head = datagram.get(at..at + V4_ENTRY_LEN).ok_or(bad("cut short"))?;
        let ver_size = u16::from_be_bytes([head[2], head[3]]);
        if ver_size >> 12 != 0 {
            return Err(bad("unknown entry version"));
        }
        let size = usize::from(ver_size & ENTRY_LEN_MASK);
        if size < V4_ENTRY_LEN {
            return Err(bad("shorter than its addresses"));
        }
        let entry = datagram
            .get(at..at + size)
            .ok_or(bad("longer than the message"))?;
        match read_entry(entry) {
            Ok(Some(conn)) => message.conns.push(conn),
            Ok(None) => message.skipped += 1,
            Err(reason) => return Err(bad(reason)),
        }
        // The next entry starts 4-aligned (the last one is not padded).
        at += (size + 3) & !3;
    }
    Ok(message)
}

/// One entry (its declared length exactly); `None` when it is well formed but of a kind
/// this director does not take.
fn read_entry(entry: &[u8]) -> Result<Option<SyncConn>, &'static str> {
    let kind = entry[0];
    let (fixed, ipv6) = match kind {
        0 => (V4_ENTRY_LEN, false),
        1 => (V6_ENTRY_LEN, true),
        _ => return Err("unknown entry type"),
    };
    if entry.len() < fixed {
        return Err("shorter than its addresses");
    }
    let be16 = |at: usize| u16::from_be_bytes([entry[at], entry[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]);
    let address = |at: usize| -> IpAddr {
        if ipv6 {
            let mut octets = [0; 16];
            octets.copy_from_slice(&entry[at..at + 16]);
            Ipv6Addr::from(octets).into()
        } else {
            Ipv4Addr::new(entry[at], entry[at + 1], entry[at + 2], entry[at + 3]).into()
        }
    };
    let width = if ipv6 { 16 } else { 4 };
    let mut conn = SyncConn {
        protocol: entry[1],
        flags: be32(4),
        state: be16(8),
        client: SocketAddr::new(address(24), be16(10)),
        vip: SocketAddr::new(address(24 + width), be16(12)),
        real: SocketAddr::new(address(24 + 2 * width), be16(14)),
        fwmark: be32(16),
        timeout: be32(20),
        persistence_engine: None,
    };
    let (mut seq, mut pe_data, mut pe_name) = (false, None, None);
    let mut options = &entry[fixed..];
    let mut unknown = false;
    while !options.is_empty() {
        let [kind, len, rest @ ..] = options else {
            return Err("option cut short");
        };
        let len = usize::from(*len);
        if len == 0 || rest.len() < len {
            return Err("option of a bad length");
        }
        let data = &rest[..len];
        match kind & !OPT_OPTIONAL {
            OPT_SEQ_DATA if len != SEQ_DATA_LEN => return Err("sequence data of a bad length"),
            OPT_SEQ_DATA if seq => return Err("sequence data twice"),
            OPT_SEQ_DATA => seq = true,
            OPT_PE_DATA if pe_data.is_some() => return Err("persistence-engine data twice"),
            OPT_PE_DATA => pe_data = Some(data.to_vec()),
            OPT_PE_NAME if len > PE_NAME_MAX => return Err("persistence-engine name too long"),
            OPT_PE_NAME if pe_name.is_some() => return Err("persistence-engine name twice"),
            OPT_PE_NAME => pe_name = Some(String::from_utf8_lossy(data).into_owned()),
            _ if kind & OPT_OPTIONAL != 0 => {}
            // An unknown mandatory option: the entry is skipped, the message goes on.
            _ => unknown = true,
        }
        options = &rest[len..];
    }
    if unknown {
        return Ok(None);
    }
    match (pe_name, pe_data) {
        (Some(name), Some(data)) => conn.persistence_engine = Some((name, data)),
        (None, Some(_)) => return Err("persistence-engine data without a name"),
        _ => {}
    }
    conn.flags &= flags::BACKUP_MASK;
    conn.flags |= flags::SYNC;
    Ok(Some(conn))
}

/// Builds messages of at most `max_len` bytes: entries are pushed until one does not fit
/// (or 255 are in), then the message is taken and a new one begins.
#[derive(Debug)]
pub struct MessageWriter {
    buffer: Vec<u8>,
    count: u8,
    max_len: usize,
}

impl MessageWriter {
    /// An empty message of `syncid`, at most `max_len` bytes (clamped to 64..65507).
    pub fn new(syncid: u8, max_len: usize) -> Self {
        let max_len = max_len.clamp(64, 65_507);
        let mut buffer = Vec::with_capacity(max_len);
        buffer.extend_from_slice(&[0, syncid, 0, HEADER_LEN as u8, 0, VERSION, 0, 0]);
        Self {
            buffer,
            count: 0,
            max_len,
        }
    }

    /// Entries in the message so far.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether no entry is in yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `conn`; false when it does not fit (take the message first) or cannot be sent
    /// (client, VIP and real of different families, or options too long).
    pub fn push(&mut self, conn: &SyncConn) -> bool {
        let ipv6 = conn.client.is_ipv6();
        if conn.vip.is_ipv6() != ipv6 || conn.real.is_ipv6() != ipv6 {
            return false;
        }
        if let Some((name, data)) = &conn.persistence_engine
            && (name.is_empty() || name.len() > PE_NAME_MAX || data.is_empty() || data.len() > 255)
        {
            return false;
        }
        let len = conn.encoded_len();
        let pad = (4 - self.buffer.len() % 4) % 4;
        if self.count == u8::MAX || self.buffer.len() + pad + len > self.max_len {
            return false;
        }
        self.buffer.resize(self.buffer.len() + pad, 0);
        self.buffer.push(u8::from(ipv6));
        self.buffer.push(conn.protocol);
        self.buffer
            .extend_from_slice(&(len as u16 & ENTRY_LEN_MASK).to_be_bytes());
        self.buffer.extend_from_slice(&conn.flags.to_be_bytes());
        self.buffer.extend_from_slice(&conn.state.to_be_bytes());
        for port in [conn.client.port(), conn.vip.port(), conn.real.port()] {
            self.buffer.extend_from_slice(&port.to_be_bytes());
        }
        self.buffer.extend_from_slice(&conn.fwmark.to_be_bytes());
        self.buffer.extend_from_slice(&conn.timeout.to_be_bytes());
        for address in [conn.client.ip(), conn.vip.ip(), conn.real.ip()] {
            match address {
                IpAddr::V4(v4) => self.buffer.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => self.buffer.extend_from_slice(&v6.octets()),
            }
        }
        if let Some((name, data)) = &conn.persistence_engine {
            self.buffer.extend_from_slice(&[OPT_PE_DATA, data.len() as u8]);
            self.buffer.extend_from_slice(data);
            self.buffer.extend_from_slice(&[OPT_PE_NAME, name.len() as u8]);
            self.buffer.extend_from_slice(name.as_bytes());
        }
        self.count += 1;
        true
    }

    /// The message so far, ready to send; the writer starts a new one.
    pub fn take(&mut self) -> Vec<u8> {
        let syncid = self.buffer[1];
        let mut message = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.max_len));
        self.buffer
            .extend_from_slice(&[0, syncid, 0, HEADER_LEN as u8, 0, VERSION, 0, 0]);
        let size = message.len() as u16;
        message[2..4].copy_from_slice(&size.to_be_bytes());
        message[4] = self.count;
        self.count = 0;
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(client: &str, vip: &str, real: &str) -> SyncConn {
        SyncConn {
            protocol: 6,
            flags: flags::MASQ,
            state: 1,
            client: client.parse().unwrap(),
            vip: vip.parse().unwrap(),
            real: real.parse().unwrap(),
            fwmark: 0,
            timeout: 900,
            persistence_engine: None,
        }
    }

    /// The bytes of `struct ip_vs_sync_mesg` followed by one `struct ip_vs_sync_v4`, laid
    /// out field by field from the kernel's definitions.
    #[test]
    fn an_ipv4_entry_is_the_kernels_layout() {
        let mut writer = MessageWriter::new(7, MAX_MESSAGE_LEN);
        assert!(writer.push(&conn("192.0.2.10:40000", "198.51.100.1:80", "10.0.0.2:8080")));
        let message = writer.take();
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // ip_vs_sync_mesg: reserved, syncid, size = 44, nr_conns = 1, version = 1, spare
            0, 7, 0, 44, 1, 1, 0, 0,
            // ip_vs_sync_v4: type 0, protocol 6, ver_size = 36
            0, 6, 0, 36,
            0, 0, 0, 0,             // flags: MASQ
            0, 1,                   // state: ESTABLISHED
            0x9c, 0x40,             // cport 40000
            0, 80,                  // vport
            0x1f, 0x90,             // dport 8080
            0, 0, 0, 0,             // fwmark
            0, 0, 0x03, 0x84,       // timeout 900 s
            192, 0, 2, 10,          // caddr
            198, 51, 100, 1,        // vaddr
            10, 0, 0, 2,            // daddr
        ];
        assert_eq!(message, expected);
        let decoded = decode(&message, 7).unwrap();
        let mut sent = conn("192.0.2.10:40000", "198.51.100.1:80", "10.0.0.2:8080");
        sent.flags |= flags::SYNC;
        assert_eq!(decoded.conns, [sent]);
    }

    #[test]
    fn entries_after_options_are_four_aligned() {
        let mut writer = MessageWriter::new(0, MAX_MESSAGE_LEN);
        let mut first = conn("192.0.2.10:1", "198.51.100.1:80", "10.0.0.2:80");
        first.persistence_engine = Some(("sip".to_owned(), vec![1, 2, 3]));
        let second = conn("[2001:db8::1]:2", "[2001:db8::100]:80", "[2001:db8:1::2]:80");
        assert!(writer.push(&first));
        assert!(writer.push(&second));
        let message = writer.take();
        // 8 + (36 + 5 + 5 = 46, padded to 48) + 72.
        assert_eq!(message.len(), 8 + 48 + 72);
        assert_eq!(&message[8 + 2..8 + 4], &46u16.to_be_bytes());
        assert_eq!(&message[8 + 46..8 + 48], &[0, 0], "padding");
        assert_eq!(message[8 + 48], 1, "IPv6 type bit");
        let decoded = decode(&message, 0).unwrap();
        assert_eq!(decoded.conns.len(), 2);
        assert_eq!(decoded.conns[0].persistence_engine, first.persistence_engine);
        assert_eq!(decoded.conns[1].client, second.client);
    }

    #[test]
    fn a_full_message_starts_another() {
        let mut writer = MessageWriter::new(1, MAX_MESSAGE_LEN);
        let mut pushed = 0;
        while writer.push(&conn("192.0.2.10:1", "198.51.100.1:80", "10.0.0.2:80")) {
            pushed += 1;
        }
        // (1472 − 8) / 36 = 40 IPv4 entries fit.
        assert_eq!(pushed, 40);
        let message = writer.take();
        assert!(message.len() <= MAX_MESSAGE_LEN);
        assert_eq!(decode(&message, 1).unwrap().conns.len(), 40);
        assert!(writer.is_empty());
        assert!(writer.push(&conn("192.0.2.10:1", "198.51.100.1:80", "10.0.0.2:80")));
        assert!(!writer.push(&conn("192.0.2.10:1", "[2001:db8::1]:80", "10.0.0.2:80")));
    }

    #[test]
    fn refusals_name_what_was_wrong() {
        let mut writer = MessageWriter::new(5, MAX_MESSAGE_LEN);
        writer.push(&conn("192.0.2.10:1", "198.51.100.1:80", "10.0.0.2:80"));
        let good = writer.take();
        assert_eq!(decode(&good[..4], 5), Err(SyncError::TooShort(4)));
        assert_eq!(
            decode(&good[..20], 5),
            Err(SyncError::Size {
                declared: 44,
                received: 20
            })
        );
        assert_eq!(decode(&good, 6), Err(SyncError::OtherSyncId(5)));
        assert!(decode(&good, 0).is_ok());
        let mut v0 = good.clone();
        v0[0] = 1;
        assert_eq!(decode(&v0, 0), Err(SyncError::Version(0)));
        let mut long = good.clone();
        long[8 + 3] = 200;
        assert!(matches!(decode(&long, 0), Err(SyncError::Entry { index: 0, .. })));
        let mut empty = good.clone();
        empty[8 + 3] = 0;
        assert!(matches!(
            decode(&empty, 0),
            Err(SyncError::Entry { index: 0, .. })
        ));
        let mut many = good.clone();
        many[4] = 2;
        assert!(matches!(decode(&many, 0), Err(SyncError::Entry { index: 1, .. })));
    }

    #[test]
    fn unknown_options_skip_or_refuse_as_the_kernel_does() {
        let mut writer = MessageWriter::new(0, MAX_MESSAGE_LEN);
        writer.push(&conn("192.0.2.10:1", "198.51.100.1:80", "10.0.0.2:80"));
        let good = writer.take();
        let with_option = |kind: u8| {
            let mut message = good.clone();
            message.extend_from_slice(&[kind, 2, 9, 9]);
            let size = message.len() as u16;
            message[2..4].copy_from_slice(&size.to_be_bytes());
            message[8 + 3] += 4;
            message
        };
        assert_eq!(decode(&with_option(OPT_OPTIONAL | 9), 0).unwrap().conns.len(), 1);
        let skipped = decode(&with_option(9), 0).unwrap();
        assert_eq!((skipped.conns.len(), skipped.skipped), (0, 1));
        assert!(decode(&with_option(OPT_SEQ_DATA), 0).is_err());
        assert!(
            decode(&with_option(OPT_PE_DATA), 0).is_err(),
            "data without a name"
        );
    }
}
