//! UDP proxy: sessions keyed by client address (with `one_packet`, by client and real). Each
//! session has its own socket connected to its real; replies go back to the client from the
//! service socket, so they come from the service address. A session ends after its idle
//! timeout (`udp_timeout`, else `timeouts.udp`) without a datagram either way, or after
//! `udp_responses` replies (with `one_packet`, after the first).
//!
//! Sessions are bounded: a service holds at most `max_sessions`, all UDP sessions together at
//! most half of the proxy's descriptor budget; a datagram that would start one more is
//! dropped and counted (`lbd_service_refused_total{reason="sessions"}`), so a flood of new
//! clients never takes the descriptors other services need.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use ahash::RandomState;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{
    Failed, FlowGuard, Shared,
    flows::{FlowRecord, Registration},
    pool,
};
use crate::{
    access_log::{AccessLog, FlowEnd, FlowRecord as AccessRecord},
    clock::Millis,
    config::{Protocol, ProxyProtocol, ServiceKey},
    host::DescriptorHold,
    log::Throttle,
    proxy_header::{Header, Transport, Version},
    sched::Flow,
    table::{Refusal, Scheduled, ServiceStats, TableHandle, admission::SourceHold},
};

/// Sessions of one service on one worker. Only that worker's thread touches the map, so the
/// mutex is never contended; it is there because tasks must be `Send`.
#[derive(Default)]
struct Sessions(Mutex<HashMap<SessionKey, Arc<Session>, RandomState>>);

impl Sessions {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<SessionKey, Arc<Session>, RandomState>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey {
    client: SocketAddr,
    /// Only with `one_packet`: the real chosen for this datagram.
    real: Option<SocketAddr>,
}

struct Session {
    key: SessionKey,
    upstream: UdpSocket,
    /// The PROXY v2 header each datagram to the real starts with, if the real takes one.
    header: Option<Header>,
    /// When it started, and the payload bytes it carried each way (for the access log).
    started: std::time::Instant,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    scheduled: Scheduled,
    /// Its listing, with the time of the last datagram either way.
    registration: Registration,
    _flow: FlowGuard,
    _admitted: Option<SourceHold>,
    _counted: Counted,
    _descriptor: DescriptorHold,
}

/// A session's place in its service's count, given back when the session ends.
struct Counted(Arc<ServiceStats>);

impl Counted {
    /// Counts one more session of the service, unless it holds `max` already.
    fn take(stats: &Arc<ServiceStats>, max: u32) -> Option<Self> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        stats
            .udp_sessions
            .fetch_update(Relaxed, Relaxed, |open| (open < max).then_some(open + 1))
            .ok()?;
        Some(Self(Arc::clone(stats)))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.udp_sessions.fetch_sub(1, Relaxed);
    }
}

impl Session {
    fn touch(&self) {
        self.registration.record().touch();
    }

    /// How long the session has been idle.
    fn idle_for(&self) -> Duration {
        let last = self.registration.record().last_activity();
        Duration::from_millis(Millis::now().0.saturating_sub(last.0))
    }
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
    let socket = Arc::new(socket);
    let sessions: Arc<Sessions> = Arc::default();
    // Datagrams land after room for a PROXY header, which is then written in front of them.
    let mut buffer = vec![0u8; HEADER_ROOM + 65_536];
    let warned = Throttle::new(Duration::from_secs(10));
    loop {
        let (len, client) = tokio::select! {
            () = stop.cancelled() => break,
            received = socket.recv_from(&mut buffer[HEADER_ROOM..]) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(service = %key, %error, "udp receive failed");
                    continue;
                }
            },
        };
        for _retry in 0..2 {
            let draining = drain.is_cancelled();
            let Some(session) = session_for(client, key, &shared, &socket, &sessions, draining, &warned)
            else {
                break;
            };
            let stats = session.scheduled.binding.real();
            let start = match &session.header {
                Some(header) => {
                    let start = HEADER_ROOM - header.as_bytes().len();
                    buffer[start..HEADER_ROOM].copy_from_slice(header.as_bytes());
                    start
                }
                None => HEADER_ROOM,
            };
            match session.upstream.send(&buffer[start..HEADER_ROOM + len]).await {
                Ok(_) => {
                    stats.packets_in.fetch_add(1, Relaxed);
                    stats.bytes_in.fetch_add(len as u64, Relaxed);
                    session.bytes_in.fetch_add(len as u64, Relaxed);
                    session.touch();
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    // An ICMP unreachable from an earlier datagram: that real is gone;
                    // end the session and schedule this datagram again.
                    session.scheduled.failed(&shared.table, &key, Millis::now());
                    end_session(&sessions, &session);
                }
                Err(error) => {
                    tracing::debug!(service = %key, %error, "udp send to real failed; datagram dropped");
                    break;
                }
            }
        }
    }
    sessions.with(HashMap::clear);
}

/// The session for a datagram from `client`, started if need be (within the bounds).
fn session_for(
    client: SocketAddr,
    key: ServiceKey,
    shared: &Shared,
    socket: &Arc<UdpSocket>,
    sessions: &Arc<Sessions>,
    draining: bool,
    warned: &Throttle,
) -> Option<Arc<Session>> {
    let table = shared.table.load();
    let service = table.service(&key)?;
    let one_packet = service.config.one_packet;
    if !one_packet
        && let Some(session) = sessions.with(|map| map.get(&SessionKey { client, real: None }).cloned())
    {
        return Some(session);
    }
    if draining {
        return None;
    }
    let refused_record = |why: Refusal| {
        shared.access_log.record(AccessRecord {
            service: key,
            client: SocketAddr::new(client.ip().to_canonical(), client.port()),
            real: None,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            end: FlowEnd::Refused(why.label()),
        });
    };
    let admitted = match service.admit(client.ip(), Millis::now()) {
        Ok(admitted) => admitted,
        Err(why) => {
            refused_record(why);
            service.stats.refuse(why);
            if let Some(suppressed) = warned.ready() {
                tracing::warn!(service = %key, reason = why.label(), suppressed, "new udp session refused: {}", why.describe());
            }
            return None;
        }
    };
    let flow = Flow {
        // A dual-stack socket's IPv4 client (::ffff:a.b.c.d) is scheduled as the IPv4 address
        // it is; replies still go to the address the socket knows.
        client: SocketAddr::new(client.ip().to_canonical(), client.port()),
        destination: key.listen,
        now: Millis::now(),
    };
    let scheduled = service.schedule(&flow)?;
    let address = scheduled.address;
    let session_key = SessionKey {
        client,
        real: one_packet.then_some(address),
    };
    if let Some(session) = sessions.with(|map| map.get(&session_key).cloned()) {
        // one_packet: this client already has a session with the chosen real.
        service.stats.conns.fetch_add(1, Relaxed);
        return Some(session);
    }
    service.stats.conns.fetch_add(1, Relaxed);
    let refused = |why: Refusal, warned: &Throttle| {
        refused_record(why);
        service.stats.refuse(why);
        if let Some(suppressed) = warned.ready() {
            tracing::warn!(
                service = %key,
                reason = why.label(),
                sessions = service.stats.udp_sessions.load(Relaxed),
                suppressed,
                "new udp session refused: {} (see lbd_service_refused_total)",
                why.describe()
            );
        }
        None
    };
    let Some(counted) = Counted::take(&service.stats, service.config.max_sessions) else {
        return refused(Refusal::Sessions, warned);
    };
    let Some(descriptor) = shared.descriptors.take_udp() else {
        return refused(Refusal::Sessions, warned);
    };
    let upstream = match connected_socket(address) {
        Ok(upstream) => upstream,
        Err(error) => {
            // Always this host's trouble (no descriptor, no port): never the real's.
            if let Some(suppressed) = warned.ready() {
                tracing::warn!(service = %key, real = %address, %error, suppressed, "cannot open a udp socket to the real server");
            }
            return None;
        }
    };
    // Only version 2 frames datagrams (the config refuses v1 for udp); its header fits in
    // HEADER_ROOM. The service's address stands for the one the client reached (a wildcard
    // listener does not learn a datagram's destination).
    let header = (scheduled.proxy_protocol == ProxyProtocol::V2)
        .then(|| Header::new(Version::V2, Transport::Datagram, flow.client, key.listen));
    let session = Arc::new(Session {
        key: session_key,
        upstream,
        header,
        started: std::time::Instant::now(),
        bytes_in: AtomicU64::new(0),
        bytes_out: AtomicU64::new(0),
        registration: shared
            .flows
            .register(FlowRecord::new(Protocol::Udp, client, key.listen, address)),
        scheduled,
        _flow: shared.flows.enter(),
        _admitted: admitted,
        _counted: counted,
        _descriptor: descriptor,
    });
    sessions.with(|map| map.insert(session_key, Arc::clone(&session)));
    let ends = SessionEnd {
        idle: service.config.udp_timeout.unwrap_or(table.timeouts.udp),
        replies: if one_packet {
            Some(1)
        } else {
            service.config.udp_responses
        },
    };
    tokio::spawn(replies(
        key,
        Arc::clone(&shared.table),
        Arc::clone(&session),
        Arc::clone(socket),
        Arc::clone(sessions),
        ends,
        shared.access_log.clone(),
    ));
    Some(session)
}

/// Room before a received datagram for the longest PROXY v2 header (two IPv6 addresses).
const HEADER_ROOM: usize = 52;

/// When a session ends.
#[derive(Debug, Clone, Copy)]
struct SessionEnd {
    /// After this long without a datagram either way.
    idle: Duration,
    /// After this many replies, if set.
    replies: Option<u32>,
}

/// Passes the real's replies back to the client until the session idles out, has had its
/// replies, or fails.
async fn replies(
    key: ServiceKey,
    table: Arc<TableHandle>,
    session: Arc<Session>,
    socket: Arc<UdpSocket>,
    sessions: Arc<Sessions>,
    ends: SessionEnd,
    access_log: AccessLog,
) {
    let stats = session.scheduled.binding.real();
    let client = session.key.client;
    let idle = ends.idle;
    let mut replies_left = ends.replies;
    let end = loop {
        let remaining = idle.saturating_sub(session.idle_for());
        let ready = tokio::select! {
            ready = session.upstream.readable() => ready,
            () = std::future::poll_fn(|cx| session.registration.record().poll_killed(cx)) => break FlowEnd::Killed,
            () = tokio::time::sleep(remaining) => {
                if session.idle_for() >= idle {
                    break FlowEnd::Timeout;
                }
                continue;
            }
        };
        if ready.is_err() {
            break FlowEnd::Reset;
        }
        let mut buffer = pool::take();
        let received = session.upstream.try_recv(&mut buffer);
        match received {
            Ok(len) => {
                stats.record_success();
                stats.packets_out.fetch_add(1, Relaxed);
                stats.bytes_out.fetch_add(len as u64, Relaxed);
                session.bytes_out.fetch_add(len as u64, Relaxed);
                session.touch();
                if let Err(error) = socket.send_to(&buffer[..len], client).await {
                    tracing::debug!(client = %client, %error, "udp reply to client failed");
                }
                pool::give(buffer);
                if let Some(left) = replies_left.as_mut() {
                    *left -= 1;
                    if *left == 0 {
                        break FlowEnd::Closed;
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => pool::give(buffer),
            Err(error) => {
                pool::give(buffer);
                if error.kind() == io::ErrorKind::ConnectionRefused {
                    session.scheduled.failed(&table, &key, Millis::now());
                }
                tracing::debug!(client = %client, %error, "udp session ended");
                break FlowEnd::Reset;
            }
        }
    };
    access_log.record(AccessRecord {
        service: key,
        client: SocketAddr::new(client.ip().to_canonical(), client.port()),
        real: Some(session.scheduled.address),
        bytes_in: session.bytes_in.load(Relaxed),
        bytes_out: session.bytes_out.load(Relaxed),
        duration: session.started.elapsed(),
        end,
    });
    session.scheduled.end(Millis::now());
    end_session(&sessions, &session);
}

/// Forgets `session`, unless its key already belongs to a newer session.
fn end_session(sessions: &Sessions, session: &Arc<Session>) {
    sessions.with(|map| {
        if map
            .get(&session.key)
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            map.remove(&session.key);
        }
    });
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
