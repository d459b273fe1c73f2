//! What the multi-namespace tests (HA, cluster, ECMP) share: processes started in a namespace
//! with their output in a log file, waiting for a condition with the logs shown when it does
//! not come, and deleting the namespaces (and the host-setup journals their lbd left).

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::lvs::Running;

/// Runs `command` in `namespace`, its output appended to `log`.
pub(crate) fn spawn_logged(namespace: &str, log: &Path, command: &[&str]) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", namespace])
        .args(command)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Running(child)
}

/// Runs `command` in `namespace` and waits for it: (exit code, stdout, stderr).
pub(crate) fn run_in(namespace: &str, command: &[&str]) -> (i32, String, String) {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace])
        .args(command)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `lbadm` with `args` in `namespace`, against the admin API on 127.0.0.1:9900 there.
pub(crate) fn lbadm_in(namespace: &str, args: &[&str]) -> (i32, String, String) {
    let mut command = vec![env!("CARGO_BIN_EXE_lbadm"), "--admin", "127.0.0.1:9900"];
    command.extend_from_slice(args);
    run_in(namespace, &command)
}

/// Polls `done` until it holds; after `limit`, fails with the last lines of each of `logs`
/// (files in `dir`).
pub(crate) fn wait_or_show(
    what: &str,
    limit: Duration,
    dir: &Path,
    logs: &[&str],
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            let tails: String = logs
                .iter()
                .map(|log| {
                    let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(12).collect();
                    format!(
                        "--- {log}\n{}\n",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!("{what} within {limit:?}\n{tails}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Deletes `namespaces`, and first the host-setup journals an lbd killed in `with_lbd` left
/// under /run/lbd (they are named after the namespace's inode).
pub(crate) fn delete_namespaces(namespaces: &[String], with_lbd: &[String]) {
    use std::os::unix::fs::MetadataExt;
    for namespace in with_lbd {
        if let Ok(metadata) = std::fs::metadata(format!("/run/netns/{namespace}"))
            && let Ok(entries) = std::fs::read_dir("/run/lbd")
        {
            let suffix = format!("-net{}", metadata.ino());
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(&suffix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    for namespace in namespaces {
        let _ = Command::new("ip").args(["netns", "del", namespace]).output();
    }
}
