//! Arbitrary bytes as an IPv6 packet: parsing, reading the transport and rewriting both
//! addresses must never panic, and a rewrite must leave a packet that parses to the same
//! transport with the new addresses. Run: `cargo +nightly fuzz run ipv6_packet -- -max_total_time=600`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::packet::{Ipv6Packet, L4};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if let Some(first) = bytes.first_mut() {
        *first = 0x60 | (*first & 0x0f);
    }
    let Ok(mut packet) = Ipv6Packet::parse(&mut bytes) else {
        return;
    };
    let before = packet.l4();
    let (source, destination) = ("[2001:db8::2]:40000".parse().unwrap(), "[2001:db8::11]:8080".parse().unwrap());
    packet.set_source(source);
    packet.set_destination(destination);
    let again = Ipv6Packet::parse(&mut bytes).expect("a rewritten packet parses");
    assert_eq!((again.source(), again.destination()), (*source.ip(), *destination.ip()));
    match (before, again.l4()) {
        (Ok(L4::Tcp { .. }), Ok(L4::Tcp { source: 40000, destination: 8080, .. })) => {}
        (Ok(L4::Udp { .. }), Ok(L4::Udp { source: 40000, destination: 8080 })) => {}
        (Ok(L4::Tcp { .. } | L4::Udp { .. }), after) => panic!("the ports were not rewritten: {after:?}"),
        _ => {}
    }
});
