//! The up/down state machine of one checked real: `rise` consecutive passes to go up, `fall`
//! consecutive failures to go down, weights set by passing checks. Pure: no I/O, no clock
//! reads.

use std::{fmt, time::SystemTime};

use crate::table::{CheckRecord, CheckResult, DynamicWeight};

/// What one check (or one passive connect failure) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Whether the real passed.
    pub passed: bool,
    /// What was seen, for logs and listings.
    pub reason: String,
    /// A weight the check sets (exec exit codes 2..255, agent `N%`).
    pub weight: Option<DynamicWeight>,
    /// The agent asked to start (`Some(true)`) or stop (`Some(false)`) draining.
    pub drain: Option<bool>,
    /// A failure that takes the real down at once, whatever `fall` says: the real's own agent
    /// said it is down or in maintenance.
    pub immediate: bool,
    /// The check could not run for want of this host's resources (descriptors, ports): it
    /// says nothing of the real, and is not applied.
    pub local: bool,
}

impl Outcome {
    /// A pass that leaves the weight alone.
    pub(crate) fn pass(reason: impl Into<String>) -> Self {
        Self {
            passed: true,
            reason: reason.into(),
            weight: None,
            drain: None,
            immediate: false,
            local: false,
        }
    }

    /// A failure.
    pub(crate) fn fail(reason: impl Into<String>) -> Self {
        Self {
            passed: false,
            ..Self::pass(reason)
        }
    }

    /// A check that could not run because this host lacks a resource; no verdict.
    pub(crate) fn local(reason: impl Into<String>) -> Self {
        Self {
            local: true,
            ..Self::fail(reason)
        }
    }

    /// The outcome of an I/O error while checking: a failure of the real, or for this host's
    /// own shortages ([`crate::host::is_local`]) no verdict.
    pub(crate) fn io_failure(error: &std::io::Error, reason: String) -> Self {
        if crate::host::is_local(error) {
            Self::local(reason)
        } else {
            Self::fail(reason)
        }
    }

    /// The same outcome, also setting the weight.
    pub(crate) fn with_weight(self, weight: DynamicWeight) -> Self {
        Self {
            weight: Some(weight),
            ..self
        }
    }
}

/// How a real looks to scheduling: the verdict and the weight the checks set. A change of it
/// is what gets logged and published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Up or down.
    pub up: bool,
    /// The weight the checks set.
    pub weight: DynamicWeight,
    /// Draining: weight 0 while up.
    pub drain: bool,
}

impl Verdict {
    fn of(record: &CheckRecord) -> Self {
        Self {
            up: record.up,
            weight: record.weight,
            drain: record.drain,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.up { "up" } else { "down" })?;
        match self.weight {
            DynamicWeight::Configured => {}
            DynamicWeight::Fixed(weight) => write!(f, ", weight {weight}")?,
            DynamicWeight::Percent(percent) => write!(f, ", weight {percent}%")?,
        }
        if self.drain {
            f.write_str(", draining")?;
        }
        Ok(())
    }
}

/// A change of verdict, to log once and publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// Before.
    pub from: Verdict,
    /// After.
    pub to: Verdict,
    /// The result that caused it.
    pub reason: String,
}

/// Applies `outcome` to `record`; returns the change of verdict, if any.
pub(crate) fn apply(
    record: &mut CheckRecord,
    outcome: Outcome,
    rise: u32,
    fall: u32,
    now: SystemTime,
) -> Option<Change> {
    let from = Verdict::of(record);
    if let Some(weight) = outcome.weight {
        record.weight = weight;
    }
    if let Some(drain) = outcome.drain {
        record.drain = drain;
    }
    if outcome.passed {
        record.failures = 0;
        record.successes = record.successes.saturating_add(1);
        if !record.up && record.successes >= rise {
            record.up = true;
        }
    } else {
        record.successes = 0;
        record.failures = record.failures.saturating_add(1);
        if record.up && (outcome.immediate || record.failures >= fall) {
            record.up = false;
        }
    }
    if record.up != from.up {
        record.since = now;
    }
    record.last = Some(CheckResult {
        passed: outcome.passed,
        reason: outcome.reason,
        at: now,
    });
    let to = Verdict::of(record);
    (to != from).then(|| Change {
        from,
        to,
        reason: record
            .last
            .as_ref()
            .map(|last| last.reason.clone())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::CheckStatus;

    fn fresh(up: bool) -> CheckRecord {
        CheckStatus::new(up).record()
    }

    /// Feeds `passes` (true = pass) and returns the verdict after each.
    fn run(record: &mut CheckRecord, results: &[bool], rise: u32, fall: u32) -> Vec<bool> {
        results
            .iter()
            .map(|&passed| {
                let outcome = if passed {
                    Outcome::pass("ok")
                } else {
                    Outcome::fail("refused")
                };
                apply(record, outcome, rise, fall, SystemTime::now());
                record.up
            })
            .collect()
    }

    #[test]
    fn fall_consecutive_failures_take_a_real_down() {
        let mut record = fresh(true);
        // Two failures, a pass (the streak restarts), then three failures.
        let seen = run(&mut record, &[false, false, true, false, false, false], 2, 3);
        assert_eq!(seen, [true, true, true, true, true, false]);
    }

    #[test]
    fn rise_consecutive_passes_bring_it_back() {
        let mut record = fresh(false);
        let seen = run(&mut record, &[true, false, true, true], 2, 3);
        assert_eq!(seen, [false, false, false, true]);
    }

    #[test]
    fn a_change_is_reported_once_with_its_reason() {
        let mut record = fresh(true);
        let now = SystemTime::now();
        assert_eq!(
            apply(&mut record, Outcome::fail("HTTP 503"), 1, 1, now)
                .unwrap()
                .reason,
            "HTTP 503"
        );
        assert_eq!(apply(&mut record, Outcome::fail("HTTP 503"), 1, 1, now), None);
        let change = apply(&mut record, Outcome::pass("HTTP 200"), 1, 1, now).unwrap();
        assert_eq!(
            format!("{} -> {} ({})", change.from, change.to, change.reason),
            "down -> up (HTTP 200)"
        );
        assert_eq!(record.last.as_ref().unwrap().reason, "HTTP 200");
    }

    #[test]
    fn weights_apply_at_once_while_up_and_wait_for_rise_while_down() {
        let mut record = fresh(true);
        let now = SystemTime::now();
        let change = apply(
            &mut record,
            Outcome::pass("exec exit 7").with_weight(DynamicWeight::Fixed(5)),
            2,
            3,
            now,
        )
        .unwrap();
        assert_eq!(change.to.to_string(), "up, weight 5");
        assert_eq!(record.effective_weight(1), 5);

        let mut down = fresh(false);
        apply(
            &mut down,
            Outcome::pass("agent: 50%").with_weight(DynamicWeight::Percent(50)),
            2,
            3,
            now,
        );
        assert!(!down.up);
        assert_eq!(down.weight, DynamicWeight::Percent(50));
    }

    #[test]
    fn drain_stops_new_flows_and_up_ends_it() {
        let mut record = fresh(true);
        let now = SystemTime::now();
        let drain = Outcome {
            drain: Some(true),
            ..Outcome::pass("agent: drain")
        };
        assert_eq!(
            apply(&mut record, drain, 2, 3, now).unwrap().to.to_string(),
            "up, draining"
        );
        assert_eq!(record.effective_weight(4), 0);
        let up = Outcome {
            drain: Some(false),
            ..Outcome::pass("agent: up")
        };
        apply(&mut record, up, 2, 3, now);
        assert_eq!(record.effective_weight(4), 4);
    }

    #[test]
    fn an_immediate_failure_ignores_fall() {
        let mut record = fresh(true);
        let maint = Outcome {
            immediate: true,
            ..Outcome::fail("agent: maint")
        };
        let change = apply(&mut record, maint, 2, 3, SystemTime::now()).unwrap();
        assert!(!change.to.up);
    }
}
