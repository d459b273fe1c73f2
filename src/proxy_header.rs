//! The PROXY protocol header (HAProxy's specification, versions 1 and 2): what lbd writes in
//! front of a flow to a real server so that the real learns the client's address, and what it
//! reads from a balancer in front of it (`accept_proxy`). Pure: bytes in, bytes out, no I/O,
//! no allocation.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Version 1 starts with these bytes.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Version 2's twelve-byte signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest version 2 header lbd reads: the fixed part and the addresses with room for
/// TLVs (HAProxy's own bound is its buffer; ALPN, authority and SSL TLVs fit in far less).
pub const V2_MAX: usize = 16 + 1024;
/// The longest header lbd writes (a version 1 line for two IPv6 addresses).
const WRITTEN_MAX: usize = V1_MAX;

/// The two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

/// What the flow carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Stream,
    /// UDP (version 2 only).
    Datagram,
}

/// A header built for one flow, held without allocating.
#[derive(Clone, Copy)]
pub struct Header {
    bytes: [u8; WRITTEN_MAX],
    len: u8,
}

impl Header {
    /// The header announcing a flow from `source` to `destination`. IPv4-mapped IPv6
    /// addresses are written as the IPv4 addresses they are; when the two are still of
    /// different families both are written as IPv6.
    pub fn new(version: Version, transport: Transport, source: SocketAddr, destination: SocketAddr) -> Self {
        let (source, destination) = same_family(source, destination);
        let mut header = Self {
            bytes: [0; WRITTEN_MAX],
            len: 0,
        };
        match version {
            Version::V1 => header.write_v1(source, destination),
            Version::V2 => header.write_v2(transport, source, destination),
        }
        header
    }

    /// Version 2's LOCAL header: a connection the balancer opened itself (a health check);
    /// the receiver uses the connection's own addresses.
    pub fn local() -> Self {
        let mut header = Self {
            bytes: [0; WRITTEN_MAX],
            len: 0,
        };
        header.push(&V2_SIGNATURE);
        header.push(&[0x20, 0x00, 0, 0]);
        header
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn push(&mut self, bytes: &[u8]) {
        let start = usize::from(self.len);
        self.bytes[start..start + bytes.len()].copy_from_slice(bytes);
        self.len += u8::try_from(bytes.len()).unwrap_or(0);
    }

    fn write_v1(&mut self, source: SocketAddr, destination: SocketAddr) {
        use std::io::Write;
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        let mut line = [0u8; WRITTEN_MAX];
        let mut cursor = std::io::Cursor::new(&mut line[..]);
        // The longest line (two full IPv6 addresses) is 104 bytes: the write cannot run out.
        let _ = write!(
            cursor,
            "PROXY {family} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        );
        let written = usize::try_from(cursor.position()).unwrap_or(0);
        self.push(&line[..written]);
    }

    fn write_v2(&mut self, transport: Transport, source: SocketAddr, destination: SocketAddr) {
        let protocol = match transport {
            Transport::Stream => 0x1,
            Transport::Datagram => 0x2,
        };
        self.push(&V2_SIGNATURE);
        match (source.ip(), destination.ip()) {
            (IpAddr::V4(from), IpAddr::V4(to)) => {
                self.push(&[0x21, 0x10 | protocol, 0, 12]);
                self.push(&from.octets());
                self.push(&to.octets());
            }
            (from, to) => {
                self.push(&[0x21, 0x20 | protocol, 0, 36]);
                self.push(&as_v6(from).octets());
                self.push(&as_v6(to).octets());
            }
        }
        self.push(&source.port().to_be_bytes());
        self.push(&destination.port().to_be_bytes());
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Header").field(&self.as_bytes()).finish()
    }
}

/// A header read from the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Its length: the bytes to take off the stream before the client's own data.
    pub len: usize,
    /// The client and the address it connected to, as the sender saw them; `None` for a
    /// LOCAL (version 2) or UNKNOWN (version 1) header, which says to use the connection's
    /// own addresses.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// Why bytes are not (yet) a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// A header may yet follow: read more.
    Incomplete,
    /// Not a PROXY protocol header, or a broken one; says what is wrong.
    Invalid(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incomplete => f.write_str("incomplete PROXY protocol header"),
            Self::Invalid(why) => f.write_str(why),
        }
    }
}

/// Reads the header at the start of `bytes` (either version). Version 1's `TCP4`/`TCP6` and
/// version 2's TCP and UDP over IPv4 and IPv6 give addresses; TLVs are skipped.
pub fn parse(bytes: &[u8]) -> Result<Received, ParseError> {
    let starts_like = |prefix: &[u8]| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    };
    if starts_like(&V2_SIGNATURE) {
        parse_v2(bytes)
    } else if starts_like(V1_PREFIX) {
        parse_v1(bytes)
    } else {
        Err(ParseError::Invalid(
            "the connection does not start with a PROXY protocol header",
        ))
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Received, ParseError> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return if bytes.len() < V1_MAX {
            Err(ParseError::Incomplete)
        } else {
            Err(ParseError::Invalid("PROXY v1 line without CRLF within 107 bytes"))
        };
    };
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..end])
        .map_err(|_| ParseError::Invalid("PROXY v1 line is not text"))?;
    let len = end + 2;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Received { len, addresses: None });
    }
    let bad = ParseError::Invalid("PROXY v1 line is not `PROXY TCP4|TCP6 SRC DST SPORT DPORT`");
    let want_v4 = match family {
        "TCP4" => true,
        "TCP6" => false,
        _ => {
            return Err(ParseError::Invalid(
                "PROXY v1 family is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let mut next = || fields.next().ok_or(bad);
    let (source, destination) = (next()?, next()?);
    let (source_port, destination_port) = (next()?, next()?);
    if fields.next().is_some() {
        return Err(bad);
    }
    let ip = |text: &str| -> Result<IpAddr, ParseError> {
        let ip: IpAddr = text.parse().map_err(|_| bad)?;
        if ip.is_ipv4() == want_v4 {
            Ok(ip)
        } else {
            Err(ParseError::Invalid("PROXY v1 address is not of the family named"))
        }
    };
    let port = |text: &str| -> Result<u16, ParseError> {
        if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        text.parse().map_err(|_| bad)
    };
    Ok(Received {
        len,
        addresses: Some((
            SocketAddr::new(ip(source)?, port(source_port)?),
            SocketAddr::new(ip(destination)?, port(destination_port)?),
        )),
    })
}

fn parse_v2(bytes: &[u8]) -> Result<Received, ParseError> {
    if bytes.len() < 16 {
        return Err(ParseError::Incomplete);
    }
    let version_command = bytes[12];
    if version_command >> 4 != 2 {
        return Err(ParseError::Invalid("PROXY v2 header of an unknown version"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ParseError::Invalid("PROXY v2 header with an unknown command")),
    };
    let family = bytes[13];
    let body = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Err(ParseError::Invalid("PROXY v2 header longer than 1040 bytes"));
    }
    if bytes.len() < len {
        return Err(ParseError::Incomplete);
    }
    let body = &bytes[16..len];
    if local {
        return Ok(Received { len, addresses: None });
    }
    let short = ParseError::Invalid("PROXY v2 header shorter than its addresses");
    let addresses = match family >> 4 {
        // AF_UNSPEC and AF_UNIX: nothing lbd can use; the connection's own addresses apply.
        0 | 3 => None,
        1 => {
            let a = body.get(..12).ok_or(short)?;
            let ip = |at: usize| IpAddr::from([a[at], a[at + 1], a[at + 2], a[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Some((SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10))))
        }
        2 => {
            let a = body.get(..36).ok_or(short)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        _ => {
            return Err(ParseError::Invalid(
                "PROXY v2 header with an unknown address family",
            ));
        }
    };
    if addresses.is_some() && !matches!(family & 0x0f, 1 | 2) {
        return Err(ParseError::Invalid("PROXY v2 header with an unknown transport"));
    }
    Ok(Received { len, addresses })
}

/// Both addresses in one family: IPv4-mapped ones as IPv4, else both as IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |address: SocketAddr| SocketAddr::new(address.ip().to_canonical(), address.port());
    let (source, destination) = (canonical(source), canonical(destination));
    if source.is_ipv4() == destination.is_ipv4() {
        return (source, destination);
    }
    let v6 = |address: SocketAddr| SocketAddr::new(IpAddr::V6(as_v6(address.ip())), address.port());
    (v6(source), v6(destination))
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn version_1_lines_are_the_specifications_examples() {
        let header = Header::new(
            Version::V1,
            Transport::Stream,
            addr("192.168.0.1:56324"),
            addr("192.168.0.11:443"),
        );
        assert_eq!(
            header.as_bytes(),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        let header = Header::new(
            Version::V1,
            Transport::Stream,
            addr("[2001:db8::1]:5000"),
            addr("[::ffff:10.0.0.1]:80"),
        );
        assert_eq!(
            header.as_bytes(),
            b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 5000 80\r\n"
        );
        // A dual-stack socket's IPv4 client is written as IPv4.
        let header = Header::new(
            Version::V1,
            Transport::Stream,
            addr("[::ffff:10.1.2.3]:5000"),
            addr("[::ffff:10.0.0.1]:80"),
        );
        assert_eq!(header.as_bytes(), b"PROXY TCP4 10.1.2.3 10.0.0.1 5000 80\r\n");
        let longest = Header::new(
            Version::V1,
            Transport::Stream,
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        );
        assert_eq!(longest.as_bytes().len(), 104);
        assert!(longest.as_bytes().ends_with(b"65535 65535\r\n"));
    }

    #[test]
    fn version_2_headers_carry_family_transport_and_addresses() {
        let header = Header::new(
            Version::V2,
            Transport::Stream,
            addr("10.0.0.1:1234"),
            addr("10.0.0.2:80"),
        );
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend([0x21, 0x11, 0, 12, 10, 0, 0, 1, 10, 0, 0, 2, 0x04, 0xd2, 0, 80]);
        assert_eq!(header.as_bytes(), expected);
        let header = Header::new(
            Version::V2,
            Transport::Datagram,
            addr("[fd00::1]:53"),
            addr("[fd00::2]:5353"),
        );
        let bytes = header.as_bytes();
        assert_eq!(bytes.len(), 52);
        assert_eq!(&bytes[12..16], &[0x21, 0x22, 0, 36]);
        assert_eq!(Header::local().as_bytes()[12..], [0x20, 0, 0, 0]);
    }

    #[test]
    fn what_is_written_reads_back() {
        for (source, destination) in [
            ("10.0.0.1:1", "10.0.0.2:65535"),
            ("[fd00::1]:40000", "[2001:db8::9]:443"),
        ] {
            for version in [Version::V1, Version::V2] {
                let header = Header::new(version, Transport::Stream, addr(source), addr(destination));
                let mut stream = header.as_bytes().to_vec();
                stream.extend(b"GET / HTTP/1.1\r\n");
                let received = parse(&stream).unwrap();
                assert_eq!(received.len, header.as_bytes().len());
                assert_eq!(received.addresses, Some((addr(source), addr(destination))));
                // Every prefix is incomplete, never wrong.
                for cut in 0..header.as_bytes().len() {
                    assert_eq!(
                        parse(&stream[..cut]),
                        Err(ParseError::Incomplete),
                        "{version:?} cut at {cut}"
                    );
                }
            }
        }
        assert_eq!(
            parse(Header::local().as_bytes()),
            Ok(Received {
                len: 16,
                addresses: None
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever\r\nX"),
            Ok(Received {
                len: 24,
                addresses: None
            })
        );
    }

    #[test]
    fn broken_headers_are_named() {
        let invalid = |bytes: &[u8]| match parse(bytes) {
            Err(ParseError::Invalid(why)) => why,
            other => panic!("{bytes:?} read as {other:?}"),
        };
        assert!(invalid(b"GET / HTTP/1.1\r\n").contains("does not start"));
        assert!(invalid(b"PROXY TCP4 10.0.0.1 10.0.0.2 1\r\n").contains("PROXY TCP4|TCP6"));
        assert!(invalid(b"PROXY TCP4 ::1 ::1 1 2\r\n").contains("family named"));
        assert!(invalid(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 +2\r\n").contains("PROXY TCP4|TCP6"));
        assert!(invalid(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 65536\r\n").contains("PROXY TCP4|TCP6"));
        assert!(invalid(b"PROXY SCTP 10.0.0.1 10.0.0.2 1 2\r\n").contains("family"));
        assert!(invalid(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 100]].concat()).contains("CRLF"));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(invalid(&v2).contains("shorter"));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(invalid(&v2).contains("longer"));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([0x31, 0x11, 0, 0]);
        assert!(invalid(&v2).contains("version"));
    }

    #[test]
    fn tlvs_are_skipped_and_unix_addresses_give_none() {
        let mut v2 = Header::new(
            Version::V2,
            Transport::Stream,
            addr("10.0.0.1:1"),
            addr("10.0.0.2:2"),
        )
        .as_bytes()
        .to_vec();
        v2[15] += 7;
        v2.extend([0x01, 0, 4, b'h', b't', b't', b'p']); // ALPN
        v2.extend(b"data");
        let received = parse(&v2).unwrap();
        assert_eq!(received.len, 16 + 12 + 7);
        assert!(received.addresses.is_some());
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend([0x21, 0x31, 0, 216]);
        unix.extend([0u8; 216]);
        assert_eq!(parse(&unix).unwrap().addresses, None);
    }
}
