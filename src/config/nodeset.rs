//! Nodeset range expansion for real-server addresses (ClusterShell syntax).
//!
//! Brackets expand like ClusterShell node sets: `10.0.0.[1-4]:80`, `10.0.0.[1,3,7-9]:80`,
//! `127.0.0.1:[9001-9003]` and `10.0.[1-2].[1-2]:80` (cartesian product, leftmost group varying
//! slowest). A bracket group that contains a `:` is an IPv6 literal (`[::1]:80`), not a range;
//! it may hold ranges itself (`[2001:db8::[1-4]]:80`), and so may a bare IPv6 address
//! (`2001:db8::[1-4]`, the port then the service's). Ranges count in decimal, as text:
//! `2001:db8::[9-10]` gives `2001:db8::9` and `2001:db8::10` (hexadecimal 0x10).
//! This module only expands text; turning each expansion into an address is the caller's job.

use thiserror::Error;

/// The most addresses one pattern may expand to.
pub const MAX_EXPANSION: usize = 65_536;

/// Why a nodeset pattern could not be expanded. Every message quotes the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodesetError {
    /// A `[` without its `]`.
    #[error("malformed range in `{pattern}`: `[` is never closed")]
    Unclosed {
        /// The whole pattern.
        pattern: String,
    },
    /// A `]` without a `[` before it.
    #[error("malformed range in `{pattern}`: `]` without a matching `[`")]
    Unopened {
        /// The whole pattern.
        pattern: String,
    },
    /// A group element that is neither `N` nor `N-M`.
    #[error("malformed range in `{pattern}`: `{element}` is not a number or a range N-M")]
    BadElement {
        /// The whole pattern.
        pattern: String,
        /// The offending element between commas.
        element: String,
    },
    /// `N-M` with `M < N`.
    #[error("malformed range in `{pattern}`: `{element}` runs backwards")]
    Reversed {
        /// The whole pattern.
        pattern: String,
        /// The offending element.
        element: String,
    },
    /// A range group inside a range group.
    #[error(
        "malformed range in `{pattern}`: a range group cannot hold another (only an IPv6 literal's brackets can hold a range, as in [2001:db8::[1-4]]:80)"
    )]
    Nested {
        /// The whole pattern.
        pattern: String,
    },
    /// The product of all groups is larger than [`MAX_EXPANSION`].
    #[error("range `{pattern}` expands to {count} addresses, more than the limit of {MAX_EXPANSION}")]
    TooLarge {
        /// The whole pattern.
        pattern: String,
        /// How many it would have produced.
        count: u128,
    },
}

/// Expands `pattern` into every string it denotes, in order.
///
/// A pattern without range groups expands to itself.
pub fn expand(pattern: &str) -> Result<Vec<String>, NodesetError> {
    let parts = split(pattern)?;
    let mut count: u128 = 1;
    for part in &parts {
        if let Part::Range(values) = part {
            count = count.saturating_mul(values.len() as u128);
        }
    }
    if count > MAX_EXPANSION as u128 {
        return Err(NodesetError::TooLarge {
            pattern: pattern.to_owned(),
            count,
        });
    }
    let mut out = vec![String::new()];
    for part in &parts {
        out = match part {
            Part::Literal(text) => {
                out.iter_mut().for_each(|prefix| prefix.push_str(text));
                out
            }
            Part::Range(values) => out
                .iter()
                .flat_map(|prefix| values.iter().map(move |value| format!("{prefix}{value}")))
                .collect(),
        };
    }
    Ok(out)
}

/// One piece of a pattern: literal text, or the values of a range group.
enum Part {
    Literal(String),
    Range(Vec<String>),
}

fn split(pattern: &str) -> Result<Vec<Part>, NodesetError> {
    let mut parts = Vec::new();
    split_into(pattern, pattern, false, &mut parts)?;
    Ok(parts)
}

/// Splits `text` (all or part of `pattern`) into `parts`. Brackets whose content has a `:`
/// are an IPv6 literal, kept with its brackets, and may hold range groups
/// (`[2001:db8::[1-4]]:80`); `in_literal` is true inside one.
fn split_into(
    pattern: &str,
    text: &str,
    in_literal: bool,
    parts: &mut Vec<Part>,
) -> Result<(), NodesetError> {
    let mut rest = text;
    while !rest.is_empty() {
        let Some(open) = rest.find(['[', ']']) else {
            parts.push(Part::Literal(rest.to_owned()));
            break;
        };
        if rest.as_bytes()[open] == b']' {
            return Err(NodesetError::Unopened {
                pattern: pattern.to_owned(),
            });
        }
        let close = matching(rest, open).ok_or_else(|| NodesetError::Unclosed {
            pattern: pattern.to_owned(),
        })?;
        let inner = &rest[open + 1..close];
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_owned()));
        }
        if inner.contains(':') && !in_literal {
            // An IPv6 literal such as `[::1]` or `[2001:db8::[1-4]]`.
            parts.push(Part::Literal("[".to_owned()));
            split_into(pattern, inner, true, parts)?;
            parts.push(Part::Literal("]".to_owned()));
        } else if inner.contains('[') {
            return Err(NodesetError::Nested {
                pattern: pattern.to_owned(),
            });
        } else {
            parts.push(Part::Range(range_values(pattern, inner)?));
        }
        rest = &rest[close + 1..];
    }
    Ok(())
}

/// The index of the `]` that closes the `[` at `open`, brackets nested between.
fn matching(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, byte) in text.bytes().enumerate().skip(open) {
        match byte {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn range_values(pattern: &str, inner: &str) -> Result<Vec<String>, NodesetError> {
    let mut values = Vec::new();
    for element in inner.split(',') {
        let bad = || NodesetError::BadElement {
            pattern: pattern.to_owned(),
            element: element.to_owned(),
        };
        let (low, high) = match element.split_once('-') {
            Some((low, high)) => (low, high),
            None => (element, element),
        };
        let is_number = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
        if !is_number(low) || !is_number(high) {
            return Err(bad());
        }
        let (first, last): (u64, u64) = (low.parse().map_err(|_| bad())?, high.parse().map_err(|_| bad())?);
        if last < first {
            return Err(NodesetError::Reversed {
                pattern: pattern.to_owned(),
                element: element.to_owned(),
            });
        }
        if last - first >= MAX_EXPANSION as u64 {
            return Err(NodesetError::TooLarge {
                pattern: pattern.to_owned(),
                count: u128::from(last - first + 1),
            });
        }
        // ClusterShell keeps zero padding when both ends are padded to the same width.
        let width = if low.len() == high.len() && low.starts_with('0') && low.len() > 1 {
            low.len()
        } else {
            0
        };
        values.extend((first..=last).map(|n| format!("{n:0width$}")));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(pattern: &str) -> Vec<String> {
        expand(pattern).unwrap()
    }

    #[test]
    fn ipv6_literals_hold_ranges() {
        assert_eq!(ok("[::1]:80"), ["[::1]:80"]);
        assert_eq!(
            ok("[2001:db8::[1-3]]:80"),
            ["[2001:db8::1]:80", "[2001:db8::2]:80", "[2001:db8::3]:80"]
        );
        assert_eq!(ok("2001:db8::[9-10]"), ["2001:db8::9", "2001:db8::10"]);
        assert_eq!(ok("[2001:db8::[1-2]]:[80-81]").len(), 4);
        assert!(matches!(
            expand("10.0.0.[1-[2]]"),
            Err(NodesetError::Nested { .. })
        ));
        assert!(matches!(
            expand("[2001:db8::[1-2]:80"),
            Err(NodesetError::Unclosed { .. })
        ));
    }

    #[test]
    fn plain_address_expands_to_itself() {
        assert_eq!(ok("10.0.0.1:80"), ["10.0.0.1:80"]);
    }

    #[test]
    fn simple_range() {
        assert_eq!(
            ok("10.0.0.[1-4]:80"),
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]
        );
    }

    #[test]
    fn list_and_ranges_keep_order() {
        assert_eq!(
            ok("10.0.0.[1,3,7-9]:80"),
            [
                "10.0.0.1:80",
                "10.0.0.3:80",
                "10.0.0.7:80",
                "10.0.0.8:80",
                "10.0.0.9:80"
            ]
        );
    }

    #[test]
    fn port_range() {
        assert_eq!(
            ok("127.0.0.1:[9001-9003]"),
            ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
        );
    }

    #[test]
    fn cartesian_product_leftmost_slowest() {
        assert_eq!(
            ok("10.0.[1-2].[1-2]:80"),
            ["10.0.1.1:80", "10.0.1.2:80", "10.0.2.1:80", "10.0.2.2:80"]
        );
    }

    #[test]
    fn ipv6_literal_is_not_a_range() {
        assert_eq!(ok("[::1]:80"), ["[::1]:80"]);
        assert_eq!(
            ok("[2001:db8::1]:[80-81]"),
            ["[2001:db8::1]:80", "[2001:db8::1]:81"]
        );
    }

    #[test]
    fn single_value_group() {
        assert_eq!(ok("10.0.0.[5]:80"), ["10.0.0.5:80"]);
    }

    #[test]
    fn zero_padding_is_kept() {
        assert_eq!(ok("h[08-10]"), ["h08", "h09", "h10"]);
    }

    #[test]
    fn malformed_ranges_quote_the_pattern() {
        let cases = [
            ("10.0.0.[1-4:80", "is never closed"),
            ("10.0.0.1-4]:80", "without a matching"),
            ("10.0.0.[1-]:80", "`1-` is not a number"),
            ("10.0.0.[a-b]:80", "`a-b` is not a number"),
            ("10.0.0.[]:80", "`` is not a number"),
            ("10.0.0.[1,,2]:80", "`` is not a number"),
            ("10.0.0.[5-3]:80", "runs backwards"),
            ("10.0.0.[[1-2]]:80", "cannot hold another"),
        ];
        for (pattern, needle) in cases {
            let message = expand(pattern).unwrap_err().to_string();
            assert!(message.contains(pattern), "{message}");
            assert!(message.contains(needle), "{pattern}: {message}");
        }
    }

    #[test]
    fn expansion_is_capped() {
        assert!(expand("10.[0-255].[0-255].[0-1]:80").is_err());
        assert_eq!(expand("10.0.[0-255].[0-255]:80").unwrap().len(), 65_536);
        let message = expand("127.0.0.1:[1-99999999]").unwrap_err().to_string();
        assert!(message.contains("more than the limit"), "{message}");
    }

    proptest::proptest! {
        #[test]
        fn range_expands_to_its_length(first in 0u32..1000, len in 1u32..50) {
            let last = first + len - 1;
            let got = expand(&format!("x[{first}-{last}]")).unwrap();
            proptest::prop_assert_eq!(got.len() as u32, len);
            proptest::prop_assert_eq!(&got[0], &format!("x{first}"));
        }
    }
}
