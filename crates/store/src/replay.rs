//! The replay/nonce store.

use moka::sync::Cache;
use moka::Expiry;
use std::time::{Duration, Instant};

/// What identifies one EIP-3009 authorization on-chain: the token contract tracks used
/// nonces per authorizer, so the key is (chain, token, authorizer, nonce).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    pub chain_id: u64,
    pub asset: [u8; 20],
    pub from: [u8; 20],
    pub nonce: [u8; 32],
}

/// Reserves payments so that each is served at most once.
pub trait ReplayStore: Send + Sync {
    /// Atomically claims `key` until `expires_at` (Unix seconds). Returns `false` when the
    /// key is already held: by a request in flight, or by a payment already charged.
    fn reserve(&self, key: ReplayKey, expires_at: u64) -> bool;
    /// Gives a claim back when nobody was charged (the upstream failed or answered a
    /// status that is not billable), so the client may use the same payment again.
    fn release(&self, key: &ReplayKey);
    /// Number of claims held.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In-process replay store on moka. Entries expire at their own `validBefore`: after that
/// the token itself refuses the authorization, so the entry has nothing left to protect.
/// There is deliberately no capacity bound: evicting a live entry would let its payment
/// be replayed.
pub struct MemoryReplayStore {
    cache: Cache<ReplayKey, u64>,
}

struct UntilValidBefore;

impl Expiry<ReplayKey, u64> for UntilValidBefore {
    fn expire_after_create(&self, _key: &ReplayKey, expires_at: &u64, _created_at: Instant) -> Option<Duration> {
        Some(Duration::from_secs(expires_at.saturating_sub(crate::unix_now())))
    }
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self { cache: Cache::builder().expire_after(UntilValidBefore).build() }
    }
}

impl ReplayStore for MemoryReplayStore {
    fn reserve(&self, key: ReplayKey, expires_at: u64) -> bool {
        // `or_insert_with` coalesces concurrent inserts of one key into a single winner;
        // `or_insert` is a get-then-insert and lets two racing requests both win.
        self.cache.entry(key).or_insert_with(|| expires_at).is_fresh()
    }

    fn release(&self, key: &ReplayKey) {
        self.cache.invalidate(key);
    }

    fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn key(n: u8) -> ReplayKey {
        ReplayKey { chain_id: 84532, asset: [1; 20], from: [2; 20], nonce: [n; 32] }
    }

    #[test]
    fn a_key_is_reserved_once_until_released() {
        let store = MemoryReplayStore::default();
        let until = crate::unix_now() + 60;
        assert!(store.reserve(key(1), until));
        assert!(!store.reserve(key(1), until));
        assert!(store.reserve(key(2), until));
        store.release(&key(1));
        assert!(store.reserve(key(1), until));
    }

    #[test]
    fn concurrent_reservations_of_one_key_have_exactly_one_winner() {
        let store = Arc::new(MemoryReplayStore::default());
        let until = crate::unix_now() + 60;
        for round in 0..20u8 {
            let barrier = Arc::new(Barrier::new(16));
            let winners: usize = (0..16)
                .map(|_| {
                    let (store, barrier) = (store.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        store.reserve(key(round), until)
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum();
            assert_eq!(winners, 1, "round {round}");
        }
    }

    #[test]
    fn entries_expire_at_valid_before() {
        let store = MemoryReplayStore::default();
        assert!(store.reserve(key(1), crate::unix_now()));
        std::thread::sleep(Duration::from_millis(20));
        assert!(store.reserve(key(1), crate::unix_now() + 60), "an expired claim no longer blocks");
    }
}
