//! Durations written as strings in the config file: `500ms`, `2s`, `5m`, `1h`, `1d`, and sums
//! of them such as `1m30s`. Every duration key has a range ([`Range`]): a value outside it is
//! refused with the key's limits, so no configured duration can overflow a clock it meets.

use std::time::Duration;

/// The longest any duration may be written, whatever the key: longer sums are refused while
/// they are added up, before anything can overflow.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The range a duration key accepts (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    /// The shortest value.
    pub(crate) min: Duration,
    /// The longest value.
    pub(crate) max: Duration,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const DAY: u64 = 86_400;

/// Idle timeouts of flows (`timeouts.tcp`, `tcp_fin`, `udp`, a service's `udp_timeout`):
/// above 0, at most 30 days.
pub(crate) const IDLE: Range = Range {
    min: Duration::from_millis(1),
    max: secs(30 * DAY),
};
/// `timeouts.connect`: above 0, at most 10 minutes.
pub(crate) const CONNECT: Range = Range {
    min: Duration::from_millis(1),
    max: secs(600),
};
/// `drain_timeout`: 0 (exit at once) to 1 day.
pub(crate) const DRAIN: Range = Range {
    min: Duration::ZERO,
    max: secs(DAY),
};
/// `persistence.timeout`: 1 second to 30 days.
pub(crate) const PERSISTENCE: Range = Range {
    min: secs(1),
    max: secs(30 * DAY),
};
/// `health_check.interval`: above 0, at most 1 day.
pub(crate) const CHECK_INTERVAL: Range = Range {
    min: Duration::from_millis(1),
    max: secs(DAY),
};
/// `health_check.timeout`: above 0, at most 1 hour.
pub(crate) const CHECK_TIMEOUT: Range = Range {
    min: Duration::from_millis(1),
    max: secs(3_600),
};

/// etcd lease times to live (`cluster.ttl`, `lbd register --ttl`): 1 second to 1 hour (etcd
/// itself raises a time to live below its minimum, 3 s with its default election timeout).
pub(crate) const LEASE: Range = Range {
    min: secs(1),
    max: secs(3_600),
};

/// A service's `slow_start` window: 1 second to 1 hour.
pub(crate) const SLOW_START: Range = Range {
    min: secs(1),
    max: secs(3_600),
};

/// Reads a `slow_start` window as the config file does (`lbadm --slow-start`).
pub fn parse_slow_start(text: &str) -> Result<Duration, String> {
    SLOW_START.parse(text)
}

/// `dataplane.announce.withdraw_wait`: 0 to 1 minute.
pub(crate) const WITHDRAW: Range = Range {
    min: Duration::ZERO,
    max: secs(60),
};

impl Range {
    /// Parses `text` and checks it is within the range; the error names both limits.
    pub(crate) fn parse(self, text: &str) -> Result<Duration, String> {
        let value = parse(text)?;
        if value < self.min || value > self.max {
            let min = if self.min == Duration::from_millis(1) {
                "above 0s".to_owned()
            } else {
                format!("at least {}", format(self.min))
            };
            return Err(format!(
                "duration `{}` is out of range: it must be {min} and at most {}",
                quoted(text),
                format(self.max)
            ));
        }
        Ok(value)
    }
}

/// `text`, or its first 32 characters and `…` when it is longer: errors quote what was
/// written without repeating a value of kilobytes.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(32) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Parses a duration string; the error explains the accepted form.
pub fn parse(text: &str) -> Result<Duration, String> {
    let shown = quoted(text);
    let bad = || {
        format!("invalid duration `{shown}`: expected a number with a unit, like 500ms, 2s, 5m, 1h or 1m30s")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            "d" => Duration::from_secs(value * 86_400),
            _ => return Err(bad()),
        };
        total = total
            .checked_add(unit)
            .filter(|total| *total <= LONGEST)
            .ok_or_else(|| format!("invalid duration `{shown}`: longer than 100 years"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats a duration the way the config file writes it (`900s`, `1500ms`, `30d`).
pub fn format(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() >= DAY && duration.as_secs().is_multiple_of(DAY) {
        format!("{}d", duration.as_secs() / DAY)
    } else if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

pub(super) fn optional<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    range: Range,
) -> Result<Option<Duration>, D::Error> {
    <Option<String> as serde::Deserialize>::deserialize(deserializer)?
        .map(|text| range.parse(&text))
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// serde: writes an optional duration the way the config file does (with
/// `skip_serializing_if = "Option::is_none"`).
pub(super) fn serialize_optional<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_str(&format(*duration)),
        None => serializer.serialize_none(),
    }
}

/// serde adapters for durations within a [`Range`]: one module per range, used as
/// `#[serde(with = "duration::idle")]`.
macro_rules! serde_range {
    ($($module:ident => $range:ident,)*) => {$(
        #[doc = concat!("serde adapter for a duration within [`", stringify!($range), "`].")]
        pub(crate) mod $module {
            use std::time::Duration;

            use serde::{Deserialize, Deserializer, Serializer};

            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
                let text = String::deserialize(deserializer)?;
                super::$range.parse(&text).map_err(serde::de::Error::custom)
            }

            #[allow(dead_code, reason = "not every range is written back")]
            pub(crate) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&super::format(*duration))
            }
        }
    )*};
}

serde_range! {
    idle => IDLE,
    connect => CONNECT,
    drain => DRAIN,
    persistence => PERSISTENCE,
    lease => LEASE,
    withdraw => WITHDRAW,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_forms() {
        for text in [
            "",
            "5",
            "s",
            "2 s",
            "1.5s",
            "-1s",
            "2sec",
            "1m30",
            "99999999999999s",
        ] {
            let message = parse(text).unwrap_err();
            assert!(message.contains(&format!("`{text}`")), "{message}");
        }
    }

    #[test]
    fn sums_that_would_overflow_are_refused() {
        // 250 terms of 999999999999d overflowed `Duration` before sums were checked.
        let text = "999999999999d".repeat(250);
        assert!(parse(&text).unwrap_err().contains("longer than 100 years"));
        let text = "1d".repeat(200);
        assert_eq!(parse(&text).unwrap(), Duration::from_secs(200 * DAY));
    }

    #[test]
    fn ranges_name_their_limits() {
        assert_eq!(IDLE.parse("30d").unwrap(), Duration::from_secs(30 * DAY));
        let message = IDLE.parse("31d").unwrap_err();
        assert_eq!(
            message,
            "duration `31d` is out of range: it must be above 0s and at most 30d"
        );
        assert!(IDLE.parse("0s").is_err());
        assert!(DRAIN.parse("0s").is_ok());
        assert!(
            PERSISTENCE
                .parse("500ms")
                .unwrap_err()
                .contains("at least 1s and at most 30d")
        );
        assert!(parse(&"1d".repeat(100)).is_ok());
        assert!(
            IDLE.parse(&"1d".repeat(100))
                .unwrap_err()
                .contains("`1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d…`")
        );
    }

    #[test]
    fn format_round_trips() {
        for text in ["900s", "1500ms", "0s", "30d"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
