//! UDP proxy: sessions keyed by client address (with `one_packet`, by client and real). Each
//! session has its own socket connected to its real; replies go back to the client from the
//! service socket, so they come from the service address. A session ends after
//! `timeouts.udp` without a datagram either way.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    rc::Rc,
    sync::atomic::Ordering::Relaxed,
};

use ahash::RandomState;
use tokio::{net::UdpSocket, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{FlowGuard, Shared, pool, schedule};
use crate::{clock::Millis, config::ServiceKey, sched::Flow, table::FlowBinding};

/// Sessions of one service on one worker.
type Sessions = RefCell<HashMap<SessionKey, Rc<Session>, RandomState>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey {
    client: SocketAddr,
    /// Only with `one_packet`: the real chosen for this datagram.
    real: Option<SocketAddr>,
}

struct Session {
    key: SessionKey,
    upstream: UdpSocket,
    binding: FlowBinding,
    last_activity: Cell<Instant>,
    _flow: FlowGuard,
}

/// Serves one service socket until `stop` is cancelled. Once `drain` is cancelled, datagrams
/// of existing sessions still pass but no new session starts.
pub(super) async fn serve(
    socket: UdpSocket,
    key: ServiceKey,
    shared: Shared,
    stop: CancellationToken,
    drain: CancellationToken,
) {
    let socket = Rc::new(socket);
    let sessions: Rc<Sessions> = Rc::default();
    let mut buffer = vec![0u8; 65_536];
    loop {
        let (len, client) = tokio::select! {
            () = stop.cancelled() => break,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(service = %key, %error, "udp receive failed");
                    continue;
                }
            },
        };
        let datagram = &buffer[..len];
        for _retry in 0..2 {
            let Some(session) = session_for(client, key, &shared, &socket, &sessions, drain.is_cancelled())
            else {
                break;
            };
            let stats = session.binding.real();
            match session.upstream.send(datagram).await {
                Ok(_) => {
                    stats.packets_in.fetch_add(1, Relaxed);
                    stats.bytes_in.fetch_add(len as u64, Relaxed);
                    session.last_activity.set(Instant::now());
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    // An ICMP unreachable from an earlier datagram: that real is gone;
                    // end the session and schedule this datagram again.
                    stats.record_failure(Millis::now());
                    end_session(&sessions, &session);
                }
                Err(error) => {
                    tracing::debug!(service = %key, %error, "udp send to real failed; datagram dropped");
                    break;
                }
            }
        }
    }
    sessions.borrow_mut().clear();
}

/// The session for a datagram from `client`, started if need be.
fn session_for(
    client: SocketAddr,
    key: ServiceKey,
    shared: &Shared,
    socket: &Rc<UdpSocket>,
    sessions: &Rc<Sessions>,
    draining: bool,
) -> Option<Rc<Session>> {
    let table = shared.table.load();
    let service = table.service(&key)?;
    let one_packet = service.config.one_packet;
    if !one_packet && let Some(session) = sessions.borrow().get(&SessionKey { client, real: None }) {
        return Some(Rc::clone(session));
    }
    if draining {
        return None;
    }
    let flow = Flow {
        client,
        destination: key.listen,
        now: Millis::now(),
    };
    let (address, binding) = schedule(service, &flow)?;
    let session_key = SessionKey {
        client,
        real: one_packet.then_some(address),
    };
    if let Some(session) = sessions.borrow().get(&session_key) {
        // one_packet: this client already has a session with the chosen real.
        service.stats.conns.fetch_add(1, Relaxed);
        return Some(Rc::clone(session));
    }
    service.stats.conns.fetch_add(1, Relaxed);
    let upstream = match connected_socket(address) {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::warn!(service = %key, real = %address, %error, "cannot open a udp socket to the real server");
            return None;
        }
    };
    let session = Rc::new(Session {
        key: session_key,
        upstream,
        binding,
        last_activity: Cell::new(Instant::now()),
        _flow: shared.flows.enter(),
    });
    sessions.borrow_mut().insert(session_key, Rc::clone(&session));
    let idle = table.timeouts.udp;
    tokio::task::spawn_local(replies(
        Rc::clone(&session),
        Rc::clone(socket),
        Rc::clone(sessions),
        idle,
    ));
    Some(session)
}

/// Passes the real's replies back to the client until the session idles out or fails.
async fn replies(
    session: Rc<Session>,
    socket: Rc<UdpSocket>,
    sessions: Rc<Sessions>,
    idle: std::time::Duration,
) {
    let stats = session.binding.real();
    let client = session.key.client;
    loop {
        let deadline = session.last_activity.get() + idle;
        let ready = tokio::select! {
            ready = session.upstream.readable() => ready,
            () = tokio::time::sleep_until(deadline) => {
                if session.last_activity.get() + idle <= Instant::now() {
                    break;
                }
                continue;
            }
        };
        if ready.is_err() {
            break;
        }
        let mut buffer = pool::take();
        let received = session.upstream.try_recv(&mut buffer);
        match received {
            Ok(len) => {
                stats.packets_out.fetch_add(1, Relaxed);
                stats.bytes_out.fetch_add(len as u64, Relaxed);
                session.last_activity.set(Instant::now());
                if let Err(error) = socket.send_to(&buffer[..len], client).await {
                    tracing::debug!(client = %client, %error, "udp reply to client failed");
                }
                pool::give(buffer);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => pool::give(buffer),
            Err(error) => {
                pool::give(buffer);
                if error.kind() == io::ErrorKind::ConnectionRefused {
                    stats.record_failure(Millis::now());
                }
                tracing::debug!(client = %client, %error, "udp session ended");
                break;
            }
        }
    }
    end_session(&sessions, &session);
}

/// Forgets `session`, unless its key already belongs to a newer session.
fn end_session(sessions: &Sessions, session: &Rc<Session>) {
    let mut sessions = sessions.borrow_mut();
    if sessions
        .get(&session.key)
        .is_some_and(|current| Rc::ptr_eq(current, session))
    {
        sessions.remove(&session.key);
    }
}

fn connected_socket(real: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if real.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(real)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}
