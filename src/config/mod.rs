//! The configuration file: YAML text in, a typed [`Config`] out.
//!
//! Parsing goes YAML → serde structs that reject unknown keys → typed values that cannot hold
//! invalid states (addresses parsed, ranges expanded, weights bounded). Checks that span several
//! values (duplicate services, duplicate reals) run after deserialisation. This module binds no
//! socket and never touches the running service table.

mod address;
mod cluster;
mod duration;
mod edit;
mod error;
mod file;
mod ha;
mod health_check;
pub mod nodeset;
mod prefixes;
mod save;
mod service;

use std::{collections::HashSet, path::Path};

pub use self::{address::*, cluster::*, edit::*, file::*, ha::*, health_check::*, prefixes::*, service::*};
pub use duration::{format as format_duration, parse as parse_duration, parse_slow_start};
pub use error::ConfigError;
pub use save::services_yaml;

/// The largest config file (or state file, or admin request body) read: some hundred thousand
/// reals fit.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The deepest nesting of flow collections (`[...]`, `{...}`) accepted. The YAML parser's time
/// grows with the square of that depth, so it is checked before parsing, in one pass.
pub const MAX_NESTING: usize = 64;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_DOCUMENT_BYTES as u64 {
        return Err(ConfigError::Invalid {
            origin: path.display().to_string(),
            line: None,
            column: None,
            message: format!("the file has {size} bytes; at most {MAX_DOCUMENT_BYTES} are read"),
        });
    }
    let source = std::fs::read_to_string(path).map_err(read)?;
    parse(&source, &path.display().to_string())
}

/// Checks that `source` is small and shallow enough to parse quickly: at most
/// [`MAX_DOCUMENT_BYTES`], flow collections nested at most [`MAX_NESTING`] deep (brackets
/// inside quoted strings and comments do not count). The error says which limit.
pub fn check_shape(source: &[u8]) -> Result<(), String> {
    if source.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the document has {} bytes; at most {MAX_DOCUMENT_BYTES} are accepted",
            source.len()
        ));
    }
    let (mut depth, mut quote, mut escaped, mut comment, mut previous) = (0usize, None, false, false, b'\n');
    for &byte in source {
        match quote {
            Some(b'"') if escaped => escaped = false,
            Some(b'"') if byte == b'\\' => escaped = true,
            Some(open) if byte == open => quote = None,
            Some(_) => {}
            None if byte == b'\n' => comment = false,
            None if comment => {}
            None => match byte {
                b'#' if previous.is_ascii_whitespace() => comment = true,
                // A quote opens a quoted scalar only where a scalar starts.
                b'"' | b'\'' if previous.is_ascii_whitespace() || b"[{,:".contains(&previous) => {
                    quote = Some(byte);
                }
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(format!("collections are nested deeper than {MAX_NESTING} levels"));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        previous = byte;
    }
    Ok(())
}

fn shaped(source: &str, origin: &str) -> Result<(), ConfigError> {
    check_shape(source.as_bytes()).map_err(|message| ConfigError::Invalid {
        origin: origin.to_owned(),
        line: None,
        column: None,
        message,
    })
}

/// Parses and validates config text. `origin` names the text in errors (usually the file path).
pub fn parse(source: &str, origin: &str) -> Result<Config, ConfigError> {
    shaped(source, origin)?;
    let config: Config = serde_yaml::from_str(source).map_err(|error| yaml_error(&error, source, origin))?;
    validate(&config)
        .and_then(|()| supported(&config))
        .and_then(|()| services_in_one_place(&config))
        .map_err(|problem| problem.into_error(source, origin))?;
    Ok(config)
}

/// With `cluster:`, the services live in etcd: a file that also lists some would hold a
/// second, silently ignored table.
fn services_in_one_place(config: &Config) -> Result<(), Problem> {
    match &config.cluster {
        Some(cluster) if !config.services.is_empty() => Err(Problem {
            message: format!(
                "services: with `cluster:` the service table lives in etcd under {}/services/, \
                 not in this file; remove `services:` here and load them once with \
                 `lbadm restore` (or `lbadm add-service`)",
                cluster.prefix
            ),
            needle: "services:".to_owned(),
            occurrence: 0,
        }),
        _ => Ok(()),
    }
}

/// Parses a `services:` list on its own (the format of `lbadm save` and the state file), and
/// checks it as the services of `running`: the rest of the configuration (the `dataplane`
/// section, for one) is the running one's.
pub fn parse_services(
    source: &str,
    origin: &str,
    running: &Config,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ServicesOnly {
        #[serde(default)]
        services: Vec<ServiceConfig>,
    }
    shaped(source, origin)?;
    let parsed: ServicesOnly =
        serde_yaml::from_str(source).map_err(|error| yaml_error(&error, source, origin))?;
    let config = Config {
        services: parsed.services,
        ..running.clone_without_services()
    };
    validate(&config)
        .and_then(|()| supported(&config))
        .map_err(|problem| problem.into_error(source, origin))?;
    Ok(config.services)
}

/// Checks a configuration built at run time (an admin change to the running one) by the
/// config file's rules: unique services and names, settings that can work together. The
/// message names the problem.
pub fn check(config: &Config) -> Result<(), String> {
    validate(config)
        .and_then(|()| supported(config))
        .map_err(|problem| problem.message)
}

fn yaml_error(error: &serde_yaml::Error, source: &str, origin: &str) -> ConfigError {
    let location = error.location();
    let mut message = error.to_string();
    // serde_yaml appends " at line L column C"; we print the position as a prefix instead.
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    // A check of a whole service (a real's address, a duplicate, a flag that does not fit)
    // fails where the service starts; the value it quotes first, found from there on, is
    // where the problem is.
    let quoted = message.split('`').nth(1).filter(|quoted| !quoted.is_empty());
    let (line, column) = match (&location, quoted) {
        (Some(location), Some(quoted)) => source
            .get(location.index()..)
            .and_then(|rest| rest.find(quoted))
            .map(|offset| position(source, location.index() + offset))
            .map_or((location.line(), location.column()), |(line, column)| {
                (line, column)
            }),
        (Some(location), None) => (location.line(), location.column()),
        (None, _) => {
            return ConfigError::Invalid {
                origin: origin.to_owned(),
                line: None,
                column: None,
                message,
            };
        }
    };
    ConfigError::Invalid {
        origin: origin.to_owned(),
        line: Some(line),
        column: Some(column),
        message,
    }
}

/// 1-based line and column of byte `offset` of `source`.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    (line, column)
}

/// A problem found after deserialisation, with the text to look for to locate it.
struct Problem {
    message: String,
    /// Text whose `occurrence`-th appearance in the source marks the problem.
    needle: String,
    occurrence: usize,
}

impl Problem {
    fn into_error(self, source: &str, origin: &str) -> ConfigError {
        let position = locate(source, &self.needle, self.occurrence);
        ConfigError::Invalid {
            origin: origin.to_owned(),
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            message: self.message,
        }
    }
}

/// 1-based line and column of the `occurrence`-th (0-based) appearance of `needle`.
fn locate(source: &str, needle: &str, occurrence: usize) -> Option<(usize, usize)> {
    if needle.is_empty() {
        return None;
    }
    let (offset, _) = source.match_indices(needle).nth(occurrence)?;
    Some(position(source, offset))
}

/// For each service, which appearance of its listen text in the source is its own (a second
/// service on the same text is its second appearance), to locate problems.
fn listen_occurrences(services: &[ServiceConfig]) -> Vec<usize> {
    let mut seen = std::collections::HashMap::new();
    services
        .iter()
        .map(|service| {
            let count = seen.entry(service.listen_text.as_str()).or_insert(0usize);
            *count += 1;
            *count - 1
        })
        .collect()
}

fn validate(config: &Config) -> Result<(), Problem> {
    let mut keys = HashSet::new();
    let mut names = HashSet::new();
    for (service, occurrence) in config.services.iter().zip(listen_occurrences(&config.services)) {
        let listen_text = service.listen_text.clone();
        if !keys.insert(service.key()) {
            return Err(Problem {
                message: format!(
                    "services: duplicate service {} {} (protocol and listen address must be unique)",
                    service.protocol, service.listen
                ),
                needle: listen_text,
                occurrence,
            });
        }
        if service.scheduler == SchedulerKind::Mh && service.reals.len() > MH_TABLE_SIZE {
            return Err(Problem {
                message: format!(
                    "service `{}`: {} reals, but an mh service holds at most {} (its table size)",
                    service.name,
                    service.reals.len(),
                    MH_TABLE_SIZE
                ),
                needle: listen_text,
                occurrence,
            });
        }
        if !names.insert(service.name.as_str()) {
            return Err(Problem {
                message: format!("services: duplicate service name `{}`", service.name),
                needle: service.name.clone(),
                occurrence: 1,
            });
        }
    }
    if let Some(admin) = &config.admin
        && let AdminListen::Tcp(addr) = admin.listen
        && !addr.ip().is_loopback()
        && admin.token_file.is_none()
    {
        return Err(Problem {
            message: format!(
                "admin.listen: {addr} is not a loopback address, so admin.token_file is required \
                 (or listen on 127.0.0.1 or a unix: socket)"
            ),
            needle: "admin:".to_owned(),
            occurrence: 0,
        });
    }
    Ok(())
}

/// Rejects services whose forwarding the rest of the file cannot carry (no `dataplane:`, no
/// server-side interface for dr, a port change dr and tun cannot make).
fn supported(config: &Config) -> Result<(), Problem> {
    for (service, occurrence) in config.services.iter().zip(listen_occurrences(&config.services)) {
        let forwards: Vec<ForwardMethod> = std::iter::once(service.forward)
            .chain(service.reals.iter().map(|real| real.forward_in(service)))
            .collect();
        let packets = service.on_packet_plane();
        let problem = |message: String| Problem {
            message: format!("service `{}`: {message}", service.name),
            needle: service.listen_text.clone(),
            occurrence,
        };
        if packets && config.dataplane.is_none() {
            return Err(problem(
                "forward nat, dr and tun need a `dataplane:` section (the TUN device and the \
                 server-side interface; see docs/forwarding.md)"
                    .to_owned(),
            ));
        }
        if forwards.contains(&ForwardMethod::Dr)
            && config
                .dataplane
                .as_ref()
                .is_some_and(|dataplane| dataplane.server_interface.is_none())
        {
            return Err(problem(
                "forward dr needs `dataplane.server_interface` (where the real servers' MACs are)".to_owned(),
            ));
        }
        if let Some(real) = service.reals.iter().find(|real| {
            matches!(real.forward_in(service), ForwardMethod::Dr | ForwardMethod::Tun)
                && real.address.port() != service.listen.port()
        }) {
            return Err(problem(format!(
                "real {}: dr and tun forward packets unchanged, so the real's port must be the \
                 service's ({}), as ipvsadm requires",
                real.address,
                service.listen.port()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
