//! The settlement loop.
//!
//! Per network, each round first resolves *open batches* (signed and journaled, outcome not
//! yet written back), then sends a new batch if one is due. A batch goes through:
//! simulate → estimate gas → sign → journal (batch + payments `submitted`, durable) →
//! broadcast → receipt → each payment `settled`, back to `accepted`, or `failed`.
//! A crash anywhere leaves either nothing journaled (the payments are still `accepted`)
//! or an open batch, which the next round resolves from chain state: the receipt if it was
//! mined, otherwise the same signed bytes are sent again (same hash, same account nonce:
//! they can land at most once), and whatever did not land is decided per payment by
//! `authorizationState` and receipts, never by signing blindly again. A payment is `settled`
//! only on proof of its transfer to payTo (see [`Mined::paid`]); a used nonce alone is not.
//!
//! `settle: before` payments are settled beside the batch loop, several at once, each in a
//! transaction of its own; signing is serialised so no two transactions take one account
//! nonce.

use crate::chain::{ChainClient, ChainError, Mined, NonceEnd};
use crate::metrics::SettlementMetrics;
use crate::settle_before::{Claims, SettleBefore, SettleNow, SettleNowOutcome};
use alloy_primitives::{Address, Bytes, Signature, B256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use x402_evm::calldata;
use x402_evm::verify::{parse_authorization, parse_signature, Authorization};
use x402_store::{unix_now, unix_now_ms, BatchRecord, Exposure, Journal, JournalError, PayerBlock, PaymentRecord, PaymentState};

/// When a batch goes out and how long the settler waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// First pause after an RPC failure; it doubles up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    /// How far back to look for `AuthorizationUsed` events when reconciling.
    pub log_lookback_blocks: u64,
    /// A payment sent this many times without landing is marked failed rather than sent
    /// again: each attempt costs gas.
    pub max_attempts: u32,
    /// Most gas one settlement transaction may use (the chain's per-transaction cap, or
    /// lower): a batch whose estimate is above it is split.
    pub max_gas_per_transaction: u64,
    /// `settle: before` payments settled at once, each in a transaction of its own.
    pub settle_now_parallel: usize,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            max_batch: 100,
            max_wait: Duration::from_secs(2),
            urgent_secs: 20,
            min_time_left_secs: 4,
            receipt_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(500),
            max_retry_backoff: Duration::from_secs(15),
            log_lookback_blocks: 10_000,
            max_attempts: 5,
            max_gas_per_transaction: 16_000_000,
            settle_now_parallel: 16,
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

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

pub struct Settler {
    journal: Arc<Journal>,
    networks: Vec<NetworkSettlement>,
    policy: BatchPolicy,
    credit: Option<CreditControl>,
    metrics: Arc<SettlementMetrics>,
    /// Set by an operator's drain: send what is queued now instead of waiting for batches to fill.
    flush: Arc<std::sync::atomic::AtomicBool>,
    /// Payments a settle-now request owns: the batch loop leaves them alone.
    claims: Claims,
    /// Held from signing to broadcast: concurrent signers would take the same account nonce.
    signing: tokio::sync::Mutex<()>,
}

/// What the settler tells the exposure ledger: a resolved payment no longer counts, and a
/// payer whose payment failed by its own doing is refused for a while.
pub struct CreditControl {
    pub exposure: Arc<Exposure>,
    pub block_payer_for_secs: u64,
}

/// Failures the payer caused: spent its balance elsewhere, cancelled the authorization, or
/// burnt its nonce with another authorization.
fn payer_at_fault(reason: &str) -> bool {
    reason.contains("exceeds balance") || reason.contains("cancelled") || reason.contains(BURNT)
}

/// The start of the reason a payment fails with when its nonce was used without paying payTo.
const BURNT: &str = "authorization burnt";

/// How often payments given up on are looked at again, and for how long after their
/// `validBefore` (a transaction mined just before it may be seen late).
const GIVEN_UP_RECHECK_EVERY: Duration = Duration::from_secs(5);
const GIVEN_UP_RECHECK_AFTER_EXPIRY_SECS: u64 = 600;

/// A journal record decoded for the chain.
struct Pending {
    record: PaymentRecord,
    token: Address,
    authorization: Authorization,
    signature: Signature,
}

impl Pending {
    fn call(&self) -> (Address, Bytes) {
        (self.token, calldata::transfer_with_authorization(&self.authorization, &self.signature))
    }

    /// Whether `mined` moved this payment's value to its payTo under its nonce.
    fn paid_in(&self, mined: &Mined) -> bool {
        let authorization = &self.authorization;
        mined.paid(self.token, authorization.from, authorization.nonce, authorization.to, authorization.value)
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
        Self {
            journal,
            networks,
            policy,
            credit: None,
            metrics: Arc::default(),
            flush: Arc::default(),
            claims: Claims::default(),
            signing: tokio::sync::Mutex::new(()),
        }
    }

    /// The proxy's side of `settle: before`, with room for `capacity` payments waiting, and
    /// the receiving end to pass to [`Settler::run`].
    pub fn settle_before(&self, capacity: usize) -> (SettleBefore, mpsc::Receiver<SettleNow>) {
        let chains = self.networks.iter().map(|n| (n.network.clone(), n.client.clone())).collect();
        SettleBefore::new(capacity, chains, self.claims.clone())
    }

    /// Counts into `metrics` (registered by the caller).
    pub fn with_metrics(mut self, metrics: Arc<SettlementMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// While `flush` is set, every queued payment goes out at once.
    pub fn with_flush(mut self, flush: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.flush = flush;
        self
    }

    /// Keeps the exposure ledger in step with settlement outcomes.
    pub fn with_credit_control(mut self, credit: CreditControl) -> Self {
        self.credit = Some(credit);
        self
    }

    /// Settles until `shutdown` turns true, then drains: every accepted payment is settled
    /// (or fails for a reason) before this returns, unless `drain_timeout` passes first.
    /// `settle: before` requests are served beside the batch loop, several at once.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>, drain_timeout: Duration, settle_now: mpsc::Receiver<SettleNow>) {
        tokio::select! {
            () = self.batch_loop(shutdown, drain_timeout) => {}
            () = self.serve_settle_now(settle_now) => {}
        }
    }

    /// Runs settle-now requests as they come, up to `settle_now_parallel` at once; while
    /// that many run, the rest wait in the bounded queue (and the proxy refuses beyond it).
    async fn serve_settle_now(self: &Arc<Self>, mut requests: mpsc::Receiver<SettleNow>) {
        let running = Arc::new(Semaphore::new(self.policy.settle_now_parallel.max(1)));
        loop {
            let Ok(slot) = running.clone().acquire_owned().await else { break };
            let Some(request) = requests.recv().await else { break };
            let settler = Arc::clone(self);
            tokio::spawn(async move {
                settler.settle_now(request).await;
                drop(slot);
            });
        }
        // No more requests can come: the batch loop alone decides when `run` ends.
        std::future::pending::<()>().await;
    }

    async fn batch_loop(&self, mut shutdown: watch::Receiver<bool>, drain_timeout: Duration) {
        let tick = (self.policy.max_wait / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut drain_deadline = None;
        let mut backoff = self.policy.retry_backoff;
        let mut backlog = false;
        let mut rechecked = tokio::time::Instant::now();
        loop {
            if drain_deadline.is_none() {
                if !backlog {
                    self.wait_for_work(tick, &mut shutdown).await;
                }
                if *shutdown.borrow() {
                    tracing::info!(unsettled = self.unsettled(), "settler draining");
                    drain_deadline = Some(tokio::time::Instant::now() + drain_timeout);
                }
            }
            self.sync_payer_blocks();
            let draining = drain_deadline.is_some() || self.flush.load(std::sync::atomic::Ordering::Relaxed);
            let mut failed = false;
            backlog = false;
            for network in &self.networks {
                match self.settle_network(network, draining).await {
                    Ok(sent_full_batch) => backlog |= sent_full_batch,
                    Err(error) => {
                        tracing::warn!(network = %network.network, %error, retry_in_ms = backoff.as_millis() as u64, "settlement round failed; will retry");
                        self.metrics.rpc_errors.with_label_values(&[network.network.as_str()]).inc();
                        failed = true;
                    }
                }
            }
            if rechecked.elapsed() >= GIVEN_UP_RECHECK_EVERY {
                rechecked = tokio::time::Instant::now();
                for network in &self.networks {
                    if let Err(error) = self.recheck_given_up(network).await {
                        tracing::warn!(network = %network.network, %error, "could not look again at payments given up on; will retry");
                    }
                }
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.policy.max_retry_backoff);
            } else {
                backoff = self.policy.retry_backoff;
            }
            if let Some(deadline) = drain_deadline {
                let unsettled = self.unsettled();
                if unsettled == 0 {
                    tracing::info!("settler drained");
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::error!(unsettled, "settler drain timed out; the journal keeps these payments for the next start");
                    return;
                }
            }
        }
    }

    /// Waits until a round is worth running: a tick, a full batch's worth of new payments or
    /// shutdown. A round per recorded payment would read the queue
    /// from the journal once per paid request, on the request path's core.
    async fn wait_for_work(&self, tick: Duration, shutdown: &mut watch::Receiver<bool>) {
        let seen = self.journal.recorded();
        let timer = tokio::time::sleep(tick);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = self.journal.changed().notified() => {
                    if self.journal.recorded().saturating_sub(seen) >= self.policy.max_batch as u64 {
                        return;
                    }
                }
                _ = &mut timer => return,
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The journal's payer blocks are the truth (operators clear them there): the exposure
    /// ledger follows them every round.
    fn sync_payer_blocks(&self) {
        let Some(credit) = &self.credit else { return };
        match self.journal.payer_blocks(unix_now()) {
            Ok(blocks) => credit.exposure.replace_blocks(blocks),
            Err(error) => tracing::warn!(%error, "cannot read payer blocks from the journal"),
        }
    }

    /// Settles one payment in a transaction of its own and says how it ended.
    async fn settle_now(&self, request: SettleNow) {
        let outcome = match self.settle_one(request.payment_id).await {
            Ok(outcome) => outcome,
            Err(error) => SettleNowOutcome::Pending(error.to_string()),
        };
        tracing::info!(payment = request.payment_id, ?outcome, "settle-before payment");
        let _ = request.reply.send(outcome);
    }

    async fn settle_one(&self, id: u64) -> Result<SettleNowOutcome, SettleError> {
        let record = self.journal.get(id)?.ok_or(JournalError::Corrupt { id, what: "not in the journal".into() })?;
        let network = self
            .networks
            .iter()
            .find(|n| n.network == record.item.network)
            .ok_or_else(|| ChainError::Rpc(format!("no settlement configured for {}", record.item.network)))?;
        if record.state == PaymentState::Accepted {
            self.send_batch(network, vec![record]).await?;
        }
        let record = self.journal.get(id)?.ok_or(JournalError::Corrupt { id, what: "vanished from the journal".into() })?;
        Ok(match record.state {
            PaymentState::Settled { transaction } => SettleNowOutcome::Settled(transaction),
            PaymentState::Failed { reason } => SettleNowOutcome::Failed(reason),
            other => SettleNowOutcome::Pending(format!("settlement is {}", other.name())),
        })
    }

    fn unsettled(&self) -> u64 {
        // Unknown counts as "not drained": keep trying until the deadline.
        self.journal.unsettled_count().unwrap_or(u64::MAX)
    }

    /// One round for `network`; says whether it sent a full batch (more may be waiting).
    async fn settle_network(&self, network: &NetworkSettlement, force: bool) -> Result<bool, SettleError> {
        for batch in self.journal.open_batches(&network.network)? {
            if self.journal.submitted_in(&batch.transaction)?.iter().any(|record| self.claims.holds(&record.receipt_id)) {
                continue; // a settle-now request is resolving it
            }
            self.resolve_batch(network, batch).await?;
        }
        self.settle_due(network, force).await
    }

    /// Sends one batch for `network` if one is due; says whether it was a full one.
    async fn settle_due(&self, network: &NetworkSettlement, force: bool) -> Result<bool, SettleError> {
        let mut batch = self.journal.accepted(&network.network, self.policy.max_batch)?;
        batch.retain(|record| !self.claims.holds(&record.receipt_id));
        let Some(first) = batch.first() else { return Ok(false) };
        let oldest_ms = batch.iter().map(|r| r.accepted_at_ms).min().unwrap_or(first.accepted_at_ms);
        let waited = Duration::from_millis(unix_now_ms().saturating_sub(oldest_ms));
        let full = batch.len() >= self.policy.max_batch;
        let due = force || full || waited >= self.policy.max_wait || first.item.valid_before <= unix_now() + self.policy.urgent_secs;
        if due {
            self.send_batch(network, batch).await?;
        }
        Ok(due && full)
    }

    async fn send_batch(&self, network: &NetworkSettlement, batch: Vec<PaymentRecord>) -> Result<(), SettleError> {
        let live = self.drop_unsettleable(batch).await?;
        let mut to_send = self.simulate(network, live).await?;
        if to_send.is_empty() {
            return Ok(());
        }
        let gas_limit = self.fit_gas_cap(network, &mut to_send).await?;
        let data = calldata::aggregate3(to_send.iter().map(Pending::call));
        let signing = self.signing.lock().await;
        let signed = network.client.sign_aggregate3(network.multicall, data, gas_limit).await?;
        let batch = BatchRecord {
            transaction: signed.hash.to_string(),
            network: network.network.clone(),
            raw: signed.raw,
            sent_at_ms: unix_now_ms(),
        };
        // Durable before it exists anywhere else: a crash after this line is resolved from
        // the journal, never by signing the same payments again blindly.
        self.journal.record_batch(batch.clone(), to_send.iter().map(|p| p.record.id).collect()).await?;
        tracing::info!(network = %network.network, tx = %batch.transaction, payments = to_send.len(), gas_limit, "settlement batch signed and journaled");
        if let Err(error) = network.client.send_raw(&batch.raw).await {
            tracing::warn!(tx = %batch.transaction, %error, "broadcast failed; the batch stays open and is resolved next round");
        }
        drop(signing);
        self.resolve_batch(network, batch).await
    }

    /// The gas limit for `to_send`, halving the batch (earliest deadlines kept; the rest stay
    /// `accepted` for the next round) until it fits the per-transaction cap.
    async fn fit_gas_cap(&self, network: &NetworkSettlement, to_send: &mut Vec<Pending>) -> Result<u64, SettleError> {
        loop {
            let estimate = network
                .client
                .estimate_gas(network.multicall, calldata::aggregate3_strict(to_send.iter().map(Pending::call)))
                .await?;
            // Headroom for state that changes between estimate and inclusion.
            let gas_limit = estimate.saturating_add(estimate / 4);
            if gas_limit <= self.policy.max_gas_per_transaction || to_send.len() == 1 {
                return Ok(gas_limit);
            }
            tracing::info!(network = %network.network, gas_limit, payments = to_send.len(), "batch above the gas cap; splitting");
            to_send.truncate(to_send.len() / 2);
        }
    }

    /// Settles a journaled batch's payments from chain state.
    async fn resolve_batch(&self, network: &NetworkSettlement, batch: BatchRecord) -> Result<(), SettleError> {
        let hash: B256 = batch.transaction.parse().map_err(|_| ChainError::Decode(format!("transaction hash {}", batch.transaction)))?;
        let payments: Vec<Pending> = self.decode_all(self.journal.submitted_in(&batch.transaction)?).await?;
        let mut mined = network.client.receipt(hash).await?;
        if mined.is_none() {
            if !network.client.transaction_known(hash).await? {
                // Never reached a node, or a node forgot it: the same bytes again.
                match network.client.send_raw(&batch.raw).await {
                    Ok(()) => tracing::info!(tx = %batch.transaction, "re-sent a journaled settlement transaction"),
                    Err(ChainError::Rejected(reason)) => {
                        tracing::info!(tx = %batch.transaction, %reason, "journaled transaction refused; reconciling its payments")
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            mined = network.client.wait_for_receipt(hash, self.policy.receipt_timeout).await?;
        }
        self.count_batch(network, mined.as_ref());
        let (landed, unclear): (Vec<&Pending>, Vec<&Pending>) =
            payments.iter().partition(|pending| mined.as_ref().is_some_and(|mined| pending.paid_in(mined)));
        if let Some(mined) = &mined {
            self.settle(&landed, mined.transaction).await?;
        }
        for pending in unclear {
            let outcome = self.reconcile(network, pending).await;
            self.apply(pending, outcome, "not settled by its batch").await?;
        }
        self.journal.finish_batch(batch.transaction).await?;
        Ok(())
    }

    /// Runs the batch as an `eth_call`; what would revert is settled or failed here and
    /// what would succeed is returned.
    async fn simulate(&self, network: &NetworkSettlement, live: Vec<Pending>) -> Result<Vec<Pending>, SettleError> {
        if live.is_empty() {
            return Ok(live);
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
                self.apply(&pending, outcome, &reason).await?;
            }
        }
        Ok(to_send)
    }

    /// Marks what can no longer be settled as failed and decodes the rest.
    async fn drop_unsettleable(&self, batch: Vec<PaymentRecord>) -> Result<Vec<Pending>, SettleError> {
        let cutoff = unix_now() + self.policy.min_time_left_secs;
        let mut live = Vec::with_capacity(batch.len());
        for record in batch {
            if record.item.valid_before <= cutoff {
                self.fail(&record, "expired: validBefore passed before the payment could be settled".into()).await?;
                continue;
            }
            live.push(record);
        }
        self.decode_all(live).await
    }

    async fn decode_all(&self, records: Vec<PaymentRecord>) -> Result<Vec<Pending>, SettleError> {
        let mut decoded = Vec::with_capacity(records.len());
        for record in records {
            match decode(&record) {
                Ok((token, authorization, signature)) => decoded.push(Pending { record, token, authorization, signature }),
                Err(reason) => self.fail(&record, reason).await?,
            }
        }
        Ok(decoded)
    }

    /// A payment given up on may still be paid by one of its transactions that lands late
    /// (a "gave up" must never hide money that arrives): until its `validBefore` has passed,
    /// and once more after, look again and correct the journal to `settled` if it was paid.
    async fn recheck_given_up(&self, network: &NetworkSettlement) -> Result<(), SettleError> {
        let since = unix_now().saturating_sub(GIVEN_UP_RECHECK_AFTER_EXPIRY_SECS);
        for record in self.journal.given_up(&network.network, since)? {
            let Ok((token, authorization, signature)) = decode(&record) else { continue };
            let pending = Pending { record, token, authorization, signature };
            if let Outcome::Settled(transaction) = self.reconcile(network, &pending).await {
                tracing::warn!(payment = pending.record.id, tx = %transaction, "a payment given up on was paid after all; journal corrected to settled");
                self.journal.set_state(pending.record.id, PaymentState::Settled { transaction: transaction.to_string() }).await?;
                if let Some(credit) = &self.credit {
                    credit.exposure.forgive_loss(pending.record.usd_micros);
                }
                self.count_settled(&pending.record);
            }
        }
        Ok(())
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

    /// Reads chain state to learn whether a payment landed. It counts as settled only on
    /// proof of its transfer to payTo: first in the receipts of the gateway's own
    /// transactions it was sent in, then in whichever transaction the token's events name.
    async fn reconcile(&self, network: &NetworkSettlement, pending: &Pending) -> Outcome {
        let (from, nonce) = (pending.authorization.from, pending.authorization.nonce);
        match network.client.authorization_state(pending.token, from, nonce).await {
            Ok(false) => Outcome::Retry,
            Ok(true) => self.what_used(network, pending).await.unwrap_or_else(|error| {
                tracing::warn!(payment = pending.record.id, %error, "could not read what used the authorization; will retry");
                Outcome::Retry
            }),
            Err(error) => {
                tracing::warn!(payment = pending.record.id, %error, "could not read authorizationState; will retry");
                Outcome::Retry
            }
        }
    }

    /// The fate of a payment whose nonce the token says is used or cancelled.
    async fn what_used(&self, network: &NetworkSettlement, pending: &Pending) -> Result<Outcome, SettleError> {
        for transaction in self.journal.transactions_of(pending.record.id)? {
            let hash: B256 = transaction.parse().map_err(|_| ChainError::Decode(format!("transaction hash {transaction}")))?;
            if let Some(mined) = network.client.receipt(hash).await? {
                if pending.paid_in(&mined) {
                    return Ok(Outcome::Settled(hash));
                }
            }
        }
        let (token, from, nonce) = (pending.token, pending.authorization.from, pending.authorization.nonce);
        Ok(match network.client.find_nonce_end(token, from, nonce, self.policy.log_lookback_blocks).await? {
            Some(NonceEnd::Used(mined)) if pending.paid_in(&mined) => Outcome::Settled(mined.transaction),
            Some(NonceEnd::Used(mined)) => Outcome::Failed(format!(
                "{BURNT}: transaction {} used its nonce without paying {} to {}",
                mined.transaction, pending.authorization.value, pending.authorization.to
            )),
            Some(NonceEnd::Canceled(transaction)) => {
                Outcome::Failed(format!("authorization was cancelled by the payer (AuthorizationCanceled in {transaction})"))
            }
            None => {
                // Used, but not by any transaction of ours and by none in the lookback
                // window: nothing proves who is at fault, so the payer is not blamed. It is
                // retried (a lagging node's logs catch up) until its deadline passes, then
                // fails as expired, unsettled, for an operator to look at.
                tracing::warn!(payment = pending.record.id, lookback = self.policy.log_lookback_blocks, "authorization used, but no AuthorizationUsed or AuthorizationCanceled event found; not counted as settled");
                Outcome::Retry
            }
        })
    }

    async fn apply(&self, pending: &Pending, outcome: Outcome, context: &str) -> Result<(), JournalError> {
        let record = &pending.record;
        match outcome {
            Outcome::Settled(transaction) => self.settle(&[pending], transaction).await,
            Outcome::Failed(reason) => self.fail(record, reason).await,
            Outcome::Retry if record.attempts >= self.policy.max_attempts => {
                self.fail(record, format!("{context}: gave up after {} settlement transactions", record.attempts)).await
            }
            Outcome::Retry => {
                tracing::debug!(payment = record.id, context, "payment goes back to the queue");
                self.journal.set_state(record.id, PaymentState::Accepted).await
            }
        }
    }

    /// Records `payments` as settled by `transaction`, in one journal commit.
    async fn settle(&self, payments: &[&Pending], transaction: B256) -> Result<(), JournalError> {
        if payments.is_empty() {
            return Ok(());
        }
        let state = PaymentState::Settled { transaction: transaction.to_string() };
        self.journal.set_states(payments.iter().map(|pending| (pending.record.id, state.clone())).collect()).await?;
        for pending in payments {
            tracing::debug!(payment = pending.record.id, tx = %transaction, "payment settled");
            self.resolved(&pending.record, None);
            self.count_settled(&pending.record);
        }
        Ok(())
    }

    async fn fail(&self, record: &PaymentRecord, reason: String) -> Result<(), JournalError> {
        tracing::warn!(payment = record.id, payer = %record.payer, %reason, "payment failed to settle");
        self.journal.set_state(record.id, PaymentState::Failed { reason: reason.clone() }).await?;
        self.metrics.payments.with_label_values(&[record.item.network.as_str(), "failed"]).inc();
        if let Some(block) = self.resolved(record, Some(&reason)) {
            self.journal.block_payer(block).await?;
        }
        Ok(())
    }

    fn count_batch(&self, network: &NetworkSettlement, mined: Option<&Mined>) {
        let name = network.network.as_str();
        let outcome = match mined {
            Some(mined) => {
                tracing::info!(network = name, tx = %mined.transaction, success = mined.success, gas_used = mined.gas_used, "settlement batch mined");
                self.metrics.gas_used.with_label_values(&[name]).inc_by(mined.gas_used);
                if mined.success { "mined" } else { "reverted" }
            }
            None => "unresolved",
        };
        self.metrics.batches.with_label_values(&[name, outcome]).inc();
    }

    fn count_settled(&self, record: &PaymentRecord) {
        let network = record.item.network.as_str();
        self.metrics.payments.with_label_values(&[network, "settled"]).inc();
        // Atomic amounts of real payments fit u64 (18 446 billion USDC); saturate otherwise.
        let amount = record.amount.parse::<u64>().unwrap_or(u64::MAX);
        self.metrics.value_settled.with_label_values(&[record.route.as_str(), network, record.item.asset.as_str()]).inc_by(amount);
    }

    /// A payment reached its end: it no longer counts as credit. Returns the block a payer
    /// at fault earned, for the journal.
    fn resolved(&self, record: &PaymentRecord, failure: Option<&str>) -> Option<PayerBlock> {
        let credit = self.credit.as_ref()?;
        let payer = record.payer.as_str();
        credit.exposure.remove(payer, &record.route, record.usd_micros);
        if failure.is_some() {
            // Served and never paid, whoever's fault: it counts against the loss budget.
            credit.exposure.record_loss(record.usd_micros, unix_now());
        }
        let reason = failure.filter(|reason| payer_at_fault(reason))?;
        let until = unix_now() + credit.block_payer_for_secs;
        tracing::warn!(payer, until, reason, "payer refused until then");
        credit.exposure.block(payer, reason, until);
        Some(PayerBlock { payer: payer.to_owned(), until, reason: reason.to_owned() })
    }
}

/// The token, authorization and signature of a journaled payment, as the chain takes them.
fn decode(record: &PaymentRecord) -> Result<(Address, Authorization, Signature), String> {
    let token = record.item.asset.parse().map_err(|_| format!("asset {} is not an address", record.item.asset))?;
    let authorization = parse_authorization(&record.item.payload.authorization).map_err(|e| e.to_string())?;
    let signature = parse_signature(&record.item.payload.signature).map_err(|e| e.to_string())?;
    Ok((token, authorization, signature))
}
