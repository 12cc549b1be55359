//! The request side of `settle: before`: a bounded queue to the settler, and the chain checks
//! a payment passes before it is journaled, so a flood of unfunded or pre-burnt payments is
//! refused up front instead of queueing ahead of honest ones (and being charged after a 504).

use crate::chain::{ChainClient, ChainError};
use alloy_primitives::{Address, U256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use x402_evm::verify::parse_authorization;
use x402_store::SettlementItem;

/// A request to settle one journaled payment now, ahead of any batch (`settle: before`).
pub struct SettleNow {
    pub payment_id: u64,
    pub reply: oneshot::Sender<SettleNowOutcome>,
    /// Keeps the batch loop away from this payment until the settler is done with it.
    pub(crate) _claim: Claim,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleNowOutcome {
    /// On-chain, in this transaction.
    Settled(String),
    /// It will not land: the reason.
    Failed(String),
    /// Not known yet (RPC down, receipt late): the settler keeps at it.
    Pending(String),
}

/// Why a `settle: before` payment is refused before anything is journaled.
#[derive(Debug, thiserror::Error)]
pub enum SettleBeforeRefusal {
    #[error("settle-before payments are at capacity ({capacity} waiting); retry the same payment shortly")]
    QueueFull { capacity: usize },
    #[error("this authorization's nonce is already used or cancelled on-chain; sign a new one")]
    NonceUsed,
    #[error("the payer's token balance ({balance}) does not cover this payment ({value})")]
    InsufficientBalance { balance: U256, value: U256 },
    #[error("the payment cannot be checked on-chain right now: {0}")]
    ChainUnavailable(String),
    #[error("the payment cannot be settled: {0}")]
    Unsettleable(String),
}

/// Receipt ids of payments a settle-now request owns: the batch loop leaves them alone, so a
/// payment journaled for `settle: before` is never sent twice nor resolved by two tasks.
#[derive(Clone, Default)]
pub(crate) struct Claims(Arc<Mutex<HashSet<String>>>);

impl Claims {
    fn claim(&self, receipt_id: &str) -> Claim {
        lock(&self.0).insert(receipt_id.to_owned());
        Claim { claims: self.clone(), receipt_id: receipt_id.to_owned() }
    }

    pub(crate) fn holds(&self, receipt_id: &str) -> bool {
        lock(&self.0).contains(receipt_id)
    }

    /// Payments claimed now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.0).len()
    }
}

/// A claim on one payment, released when dropped.
pub(crate) struct Claim {
    claims: Claims,
    receipt_id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.claims.0).remove(&self.receipt_id);
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // What these mutexes guard (sets and lists of records) stays consistent across a panic.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the proxy holds to settle payments before forwarding them.
#[derive(Clone)]
pub struct SettleBefore {
    queue: mpsc::Sender<SettleNow>,
    capacity: usize,
    /// CAIP-2 network id → its client, for the checks.
    chains: Arc<Vec<(String, ChainClient)>>,
    claims: Claims,
}

/// A payment that passed the checks and holds a place in the queue: journal it, then
/// [`SettleTicket::send`]. Dropping the ticket gives the place back.
pub struct SettleTicket {
    place: mpsc::OwnedPermit<SettleNow>,
    claim: Claim,
}

impl SettleTicket {
    /// Hands the journaled payment to the settler; the receiver gets its outcome.
    pub fn send(self, payment_id: u64) -> oneshot::Receiver<SettleNowOutcome> {
        let (reply, outcome) = oneshot::channel();
        self.place.send(SettleNow { payment_id, reply, _claim: self.claim });
        outcome
    }
}

impl SettleBefore {
    pub(crate) fn new(capacity: usize, chains: Vec<(String, ChainClient)>, claims: Claims) -> (Self, mpsc::Receiver<SettleNow>) {
        let (queue, requests) = mpsc::channel(capacity);
        (Self { queue, capacity, chains: Arc::new(chains), claims }, requests)
    }

    /// Takes a place in the queue, claims the payment and checks it on-chain: its nonce is
    /// unused and the payer's balance covers it. Nothing is journaled yet; on a refusal
    /// nothing is held. Fails closed: a chain that cannot be read refuses the payment.
    pub async fn admit(&self, item: &SettlementItem, receipt_id: &str) -> Result<SettleTicket, SettleBeforeRefusal> {
        let place = self.queue.clone().try_reserve_owned().map_err(|_| SettleBeforeRefusal::QueueFull { capacity: self.capacity })?;
        let claim = self.claims.claim(receipt_id);
        self.check_on_chain(item).await?;
        Ok(SettleTicket { place, claim })
    }

    async fn check_on_chain(&self, item: &SettlementItem) -> Result<(), SettleBeforeRefusal> {
        let unsettleable = |what: String| SettleBeforeRefusal::Unsettleable(what);
        let (_, client) = self
            .chains
            .iter()
            .find(|(network, _)| *network == item.network)
            .ok_or_else(|| unsettleable(format!("no settlement configured for {}", item.network)))?;
        let token: Address = item.asset.parse().map_err(|_| unsettleable(format!("asset {} is not an address", item.asset)))?;
        let authorization = parse_authorization(&item.payload.authorization).map_err(|e| unsettleable(e.to_string()))?;
        let unavailable = |error: ChainError| SettleBeforeRefusal::ChainUnavailable(error.to_string());
        let (used, balance) = tokio::try_join!(
            client.authorization_state(token, authorization.from, authorization.nonce),
            client.balance_of(token, authorization.from),
        )
        .map_err(unavailable)?;
        if used {
            return Err(SettleBeforeRefusal::NonceUsed);
        }
        if balance < authorization.value {
            return Err(SettleBeforeRefusal::InsufficientBalance { balance, value: authorization.value });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_keeps_the_batch_loop_away_until_it_is_dropped() {
        let claims = Claims::default();
        let claim = claims.claim("receipt-1");
        assert!(claims.holds("receipt-1"));
        assert!(!claims.holds("receipt-2"));
        drop(claim);
        assert!(!claims.holds("receipt-1"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_refuses_before_any_check_and_a_refusal_gives_its_place_back() {
        let (settle_before, _requests) = SettleBefore::new(1, Vec::new(), Claims::default());
        let place = settle_before.queue.clone().try_reserve_owned().expect("room for one");
        let item = SettlementItem {
            network: "eip155:84532".into(),
            chain_id: 84532,
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            payload: x402::ExactEvmPayload {
                signature: "0x".into(),
                authorization: x402::ExactEvmAuthorization {
                    from: "0x00000000000000000000000000000000000000a1".into(),
                    to: "0x00000000000000000000000000000000000000b2".into(),
                    value: "1000".into(),
                    valid_after: "0".into(),
                    valid_before: "300".into(),
                    nonce: format!("0x{}", "07".repeat(32)),
                },
            },
            valid_before: 300,
        };
        let full = settle_before.admit(&item, "receipt-1").await;
        assert!(matches!(full, Err(SettleBeforeRefusal::QueueFull { capacity: 1 })));
        assert!(!settle_before.claims.holds("receipt-1"), "a refused payment holds nothing");
        drop(place);
        // Room again; with no chain configured for the network the payment is refused, and
        // the place and claim it took are given back.
        let unconfigured = settle_before.admit(&item, "receipt-1").await;
        assert!(matches!(unconfigured, Err(SettleBeforeRefusal::Unsettleable(_))));
        assert!(!settle_before.claims.holds("receipt-1"));
        assert!(settle_before.queue.clone().try_reserve_owned().is_ok());
    }
}
