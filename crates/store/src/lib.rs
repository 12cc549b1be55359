//! Payment state that outlives one request.
//!
//! - [`replay`]: the replay/nonce store. A payment's `(chain, asset, from, nonce)` is
//!   reserved atomically before the request is forwarded and kept until the
//!   authorization's `validBefore`, so one signed payment buys at most one response.
//! - [`exposure`]: unsettled value per payer, per route and in total, against limits.
//! - [`journal`]: the settlement journal: every payment whose response was released, and
//!   its way to the chain (`accepted → submitted → settled | failed`), durable in SQLite.
//! - [`ledger`]: replay reservations and exposure as one ledger, behind one trait: in this
//!   process ([`LocalLedger`]) or shared by replicas in Redis ([`redis_ledger`]).
//! - [`channels`]: payment-channel state of the `batch-settlement` scheme, one request in
//!   flight per channel.

pub mod channels;
pub mod exposure;
pub mod journal;
pub mod ledger;
pub mod redis_ledger;
pub mod replay;

pub use journal::{
    clear_payer_block, record_loss_reset, BatchRecord, ExportFilter, Journal, JournalError, JournalOptions, JournalReader, JournalSync, NewPayment, PaymentFilter,
    PaymentRecord, PaymentState, PrunePolicy, PruneReport, SettlementItem, LOSS_WINDOW_MS,
};
pub use channels::{ChannelId, ChannelRecord, ChannelRefusal, ChannelStore, ChannelTerms, ChannelTicket, ClaimerLease, MemoryChannelStore, OnchainChannel, SoleClaimer};
pub use exposure::{Exposure, ExposureLimits, ExposureRefusal, ExposureSnapshot, PayerBlock};
pub use ledger::{Counted, Hold, LedgerRefusal, LocalLedger, PaymentLedger, Restored, StoreUnavailable};
pub use redis_ledger::{unblock_in_store, JournalSource, RedisChannelStore, RedisClaimerLease, RedisEndpoint, RedisLedger, RedisSettings};
pub use replay::{MemoryReplayStore, ReplayKey, ReplayStore};

/// Seconds since the Unix epoch, the unit of EIP-3009's time fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
