//! Edits of a service or of its reals, as `lbadm edit-service`, `edit-real` and `drain-real`
//! send them: each key is left alone, set, or removed (back to its default). An edit is made
//! on the service's file form ([`ServiceSpec`]) and read back through the config file's own
//! rules, so an edit can make nothing that a config file could not.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::IgnoredAny};

use super::{
    ForwardMethod, HealthCheckConfig, Persistence, Prefixes, ProxyProtocol, RealConfig, RealSpec,
    SchedulerFlag, SchedulerKind, ServiceConfig, ServiceSpec, SourceLimits,
    address::optional_socket_addr,
    duration,
    service::{DEFAULT_MAX_SESSIONS, default_weight, weight},
};

/// One key of an edit. In a body: absent = [`Keep`](Self::Keep), `null` =
/// [`Remove`](Self::Remove), a value = [`Set`](Self::Set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Left as it is.
    #[default]
    Keep,
    /// Removed: back to the key's default.
    Remove,
    /// Set to this value.
    Set(T),
}

impl<T> Patch<T> {
    /// Whether the key is left as it is (and so left out of a body).
    pub fn is_keep(&self) -> bool {
        matches!(self, Self::Keep)
    }

    fn from_option(value: Option<T>) -> Self {
        value.map_or(Self::Remove, Self::Set)
    }

    /// Makes the edit on a key whose absence is `None`.
    fn edit_optional(self, key: &mut Option<T>) {
        match self {
            Self::Keep => {}
            Self::Remove => *key = None,
            Self::Set(value) => *key = Some(value),
        }
    }

    /// Makes the edit on a key that has a default.
    fn edit_value(self, key: &mut T, default: impl FnOnce() -> T) {
        match self {
            Self::Keep => {}
            Self::Remove => *key = default(),
            Self::Set(value) => *key = value,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(Self::from_option)
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Set(value) => value.serialize(serializer),
            Self::Keep | Self::Remove => serializer.serialize_none(),
        }
    }
}

/// The keys of a service to change (`PATCH /services/{service}`, `lbadm edit-service`).
/// `protocol`, `listen` and `reals` name the service or belong to other requests, and are
/// refused.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEdit {
    /// `name`; removed = `<proto>:<vip>:<port>`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub name: Patch<String>,
    /// `scheduler`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub scheduler: Patch<SchedulerKind>,
    /// `scheduler_flags`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub scheduler_flags: Patch<Vec<SchedulerFlag>>,
    /// `forward`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub forward: Patch<ForwardMethod>,
    /// `persistence`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub persistence: Patch<Persistence>,
    /// `one_packet`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub one_packet: Patch<bool>,
    /// `udp_timeout`.
    #[serde(
        default,
        skip_serializing_if = "Patch::is_keep",
        deserialize_with = "udp_timeout",
        serialize_with = "serialize_duration"
    )]
    pub udp_timeout: Patch<Duration>,
    /// `udp_responses`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub udp_responses: Patch<u32>,
    /// `max_sessions`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub max_sessions: Patch<u32>,
    /// `slow_start`.
    #[serde(
        default,
        skip_serializing_if = "Patch::is_keep",
        deserialize_with = "slow_start",
        serialize_with = "serialize_duration"
    )]
    pub slow_start: Patch<Duration>,
    /// `proxy_protocol`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub proxy_protocol: Patch<ProxyProtocol>,
    /// `accept_proxy`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub accept_proxy: Patch<bool>,
    /// `accept_proxy_from`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub accept_proxy_from: Patch<Prefixes>,
    /// `allow`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub allow: Patch<Prefixes>,
    /// `deny`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub deny: Patch<Prefixes>,
    /// `source_limits`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub source_limits: Patch<SourceLimits>,
    /// `sorry_server`.
    #[serde(
        default,
        skip_serializing_if = "Patch::is_keep",
        deserialize_with = "sorry_server"
    )]
    pub sorry_server: Patch<SocketAddr>,
    /// `health_check`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub health_check: Patch<HealthCheckConfig>,
    #[serde(default, skip_serializing, deserialize_with = "named")]
    protocol: bool,
    #[serde(default, skip_serializing, deserialize_with = "named")]
    listen: bool,
    #[serde(default, skip_serializing, deserialize_with = "named")]
    ipv6_only: bool,
    #[serde(default, skip_serializing, deserialize_with = "named")]
    reals: bool,
}

impl ServiceEdit {
    /// The first key of the body that cannot be edited (`protocol`, `listen`, `ipv6_only`
    /// (the listening socket's), `reals`).
    pub fn fixed_key(&self) -> Option<&'static str> {
        [
            ("protocol", self.protocol),
            ("listen", self.listen),
            ("ipv6_only", self.ipv6_only),
            ("reals", self.reals),
        ]
        .into_iter()
        .find_map(|(key, named)| named.then_some(key))
    }

    /// Makes the edit on `spec` (unchecked: read it into a [`ServiceConfig`] to check it).
    pub fn apply_to(self, spec: &mut ServiceSpec) {
        self.name.edit_optional(&mut spec.name);
        self.scheduler
            .edit_value(&mut spec.scheduler, SchedulerKind::default);
        self.scheduler_flags
            .edit_value(&mut spec.scheduler_flags, Vec::new);
        self.forward.edit_value(&mut spec.forward, ForwardMethod::default);
        self.persistence.edit_optional(&mut spec.persistence);
        self.one_packet.edit_value(&mut spec.one_packet, bool::default);
        self.udp_timeout.edit_optional(&mut spec.udp_timeout);
        self.udp_responses.edit_optional(&mut spec.udp_responses);
        self.max_sessions
            .edit_value(&mut spec.max_sessions, || DEFAULT_MAX_SESSIONS);
        self.slow_start.edit_optional(&mut spec.slow_start);
        self.proxy_protocol
            .edit_value(&mut spec.proxy_protocol, ProxyProtocol::default);
        self.accept_proxy
            .edit_value(&mut spec.accept_proxy, bool::default);
        self.accept_proxy_from
            .edit_value(&mut spec.accept_proxy_from, Prefixes::default);
        self.allow.edit_value(&mut spec.allow, Prefixes::default);
        self.deny.edit_value(&mut spec.deny, Prefixes::default);
        self.source_limits.edit_optional(&mut spec.source_limits);
        self.sorry_server.edit_optional(&mut spec.sorry_server);
        self.health_check.edit_optional(&mut spec.health_check);
    }

    /// `service` with the edit made, checked by the config file's rules. A key that cannot
    /// be edited is the caller's to refuse first ([`fixed_key`](Self::fixed_key)).
    pub fn applied(self, service: &ServiceConfig) -> Result<ServiceConfig, String> {
        let mut spec = ServiceSpec::from(service);
        self.apply_to(&mut spec);
        ServiceConfig::try_from(spec)
    }
}

/// The keys of reals to change (`PATCH /services/{service}/reals/{address}`, `lbadm
/// edit-real`). `address` names the reals and is refused.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealEdit {
    /// `weight`, 0..65535; removed = 1.
    #[serde(
        default,
        skip_serializing_if = "Patch::is_keep",
        deserialize_with = "weight_patch"
    )]
    pub weight: Patch<u32>,
    /// `max_conns`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub max_conns: Patch<u32>,
    /// `min_conns`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub min_conns: Patch<u32>,
    /// `forward`; removed = the service's.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub forward: Patch<ForwardMethod>,
    /// `proxy_protocol`; removed = the service's.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub proxy_protocol: Patch<ProxyProtocol>,
    /// `maintenance`.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    pub maintenance: Patch<bool>,
    #[serde(default, skip_serializing, deserialize_with = "named")]
    address: bool,
}

impl RealEdit {
    /// An edit of the weight alone.
    pub fn weight(weight: u32) -> Self {
        Self {
            weight: Patch::Set(weight),
            ..Self::default()
        }
    }

    /// An edit that puts reals in maintenance (`true`) or takes them out.
    pub fn maintenance(on: bool) -> Self {
        Self {
            maintenance: Patch::Set(on),
            ..Self::default()
        }
    }

    /// The first key of the body that cannot be edited (`address`).
    pub fn fixed_key(&self) -> Option<&'static str> {
        self.address.then_some("address")
    }

    /// Makes the edit on `spec` (unchecked).
    pub fn apply_to(&self, spec: &mut RealSpec) {
        self.weight.clone().edit_value(&mut spec.weight, default_weight);
        self.max_conns
            .clone()
            .edit_value(&mut spec.max_conns, u32::default);
        self.min_conns
            .clone()
            .edit_value(&mut spec.min_conns, u32::default);
        self.forward.clone().edit_optional(&mut spec.forward);
        self.proxy_protocol
            .clone()
            .edit_optional(&mut spec.proxy_protocol);
        self.maintenance
            .clone()
            .edit_value(&mut spec.maintenance, bool::default);
    }

    /// `service` with the edit made on the reals at `targets`, checked by the config file's
    /// rules.
    pub fn applied(
        &self,
        service: &ServiceConfig,
        targets: &HashSet<SocketAddr>,
    ) -> Result<ServiceConfig, String> {
        let mut spec = ServiceSpec::from(service);
        for (real, spec) in service.reals.iter().zip(&mut spec.reals) {
            if targets.contains(&real.address) {
                self.apply_to(spec);
            }
        }
        ServiceConfig::try_from(spec)
    }
}

impl ServiceConfig {
    /// The reals `reals` describe, ranges expanded and defaults filled in as the config file
    /// would for this service (the port, checks of `forward`).
    pub fn resolve_reals(&self, reals: Vec<RealSpec>) -> Result<Vec<RealConfig>, String> {
        let mut spec = ServiceSpec::from(self);
        spec.reals = reals;
        Ok(Self::try_from(spec)?.reals)
    }
}

/// One real or a list of them: the body of `POST /services/{service}/reals`.
#[derive(Debug, Clone)]
pub struct RealList(pub Vec<RealSpec>);

impl<'de> Deserialize<'de> for RealList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RealList;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a real (a mapping with `address`) or a list of reals")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RealList, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(RealList)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RealList, A::Error> {
                RealSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|real| RealList(vec![real]))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for RealList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A whole services table: the body of `PUT /services` (`lbadm restore`, `clear`), written
/// `services: [...]` as `lbadm save` prints it, or as a bare list; empty or `null` = none.
#[derive(Debug, Clone, Default)]
pub struct ServiceList(pub Vec<ServiceConfig>);

impl<'de> Deserialize<'de> for ServiceList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Document {
            #[serde(default)]
            services: Vec<ServiceConfig>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ServiceList;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`services: [...]` or a list of services")
            }

            fn visit_unit<E>(self) -> Result<ServiceList, E> {
                Ok(ServiceList::default())
            }

            fn visit_none<E>(self) -> Result<ServiceList, E> {
                Ok(ServiceList::default())
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<ServiceList, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(ServiceList)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ServiceList, A::Error> {
                Document::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|document| ServiceList(document.services))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for ServiceList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Document<'a> {
            services: &'a [ServiceConfig],
        }
        Document { services: &self.0 }.serialize(serializer)
    }
}

/// A key that may not be edited was named (whatever its value).
fn named<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

fn udp_timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Patch<Duration>, D::Error> {
    duration::optional(deserializer, duration::IDLE).map(Patch::from_option)
}

fn slow_start<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Patch<Duration>, D::Error> {
    duration::optional(deserializer, duration::SLOW_START).map(Patch::from_option)
}

fn serialize_duration<S: Serializer>(patch: &Patch<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    let value = match patch {
        Patch::Set(duration) => Some(*duration),
        Patch::Keep | Patch::Remove => None,
    };
    duration::serialize_optional(&value, serializer)
}

fn sorry_server<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Patch<SocketAddr>, D::Error> {
    optional_socket_addr(deserializer).map(Patch::from_option)
}

fn weight_patch<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Patch<u32>, D::Error> {
    #[derive(Deserialize)]
    struct Weight(#[serde(deserialize_with = "weight")] u32);
    Option::<Weight>::deserialize(deserializer)
        .map(|weight| Patch::from_option(weight.map(|Weight(weight)| weight)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(text: &str) -> ServiceConfig {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn absent_keeps_null_removes_value_sets() {
        let before = service(
            "{protocol: udp, listen: '127.0.0.1:53', scheduler: sh, scheduler_flags: [sh-port], \
             udp_timeout: 5s, reals: [{address: '127.0.0.2'}]}",
        );
        let edit: ServiceEdit =
            serde_yaml::from_str("{scheduler: rr, scheduler_flags: null, udp_timeout: null, name: dns}")
                .unwrap();
        let after = edit.clone().applied(&before).unwrap();
        assert_eq!(after.scheduler, SchedulerKind::Rr);
        assert!(after.scheduler_flags.is_empty());
        assert_eq!(after.udp_timeout, None);
        assert_eq!(after.name, "dns");
        assert_eq!(after.reals, before.reals);
        // An edit goes out as the keys it changes, and reads back the same.
        let text = serde_json::to_string(&edit).unwrap();
        assert_eq!(
            text,
            r#"{"name":"dns","scheduler":"rr","scheduler_flags":null,"udp_timeout":null}"#
        );
    }

    #[test]
    fn edits_are_checked_by_the_config_rules() {
        let before = service("{protocol: tcp, listen: '127.0.0.1:80'}");
        let edit: ServiceEdit = serde_yaml::from_str("{one_packet: true}").unwrap();
        assert!(edit.applied(&before).unwrap_err().contains("one_packet"));
        let error = serde_yaml::from_str::<ServiceEdit>("{udp_timeout: 99d}").unwrap_err();
        assert!(error.to_string().contains("out of range"), "{error}");
        let edit: ServiceEdit = serde_yaml::from_str("{listen: '127.0.0.1:81'}").unwrap();
        assert_eq!(edit.fixed_key(), Some("listen"));
        assert!(serde_yaml::from_str::<ServiceEdit>("{colour: red}").is_err());
    }

    #[test]
    fn real_edits_touch_only_the_targets() {
        let before =
            service("{protocol: tcp, listen: '127.0.0.1:80', reals: [{address: '10.0.0.[1-3]', weight: 3}]}");
        let targets: HashSet<SocketAddr> = ["10.0.0.2:80".parse().unwrap()].into();
        let edit: RealEdit = serde_yaml::from_str("{weight: 0}").unwrap();
        let after = edit.applied(&before, &targets).unwrap();
        let weights: Vec<u32> = after.reals.iter().map(|real| real.weight).collect();
        assert_eq!(weights, [3, 0, 3]);
        let edit: RealEdit = serde_yaml::from_str("{weight: null}").unwrap();
        assert_eq!(edit.applied(&after, &targets).unwrap().reals[1].weight, 1);
        assert!(serde_yaml::from_str::<RealEdit>("{weight: 70000}").is_err());
        let edit: RealEdit = serde_yaml::from_str("{address: '10.0.0.9'}").unwrap();
        assert_eq!(edit.fixed_key(), Some("address"));
    }

    #[test]
    fn bodies_of_one_or_many() {
        let one: RealList = serde_yaml::from_str("{address: '10.0.0.1', weight: 2}").unwrap();
        let many: RealList = serde_yaml::from_str("[{address: '10.0.0.1'}, {address: '10.0.0.2'}]").unwrap();
        assert_eq!((one.0.len(), many.0.len()), (1, 2));
        for text in ["", "null", "services: []", "[]"] {
            let list: ServiceList = serde_yaml::from_str(text).unwrap();
            assert!(list.0.is_empty(), "{text}");
        }
        let list: ServiceList =
            serde_yaml::from_str("services: [{protocol: tcp, listen: '127.0.0.1:80'}]").unwrap();
        assert_eq!(list.0.len(), 1);
        assert!(serde_yaml::from_str::<ServiceList>("servers: []").is_err());
    }
}
