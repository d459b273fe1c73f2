//! Addresses as the config file writes them: `IP:PORT`, and a real's `IP[:PORT]` whose port
//! defaults to the service's.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, de};

/// Parses `IP:PORT` with a message that says what is expected.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("invalid address `{text}`: expected IP:PORT, like 192.168.77.100:80 or [2001:db8::1]:80")
    })
}

/// Parses a real server address; the port defaults to the service's port, as in ipvsadm.
pub fn parse_real_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("invalid real address `{text}`: port 0"));
        }
        return Ok(addr);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, default_port)),
        Err(_) => Err(format!(
            "invalid real address `{text}`: expected IP[:PORT], like 10.0.0.1:8080"
        )),
    }
}

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(deserializer)?).map_err(de::Error::custom)
}

pub(super) fn optional_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_socket_addr(&text))
        .transpose()
        .map_err(de::Error::custom)
}
