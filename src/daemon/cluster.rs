//! A director of a cluster (`cluster:`): its service table is the one stored in etcd. Each
//! snapshot or watch response that touches the table is applied as a reload applies a file
//! (all or nothing); admin changes are computed here, checked by the config file's rules, and
//! written to etcd as a guarded transaction; the admin client is answered once this
//! director's watch has brought the change back and it is applied here.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{
    Director,
    control::{Change, ControlError, Reply, edited},
};
use crate::{
    api,
    cluster::{self, Cluster, CommitError, Event},
    config::{Config, ServiceKey},
};

/// How long an admin client waits for its committed change to come back through the watch.
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// Committed changes waiting to be seen here, at most (admin requests in flight are fewer).
const COMMITTED_QUEUE: usize = 1024;

/// An admin change written to etcd, waiting for this director to see it.
#[derive(Debug)]
pub(crate) struct Waiter {
    revision: i64,
    key: Option<ServiceKey>,
    reply: Reply,
    client: String,
    what: String,
    deadline: Instant,
}

/// The cluster side of a director: the session with etcd, and what it did with the table.
#[derive(Debug)]
pub(crate) struct ClusterSide {
    pub(crate) cluster: Cluster,
    /// The revision of the table in force (its last change applied here).
    table_revision: i64,
    /// Why the stored table is refused, while it is.
    refused: Option<String>,
    /// The last revision whose table could not be applied here, and why.
    failed: Option<(i64, String)>,
    /// Registrations left out of the table (logged when they change).
    skipped: Vec<String>,
    /// Why etcd cannot be reached, while it cannot.
    unreachable: Option<String>,
    waiting: Vec<Waiter>,
    committed_in: mpsc::Sender<Waiter>,
    committed: mpsc::Receiver<Waiter>,
}

/// What the cluster side asks of the control loop.
pub(crate) enum ClusterInput {
    /// The session with etcd reported.
    Event(Event),
    /// An admin change was committed.
    Committed(Waiter),
}

impl ClusterSide {
    /// The cluster side of a new director, its session started.
    pub(crate) fn start(config: &crate::config::ClusterConfig, info: api::Director) -> Self {
        let (committed_in, committed) = mpsc::channel(COMMITTED_QUEUE);
        crate::telemetry::set_cluster(false, 0);
        Self {
            cluster: cluster::start(config, info),
            table_revision: 0,
            refused: None,
            failed: None,
            skipped: Vec::new(),
            unreachable: None,
            waiting: Vec::new(),
            committed_in,
            committed,
        }
    }

    /// The next input (never, without a cluster).
    pub(crate) async fn next(side: &mut Option<Self>) -> ClusterInput {
        let Some(side) = side else {
            return std::future::pending().await;
        };
        tokio::select! {
            Some(event) = side.cluster.events.recv() => ClusterInput::Event(event),
            Some(waiter) = side.committed.recv() => ClusterInput::Committed(waiter),
            else => std::future::pending().await,
        }
    }

    /// `lbadm status`'s cluster part.
    pub(crate) fn status(
        &self,
        config: &crate::config::ClusterConfig,
        services: &[crate::config::ServiceConfig],
    ) -> api::ClusterStatus {
        api::ClusterStatus {
            node: config.node.clone(),
            prefix: config.prefix.clone(),
            etcd: config.etcd.clone(),
            connected: self.cluster.connected(),
            revision: self.cluster.view.revision,
            table_revision: self.table_revision,
            directors: self.cluster.view.directors().len(),
            registered_reals: services
                .iter()
                .flat_map(|service| &service.reals)
                .filter(|real| real.registered)
                .count(),
            refused: self.refused.clone(),
            unreachable: self.unreachable.clone().filter(|_| !self.cluster.connected()),
        }
    }
}

impl Director {
    /// Acts on what the cluster side reports.
    pub(crate) fn on_cluster(&mut self, input: ClusterInput) {
        let Some(side) = self.cluster.as_mut() else {
            return;
        };
        match input {
            ClusterInput::Committed(waiter) => side.waiting.push(waiter),
            ClusterInput::Event(Event::Lost(why)) => side.unreachable = Some(why),
            ClusterInput::Event(Event::Snapshot { revision, entries }) => {
                side.cluster.view.reset(revision, entries);
                self.take_cluster_table();
            }
            ClusterInput::Event(Event::Changes { revision, changes }) => {
                let keys = side.cluster.view.keys().clone();
                let touches = changes.iter().any(|change| keys.holds_table(&change.key));
                side.cluster.view.apply(revision, changes);
                if touches {
                    self.take_cluster_table();
                }
            }
        }
        if let Some(side) = &self.cluster {
            crate::telemetry::set_cluster(side.cluster.connected(), side.table_revision);
        }
        self.answer_waiting(false);
    }

    /// Applies the stored table if it differs from the one in force; a table that fails the
    /// config file's rules, or cannot be applied here, leaves the one in force as it is.
    fn take_cluster_table(&mut self) {
        let Some(side) = self.cluster.as_mut() else {
            return;
        };
        let revision = side.cluster.view.revision;
        let (services, skipped) = match side.cluster.view.services(&self.config) {
            Ok(table) => table,
            Err(message) => {
                if side.refused.as_ref() != Some(&message) {
                    tracing::error!(
                        revision,
                        "the cluster's table is refused, the one in force stays: {message}"
                    );
                    crate::telemetry::count_cluster_change(false);
                }
                side.refused = Some(message);
                return;
            }
        };
        side.refused = None;
        for why in skipped.iter().filter(|why| !side.skipped.contains(why)) {
            tracing::warn!("a registered real is left out: {why}");
        }
        side.skipped = skipped;
        if services == self.config.services {
            side.table_revision = revision;
            self.register_in_cluster();
            return;
        }
        let config = Config {
            services,
            ..self.config.clone_without_services()
        };
        match self.apply(config) {
            Ok(summary) => {
                tracing::info!(
                    revision,
                    added = summary.added,
                    removed = summary.removed,
                    changed = summary.changed,
                    "the cluster's table applied"
                );
                crate::telemetry::count_cluster_change(true);
                if let Some(side) = self.cluster.as_mut() {
                    side.table_revision = revision;
                    side.failed = None;
                }
                self.register_in_cluster();
            }
            Err(error) => {
                let why = error.to_string();
                if let Some(side) = self.cluster.as_mut()
                    && side.failed.as_ref().is_none_or(|(_, before)| *before != why)
                {
                    tracing::error!(
                        revision,
                        "the cluster's table could not be applied here, the one in force stays \
                         (tried again every 2 s): {why}"
                    );
                    crate::telemetry::count_cluster_change(false);
                    side.failed = Some((revision, why));
                }
            }
        }
    }

    /// Updates this director's registration (its table revision and role).
    pub(crate) fn register_in_cluster(&self) {
        let Some(side) = &self.cluster else {
            return;
        };
        let info = self.cluster_registration(side.table_revision);
        side.cluster.info.send_if_modified(|current| {
            let changed = *current != info;
            *current = info;
            changed
        });
    }

    /// What this director registers in the cluster.
    pub(crate) fn cluster_registration(&self, revision: i64) -> api::Director {
        api::Director {
            node: self
                .config
                .cluster
                .as_ref()
                .map(|cluster| cluster.node.clone())
                .unwrap_or_default(),
            revision,
            role: match (&self.config.ha, self.master) {
                (None, _) => "active",
                (Some(_), true) => "master",
                (Some(_), false) => "backup",
            }
            .to_owned(),
            admin: self.config.admin.as_ref().and_then(|admin| match admin.listen {
                crate::config::AdminListen::Tcp(address) => Some(address.to_string()),
                crate::config::AdminListen::Unix(_) => None,
            }),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Writes an admin change to etcd; `reply` is answered once it is applied here (or
    /// refused, or not seen in time).
    pub(crate) fn commit_change(&mut self, change: Change, client: String, reply: Reply) {
        let what = change.to_string();
        let replaces = matches!(change, Change::ReplaceServices(_));
        let Some(side) = self.cluster.as_ref() else {
            return;
        };
        if let Some(refused) = side.refused.as_ref().filter(|_| !replaces) {
            let _ = reply.send(Err(ControlError::Invalid(format!(
                "the cluster's stored table is refused ({refused}); fix or remove that key in \
                 etcd, or replace the whole table with `lbadm restore`"
            ))));
            return;
        }
        let (config, key) = match edited(&self.config, change) {
            Ok(edited) => edited,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let writes = side.cluster.view.writes(&config.services);
        if writes.is_empty() {
            let answer = if config.services == self.config.services {
                Ok(self.service_answer(key))
            } else {
                Err(ControlError::Invalid(
                    "the change touches only reals that registered themselves (lbd register); \
                     they change where they register"
                        .to_owned(),
                ))
            };
            let _ = reply.send(answer);
            return;
        }
        let etcd = match side.cluster.client() {
            Ok(etcd) => etcd,
            Err(error) => {
                let _ = reply.send(Err(ControlError::Store(error.to_string())));
                return;
            }
        };
        let committed = side.committed_in.clone();
        tokio::spawn(async move {
            match cluster::commit(etcd, writes).await {
                Ok(revision) => {
                    let waiter = Waiter {
                        revision,
                        key,
                        reply,
                        client,
                        what,
                        deadline: Instant::now() + APPLY_WAIT,
                    };
                    if let Err(mpsc::error::SendError(waiter)) = committed.send(waiter).await {
                        let _ = waiter.reply.send(Err(ControlError::Store(
                            "the change was written to etcd, but this director is stopping".to_owned(),
                        )));
                    }
                }
                Err(error @ CommitError::Conflict) => {
                    let _ = reply.send(Err(ControlError::Conflict(error.to_string())));
                }
                Err(error) => {
                    let _ = reply.send(Err(ControlError::Store(error.to_string())));
                }
            }
        });
    }

    /// Every 2 s (the rate clock): tries again a stored table that could not be applied here (an address
    /// that was in use may be free now), and answers the admin clients that waited too long.
    pub(crate) fn cluster_tick(&mut self) {
        if self.cluster.as_ref().is_some_and(|side| side.failed.is_some()) {
            self.take_cluster_table();
        }
        self.answer_waiting(true);
    }

    /// Answers the admin clients whose changes this director has now seen; with `expire`,
    /// also those that waited too long.
    fn answer_waiting(&mut self, expire: bool) {
        let Some(side) = self.cluster.as_mut() else {
            return;
        };
        let seen = side.cluster.view.revision;
        let now = Instant::now();
        let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut side.waiting)
            .into_iter()
            .partition(|waiter| waiter.revision <= seen || expire && now >= waiter.deadline);
        side.waiting = waiting;
        let failed = side.failed.clone();
        let refused = side.refused.clone();
        for waiter in ready {
            let outcome = if waiter.revision > seen {
                Err(ControlError::Store(format!(
                    "written to etcd at revision {}, but not seen by this director within {}s \
                     (its watch lags); every director applies it when its watch brings it",
                    waiter.revision,
                    APPLY_WAIT.as_secs()
                )))
            } else if let Some(refused) = &refused {
                Err(ControlError::Invalid(format!(
                    "written to etcd at revision {}, but the cluster's table is refused: {refused}",
                    waiter.revision
                )))
            } else if let Some((_, why)) = failed.as_ref().filter(|(at, _)| *at >= waiter.revision) {
                Err(ControlError::Failed(format!(
                    "written to etcd at revision {}, but not applied on this director: {why}",
                    waiter.revision
                )))
            } else {
                tracing::info!(
                    client = waiter.client,
                    revision = waiter.revision,
                    "admin change written to the cluster: {}",
                    waiter.what
                );
                Ok(self.service_answer(waiter.key))
            };
            let _ = waiter.reply.send(outcome);
        }
    }

    /// The directors registered in the cluster.
    pub(crate) fn directors(&self) -> Result<Vec<api::Director>, ControlError> {
        self.cluster
            .as_ref()
            .map(|side| side.cluster.view.directors())
            .ok_or_else(|| {
                ControlError::Invalid(
                    "this director is not part of a cluster (its config has no `cluster:`)".to_owned(),
                )
            })
    }
}
