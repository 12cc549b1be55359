//! Journal upkeep: prunes what the settlement journal no longer needs, at start and then
//! periodically, so it does not grow without bound (`settlement.journal_retention_days`).
//!
//! What may go, and what never does (an unsettled payment, a failure the loss budget still
//! counts, an authorization that could still be used), is the journal's call:
//! [`x402_store::Journal::prune`]. Here is only when: passes of a bounded number of rows,
//! one write transaction each, on the journal's writer thread, so a large backlog (the first
//! start after an upgrade to this version, say) never holds the paid requests' commits for
//! long; the next pass is queued after the one before committed, so their writes go first.

use prometheus::IntCounterVec;
use std::sync::Arc;
use std::time::Duration;
use x402_store::{Journal, JournalError, PrunePolicy, PruneReport};

/// Most payments (and most batches) deleted per pass. Measured on a journal of 20,000
/// settled payments (debug build, 2 busy cores, fsync included): a pass of 2,000 took 34 ms,
/// one of 10,000 73 ms, and paid requests whose commit queues behind a pass wait that long.
/// Each pass's time is logged as `pass_ms`.
pub const MAX_ROWS_PER_PASS: usize = 2_000;

/// How often pruning runs at most: a retention of days has nothing new to prune sooner.
const LONGEST_INTERVAL: Duration = Duration::from_secs(600);

/// How often pruning runs for `retention`: a quarter of it, between one second and ten
/// minutes, so a retention of seconds (tests) is kept to within about a quarter of itself.
pub fn interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), LONGEST_INTERVAL)
}

/// Starts upkeep on a thread of its own until `shutdown`; `pruned` counts deleted rows by
/// table.
pub fn spawn(
    journal: Arc<Journal>,
    retention: Duration,
    pruned: IntCounterVec,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("journal-upkeep".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => runtime,
            Err(error) => return tracing::error!(%error, "journal upkeep could not start; the journal is not pruned"),
        };
        runtime.block_on(async move {
            let every = interval(retention);
            tracing::info!(retention_seconds = retention.as_secs_f64(), every_seconds = every.as_secs_f64(), "journal upkeep started");
            while !*shutdown.borrow() {
                if let Err(error) = prune_all(&journal, retention, &pruned).await {
                    tracing::warn!(%error, "journal pruning failed; it is tried again at the next interval");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => {}
                }
            }
        });
    })?;
    Ok(())
}

/// Prunes everything past `retention`, pass after pass, and returns what went.
pub async fn prune_all(journal: &Journal, retention: Duration, pruned: &IntCounterVec) -> Result<PruneReport, JournalError> {
    let mut total = PruneReport::default();
    loop {
        let started = std::time::Instant::now();
        let policy = PrunePolicy { retention, now_ms: x402_store::unix_now_ms(), max_rows: MAX_ROWS_PER_PASS };
        let report = journal.prune(policy).await?;
        for (table, rows) in report.by_table() {
            pruned.with_label_values(&[table]).inc_by(rows);
        }
        if report.total() > 0 {
            tracing::info!(
                payments = report.payments,
                payment_transactions = report.payment_transactions,
                batches = report.batches,
                payer_blocks = report.payer_blocks,
                loss_resets = report.loss_resets,
                pass_ms = started.elapsed().as_millis() as u64,
                more = report.more,
                "journal pruned"
            );
        }
        total += report;
        if !report.more {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_follows_the_retention_within_bounds() {
        assert_eq!(interval(Duration::from_secs(30 * 86_400)), LONGEST_INTERVAL);
        assert_eq!(interval(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(interval(Duration::from_millis(100)), Duration::from_secs(1));
    }
}
