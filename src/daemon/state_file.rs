//! The state file: the services table as `lbadm save` prints it, rewritten after every accepted
//! change so that runtime changes survive a restart. Written atomically (temporary file,
//! fsync, rename, fsync of the directory): a crash leaves the old file or the new one, never a
//! torn one.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::config::{self, Config, ConfigError, ServiceConfig};

/// The state file could not be read or written.
#[derive(Debug, Error)]
pub enum StateFileError {
    /// Reading failed (other than the file not existing).
    #[error("cannot read the state file {path}: {source} (fix or remove it to start from the config file)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file does not hold a valid services table.
    #[error("the state file is not valid: {0} (fix or remove it to start from the config file)")]
    Invalid(ConfigError),
    /// Writing failed; the change was not applied.
    #[error("cannot write the state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The services saved in `path`, checked as the services of `running`, or `None` if there is
/// no such file yet.
pub fn load(path: &Path, running: &Config) -> Result<Option<Vec<ServiceConfig>>, StateFileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    config::parse_services(&text, &path.display().to_string(), running)
        .map(Some)
        .map_err(StateFileError::Invalid)
}

/// Replaces `path` with `services`, atomically and durably.
pub fn store(path: &Path, services: &[ServiceConfig]) -> Result<(), StateFileError> {
    let failed = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let text = format!(
        "# lbd runtime state: the services table, rewritten after every change made through the\n\
         # admin API. `lbd` starts from it when it exists; `lbadm reload` replaces it.\n{}",
        config::services_yaml(services)
    );
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |name| name.to_string_lossy().into_owned());
    let temporary = directory.join(format!(".{name}.tmp"));
    let mut file = File::create(&temporary).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    fs::rename(&temporary, path).map_err(failed)?;
    File::open(&directory)
        .and_then(|dir| dir.sync_all())
        .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_services_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        assert!(load(&path, &Config::default()).unwrap().is_none());
        let services = config::parse(
            "services:\n  - { name: web, protocol: tcp, listen: '127.0.0.1:80', reals: [{address: '10.0.0.[1-2]:80', weight: 3}] }\n",
            "t",
        )
        .unwrap()
        .services;
        store(&path, &services).unwrap();
        assert_eq!(load(&path, &Config::default()).unwrap().unwrap(), services);
        fs::write(&path, "services: [ {").unwrap();
        let error = load(&path, &Config::default()).unwrap_err().to_string();
        assert!(error.starts_with("the state file is not valid: "), "{error}");
    }
}
