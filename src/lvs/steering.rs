//! Which packet worker owns a flow, and the eBPF program that makes the kernel agree.
//!
//! Each worker owns one partition of the connection table: the flows of the clients whose
//! address hashes to it ([`owner`]). The kernel picks the TUN queue, and so the worker, of
//! every packet it hands over. `program` is a socket-filter program for the TUN device's
//! `TUNSETSTEERINGEBPF` hook that computes the same hash from the packet:
//! - a packet to a VIP comes from a client: its source address;
//! - any other packet is a NAT reply on its way to a client: its destination address;
//! - an ICMP error (types 3, 11, 12; ICMPv6 1 to 4, right after the fixed header) is about
//!   the packet it quotes, which went the other way: the quoted destination if the quoted
//!   source is a VIP, else the quoted source.
//!
//! So both directions of a flow, and the ICMP errors about it, reach the one worker that owns
//! it, and no two workers ever take the same lock of the table. Without the program (an old
//! kernel, no `CAP_BPF`) everything still works: the table finds a flow in its owner's
//! partition from any worker, and counts the packets that arrived elsewhere.

use std::net::IpAddr;

use crate::{sched::fold, sys::Insn};

/// The multiplier of the owner hash (Knuth's multiplicative hashing, 2^32 / φ).
const MULTIPLIER: u32 = 0x9E37_79B1;

/// The worker (TUN queue) of `workers` that owns the flows of `client`.
pub fn owner(client: IpAddr, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    // The kernel takes the program's result as a u16 and then `% numqueues`.
    let spread = fold(client).wrapping_mul(MULTIPLIER) >> 16;
    spread as usize % workers
}

// Instruction classes, sizes, modes and operations (linux/bpf_common.h, linux/bpf.h).
const LD: u8 = 0x00;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU32: u8 = 0x04;
const ALU64: u8 = 0x07;
const SIZE_W: u8 = 0x00;
const SIZE_B: u8 = 0x10;
const MODE_ABS: u8 = 0x20;
const MODE_IND: u8 = 0x40;
const SOURCE_IMM: u8 = 0x00;
const SOURCE_REG: u8 = 0x08;
const OP_MUL: u8 = 0x20;
const OP_LSH: u8 = 0x60;
const OP_RSH: u8 = 0x70;
const OP_AND: u8 = 0x50;
const OP_XOR: u8 = 0xa0;
const OP_MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const EXIT: u8 = 0x90;

/// Registers: R0 result, R1 context on entry; R6 must hold the context for packet loads;
/// R7..R9 survive them.
const R0: u8 = 0;
const R1: u8 = 1;
const R6: u8 = 6;
/// The address used when the other one is a VIP ("source" of a packet to a VIP).
const SOURCE: u8 = 7;
/// The address checked against the VIPs.
const DESTINATION: u8 = 8;
/// The IPv4 header length in bytes.
const HEADER_LEN: u8 = 9;

/// Places a jump may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Ipv6,
    Plain6,
    Quoted6,
    Decide6,
    Quoted,
    Decide4,
    UseSource,
    Hash,
    Zero,
}

/// A program being written: instructions, and jumps waiting for their label.
#[derive(Default)]
struct Assembler {
    program: Vec<Insn>,
    labels: Vec<(Label, usize)>,
    jumps: Vec<(usize, Label)>,
}

impl Assembler {
    fn emit(&mut self, code: u8, destination: u8, source: u8, offset: i16, immediate: i32) {
        self.program.push(Insn {
            code,
            registers: (source << 4) | destination,
            offset,
            immediate,
        });
    }

    /// `R0 = packet[offset]` (a byte, or a 32-bit word in host order); ends the program with 0
    /// if the packet is shorter.
    fn load(&mut self, word: bool, offset: i32) {
        let size = if word { SIZE_W } else { SIZE_B };
        self.emit(LD | MODE_ABS | size, 0, 0, 0, offset);
    }

    /// `R0 = packet[register + offset]`.
    fn load_indirect(&mut self, word: bool, register: u8, offset: i32) {
        let size = if word { SIZE_W } else { SIZE_B };
        self.emit(LD | MODE_IND | size, 0, register, 0, offset);
    }

    /// `register` = the IPv6 address at `start` folded to 32 bits (its words XORed).
    fn fold_ipv6(&mut self, register: u8, start: i32) {
        self.load(true, start);
        self.alu32_reg(OP_MOV, register, R0);
        for word in 1..4 {
            self.load(true, start + 4 * word);
            self.alu32_reg(OP_XOR, register, R0);
        }
    }

    fn alu32_imm(&mut self, op: u8, register: u8, immediate: i32) {
        self.emit(ALU32 | op | SOURCE_IMM, register, 0, 0, immediate);
    }

    fn alu32_reg(&mut self, op: u8, destination: u8, source: u8) {
        self.emit(ALU32 | op | SOURCE_REG, destination, source, 0, 0);
    }

    /// Jumps to `label` if the low 32 bits of `register` compare to `value` by `op`.
    fn jump_if(&mut self, op: u8, register: u8, value: u32, label: Label) {
        self.jumps.push((self.program.len(), label));
        self.emit(JMP32 | op | SOURCE_IMM, register, 0, 0, value as i32);
    }

    fn jump(&mut self, label: Label) {
        self.jumps.push((self.program.len(), label));
        self.emit(JMP | JA, 0, 0, 0, 0);
    }

    fn exit(&mut self) {
        self.emit(JMP | EXIT, 0, 0, 0, 0);
    }

    fn label(&mut self, label: Label) {
        self.labels.push((label, self.program.len()));
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(name, _)| *name == label)
                .map_or(at + 1, |(_, position)| *position);
            // Offsets count from the next instruction; programs here stay far below 32k.
            self.program[at].offset = i16::try_from(target as isize - at as isize - 1).unwrap_or(0);
        }
        self.program
    }
}

/// The steering program for a TUN device whose packets go to `vips`: it returns a number
/// the kernel reduces modulo the number of queues, equal to [`owner`]'s choice.
pub(crate) fn program(vips: &[IpAddr]) -> Vec<Insn> {
    let mut asm = Assembler::default();
    asm.emit(ALU64 | OP_MOV | SOURCE_REG, R6, R1, 0, 0);
    asm.load(false, 0);
    asm.alu32_reg(OP_MOV, HEADER_LEN, R0);
    asm.alu32_imm(OP_RSH, HEADER_LEN, 4);
    asm.jump_if(JEQ, HEADER_LEN, 6, Label::Ipv6);
    asm.jump_if(JNE, HEADER_LEN, 4, Label::Zero);
    // IPv4: header length, source, destination.
    asm.alu32_imm(OP_AND, R0, 0x0f);
    asm.alu32_imm(OP_LSH, R0, 2);
    asm.alu32_reg(OP_MOV, HEADER_LEN, R0);
    asm.load(true, 12);
    asm.alu32_reg(OP_MOV, SOURCE, R0);
    asm.load(true, 16);
    asm.alu32_reg(OP_MOV, DESTINATION, R0);
    asm.load(false, 9);
    asm.jump_if(JNE, R0, 1, Label::Decide4);
    asm.load_indirect(false, HEADER_LEN, 0);
    for error in [3, 11, 12] {
        asm.jump_if(JEQ, R0, error, Label::Quoted);
    }
    asm.jump(Label::Decide4);
    // An ICMP error: the quoted packet went the other way, so its addresses swap roles.
    asm.label(Label::Quoted);
    asm.load_indirect(true, HEADER_LEN, 8 + 12);
    asm.alu32_reg(OP_MOV, DESTINATION, R0);
    asm.load_indirect(true, HEADER_LEN, 8 + 16);
    asm.alu32_reg(OP_MOV, SOURCE, R0);
    asm.label(Label::Decide4);
    for vip in vips.iter().filter(|vip| vip.is_ipv4()) {
        asm.jump_if(JEQ, DESTINATION, fold(*vip), Label::UseSource);
    }
    asm.alu32_reg(OP_MOV, R0, DESTINATION);
    asm.jump(Label::Hash);
    // IPv6: each address folded to 32 bits, as `owner` does; for an ICMPv6 error right
    // after the fixed header (types 1 to 4: unreachable, packet too big, time exceeded,
    // parameter problem), those of the packet it quotes (40 + 8 bytes in), roles swapped.
    asm.label(Label::Ipv6);
    asm.load(false, 6);
    asm.jump_if(JNE, R0, 58, Label::Plain6);
    asm.load(false, 40);
    for error in 1..=4 {
        asm.jump_if(JEQ, R0, error, Label::Quoted6);
    }
    asm.label(Label::Plain6);
    asm.fold_ipv6(SOURCE, 8);
    asm.fold_ipv6(DESTINATION, 24);
    asm.jump(Label::Decide6);
    asm.label(Label::Quoted6);
    asm.fold_ipv6(DESTINATION, 48 + 8);
    asm.fold_ipv6(SOURCE, 48 + 24);
    asm.label(Label::Decide6);
    for vip in vips.iter().filter(|vip| vip.is_ipv6()) {
        asm.jump_if(JEQ, DESTINATION, fold(*vip), Label::UseSource);
    }
    asm.alu32_reg(OP_MOV, R0, DESTINATION);
    asm.jump(Label::Hash);
    asm.label(Label::UseSource);
    asm.alu32_reg(OP_MOV, R0, SOURCE);
    asm.label(Label::Hash);
    asm.alu32_imm(OP_MUL, R0, MULTIPLIER as i32);
    asm.alu32_imm(OP_RSH, R0, 16);
    asm.exit();
    asm.label(Label::Zero);
    asm.alu32_imm(OP_MOV, R0, 0);
    asm.exit();
    asm.finish()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::PacketBuilder;

    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);

    #[test]
    fn owners_spread_clients_over_workers() {
        let mut per_worker = [0usize; 4];
        for i in 0..4096u32 {
            per_worker[owner(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 4)] += 1;
        }
        assert!(per_worker.iter().all(|&n| n > 800), "{per_worker:?}");
        assert_eq!(owner(IpAddr::V4(VIP), 1), 0);
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let program = program(&[IpAddr::V4(VIP), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        for (at, insn) in program.iter().enumerate() {
            let class = insn.code & 0x07;
            if (class == JMP || class == JMP32) && insn.code != JMP | EXIT {
                let target = at as isize + 1 + isize::from(insn.offset);
                assert!(
                    target > at as isize && (target as usize) < program.len(),
                    "jump at {at}"
                );
            }
        }
        assert_eq!(program.last().map(|insn| insn.code), Some(JMP | EXIT));
    }

    fn udp(source: [u8; 4], destination: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(source, destination, 64)
            .udp(5000, 80)
            .write(&mut out, b"x")
            .unwrap();
        out
    }

    /// An ICMP port unreachable from `from` about `quoted`.
    fn icmp_about(from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(from, to, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut out, quoted)
            .unwrap();
        out
    }

    /// The worker of `workers` the kernel picks for `packet` with the loaded program: it runs
    /// the program on the packet in an Ethernet frame, then keeps a u16 modulo the queues.
    fn kernel_choice(program: &std::os::fd::OwnedFd, packet: &[u8], workers: usize) -> usize {
        let ethertype: [u8; 2] = if packet[0] >> 4 == 6 {
            [0x86, 0xdd]
        } else {
            [0x08, 0x00]
        };
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(packet);
        let result = crate::sys::test_run(program, &frame).expect("test run");
        (result & 0xffff) as usize % workers
    }

    /// The kernel runs the program on packets (`BPF_PROG_TEST_RUN`) and must choose the
    /// worker `owner` chooses for the flow's client. Needs root (CAP_BPF).
    #[test]
    fn the_kernel_program_agrees_with_owner() {
        let vips = [IpAddr::V4(VIP), IpAddr::V6("2001:db8::100".parse().unwrap())];
        let fd = match crate::sys::load_socket_filter(&program(&vips), "lbd_steer_test") {
            Ok(fd) => fd,
            Err(error) => {
                // Past the test harness's capture, so that the skip shows.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("SKIPPED the steering program test: cannot load an eBPF program here ({error}); needs root\n").as_bytes(),
                );
                return;
            }
        };
        let client = [192, 168, 77, 2];
        let real = [10, 77, 0, 11];
        let cases: Vec<(&str, Vec<u8>, Ipv4Addr)> = vec![
            ("client to VIP", udp(client, VIP.octets()), client.into()),
            ("NAT reply", udp(real, client), client.into()),
            (
                "ICMP from the real's side (quotes client to real)",
                icmp_about(real, client, &udp(client, real)),
                client.into(),
            ),
            (
                "ICMP from the client's side (quotes VIP to client)",
                icmp_about(client, VIP.octets(), &udp(VIP.octets(), client)),
                client.into(),
            ),
        ];
        for workers in [2, 3, 4] {
            for (what, packet, client) in &cases {
                assert_eq!(
                    kernel_choice(&fd, packet, workers),
                    owner(IpAddr::V4(*client), workers),
                    "{what}, {workers} workers"
                );
            }
        }
        // Many clients, both directions.
        for i in 0..500u32 {
            let client = Ipv4Addr::from(0x0a10_0000 + i * 7919);
            for packet in [udp(client.octets(), VIP.octets()), udp(real, client.octets())] {
                assert_eq!(kernel_choice(&fd, &packet, 4), owner(IpAddr::V4(client), 4));
            }
        }
        // IPv6: a client's packet to the VIP and the reply.
        let client6: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        for (source, destination) in [
            (client6, "2001:db8::100".parse::<Ipv6Addr>().unwrap()),
            ("2001:db8:2::11".parse().unwrap(), client6),
        ] {
            let mut packet = Vec::new();
            PacketBuilder::ipv6(source.octets(), destination.octets(), 64)
                .udp(5000, 80)
                .write(&mut packet, b"x")
                .unwrap();
            assert_eq!(kernel_choice(&fd, &packet, 4), owner(IpAddr::V6(client6), 4));
        }
        // ICMPv6 errors about the flow, from either side, reach the same worker.
        let udp6 = |source: Ipv6Addr, destination: Ipv6Addr| {
            let mut packet = Vec::new();
            PacketBuilder::ipv6(source.octets(), destination.octets(), 64)
                .udp(5000, 80)
                .write(&mut packet, b"x")
                .unwrap();
            packet
        };
        let (vip6, real6): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::100".parse().unwrap(),
            "2001:db8:2::11".parse().unwrap(),
        );
        for (from, to, quoted) in [
            (real6, client6, udp6(client6, real6)),
            (client6, vip6, udp6(vip6, client6)),
        ] {
            let mut error = Vec::new();
            PacketBuilder::ipv6(from.octets(), to.octets(), 64)
                .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
                .write(&mut error, &quoted)
                .unwrap();
            for workers in [2, 3, 4] {
                assert_eq!(
                    kernel_choice(&fd, &error, workers),
                    owner(IpAddr::V6(client6), workers),
                    "ICMPv6 from {from}, {workers} workers"
                );
            }
        }
    }
}
