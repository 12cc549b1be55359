//! The batch settler: takes accepted payments from the journal, puts them on-chain many per
//! transaction through Multicall3 `aggregate3` (each call allowed to fail alone), and writes
//! each outcome back: `settled` with the transaction hash, or `failed` with the reason.
//!
//! Nothing here runs on the request path but the chain checks of `settle: before` payments
//! ([`SettleBefore`]). "Authorization already used" is never taken as a
//! failure on its word: the chain's `AuthorizationUsed` event decides whether the payment
//! landed (possibly through someone else's transaction), and a payment counts as settled only
//! when the `Transfer` to its payTo that its authorization made is in a receipt.
//!
//! [`channels`] does the same for payment channels (`batch-settlement`): deposits, claims of
//! many channels' vouchers per transaction, and the escrow state read back after each.

pub mod admission;
mod chain;
pub mod channels;
mod gas;
mod lane;
mod metrics;
mod settle_before;
mod settler;
pub mod stall;

pub use chain::{ChainClient, ChainError, Fees, Mined};
pub use metrics::SettlementMetrics;
pub use settle_before::{SettleBefore, SettleBeforeRefusal, SettleNow, SettleNowOutcome, SettleTicket};
pub use settler::{BatchPolicy, CreditControl, LaneCallError, PayerPaid, NetworkSettlement, SettleError, Settler};
