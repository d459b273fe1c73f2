//! Where a cluster's facts live in etcd, under its prefix `P`:
//! - `P/services/NAME`: one service, in the config file's YAML (as `lbadm save` writes one);
//! - `P/directors/NODE`: a director's registration (JSON), under its lease;
//! - `P/reals/SERVICE/ADDRESS`: a real server that registered itself, under its lease.
//!
//! Service names are percent-encoded in keys (`/`, `%`, blanks and control characters), so a
//! name can hold any character the config file allows.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

const NAME: &AsciiSet = &CONTROLS.add(b'/').add(b'%').add(b' ');

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// `P/services/NAME`.
    Service(String),
    /// `P/directors/NODE`.
    Director(String),
    /// `P/reals/SERVICE/ADDRESS`.
    Real {
        /// The service's name.
        service: String,
        /// The real's address as registered.
        address: String,
    },
}

/// The key layout of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (`/ulvs/web`, no trailing `/`).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Everything of this cluster: `P/`.
    pub(crate) fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `P/services/NAME`.
    pub(crate) fn service(&self, name: &str) -> String {
        format!("{}/services/{}", self.prefix, utf8_percent_encode(name, NAME))
    }

    /// `P/directors/NODE`.
    pub(crate) fn director(&self, node: &str) -> String {
        format!("{}/directors/{node}", self.prefix)
    }

    /// `P/reals/SERVICE/ADDRESS`.
    pub(crate) fn real(&self, service: &str, address: &str) -> String {
        format!(
            "{}/reals/{}/{}",
            self.prefix,
            utf8_percent_encode(service, NAME),
            utf8_percent_encode(address, NAME)
        )
    }

    /// Whether `key` is part of the service table (a service or a registered real).
    pub(crate) fn holds_table(&self, key: &str) -> bool {
        matches!(self.parse(key), Some(Key::Service(_) | Key::Real { .. }))
    }

    /// What `key` is; `None` for keys of another kind or outside the prefix.
    pub(crate) fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .ok()
                .map(|text| text.into_owned())
        };
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "services" if !rest.is_empty() && !rest.contains('/') => decode(rest).map(Key::Service),
            "directors" if !rest.is_empty() && !rest.contains('/') => Some(Key::Director(rest.to_owned())),
            "reals" => {
                let (service, address) = rest.split_once('/')?;
                if service.is_empty() || address.is_empty() || address.contains('/') {
                    return None;
                }
                Some(Key::Real {
                    service: decode(service)?,
                    address: decode(address)?,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_with_any_service_name() {
        let keys = Keys::new("/ulvs/web");
        for name in ["web", "tcp:10.0.0.1:80", "a/b c%d"] {
            assert_eq!(
                keys.parse(&keys.service(name)),
                Some(Key::Service(name.to_owned()))
            );
        }
        assert_eq!(keys.service("a/b"), "/ulvs/web/services/a%2Fb");
        assert_eq!(
            keys.parse(&keys.real("a/b", "10.0.0.7:8080")),
            Some(Key::Real {
                service: "a/b".to_owned(),
                address: "10.0.0.7:8080".to_owned()
            })
        );
        assert_eq!(
            keys.parse(&keys.director("d1")),
            Some(Key::Director("d1".to_owned()))
        );
        for other in [
            "/ulvs/webx/services/a",
            "/ulvs/web/services/",
            "/ulvs/web/else/a",
            "/ulvs/web/reals/a",
        ] {
            assert_eq!(keys.parse(other), None, "{other}");
        }
    }
}
