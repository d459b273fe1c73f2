//! The director's route health injection (`dataplane.announce`): the control loop says which
//! VIPs it wants announced; one task adds and removes their routes with `ip`, off the control
//! loop, the latest wish winning, and retries what failed.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use crate::{config::AnnounceConfig, lvs::inject};

/// How long one `ip` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before trying again what failed.
const RETRY: Duration = Duration::from_secs(1);

/// The running announcer.
#[derive(Debug)]
pub(crate) struct Announcer {
    wanted: watch::Sender<BTreeSet<IpAddr>>,
    announced: watch::Receiver<BTreeSet<IpAddr>>,
    /// How long to go on forwarding after withdrawing, at shutdown.
    pub(crate) withdraw_wait: Duration,
    _task: AbortOnDropHandle<()>,
}

impl Announcer {
    /// Starts announcing through `tun` as `config` says (nothing yet).
    pub(crate) fn start(config: &AnnounceConfig, tun: &str) -> Self {
        let (wanted, wishes) = watch::channel(BTreeSet::new());
        let (report, announced) = watch::channel(BTreeSet::new());
        let task = tokio::spawn(run(wishes, report, tun.to_owned(), config.table));
        Self {
            wanted,
            announced,
            withdraw_wait: config.withdraw_wait,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// From now on, announce exactly `vips`.
    pub(crate) fn want(&self, vips: BTreeSet<IpAddr>) {
        self.wanted.send_if_modified(|current| {
            let changed = *current != vips;
            *current = vips;
            changed
        });
    }

    /// Withdraws every VIP and waits until they are withdrawn (at most `limit`).
    pub(crate) async fn withdraw_all(&mut self, limit: Duration) -> bool {
        self.want(BTreeSet::new());
        tokio::time::timeout(limit, self.announced.wait_for(BTreeSet::is_empty))
            .await
            .is_ok_and(|done| done.is_ok())
    }
}

/// Makes the routes follow the wishes until the director stops.
async fn run(
    mut wishes: watch::Receiver<BTreeSet<IpAddr>>,
    report: watch::Sender<BTreeSet<IpAddr>>,
    tun: String,
    table: u32,
) {
    let mut announced = BTreeSet::new();
    loop {
        let wanted = wishes.borrow_and_update().clone();
        let mut failed = false;
        for &vip in wanted.difference(&announced.clone()) {
            match ip(&inject::announce_args(vip, &tun, table)).await {
                Ok(()) => {
                    tracing::info!(%vip, table, "VIP announced (route health injection)");
                    announced.insert(vip);
                }
                Err(why) => {
                    tracing::warn!(%vip, table, "the VIP's route could not be added (retrying): {why}");
                    failed = true;
                }
            }
        }
        for &vip in announced.clone().difference(&wanted) {
            match ip(&inject::withdraw_args(vip, &tun, table)).await {
                Ok(()) => {
                    tracing::info!(%vip, table, "VIP withdrawn (route health injection)");
                    announced.remove(&vip);
                }
                // Gone with the device already, or removed by hand: withdrawn either way.
                Err(why) if why.contains("No such process") || why.contains("Cannot find device") => {
                    announced.remove(&vip);
                }
                Err(why) => {
                    tracing::warn!(%vip, table, "the VIP's route could not be removed (retrying): {why}");
                    failed = true;
                }
            }
        }
        report.send_replace(announced.clone());
        if failed {
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                changed = wishes.changed() => if changed.is_err() { return },
            }
        } else if wishes.changed().await.is_err() {
            return;
        }
    }
}

/// Runs `ip args`; what it printed on failure.
async fn ip(args: &[String]) -> Result<(), String> {
    let output = tokio::time::timeout(
        COMMAND_TIMEOUT,
        tokio::process::Command::new("ip")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| {
        format!(
            "`ip {}` took more than {}s",
            args.join(" "),
            COMMAND_TIMEOUT.as_secs()
        )
    })?
    .map_err(|error| format!("cannot run ip: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
