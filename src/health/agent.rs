//! The `agent` check: HAProxy's agent protocol. lbd connects to the real's agent port and
//! reads one line of words: `up` / `ready` (up, and no longer draining), `drain` (weight 0,
//! flows in progress kept), `down` / `fail` / `stopped` / `maint` (down at once), `N%` (weight
//! = configured × N%). Words may be separated by spaces, tabs or commas; `#` starts a comment;
//! unknown words (such as `maxconn:N`) are ignored.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;

use super::{common, machine::Outcome};
use crate::table::DynamicWeight;

/// The longest reply read.
const REPLY_LIMIT: usize = 512;

/// Asks the agent at `address`; the caller bounds the whole exchange by the check's timeout.
pub(super) async fn check(address: SocketAddr, timeout: std::time::Duration) -> Outcome {
    let mut stream = match common::connect(address, timeout).await {
        Ok(stream) => stream,
        Err(failed) => {
            return Outcome {
                reason: format!("agent: {}", failed.reason),
                ..failed
            };
        }
    };
    let mut reply = Vec::with_capacity(64);
    let mut chunk = [0u8; REPLY_LIMIT];
    while !reply.contains(&b'\n') && reply.len() < REPLY_LIMIT {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(error) => return Outcome::fail(format!("agent: read failed: {error}")),
        }
    }
    common::close_with_reset(&stream);
    let line = String::from_utf8_lossy(&reply);
    parse(line.lines().next().unwrap_or(""))
}

/// Reads one agent reply line.
pub(super) fn parse(line: &str) -> Outcome {
    let line = line.trim();
    let words = line.split('#').next().unwrap_or("");
    let reason = format!("agent: {line}");
    let mut outcome = Outcome::pass(reason.clone());
    let mut understood = false;
    for word in words
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|word| !word.is_empty())
    {
        match word.to_ascii_lowercase().as_str() {
            "up" | "ready" => {
                outcome.drain = Some(false);
                understood = true;
            }
            "drain" => {
                outcome.drain = Some(true);
                understood = true;
            }
            "down" | "fail" | "failed" | "stopped" | "maint" => {
                outcome.passed = false;
                outcome.immediate = true;
                understood = true;
            }
            other => {
                if let Some(percent) = other.strip_suffix('%').and_then(|n| n.parse::<u32>().ok()) {
                    outcome.weight = Some(DynamicWeight::Percent(percent));
                    understood = true;
                }
            }
        }
    }
    if understood {
        outcome
    } else {
        Outcome::fail(if line.is_empty() {
            "agent: empty reply".to_owned()
        } else {
            format!("agent: reply not understood: {line:?}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_as_haproxy_does() {
        let up = parse("up");
        assert!(up.passed && up.drain == Some(false) && up.weight.is_none());
        let half = parse("75%\r");
        assert!(half.passed && half.weight == Some(DynamicWeight::Percent(75)));
        let drain = parse("drain");
        assert!(drain.passed && drain.drain == Some(true));
        let both = parse("ready,50% maxconn:30");
        assert_eq!(
            (both.drain, both.weight),
            (Some(false), Some(DynamicWeight::Percent(50)))
        );
        let maint = parse("maint #upgrading");
        assert!(!maint.passed && maint.immediate);
        assert_eq!(maint.reason, "agent: maint #upgrading");
        assert!(!parse("down").passed);
        assert!(!parse("").passed);
        assert_eq!(parse("hello").reason, "agent: reply not understood: \"hello\"");
    }
}
