//! Payment-channel state of the `batch-settlement` scheme, one record per channel: what the
//! gateway has charged, the payer's latest voucher (what a claim puts on-chain), and a mirror
//! of the escrow contract's view of the channel.
//!
//! Two rules hold per channel whatever stores it:
//! - **One request in flight.** [`ChannelStore::begin`] takes the channel's only slot until
//!   the request is charged ([`ChannelStore::commit`]), released ([`ChannelStore::cancel`]) or
//!   its slot expires; a second request meanwhile is refused as busy. A voucher is cumulative
//!   (previous charge + price), so two at once would sign the same total twice.
//! - **Charges only grow.** A commit whose charged total is below the stored one is refused:
//!   after a crash or a lost race the record never under-charges, and never asks a client to
//!   sign backwards.
//!
//! [`MemoryChannelStore`] is the in-process implementation (one gateway); the journal keeps
//! the durable copy ([`crate::Journal::save_channel`]) from which it is rebuilt at start. A
//! shared implementation (several replicas) is another `ChannelStore`.

use crate::ledger::StoreUnavailable;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A channel's id: the EIP-712 digest of its configuration.
pub type ChannelId = [u8; 32];

/// A channel's configuration, as the escrow contract hashes it into the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTerms {
    pub payer: [u8; 20],
    pub payer_authorizer: [u8; 20],
    pub receiver: [u8; 20],
    pub receiver_authorizer: [u8; 20],
    pub token: [u8; 20],
    pub withdraw_delay: u64,
    pub salt: [u8; 32],
}

/// What the escrow contract says of a channel, and when it was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnchainChannel {
    /// Deposited and not withdrawn: the most any voucher of this channel can claim.
    pub balance: u128,
    /// Claimed so far: a voucher below it claims nothing more.
    pub total_claimed: u128,
    /// When the payer asked to withdraw (Unix seconds), 0 when not pending.
    pub withdraw_requested_at: u64,
    pub refund_nonce: u64,
    /// When this was read (Unix ms); 0 when never.
    pub synced_at_ms: u64,
}

/// Everything the gateway knows of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: ChannelId,
    /// CAIP-2 network id.
    pub network: String,
    pub chain_id: u64,
    pub terms: ChannelTerms,
    /// What the gateway has charged on this channel, cumulative.
    pub charged: u128,
    /// The payer's latest voucher: the cumulative amount it signed, and its signature.
    pub signed_max: u128,
    pub signature: Vec<u8>,
    pub onchain: OnchainChannel,
    /// When the last request was charged (Unix ms).
    pub last_charged_at_ms: u64,
}

impl ChannelRecord {
    /// Charged and not yet claimed on-chain: what the operator would lose if the payer
    /// withdrew now.
    pub fn unclaimed(&self) -> u128 {
        self.charged.saturating_sub(self.onchain.total_claimed)
    }
}

/// Holds a channel's one request slot; give it back through `commit` or `cancel`.
#[derive(Debug, PartialEq, Eq)]
pub struct ChannelTicket {
    pub id: ChannelId,
    /// Which request holds the slot (a shared store's random token).
    pub(crate) serial: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelRefusal {
    /// Another request on this channel is in flight.
    #[error("another request on this channel is in flight; send one request at a time per channel")]
    Busy,
    /// The slot was lost (expired and taken by another request) before the charge.
    #[error("this request's hold on the channel expired before it was charged")]
    SlotLost,
    /// The charge would lower what the channel has been charged.
    #[error("the channel has been charged {stored} already; a charge to {offered} would go backwards")]
    Backwards { stored: u128, offered: u128 },
    /// The store did not answer (in time): nothing was taken or charged.
    #[error(transparent)]
    Unavailable(#[from] StoreUnavailable),
}

/// Where channel records live. Every call is one atomic step; a shared store may fail, and
/// then nothing of the call happened (fail closed).
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Takes the channel's request slot until `expires_at_ms`, returning the stored record
    /// (`None`: a channel the gateway has not seen).
    async fn begin(&self, id: &ChannelId, now_ms: u64, expires_at_ms: u64) -> Result<(ChannelTicket, Option<ChannelRecord>), ChannelRefusal>;
    /// Stores `next` as the channel's record and frees the slot, if the ticket still holds it.
    async fn commit(&self, ticket: ChannelTicket, next: ChannelRecord) -> Result<(), ChannelRefusal>;
    /// Frees the slot; nothing is charged. A slot a failed store kept expires by itself.
    async fn cancel(&self, ticket: ChannelTicket);
    /// Records what the chain says of a known channel; ignored for an unknown one, and for
    /// a read older than the one the store holds.
    async fn mirror(&self, id: &ChannelId, onchain: OnchainChannel) -> Result<(), StoreUnavailable>;
    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreUnavailable>;
    /// Every record, in no particular order.
    async fn list(&self) -> Result<Vec<ChannelRecord>, StoreUnavailable>;
}

/// Of two reads of a channel's escrow state, the later: a request's view must not undo a
/// fresher one the claimer stored meanwhile.
pub(crate) fn newer_mirror(offered: OnchainChannel, stored: OnchainChannel) -> OnchainChannel {
    if stored.synced_at_ms > offered.synced_at_ms {
        stored
    } else {
        offered
    }
}

/// Which replica claims the fleet's channels: one at a time, so two never race to claim the
/// same vouchers (harmless on-chain, where claims are cumulative, but gas spent twice).
#[async_trait]
pub trait ClaimerLease: Send + Sync {
    /// Takes the lease, or renews this replica's, for `ttl`: true while this replica claims.
    /// A store that cannot be asked answers false (claims wait; they are never lost).
    async fn lead(&self, ttl: std::time::Duration) -> bool;
}

/// One process claims its own channels.
pub struct SoleClaimer;

#[async_trait]
impl ClaimerLease for SoleClaimer {
    async fn lead(&self, _ttl: std::time::Duration) -> bool {
        true
    }
}

struct Entry {
    record: Option<ChannelRecord>,
    /// (serial, expires at ms) of the request holding the slot.
    slot: Option<(u64, u64)>,
}

const SHARDS: usize = 16;

/// In-process channel store: sharded maps behind short locks (no I/O under them).
pub struct MemoryChannelStore {
    shards: [Mutex<HashMap<ChannelId, Entry>>; SHARDS],
    serial: AtomicU64,
}

impl Default for MemoryChannelStore {
    fn default() -> Self {
        Self { shards: std::array::from_fn(|_| Mutex::new(HashMap::new())), serial: AtomicU64::new(1) }
    }
}

impl MemoryChannelStore {
    /// A store holding `records` (the journal's, at start), no slot taken.
    pub fn with_records(records: impl IntoIterator<Item = ChannelRecord>) -> Self {
        let store = Self::default();
        for record in records {
            store.shard(&record.id).insert(record.id, Entry { record: Some(record), slot: None });
        }
        store
    }

    /// Every record, at once (this store never waits).
    pub fn records(&self) -> Vec<ChannelRecord> {
        self.shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                shard.values().filter_map(|entry| entry.record.clone()).collect::<Vec<_>>()
            })
            .collect()
    }

    fn shard(&self, id: &ChannelId) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Entry>> {
        // The id is a keccak digest: any byte spreads channels evenly.
        let shard = &self.shards[usize::from(id[0]) % SHARDS];
        shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ChannelStore for MemoryChannelStore {
    async fn begin(&self, id: &ChannelId, now_ms: u64, expires_at_ms: u64) -> Result<(ChannelTicket, Option<ChannelRecord>), ChannelRefusal> {
        let mut shard = self.shard(id);
        let entry = shard.entry(*id).or_insert(Entry { record: None, slot: None });
        if matches!(entry.slot, Some((_, expires)) if expires > now_ms) {
            return Err(ChannelRefusal::Busy);
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        entry.slot = Some((serial, expires_at_ms));
        Ok((ChannelTicket { id: *id, serial }, entry.record.clone()))
    }

    async fn commit(&self, ticket: ChannelTicket, next: ChannelRecord) -> Result<(), ChannelRefusal> {
        let mut shard = self.shard(&ticket.id);
        let Some(entry) = shard.get_mut(&ticket.id) else { return Err(ChannelRefusal::SlotLost) };
        if !matches!(entry.slot, Some((serial, _)) if serial == ticket.serial) {
            return Err(ChannelRefusal::SlotLost);
        }
        let mut next = next;
        if let Some(stored) = &entry.record {
            if next.charged < stored.charged {
                entry.slot = None;
                return Err(ChannelRefusal::Backwards { stored: stored.charged, offered: next.charged });
            }
            next.onchain = newer_mirror(next.onchain, stored.onchain);
        }
        entry.record = Some(next);
        entry.slot = None;
        Ok(())
    }

    async fn cancel(&self, ticket: ChannelTicket) {
        let mut shard = self.shard(&ticket.id);
        let Some(entry) = shard.get_mut(&ticket.id) else { return };
        if matches!(entry.slot, Some((serial, _)) if serial == ticket.serial) {
            entry.slot = None;
        }
        if entry.record.is_none() && entry.slot.is_none() {
            shard.remove(&ticket.id);
        }
    }

    async fn mirror(&self, id: &ChannelId, onchain: OnchainChannel) -> Result<(), StoreUnavailable> {
        if let Some(record) = self.shard(id).get_mut(id).and_then(|entry| entry.record.as_mut()) {
            if onchain.synced_at_ms >= record.onchain.synced_at_ms {
                record.onchain = onchain;
            }
        }
        Ok(())
    }

    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreUnavailable> {
        Ok(self.shard(id).get(id).and_then(|entry| entry.record.clone()))
    }

    async fn list(&self) -> Result<Vec<ChannelRecord>, StoreUnavailable> {
        Ok(self.records())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: ChannelId, charged: u128) -> ChannelRecord {
        ChannelRecord {
            id,
            network: "eip155:84532".into(),
            chain_id: 84532,
            terms: ChannelTerms {
                payer: [1; 20],
                payer_authorizer: [1; 20],
                receiver: [2; 20],
                receiver_authorizer: [3; 20],
                token: [4; 20],
                withdraw_delay: 900,
                salt: [0; 32],
            },
            charged,
            signed_max: charged,
            signature: vec![7; 65],
            onchain: OnchainChannel { balance: 10_000, ..OnchainChannel::default() },
            last_charged_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn one_request_in_flight_per_channel() {
        let store = MemoryChannelStore::default();
        let (ticket, stored) = store.begin(&[9; 32], 1_000, 5_000).await.expect("free slot");
        assert_eq!(stored, None);
        assert_eq!(store.begin(&[9; 32], 2_000, 6_000).await, Err(ChannelRefusal::Busy));
        // Another channel is independent.
        assert!(store.begin(&[8; 32], 2_000, 6_000).await.is_ok());
        store.commit(ticket, record([9; 32], 1_000)).await.expect("held slot");
        let (_, stored) = store.begin(&[9; 32], 2_000, 6_000).await.expect("slot freed by the commit");
        assert_eq!(stored.map(|r| r.charged), Some(1_000));
    }

    #[tokio::test]
    async fn an_expired_slot_is_taken_over_and_its_late_commit_refused() {
        let store = MemoryChannelStore::default();
        let (stale, _) = store.begin(&[9; 32], 1_000, 5_000).await.expect("free slot");
        let (fresh, _) = store.begin(&[9; 32], 5_000, 9_000).await.expect("the first slot expired");
        assert_eq!(store.commit(stale, record([9; 32], 1_000)).await, Err(ChannelRefusal::SlotLost));
        store.commit(fresh, record([9; 32], 1_000)).await.expect("the holder commits");
    }

    #[tokio::test]
    async fn charges_never_go_backwards() {
        let store = MemoryChannelStore::with_records([record([9; 32], 5_000)]);
        let (ticket, _) = store.begin(&[9; 32], 0, 1_000).await.expect("free slot");
        assert_eq!(store.commit(ticket, record([9; 32], 4_000)).await, Err(ChannelRefusal::Backwards { stored: 5_000, offered: 4_000 }));
        assert_eq!(store.get(&[9; 32]).await.unwrap().map(|r| r.charged), Some(5_000));
        assert!(store.begin(&[9; 32], 0, 1_000).await.is_ok(), "a refused commit frees the slot");
    }

    #[tokio::test]
    async fn cancel_frees_the_slot_and_forgets_an_unknown_channel() {
        let store = MemoryChannelStore::default();
        let (ticket, _) = store.begin(&[9; 32], 0, 1_000).await.expect("free slot");
        store.cancel(ticket).await;
        assert!(store.list().await.unwrap().is_empty());
        assert!(store.begin(&[9; 32], 0, 1_000).await.is_ok());
    }

    #[tokio::test]
    async fn mirror_updates_a_known_channel_only_and_never_with_an_older_read() {
        let store = MemoryChannelStore::with_records([record([9; 32], 1_000)]);
        let onchain = OnchainChannel { balance: 20_000, total_claimed: 1_000, withdraw_requested_at: 0, refund_nonce: 0, synced_at_ms: 5 };
        store.mirror(&[9; 32], onchain).await.unwrap();
        store.mirror(&[8; 32], onchain).await.unwrap();
        store.mirror(&[9; 32], OnchainChannel { synced_at_ms: 4, ..OnchainChannel::default() }).await.unwrap();
        assert_eq!(store.get(&[9; 32]).await.unwrap().map(|r| r.onchain), Some(onchain));
        assert_eq!(store.get(&[8; 32]).await.unwrap(), None);
        assert_eq!(store.get(&[9; 32]).await.unwrap().map(|r| r.unclaimed()), Some(0));
        let (ticket, _) = store.begin(&[9; 32], 0, 1_000).await.unwrap();
        store.commit(ticket, record([9; 32], 2_000)).await.unwrap();
        assert_eq!(store.get(&[9; 32]).await.unwrap().map(|r| r.onchain), Some(onchain), "a request's older view keeps the fresher mirror");
    }
}
