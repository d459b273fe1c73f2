//! `ha:`: this director is one of an active/backup pair. keepalived's VRRP decides which one
//! is the master; lbd reads that from keepalived's notify FIFO, and the master sends its flows
//! to the backups in the IPVS sync protocol.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use serde::{Deserialize, Deserializer, de};

use super::file::interface_name;

/// `ha:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// keepalived's `vrrp_notify_fifo`: lbd makes it (mode 0600) if it is missing and reads
    /// the state lines keepalived writes to it.
    pub notify_fifo: PathBuf,
    /// The VRRP instance (`INSTANCE` lines) or sync group (`GROUP` lines) whose state is this
    /// director's role.
    #[serde(deserialize_with = "instance_name")]
    pub instance: String,
    /// Flow sync; absent = flows are not synchronised (a takeover breaks established nat, dr
    /// and tun flows).
    #[serde(default)]
    pub sync: Option<SyncConfig>,
}

/// `ha.sync:`: where the IPVS sync protocol's messages go and come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The interface messages leave and arrive on; its first IPv4 address is their source.
    #[serde(deserialize_with = "interface_name")]
    pub interface: String,
    /// 0..255: messages with another sync id are ignored (0 takes every id, and sends 0).
    /// Default 0.
    #[serde(default)]
    pub syncid: u8,
    /// Unicast peers to send to instead of the multicast group; when set, only messages from
    /// them are taken.
    #[serde(default)]
    pub peers: Vec<IpAddr>,
    /// The multicast group. Default 224.0.0.81 (IPVS's).
    #[serde(default = "default_group", deserialize_with = "multicast_group")]
    pub group: Ipv4Addr,
    /// The UDP port. Default 8848 (IPVS's).
    #[serde(default = "default_port", deserialize_with = "port")]
    pub port: u16,
}

fn default_group() -> Ipv4Addr {
    crate::packet::sync::GROUP
}

fn default_port() -> u16 {
    crate::packet::sync::PORT
}

fn instance_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name.is_empty()
        || name.len() > 64
        || name
            .chars()
            .any(|c| c == '"' || c.is_whitespace() || c.is_control())
    {
        return Err(de::Error::custom(format!(
            "instance `{name}` is not a keepalived instance or group name (1 to 64 characters, \
             without quotes or blanks)"
        )));
    }
    Ok(name)
}

fn multicast_group<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ipv4Addr, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.parse::<Ipv4Addr>() {
        Ok(group) if group.is_multicast() => Ok(group),
        _ => Err(de::Error::custom(format!(
            "group `{text}` is not an IPv4 multicast address (224.0.0.0/4)"
        ))),
    }
}

fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    match u16::deserialize(deserializer)? {
        0 => Err(de::Error::custom("port 0: the sync port must be 1..65535")),
        port => Ok(port),
    }
}
