//! The stall guard: notices that settlement has stopped keeping its promises and says so,
//! so the gateway stops taking new payments before the ones it already took can expire.
//!
//! It watches from outside the settler, whatever the cause (an RPC node down, gas above the
//! cap, a settlement account out of gas money, a transaction stuck in the mempool), through
//! three symptoms checked every second:
//! - every RPC URL of a network has failed for `stall_after`;
//! - the oldest unsettled payment has waited longer than `stall_after` plus a batch window,
//!   and no payment has settled for as long (a settler that settles, however far behind, is
//!   not stalled: admission by capacity, in [`crate::admission`], keeps its backlog in time);
//! - an unsettled payment is less than `expiry_guard` away from its `validBefore`.
//!
//! [`SettlementHealth`] is what the request path reads: one atomic load per priced request.

use crate::chain::ChainClient;
use crate::metrics::SettlementMetrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use x402_store::{unix_now, unix_now_ms, Journal};

/// Why settlement is stalled, for answers, readiness, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// A short label for metrics: `rpc_unreachable`, `not_progressing`, `near_expiry`.
    pub cause: &'static str,
    pub message: String,
}

/// Whether new payments may be taken, shared by the guard (writer) and the proxy (reader).
#[derive(Debug, Default)]
pub struct SettlementHealth {
    stalled: AtomicBool,
    stall: Mutex<Option<Stall>>,
}

impl SettlementHealth {
    /// The current stall, if any. Costs one atomic load when there is none.
    pub fn stall(&self) -> Option<Stall> {
        if !self.stalled.load(Ordering::Acquire) {
            return None;
        }
        self.stall.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set(&self, stall: Option<Stall>) {
        let mut current = self.stall.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match (&*current, &stall) {
            (None, Some(new)) => tracing::error!(cause = new.cause, reason = %new.message, "settlement stalled: priced routes refuse new payments"),
            (Some(old), None) => tracing::warn!(cause = old.cause, "settlement recovered: priced routes take payments again"),
            (Some(old), Some(new)) if old.cause != new.cause => {
                tracing::error!(cause = new.cause, reason = %new.message, "settlement still stalled, for another reason")
            }
            _ => {}
        }
        self.stalled.store(stall.is_some(), Ordering::Release);
        *current = stall;
    }
}

/// When the guard calls a stall.
#[derive(Debug, Clone, Copy)]
pub struct StallPolicy {
    /// How long an RPC outage, or a payment waiting beyond its batch window, is tolerated.
    pub stall_after: Duration,
    /// The batch window: a payment may wait this long before its batch goes out.
    pub batch_window: Duration,
    /// An unsettled payment this close to its `validBefore` means settlement is not keeping up.
    pub expiry_guard: Duration,
}

/// Watches settlement and keeps a [`SettlementHealth`] up to date.
pub struct StallGuard {
    pub journal: Arc<Journal>,
    /// (network name, client) per settled network.
    pub networks: Vec<(String, ChainClient)>,
    pub policy: StallPolicy,
    pub health: Arc<SettlementHealth>,
    /// The settler's counters: whether any payment settled lately.
    pub metrics: Arc<SettlementMetrics>,
}

impl StallGuard {
    /// Checks every second until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut unreachable_since: Vec<Option<(Instant, String)>> = vec![None; self.networks.len()];
        let (mut settled, mut last_progress) = (self.metrics.settled_total(), Instant::now());
        loop {
            let now_settled = self.metrics.settled_total();
            if now_settled != settled {
                (settled, last_progress) = (now_settled, Instant::now());
            }
            for ((_, client), since) in self.networks.iter().zip(unreachable_since.iter_mut()) {
                // Each RPC URL gets a bounded time to answer (see `ChainClient`), then the next.
                match client.head().await {
                    Ok(_) => *since = None,
                    Err(error) => *since = Some(since.take().map_or_else(|| (Instant::now(), error.to_string()), |(at, _)| (at, error.to_string()))),
                }
            }
            self.health.set(self.diagnose(&unreachable_since, last_progress.elapsed()));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    fn diagnose(&self, unreachable_since: &[Option<(Instant, String)>], since_progress: Duration) -> Option<Stall> {
        for ((network, _), since) in self.networks.iter().zip(unreachable_since) {
            if let Some((at, error)) = since.as_ref().filter(|(at, _)| at.elapsed() >= self.policy.stall_after) {
                let message = format!("no RPC node of {network} has answered for {} s ({error})", at.elapsed().as_secs());
                return Some(Stall { cause: "rpc_unreachable", message });
            }
        }
        let now_ms = unix_now_ms();
        match self.journal.oldest_unsettled_ms() {
            Ok(Some(oldest)) => {
                let waited = Duration::from_millis(now_ms.saturating_sub(oldest));
                let tolerated = self.policy.stall_after.saturating_add(self.policy.batch_window);
                if waited > tolerated && since_progress > tolerated {
                    let message = format!("the oldest unsettled payment has waited {} s for settlement, and none has settled for {} s", waited.as_secs(), since_progress.as_secs());
                    return Some(Stall { cause: "not_progressing", message });
                }
            }
            Ok(None) => {}
            Err(error) => return Some(Stall { cause: "journal_unreadable", message: format!("the journal cannot be read: {error}") }),
        }
        match self.journal.earliest_unsettled_deadline() {
            Ok(Some(deadline)) if deadline < unix_now() + self.policy.expiry_guard.as_secs() => {
                let message = format!("an unsettled payment expires in {} s", deadline.saturating_sub(unix_now()));
                Some(Stall { cause: "near_expiry", message })
            }
            Ok(_) => None,
            Err(error) => Some(Stall { cause: "journal_unreadable", message: format!("the journal cannot be read: {error}") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_what_was_set_and_clears() {
        let health = SettlementHealth::default();
        assert_eq!(health.stall(), None);
        let stall = Stall { cause: "rpc_unreachable", message: "down".into() };
        health.set(Some(stall.clone()));
        assert_eq!(health.stall(), Some(stall));
        health.set(None);
        assert_eq!(health.stall(), None);
    }
}
