//! Unclaimed voucher value against the operator's exposure limits.
//!
//! A `batch-settlement` charge is owed until a claim puts it on-chain: the escrow holds the
//! payer's deposit, but a payer who withdraws before the claim takes it back. So a voucher
//! counts against `exposure` (per payer, per route, in total, and the loss budget's
//! refusals) from the moment it holds its channel until the chain's `totalClaimed` passes
//! its cumulative amount, exactly like an unsettled `exact` payment. It is counted in the
//! payment ledger as a hold of its own (an entry no authorization can collide with), so the
//! same limits count both schemes, in this process or shared by every replica.

use alloy_primitives::keccak256;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use x402_store::{unix_now, ChannelId, ChannelRecord, ChannelStore, Counted, Hold, LedgerRefusal, PaymentLedger, ReplayKey, Restored};

/// Route name for value restored from the journal at start: the journal keeps a channel's
/// charged total, not which route charged each part.
pub const RESTORED_ROUTE: &str = "(channels restored at start)";

/// A held charge's entry stays in the ledger this long at least (the longest a request may
/// hold its channel); once charged it counts until claimed, whatever this says.
const ENTRY_SECONDS: u64 = 600;

/// One charge as the ledger counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCharge {
    key: ReplayKey,
    receipt_id: String,
    valid_before: u64,
    token: u64,
    payer: String,
    route: String,
    usd_micros: u64,
}

impl ChannelCharge {
    /// The ledger entry of a charge of `channel` up to `cumulative`; `token` tells this
    /// request's from a retry of the same increment.
    fn new(channel: &ChannelId, cumulative: u128, token: u64, payer: &str, route: &str, usd_micros: u64) -> Self {
        let digest = keccak256([b"x402-gateway channel charge".as_slice(), channel, &cumulative.to_be_bytes(), &token.to_be_bytes()].concat());
        let key = ReplayKey { chain_id: 0, asset: [0; 20], from: [0; 20], nonce: digest.0 };
        let valid_before = unix_now() + ENTRY_SECONDS;
        Self { key, receipt_id: format!("channel-charge-{digest:x}"), valid_before, token, payer: payer.to_owned(), route: route.to_owned(), usd_micros }
    }

    fn hold(&self, balance: Option<u64>) -> Hold<'_> {
        Hold {
            key: self.key,
            receipt_id: &self.receipt_id,
            valid_before: self.valid_before,
            payer: &self.payer,
            route: &self.route,
            usd_micros: self.usd_micros,
            balance,
            now: unix_now(),
            token: self.token,
        }
    }

    fn counted(&self) -> Counted<'_> {
        Counted { receipt_id: &self.receipt_id, payer: &self.payer, route: &self.route, usd_micros: self.usd_micros, valid_before: self.valid_before }
    }
}

/// A charge not yet claimed: claimed once the channel's `totalClaimed` reaches `cumulative`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnclaimedCharge {
    cumulative: u128,
    charge: ChannelCharge,
}

pub struct ChannelExposure {
    ledger: Arc<dyn PaymentLedger>,
    /// The charges this process made (or restored), per channel, oldest first.
    unclaimed: Mutex<HashMap<ChannelId, VecDeque<UnclaimedCharge>>>,
}

impl ChannelExposure {
    pub fn new(ledger: Arc<dyn PaymentLedger>) -> Self {
        Self { ledger, unclaimed: Mutex::default() }
    }

    /// Counts the unclaimed value of journaled channels again, after a restart.
    pub async fn restore(&self, records: &[ChannelRecord], usd_micros_of: impl Fn(&ChannelRecord) -> u64) -> Result<(), x402_store::StoreUnavailable> {
        let mut restored = Vec::new();
        let mut charges = Vec::new();
        for record in records.iter().filter(|record| record.unclaimed() > 0) {
            let payer = alloy_primitives::Address::from(record.terms.payer).to_checksum(None);
            // Deterministic: a restart restores the same entry, never a second one.
            let charge = ChannelCharge::new(&record.id, record.charged, 0, &payer, RESTORED_ROUTE, usd_micros_of(record));
            restored.push(Restored {
                key: charge.key,
                receipt_id: charge.receipt_id.clone(),
                valid_before: charge.valid_before,
                payer: payer.clone(),
                route: RESTORED_ROUTE.to_owned(),
                usd_micros: charge.usd_micros,
                unsettled: true,
            });
            charges.push((record.id, UnclaimedCharge { cumulative: record.charged, charge }));
        }
        self.ledger.restore(&restored).await?;
        let mut unclaimed = lock(&self.unclaimed);
        for (id, charge) in charges {
            unclaimed.entry(id).or_default().push_back(charge);
        }
        Ok(())
    }

    /// Counts a held voucher's price (the channel charged up to `cumulative` if it is
    /// charged), or refuses it and counts nothing.
    pub async fn admit(&self, channel: &ChannelId, cumulative: u128, payer: &str, route: &str, usd_micros: u64) -> Result<ChannelCharge, LedgerRefusal> {
        let charge = ChannelCharge::new(channel, cumulative, crate::payment::next_hold_token(), payer, route, usd_micros);
        self.ledger.hold(&charge.hold(None)).await?;
        Ok(charge)
    }

    /// A held voucher that was not charged no longer counts.
    pub async fn release(&self, charge: &ChannelCharge) {
        self.ledger.release(&charge.hold(None), false).await;
    }

    /// A charged voucher counts until its channel's claims pass `cumulative`.
    pub fn charged(&self, channel: ChannelId, cumulative: u128, charge: ChannelCharge) {
        lock(&self.unclaimed).entry(channel).or_default().push_back(UnclaimedCharge { cumulative, charge });
    }

    /// Stops counting what the channels' mirrored `totalClaimed` shows claimed. A channel the
    /// store cannot be asked about keeps counting.
    pub async fn sweep_claimed(&self, store: &dyn ChannelStore) {
        let ids: Vec<ChannelId> = lock(&self.unclaimed).keys().copied().collect();
        let mut claimed_totals = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Ok(record) = store.get(&id).await {
                claimed_totals.insert(id, record.map_or(0, |record| record.onchain.total_claimed));
            }
        }
        let mut unclaimed = lock(&self.unclaimed);
        unclaimed.retain(|id, charges| {
            let Some(&claimed) = claimed_totals.get(id) else { return true };
            while charges.front().is_some_and(|charge| charge.cumulative <= claimed) {
                if let Some(claimed) = charges.pop_front() {
                    self.ledger.resolved(&claimed.charge.counted());
                }
            }
            !charges.is_empty()
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x402_store::{Exposure, ExposureLimits, ExposureRefusal, LocalLedger, MemoryChannelStore, MemoryReplayStore, OnchainChannel};

    fn record(charged: u128, claimed: u128) -> ChannelRecord {
        ChannelRecord {
            id: [7; 32],
            network: "eip155:84532".into(),
            chain_id: 84532,
            terms: x402_store::ChannelTerms { payer: [1; 20], payer_authorizer: [1; 20], receiver: [2; 20], receiver_authorizer: [3; 20], token: [4; 20], withdraw_delay: 900, salt: [0; 32] },
            charged,
            signed_max: charged,
            signature: Vec::new(),
            onchain: OnchainChannel { balance: 100_000, total_claimed: claimed, synced_at_ms: 1, ..OnchainChannel::default() },
            last_charged_at_ms: 0,
        }
    }

    fn ledger(limits: ExposureLimits) -> (Arc<Exposure>, ChannelExposure) {
        let exposure = Arc::new(Exposure::new(limits));
        let ledger = LocalLedger::new(Arc::new(MemoryReplayStore::default()), exposure.clone());
        (exposure, ChannelExposure::new(Arc::new(ledger)))
    }

    #[tokio::test]
    async fn a_charge_counts_until_a_claim_passes_it_and_the_limit_refuses_beyond() {
        let (exposure, channels) = ledger(ExposureLimits { per_payer: Some(2_500), ..ExposureLimits::default() });
        for cumulative in [1_000, 2_000] {
            let charge = channels.admit(&[7; 32], cumulative, "0xpayer", "metered", 1_000).await.unwrap();
            channels.charged([7; 32], cumulative, charge);
        }
        let refused = channels.admit(&[7; 32], 3_000, "0xpayer", "metered", 1_000).await;
        assert_eq!(refused, Err(LedgerRefusal::Exposure(ExposureRefusal::Payer { unsettled: 2_000, limit: 2_500 })));
        let store = MemoryChannelStore::with_records([record(2_000, 1_000)]);
        channels.sweep_claimed(&store).await;
        assert_eq!(exposure.payer("0xpayer"), 1_000, "the first charge is claimed");
        let held = channels.admit(&[7; 32], 3_000, "0xpayer", "metered", 1_000).await.unwrap();
        channels.release(&held).await;
        let again = channels.admit(&[7; 32], 3_000, "0xpayer", "metered", 1_000).await.expect("a released increment can be held again");
        channels.release(&again).await;
        store.mirror(&[7; 32], OnchainChannel { total_claimed: 2_000, synced_at_ms: 2, ..OnchainChannel::default() }).await.unwrap();
        channels.sweep_claimed(&store).await;
        assert_eq!(exposure.total(), 0);
    }

    #[tokio::test]
    async fn unclaimed_value_is_counted_again_after_a_restart_once() {
        let (exposure, channels) = ledger(ExposureLimits::default());
        let records = [record(5_000, 2_000), record(3_000, 3_000)];
        channels.restore(&records, |record| u64::try_from(record.unclaimed()).unwrap()).await.unwrap();
        assert_eq!(exposure.route(RESTORED_ROUTE), 3_000);
        let store = MemoryChannelStore::with_records([record(5_000, 5_000)]);
        channels.sweep_claimed(&store).await;
        assert_eq!(exposure.total(), 0, "claimed since");
    }
}
