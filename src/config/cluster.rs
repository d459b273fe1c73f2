//! `cluster:`: this director is one of several sharing their service table through etcd. The
//! table lives in etcd under the prefix, one key per service; every director watches it and
//! applies each change; admin changes become etcd transactions.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::duration;

/// `cluster:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd's client URLs (`http://10.0.0.1:2379`), one or more members of one cluster.
    #[serde(deserialize_with = "endpoints")]
    pub etcd: Vec<String>,
    /// Where this cluster's keys live (`/ulvs/web`): services under `PREFIX/services/`,
    /// directors under `PREFIX/directors/`, registered reals under `PREFIX/reals/`.
    #[serde(deserialize_with = "prefix")]
    pub prefix: String,
    /// This director's name among the cluster's directors (`d1`).
    #[serde(deserialize_with = "node")]
    pub node: String,
    /// How long this director's registration outlives it (an etcd lease). Default 5s.
    #[serde(default = "default_ttl", with = "duration::lease")]
    pub ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(5)
}

/// Checks one etcd client URL: `http://HOST:PORT` (TLS is not supported yet).
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("etcd endpoint `{url}` must start with http:// (TLS to etcd is not supported yet)")
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let port = authority
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port))
        .and_then(|port| port.parse::<u16>().ok())
        .filter(|&port| port != 0);
    if authority.contains('/') || port.is_none() {
        return Err(format!(
            "etcd endpoint `{url}` is not of the form http://HOST:PORT (e.g. http://127.0.0.1:2379)"
        ));
    }
    Ok(())
}

/// Checks a key prefix: starts with `/`, no trailing `/`, printable, at most 200 bytes.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || prefix.ends_with('/')
        || prefix.len() > 200
        || prefix.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "prefix `{prefix}` must be an absolute key path like /ulvs/web: it starts with /, \
             does not end with /, has no blanks and at most 200 bytes"
        ));
    }
    Ok(())
}

/// Checks a node name: 1 to 64 of letters, digits, `.`, `_` and `-`.
pub fn check_node(node: &str) -> Result<(), String> {
    if node.is_empty()
        || node.len() > 64
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "node `{node}` must be 1 to 64 letters, digits, `.`, `_` or `-` (it names this \
             director's key)"
        ));
    }
    Ok(())
}

fn endpoints<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let urls = Vec::<String>::deserialize(deserializer)?;
    if urls.is_empty() {
        return Err(de::Error::custom("etcd: at least one endpoint is needed"));
    }
    for url in &urls {
        check_endpoint(url).map_err(de::Error::custom)?;
    }
    Ok(urls)
}

fn prefix<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let prefix = String::deserialize(deserializer)?;
    check_prefix(&prefix).map_err(de::Error::custom)?;
    Ok(prefix)
}

fn node<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let node = String::deserialize(deserializer)?;
    check_node(&node).map_err(de::Error::custom)?;
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_prefixes_and_nodes_are_checked() {
        assert!(check_endpoint("http://127.0.0.1:2379").is_ok());
        assert!(check_endpoint("http://etcd1.example:2379/").is_ok());
        assert!(
            check_endpoint("https://127.0.0.1:2379")
                .unwrap_err()
                .contains("TLS")
        );
        assert!(
            check_endpoint("http://127.0.0.1")
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(check_endpoint("http://:2379").is_err());
        assert!(check_endpoint("http://h:2379/v3").is_err());
        assert!(check_prefix("/ulvs/web").is_ok());
        for bad in ["ulvs", "/", "/ulvs/", "/a b"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert!(check_node("d1").is_ok());
        for bad in ["", "d/1", "d 1"] {
            assert!(check_node(bad).is_err(), "{bad}");
        }
    }
}
