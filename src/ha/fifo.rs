//! Following keepalived's notify FIFO: lbd makes the FIFO if it is missing, keeps it open for
//! reading and writing (so a keepalived restart is no end of file), and publishes the role
//! each line about its instance gives. Lines are short; a longer one is dropped whole.

use std::{io, path::Path};

use tokio::{io::AsyncReadExt, sync::watch};

use super::role::{Role, role_in};

/// The longest line taken.
const MAX_LINE: usize = 4096;

/// Makes the FIFO at `path` (mode 0600) unless it exists; something else in its place is an
/// error.
pub(super) fn prepare(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "something that is not a FIFO is in the way",
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => nix::unistd::mkfifo(
            path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .map_err(io::Error::from),
        Err(error) => Err(error),
    }
}

/// Reads the FIFO at `path` until the task is dropped, sending each role `instance` is given.
pub(super) async fn follow(path: std::path::PathBuf, instance: String, roles: watch::Sender<Role>) {
    let mut fifo = match tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)
    {
        Ok(fifo) => fifo,
        Err(error) => {
            tracing::error!(fifo = %path.display(), %error, "cannot read keepalived's notify FIFO; this director stays backup");
            return;
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = match fifo.read(&mut buffer).await {
            Ok(0) => continue,
            Ok(read) => read,
            Err(error) => {
                tracing::error!(fifo = %path.display(), %error, "reading keepalived's notify FIFO failed; this director stays backup");
                let _ = roles.send(Role::Backup);
                return;
            }
        };
        pending.extend_from_slice(&buffer[..read]);
        while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(role) = role_in(&line, &instance) {
                tracing::info!(line = line.trim(), "keepalived");
                roles.send_replace(role);
            }
        }
        if pending.len() > MAX_LINE {
            tracing::warn!(fifo = %path.display(), "a line of more than {MAX_LINE} bytes in the notify FIFO was dropped");
            pending.clear();
        }
    }
}
