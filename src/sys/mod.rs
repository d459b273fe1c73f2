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

/// A raw IPv4 socket for IPIP (protocol 4): what is sent is wrapped by the kernel in an outer
/// IPv4 header to the destination; what is read is a whole IPIP packet, outer header included.
pub(crate) fn ipip_socket() -> io::Result<Socket> {
    Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_IPIP)),
    )
}

/// An `AF_PACKET` raw socket bound to interface `ifindex`, for sending whole Ethernet frames
/// (direct routing). It receives nothing (protocol 0). Every frame sent starts with a
/// `virtio_net_hdr` (`PACKET_VNET_HDR`), so TCP/UDP super-packets and partial checksums from
/// the TUN device go out as they came in, segmented (if at all) by the kernel.
pub(crate) fn packet_socket(ifindex: u32) -> io::Result<Socket> {
    use std::os::fd::AsRawFd;
    let socket = Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(0)),
    )?;
    let index =
        i32::try_from(ifindex).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
    // SAFETY: an all-zero `sockaddr_ll` is a valid value of that plain C struct.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = index;
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
