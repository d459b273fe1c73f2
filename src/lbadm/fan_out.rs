//! `lbadm -w NODESET`: one command on several directors in parallel, identical answers shown
//! once with the directors that gave them, as ClusterShell's `clush -b` gathers them.

use super::Failure;

/// The most directors one `-w` may name.
pub(super) const MAX_DIRECTORS: usize = 1024;

/// What one director answered: its output, or the failure (status, message).
pub(super) type Outcome = Result<String, (u8, String)>;

/// The admin addresses `nodeset` names, in order.
pub(super) fn endpoints(nodeset: &str) -> Result<Vec<String>, Failure> {
    let usage = |message: String| Failure { status: 2, message };
    let mut endpoints = Vec::new();
    for part in split_top_level(nodeset) {
        let expanded = crate::config::nodeset::expand(part).map_err(|error| usage(format!("-w: {error}")))?;
        endpoints.extend(expanded);
        if endpoints.len() > MAX_DIRECTORS {
            return Err(usage(format!(
                "-w: `{nodeset}` names more than {MAX_DIRECTORS} directors"
            )));
        }
    }
    if endpoints.is_empty() {
        return Err(usage("-w: no director named".to_owned()));
    }
    Ok(endpoints)
}

/// `a[1-2]:9900,b:9900` → `a[1-2]:9900`, `b:9900` (commas inside brackets stay).
fn split_top_level(nodeset: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in nodeset.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&nodeset[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&nodeset[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect()
}

/// The answers gathered: each distinct outcome once, under the directors that gave it (in
/// the order first seen), and the exit status (0, or the highest of the failures').
pub(super) fn gather(answers: &[(String, Outcome)]) -> (String, u8) {
    let mut groups: Vec<(&Outcome, Vec<&str>)> = Vec::new();
    for (endpoint, outcome) in answers {
        match groups.iter_mut().find(|(seen, _)| *seen == outcome) {
            Some((_, endpoints)) => endpoints.push(endpoint),
            None => groups.push((outcome, vec![endpoint])),
        }
    }
    let mut text = String::new();
    for (outcome, endpoints) in &groups {
        let title = format!("{} ({})", fold(endpoints), endpoints.len());
        let rule = "-".repeat(title.chars().count().clamp(15, 79));
        text.push_str(&format!("{rule}\n{title}\n{rule}\n"));
        match outcome {
            Ok(output) => text.push_str(output),
            Err((_, message)) => text.push_str(&format!("lbadm: {message}\n")),
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    let status = answers
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().err().map(|(status, _)| *status))
        .max()
        .unwrap_or(0);
    (text, status)
}

/// Names as a node set: names that differ in one number only are folded into a range
/// (`10.0.0.21:9900`, `10.0.0.22:9900` → `10.0.0.[21-22]:9900`); others are listed.
pub(super) fn fold(names: &[&str]) -> String {
    let tokens: Vec<Vec<&str>> = names.iter().map(|name| tokenize(name)).collect();
    if names.len() > 1
        && let Some(index) = varying_number(&tokens)
    {
        let mut numbers: Vec<(u64, &str)> = tokens
            .iter()
            .map(|parts| (parts[index].parse().unwrap_or(0), parts[index]))
            .collect();
        numbers.sort();
        numbers.dedup();
        let mut ranges: Vec<String> = Vec::new();
        let mut i = 0;
        while i < numbers.len() {
            let mut j = i;
            while j + 1 < numbers.len()
                && numbers[j + 1].0 == numbers[j].0 + 1
                && numbers[j + 1].1.len() == numbers[i].1.len()
            {
                j += 1;
            }
            ranges.push(if i == j {
                numbers[i].1.to_owned()
            } else {
                format!("{}-{}", numbers[i].1, numbers[j].1)
            });
            i = j + 1;
        }
        let parts = &tokens[0];
        return format!(
            "{}[{}]{}",
            parts[..index].concat(),
            ranges.join(","),
            parts[index + 1..].concat()
        );
    }
    names.join(",")
}

/// Splits into runs of digits and runs of anything else.
fn tokenize(name: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let bytes = name.as_bytes();
    for i in 1..=bytes.len() {
        if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
            tokens.push(&name[start..i]);
            start = i;
        }
    }
    tokens
}

/// The one numeric token position where the names differ, if they differ in one only.
fn varying_number(tokens: &[Vec<&str>]) -> Option<usize> {
    let first = tokens.first()?;
    if tokens.iter().any(|parts| parts.len() != first.len()) {
        return None;
    }
    let differing: Vec<usize> = (0..first.len())
        .filter(|&i| tokens.iter().any(|parts| parts[i] != first[i]))
        .collect();
    match differing.as_slice() {
        [index]
            if tokens
                .iter()
                .all(|parts| parts[*index].bytes().all(|b| b.is_ascii_digit())) =>
        {
            Some(*index)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_sets_expand_and_fold_back() {
        let names = endpoints("10.0.0.[21-23]:9900,d1:9900").unwrap();
        assert_eq!(
            names,
            ["10.0.0.21:9900", "10.0.0.22:9900", "10.0.0.23:9900", "d1:9900"]
        );
        assert_eq!(
            fold(&["10.0.0.21:9900", "10.0.0.22:9900", "10.0.0.23:9900"]),
            "10.0.0.[21-23]:9900"
        );
        assert_eq!(fold(&["d1:9900", "d3:9900", "d4:9900"]), "d[1,3-4]:9900");
        assert_eq!(fold(&["d1:9900"]), "d1:9900");
        assert_eq!(fold(&["a1:9900", "b2:9900"]), "a1:9900,b2:9900");
        assert!(endpoints("d[1-").is_err());
        assert!(
            endpoints("d[1-2000]:1")
                .unwrap_err()
                .message
                .contains("more than")
        );
    }

    #[test]
    fn identical_answers_are_shown_once_and_failures_set_the_status() {
        let answers = vec![
            ("d1:9900".to_owned(), Ok("table A\n".to_owned())),
            ("d2:9900".to_owned(), Ok("table A\n".to_owned())),
            ("d3:9900".to_owned(), Ok("table B\n".to_owned())),
            (
                "d4:9900".to_owned(),
                Err((3, "cannot reach the director at d4:9900".to_owned())),
            ),
        ];
        let (text, status) = gather(&answers);
        assert_eq!(status, 3);
        assert_eq!(
            text,
            "---------------\nd[1-2]:9900 (2)\n---------------\ntable A\n\
             ---------------\nd3:9900 (1)\n---------------\ntable B\n\
             ---------------\nd4:9900 (1)\n---------------\nlbadm: cannot reach the director at d4:9900\n"
        );
    }
}
