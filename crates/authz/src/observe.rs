//! Metrics, through the [`metrics`] facade: whatever exporter the service
//! installs (Prometheus, StatsD, …) receives them; with none installed,
//! each costs a check and nothing more.
//!
//! The [`Authorizer`](crate::Authorizer) records nothing itself, so that
//! its hot path stays one read of the state: whoever decides for a request
//! (the tower layer, or the service) calls [`record_decision`].
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `tokenledger_decisions_total` | counter | `verdict` (`allow`, `refuse`), `rule` (the rule that refused, or `none`) |
//! | `tokenledger_decision_seconds` | histogram | `verdict` |
//! | `tokenledger_commands_total` | counter | `outcome` (`recorded`, `refused`, `failed`) |
//! | `tokenledger_command_seconds` | histogram | `outcome` |
//! | `tokenledger_command_group_size` | histogram | |
//! | `tokenledger_head_position` | gauge | |
//! | `tokenledger_applied_position` | gauge | |
//! | `tokenledger_events_since_checkpoint` | gauge | |
//! | `tokenledger_checkpoint_unixtime_seconds` | gauge | (its age is now minus this) |
//! | `tokenledger_closed` | gauge | 1 once the ledger closed (an append whose outcome is unknown, a poisoned log) |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::decision::Decision;
use crate::ledger::LedgerError;

/// Decisions, by verdict and rule.
pub const DECISIONS: &str = "tokenledger_decisions_total";
/// How long a decision took, by verdict.
pub const DECISION_SECONDS: &str = "tokenledger_decision_seconds";
/// Commands, by outcome.
pub const COMMANDS: &str = "tokenledger_commands_total";
/// How long a command took, from its call to its answer, by outcome.
pub const COMMAND_SECONDS: &str = "tokenledger_command_seconds";
/// How many commands were appended together.
pub const COMMAND_GROUP_SIZE: &str = "tokenledger_command_group_size";
/// The log's durable head.
pub const HEAD_POSITION: &str = "tokenledger_head_position";
/// The position of the state readers are answered from.
pub const APPLIED_POSITION: &str = "tokenledger_applied_position";
/// Events appended since the newest checkpoint of the state.
pub const EVENTS_SINCE_CHECKPOINT: &str = "tokenledger_events_since_checkpoint";
/// When the newest checkpoint was written or loaded, in seconds since the
/// Unix epoch.
pub const CHECKPOINT_UNIXTIME: &str = "tokenledger_checkpoint_unixtime_seconds";
/// 1 once the ledger has closed, 0 while it is open.
pub const CLOSED: &str = "tokenledger_closed";

/// Counts `decision` by verdict and rule, and records how long it took
/// (`elapsed`, measured by the caller around the decision).
pub fn record_decision(decision: &Decision, elapsed: Duration) {
    let (verdict, rule) = match &decision.refusal {
        None => ("allow", "none"),
        Some(refusal) => ("refuse", refusal.rule.as_str()),
    };
    metrics::counter!(DECISIONS, "verdict" => verdict, "rule" => rule).increment(1);
    metrics::histogram!(DECISION_SECONDS, "verdict" => verdict).record(elapsed.as_secs_f64());
}

/// Counts a command by outcome and records its latency.
pub(crate) fn command<T>(outcome: &Result<T, LedgerError>, elapsed: Duration) {
    let outcome = match outcome {
        Ok(_) => "recorded",
        Err(LedgerError::Refused(_)) => "refused",
        Err(_) => "failed",
    };
    metrics::counter!(COMMANDS, "outcome" => outcome).increment(1);
    metrics::histogram!(COMMAND_SECONDS, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// Records a group's size and the positions it left.
pub(crate) fn group(size: usize, head: u64, applied: u64, last_checkpoint: u64) {
    metrics::histogram!(COMMAND_GROUP_SIZE).record(size as f64);
    positions(head, applied, last_checkpoint);
}

/// Records the head, the applied position and the events since the
/// newest checkpoint.
pub(crate) fn positions(head: u64, applied: u64, last_checkpoint: u64) {
    metrics::gauge!(HEAD_POSITION).set(head as f64);
    metrics::gauge!(APPLIED_POSITION).set(applied as f64);
    metrics::gauge!(EVENTS_SINCE_CHECKPOINT).set(head.saturating_sub(last_checkpoint) as f64);
}

/// Records that a checkpoint was written or loaded now.
pub(crate) fn checkpoint() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(CHECKPOINT_UNIXTIME).set(now.as_secs_f64());
}

/// Records whether the ledger is closed.
pub(crate) fn closed(closed: bool) {
    metrics::gauge!(CLOSED).set(if closed { 1.0 } else { 0.0 });
}
