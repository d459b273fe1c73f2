//! The HA channel: a TCP connection from a backup to the master (`ha.sync.peers`, port
//! `ha.sync.port`) on which the master sends its services (with their generation) and a full
//! dump of its flows, then every later change of its services. A director that joins or
//! returns takes the master's table this way before it may take over; one that finds no master
//! among its peers is ready at once (there is no table to take).
//!
//! Frames: kind (1 byte), length (4 bytes, big-endian), payload. Kinds: [`CONFIG`] (generation,
//! 8 bytes, then the services as YAML), [`FLOWS`] (one IPVS sync message), [`DUMP_END`],
//! [`NOT_MASTER`], [`HEARTBEAT`]. Only peers may connect; every frame is bounded and every read and write has
//! a deadline.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, watch},
};

use crate::{
    clock::Millis,
    config::SyncConfig,
    lvs::plane::PacketShared,
    packet::sync::{MAX_MESSAGE_LEN, MessageWriter},
    table::TableHandle,
};

/// The master's services and their generation.
pub(crate) const CONFIG: u8 = 1;
/// One IPVS sync message of the full dump.
pub(crate) const FLOWS: u8 = 2;
/// The full dump is complete.
pub(crate) const DUMP_END: u8 = 3;
/// The director asked is not the master.
pub(crate) const NOT_MASTER: u8 = 4;
/// Nothing new; the master is alive (every second).
pub(crate) const HEARTBEAT: u8 = 5;

/// How long a backup waits for the master's next frame (heartbeats come every second).
const MASTER_SILENCE: Duration = Duration::from_secs(5);

/// The largest frame: a config document and its generation.
const MAX_FRAME: usize = crate::config::MAX_DOCUMENT_BYTES + 8;
/// How long one frame may take to arrive or leave.
const FRAME_DEADLINE: Duration = Duration::from_secs(10);
/// How long a connect to a peer may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
/// Backups served at once.
const MAX_BACKUPS: usize = 8;

/// A generation of the services, as the master publishes them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    /// Increases with every change the master applies.
    pub(crate) generation: u64,
    /// The services as `lbadm save` writes them.
    pub(crate) services: Arc<str>,
}

/// Services received from the master, for the control loop to apply.
#[derive(Debug)]
pub(crate) struct Received {
    /// Their generation.
    pub(crate) generation: u64,
    /// The services, YAML.
    pub(crate) services: String,
    /// The master that sent them.
    pub(crate) from: SocketAddr,
}

async fn write_frame(stream: &mut TcpStream, kind: u8, payload: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = payload.iter().map(|part| part.len()).sum();
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    let write = async {
        stream.write_all(&head).await?;
        for part in payload {
            stream.write_all(part).await?;
        }
        stream.flush().await
    };
    tokio::time::timeout(FRAME_DEADLINE, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "frame not taken in time"))?
}

/// Reads one frame; `idle` is how long to wait for its first byte.
async fn read_frame(stream: &mut TcpStream, idle: Duration) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    tokio::time::timeout(idle, stream.read_exact(&mut head[..1]))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no frame"))??;
    let body = async {
        stream.read_exact(&mut head[1..]).await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes is larger than the largest ({MAX_FRAME})"),
            ));
        }
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        Ok(payload)
    };
    let payload = tokio::time::timeout(FRAME_DEADLINE, body)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "frame cut short"))??;
    Ok((head[0], payload))
}

/// The channel's listening socket: the sync interface's address, `ha.sync.port` (TCP).
pub(crate) fn listener(config: &SyncConfig) -> std::io::Result<TcpListener> {
    let address = super::link::interface_address(&config.interface)?;
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((address, config.port)).into())?;
    socket.listen(16)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// The master's side: serves each peer that connects with the services, the full dump, then
/// every new generation, while this director is the master.
pub(crate) async fn serve(
    listener: TcpListener,
    config: SyncConfig,
    packets: Arc<PacketShared>,
    table: Arc<TableHandle>,
    published: watch::Receiver<Published>,
) {
    let slots = Arc::new(Semaphore::new(MAX_BACKUPS));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !config.peers.contains(&from.ip()) {
            tracing::warn!(%from, "HA channel: a connection from a host that is not a peer was closed");
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let (packets, table, published) = (Arc::clone(&packets), Arc::clone(&table), published.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = serve_backup(stream, &packets, &table, published).await {
                tracing::debug!(%from, %error, "HA channel to a backup closed");
            }
        });
    }
}

async fn serve_backup(
    mut stream: TcpStream,
    packets: &PacketShared,
    table: &TableHandle,
    mut published: watch::Receiver<Published>,
) -> std::io::Result<()> {
    if !packets.flows.sync.is_master() {
        return write_frame(&mut stream, NOT_MASTER, &[]).await;
    }
    let current = published.borrow_and_update().clone();
    write_frame(
        &mut stream,
        CONFIG,
        &[&current.generation.to_be_bytes(), current.services.as_bytes()],
    )
    .await?;
    let timeouts = table.snapshot().timeouts;
    let mut flows = 0;
    let mut writer = MessageWriter::new(0, MAX_MESSAGE_LEN);
    // Shard by shard, yielding between them: the control loop shares this thread.
    for shard in 0..packets.flows.shard_count() {
        let conns = packets.flows.export(shard, &timeouts, Millis::now());
        flows += conns.len();
        for conn in &conns {
            if !writer.push(conn) {
                write_frame(&mut stream, FLOWS, &[&writer.take()]).await?;
                writer.push(conn);
            }
        }
        tokio::task::yield_now().await;
    }
    if !writer.is_empty() {
        write_frame(&mut stream, FLOWS, &[&writer.take()]).await?;
    }
    write_frame(&mut stream, DUMP_END, &[]).await?;
    tracing::info!(flows, "full table sent to a backup");
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let current = published.borrow_and_update().clone();
                write_frame(&mut stream, CONFIG, &[&current.generation.to_be_bytes(), current.services.as_bytes()]).await?;
            }
            _ = check.tick() => {
                if !packets.flows.sync.is_master() {
                    return write_frame(&mut stream, NOT_MASTER, &[]).await;
                }
                write_frame(&mut stream, HEARTBEAT, &[]).await?;
            }
        }
    }
}

/// The backup's side: while this director is not the master, stays connected to whichever
/// peer is, taking its services and flows. `ready` is set once the master's full dump is in,
/// or once a round of the peers found no master.
pub(crate) async fn follow(
    config: SyncConfig,
    packets: Arc<PacketShared>,
    table: Arc<TableHandle>,
    received: mpsc::Sender<Received>,
    ready: Arc<AtomicBool>,
) {
    loop {
        if packets.flows.sync.is_master() {
            ready.store(true, Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut found_master = false;
        for &peer in &config.peers {
            let address = SocketAddr::new(peer, config.port);
            match from_master(address, &packets, &table, &received, &ready).await {
                Ok(true) => {
                    found_master = true;
                    break;
                }
                Ok(false) => {}
                Err(error) => tracing::debug!(peer = %address, %error, "HA channel"),
            }
        }
        if !found_master {
            ready.store(true, Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Takes what the master at `address` sends until the connection ends; whether it was the
/// master.
async fn from_master(
    address: SocketAddr,
    packets: &PacketShared,
    table: &TableHandle,
    received: &mpsc::Sender<Received>,
    ready: &AtomicBool,
) -> std::io::Result<bool> {
    let mut stream = tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
    let mut master = false;
    let mut flows = 0usize;
    loop {
        // A master that has gone silent (its host down, its link cut) is given up.
        let (kind, payload) = match read_frame(&mut stream, MASTER_SILENCE).await {
            Ok(frame) => frame,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(master),
            Err(error) => return if master { Ok(true) } else { Err(error) },
        };
        match kind {
            NOT_MASTER => return Ok(master),
            CONFIG if payload.len() >= 8 => {
                master = true;
                let generation = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
                let services = String::from_utf8_lossy(&payload[8..]).into_owned();
                if received
                    .send(Received {
                        generation,
                        services,
                        from: address,
                    })
                    .await
                    .is_err()
                {
                    return Ok(true);
                }
            }
            FLOWS => {
                master = true;
                flows += super::link::take(&payload, 0, packets, table);
                // A full dump is many frames: the control loop shares this thread.
                tokio::task::yield_now().await;
            }
            HEARTBEAT => {}
            DUMP_END => {
                ready.store(true, Relaxed);
                tracing::info!(master = %address, flows, "full table received from the master");
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unknown frame kind {kind}"),
                ));
            }
        }
    }
}
