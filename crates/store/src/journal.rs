//! The settlement journal: payments whose responses were released, on their way to the
//! chain. This one lives in memory; a crash loses what it holds (a durable journal is the
//! next step), but a graceful shutdown drains it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::Notify;
use x402::ExactEvmPayload;

/// What the settler needs to put one payment on-chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementItem {
    /// CAIP-2 network id.
    pub network: String,
    /// Token contract, 0x-hex.
    pub asset: String,
    /// The signed authorization, as the client sent it.
    pub payload: ExactEvmPayload,
    /// `validBefore`, Unix seconds: the settlement deadline.
    pub valid_before: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentState {
    Accepted,
    Submitted { transaction: String },
    Settled { transaction: String },
    Failed { reason: String },
}

impl PaymentState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Submitted { .. } => "submitted",
            Self::Settled { .. } => "settled",
            Self::Failed { .. } => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: u64,
    pub route: String,
    pub amount: String,
    pub payer: String,
    /// When the payment was accepted, Unix milliseconds.
    pub accepted_at_ms: u64,
    pub item: SettlementItem,
    pub state: PaymentState,
    /// Settlement transactions this payment was sent in.
    pub attempts: u32,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    records: BTreeMap<u64, PaymentRecord>,
}

/// The in-memory journal. `record` wakes the settler through [`Journal::changed`].
#[derive(Default)]
pub struct Journal {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind, still consistent per
        // record: keep serving rather than poisoning every later request.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an accepted payment and returns its id.
    pub fn record(&self, route: &str, amount: &str, payer: &str, item: SettlementItem) -> u64 {
        let id = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            let record = PaymentRecord {
                id,
                route: route.to_owned(),
                amount: amount.to_owned(),
                payer: payer.to_owned(),
                accepted_at_ms: crate::unix_now_ms(),
                item,
                state: PaymentState::Accepted,
                attempts: 0,
            };
            inner.records.insert(id, record);
            id
        };
        self.changed.notify_one();
        id
    }

    /// Wakes when a payment is recorded.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Accepted payments on `network`, earliest deadline first, at most `limit`.
    pub fn accepted(&self, network: &str, limit: usize) -> Vec<PaymentRecord> {
        let inner = self.lock();
        let mut due: Vec<PaymentRecord> = inner
            .records
            .values()
            .filter(|r| r.state == PaymentState::Accepted && r.item.network == network)
            .cloned()
            .collect();
        due.sort_by_key(|r| (r.item.valid_before, r.id));
        due.truncate(limit);
        due
    }

    pub fn set_state(&self, id: u64, state: PaymentState) {
        if let Some(record) = self.lock().records.get_mut(&id) {
            record.state = state;
        }
    }

    /// Marks a payment as sent in `transaction` and returns how many times it has been sent.
    pub fn mark_submitted(&self, id: u64, transaction: &str) -> u32 {
        let mut inner = self.lock();
        let Some(record) = inner.records.get_mut(&id) else { return 0 };
        record.attempts += 1;
        record.state = PaymentState::Submitted { transaction: transaction.to_owned() };
        record.attempts
    }

    pub fn get(&self, id: u64) -> Option<PaymentRecord> {
        self.lock().records.get(&id).cloned()
    }

    /// Payments not yet settled or failed.
    pub fn unsettled_count(&self) -> usize {
        self.lock()
            .records
            .values()
            .filter(|r| matches!(r.state, PaymentState::Accepted | PaymentState::Submitted { .. }))
            .count()
    }

    /// Counts by state name.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for record in self.lock().records.values() {
            *counts.entry(record.state.name()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x402::ExactEvmAuthorization;

    fn item(network: &str, valid_before: u64) -> SettlementItem {
        SettlementItem {
            network: network.into(),
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            payload: ExactEvmPayload {
                signature: "0x".into(),
                authorization: ExactEvmAuthorization {
                    from: "0x1".into(),
                    to: "0x2".into(),
                    value: "1".into(),
                    valid_after: "0".into(),
                    valid_before: valid_before.to_string(),
                    nonce: "0x3".into(),
                },
            },
            valid_before,
        }
    }

    #[test]
    fn accepted_is_earliest_deadline_first_per_network() {
        let journal = Journal::default();
        let late = journal.record("r", "1", "p", item("eip155:1", 300));
        let early = journal.record("r", "1", "p", item("eip155:1", 100));
        journal.record("r", "1", "p", item("eip155:2", 50));
        let ids: Vec<u64> = journal.accepted("eip155:1", 10).iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![early, late]);
        assert_eq!(journal.accepted("eip155:1", 1).len(), 1);
        journal.set_state(early, PaymentState::Settled { transaction: "0xabc".into() });
        assert_eq!(journal.accepted("eip155:1", 10).len(), 1);
        assert_eq!(journal.unsettled_count(), 2);
        assert_eq!(journal.counts().get("settled"), Some(&1));
    }
}
