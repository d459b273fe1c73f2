//! What the admin API asks of the director, and how the director answers: reads build JSON
//! documents from the live table; changes are computed as a whole new services table, checked
//! by the config file's rules, and applied in one step (bind, state file, swap). A change that
//! fails anywhere changes nothing.
//!
//! `edit` computes what a change makes of the running configuration (pure); `views` builds
//! the documents that reads answer.

mod edit;
mod views;

pub use self::edit::edited;
use self::edit::{find, reals_named};
use super::{ApplyError, Director, ReloadError};
pub use crate::api::{Answer, Change, ControlError, Request};
use crate::config::{self, ServiceConfig};

/// Where the control loop answers an admin request.
pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<Answer, ControlError>>;

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
            Request::Save => {
                let configured: Vec<ServiceConfig> = self
                    .config
                    .services
                    .iter()
                    .map(ServiceConfig::configured)
                    .collect();
                Ok(Answer::Yaml(config::services_yaml(&configured)))
            }
            Request::Connections => Ok(json(&self.connections())),
            Request::Directors => self.directors().map(|directors| json(&directors)),
            // Zeroing counters and killing flows change no configuration: a backup does
            // them too.
            Request::Change {
                change,
                client,
                force,
            } => match self.refusal(force || matches!(change, Change::Zero(_) | Change::KillFlows { .. })) {
                Some(refused) => Err(refused),
                None => self.change(change, &client),
            },
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
            Change::KillFlows { service, address } => {
                let killed = self.kill_flows(&service, address.as_deref())?;
                tracing::info!(client, killed = killed.flows, "admin change applied: {what}");
                return Ok(json(&killed));
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
                return Ok(self.service_answer(key));
            }
        };
        tracing::info!(client, "admin change applied: {what}");
        Ok(answer)
    }

    /// What a change answers: the service it made or changed (`key`), or every service.
    pub(crate) fn service_answer(&self, key: Option<config::ServiceKey>) -> Answer {
        let index = key.and_then(|key| {
            self.config
                .services
                .iter()
                .position(|service| service.key() == key)
        });
        match index {
            Some(index) => json(&self.service_view(index)),
            None => json(&self.service_views()),
        }
    }

    /// Answers one admin request through `reply`: at once, or (a table change of a director
    /// of a cluster) once the change is written to etcd and applied here.
    pub(crate) fn answer(&mut self, request: Request, reply: Reply) {
        match request {
            Request::Change { change, client, .. }
                if self.cluster.is_some()
                    && !matches!(
                        change,
                        Change::Zero(_) | Change::Reload | Change::KillFlows { .. }
                    ) =>
            {
                self.commit_change(change, client, reply);
            }
            request => {
                let _ = reply.send(self.handle(request));
            }
        }
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

    /// Closes the flows of service `id`, or of the reals `address` names in it: proxied
    /// flows are reset on both sides (a UDP session ends), packet-plane entries dropped.
    fn kill_flows(&self, id: &str, address: Option<&str>) -> Result<crate::api::Killed, ControlError> {
        let service = &self.config.services[find(&self.config.services, id)?];
        let reals = match address {
            Some(address) => Some(reals_named(service, address)?),
            None => None,
        };
        let flows = self.kill_flows_of(service.key(), |real| {
            reals.as_ref().is_none_or(|reals| reals.contains(real))
        });
        Ok(crate::api::Killed { flows })
    }

    /// Closes the flows of service `key` to the reals `chosen` picks; returns how many.
    fn kill_flows_of(
        &self,
        key: config::ServiceKey,
        chosen: impl Fn(&std::net::SocketAddr) -> bool,
    ) -> usize {
        let proxied = self
            .shared
            .flows
            .kill(|flow| flow.protocol == key.protocol && flow.service == key.listen && chosen(&flow.real));
        proxied + self.packet.flows.kill(key, chosen, crate::clock::Millis::now())
    }

    /// `on_down: shutdown`: closes the flows of every real that its health check found down
    /// between `before` and `after`.
    pub(crate) fn shut_down_failed(
        &self,
        before: &crate::table::ServiceTable,
        after: &crate::table::ServiceTable,
    ) {
        for service in after.services() {
            let shutdown = service
                .config
                .health_check
                .as_ref()
                .is_some_and(|check| check.on_down == config::OnDown::Shutdown);
            if !shutdown {
                continue;
            }
            let Some(old) = before.service(&service.key) else {
                continue;
            };
            for real in service
                .reals
                .iter()
                .filter(|real| !real.up && real.check.is_some())
            {
                if !old.real(real.address).is_some_and(|old| old.up) {
                    continue;
                }
                let flows = self.kill_flows_of(service.key, |address| *address == real.address);
                tracing::info!(service = service.name(), real = %real.address, flows, "real down: its flows closed (on_down: shutdown)");
            }
        }
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
}

fn json<T: serde::Serialize>(value: &T) -> Answer {
    Answer::Json(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
}
