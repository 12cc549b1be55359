//! Unclaimed voucher value against the operator's exposure limits.
//!
//! A `batch-settlement` charge is owed until a claim puts it on-chain: the escrow holds the
//! payer's deposit, but a payer who withdraws before the claim takes it back. So a voucher
//! counts against `exposure` (per payer, per route, in total, and the loss budget's
//! refusals) from the moment it holds its channel until the chain's `totalClaimed` passes
//! its cumulative amount, exactly like an unsettled `exact` payment.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use x402_store::{unix_now, ChannelId, ChannelRecord, ChannelStore, Exposure, ExposureRefusal};

/// Route name for value restored from the journal at start: the journal keeps a channel's
/// charged total, not which route charged each part.
pub const RESTORED_ROUTE: &str = "(channels restored at start)";

/// A charge not yet claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnclaimedCharge {
    /// The channel's charged total with this charge: claimed once `totalClaimed` reaches it.
    cumulative: u128,
    payer: String,
    route: String,
    usd_micros: u64,
}

pub struct ChannelExposure {
    exposure: Arc<Exposure>,
    unclaimed: Mutex<HashMap<ChannelId, VecDeque<UnclaimedCharge>>>,
}

impl ChannelExposure {
    pub fn new(exposure: Arc<Exposure>) -> Self {
        Self { exposure, unclaimed: Mutex::default() }
    }

    /// Counts the unclaimed value of journaled channels again, after a restart.
    pub fn restore(&self, records: &[ChannelRecord], usd_micros_of: impl Fn(&ChannelRecord) -> u64) {
        let mut unclaimed = lock(&self.unclaimed);
        for record in records.iter().filter(|record| record.unclaimed() > 0) {
            let payer = alloy_primitives::Address::from(record.terms.payer).to_checksum(None);
            let usd_micros = usd_micros_of(record);
            self.exposure.restore(&payer, RESTORED_ROUTE, usd_micros);
            let charge = UnclaimedCharge { cumulative: record.charged, payer, route: RESTORED_ROUTE.to_owned(), usd_micros };
            unclaimed.entry(record.id).or_default().push_back(charge);
        }
    }

    /// Counts a held voucher's price, or refuses it and counts nothing.
    pub fn admit(&self, payer: &str, route: &str, usd_micros: u64) -> Result<(), ExposureRefusal> {
        self.exposure.try_add(payer, route, usd_micros, unix_now(), None)
    }

    /// A held voucher that was not charged no longer counts.
    pub fn release(&self, payer: &str, route: &str, usd_micros: u64) {
        self.exposure.remove(payer, route, usd_micros);
    }

    /// A charged voucher counts until its channel's claims pass `cumulative`.
    pub fn charged(&self, channel: ChannelId, cumulative: u128, payer: &str, route: &str, usd_micros: u64) {
        let charge = UnclaimedCharge { cumulative, payer: payer.to_owned(), route: route.to_owned(), usd_micros };
        lock(&self.unclaimed).entry(channel).or_default().push_back(charge);
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
                if let Some(charge) = charges.pop_front() {
                    self.exposure.remove(&charge.payer, &charge.route, charge.usd_micros);
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
    use x402_store::{ExposureLimits, MemoryChannelStore, OnchainChannel};

    fn record(charged: u128, claimed: u128) -> ChannelRecord {
        ChannelRecord {
            id: [7; 32],
            network: "eip155:84532".into(),
            chain_id: 84532,
            terms: x402_store::ChannelTerms { payer: [1; 20], payer_authorizer: [1; 20], receiver: [2; 20], receiver_authorizer: [3; 20], token: [4; 20], withdraw_delay: 900, salt: [0; 32] },
            charged,
            signed_max: charged,
            signature: Vec::new(),
            onchain: OnchainChannel { balance: 100_000, total_claimed: claimed, ..OnchainChannel::default() },
            last_charged_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_charge_counts_until_a_claim_passes_it_and_the_limit_refuses_beyond() {
        let exposure = Arc::new(Exposure::new(ExposureLimits { per_payer: Some(2_500), ..ExposureLimits::default() }));
        let channels = ChannelExposure::new(exposure.clone());
        for cumulative in [1_000, 2_000] {
            channels.admit("0xpayer", "metered", 1_000).unwrap();
            channels.charged([7; 32], cumulative, "0xpayer", "metered", 1_000);
        }
        assert!(matches!(channels.admit("0xpayer", "metered", 1_000), Err(ExposureRefusal::Payer { unsettled: 2_000, limit: 2_500 })));
        let store = MemoryChannelStore::with_records([record(2_000, 1_000)]);
        channels.sweep_claimed(&store).await;
        assert_eq!(exposure.payer("0xpayer"), 1_000, "the first charge is claimed");
        channels.admit("0xpayer", "metered", 1_000).unwrap();
        channels.release("0xpayer", "metered", 1_000);
        store.mirror(&[7; 32], OnchainChannel { total_claimed: 2_000, ..OnchainChannel::default() }).await.unwrap();
        channels.sweep_claimed(&store).await;
        assert_eq!(exposure.total(), 0);
    }

    #[test]
    fn unclaimed_value_is_counted_again_after_a_restart() {
        let exposure = Arc::new(Exposure::new(ExposureLimits::default()));
        let channels = ChannelExposure::new(exposure.clone());
        channels.restore(&[record(5_000, 2_000), record(3_000, 3_000)], |record| u64::try_from(record.unclaimed()).unwrap());
        assert_eq!(exposure.route(RESTORED_ROUTE), 3_000);
    }
}
