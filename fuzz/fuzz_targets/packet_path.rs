//! Arbitrary bytes through the packet data plane, as if read from the TUN device: parsing,
//! every rewrite and ICMP or ICMPv6 translation, against a table with nat, dr and tun
//! services over IPv4 and over IPv6 (and a tun service whose real is of the other family),
//! from either of two workers' partitions; once plain, once behind a `virtio_net_hdr` taken
//! from the first bytes (offloaded packets). What comes out is offered to a UDP joiner that
//! keeps its batches across inputs, so joined batches of fuzzed datagrams are built and sent.
//! Run: `cargo +nightly fuzz run packet_path -- -max_total_time=600`.
#![no_main]

use std::{
    cell::RefCell,
    sync::OnceLock,
};

use libfuzzer_sys::fuzz_target;
use ulvs::{
    clock::Millis,
    config,
    lvs::{
        coalesce::{Coalescer, Joined, Offer, Outlet},
        flow_table::FlowTable,
        path,
    },
    packet::{Ipv4Packet, Ipv6Packet, Offload, VNET_HEADER_LEN},
    table::{HealthView, ServiceTable},
};

fn table() -> &'static ServiceTable {
    static TABLE: OnceLock<ServiceTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = config::parse(
            "dataplane: { server_interface: br0 }\nservices:\n  - { protocol: tcp, listen: '192.168.77.100:80', forward: nat, reals: [{address: '10.77.0.11:8080'}] }\n  - { protocol: udp, listen: '192.168.77.100:53', forward: nat, reals: [{address: '10.77.0.11:5353'}] }\n  - { protocol: tcp, listen: '192.168.77.100:8080', forward: dr, reals: [{address: '10.77.0.12:8080'}] }\n  - { protocol: udp, listen: '192.168.77.100:5353', forward: tun, reals: [{address: '10.77.0.12:5353'}] }\n  - { protocol: tcp, listen: '[fd00:77::100]:80', forward: nat, reals: [{address: '[fd00:10::11]:8080'}] }\n  - { protocol: udp, listen: '[fd00:77::100]:53', forward: nat, reals: [{address: '[fd00:10::11]:5353'}] }\n  - { protocol: tcp, listen: '[fd00:77::100]:8080', forward: dr, reals: [{address: '[fd00:10::12]:8080'}] }\n  - { protocol: udp, listen: '[fd00:77::100]:5353', forward: tun, reals: [{address: '[fd00:10::12]:5353'}, {address: '10.77.0.13:5353'}] }\n",
            "fuzz",
        )
        .expect("the fuzz config");
        ServiceTable::build(&config, None, &HealthView::default())
    })
}

fn flows() -> &'static FlowTable {
    static FLOWS: OnceLock<FlowTable> = OnceLock::new();
    FLOWS.get_or_init(|| FlowTable::new(10_000, 1_000, 2))
}

thread_local! {
    static JOINER: RefCell<Coalescer> = RefCell::new(Coalescer::default());
}

/// What the worker does with a batch it sends: the kernel is told how many datagrams it holds.
fn send(batch: Joined<'_>) {
    let _ = batch.offload.segments(batch.buf.len());
}

/// Offers a handled packet to the joiner as the worker does (a batch that must leave first,
/// or is full, is sent); with `flush_all`, every pending batch is sent afterwards, as when the
/// queue runs empty.
fn join(packet: &[u8], offload: Offload, flush_all: bool) {
    JOINER.with_borrow_mut(|joiner| {
        let outlet = if packet.len() % 3 == 0 { Outlet::Frame([10, 77, 0, 12].into()) } else { Outlet::Tun };
        let mut offer = joiner.offer(packet, offload, outlet);
        if let Offer::Flush(slot) = offer {
            if let Some(batch) = joiner.take(slot) {
                send(batch);
            }
            offer = joiner.offer(packet, offload, outlet);
        }
        if let Offer::Full(slot) = offer
            && let Some(batch) = joiner.take(slot)
        {
            send(batch);
        }
        if flush_all {
            joiner.take_all(send);
        }
    });
}

fuzz_target!(|data: &[u8]| {
    // Two workers' partitions; a packet may reach either (as without steering).
    let flows = flows().partition(data.len() % 2);
    let mut bytes = data.to_vec();
    let _ = path::handle(&mut bytes, table(), flows, Millis(1));
    join(&bytes, Offload::PLAIN, data.first() == Some(&0));
    // As an offloading TUN device hands packets over: a virtio_net_hdr, then the packet.
    if let Some(offload) = Offload::decode(data) {
        let mut bytes = data[VNET_HEADER_LEN..].to_vec();
        let _ = path::handle_offloaded(&mut bytes, offload, table(), flows, Millis(1));
        join(&bytes, offload, false);
        let header = offload.with_header_len(&bytes).shifted(14);
        let _ = header.segments(bytes.len());
        let _ = offload.complete_checksum(&mut bytes);
    }
    let mut bytes = data.to_vec();
    if let Ok(mut packet) = Ipv4Packet::parse(&mut bytes) {
        let _ = packet.l4();
        let _ = packet.quoted_flow();
        let _ = packet.rewrite_quoted(true, "10.0.0.1:1".parse().unwrap());
        packet.set_source("10.0.0.2:2".parse().unwrap());
        packet.set_destination("10.0.0.3:3".parse().unwrap());
    }
    let mut bytes = data.to_vec();
    if let Ok(mut packet) = Ipv6Packet::parse(&mut bytes) {
        let _ = packet.l4();
        let _ = packet.quoted_flow();
        let _ = packet.rewrite_quoted(false, "[fd00::1]:1".parse().unwrap());
        packet.set_source("[fd00::2]:2".parse().unwrap());
        packet.set_destination("[fd00::3]:3".parse().unwrap());
    }
    flows.sweep(Millis(1_000_000));
});
