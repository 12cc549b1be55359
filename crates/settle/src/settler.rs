//! The settlement loop.
//!
//! Per network, settlement runs in *lanes* (one per settlement key: its account-nonce
//! sequence, see [`crate::lane`]), each with up to `max_in_flight` transactions pending at
//! consecutive nonces, so a busy gateway fills every block it can. Each round, per lane:
//! transactions whose nonce the chain has passed are resolved from their receipts, those
//! waiting too long are replaced at the same nonce with higher fees, and a nonce gap below
//! them is filled; then new batches go out while lanes have room and payments are due.
//!
//! A batch goes through: simulate → estimate gas (sized to `max_gas_per_transaction`) →
//! sign at the lane's next nonce → journal (transaction + payments `submitted`, durable) →
//! broadcast; a later round reads its outcome: each payment `settled`, back to `accepted`,
//! or `failed`. Every replacement is journaled before it is sent too, so after a crash the
//! settler knows every transaction that may still land at each open nonce and sends the
//! very same bytes again rather than signing blindly; whatever did not land is decided per
//! payment by `authorizationState` and receipts. A payment is `settled` only on proof of its
//! transfer to payTo (see [`Mined::paid`]); a used nonce alone is not.
//!
//! `settle: before` payments are settled beside the batch loop, several at once, each in a
//! transaction of its own on a lane's next nonce.

use crate::chain::{ChainClient, ChainError, Fees, Mined, NonceEnd, SignedFields};
use crate::gas::{self, GasModel};
use crate::lane::{Attempt, Lane, OpenNonce, Step};
use crate::metrics::SettlementMetrics;
use crate::settle_before::{lock, Claims, SettleBefore, SettleNow, SettleNowOutcome};
use alloy_primitives::{Address, Bytes, Signature, B256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Mutex, Semaphore};
use x402_evm::calldata;
use x402_evm::verify::{parse_authorization, parse_signature, Authorization};
use x402_store::{unix_now, unix_now_ms, BatchRecord, Journal, JournalError, PayerBlock, PaymentLedger, PaymentRecord, PaymentState};

/// When a batch goes out and how long the settler waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most payments per transaction; below it, batches are as big as
    /// `max_gas_per_transaction` allows (~38k gas each through `aggregate3`).
    pub max_batch: usize,
    /// Settlement transactions pending at once per lane (consecutive account nonces).
    pub max_in_flight: usize,
    /// A transaction not mined this many blocks after it was sent is replaced at the same
    /// nonce with fees at least 12.5% higher.
    pub bump_after_blocks: u64,
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
            max_batch: usize::MAX,
            max_in_flight: 16,
            bump_after_blocks: 3,
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

impl BatchPolicy {
    /// Payments per transaction before any estimate is known: what `max_gas_per_transaction`
    /// holds at a first guess of gas per payment, at most `max_batch`.
    pub fn first_batch_size(&self) -> usize {
        batch_size_for(self, GAS_PER_PAYMENT_GUESS)
    }
}

/// Payments whose gas, with a batch's overhead and the limit's 25% headroom, fits the cap.
fn batch_size_for(policy: &BatchPolicy, gas_per_payment: u64) -> usize {
    let fits = (policy.max_gas_per_transaction.saturating_mul(4) / 5).saturating_sub(gas::BATCH_OVERHEAD) / gas_per_payment.max(1);
    usize::try_from(fits).unwrap_or(usize::MAX).clamp(1, policy.max_batch.max(1))
}

/// One network the settler settles on.
pub struct NetworkSettlement {
    /// CAIP-2 id, as journal items carry it.
    pub network: String,
    pub multicall: Address,
    /// One client per settlement key, each with its own nonce lane; the first also reads.
    pub clients: Vec<ChainClient>,
}

/// A network with its lanes, as the settler runs it.
struct Network {
    network: String,
    multicall: Address,
    /// For reads: the first lane's client.
    client: ChainClient,
    lanes: Vec<Mutex<Lane>>,
    /// What a batch costs, learned from estimates: sets gas limits between estimates.
    gas: std::sync::Mutex<GasModel>,
    /// Journaled open transactions signed by a key no lane has any more (or unreadable):
    /// resolved from their receipts alone.
    orphans: std::sync::Mutex<Vec<BatchRecord>>,
    /// Who waits for a lane call's outcome, by the hash of its first attempt.
    call_replies: std::sync::Mutex<std::collections::HashMap<B256, oneshot::Sender<Option<Mined>>>>,
}

impl Network {
    fn new(settlement: NetworkSettlement) -> Option<Self> {
        let client = settlement.clients.first()?.clone();
        Some(Self {
            network: settlement.network,
            multicall: settlement.multicall,
            client,
            lanes: settlement.clients.into_iter().map(|client| Mutex::new(Lane::new(client))).collect(),
            gas: std::sync::Mutex::default(),
            orphans: std::sync::Mutex::default(),
            call_replies: std::sync::Mutex::default(),
        })
    }
}

/// A first guess of a payment's gas in a batch, until an estimate says better.
const GAS_PER_PAYMENT_GUESS: u64 = 45_000;

/// Why [`Settler::send_call`] sent nothing, or lost track of what it sent.
#[derive(Debug, thiserror::Error)]
pub enum LaneCallError {
    #[error("no settlement is configured on {0}")]
    NoNetwork(String),
    /// The call would revert as the chain stands: nothing was signed.
    #[error("the call would revert: {0}")]
    Reverts(String),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Settle(#[from] SettleError),
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
    networks: Vec<Network>,
    policy: BatchPolicy,
    credit: Option<CreditControl>,
    metrics: Arc<SettlementMetrics>,
    /// Set by an operator's drain: send what is queued now instead of waiting for batches to fill.
    flush: Arc<std::sync::atomic::AtomicBool>,
    /// Payments a settle-now request owns: the batch loop leaves them alone.
    claims: Claims,
}

/// What the settler tells the exposure ledger: a resolved payment no longer counts, and a
/// payer whose payment failed by its own doing is refused for a while.
pub struct CreditControl {
    pub ledger: Arc<dyn PaymentLedger>,
    pub block_payer_for_secs: u64,
    /// Told of each payment that settled: the payer's token balance dropped by its value
    /// (a cached balance read before it must not be counted again).
    pub payer_paid: Option<PayerPaid>,
}

/// See [`CreditControl::payer_paid`].
pub type PayerPaid = Box<dyn Fn(&PaymentRecord) + Send + Sync>;

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
        let networks = networks
            .into_iter()
            .filter_map(|settlement| {
                let name = settlement.network.clone();
                let network = Network::new(settlement);
                if network.is_none() {
                    tracing::error!(network = %name, "no settlement key for this network; its payments wait in the journal");
                }
                network
            })
            .collect();
        Self { journal, networks, policy, credit: None, metrics: Arc::default(), flush: Arc::default(), claims: Claims::default() }
    }

    /// The proxy's side of `settle: before`, with room for `capacity` payments waiting, and
    /// the receiving end to pass to [`Settler::run`].
    pub fn settle_before(&self, capacity: usize) -> (SettleBefore, mpsc::Receiver<SettleNow>) {
        let chains = self.networks.iter().map(|n| (n.network.clone(), n.client.clone())).collect();
        SettleBefore::new(capacity, chains, self.claims.clone())
    }

    /// Where this settler counts (for work that borrows its lanes, such as channel claims).
    pub fn metrics(&self) -> Arc<SettlementMetrics> {
        Arc::clone(&self.metrics)
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
        let mut rechecked = tokio::time::Instant::now();
        self.recover_open_transactions().await;
        loop {
            if drain_deadline.is_none() {
                self.wait_for_work(tick, &mut shutdown).await;
                if *shutdown.borrow() {
                    tracing::info!(unsettled = self.unsettled(), "settler draining");
                    drain_deadline = Some(tokio::time::Instant::now() + drain_timeout);
                }
            }
            self.sync_payer_blocks();
            let draining = drain_deadline.is_some() || self.flush.load(std::sync::atomic::Ordering::Relaxed);
            let mut failed = false;
            for network in &self.networks {
                match self.settle_network(network, draining).await {
                    Ok(()) => {}
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
        let batch = self.networks.iter().map(|network| self.batch_size(network)).min().unwrap_or(1) as u64;
        let timer = tokio::time::sleep(tick);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = self.journal.changed().notified() => {
                    if self.journal.recorded().saturating_sub(seen) >= batch {
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
            Ok(blocks) => credit.ledger.merge_blocks(blocks),
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
            let lane = self.least_busy_lane(network).await;
            let mut lane = lane.lock().await;
            let head = network.client.head().await?;
            self.send_batch(network, &mut lane, vec![record], head, &mut None).await?;
        }
        // The batch loop resolves the transaction with the others of its lane.
        let deadline = tokio::time::Instant::now() + self.policy.receipt_timeout;
        let record = loop {
            let record = self.journal.get(id)?.ok_or(JournalError::Corrupt { id, what: "vanished from the journal".into() })?;
            if !matches!(record.state, PaymentState::Submitted { .. }) || tokio::time::Instant::now() >= deadline {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok(match record.state {
            PaymentState::Settled { transaction } => SettleNowOutcome::Settled(transaction),
            PaymentState::Failed { reason } => SettleNowOutcome::Failed(reason),
            other => SettleNowOutcome::Pending(format!("settlement is {}", other.name())),
        })
    }

    /// A client for reads on `network` (the first lane's).
    pub fn reader(&self, network: &str) -> Option<ChainClient> {
        self.networks.iter().find(|n| n.network == network).map(|n| n.client.clone())
    }

    /// Sends a call to `to` on `network` in a transaction of its own, on the least busy lane
    /// (signed at its next nonce, journaled before it is sent, replaced with higher fees if it
    /// waits, like any batch), and waits up to `receipt_timeout` for it to be mined. A call
    /// that would revert is refused before anything is signed.
    ///
    /// `Ok(None)`: sent, outcome not known in time (the lane keeps at it).
    pub async fn send_call(&self, network: &str, to: Address, data: Bytes) -> Result<Option<Mined>, LaneCallError> {
        let network = self.networks.iter().find(|n| n.network == network).ok_or_else(|| LaneCallError::NoNetwork(network.to_owned()))?;
        let estimate = network.client.estimate_gas(to, data.clone()).await.map_err(|error| match error {
            ChainError::Rejected(reason) => LaneCallError::Reverts(reason),
            other => LaneCallError::Chain(other),
        })?;
        // Estimates are exact for the state they ran on; a block later the call may cost a bit more.
        let gas_limit = estimate.saturating_add(estimate / 4);
        let reply = {
            let lane = self.least_busy_lane(network).await;
            let mut lane = lane.lock().await;
            let head = network.client.head().await?;
            let fees = lane.client.fees().await?;
            let nonce = match lane.next_nonce {
                Some(nonce) => nonce,
                None => lane.client.account_nonce(true).await?,
            };
            let signed = lane.client.sign_call(to, data.clone(), gas_limit, nonce, fees).await?;
            let batch = BatchRecord { transaction: signed.hash.to_string(), network: network.network.clone(), raw: signed.raw, sent_at_ms: unix_now_ms() };
            self.journal.record_batch(batch.clone(), Vec::new()).await.map_err(SettleError::from)?;
            lane.next_nonce = Some(nonce + 1);
            lane.open.insert(nonce, open_nonce(to, data, gas_limit, Attempt { hash: signed.hash, raw: batch.raw.clone(), fees }, head));
            let (reply_to, reply) = oneshot::channel();
            lock(&network.call_replies).insert(signed.hash, reply_to);
            tracing::info!(network = %network.network, tx = %batch.transaction, nonce, gas_limit, %to, "lane call signed and journaled");
            if let Err(error) = lane.client.send_raw(&batch.raw).await {
                tracing::warn!(tx = %batch.transaction, %error, "broadcast failed; the transaction stays open and is sent again");
            }
            reply
        };
        match tokio::time::timeout(self.policy.receipt_timeout, reply).await {
            Ok(Ok(mined)) => Ok(mined),
            // Timed out, or the settler stopped: the lane (or the next start) resolves it.
            Ok(Err(_)) | Err(_) => Ok(None),
        }
    }

    fn unsettled(&self) -> u64 {
        // Unknown counts as "not drained": keep trying until the deadline.
        self.journal.unsettled_count().unwrap_or(u64::MAX)
    }

    /// The lane with the fewest transactions in flight (one free at once, if any).
    async fn least_busy_lane<'a>(&self, network: &'a Network) -> &'a Mutex<Lane> {
        let mut best = (usize::MAX, &network.lanes[0]);
        for lane in &network.lanes {
            if let Ok(held) = lane.try_lock() {
                if held.open.len() < best.0 {
                    best = (held.open.len(), lane);
                }
            }
        }
        best.1
    }

    /// Payments per batch: what fits `max_gas_per_transaction` with the estimate's headroom,
    /// at most `max_batch`.
    fn batch_size(&self, network: &Network) -> usize {
        let per_payment = lock(&network.gas).per_payment().unwrap_or(GAS_PER_PAYMENT_GUESS);
        batch_size_for(&self.policy, per_payment)
    }

    /// Puts every transaction the journal holds open (a crash or stop came before its
    /// outcome was written) back in the lane that signed it.
    async fn recover_open_transactions(&self) {
        for network in &self.networks {
            let open = match self.journal.open_batches(&network.network) {
                Ok(open) => open,
                Err(error) => {
                    tracing::error!(network = %network.network, %error, "cannot read open settlement transactions; they are resolved once the journal answers");
                    continue;
                }
            };
            for batch in open {
                let fields = match SignedFields::decode(&batch.raw) {
                    Ok(fields) => fields,
                    Err(error) => {
                        tracing::warn!(tx = %batch.transaction, %error, "journaled transaction unreadable; resolved from its receipt alone");
                        lock(&network.orphans).push(batch);
                        continue;
                    }
                };
                let mut lane = None;
                for candidate in &network.lanes {
                    let held = candidate.lock().await;
                    if held.signer() == fields.signer {
                        lane = Some(held);
                        break;
                    }
                }
                let Some(mut lane) = lane else {
                    tracing::warn!(tx = %batch.transaction, signer = %fields.signer, "journaled transaction signed by a key no longer configured; resolved from its receipt alone");
                    lock(&network.orphans).push(batch);
                    continue;
                };
                tracing::info!(tx = %batch.transaction, nonce = fields.nonce, signer = %fields.signer, "open settlement transaction recovered from the journal");
                let attempt = Attempt { hash: fields.hash, raw: batch.raw, fees: fields.fees };
                lane.recover(fields.nonce, fields.to, fields.input, fields.gas_limit, attempt);
            }
        }
    }

    /// One round for `network`: every lane's open transactions move on, then new batches go
    /// out while lanes have room.
    async fn settle_network(&self, network: &Network, force: bool) -> Result<(), SettleError> {
        let orphans = std::mem::take(&mut *lock(&network.orphans));
        for (index, batch) in orphans.iter().enumerate() {
            if let Err(error) = self.resolve_batch(network, batch.clone()).await {
                lock(&network.orphans).extend(orphans[index..].iter().cloned());
                return Err(error);
            }
        }
        let head = network.client.head().await?;
        let mut in_flight = 0;
        let mut mined = Vec::new();
        for lane in &network.lanes {
            let mut lane = lane.lock().await;
            self.advance_lane(network, &mut lane, head, &mut mined).await?;
            in_flight += lane.open.len();
        }
        self.metrics.in_flight.with_label_values(&[network.network.as_str()]).set(in_flight as i64);
        // Writing what landed is journal work and sending is mostly waiting on the node:
        // done side by side, a round takes the longer of the two, not their sum.
        let (written, sent) = tokio::join!(self.write_outcomes(network, mined), self.send_due(network, force, head));
        written.and(sent)
    }

    /// Writes the outcomes of the nonces the chain passed; what cannot be written now is
    /// resolved from its receipts next round.
    async fn write_outcomes(&self, network: &Network, mined: Vec<ClosedNonce>) -> Result<(), SettleError> {
        let mut closed = mined.into_iter();
        while let Some(mut nonce) = closed.next() {
            if let Err(error) = self.write_outcome(network, &nonce.hashes(), nonce.mined.as_ref(), Some(nonce.open.gas_limit)).await {
                let unwritten = std::iter::once(nonce).chain(closed);
                lock(&network.orphans).extend(unwritten.flat_map(|nonce| nonce.batch_records(&network.network)));
                return Err(error);
            }
            let waiting = nonce.open.attempts.first().and_then(|first| lock(&network.call_replies).remove(&first.hash));
            if let Some(reply) = waiting {
                let _ = reply.send(nonce.mined.take());
            }
        }
        Ok(())
    }

    /// Moves each open transaction of `lane` on: resolve what the chain mined, resend what
    /// the node lost, replace what waits too long, fill a nonce gap.
    async fn advance_lane(&self, network: &Network, lane: &mut Lane, head: u64, closed: &mut Vec<ClosedNonce>) -> Result<(), SettleError> {
        if lane.open.is_empty() {
            return Ok(());
        }
        for open in lane.open.values_mut().filter(|open| open.sent_at_block == 0) {
            // Recovered at start: the bump clock starts now, and the node is asked at once
            // whether it still holds the transaction.
            open.sent_at_block = head.saturating_sub(1);
        }
        let mined_nonce = lane.client.account_nonce(false).await?;
        let lowest = lane.open.keys().next().copied().unwrap_or(mined_nonce);
        let pool_holds_next = lowest <= mined_nonce || lane.client.account_nonce(true).await? > mined_nonce;
        let mut fees_now = None;
        for step in lane.plan(mined_nonce, pool_holds_next, head, self.policy.bump_after_blocks) {
            match step {
                Step::Resolve(nonce) => closed.extend(self.resolve_nonce(network, lane, nonce).await?),
                Step::CheckHeld(nonce) => check_held(lane, nonce, head).await?,
                Step::Bump(nonce) => self.bump(network, lane, nonce, head, &mut fees_now).await?,
                Step::FillGap(nonce) => self.fill_gap(network, lane, nonce, head).await?,
            }
        }
        if lane.open.is_empty() {
            // Idle: the next batch reads the account's nonce afresh.
            lane.next_nonce = None;
        }
        Ok(())
    }

    /// The chain has passed `nonce`: closes it in the lane with the attempt that was mined,
    /// for its outcome to be written.
    async fn resolve_nonce(&self, network: &Network, lane: &mut Lane, nonce: u64) -> Result<Option<ClosedNonce>, SettleError> {
        let Some(open) = lane.open.get(&nonce) else { return Ok(None) };
        let mut mined = None;
        for hash in open.hashes().collect::<Vec<_>>().into_iter().rev() {
            if let Some(found) = network.client.receipt(hash).await? {
                mined = Some(found);
                break;
            }
        }
        if mined.is_none() && !lane.receipt_missing(nonce) {
            return Ok(None); // a node behind the one that counted the nonce: ask again next round
        }
        let Some(open) = lane.open.remove(&nonce) else { return Ok(None) };
        if mined.is_none() {
            tracing::warn!(network = %network.network, nonce, "account nonce used by a transaction the journal does not know; reconciling its payments one by one");
        }
        Ok(Some(ClosedNonce { open, mined }))
    }

    /// Replaces the newest attempt at `nonce` with the same calls and higher fees, journaled
    /// before it is sent.
    async fn bump(&self, network: &Network, lane: &mut Lane, nonce: u64, head: u64, fees_now: &mut Option<Option<Fees>>) -> Result<(), SettleError> {
        let Lane { client, open, .. } = lane;
        let Some(open) = open.get_mut(&nonce) else { return Ok(()) };
        let Some(newest) = open.newest().cloned() else { return Ok(()) };
        if fees_now.is_none() {
            // Above the cap (or unknown) the replacement still rises by the minimum, within it.
            *fees_now = Some(client.fees().await.ok());
        }
        open.sent_at_block = head;
        let Some(fees) = client.bumped_fees(newest.fees, fees_now.flatten()) else {
            tracing::warn!(network = %network.network, nonce, tx = %newest.hash, max_fee_per_gas = newest.fees.max_fee_per_gas, "settlement transaction not mined and max_fee_per_gas leaves no room to replace it; waiting");
            return Ok(());
        };
        let signed = client.sign_call(open.to, open.data.clone(), open.gas_limit, nonce, fees).await?;
        let ids = self.journal.submitted_in(&newest.hash.to_string())?.iter().map(|record| record.id).collect();
        let batch = BatchRecord { transaction: signed.hash.to_string(), network: network.network.clone(), raw: signed.raw, sent_at_ms: unix_now_ms() };
        self.journal.record_replacement(batch.clone(), ids).await?;
        tracing::info!(
            network = %network.network, nonce, replaced = %newest.hash, tx = %signed.hash,
            max_fee_per_gas = fees.max_fee_per_gas, max_priority_fee_per_gas = fees.max_priority_fee_per_gas,
            "settlement transaction not mined in time; replaced with higher fees"
        );
        self.metrics.replacements.with_label_values(&[network.network.as_str()]).inc();
        open.attempts.push(Attempt { hash: signed.hash, raw: batch.raw.clone(), fees });
        open.checked_at_block = head;
        if let Err(error) = client.send_raw(&batch.raw).await {
            // "nonce too low": an earlier attempt was mined meanwhile; the next round finds it.
            tracing::warn!(tx = %batch.transaction, %error, "replacement refused; the nonce's attempts are resolved next round");
        }
        Ok(())
    }

    /// The chain waits on `nonce`, which the lane holds nothing for (a transaction the
    /// journal lost, or someone else's that was dropped): a no-op transfer to itself
    /// unblocks every transaction above it.
    async fn fill_gap(&self, network: &Network, lane: &mut Lane, nonce: u64, head: u64) -> Result<(), SettleError> {
        let fees = lane.client.fees().await?;
        let signer = lane.signer();
        let signed = lane.client.sign_call(signer, Bytes::new(), 21_000, nonce, fees).await?;
        let batch = BatchRecord { transaction: signed.hash.to_string(), network: network.network.clone(), raw: signed.raw, sent_at_ms: unix_now_ms() };
        self.journal.record_batch(batch.clone(), Vec::new()).await?;
        tracing::warn!(network = %network.network, nonce, tx = %batch.transaction, "account nonce gap below the open settlement transactions; filled with a no-op transaction");
        lane.open.insert(nonce, open_nonce(signer, Bytes::new(), 21_000, Attempt { hash: signed.hash, raw: batch.raw.clone(), fees }, head));
        if let Err(error) = lane.client.send_raw(&batch.raw).await {
            tracing::warn!(tx = %batch.transaction, %error, "gap filler not sent; resent next round");
        }
        Ok(())
    }

    /// Sends due batches, one lane after another, while lanes have room.
    async fn send_due(&self, network: &Network, force: bool, head: u64) -> Result<(), SettleError> {
        let mut fees = None;
        loop {
            let mut sent_full = false;
            for lane in &network.lanes {
                let mut lane = lane.lock().await;
                if lane.open.len() >= self.policy.max_in_flight.max(1) {
                    continue;
                }
                match self.send_next_batch(network, &mut lane, force, head, &mut fees).await? {
                    Some(true) => sent_full = true,
                    // Nothing due, or the last (partial) batch went out: the queue is empty.
                    None | Some(false) => return Ok(()),
                }
            }
            if !sent_full {
                return Ok(()); // every lane is full: receipts make room
            }
        }
    }

    /// Sends the next batch on `lane` if one is due; says whether it was a full one.
    async fn send_next_batch(&self, network: &Network, lane: &mut Lane, force: bool, head: u64, fees: &mut Option<Fees>) -> Result<Option<bool>, SettleError> {
        let size = self.batch_size(network);
        let mut batch = self.journal.accepted(&network.network, size.saturating_add(self.claims.len()))?;
        batch.retain(|record| !self.claims.holds(&record.receipt_id));
        batch.truncate(size);
        let Some(first) = batch.first() else { return Ok(None) };
        let oldest_ms = batch.iter().map(|r| r.accepted_at_ms).min().unwrap_or(first.accepted_at_ms);
        let waited = Duration::from_millis(unix_now_ms().saturating_sub(oldest_ms));
        let full = batch.len() >= size;
        let due = force || full || waited >= self.policy.max_wait || first.item.valid_before <= unix_now() + self.policy.urgent_secs;
        if !due {
            return Ok(None);
        }
        self.send_batch(network, lane, batch, head, fees).await?;
        Ok(Some(full))
    }

    /// Simulates, sizes, signs at the lane's next nonce, journals and broadcasts one batch.
    async fn send_batch(&self, network: &Network, lane: &mut Lane, batch: Vec<PaymentRecord>, head: u64, fees: &mut Option<Fees>) -> Result<(), SettleError> {
        let started = std::time::Instant::now();
        let live = self.drop_unsettleable(batch).await?;
        let mut to_send = self.simulate(network, live).await?;
        if to_send.is_empty() {
            return Ok(());
        }
        let simulated = started.elapsed();
        let gas_limit = self.fit_gas_cap(network, &mut to_send).await?;
        let sized = started.elapsed();
        let fees = match fees {
            Some(fees) => *fees,
            None => *fees.insert(lane.client.fees().await?),
        };
        let nonce = match lane.next_nonce {
            Some(nonce) => nonce,
            None => lane.client.account_nonce(true).await?,
        };
        let data = calldata::aggregate3(to_send.iter().map(Pending::call));
        let signed = lane.client.sign_call(network.multicall, data.clone(), gas_limit, nonce, fees).await?;
        let batch = BatchRecord { transaction: signed.hash.to_string(), network: network.network.clone(), raw: signed.raw, sent_at_ms: unix_now_ms() };
        // Durable before it exists anywhere else: a crash after this line is resolved from
        // the journal, never by signing the same payments again blindly.
        self.journal.record_batch(batch.clone(), to_send.iter().map(|p| p.record.id).collect()).await?;
        lane.next_nonce = Some(nonce + 1);
        lane.open.insert(nonce, open_nonce(network.multicall, data, gas_limit, Attempt { hash: signed.hash, raw: batch.raw.clone(), fees }, head));
        tracing::info!(
            network = %network.network, tx = %batch.transaction, nonce, payments = to_send.len(), gas_limit,
            simulate_ms = simulated.as_millis() as u64, gas_ms = (sized - simulated).as_millis() as u64, total_ms = started.elapsed().as_millis() as u64,
            "settlement batch signed and journaled"
        );
        match lane.client.send_raw(&batch.raw).await {
            Ok(()) => {}
            Err(ChainError::Rejected(reason)) if reason.contains("nonce too low") => {
                // Something else used the key: the chain's count is read again for the next
                // batch, and this one resolves once the chain is past its nonce.
                tracing::warn!(tx = %batch.transaction, %reason, "settlement nonce already used; the lane reads the account's nonce again");
                lane.next_nonce = None;
            }
            Err(error) => tracing::warn!(tx = %batch.transaction, %error, "broadcast failed; the transaction stays open and is sent again"),
        }
        Ok(())
    }

    /// The gas limit for `to_send`, shrinking the batch (earliest deadlines kept; the rest
    /// stay `accepted` for the next batch) until it fits the per-transaction cap.
    async fn fit_gas_cap(&self, network: &Network, to_send: &mut Vec<Pending>) -> Result<u64, SettleError> {
        loop {
            let predicted = lock(&network.gas).predict(to_send.len());
            let gas_limit = match predicted {
                Some(gas_limit) => gas_limit,
                None => {
                    let calls = calldata::aggregate3_strict(to_send.iter().map(Pending::call));
                    let estimate = network.client.estimate_gas(network.multicall, calls).await?;
                    lock(&network.gas).estimated(estimate, to_send.len())
                }
            };
            if gas_limit <= self.policy.max_gas_per_transaction || to_send.len() == 1 {
                if predicted.is_some() {
                    lock(&network.gas).predicted_sent();
                }
                return Ok(gas_limit);
            }
            let fits = u128::from(self.policy.max_gas_per_transaction) * to_send.len() as u128 * 19 / 20 / u128::from(gas_limit);
            let keep = usize::try_from(fits).unwrap_or(1).clamp(1, to_send.len() - 1);
            tracing::info!(network = %network.network, gas_limit, payments = to_send.len(), keep, "batch above the gas cap; shrinking");
            to_send.truncate(keep);
        }
    }

    /// Resolves a journaled transaction no lane tracks, from its receipt: sent again if no
    /// node knows it, waited for up to `receipt_timeout`.
    async fn resolve_batch(&self, network: &Network, batch: BatchRecord) -> Result<(), SettleError> {
        let hash: B256 = batch.transaction.parse().map_err(|_| ChainError::Decode(format!("transaction hash {}", batch.transaction)))?;
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
        self.write_outcome(network, &[hash], mined.as_ref(), None).await
    }

    /// Writes what the attempts of one nonce (`hashes`; `mined`: the one that was mined, if
    /// known) did to their payments, then closes them in the journal.
    /// `gas_limit`: the limit the attempts were sent with, when known, to check the gas model.
    async fn write_outcome(&self, network: &Network, hashes: &[B256], mined: Option<&Mined>, gas_limit: Option<u64>) -> Result<(), SettleError> {
        let mut records = Vec::new();
        for hash in hashes {
            records.extend(self.journal.submitted_in(&hash.to_string())?);
        }
        records.sort_by_key(|record| record.id);
        records.dedup_by_key(|record| record.id);
        let payments: Vec<Pending> = self.decode_all(records).await?;
        self.count_batch(network, mined);
        let (landed, unclear): (Vec<&Pending>, Vec<&Pending>) =
            payments.iter().partition(|pending| mined.is_some_and(|mined| pending.paid_in(mined)));
        if let Some(mined) = mined {
            if let (Some(gas_limit), false) = (gas_limit, payments.is_empty()) {
                lock(&network.gas).mined(mined.success, unclear.is_empty(), mined.gas_used, gas_limit);
            }
            self.settle(&landed, mined.transaction).await?;
        }
        for pending in unclear {
            let outcome = self.reconcile(network, pending).await;
            self.apply(pending, outcome, "not settled by its batch").await?;
        }
        for hash in hashes {
            self.journal.finish_batch(hash.to_string()).await?;
        }
        Ok(())
    }

    /// Runs the batch as an `eth_call`; what would revert is settled or failed here and
    /// what would succeed is returned.
    async fn simulate(&self, network: &Network, live: Vec<Pending>) -> Result<Vec<Pending>, SettleError> {
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
    async fn recheck_given_up(&self, network: &Network) -> Result<(), SettleError> {
        let since = unix_now().saturating_sub(GIVEN_UP_RECHECK_AFTER_EXPIRY_SECS);
        for record in self.journal.given_up(&network.network, since)? {
            let Ok((token, authorization, signature)) = decode(&record) else { continue };
            let pending = Pending { record, token, authorization, signature };
            if let Outcome::Settled(transaction) = self.reconcile(network, &pending).await {
                tracing::warn!(payment = pending.record.id, tx = %transaction, "a payment given up on was paid after all; journal corrected to settled");
                self.journal.set_state(pending.record.id, PaymentState::Settled { transaction: transaction.to_string() }).await?;
                if let Some(credit) = &self.credit {
                    credit.ledger.forgive_loss(pending.record.usd_micros);
                }
                self.count_settled(&pending.record);
            }
        }
        Ok(())
    }

    /// What a reverted call means. "Used" is checked against the chain: the payment may
    /// have landed through another transaction (ours earlier, or anyone's).
    async fn classify_revert(&self, network: &Network, pending: &Pending, reason: &str) -> Outcome {
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
    async fn reconcile(&self, network: &Network, pending: &Pending) -> Outcome {
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
    async fn what_used(&self, network: &Network, pending: &Pending) -> Result<Outcome, SettleError> {
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
        // Blocked before the failure is visible: a payer who reads its receipt as failed
        // must not find the door still open for one more payment.
        let block = self.block_payer_at_fault(record, &reason);
        self.journal.set_state(record.id, PaymentState::Failed { reason: reason.clone() }).await?;
        self.metrics.payments.with_label_values(&[record.item.network.as_str(), "failed"]).inc();
        self.resolved(record, Some(&reason));
        if let Some(block) = block {
            self.journal.block_payer(block).await?;
        }
        Ok(())
    }

    fn count_batch(&self, network: &Network, mined: Option<&Mined>) {
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

    /// A payment reached its end: it no longer counts as credit.
    fn resolved(&self, record: &PaymentRecord, failure: Option<&str>) {
        let Some(credit) = self.credit.as_ref() else { return };
        credit.ledger.resolved(&record.into());
        // Served and never paid, whoever's fault: it counts against the loss budget. A
        // `settle: before` payment being settled now was not served: its failure loses nothing.
        if failure.is_some() && !self.claims.holds(&record.receipt_id) {
            credit.ledger.record_loss(record.usd_micros, unix_now());
        }
        if failure.is_none() {
            if let Some(paid) = &credit.payer_paid {
                paid(record);
            }
        }
    }

    /// Refuses the payer of a payment that failed by its own doing (from now, in memory);
    /// returns the block for the journal.
    fn block_payer_at_fault(&self, record: &PaymentRecord, reason: &str) -> Option<PayerBlock> {
        let credit = self.credit.as_ref()?;
        if !payer_at_fault(reason) {
            return None;
        }
        let (payer, until) = (record.payer.as_str(), unix_now() + credit.block_payer_for_secs);
        tracing::warn!(payer, until, reason, "payer refused until then");
        credit.ledger.block(payer, reason, until);
        Some(PayerBlock { payer: payer.to_owned(), until, reason: reason.to_owned() })
    }
}

/// A nonce the chain has passed, taken out of its lane, whose outcome is still to be written.
struct ClosedNonce {
    open: OpenNonce,
    /// The attempt that was mined, if a receipt of one was found.
    mined: Option<Mined>,
}

impl ClosedNonce {
    fn hashes(&self) -> Vec<B256> {
        self.open.hashes().collect()
    }

    /// Each attempt as the journal holds it: what the next round resolves from receipts
    /// when the outcome could not be written now.
    fn batch_records(self, network: &str) -> impl Iterator<Item = BatchRecord> + '_ {
        self.open.attempts.into_iter().map(move |attempt| BatchRecord {
            transaction: attempt.hash.to_string(),
            network: network.to_owned(),
            raw: attempt.raw,
            sent_at_ms: unix_now_ms(),
        })
    }
}

/// Makes sure the node still holds the newest attempt at `nonce`, sending its journaled
/// bytes again if not (a node restarted, or the first broadcast never arrived): a nonce the
/// node does not hold blocks every nonce above it.
async fn check_held(lane: &mut Lane, nonce: u64, head: u64) -> Result<(), SettleError> {
    let Lane { client, open, .. } = lane;
    let Some(open) = open.get_mut(&nonce) else { return Ok(()) };
    open.checked_at_block = head;
    let Some(newest) = open.newest() else { return Ok(()) };
    if client.transaction_known(newest.hash).await? {
        return Ok(());
    }
    match client.send_raw(&newest.raw).await {
        Ok(()) => tracing::info!(tx = %newest.hash, nonce, "re-sent a journaled settlement transaction the node did not hold"),
        Err(ChainError::Rejected(reason)) => tracing::warn!(tx = %newest.hash, nonce, %reason, "node refused a journaled settlement transaction; it is replaced once it waits too long"),
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

fn open_nonce(to: Address, data: Bytes, gas_limit: u64, attempt: Attempt, head: u64) -> OpenNonce {
    OpenNonce { to, data, gas_limit, attempts: vec![attempt], sent_at_block: head, checked_at_block: head, missing_receipt_rounds: 0 }
}

/// The token, authorization and signature of a journaled payment, as the chain takes them.
fn decode(record: &PaymentRecord) -> Result<(Address, Authorization, Signature), String> {
    let token = record.item.asset.parse().map_err(|_| format!("asset {} is not an address", record.item.asset))?;
    let authorization = parse_authorization(&record.item.payload.authorization).map_err(|e| e.to_string())?;
    let signature = parse_signature(&record.item.payload.signature).map_err(|e| e.to_string())?;
    Ok((token, authorization, signature))
}
