//! The only module with `unsafe` code: thin wrappers over calls whose safety rests on a
//! property the type system cannot see. Each block says why it holds. No policy lives here.
#![allow(unsafe_code)]

use std::io;

use socket2::Socket;
use tokio::io::{Interest, unix::AsyncFd};

/// Registers an owned socket with the current tokio reactor.
pub(crate) fn register(socket: Socket, interest: Interest) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its file descriptor: `as_raw_fd` returns the same open descriptor
    // for as long as the `Socket` lives, and the `AsyncFd` owns the `Socket`, so the descriptor
    // stays open (and is deregistered before it closes) for the whole registration.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(io::Error::from)
}

/// Copies what `socket` has received into `buffer` without taking it off the socket
/// (`MSG_PEEK`).
pub(crate) fn peek(socket: &Socket, buffer: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and every byte of `buffer`
    // is initialized; `recv` only ever writes initialized bytes into the slice, so `buffer`
    // stays fully initialized whatever it writes.
    let buffer = unsafe { &mut *(std::ptr::from_mut::<[u8]>(buffer) as *mut [std::mem::MaybeUninit<u8>]) };
    socket.peek(buffer)
}

/// A raw socket for IP-in-IP tunnels: `outer_ipv6` picks the outer header's family,
/// `inner_ipv6` the tunnelled packets' (the outer header's protocol: 4 for IPv4, 41 for
/// IPv6). What is sent is wrapped by the kernel in an outer header to the destination. What
/// is read is the whole packet from an IPv4 socket, outer header included, and only the
/// payload (the inner packet) from an IPv6 one.
pub(crate) fn tunnel_socket(outer_ipv6: bool, inner_ipv6: bool) -> io::Result<Socket> {
    let domain = if outer_ipv6 {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let protocol = if inner_ipv6 {
        libc::IPPROTO_IPV6
    } else {
        libc::IPPROTO_IPIP
    };
    Socket::new(
        domain,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(protocol)),
    )
}

/// An `AF_PACKET` socket of `kind` that receives nothing (protocol 0), and the link-layer
/// address of interface `ifindex` (for `bind` or `sendto`).
fn packet_socket_of(kind: socket2::Type, ifindex: u32) -> io::Result<(Socket, libc::sockaddr_ll)> {
    let socket = Socket::new(socket2::Domain::PACKET, kind, Some(socket2::Protocol::from(0)))?;
    let index =
        i32::try_from(ifindex).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
    // SAFETY: an all-zero `sockaddr_ll` is a valid value of that plain C struct.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = index;
    Ok((socket, address))
}

/// An `AF_PACKET` raw socket bound to interface `ifindex`, for sending whole Ethernet frames
/// (direct routing). It receives nothing (protocol 0). Every frame sent starts with a
/// `virtio_net_hdr` (`PACKET_VNET_HDR`), so TCP/UDP super-packets and partial checksums from
/// the TUN device go out as they came in, segmented (if at all) by the kernel.
pub(crate) fn packet_socket(ifindex: u32) -> io::Result<Socket> {
    use std::os::fd::AsRawFd;
    let (socket, address) = packet_socket_of(socket2::Type::RAW, ifindex)?;
    // SAFETY: `address` is a fully initialised `sockaddr_ll` that lives across the call, the
    // length passed is its size, and the descriptor is the open socket owned by `socket`.
    let result = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live `c_int` for the whole call and the length passed is its size;
    // the descriptor is the open socket owned by `socket`.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            (&raw const on).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Sends `payload` as one Ethernet frame of `ethertype` to `destination` out of interface
/// `ifindex`; the kernel adds the Ethernet header with the interface's MAC.
pub(crate) fn send_frame(
    ifindex: u32,
    ethertype: u16,
    destination: [u8; 6],
    payload: &[u8],
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (socket, mut address) = packet_socket_of(socket2::Type::DGRAM, ifindex)?;
    address.sll_protocol = ethertype.to_be();
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&destination);
    // SAFETY: `payload` is a live slice for the whole call and its length is passed with it;
    // `address` is a fully initialised `sockaddr_ll` that lives across the call, with its own
    // size as the length; the descriptor is the open socket owned by `socket`.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            payload.as_ptr().cast::<libc::c_void>(),
            payload.len(),
            0,
            (&raw const address).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `bpf(2)` commands and the program type used here (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
#[cfg(test)]
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to the fields used here (the kernel reads
/// the ones after them as zero).
#[repr(C)]
#[derive(Default)]
struct ProgramLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The `BPF_PROG_TEST_RUN` part of `union bpf_attr`.
#[cfg(test)]
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

/// Calls `bpf(command, attr, size_of(attr))`.
fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union bpf_attr` for this
    // command, exclusively borrowed for the whole call, and the size passed is its own; every
    // pointer inside it was set by the caller to memory that outlives the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// One eBPF instruction, laid out as the kernel reads it (`struct bpf_insn`): the layout
/// [`load_socket_filter`] hands to `bpf(2)` as it is, so it is defined here, beside that
/// `unsafe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    pub(crate) code: u8,
    /// Source register in the high nibble, destination in the low one.
    pub(crate) registers: u8,
    pub(crate) offset: i16,
    pub(crate) immediate: i32,
}

/// Loads `program` as a socket-filter eBPF program named `name` (at most 15 bytes are kept).
/// A program the verifier refuses gives an error carrying the verifier's log.
pub(crate) fn load_socket_filter(program: &[Insn], name: &str) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgramLoad {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: u32::try_from(program.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "eBPF program too long"))?,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgramLoad::default()
    };
    for (slot, byte) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => {
            let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf returned a bad descriptor"))?;
            // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor that nothing else
            // owns; it is handed to the `OwnedFd` here, once.
            Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
        }
        Err(error) => {
            let end = log.iter().position(|&byte| byte == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let lines: Vec<&str> = text.lines().collect();
            let last = &lines[lines.len().saturating_sub(3)..];
            if last.is_empty() {
                return Err(error);
            }
            Err(io::Error::new(
                error.kind(),
                format!("{error}; verifier: {}", last.join(" / ")),
            ))
        }
    }
}

/// (Tests.) Runs a loaded socket-filter program once on `frame` (an Ethernet frame; the program sees
/// the packet after its Ethernet header) and returns what it returned.
#[cfg(test)]
pub(crate) fn test_run(program: &std::os::fd::OwnedFd, frame: &[u8]) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut attr = TestRun {
        prog_fd: u32::try_from(program.as_raw_fd()).map_err(|_| io::Error::other("bad descriptor"))?,
        data_size_in: u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..TestRun::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}

/// Makes `program` choose the queue of every packet the kernel hands to the TUN device that
/// `queue` is a queue of (`TUNSETSTEERINGEBPF`); it replaces the program set before, if any.
pub(crate) fn set_tun_steering(
    queue: std::os::fd::BorrowedFd<'_>,
    program: &std::os::fd::OwnedFd,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd: libc::c_int = program.as_raw_fd();
    // SAFETY: `queue` is an open TUN queue descriptor borrowed for the call, and the ioctl
    // reads one `c_int` from the pointer, which points to `fd`, live for the whole call.
    let result = unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNSETSTEERINGEBPF, &raw const fd) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
