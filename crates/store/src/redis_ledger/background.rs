//! What the Redis ledger does off the request path: the settler's updates, applied in order
//! and retried until the store takes them, and a once-a-second watch that sweeps stale counts,
//! reports the store's health and notices a store that lost its data.

use super::endpoint::{self, Reconnected};
use super::{Inner, SKEW_GRACE_MS};
use redis::aio::ConnectionManager;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// With a plain URL, a connection whose checks fail this many times in a row is opened again.
const RECONNECT_AFTER_FAILED_CHECKS: u32 = 3;

/// Updates the settler and the request path send without waiting.
#[derive(Debug)]
pub(super) enum LedgerUpdate {
    /// The payment settled or failed: it stops counting.
    Resolved { receipt_id: String, expire_at_ms: u64 },
    /// A hold whose answer never came (a timeout): undone if it is still this hold.
    Release { receipt_id: String, token: u64, valid_before: u64, keep: bool },
    /// With the budget in force when the loss was recorded.
    Loss { usd_micros: u64, forgive: bool, now: u64, per_day: Option<u64> },
    Block { payer: String, reason: String, until: u64 },
}

/// Applies the updates in order, retrying each until the store takes it.
pub(super) async fn apply_updates(inner: Arc<Inner>, mut queue: mpsc::UnboundedReceiver<LedgerUpdate>) {
    while let Some(update) = queue.recv().await {
        let mut delay = Duration::from_millis(50);
        while let Err(error) = apply(&inner, &update).await {
            inner.health.failed(&error.to_string());
            tracing::warn!(?update, %error, "shared store update failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        inner.health.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn apply(inner: &Inner, update: &LedgerUpdate) -> redis::RedisResult<()> {
    // A release follows its hold on the hold's socket: a late hold queued behind a `WAIT`
    // must not run after the release meant to undo it.
    let mut connection = match update {
        LedgerUpdate::Release { .. } => inner.primary.waiting_connection(),
        _ => inner.primary.connection(),
    };
    let (keys, scripts) = (&inner.keys, &inner.scripts);
    match update {
        LedgerUpdate::Resolved { receipt_id, expire_at_ms } => {
            let mut invocation = scripts.resolve.key(keys.reservation(receipt_id));
            invocation.key(keys.exposure()).arg(*expire_at_ms);
            invocation.invoke_async::<i64>(&mut connection).await.map(drop)
        }
        LedgerUpdate::Release { receipt_id, token, valid_before, keep } => {
            let mut invocation = scripts.release.key(keys.reservation(receipt_id));
            invocation.key(keys.exposure()).arg(*token).arg(u8::from(*keep)).arg(valid_before.saturating_mul(1000).saturating_add(SKEW_GRACE_MS));
            invocation.invoke_async::<i64>(&mut connection).await.map(drop)
        }
        LedgerUpdate::Loss { usd_micros, forgive, now, per_day } => {
            let (add, forgiven) = if *forgive { (0, *usd_micros) } else { (*usd_micros, 0) };
            let mut invocation = scripts.losses.key(keys.losses());
            invocation.arg(super::scripts::limit_arg(*per_day)).arg(*now).arg(add).arg(forgiven).arg("");
            invocation.invoke_async::<i64>(&mut connection).await.map(drop)
        }
        LedgerUpdate::Block { payer, reason, until } => {
            redis::cmd("HSET").arg(keys.blocks()).arg(payer).arg(format!("{until}|{reason}")).query_async::<i64>(&mut connection).await.map(drop)
        }
    }
}

/// Every second, or at once when a call found the store without this replica's generation or
/// its primary demoted: sweeps payments nobody resolved a day past their `validBefore`,
/// reports whether the store answers, connects to the primary again after a failover, and
/// recovers from a store that lost its data.
pub(super) async fn watch(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut failed_checks = 0u32;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = inner.watch_now.notified() => {}
        }
        let mut connection = inner.primary.connection();
        let demoted = match tokio::time::timeout(Duration::from_secs(1), check(&inner, &mut connection)).await {
            Ok(Ok(())) => {
                inner.health.answered();
                failed_checks = 0;
                false
            }
            Ok(Err(error)) => {
                inner.health.failed(&error.to_string());
                failed_checks += 1;
                endpoint::is_demoted(&error)
            }
            Err(_) => {
                inner.health.failed("no answer to the store check within 1 s");
                failed_checks += 1;
                false
            }
        };
        let demoted = inner.primary_moved.swap(false, Ordering::Relaxed) || demoted;
        // Behind Sentinels, a primary that stopped answering may have been replaced; a server
        // that hangs with its connection open is never reconnected by the client itself.
        let stuck = failed_checks > 0 && (inner.primary.is_sentinel() || failed_checks.is_multiple_of(RECONNECT_AFTER_FAILED_CHECKS));
        if demoted || stuck {
            match inner.primary.reconnect(demoted).await {
                Ok(Reconnected::SamePrimary) => {}
                Ok(Reconnected::NewPrimary) => {
                    // What the old primary acknowledged and had not replicated is gone: the
                    // journal goes back in (behind the same quarantine as a store that lost
                    // everything) before this replica takes payments again.
                    tracing::warn!("connected to a new primary of the shared store: restoring this replica's journal into it before taking payments again");
                    inner.forget_generation();
                }
                Ok(Reconnected::TooSoon) => inner.primary_moved.store(demoted, Ordering::Relaxed),
                Err(error) => tracing::error!(%error, "cannot find the shared store's primary; retrying"),
            }
        }
        if inner.generation_lost() {
            if let Err(error) = inner.recover().await {
                tracing::error!(%error, "cannot restore this replica's journal into the shared store; retrying");
            }
        }
    }
}

async fn check(inner: &Inner, connection: &mut ConnectionManager) -> redis::RedisResult<()> {
    let mut sweep = inner.scripts.sweep.key(inner.keys.exposure());
    sweep.arg(crate::unix_now_ms());
    let swept: i64 = sweep.invoke_async(connection).await?;
    if swept > 0 {
        tracing::warn!(swept, "payments still unsettled a day past their validBefore no longer count against the exposure limits");
    }
    let generation: Option<String> = redis::cmd("HGET").arg(inner.keys.generation()).arg("id").query_async(connection).await?;
    if generation.as_deref() != Some(inner.generation().as_str()) {
        inner.lose_generation();
    }
    Ok(())
}
