//! Several directors sharing one service table through etcd (`cluster:`), and real servers
//! that register themselves in it (`lbd register`).
//!
//! The table lives under the cluster's prefix, one key per service (the `keys` module). Each director
//! reads it whole, then watches from the revision of that read, so no change falls between
//! the two; the control loop applies each watch response as a reload applies a file (all or
//! nothing). Admin changes are written as etcd transactions guarded by the revision of every
//! key they touch, so a change computed from a stale view is refused, not applied over a
//! newer one; they reach every director, this one included, through the watch. Each director
//! registers itself under a lease (`P/directors/NODE`) that ends when it stops renewing it.
//! When etcd cannot be reached (or has no quorum) a director keeps its last table, refuses
//! changes, and reads everything again once etcd answers.

mod keys;
pub mod register;
mod session;
mod view;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::task::AbortOnDropHandle;

pub(crate) use self::{
    keys::Keys,
    view::{KeyChange, Stored, View, Write},
};
use crate::{api::Director, config::ClusterConfig};

/// How long one etcd request may take before the store counts as unreachable.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Watch responses waiting for the control loop at most; the session waits when it is full.
const EVENT_QUEUE: usize = 256;

/// What the session with etcd tells the control loop.
#[derive(Debug)]
pub(crate) enum Event {
    /// Everything under the prefix, read at `revision` (after every (re)connection).
    Snapshot {
        /// The revision of the read.
        revision: i64,
        /// Every key and value.
        entries: Vec<(String, Stored)>,
    },
    /// One watch response's changes, which bring the view to `revision`.
    Changes {
        /// The revision after them.
        revision: i64,
        /// The changes, in order.
        changes: Vec<KeyChange>,
    },
    /// etcd cannot be reached, or has no leader; the view stays as it was.
    Lost(String),
}

/// A change could not be written to etcd; nothing was written.
#[derive(Debug, Error)]
pub enum CommitError {
    /// A key the change touches was changed by someone else since this director read it.
    #[error(
        "the cluster's table changed while this change was made (another change came first); \
         nothing was written: look at the table again and repeat the change if it still applies"
    )]
    Conflict,
    /// etcd could not be reached.
    #[error(
        "the cluster store (etcd) cannot be reached: {0}; the change was refused and the table in force stays"
    )]
    Unreachable(String),
}

/// The running cluster side of a director.
pub(crate) struct Cluster {
    /// What the session with etcd reports, for the control loop.
    pub(crate) events: mpsc::Receiver<Event>,
    /// This director's registration; the session writes each new value.
    pub(crate) info: watch::Sender<Director>,
    /// The keys as of the last event taken.
    pub(crate) view: View,
    client: watch::Receiver<Option<Client>>,
    connected: Arc<AtomicBool>,
    _session: AbortOnDropHandle<()>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("revision", &self.view.revision)
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Whether etcd answers now.
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// A client for a transaction, while etcd answers.
    pub(crate) fn client(&self) -> Result<Client, CommitError> {
        self.client
            .borrow()
            .clone()
            .filter(|_| self.connected())
            .ok_or_else(|| CommitError::Unreachable("not connected".to_owned()))
    }
}

/// Starts the session with etcd: it connects, reads, watches and registers this director,
/// and reconnects for as long as the director runs. Must run inside a tokio runtime.
pub(crate) fn start(config: &ClusterConfig, info: Director) -> Cluster {
    let (events_in, events) = mpsc::channel(EVENT_QUEUE);
    let (client_in, client) = watch::channel(None);
    let (info, info_out) = watch::channel(info);
    let connected = Arc::new(AtomicBool::new(false));
    let session = session::Session {
        config: config.clone(),
        keys: Keys::new(&config.prefix),
        events: events_in,
        client: client_in,
        info: info_out,
        connected: Arc::clone(&connected),
    };
    Cluster {
        events,
        info,
        view: View::new(Keys::new(&config.prefix)),
        client,
        connected,
        _session: AbortOnDropHandle::new(tokio::spawn(session.run())),
    }
}

/// Why `lbd --check` could not take the cluster's stored table.
#[derive(Debug, Error)]
pub enum StoredError {
    /// etcd could not be read (the config is not to blame).
    #[error("etcd ({endpoints}) cannot be read: {why}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What failed.
        why: String,
    },
    /// The stored table fails the config file's rules (the message names the key).
    #[error("{0}")]
    Refused(String),
}

/// The table stored for `config`'s cluster, checked as a director would take it (`lbd
/// --check`): its revision, the services (registered reals included) and the registrations
/// left out.
pub async fn stored_table(
    config: &crate::config::Config,
) -> Result<(i64, Vec<crate::config::ServiceConfig>, Vec<String>), StoredError> {
    let Some(cluster) = &config.cluster else {
        return Err(StoredError::Refused("the config has no `cluster:`".to_owned()));
    };
    let unreachable = |why: String| StoredError::Unreachable {
        endpoints: cluster.etcd.join(", "),
        why,
    };
    let keys = Keys::new(&cluster.prefix);
    let mut client = connect(&cluster.etcd).await.map_err(unreachable)?;
    let (revision, entries) = read_all(&mut client, &keys).await.map_err(unreachable)?;
    let mut view = View::new(keys);
    view.reset(revision, entries);
    let (services, skipped) = view.services(config).map_err(StoredError::Refused)?;
    Ok((revision, services, skipped))
}

/// Connects to one of `endpoints` that answers, trying them in turn from the one after the
/// last tried (so a session that starts over moves on from a member that failed it). One
/// member at a time: a client balanced over several keeps sending to a dead one.
pub(crate) async fn connect(endpoints: &[String]) -> Result<Client, String> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    let mut failures = Vec::new();
    for _ in 0..endpoints.len() {
        let endpoint = &endpoints[NEXT.fetch_add(1, Relaxed) % endpoints.len()];
        let attempt = async {
            let mut client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(|error| error.to_string())?;
            client.status().await.map_err(|error| error.to_string())?;
            Ok::<_, String>(client)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(why)) => failures.push(format!("{endpoint}: {why}")),
            Err(_) => failures.push(format!("{endpoint}: no answer in {}s", REQUEST_TIMEOUT.as_secs())),
        }
    }
    Err(failures.join("; "))
}

/// Reads every key under `keys`' prefix: the revision of the read and the entries.
pub(crate) async fn read_all(
    client: &mut Client,
    keys: &Keys,
) -> Result<(i64, Vec<(String, Stored)>), String> {
    let response = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.get(keys.all(), Some(etcd_client::GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| "reading the table timed out".to_owned())?
    .map_err(|error| error.to_string())?;
    let revision = response.header().map_or(0, |header| header.revision());
    let entries = response
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(kv.key()).ok()?.to_owned();
            Some((
                key,
                Stored {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                },
            ))
        })
        .collect();
    Ok((revision, entries))
}

/// Writes `writes` in one transaction, each guarded by the revision it expects: all of them
/// or none. The revision of the commit.
pub(crate) async fn commit(mut client: Client, writes: Vec<Write>) -> Result<i64, CommitError> {
    let mut compares = Vec::with_capacity(writes.len());
    let mut operations = Vec::with_capacity(writes.len());
    for write in writes {
        match write {
            Write::Put { key, value, expected } => {
                compares.push(guard(&key, expected));
                operations.push(TxnOp::put(key, value, None));
            }
            Write::Delete { key, expected } => {
                compares.push(guard(&key, expected));
                operations.push(TxnOp::delete(key, None));
            }
        }
    }
    let response = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.txn(Txn::new().when(compares).and_then(operations)),
    )
    .await
    .map_err(|_| CommitError::Unreachable("the transaction timed out".to_owned()))?
    .map_err(|error| CommitError::Unreachable(error.to_string()))?;
    if !response.succeeded() {
        return Err(CommitError::Conflict);
    }
    Ok(response.header().map_or(0, |header| header.revision()))
}

/// "`key` was last changed at `expected`" (0 = "`key` is absent").
fn guard(key: &str, expected: i64) -> Compare {
    if expected == 0 {
        Compare::version(key, CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key, CompareOp::Equal, expected)
    }
}
