//! What a configuration needs of the host, checked without changing anything: the files it
//! names (token, state file and their directories, the admin socket's and the keepalived
//! FIFO's directories), the sync interface, and for the packet data plane the server-side interface, `/dev/net/tun` and `ip`. `lbd --check` and
//! every start run it, so a config that cannot start is refused naming the missing thing
//! ("interface br9 does not exist"), not with the step that would have failed.

use std::path::Path;

use crate::config::{AdminListen, Config, DataplaneSetup};

/// Every problem found, each a sentence naming what is missing; empty when the host has all
/// the configuration needs. (Whether the state file's contents load is [`check`]'s.)
pub fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(admin) = &config.admin {
        if let Some(token) = &admin.token_file {
            match std::fs::read_to_string(token) {
                Ok(text) if text.trim().is_empty() => {
                    problems.push(format!("admin.token_file {} is empty", token.display()));
                }
                Ok(_) => {}
                Err(error) => problems.push(format!("admin.token_file {}: {error}", token.display())),
            }
        }
        if let AdminListen::Unix(path) = &admin.listen {
            directory_exists(path, "admin.listen socket", &mut problems);
        }
    }
    if let Some(path) = &config.state_file {
        directory_exists(path, "state_file", &mut problems);
    }
    if let Some(ha) = &config.ha {
        directory_exists(&ha.notify_fifo, "ha.notify_fifo", &mut problems);
        if let Some(sync) = &ha.sync
            && !Path::new("/sys/class/net").join(&sync.interface).exists()
        {
            problems.push(format!(
                "ha.sync.interface: interface {} does not exist",
                sync.interface
            ));
        }
    }
    problems.extend(dataplane_problems(config));
    problems
}

/// What the packet data plane of `config` needs of the host and lacks (checked again at every
/// reload and admin change: the host may have changed since the start).
pub fn dataplane_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(dataplane) = config
        .dataplane
        .as_ref()
        .filter(|_| crate::lvs::plane::needed(config))
    {
        if let Some(interface) = &dataplane.server_interface
            && !Path::new("/sys/class/net").join(interface).exists()
        {
            problems.push(format!(
                "dataplane.server_interface: interface {interface} does not exist"
            ));
        }
        if !Path::new("/dev/net/tun").exists() {
            problems.push("dataplane: /dev/net/tun does not exist (load the tun module, or give a container the device)".to_owned());
        }
        if dataplane.setup == DataplaneSetup::Auto && !program_exists("ip") {
            problems.push("dataplane.setup auto runs `ip`, which is not installed (iproute2)".to_owned());
        }
    }
    problems
}

/// What `lbd --check` checks of the host: [`problems`], and that the state file, when there
/// is one, holds services this configuration accepts (lbd would start from them).
pub fn check(config: &Config) -> Vec<String> {
    let mut found = problems(config);
    if let Some(path) = &config.state_file
        && let Err(error) = super::state_file::load(path, config)
    {
        found.push(error.to_string());
    }
    found
}

/// Notes a problem if the directory that would hold `path` does not exist.
fn directory_exists(path: &Path, what: &str, problems: &mut Vec<String>) {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        problems.push(format!(
            "{what} {}: directory {} does not exist",
            path.display(),
            directory.display()
        ));
    }
}

/// Whether `name` is an executable file in a directory of `$PATH`.
fn program_exists(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|directory| {
            std::fs::metadata(directory.join(name))
                .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn missing_things_are_named() {
        let config = config::parse(
            "admin: { listen: 'unix:/nonexistent-dir/lbd.sock', token_file: /nonexistent-token }\nstate_file: /nonexistent-dir/state.yaml\ndataplane: { tun: lbtun0, server_interface: br9zz }\nservices:\n  - { protocol: tcp, listen: '192.0.2.1:80', forward: nat, reals: [{address: '10.0.0.1'}] }\n",
            "t",
        )
        .unwrap();
        let found = problems(&config).join("\n");
        for expected in [
            "admin.token_file /nonexistent-token",
            "admin.listen socket /nonexistent-dir/lbd.sock: directory /nonexistent-dir does not exist",
            "state_file /nonexistent-dir/state.yaml: directory /nonexistent-dir does not exist",
            "interface br9zz does not exist",
        ] {
            assert!(found.contains(expected), "{expected} in:\n{found}");
        }
        assert!(problems(&config::parse("services: []\n", "t").unwrap()).is_empty());
    }
}
