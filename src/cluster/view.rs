//! What a director knows of the cluster's keys at one etcd revision, and what follows from it:
//! the service table (checked by the config file's rules, registered reals added), the
//! directors, and the writes that turn the stored table into another. Pure: no I/O.

use std::collections::BTreeMap;

use super::keys::{Key, Keys};
use crate::{
    api::Director,
    config::{self, Config, MAX_WEIGHT, RealSpec, ServiceConfig, ServiceSpec},
};

/// One stored value and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The value (UTF-8 text; other bytes are refused where they are read).
    pub(crate) value: Vec<u8>,
    /// etcd's `mod_revision` of the key.
    pub(crate) mod_revision: i64,
}

/// One change of a key, as a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyChange {
    /// The key.
    pub(crate) key: String,
    /// Its new value; `None` = deleted.
    pub(crate) value: Option<Stored>,
}

/// A write to the store, guarded by the key's revision as this view saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    /// Set `key` to `value`, if its `mod_revision` is still `expected` (0 = if it is absent).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The revision it must still have.
        expected: i64,
    },
    /// Delete `key`, if its `mod_revision` is still `expected`.
    Delete {
        /// The key.
        key: String,
        /// The revision it must still have.
        expected: i64,
    },
}

/// The cluster's keys as of `revision`.
#[derive(Debug, Clone)]
pub(crate) struct View {
    keys: Keys,
    /// The etcd revision this view is at (0 = nothing read yet).
    pub(crate) revision: i64,
    entries: BTreeMap<String, Stored>,
}

impl View {
    /// An empty view of the cluster under `keys`.
    pub(crate) fn new(keys: Keys) -> Self {
        Self {
            keys,
            revision: 0,
            entries: BTreeMap::new(),
        }
    }

    /// The key layout.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Replaces everything with a full read at `revision`.
    pub(crate) fn reset(&mut self, revision: i64, entries: impl IntoIterator<Item = (String, Stored)>) {
        self.entries = entries.into_iter().collect();
        self.revision = revision;
    }

    /// Applies one watch response's changes, which bring the view to `revision`.
    pub(crate) fn apply(&mut self, revision: i64, changes: Vec<KeyChange>) {
        for change in changes {
            match change.value {
                Some(stored) => self.entries.insert(change.key, stored),
                None => self.entries.remove(&change.key),
            };
        }
        self.revision = self.revision.max(revision);
    }

    /// The service table: every stored service checked as the config file checks one (and
    /// the whole as `running`'s services), each with the reals registered for it. Any stored
    /// service that fails refuses the whole table, naming its key; a registration that fails
    /// is left out and named in the second list.
    pub(crate) fn services(&self, running: &Config) -> Result<(Vec<ServiceConfig>, Vec<String>), String> {
        let mut services = Vec::new();
        let mut registered: BTreeMap<String, Vec<(String, &Stored)>> = BTreeMap::new();
        for (key, stored) in &self.entries {
            match self.keys.parse(key) {
                Some(Key::Service(name)) => services.push(service_at(key, &name, stored)?),
                Some(Key::Real { service, address }) => {
                    registered.entry(service).or_default().push((address, stored));
                }
                _ => {}
            }
        }
        let mut skipped = Vec::new();
        for service in &mut services {
            let Some(reals) = registered.remove(&service.name) else {
                continue;
            };
            let bare = ServiceConfig {
                reals: Vec::new(),
                ..service.clone()
            };
            for (address, stored) in reals {
                let key = self.keys.real(&service.name, &address);
                match registered_real(&bare, &address, stored) {
                    Ok(real) if service.reals.iter().any(|known| known.address == real.address) => {
                        skipped.push(format!(
                            "{key}: {} is configured in the service already",
                            real.address
                        ));
                    }
                    Ok(real) => service.reals.push(real),
                    Err(error) => skipped.push(format!("{key}: {error}")),
                }
            }
        }
        for (service, reals) in registered {
            for (address, _) in reals {
                skipped.push(format!(
                    "{}: no service `{service}` in the cluster",
                    self.keys.real(&service, &address)
                ));
            }
        }
        let config = Config {
            services,
            ..running.clone_without_services()
        };
        config::check(&config).map_err(|message| format!("the cluster's service table: {message}"))?;
        Ok((config.services, skipped))
    }

    /// The writes that make the stored table `wanted` (registered reals left out, services
    /// stored as they are left alone), each guarded by the key's revision in this view.
    pub(crate) fn writes(&self, wanted: &[ServiceConfig]) -> Vec<Write> {
        let mut writes = Vec::new();
        let mut kept = std::collections::HashSet::new();
        for service in wanted {
            let service = service.configured();
            let key = self.keys.service(&service.name);
            let stored = self.entries.get(&key);
            kept.insert(key.clone());
            let same = stored
                .and_then(|stored| service_at(&key, &service.name, stored).ok())
                .is_some_and(|current| current == service);
            if !same {
                writes.push(Write::Put {
                    value: serde_yaml::to_string(&ServiceSpec::from(&service))
                        .unwrap_or_else(|error| format!("# cannot render: {error}\n")),
                    expected: stored.map_or(0, |stored| stored.mod_revision),
                    key,
                });
            }
        }
        for (key, stored) in &self.entries {
            if matches!(self.keys.parse(key), Some(Key::Service(_))) && !kept.contains(key) {
                writes.push(Write::Delete {
                    key: key.clone(),
                    expected: stored.mod_revision,
                });
            }
        }
        writes
    }

    /// The directors registered now, by node name; a registration that cannot be read is
    /// listed with its node name only.
    pub(crate) fn directors(&self) -> Vec<Director> {
        self.entries
            .iter()
            .filter_map(|(key, stored)| match self.keys.parse(key) {
                Some(Key::Director(node)) => Some(
                    serde_json::from_slice::<Director>(&stored.value).unwrap_or(Director {
                        node,
                        role: "unreadable".to_owned(),
                        ..Director::default()
                    }),
                ),
                _ => None,
            })
            .collect()
    }
}

/// The service stored at `key` (whose name part is `name`), checked.
fn service_at(key: &str, name: &str, stored: &Stored) -> Result<ServiceConfig, String> {
    let text =
        std::str::from_utf8(&stored.value).map_err(|_| format!("{key}: the value is not UTF-8 text"))?;
    config::check_shape(text.as_bytes()).map_err(|message| format!("{key}: {message}"))?;
    let spec: ServiceSpec = serde_yaml::from_str(text).map_err(|error| format!("{key}: {error}"))?;
    let service = ServiceConfig::try_from(spec).map_err(|error| format!("{key}: {error}"))?;
    if service.name != name {
        return Err(format!(
            "{key}: holds service `{}`; a service's key must end in its own name",
            service.name
        ));
    }
    Ok(service)
}

/// A real server's registration of itself in `service` (given without its reals).
fn registered_real(
    service: &ServiceConfig,
    address: &str,
    stored: &Stored,
) -> Result<config::RealConfig, String> {
    let text = std::str::from_utf8(&stored.value).map_err(|_| "the value is not UTF-8 text".to_owned())?;
    let spec: RealSpec = serde_yaml::from_str(text).map_err(|error| error.to_string())?;
    if spec.address != address {
        return Err(format!(
            "registers `{}`; a registration's key must end in its own address",
            spec.address
        ));
    }
    if spec.weight > MAX_WEIGHT {
        return Err(format!("weight {} is out of range 0..{MAX_WEIGHT}", spec.weight));
    }
    let mut reals = service.resolve_reals(vec![spec])?;
    match (reals.pop(), reals.is_empty()) {
        (Some(mut real), true) => {
            real.registered = true;
            Ok(real)
        }
        _ => Err("a registration names exactly one address (no ranges)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(text: &str, revision: i64) -> Stored {
        Stored {
            value: text.as_bytes().to_vec(),
            mod_revision: revision,
        }
    }

    fn view() -> View {
        let keys = Keys::new("/u");
        let mut view = View::new(keys.clone());
        view.reset(
            7,
            [
                (
                    keys.service("web"),
                    stored("{name: web, protocol: tcp, listen: '10.0.0.100:80', reals: [{address: '10.0.1.1:80'}]}", 5),
                ),
                (keys.real("web", "10.0.1.7:8080"), stored("{address: '10.0.1.7:8080', weight: 3}", 6)),
                (keys.real("web", "10.0.1.1:80"), stored("{address: '10.0.1.1:80'}", 6)),
                (keys.real("gone", "10.0.1.9:80"), stored("{address: '10.0.1.9:80'}", 6)),
                (keys.real("web", "10.0.1.8:80"), stored("{address: '10.0.1.8:80', weight: 70000}", 6)),
                (keys.director("d1"), stored(r#"{"node":"d1","revision":7,"role":"active","version":"0.1.0"}"#, 7)),
            ],
        );
        view
    }

    #[test]
    fn the_table_is_the_stored_services_with_their_registered_reals() {
        let view = view();
        let (services, skipped) = view.services(&Config::default()).unwrap();
        assert_eq!(services.len(), 1);
        let reals: Vec<(String, u32, bool)> = services[0]
            .reals
            .iter()
            .map(|real| (real.address.to_string(), real.weight, real.registered))
            .collect();
        assert_eq!(
            reals,
            [
                ("10.0.1.1:80".to_owned(), 1, false),
                ("10.0.1.7:8080".to_owned(), 3, true)
            ]
        );
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped.iter().any(|why| why.contains("no service `gone`")));
        assert!(
            skipped
                .iter()
                .any(|why| why.contains("configured in the service already"))
        );
        assert!(skipped.iter().any(|why| why.contains("70000")));
        assert_eq!(view.directors()[0].node, "d1");
    }

    #[test]
    fn a_bad_stored_service_refuses_the_whole_table_naming_its_key() {
        let mut view = view();
        view.apply(
            8,
            vec![KeyChange {
                key: "/u/services/bad".to_owned(),
                value: Some(stored("{name: bad, protocol: tcp, listen: '10.0.0.100:80'}", 8)),
            }],
        );
        let error = view.services(&Config::default()).unwrap_err();
        assert!(error.contains("duplicate service"), "{error}");
        view.apply(
            9,
            vec![KeyChange {
                key: "/u/services/bad".to_owned(),
                value: Some(stored("{name: other, protocol: tcp, listen: '10.0.0.101:80'}", 9)),
            }],
        );
        let error = view.services(&Config::default()).unwrap_err();
        assert!(
            error.contains("/u/services/bad: holds service `other`"),
            "{error}"
        );
        view.apply(
            10,
            vec![KeyChange {
                key: "/u/services/bad".to_owned(),
                value: None,
            }],
        );
        assert!(view.services(&Config::default()).is_ok());
        assert_eq!(view.revision, 10);
    }

    #[test]
    fn writes_touch_only_what_differs_and_are_guarded_by_what_was_seen() {
        let view = view();
        let (mut services, _) = view.services(&Config::default()).unwrap();
        // Unchanged (registered reals are not the store's): nothing to write.
        assert_eq!(view.writes(&services), []);
        services[0].reals[0].weight = 4;
        let mut added = services[0].clone();
        added.name = "api".to_owned();
        added.listen = "10.0.0.100:81".parse().unwrap();
        services.push(added);
        let writes = view.writes(&services);
        assert_eq!(writes.len(), 2);
        match &writes[0] {
            Write::Put { key, value, expected } => {
                assert_eq!((key.as_str(), *expected), ("/u/services/web", 5));
                assert!(
                    value.contains("weight: 4") && !value.contains("10.0.1.7"),
                    "{value}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&writes[1], Write::Put { key, expected: 0, .. } if key == "/u/services/api"));
        assert_eq!(
            view.writes(&[]),
            [Write::Delete {
                key: "/u/services/web".to_owned(),
                expected: 5
            }]
        );
    }
}
