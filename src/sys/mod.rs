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
