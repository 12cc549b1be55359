//! The optional balance check (`exposure.balance_check`): a payer's token balance, minus
//! what it already owes unsettled, must cover a new payment.
//!
//! Balances are read off the request path: a request whose payer has no cached balance is
//! let through on the exposure limits alone while a background read fills the cache, and
//! later requests are judged by it for `balance_cache_seconds`. The per-payer limit is what
//! bounds the first, unchecked payments.

use alloy_primitives::{Address, U256};
use moka::sync::Cache;
use std::sync::Arc;
use std::time::Duration;
use x402_settle::ChainClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BalanceKey {
    chain_id: u64,
    token: Address,
    owner: Address,
}

/// Cached token balances with a background reader per chain.
pub struct BalanceCache {
    /// `None` while a read is in flight.
    balances: Cache<BalanceKey, Option<U256>>,
    chains: Vec<(u64, ChainClient)>,
}

impl BalanceCache {
    pub fn new(chains: Vec<(u64, ChainClient)>, ttl: Duration) -> Self {
        Self { balances: Cache::builder().time_to_live(ttl).max_capacity(1_000_000).build(), chains }
    }

    /// The cached balance, if any. A miss starts one background read for the key.
    pub fn cached(self: &Arc<Self>, chain_id: u64, token: Address, owner: Address) -> Option<U256> {
        let key = BalanceKey { chain_id, token, owner };
        let entry = self.balances.entry(key).or_insert_with(|| None);
        if entry.is_fresh() {
            self.read_in_background(key);
        }
        entry.into_value()
    }

    fn read_in_background(self: &Arc<Self>, key: BalanceKey) {
        let Some((_, client)) = self.chains.iter().find(|(id, _)| *id == key.chain_id) else { return };
        let (client, cache) = (client.clone(), self.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            match client.balance_of(key.token, key.owner).await {
                Ok(balance) => cache.balances.insert(key, Some(balance)),
                Err(error) => {
                    tracing::warn!(owner = %key.owner, %error, "balance read failed");
                    cache.balances.invalidate(&key);
                }
            }
        });
    }
}
