//! Active/backup directors: the role keepalived gives this one (read from its notify FIFO),
//! and flow sync with the peers in the IPVS sync protocol. The control loop acts on the role
//! (host setup, announcements); the sync tasks move flows between the packet planes.

mod channel;
mod fifo;
mod link;
mod role;

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
};

use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::task::AbortOnDropHandle;

pub(crate) use self::{
    channel::{Published, Received},
    role::Role,
};
use crate::{config::HaConfig, lvs::plane::PacketShared, table::TableHandle};

/// HA could not start.
#[derive(Debug, Error)]
pub enum HaError {
    /// The notify FIFO could not be made.
    #[error("ha.notify_fifo {path}: {source}")]
    Fifo {
        /// The path.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
    /// A sync socket could not be opened.
    #[error("ha.sync on {interface}: {source}")]
    Sync {
        /// The interface.
        interface: String,
        /// What the OS said.
        source: io::Error,
    },
}

/// The running HA side of a director: its role as keepalived last gave it, and the sync tasks.
#[derive(Debug)]
pub(crate) struct Ha {
    /// The role, as keepalived last gave it (backup until told).
    pub(crate) roles: watch::Receiver<Role>,
    /// The services this director publishes to its backups (while master).
    pub(crate) published: watch::Sender<Published>,
    /// Services received from the master, to apply.
    pub(crate) received: mpsc::Receiver<Received>,
    /// Whether this director may take over: it holds the master's table, or no peer is
    /// master (always, without peers).
    ready: Arc<AtomicBool>,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

impl Ha {
    /// Whether this director may take over (keepalived's check asks `lbadm status --ready`).
    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Relaxed)
    }
}

/// Starts following keepalived and, with `ha.sync`, the sync sender and receiver. Must run
/// inside the control plane's tokio runtime.
pub(crate) fn start(
    config: &HaConfig,
    packets: &Arc<PacketShared>,
    table: &Arc<TableHandle>,
) -> Result<Ha, HaError> {
    fifo::prepare(&config.notify_fifo).map_err(|source| HaError::Fifo {
        path: config.notify_fifo.display().to_string(),
        source,
    })?;
    let (sender, roles) = watch::channel(Role::Backup);
    let (published, published_receiver) = watch::channel(Published::default());
    let (received_sender, received) = mpsc::channel(4);
    let with_peers = config.sync.as_ref().is_some_and(|sync| !sync.peers.is_empty());
    let ready = Arc::new(AtomicBool::new(!with_peers));
    let mut tasks = vec![AbortOnDropHandle::new(tokio::spawn(fifo::follow(
        config.notify_fifo.clone(),
        config.instance.clone(),
        sender,
    )))];
    if let Some(sync) = &config.sync {
        let failed = |source| HaError::Sync {
            interface: sync.interface.clone(),
            source,
        };
        let outgoing = link::sender_socket(sync).map_err(failed)?;
        let incoming = link::receiver_socket(sync).map_err(failed)?;
        if with_peers {
            let listener = channel::listener(sync).map_err(failed)?;
            tasks.push(AbortOnDropHandle::new(tokio::spawn(channel::serve(
                listener,
                sync.clone(),
                Arc::clone(packets),
                Arc::clone(table),
                published_receiver,
            ))));
            tasks.push(AbortOnDropHandle::new(tokio::spawn(channel::follow(
                sync.clone(),
                Arc::clone(packets),
                Arc::clone(table),
                received_sender,
                Arc::clone(&ready),
            ))));
        }
        tasks.push(AbortOnDropHandle::new(tokio::spawn(link::send(
            outgoing,
            sync.clone(),
            Arc::clone(packets),
        ))));
        tasks.push(AbortOnDropHandle::new(tokio::spawn(link::receive(
            incoming,
            sync.clone(),
            Arc::clone(packets),
            Arc::clone(table),
        ))));
    }
    Ok(Ha {
        roles,
        published,
        received,
        ready,
        _tasks: tasks,
    })
}
