//! What flow sync costs the packet plane, per packet, without the TUN device's noise: the
//! nat path (`lvs::path::handle`) over 64 established flows, once on a director that is not
//! sending its flows and once on a master that is (IPVS's rule: each flow at its 3rd packet
//! and every 50th after), the master's sender work (draining the outbox and encoding the
//! messages) included. `cargo bench --bench packet_path`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use ulvs::{
    clock::Millis,
    config,
    lvs::{
        flow_table::FlowTable,
        path::{Verdict, handle},
    },
    packet::{
        Ipv4Packet,
        sync::{MAX_MESSAGE_LEN, MessageWriter},
    },
    table::{HealthView, ServiceTable},
};

const FLOWS: u16 = 64;
const BATCH: usize = 1024;
const CLIENT: [u8; 4] = [192, 168, 77, 2];
const VIP: [u8; 4] = [192, 168, 77, 100];

fn services() -> ServiceTable {
    let config = config::parse(
        "dataplane: { tun: lbtun0 }\nservices:\n  \
         - { protocol: tcp, listen: '192.168.77.100:80', scheduler: wlc, forward: nat, reals: [{address: '10.77.0.11:8080'}, {address: '10.77.0.12:8080'}] }\n  \
         - { protocol: udp, listen: '192.168.77.100:53', scheduler: wlc, forward: nat, reals: [{address: '10.77.0.11:5353'}, {address: '10.77.0.12:5353'}] }\n",
        "bench",
    )
    .expect("the bench config is valid");
    ServiceTable::build(&config, None, &HealthView::default())
}

/// A TCP segment with `flags` ("S", "SA", "A") and 18 bytes of payload.
fn tcp(source: ([u8; 4], u16), destination: ([u8; 4], u16), flags: &str) -> Vec<u8> {
    let mut builder = PacketBuilder::ipv4(source.0, destination.0, 64).tcp(source.1, destination.1, 1, 1000);
    if flags.contains('S') {
        builder = builder.syn();
    }
    if flags.contains('A') {
        builder = builder.ack(1);
    }
    let mut out = Vec::new();
    builder.write(&mut out, &[0; 18]).expect("a valid segment");
    out
}

/// An 18-byte UDP datagram (a 64-byte frame on the wire).
fn udp(source: ([u8; 4], u16), destination: ([u8; 4], u16)) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(source.0, destination.0, 64)
        .udp(source.1, destination.1)
        .write(&mut out, &[0; 18])
        .expect("a valid datagram");
    out
}

/// Opens `FLOWS` flows of `protocol` ("tcp": handshake through the table; "udp": a first
/// datagram) and returns one client packet of each, to be replayed.
fn open_flows(services: &ServiceTable, flows: &FlowTable, protocol: &str) -> Vec<Vec<u8>> {
    let partition = flows.partition(0);
    (0..FLOWS)
        .map(|i| {
            let client = (CLIENT, 40_000 + i);
            if protocol == "udp" {
                let packet = udp(client, (VIP, 53));
                handle(&mut packet.clone(), services, partition, Millis(0));
                return packet;
            }
            let mut syn = tcp(client, (VIP, 80), "S");
            assert_eq!(handle(&mut syn, services, partition, Millis(0)), Verdict::Send);
            let real = Ipv4Packet::parse(&mut syn).expect("rewritten").destination();
            let mut reply = tcp((real.octets(), 8080), client, "SA");
            assert_eq!(handle(&mut reply, services, partition, Millis(0)), Verdict::Send);
            let ack = tcp(client, (VIP, 80), "A");
            handle(&mut ack.clone(), services, partition, Millis(0));
            ack
        })
        .collect()
}

fn sync_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("nat_64_flows");
    group.throughput(Throughput::Elements(BATCH as u64));
    for protocol in ["tcp", "udp"] {
        for master in [false, true] {
            let services = services();
            let flows = FlowTable::new(1 << 20, 1 << 20, 1);
            flows.sync.set_master(master);
            let packets = open_flows(&services, &flows, protocol);
            let mut writer = MessageWriter::new(1, MAX_MESSAGE_LEN);
            let mut buffer = [0u8; 128];
            let name = if master { "sending" } else { "not_sending" };
            group.bench_with_input(BenchmarkId::new(protocol, name), &master, |b, _| {
                b.iter(|| {
                    for i in 0..BATCH {
                        let packet = &packets[i % packets.len()];
                        let buf = &mut buffer[..packet.len()];
                        buf.copy_from_slice(packet);
                        let verdict = handle(buf, &services, flows.partition(0), Millis(1));
                        debug_assert_eq!(verdict, Verdict::Send);
                        black_box(verdict);
                    }
                    // The sender's share: the outbox drained and encoded, as every 50 ms.
                    for conn in flows.sync.take() {
                        if !writer.push(&conn) {
                            black_box(writer.take());
                            writer.push(&conn);
                        }
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, sync_cost);
criterion_main!(benches);
