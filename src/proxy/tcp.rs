//! TCP proxy: accept, schedule, connect (retrying other reals), relay.

use std::{io, net::SocketAddr, sync::atomic::Ordering::Relaxed, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    Failed, Shared,
    flows::FlowRecord,
    linger::{self, Closed},
    relay,
    relay::{IdleTimeouts, RelayEnd, Relayed},
    stream::{Listener, Stream},
};
use crate::{
    access_log::{FlowEnd, FlowRecord as AccessRecord},
    clock::Millis,
    config::{Protocol, ServiceKey},
    host::DescriptorHold,
    log::Throttle,
    proxy_header::{self, Header, ParseError, Transport},
    sched::Flow,
    table::{Refusal, Scheduled, admission::SourceHold},
};

/// Reals tried for one client connection: the first choice and up to two more.
const CONNECT_ATTEMPTS: usize = 3;

/// How long a connection to an `accept_proxy` service may take to send its PROXY header.
/// The balancer in front sends it at once; a connection that stays silent holds descriptors.
pub(crate) const PROXY_HEADER_WAIT: Duration = Duration::from_secs(5);

/// Accepts connections for `key` until `stop` is cancelled; each connection runs as a task
/// on this worker.
pub(super) async fn accept_loop(
    listener: Listener,
    key: ServiceKey,
    shared: Shared,
    stop: CancellationToken,
) {
    let mut error_pause = Duration::from_millis(5);
    let warned = Throttle::new(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                error_pause = Duration::from_millis(5);
                // The client's socket and the one to the real: both before anything opens.
                let Some(descriptors) = shared.descriptors.take(2) else {
                    refuse(&client, peer, &key, &shared, Refusal::Descriptors, &warned);
                    continue;
                };
                tokio::spawn(handle(client, peer, key, shared.clone(), descriptors));
            }
            Err(error) => {
                // EMFILE/ENFILE/ENOBUFS: pause rather than spin, as mini-redis does.
                if let Some(suppressed) = warned.ready() {
                    tracing::warn!(service = %key, %error, suppressed, "accept failed; pausing {error_pause:?}");
                }
                tokio::time::sleep(error_pause).await;
                error_pause = (error_pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Resets a client the director cannot serve for `why`, counting it (and warning at most once
/// per interval).
fn refuse(
    client: &Stream,
    peer: SocketAddr,
    key: &ServiceKey,
    shared: &Shared,
    why: Refusal,
    warned: &Throttle,
) {
    let _ = client.set_zero_linger();
    shared.access_log.record(AccessRecord {
        service: *key,
        client: canonical(peer),
        real: None,
        bytes_in: 0,
        bytes_out: 0,
        duration: Duration::ZERO,
        end: FlowEnd::Refused(why.label()),
    });
    if let Some(service) = shared.table.load().service(key) {
        service.stats.refuse(why);
    }
    if let Some(suppressed) = warned.ready() {
        tracing::warn!(
            service = %key,
            reason = why.label(),
            suppressed,
            "new connection refused: {} (see lbd_service_refused_total)",
            why.describe()
        );
    }
}

async fn handle(
    client: Stream,
    peer: SocketAddr,
    key: ServiceKey,
    shared: Shared,
    _descriptors: DescriptorHold,
) {
    let _flow = shared.flows.enter();
    // One warning per reason and interval: one kind of refusal hides no other.
    const EVERY: Duration = Duration::from_secs(10);
    static REFUSED: [Throttle; Refusal::ALL.len()] = [const { Throttle::new(EVERY) }; Refusal::ALL.len()];
    let admitted = match Origin::of(&client, peer, &key, &shared).await {
        Ok(origin) => admit(&shared, &key, origin.client)
            .map(|hold| (origin, hold))
            .map_err(|why| (why, origin.client)),
        Err(why) => Err((why, peer)),
    };
    let started = std::time::Instant::now();
    let finished = |client: SocketAddr, real: Option<SocketAddr>, relayed: Option<&Relayed>, end: FlowEnd| {
        shared.access_log.record(AccessRecord {
            service: key,
            client,
            real,
            bytes_in: relayed.map_or(0, |relayed| relayed.bytes_in),
            bytes_out: relayed.map_or(0, |relayed| relayed.bytes_out),
            duration: started.elapsed(),
            end,
        });
    };
    let (origin, _admitted) = match admitted {
        Ok(admitted) => admitted,
        Err((why, from)) => {
            refuse(&client, from, &key, &shared, why, &REFUSED[why as usize]);
            return;
        }
    };
    let Some((server, mut scheduled, timeouts)) = connect(origin.client, key, &shared).await else {
        // Refuse with a reset, as a closed port would.
        let _ = client.set_zero_linger();
        finished(origin.client, None, None, FlowEnd::Refused("unavailable"));
        return;
    };
    if let Some(version) = scheduled.proxy_protocol.version() {
        // The address the client reached: the VIP of a wildcard listener, as the client saw it.
        let destination = origin
            .destination
            .or_else(|| client.local_addr().ok())
            .unwrap_or(key.listen);
        let header = Header::new(version, Transport::Stream, origin.client, destination);
        if let Err(error) = server.write_all(header.as_bytes()).await {
            tracing::debug!(service = %key, real = %scheduled.address, %error, "cannot send the PROXY header");
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
            scheduled.end(Millis::now());
            return;
        }
    }
    scheduled.binding.set_active(true);
    let registration = shared.flows.register(FlowRecord::new(
        Protocol::Tcp,
        origin.client,
        key.listen,
        scheduled.address,
    ));
    let relayed = relay::relay(
        &client,
        &server,
        &mut scheduled.binding,
        registration.record(),
        timeouts,
    )
    .await;
    let end = match relayed.end {
        RelayEnd::Closed => FlowEnd::Closed,
        RelayEnd::IdleTimeout => FlowEnd::Timeout,
        RelayEnd::Error(_) => FlowEnd::Reset,
        RelayEnd::Killed => FlowEnd::Killed,
    };
    finished(origin.client, Some(scheduled.address), Some(&relayed), end);
    // As in IPVS, the closed flow keeps counting in its real's InActConn (TIME_WAIT after a
    // clean close, CLOSE after a reset); an idle timeout ends it at once.
    let closed = match relayed.end {
        RelayEnd::Closed => Some(Closed::Cleanly),
        RelayEnd::IdleTimeout => {
            tracing::debug!(service = %key, client = %peer, "idle timeout");
            None
        }
        RelayEnd::Error(error) => {
            tracing::debug!(service = %key, client = %peer, %error, "connection reset");
            Some(Closed::Reset)
        }
        RelayEnd::Killed => {
            tracing::debug!(service = %key, client = %peer, "flow killed");
            Some(Closed::Reset)
        }
    };
    let now = Millis::now();
    scheduled.end(now);
    if let Some(closed) = closed {
        linger::hold(scheduled.binding, closed, now);
    }
}

/// A dual-stack listener's IPv4 client (::ffff:a.b.c.d) is scheduled, persisted and reported
/// as the IPv4 address it is.
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// The service's verdict on a new flow from `client`: its allow and deny lists, its caps.
fn admit(shared: &Shared, key: &ServiceKey, client: SocketAddr) -> Result<Option<SourceHold>, Refusal> {
    match shared.table.load().service(key) {
        Some(service) => service.admit(client.ip(), Millis::now()),
        None => Ok(None),
    }
}

/// Whom a connection stands for: its peer, or with `accept_proxy` the client and address a
/// balancer in front names in its PROXY header.
#[derive(Clone, Copy)]
struct Origin {
    /// The client, scheduled, persisted, logged and announced to the real as such.
    client: SocketAddr,
    /// The address the client connected to, when a PROXY header says it.
    destination: Option<SocketAddr>,
}

impl Origin {
    /// Reads the PROXY header when the service takes one; refuses a peer outside
    /// `accept_proxy_from` and a header that is broken or late.
    async fn of(
        client: &Stream,
        peer: SocketAddr,
        key: &ServiceKey,
        shared: &Shared,
    ) -> Result<Self, Refusal> {
        let peer = canonical(peer);
        let trusted = {
            let table = shared.table.load();
            match table.service(key) {
                Some(service) if service.config.accept_proxy => {
                    service.config.accept_proxy_from.contains(peer.ip())
                }
                _ => {
                    return Ok(Self {
                        client: peer,
                        destination: None,
                    });
                }
            }
        };
        if !trusted {
            return Err(Refusal::UntrustedProxy);
        }
        // On the heap: the connection's task stays small while its flow lasts.
        let mut buffer = vec![0u8; proxy_header::V2_MAX];
        let read = client.peek_until(&mut buffer, |bytes| match proxy_header::parse(bytes) {
            Err(ParseError::Incomplete) => None,
            parsed => Some(parsed),
        });
        let parsed = match tokio::time::timeout(PROXY_HEADER_WAIT, read).await {
            Ok(Ok(parsed)) => parsed,
            Ok(Err(error)) => {
                tracing::debug!(service = %key, balancer = %peer, %error, "no PROXY header");
                return Err(Refusal::ProxyHeader);
            }
            Err(_) => {
                tracing::debug!(service = %key, balancer = %peer, "no PROXY header within {PROXY_HEADER_WAIT:?}");
                return Err(Refusal::ProxyHeader);
            }
        };
        let received = parsed.map_err(|error| {
            tracing::debug!(service = %key, balancer = %peer, %error, "broken PROXY header");
            Refusal::ProxyHeader
        })?;
        client.discard(received.len).map_err(|_| Refusal::ProxyHeader)?;
        Ok(match received.addresses {
            Some((source, destination)) => Self {
                client: SocketAddr::new(source.ip().to_canonical(), source.port()),
                destination: Some(destination),
            },
            // LOCAL / UNKNOWN: the balancer's own connection (its health check).
            None => Self {
                client: peer,
                destination: None,
            },
        })
    }
}

/// Schedules the flow and connects to the chosen real, trying the scheduler's next choice when
/// a connect fails. A failed real enters passive back-off, so later flows skip it too.
async fn connect(
    client: SocketAddr,
    key: ServiceKey,
    shared: &Shared,
) -> Option<(Stream, Scheduled, IdleTimeouts)> {
    for attempt in 0..CONNECT_ATTEMPTS {
        let now = Millis::now();
        let (scheduled, timeouts) = {
            let table = shared.table.load();
            let service = table.service(&key)?;
            if attempt == 0 {
                service.stats.conns.fetch_add(1, Relaxed);
            }
            let flow = Flow {
                client,
                destination: key.listen,
                now,
            };
            let scheduled = service.schedule(&flow)?;
            let timeouts = IdleTimeouts {
                established: table.timeouts.tcp,
                half_closed: table.timeouts.tcp_fin,
            };
            (scheduled, (timeouts, table.timeouts.connect))
        };
        let (idle, connect_timeout) = timeouts;
        let address = scheduled.address;
        let error = match tokio::time::timeout(connect_timeout, Stream::connect(address)).await {
            Ok(Ok(server)) => {
                scheduled.binding.real().record_success();
                return Some((server, scheduled, idle));
            }
            Ok(Err(error)) if crate::host::is_local(&error) => {
                // This host's shortage, not the real's: nothing is counted against it, and
                // another real would fare no better.
                tracing::debug!(service = %key, real = %address, %error, "cannot connect: no local resources");
                return None;
            }
            Ok(Err(error)) => error,
            Err(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {connect_timeout:?}"),
            ),
        };
        scheduled.end(now);
        let failures = scheduled.failed(&shared.table, &key, now);
        // A real that dies under load fails thousands of connects a second: one line a second.
        static FAILED: Throttle = Throttle::new(Duration::from_secs(1));
        if let Some(suppressed) = FAILED.ready_at(now) {
            tracing::info!(service = %key, real = %address, %error, failures, suppressed, "connect to real server failed; trying another");
        }
    }
    None
}
