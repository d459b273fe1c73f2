//! What the admin API asks of the director, and how the director answers: reads build JSON
//! documents from the live table; changes are computed as a whole new services table, checked
//! by the config file's rules, and applied in one step (bind, state file, swap). A change that
//! fails anywhere changes nothing.

use std::{collections::HashSet, net::SocketAddr, time::SystemTime};

use serde_yaml::{Mapping, Value};

use super::{
    ApplyError, ConfigSource, Director, ReloadError,
    rates::{real_counters, service_counters},
};
pub use crate::api::{Answer, Change, ControlError, Request};
use crate::{
    api::{self, Counters},
    clock::Millis,
    config::{self, Config, ServiceConfig, nodeset},
    proxy::flows::FlowState,
    table::{self, ServiceTable},
};

impl From<ApplyError> for ControlError {
    fn from(error: ApplyError) -> Self {
        Self::Failed(error.to_string())
    }
}

impl From<ReloadError> for ControlError {
    fn from(error: ReloadError) -> Self {
        match error {
            ReloadError::Config(error) => Self::Invalid(error.to_string()),
            ReloadError::Apply(error) => Self::Failed(error.to_string()),
        }
    }
}

impl Director {
    /// Answers one admin request.
    pub fn handle(&mut self, request: Request) -> Result<Answer, ControlError> {
        match request {
            Request::Status => Ok(json(&self.status())),
            Request::Services => Ok(json(&self.service_views())),
            Request::Service(id) => {
                let index = find(&self.config.services, &id)?;
                Ok(json(&self.service_view(index)))
            }
            Request::Save => Ok(Answer::Yaml(config::services_yaml(&self.config.services))),
            Request::Connections => Ok(json(&self.connections())),
            Request::Change { change, client } => self.change(change, &client),
        }
    }

    fn change(&mut self, change: Change, client: &str) -> Result<Answer, ControlError> {
        let what = change.to_string();
        let answer = match change {
            Change::Zero(service) => {
                self.zero(service.as_deref())?;
                json(&self.service_views())
            }
            Change::Reload => {
                let reloaded = self.reload().map(drop).map_err(ControlError::from);
                return self.reloaded(reloaded, client);
            }
            edit => {
                let (config, key) = edited(&self.config, edit)?;
                let summary = self.apply(config)?;
                tracing::info!(
                    client,
                    added = summary.added,
                    removed = summary.removed,
                    changed = summary.changed,
                    "admin change applied: {what}"
                );
                let index = key.and_then(|key| {
                    self.config
                        .services
                        .iter()
                        .position(|service| service.key() == key)
                });
                return Ok(match index {
                    Some(index) => json(&self.service_view(index)),
                    None => json(&self.service_views()),
                });
            }
        };
        tracing::info!(client, "admin change applied: {what}");
        Ok(answer)
    }

    /// The answer to `lbadm reload` once the reload is done (or refused), logged once.
    pub fn reloaded(
        &self,
        outcome: Result<impl Sized, ControlError>,
        client: &str,
    ) -> Result<Answer, ControlError> {
        outcome?;
        tracing::info!(client, "admin change applied: reload");
        Ok(json(&self.service_views()))
    }

    fn zero(&mut self, service: Option<&str>) -> Result<(), ControlError> {
        let keys: Vec<_> = match service {
            Some(id) => vec![self.config.services[find(&self.config.services, id)?].key()],
            None => self.config.services.iter().map(ServiceConfig::key).collect(),
        };
        let table = self.shared.table.snapshot();
        for key in keys {
            if let Some(service) = table.service(&key) {
                for real in service.reals.iter().chain(service.sorry.as_ref()) {
                    real.state.zero();
                }
                service.stats.zero();
            }
            self.rates.reset(&key);
        }
        Ok(())
    }

    /// Samples the counters for the rate estimates; called every [`rates::PERIOD`](super::rates::PERIOD).
    pub fn sample_rates(&mut self, elapsed: std::time::Duration) {
        let table = self.shared.table.snapshot();
        self.rates.sample(&table, elapsed);
    }

    fn status(&self) -> api::Status {
        api::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            config_file: match &self.source {
                ConfigSource::File(path) => Some(path.display().to_string()),
                ConfigSource::Text { .. } => None,
            },
            state_file: self
                .config
                .state_file
                .as_ref()
                .map(|path| path.display().to_string()),
            workers: self.workers.len(),
            services: self.config.services.len(),
            reals: self
                .config
                .services
                .iter()
                .map(|service| service.reals.len())
                .sum(),
            flows: self.shared.flows.count(),
        }
    }

    /// Flows in progress, as `ipvsadm -L -c` lists them, oldest activity first.
    fn connections(&self) -> Vec<api::Connection> {
        let now = Millis::now();
        let timeouts = self.config.timeouts;
        let mut flows = self.shared.flows.list();
        flows.sort_by_key(|flow| flow.last_activity());
        let packets = self.packet.flows.list().into_iter().map(|flow| api::Connection {
            protocol: flow.key.protocol.to_string(),
            state: flow.state.name().to_owned(),
            expires_seconds: flow.expires.0.saturating_sub(now.0) / 1000,
            source: flow.key.client.to_string(),
            virtual_address: flow.key.vip.to_string(),
            destination: flow.real.to_string(),
        });
        flows
            .iter()
            .map(|flow| {
                let state = flow.state();
                let timeout = match state {
                    FlowState::Established => timeouts.tcp,
                    FlowState::FinWait => timeouts.tcp_fin,
                    FlowState::Udp => timeouts.udp,
                };
                let idle = std::time::Duration::from_millis(now.0.saturating_sub(flow.last_activity().0));
                api::Connection {
                    protocol: flow.protocol.to_string(),
                    state: state.name().to_owned(),
                    expires_seconds: timeout.saturating_sub(idle).as_secs(),
                    source: flow.client.to_string(),
                    virtual_address: flow.service.to_string(),
                    destination: flow.real.to_string(),
                }
            })
            .chain(packets)
            .collect()
    }

    fn service_views(&self) -> Vec<api::Service> {
        let mut order: Vec<usize> = (0..self.config.services.len()).collect();
        order.sort_by_key(|&index| self.config.services[index].key());
        order.into_iter().map(|index| self.service_view(index)).collect()
    }

    fn service_view(&self, index: usize) -> api::Service {
        let table = self.shared.table.snapshot();
        service_view(&self.config.services[index], &table, &self.rates)
    }
}

fn service_view(
    config: &ServiceConfig,
    table: &ServiceTable,
    rates: &super::rates::Estimator,
) -> api::Service {
    let key = config.key();
    let live = table.service(&key);
    let mut reals: Vec<api::Real> = config
        .reals
        .iter()
        .map(|real| {
            let current = live.and_then(|service| service.real(real.address));
            api::Real {
                address: real.address.to_string(),
                forward: real.forward_in(config).name().to_owned(),
                weight: current.map_or(real.weight, |current| current.weight),
                configured_weight: real.weight,
                max_conns: real.max_conns,
                min_conns: real.min_conns,
                active: current.map_or(0, |current| current.state.active()),
                inactive: current.map_or(0, |current| current.state.inactive()),
                overloaded: current.is_some_and(|current| current.state.is_overloaded()),
                health: current.and_then(health_view),
                stats: current.map_or_else(Counters::default, |current| real_counters(&current.state)),
                rate: rates.rates(&key, Some(real.address)),
            }
        })
        .collect();
    reals.sort_by_key(|real| real.address.parse::<SocketAddr>().ok());
    api::Service {
        name: config.name.clone(),
        protocol: config.protocol.to_string(),
        listen: config.listen.to_string(),
        scheduler: config.scheduler.to_string(),
        scheduler_flags: config
            .scheduler_flags
            .iter()
            .map(|flag| flag.name().to_owned())
            .collect(),
        forward: config.forward.name().to_owned(),
        persistence: config.persistence.map(|persistence| api::Persistence {
            timeout_seconds: persistence.timeout.as_secs(),
            netmask_prefix: persistence.netmask.prefix,
        }),
        one_packet: config.one_packet,
        sorry_server: config.sorry_server.map(|address| address.to_string()),
        health_check: config
            .health_check
            .as_ref()
            .filter(|check| check.kind != config::HealthCheckKind::None)
            .map(|check| check.kind.name().to_owned()),
        stats: live.map_or_else(Counters::default, |service| service_counters(service)),
        rate: rates.rates(&key, None),
        reals,
    }
}

fn health_view(real: &table::Real) -> Option<api::Health> {
    let record = real.check.as_ref()?.record();
    Some(api::Health {
        state: if record.up { "up" } else { "down" }.to_owned(),
        since_seconds: SystemTime::now()
            .duration_since(record.since)
            .map_or(0, |elapsed| elapsed.as_secs()),
        last_passed: record.last.as_ref().map(|last| last.passed),
        last_reason: record.last.map(|last| last.reason),
    })
}

/// The configuration an edit of the services table makes of `running`, checked by the config
/// file's rules, and the key of the service it touched (none for a deletion or a whole new
/// table). Pure: nothing is applied. `Zero` and `Reload` are not edits and are refused.
pub fn edited(
    running: &Config,
    change: Change,
) -> Result<(Config, Option<config::ServiceKey>), ControlError> {
    let mut services = running.services.clone();
    let touched = match change {
        Change::AddService(body) => {
            services.push(service_from(body)?);
            Some(services.len() - 1)
        }
        Change::EditService { service, patch } => {
            let index = find(&services, &service)?;
            let mut value = config::service_value(&services[index]);
            merge(&mut value, patch, &["protocol", "listen", "reals"])?;
            services[index] = service_from(value)?;
            Some(index)
        }
        Change::DeleteService(service) => {
            services.remove(find(&services, &service)?);
            None
        }
        Change::ReplaceServices(body) => {
            services = services_from(body)?;
            None
        }
        Change::AddReals { service, reals } => {
            let index = find(&services, &service)?;
            let added = reals_from(&services[index], reals)?;
            let target = &mut services[index];
            let known: HashSet<SocketAddr> = target.reals.iter().map(|real| real.address).collect();
            for real in added {
                if known.contains(&real.address) {
                    return Err(ControlError::Invalid(format!(
                        "real {} is already in service `{}`; nothing was added",
                        real.address, target.name
                    )));
                }
                target.reals.push(real);
            }
            Some(index)
        }
        Change::EditReals {
            service,
            address,
            patch,
        } => {
            let index = find(&services, &service)?;
            let targets = reals_named(&services[index], &address)?;
            // Only the reals named are re-read through the config rules.
            let mut edited = Vec::with_capacity(targets.len());
            for real in services[index]
                .reals
                .iter()
                .filter(|real| targets.contains(&real.address))
            {
                let mut value = config::real_value(real);
                merge(&mut value, patch.clone(), &["address"])?;
                edited.push(value);
            }
            let edited = reals_from(&services[index], Value::Sequence(edited))?;
            for (real, new) in services[index]
                .reals
                .iter_mut()
                .filter(|real| targets.contains(&real.address))
                .zip(edited)
            {
                *real = new;
            }
            Some(index)
        }
        Change::DrainReals { service, address } => {
            // Draining is weight 0, as `ipvsadm -e -w 0`: the drain policy lives here.
            let mut patch = Mapping::new();
            patch.insert("weight".into(), 0.into());
            return edited(
                running,
                Change::EditReals {
                    service,
                    address,
                    patch: Value::Mapping(patch),
                },
            );
        }
        Change::DeleteReals { service, address } => {
            let index = find(&services, &service)?;
            let targets = reals_named(&services[index], &address)?;
            services[index]
                .reals
                .retain(|real| !targets.contains(&real.address));
            Some(index)
        }
        Change::Zero(_) | Change::Reload => {
            return Err(ControlError::Invalid(
                "zero and reload do not edit the services table".to_owned(),
            ));
        }
    };
    let key = touched.map(|index| services[index].key());
    let config = Config {
        services,
        ..running.clone_without_services()
    };
    config::check(&config).map_err(ControlError::Invalid)?;
    Ok((config, key))
}

/// The index of the service `id` in `services`: `tcp:VIP:PORT` / `udp:VIP:PORT` finds a
/// service by its key alone; anything else is a name. (A name never reads as another
/// service's key.)
fn find(services: &[ServiceConfig], id: &str) -> Result<usize, ControlError> {
    match config::ServiceKey::parse(id) {
        Some(key) => services.iter().position(|service| service.key() == key),
        None => services.iter().position(|service| service.name == id),
    }
    .ok_or_else(|| ControlError::NotFound(format!("no service `{id}`")))
}

/// The addresses a real address or range names in `service`; every one must exist.
fn reals_named(service: &ServiceConfig, address: &str) -> Result<HashSet<SocketAddr>, ControlError> {
    let known: HashSet<SocketAddr> = service.reals.iter().map(|real| real.address).collect();
    let texts = nodeset::expand(address).map_err(|error| ControlError::Invalid(error.to_string()))?;
    texts
        .iter()
        .map(|text| {
            let real = config::parse_real_addr(text, service.listen.port()).map_err(ControlError::Invalid)?;
            if known.contains(&real) {
                Ok(real)
            } else {
                Err(ControlError::NotFound(format!(
                    "no real {real} in service `{}`; nothing was changed",
                    service.name
                )))
            }
        })
        .collect()
}

fn json<T: serde::Serialize>(value: &T) -> Answer {
    Answer::Json(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
}

fn invalid(error: impl std::fmt::Display) -> ControlError {
    ControlError::Invalid(error.to_string())
}

fn service_from(value: Value) -> Result<ServiceConfig, ControlError> {
    serde_yaml::from_value(value).map_err(invalid)
}

/// A services list: `{services: [...]}` or `[...]`.
fn services_from(value: Value) -> Result<Vec<ServiceConfig>, ControlError> {
    let list = match value {
        Value::Mapping(mut mapping) => {
            let list = mapping.remove("services").unwrap_or(Value::Sequence(Vec::new()));
            if let Some((key, _)) = mapping.into_iter().next() {
                return Err(ControlError::Invalid(format!(
                    "unknown key {}: expected only `services`",
                    serde_yaml::to_string(&key).unwrap_or_default().trim()
                )));
            }
            list
        }
        Value::Null => Value::Sequence(Vec::new()),
        other => other,
    };
    serde_yaml::from_value(list).map_err(invalid)
}

/// The reals a body describes (one mapping or a list), ranges expanded and defaults filled in
/// as the config file would for `service`.
fn reals_from(service: &ServiceConfig, body: Value) -> Result<Vec<config::RealConfig>, ControlError> {
    let list = match body {
        Value::Sequence(list) => list,
        other => vec![other],
    };
    let bare = ServiceConfig {
        reals: Vec::new(),
        ..service.clone()
    };
    let mut value = config::service_value(&bare);
    if let Value::Mapping(mapping) = &mut value {
        mapping.insert("reals".into(), Value::Sequence(list));
    }
    Ok(service_from(value)?.reals)
}

/// Sets the keys of `patch` in `base`; a `null` removes the key. `fixed` keys cannot change.
fn merge(base: &mut Value, patch: Value, fixed: &[&str]) -> Result<(), ControlError> {
    let Value::Mapping(patch) = patch else {
        return Err(ControlError::Invalid(
            "the body must be a mapping of the keys to change".to_owned(),
        ));
    };
    let Value::Mapping(base) = base else {
        return Err(ControlError::Invalid("nothing to edit".to_owned()));
    };
    apply_patch(base, patch, fixed)
}

fn apply_patch(base: &mut Mapping, patch: Mapping, fixed: &[&str]) -> Result<(), ControlError> {
    for (key, value) in patch {
        let name = key.as_str().unwrap_or_default().to_owned();
        if fixed.contains(&name.as_str()) {
            return Err(ControlError::Invalid(format!(
                "`{name}` cannot be edited (delete and add instead)"
            )));
        }
        if value.is_null() {
            base.remove(&key);
        } else {
            base.insert(key, value);
        }
    }
    Ok(())
}
