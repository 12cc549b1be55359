//! The balance check (`exposure.balance_check`, on by default): a payer's token balance,
//! minus what it already owes unsettled, must cover a new payment.
//!
//! A payer's first payment waits for one balance read (at most `balance_timeout_ms`; a read
//! that fails or is late answers 503, never a free pass). Concurrent payments of one payer
//! share that read, and later ones are judged by it for `balance_cache_seconds`. The check
//! itself happens under the exposure ledger's lock (see `Exposure::try_add`), so concurrent
//! payments cannot each spend the same balance.

use alloy_primitives::{Address, U256};
use moka::future::Cache;
use std::sync::Arc;
use std::time::Duration;
use x402_settle::ChainClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BalanceKey {
    chain_id: u64,
    token: Address,
    owner: Address,
}

/// Why no balance is known for a payment: it is refused with 503 and may be sent again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BalanceUnavailable {
    #[error("no RPC node is configured for chain {0}")]
    UnknownChain(u64),
    #[error("the payer's balance could not be read in {0:?}")]
    TimedOut(Duration),
    #[error("the payer's balance could not be read: {0}")]
    ReadFailed(String),
}

/// Token balances read through the networks' RPC URLs, cached and shared by concurrent payments.
pub struct BalanceCache {
    balances: Cache<BalanceKey, U256>,
    chains: Vec<(u64, ChainClient)>,
    timeout: Duration,
    /// Read slots: a flood of fresh payer addresses waits for one (then gets 503s), rather
    /// than bury an RPC node that settlement needs too.
    reads: tokio::sync::Semaphore,
}

/// Most balance reads in flight at once.
const MAX_READS_IN_FLIGHT: usize = 32;

impl BalanceCache {
    pub fn new(chains: Vec<(u64, ChainClient)>, ttl: Duration, timeout: Duration) -> Self {
        Self {
            balances: Cache::builder().time_to_live(ttl).max_capacity(1_000_000).build(),
            chains,
            timeout,
            reads: tokio::sync::Semaphore::new(MAX_READS_IN_FLIGHT),
        }
    }

    /// A payment of this payer settled: its balance dropped, so the next payment reads it
    /// again rather than spend what is already gone.
    pub fn forget_paid(self: &Arc<Self>, record: &x402_store::PaymentRecord) {
        let (Ok(token), Ok(owner)) = (record.item.asset.parse::<Address>(), record.payer.parse::<Address>()) else { return };
        let key = BalanceKey { chain_id: record.item.chain_id, token, owner };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let cache = Arc::clone(self);
        runtime.spawn(async move { cache.balances.invalidate(&key).await });
    }

    /// The payer's balance: cached, or read now (once for all who ask at the same time).
    pub async fn balance(&self, chain_id: u64, token: Address, owner: Address) -> Result<U256, BalanceUnavailable> {
        let key = BalanceKey { chain_id, token, owner };
        let client = self.chains.iter().find(|(id, _)| *id == chain_id).map(|(_, c)| c).ok_or(BalanceUnavailable::UnknownChain(chain_id))?;
        // The timeout covers the wait for a read slot too: a burst queues briefly, a flood
        // gets 503s instead of burying the node.
        let read = async {
            let read_when_free = async {
                let _slot = self.reads.acquire().await.map_err(|_| BalanceUnavailable::ReadFailed("shutting down".into()))?;
                client.balance_of(token, owner).await.map_err(|error| BalanceUnavailable::ReadFailed(error.to_string()))
            };
            tokio::time::timeout(self.timeout, read_when_free).await.unwrap_or(Err(BalanceUnavailable::TimedOut(self.timeout)))
        };
        self.balances.try_get_with(key, read).await.map_err(|error| {
            tracing::warn!(owner = %owner, %error, "balance read failed");
            (*error).clone()
        })
    }
}
