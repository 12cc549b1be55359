//! The batch settler: takes accepted payments from the journal, puts them on-chain many per
//! transaction through Multicall3 `aggregate3` (each call allowed to fail alone), and writes
//! each outcome back: `settled` with the transaction hash, or `failed` with the reason.
//!
//! Nothing here runs on the request path. "Authorization already used" is never taken as a
//! failure on its word: the chain's `AuthorizationUsed` event decides whether the payment
//! landed (possibly through someone else's transaction).

mod chain;
mod metrics;
mod settler;
pub mod stall;

pub use chain::{ChainClient, ChainError};
pub use metrics::SettlementMetrics;
pub use settler::{BatchPolicy, CreditControl, NetworkSettlement, SettleError, SettleNow, SettleNowOutcome, Settler};
