//! The payment ledger: what every replica must agree on before a paid request is forwarded.
//!
//! One call on the request path ([`PaymentLedger::hold`]) reserves a payment's nonce and counts
//! its value against the exposure limits, the payer blocks and the loss budget, atomically; the
//! settler tells the ledger how each payment ended. [`LocalLedger`] keeps all of it in this
//! process (the default, one gateway); [`crate::redis_ledger::RedisLedger`] keeps it in Redis,
//! shared by every replica, in one round trip per payment.

use crate::exposure::{Exposure, ExposureLimits, ExposureRefusal, ExposureSnapshot, PayerBlock};
use crate::journal::PaymentRecord;
use crate::replay::{ReplayKey, ReplayStore};
use async_trait::async_trait;
use std::sync::Arc;

/// A payment to hold: its authorization's identity and what it counts against.
#[derive(Debug, Clone)]
pub struct Hold<'a> {
    pub key: ReplayKey,
    /// The payment's public id (derived from `key`): the shared store keys on it.
    pub receipt_id: &'a str,
    /// Unix seconds: the authorization cannot be replayed after it.
    pub valid_before: u64,
    pub payer: &'a str,
    pub route: &'a str,
    pub usd_micros: u64,
    /// The payer's token balance in micro-USD, when the balance check read it.
    pub balance: Option<u64>,
    /// Unix seconds.
    pub now: u64,
    /// Tells this hold from any other of the same nonce: a release deletes only its own.
    pub token: u64,
}

/// Value a hold counted, to stop counting: a payment settled or failed on-chain, a channel
/// charge claimed.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    pub receipt_id: &'a str,
    pub payer: &'a str,
    pub route: &'a str,
    pub usd_micros: u64,
    /// The hold's `valid_before`: a shared store forgets the entry after it.
    pub valid_before: u64,
}

impl<'a> From<&'a PaymentRecord> for Counted<'a> {
    fn from(record: &'a PaymentRecord) -> Self {
        Self { receipt_id: &record.receipt_id, payer: &record.payer, route: &record.route, usd_micros: record.usd_micros, valid_before: record.item.valid_before }
    }
}

/// Why a payment is not held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerRefusal {
    /// The authorization is in flight or already charged.
    #[error("this payment authorization was already used")]
    Replayed,
    #[error(transparent)]
    Exposure(#[from] ExposureRefusal),
    /// The shared store cannot answer: nothing is held, the payment stays usable.
    #[error(transparent)]
    Unavailable(#[from] StoreUnavailable),
}

/// The shared store did not answer in time, or answered with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the shared payment store is unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// A journaled payment, given to the ledger at start so it is reserved (and, while it is
/// unsettled, counted) even if the shared store lost it.
#[derive(Debug, Clone)]
pub struct Restored {
    pub key: ReplayKey,
    pub receipt_id: String,
    pub valid_before: u64,
    pub payer: String,
    pub route: String,
    pub usd_micros: u64,
    /// Still unsettled: counts against the limits.
    pub unsettled: bool,
}

/// Replay reservations, exposure, payer blocks and the loss budget, as one ledger.
///
/// The request path awaits `precheck`, `hold` and `release`. The settler's calls (`resolved`,
/// `record_loss`, `forgive_loss`, `block`, `merge_blocks`) never block it: a shared store
/// applies them in order in the background, retrying until the store answers.
#[async_trait]
pub trait PaymentLedger: Send + Sync {
    /// Refusals that need no balance (a spent loss budget, a blocked payer), so refused
    /// payments cost no balance read. A shared store may answer `Ok` and leave them to `hold`.
    async fn precheck(&self, payer: &str, now: u64) -> Result<(), LedgerRefusal>;
    /// Reserves the nonce and counts the value, or refuses and holds nothing.
    async fn hold(&self, hold: &Hold<'_>) -> Result<(), LedgerRefusal>;
    /// Nobody was charged: the value no longer counts. `keep_reservation`: the authorization
    /// is used up all the same (the upstream did work for it), so its nonce stays reserved.
    async fn release(&self, hold: &Hold<'_>, keep_reservation: bool);
    /// At start: the journal's payments still inside their validity.
    async fn restore(&self, payments: &[Restored]) -> Result<(), StoreUnavailable>;
    /// The payment settled or failed on-chain (or the channel charge was claimed): it no
    /// longer counts.
    fn resolved(&self, counted: &Counted<'_>);
    /// Value served and never paid goes into the loss budget.
    fn record_loss(&self, usd_micros: u64, now: u64);
    /// A payment counted as lost was paid after all.
    fn forgive_loss(&self, usd_micros: u64);
    /// Refuses `payer` until `until` (Unix seconds).
    fn block(&self, payer: &str, reason: &str, until: u64);
    /// The journal's blocks (operators edit them there): this process's ledger takes exactly
    /// these; a shared one adds them, since other replicas' blocks are not in this journal.
    fn merge_blocks(&self, blocks: Vec<PayerBlock>);
    fn set_limits(&self, limits: ExposureLimits);
    async fn unblock(&self, payer: &str) -> Result<bool, StoreUnavailable>;
    /// An operator's reset of the loss budget; returns what it cleared.
    async fn reset_losses(&self, now: u64) -> Result<u64, StoreUnavailable>;
    async fn snapshot(&self, top: usize, now: u64) -> Result<ExposureSnapshot, StoreUnavailable>;
    /// Which other replica holds this payment (its advertised URL), while the store still
    /// knows it (until the authorization's `validBefore`). `None` in one process.
    async fn receipt_owner(&self, receipt_id: &str) -> Result<Option<String>, StoreUnavailable>;
    /// Waits (at most `patience`) until every settler update sent so far is applied; false if
    /// some are still waiting for the store. Before the process exits.
    async fn flush(&self, patience: std::time::Duration) -> bool;
    /// `Some(why)` while the ledger cannot take payments (readiness fails with it).
    fn unavailable(&self) -> Option<String>;
    /// Store calls that failed or timed out since the process started (0 in process).
    fn store_errors(&self) -> u64 {
        0
    }
    /// `"memory"` or `"redis"`.
    fn kind(&self) -> &'static str;
}

/// The ledger of one process: a replay store and an exposure ledger in memory.
pub struct LocalLedger {
    replay: Arc<dyn ReplayStore>,
    exposure: Arc<Exposure>,
}

impl LocalLedger {
    /// `exposure` may be shared with other counters of this process (payment channels).
    pub fn new(replay: Arc<dyn ReplayStore>, exposure: Arc<Exposure>) -> Self {
        Self { replay, exposure }
    }

    /// [`PaymentLedger::restore`], which in this process never waits.
    pub fn restore_now(&self, payments: &[Restored]) {
        for payment in payments {
            self.replay.reserve(payment.key, payment.valid_before);
            if payment.unsettled {
                self.exposure.restore(&payment.payer, &payment.route, payment.usd_micros);
            }
        }
    }
}

#[async_trait]
impl PaymentLedger for LocalLedger {
    async fn precheck(&self, payer: &str, now: u64) -> Result<(), LedgerRefusal> {
        Ok(self.exposure.precheck(payer, now)?)
    }

    async fn hold(&self, hold: &Hold<'_>) -> Result<(), LedgerRefusal> {
        if !self.replay.reserve(hold.key, hold.valid_before) {
            return Err(LedgerRefusal::Replayed);
        }
        if let Err(refusal) = self.exposure.try_add(hold.payer, hold.route, hold.usd_micros, hold.now, hold.balance) {
            self.replay.release(&hold.key);
            return Err(refusal.into());
        }
        Ok(())
    }

    async fn release(&self, hold: &Hold<'_>, keep_reservation: bool) {
        self.exposure.remove(hold.payer, hold.route, hold.usd_micros);
        if !keep_reservation {
            self.replay.release(&hold.key);
        }
    }

    async fn restore(&self, payments: &[Restored]) -> Result<(), StoreUnavailable> {
        self.restore_now(payments);
        Ok(())
    }

    fn resolved(&self, counted: &Counted<'_>) {
        self.exposure.remove(counted.payer, counted.route, counted.usd_micros);
    }

    fn record_loss(&self, usd_micros: u64, now: u64) {
        self.exposure.record_loss(usd_micros, now);
    }

    fn forgive_loss(&self, usd_micros: u64) {
        self.exposure.forgive_loss(usd_micros);
    }

    fn block(&self, payer: &str, reason: &str, until: u64) {
        self.exposure.block(payer, reason, until);
    }

    fn merge_blocks(&self, blocks: Vec<PayerBlock>) {
        self.exposure.replace_blocks(blocks);
    }

    fn set_limits(&self, limits: ExposureLimits) {
        self.exposure.set_limits(limits);
    }

    async fn unblock(&self, payer: &str) -> Result<bool, StoreUnavailable> {
        Ok(self.exposure.unblock(payer))
    }

    async fn reset_losses(&self, now: u64) -> Result<u64, StoreUnavailable> {
        Ok(self.exposure.reset_losses(now))
    }

    async fn snapshot(&self, top: usize, now: u64) -> Result<ExposureSnapshot, StoreUnavailable> {
        Ok(self.exposure.snapshot(top, now))
    }

    async fn receipt_owner(&self, _receipt_id: &str) -> Result<Option<String>, StoreUnavailable> {
        Ok(None)
    }

    async fn flush(&self, _patience: std::time::Duration) -> bool {
        true
    }

    fn unavailable(&self) -> Option<String> {
        None
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
