//! TCP sockets registered with the worker's reactor through `AsyncFd`, so the relay controls
//! readiness itself: a read that returns less than the buffer drained the socket, so readiness
//! is cleared without the extra `recv` → `EAGAIN` round trip a generic stream needs, and a
//! write is attempted before any readiness check (it almost always fits). On a loopback
//! keep-alive load this removes two of six syscalls per request.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr},
    task::{Context, Poll, ready},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use crate::sys;

/// A listening TCP socket.
#[derive(Debug)]
pub(crate) struct Listener(AsyncFd<Socket>);

impl Listener {
    /// Registers a bound, listening, non-blocking socket.
    pub(crate) fn new(listener: std::net::TcpListener) -> io::Result<Self> {
        sys::register(Socket::from(listener), Interest::READABLE).map(Self)
    }

    /// Accepts the next connection, already non-blocking and registered.
    pub(crate) async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard
                .get_inner()
                .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            {
                Ok((socket, peer)) => {
                    let peer = peer
                        .as_socket()
                        .ok_or_else(|| io::Error::other("accepted a non-IP peer"))?;
                    return Ok((Stream::new(socket)?, peer));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(error) => return Err(error),
            }
        }
    }
}

/// A connected TCP socket.
#[derive(Debug)]
pub(crate) struct Stream(AsyncFd<Socket>);

impl Stream {
    fn new(socket: Socket) -> io::Result<Self> {
        sys::register(socket, Interest::READABLE | Interest::WRITABLE).map(Self)
    }

    /// Connects to `address` with TCP_NODELAY set.
    pub(crate) async fn connect(address: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM.nonblocking(),
            Some(Protocol::TCP),
        )?;
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&SockAddr::from(address)) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(error) => return Err(error),
        }
        let stream = Self::new(socket)?;
        let _ready = stream.0.writable().await?;
        match stream.0.get_ref().take_error()? {
            Some(error) => Err(error),
            None => Ok(stream),
        }
    }

    /// Reads into `buffer`; a short read clears read readiness.
    pub(crate) fn poll_read(&self, cx: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            match guard.get_inner().read(buffer) {
                Ok(n) => {
                    if n < buffer.len() {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    /// Looks at what the peer has sent, without taking it, until `decide` makes something of
    /// it: `decide` sees all the bytes received so far (up to `buffer`'s length) and returns
    /// `None` to wait for more. Read readiness stays set when it decides, so what follows in
    /// the socket is read as usual. The peer closing first is an `UnexpectedEof` error.
    pub(crate) async fn peek_until<T>(
        &self,
        buffer: &mut [u8],
        mut decide: impl FnMut(&[u8]) -> Option<T>,
    ) -> io::Result<T> {
        loop {
            let mut guard = self.0.readable().await?;
            match sys::peek(guard.get_inner(), buffer) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => match decide(&buffer[..n]) {
                    Some(decided) => return Ok(decided),
                    // Wait for more: the next edge comes with new bytes.
                    None => guard.clear_ready(),
                },
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(error) => return Err(error),
            }
        }
    }

    /// Takes `len` bytes that [`peek_until`](Self::peek_until) saw off the socket.
    pub(crate) fn discard(&self, len: usize) -> io::Result<()> {
        let mut scratch = [0u8; 2048];
        let mut left = len;
        while left > 0 {
            let take = left.min(scratch.len());
            let n = self.0.get_ref().read(&mut scratch[..take])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= n;
        }
        Ok(())
    }

    /// Writes all of `data` (a few bytes: a PROXY protocol header).
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_write(cx, data)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// The address the peer connected to.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0
            .get_ref()
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("a non-IP local address"))
    }

    /// Whether the socket is (or may be) readable; registers the waker if not.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx).map_ok(|_| ())
    }

    /// Writes from `data`, trying the syscall first and waiting for readiness only when the
    /// send buffer is full.
    pub(crate) fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.0.get_ref().write(data) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            result => return Poll::Ready(result),
        }
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.get_inner().write(data) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                result => return Poll::Ready(result),
            }
        }
    }

    /// Sends FIN: no more data this way.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self.0.get_ref().shutdown(Shutdown::Write) {
            Err(error) if error.kind() != io::ErrorKind::NotConnected => Err(error),
            _ => Ok(()),
        }
    }

    /// Makes the coming close send RST instead of FIN.
    pub(crate) fn set_zero_linger(&self) -> io::Result<()> {
        self.0.get_ref().set_linger(Some(Duration::ZERO))
    }
}
