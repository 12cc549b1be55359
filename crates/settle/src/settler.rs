//! The settlement loop.

use crate::chain::{ChainClient, ChainError};
use alloy_primitives::{Address, Bytes, Signature, B256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use x402_evm::calldata;
use x402_evm::verify::{parse_authorization, parse_signature, Authorization};
use x402_store::{unix_now, unix_now_ms, Journal, PaymentRecord, PaymentState};

/// When a batch goes out and how long the settler waits for it.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    /// Most payments per transaction (bounded by the chain's per-transaction gas cap:
    /// ~38k gas each through `aggregate3`).
    pub max_batch: usize,
    /// Longest a payment waits for its batch to fill.
    pub max_wait: Duration,
    /// A batch goes out at once when a payment's `validBefore` is this close.
    pub urgent_secs: u64,
    /// A payment with less time than this left before `validBefore` cannot be landed safely
    /// and is marked `failed: expired`.
    pub min_time_left_secs: u64,
    pub receipt_timeout: Duration,
    /// Pause after an RPC failure before the next attempt.
    pub retry_backoff: Duration,
    /// How far back to look for `AuthorizationUsed` events when reconciling.
    pub log_lookback_blocks: u64,
    /// A payment sent this many times without landing is marked failed rather than sent
    /// again: each attempt costs gas.
    pub max_attempts: u32,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            max_batch: 100,
            max_wait: Duration::from_secs(2),
            urgent_secs: 20,
            min_time_left_secs: 4,
            receipt_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            log_lookback_blocks: 10_000,
            max_attempts: 5,
        }
    }
}

/// One network the settler settles on.
pub struct NetworkSettlement {
    /// CAIP-2 id, as journal items carry it.
    pub network: String,
    pub multicall: Address,
    pub client: ChainClient,
}

pub struct Settler {
    journal: Arc<Journal>,
    networks: Vec<NetworkSettlement>,
    policy: BatchPolicy,
}

/// A journal record decoded for the chain.
struct Pending {
    id: u64,
    attempts: u32,
    token: Address,
    authorization: Authorization,
    signature: Signature,
}

impl Pending {
    fn call(&self) -> (Address, Bytes) {
        (self.token, calldata::transfer_with_authorization(&self.authorization, &self.signature))
    }
}

/// Where an attempt left a payment.
enum Outcome {
    Settled(B256),
    Failed(String),
    Retry,
}

impl Settler {
    pub fn new(journal: Arc<Journal>, networks: Vec<NetworkSettlement>, policy: BatchPolicy) -> Self {
        Self { journal, networks, policy }
    }

    /// Settles until `shutdown` turns true, then drains: every accepted payment is settled
    /// (or fails for a reason) before this returns, unless `drain_timeout` passes first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>, drain_timeout: Duration) {
        let tick = (self.policy.max_wait / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut drain_deadline = None;
        loop {
            if drain_deadline.is_none() {
                tokio::select! {
                    _ = self.journal.changed().notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    tracing::info!(unsettled = self.journal.unsettled_count(), "settler draining");
                    drain_deadline = Some(tokio::time::Instant::now() + drain_timeout);
                }
            }
            let draining = drain_deadline.is_some();
            for network in &self.networks {
                if let Err(error) = self.settle_due(network, draining).await {
                    tracing::warn!(network = %network.network, %error, "settlement attempt failed; will retry");
                    tokio::time::sleep(self.policy.retry_backoff).await;
                }
            }
            if let Some(deadline) = drain_deadline {
                let unsettled = self.journal.unsettled_count();
                if unsettled == 0 {
                    tracing::info!("settler drained");
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::error!(unsettled, "settler drain timed out; these payments were not settled");
                    return;
                }
            }
        }
    }

    /// Sends one batch for `network` if one is due.
    async fn settle_due(&self, network: &NetworkSettlement, force: bool) -> Result<(), ChainError> {
        let batch = self.journal.accepted(&network.network, self.policy.max_batch);
        let Some(first) = batch.first() else { return Ok(()) };
        let oldest_ms = batch.iter().map(|r| r.accepted_at_ms).min().unwrap_or(first.accepted_at_ms);
        let waited = Duration::from_millis(unix_now_ms().saturating_sub(oldest_ms));
        let due = force
            || batch.len() >= self.policy.max_batch
            || waited >= self.policy.max_wait
            || first.item.valid_before <= unix_now() + self.policy.urgent_secs;
        if due {
            self.settle_batch(network, batch).await?;
        }
        Ok(())
    }

    async fn settle_batch(&self, network: &NetworkSettlement, batch: Vec<PaymentRecord>) -> Result<(), ChainError> {
        let live = self.drop_unsettleable(batch);
        if live.is_empty() {
            return Ok(());
        }
        let simulated = network
            .client
            .simulate_aggregate3(network.multicall, calldata::aggregate3(live.iter().map(Pending::call)))
            .await?;
        let mut to_send = Vec::with_capacity(live.len());
        for (pending, (success, return_data)) in live.into_iter().zip(simulated) {
            if success {
                to_send.push(pending);
            } else {
                let reason = calldata::revert_reason(&return_data).unwrap_or_else(|| "call reverted".into());
                let outcome = self.classify_revert(network, &pending, &reason).await;
                self.apply(&pending, outcome, &reason);
            }
        }
        if to_send.is_empty() {
            return Ok(());
        }
        let estimate = network
            .client
            .estimate_gas(network.multicall, calldata::aggregate3_strict(to_send.iter().map(Pending::call)))
            .await?;
        // Headroom for state that changes between estimate and inclusion.
        let gas_limit = estimate.saturating_add(estimate / 4);
        let data = calldata::aggregate3(to_send.iter().map(Pending::call));
        let transaction = network.client.send_aggregate3(network.multicall, data, gas_limit).await?;
        tracing::info!(network = %network.network, tx = %transaction, payments = to_send.len(), "settlement batch sent");
        for pending in &mut to_send {
            pending.attempts = self.journal.mark_submitted(pending.id, &transaction.to_string());
        }
        let mined = network.client.wait_for_receipt(transaction, self.policy.receipt_timeout).await;
        for pending in &to_send {
            let outcome = match &mined {
                Ok(mined) if mined.used.contains(&(pending.token, pending.authorization.from, pending.authorization.nonce)) => {
                    Outcome::Settled(mined.transaction)
                }
                _ => self.reconcile(network, pending).await,
            };
            self.apply(pending, outcome, "not settled by the batch");
        }
        if let Ok(mined) = &mined {
            tracing::info!(network = %network.network, tx = %mined.transaction, success = mined.success, "settlement batch mined");
        }
        Ok(())
    }

    /// Marks what can no longer be settled as failed and decodes the rest.
    fn drop_unsettleable(&self, batch: Vec<PaymentRecord>) -> Vec<Pending> {
        let cutoff = unix_now() + self.policy.min_time_left_secs;
        let mut live = Vec::with_capacity(batch.len());
        for record in batch {
            if record.item.valid_before <= cutoff {
                self.fail(record.id, "expired: validBefore passed before the payment could be settled".into());
                continue;
            }
            match decode(&record) {
                Ok(pending) => live.push(pending),
                Err(reason) => self.fail(record.id, reason),
            }
        }
        live
    }

    /// What a reverted call means. "Used" is checked against the chain: the payment may
    /// have landed through another transaction (ours earlier, or anyone's).
    async fn classify_revert(&self, network: &NetworkSettlement, pending: &Pending, reason: &str) -> Outcome {
        if reason.contains("authorization is used") {
            return self.reconcile(network, pending).await;
        }
        if reason.contains("not yet valid") {
            return Outcome::Retry;
        }
        Outcome::Failed(reason.to_owned())
    }

    /// Reads chain state to learn whether a payment landed.
    async fn reconcile(&self, network: &NetworkSettlement, pending: &Pending) -> Outcome {
        let (from, nonce) = (pending.authorization.from, pending.authorization.nonce);
        match network.client.authorization_state(pending.token, from, nonce).await {
            Ok(false) => Outcome::Retry,
            Ok(true) => {
                match network.client.find_authorization_used(pending.token, from, nonce, self.policy.log_lookback_blocks).await {
                    Ok(Some(transaction)) => Outcome::Settled(transaction),
                    Ok(None) => Outcome::Failed("authorization was cancelled by the payer (no AuthorizationUsed event)".into()),
                    Err(error) => {
                        tracing::warn!(payment = pending.id, %error, "could not read AuthorizationUsed events; will retry");
                        Outcome::Retry
                    }
                }
            }
            Err(error) => {
                tracing::warn!(payment = pending.id, %error, "could not read authorizationState; will retry");
                Outcome::Retry
            }
        }
    }

    fn apply(&self, pending: &Pending, outcome: Outcome, context: &str) {
        match outcome {
            Outcome::Settled(transaction) => {
                tracing::debug!(payment = pending.id, tx = %transaction, "payment settled");
                self.journal.set_state(pending.id, PaymentState::Settled { transaction: transaction.to_string() });
            }
            Outcome::Failed(reason) => self.fail(pending.id, reason),
            Outcome::Retry if pending.attempts >= self.policy.max_attempts => {
                self.fail(pending.id, format!("{context}: gave up after {} settlement transactions", pending.attempts));
            }
            Outcome::Retry => {
                tracing::debug!(payment = pending.id, context, "payment goes back to the queue");
                self.journal.set_state(pending.id, PaymentState::Accepted);
            }
        }
    }

    fn fail(&self, id: u64, reason: String) {
        tracing::warn!(payment = id, %reason, "payment failed to settle");
        self.journal.set_state(id, PaymentState::Failed { reason });
    }
}

fn decode(record: &PaymentRecord) -> Result<Pending, String> {
    let token = record.item.asset.parse().map_err(|_| format!("asset {} is not an address", record.item.asset))?;
    let authorization = parse_authorization(&record.item.payload.authorization).map_err(|e| e.to_string())?;
    let signature = parse_signature(&record.item.payload.signature).map_err(|e| e.to_string())?;
    Ok(Pending { id: record.id, attempts: record.attempts, token, authorization, signature })
}
