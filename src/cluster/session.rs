//! The director's session with etcd: connect, read everything under the prefix, watch from
//! that revision, keep this director's registration alive; on any failure start over after
//! a pause, so the table is read whole again (nothing missed while away, even across a
//! compaction).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use etcd_client::{Client, EventType, PutOptions, WatchOptions};
use tokio::sync::{mpsc, watch};

use super::{Event, KeyChange, Keys, REQUEST_TIMEOUT, Stored, connect, read_all};
use crate::{api::Director, config::ClusterConfig};

/// The first pause before connecting again; doubled up to [`MOST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MOST_PAUSE: Duration = Duration::from_secs(4);

/// Everything the session task owns.
pub(super) struct Session {
    pub(super) config: ClusterConfig,
    pub(super) keys: Keys,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) client: watch::Sender<Option<Client>>,
    pub(super) info: watch::Receiver<Director>,
    pub(super) connected: Arc<AtomicBool>,
}

impl Session {
    /// Runs until the director stops.
    pub(super) async fn run(mut self) {
        let mut pause = FIRST_PAUSE;
        // Whether the loss has been logged: once per outage, not once per attempt.
        let mut told = false;
        loop {
            let outcome = self.connected_once().await;
            self.connected.store(false, Relaxed);
            self.client.send_replace(None);
            let (why, was_up) = match outcome {
                Ok(()) => return,
                Err(failure) => failure,
            };
            if was_up {
                pause = FIRST_PAUSE;
                told = false;
            }
            if !told {
                tracing::error!(
                    endpoints = ?self.config.etcd,
                    "the cluster store (etcd) cannot be reached: {why}; serving the last table, \
                     refusing changes, retrying"
                );
                told = true;
            } else {
                tracing::debug!("etcd still unreachable: {why}");
            }
            if self.events.send(Event::Lost(why)).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MOST_PAUSE);
        }
    }

    /// One connection: read, watch, register, until something fails (why, and whether the
    /// store had answered) or the director stops (`Ok`).
    async fn connected_once(&mut self) -> Result<(), (String, bool)> {
        let fail = |why: String| (why, false);
        let mut client = connect(&self.config.etcd).await.map_err(fail)?;
        let (revision, entries) = read_all(&mut client, &self.keys).await.map_err(fail)?;
        let ttl = self.config.ttl.as_secs().max(1) as i64;
        let lease = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_grant(ttl, None))
            .await
            .map_err(|_| fail("granting the lease timed out".to_owned()))?
            .map_err(|error| fail(error.to_string()))?
            .id();
        let (mut keeper, mut kept) = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(lease))
            .await
            .map_err(|_| fail("keeping the lease alive timed out".to_owned()))?
            .map_err(|error| fail(error.to_string()))?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_progress_notify();
        let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, client.watch(self.keys.all(), Some(options)))
            .await
            .map_err(|_| fail("starting the watch timed out".to_owned()))?
            .map_err(|error| fail(error.to_string()))?;
        if self
            .events
            .send(Event::Snapshot { revision, entries })
            .await
            .is_err()
        {
            return Ok(());
        }
        self.client.send_replace(Some(client.clone()));
        self.connected.store(true, Relaxed);
        tracing::info!(revision, endpoints = ?self.config.etcd, "cluster store (etcd) connected: table read");
        let up = |why: String| (why, true);
        self.register(&mut client, lease).await.map_err(up)?;
        let mut renew = tokio::time::interval(self.config.ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last renewal answered: the lease ends if none does within its time to live.
        let mut answered = tokio::time::Instant::now();
        loop {
            tokio::select! {
                message = stream.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => return Err(up("the watch ended".to_owned())),
                        Err(error) => return Err(up(format!("the watch failed: {error}"))),
                    };
                    if response.canceled() {
                        return Err(up(format!("the watch was cancelled: {}", response.cancel_reason())));
                    }
                    let revision = response.header().map_or(0, |header| header.revision());
                    let changes: Vec<KeyChange> = response
                        .events()
                        .iter()
                        .filter_map(|event| {
                            let kv = event.kv()?;
                            let key = std::str::from_utf8(kv.key()).ok()?.to_owned();
                            let value = (event.event_type() == EventType::Put).then(|| Stored {
                                value: kv.value().to_vec(),
                                mod_revision: kv.mod_revision(),
                            });
                            Some(KeyChange { key, value })
                        })
                        .collect();
                    if self.events.send(Event::Changes { revision, changes }).await.is_err() {
                        return Ok(());
                    }
                }
                _ = renew.tick() => {
                    if answered.elapsed() > self.config.ttl {
                        return Err(up("the lease was not renewed in time".to_owned()));
                    }
                    if let Err(error) = keeper.keep_alive().await {
                        return Err(up(format!("renewing the lease failed: {error}")));
                    }
                }
                renewal = kept.message() => match renewal {
                    Ok(Some(renewal)) if renewal.ttl() > 0 => answered = tokio::time::Instant::now(),
                    Ok(Some(_)) => return Err(up("the lease expired".to_owned())),
                    Ok(None) => return Err(up("the lease renewals ended".to_owned())),
                    Err(error) => return Err(up(format!("renewing the lease failed: {error}"))),
                },
                changed = self.info.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.register(&mut client, lease).await.map_err(up)?;
                }
            }
        }
    }

    /// Writes this director's registration under `lease`.
    async fn register(&mut self, client: &mut Client, lease: i64) -> Result<(), String> {
        let info = self.info.borrow_and_update().clone();
        let value = serde_json::to_vec(&info).unwrap_or_default();
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.put(
                self.keys.director(&self.config.node),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await
        .map_err(|_| "registering this director timed out".to_owned())?
        .map_err(|error| format!("registering this director failed: {error}"))?;
        Ok(())
    }
}
