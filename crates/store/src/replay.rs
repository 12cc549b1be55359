//! The replay/nonce store.

use std::collections::hash_map::{Entry, HashMap, RandomState};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;

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

/// In-process replay store: sharded hash tables of 128-bit key fingerprints and their
/// expiry, about 30-60 bytes per held nonce (moka, used before, took about 350).
///
/// - A fingerprint is two SipHash-1-3 digests of the key under keys drawn at random per
///   process, so nobody outside can aim for a collision; a collision by chance (2^-128 per
///   pair) would refuse a valid payment, never admit a replay.
/// - Entries live until their own `validBefore`: after that the token refuses the
///   authorization itself. There is no capacity bound: evicting a live entry would let its
///   payment be replayed. Expired entries are swept when a shard has doubled since its last
///   sweep, so the cost is amortized and memory follows the live set.
/// - A shard's check-and-insert happens under its lock: two racing requests with one
///   payment cannot both win. 64 shards keep cores from queueing on one lock.
pub struct MemoryReplayStore {
    shards: Box<[Mutex<Shard>]>,
    hashers: [RandomState; 2],
}

const SHARDS: usize = 64;

#[derive(Default)]
struct Shard {
    /// fingerprint → expiry (Unix seconds; u32 lasts until 2106).
    entries: HashMap<[u64; 2], u32, BuildHasherDefault<FingerprintHasher>>,
    sweep_at: usize,
}

impl Shard {
    fn sweep_if_grown(&mut self, now: u32) {
        if self.entries.len() < self.sweep_at {
            return;
        }
        self.entries.retain(|_, expiry| *expiry > now);
        self.sweep_at = (self.entries.len() * 2).max(1024);
    }
}

/// The fingerprint is already uniformly random: its first word is the table's hash.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hashers: [RandomState::new(), RandomState::new()] }
    }
}

impl MemoryReplayStore {
    fn fingerprint(&self, key: &ReplayKey) -> [u64; 2] {
        self.hashers.each_ref().map(|hasher| hasher.hash_one(key))
    }

    fn shard(&self, fingerprint: &[u64; 2]) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[(fingerprint[1] as usize) % SHARDS];
        // A panic elsewhere cannot leave a half-written entry: the table stays usable.
        shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn unix_now_u32() -> u32 {
    u32::try_from(crate::unix_now()).unwrap_or(u32::MAX)
}

impl ReplayStore for MemoryReplayStore {
    fn reserve(&self, key: ReplayKey, expires_at: u64) -> bool {
        let now = unix_now_u32();
        let expires_at = u32::try_from(expires_at).unwrap_or(u32::MAX);
        if expires_at <= now {
            // Already expired: the token refuses it anyway, and holding it would protect nothing.
            return true;
        }
        let fingerprint = self.fingerprint(&key);
        let mut shard = self.shard(&fingerprint);
        shard.sweep_if_grown(now);
        match shard.entries.entry(fingerprint) {
            Entry::Occupied(mut held) if *held.get() <= now => {
                held.insert(expires_at);
                true
            }
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(expires_at);
                true
            }
        }
    }

    fn release(&self, key: &ReplayKey) {
        let fingerprint = self.fingerprint(key);
        self.shard(&fingerprint).entries.remove(&fingerprint);
    }

    fn len(&self) -> u64 {
        let now = unix_now_u32();
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entries.values().filter(|e| **e > now).count() as u64)
            .sum()
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
        assert!(store.reserve(key(1), crate::unix_now() + 1));
        assert!(!store.reserve(key(1), crate::unix_now() + 60));
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(store.reserve(key(1), crate::unix_now() + 60), "an expired claim no longer blocks");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn sweeps_drop_expired_entries_and_keep_live_ones() {
        let store = MemoryReplayStore::default();
        let now = crate::unix_now();
        let shard_of = |k: &ReplayKey| (store.fingerprint(k)[1] as usize) % SHARDS;
        // Fill one shard with entries that expire at once, then grow it past its sweep mark.
        let target = shard_of(&key(0));
        let mut expired = 0u32;
        for n in 0u32.. {
            let mut k = key(0);
            k.nonce[..4].copy_from_slice(&n.to_be_bytes());
            if shard_of(&k) == target {
                store.shard(&store.fingerprint(&k)).entries.insert(store.fingerprint(&k), 1);
                expired += 1;
                if expired == 1100 {
                    break;
                }
            }
        }
        let live = ReplayKey { nonce: [0xee; 32], ..key(0) };
        assert!(store.reserve(live, now + 60));
        for n in 0u32..200_000 {
            let mut k = key(1);
            k.nonce[..4].copy_from_slice(&n.to_be_bytes());
            if shard_of(&k) == target {
                assert!(store.reserve(k, now + 60));
                break;
            }
        }
        let remaining = store.shards[target].lock().unwrap().entries.len();
        assert!(remaining < 10, "expired entries were swept ({remaining} left)");
        assert!(!store.reserve(live, now + 60), "a live entry survives the sweep");
    }
}
