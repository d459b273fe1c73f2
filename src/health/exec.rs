//! The `exec` check (keepalived's MISC_CHECK with `misc_dynamic`): run a command with `{ip}`,
//! `{port}` and `{service}` substituted. Exit 0 is up at the configured weight, 1 is down,
//! 2..255 is up with weight `code − 2`. A command still running at the timeout is killed
//! with its whole process group, and the check fails.

use std::{net::SocketAddr, os::unix::process::ExitStatusExt, process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::Command;

use super::{common::Target, machine::Outcome};
use crate::{config::format_duration, table::DynamicWeight};

/// Runs `command` for `target` and judges its exit status.
pub(super) async fn check(
    command: &[String],
    target: &Target,
    address: SocketAddr,
    timeout: Duration,
) -> Outcome {
    let argv: Vec<String> = command
        .iter()
        .map(|arg| {
            arg.replace("{ip}", &address.ip().to_string())
                .replace("{port}", &address.port().to_string())
                .replace("{service}", &target.service)
        })
        .collect();
    let mut child = match Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => return Outcome::io_failure(&error, format!("cannot run {}: {error}", argv[0])),
    };
    // Until the command is reaped, dropping this (at the timeout, or when the checker stops)
    // kills its process group.
    let group = GroupKiller(child.id().and_then(|pid| i32::try_from(pid).ok()));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(error)) => return Outcome::fail(format!("cannot wait for {}: {error}", argv[0])),
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            return Outcome::fail(format!("exec killed after {}", format_duration(timeout)));
        }
    };
    group.disarm();
    match status.code() {
        Some(0) => Outcome::pass("exec exit 0").with_weight(DynamicWeight::Configured),
        Some(1) => Outcome::fail("exec exit 1"),
        Some(code) => {
            let weight = u32::try_from(code - 2).unwrap_or(0);
            Outcome::pass(format!("exec exit {code}")).with_weight(DynamicWeight::Fixed(weight))
        }
        None => Outcome::fail(format!(
            "exec killed by signal {}",
            status.signal().unwrap_or_default()
        )),
    }
}

/// Kills a command's process group when dropped, unless disarmed once the command exited.
struct GroupKiller(Option<i32>);

impl GroupKiller {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
    }
}
