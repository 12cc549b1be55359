//! Unsettled value: what the operator has delivered on credit, per payer, per route and in
//! total, against limits the operator chose. Values are in micro-dollars (1e-6 USD), the
//! unit every stablecoin price converts to exactly or rounds up to.
//!
//! A payment counts from the moment it is admitted (before the upstream is called) until
//! it is settled or failed on-chain, or released because nobody was charged. A payer whose
//! settlement failed for want of funds or a cancelled authorization is refused for a while.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExposureLimits {
    pub per_payer: Option<u64>,
    pub per_route: Option<u64>,
    pub total: Option<u64>,
}

/// A payer refused until a time, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerBlock {
    pub payer: String,
    /// Unix seconds.
    pub until: u64,
    pub reason: String,
}

/// Why a payment would exceed what the operator extends on credit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureRefusal {
    #[error("this payer already has {unsettled} micro-USD unsettled; the limit is {limit}: retry once earlier payments settle")]
    Payer { unsettled: u64, limit: u64 },
    #[error("this route already has {unsettled} micro-USD unsettled; the limit is {limit}: retry shortly")]
    Route { unsettled: u64, limit: u64 },
    #[error("the gateway already has {unsettled} micro-USD unsettled; the limit is {limit}: retry shortly")]
    Total { unsettled: u64, limit: u64 },
    #[error("this payer is refused until {until} (Unix seconds): an earlier payment failed to settle: {reason}")]
    Blocked { reason: String, until: u64 },
}

#[derive(Default)]
struct Ledger {
    limits: ExposureLimits,
    payers: HashMap<String, u64>,
    routes: HashMap<String, u64>,
    total: u64,
    /// payer → (until, reason)
    blocked: HashMap<String, (u64, String)>,
}

impl Ledger {
    fn add(&mut self, payer: &str, route: &str, value: u64) {
        *self.payers.entry(payer.to_owned()).or_default() += value;
        *self.routes.entry(route.to_owned()).or_default() += value;
        self.total += value;
    }
}

/// One lock for limits and counts: a paid request takes it once.
#[derive(Default)]
pub struct Exposure {
    ledger: Mutex<Ledger>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain counters: a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn over(limit: Option<u64>, unsettled: u64, value: u64) -> Option<u64> {
    limit.filter(|&limit| unsettled.saturating_add(value) > limit)
}

impl Exposure {
    pub fn new(limits: ExposureLimits) -> Self {
        Self { ledger: Mutex::new(Ledger { limits, ..Ledger::default() }) }
    }

    pub fn set_limits(&self, limits: ExposureLimits) {
        lock(&self.ledger).limits = limits;
    }

    /// Counts `value` against every limit, or refuses it and counts nothing.
    pub fn try_add(&self, payer: &str, route: &str, value: u64, now: u64) -> Result<(), ExposureRefusal> {
        let mut ledger = lock(&self.ledger);
        let limits = ledger.limits;
        if let Some((until, reason)) = ledger.blocked.get(payer) {
            if *until > now {
                return Err(ExposureRefusal::Blocked { reason: reason.clone(), until: *until });
            }
            ledger.blocked.remove(payer);
        }
        let payer_unsettled = ledger.payers.get(payer).copied().unwrap_or(0);
        if let Some(limit) = over(limits.per_payer, payer_unsettled, value) {
            return Err(ExposureRefusal::Payer { unsettled: payer_unsettled, limit });
        }
        let route_unsettled = ledger.routes.get(route).copied().unwrap_or(0);
        if let Some(limit) = over(limits.per_route, route_unsettled, value) {
            return Err(ExposureRefusal::Route { unsettled: route_unsettled, limit });
        }
        if let Some(limit) = over(limits.total, ledger.total, value) {
            return Err(ExposureRefusal::Total { unsettled: ledger.total, limit });
        }
        ledger.add(payer, route, value);
        Ok(())
    }

    /// Counts a payment that is already owed (rebuilding from the journal at start).
    pub fn restore(&self, payer: &str, route: &str, value: u64) {
        lock(&self.ledger).add(payer, route, value);
    }

    /// The payment settled, failed, or was never charged: it no longer counts.
    pub fn remove(&self, payer: &str, route: &str, value: u64) {
        let mut guard = lock(&self.ledger);
        let ledger = &mut *guard;
        for (map, key) in [(&mut ledger.payers, payer), (&mut ledger.routes, route)] {
            if let Some(unsettled) = map.get_mut(key) {
                *unsettled = unsettled.saturating_sub(value);
                if *unsettled == 0 {
                    map.remove(key);
                }
            }
        }
        ledger.total = ledger.total.saturating_sub(value);
    }

    /// Refuses `payer` until `until` (Unix seconds).
    pub fn block(&self, payer: &str, reason: &str, until: u64) {
        lock(&self.ledger).blocked.insert(payer.to_owned(), (until, reason.to_owned()));
    }

    pub fn unblock(&self, payer: &str) -> bool {
        lock(&self.ledger).blocked.remove(payer).is_some()
    }

    /// Makes the refused payers exactly `blocks` (the journal's list, which operators edit).
    pub fn replace_blocks(&self, blocks: Vec<PayerBlock>) {
        lock(&self.ledger).blocked = blocks.into_iter().map(|b| (b.payer, (b.until, b.reason))).collect();
    }

    pub fn payer(&self, payer: &str) -> u64 {
        lock(&self.ledger).payers.get(payer).copied().unwrap_or(0)
    }

    pub fn route(&self, route: &str) -> u64 {
        lock(&self.ledger).routes.get(route).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        lock(&self.ledger).total
    }

    /// Limits, totals per route, the `top` payers by unsettled value, and the blocks in force.
    pub fn snapshot(&self, top: usize, now: u64) -> ExposureSnapshot {
        let ledger = lock(&self.ledger);
        // Metrics scrapes ask for no payers: skip copying and sorting every debtor for them.
        let mut payers: Vec<(String, u64)> =
            if top == 0 { Vec::new() } else { ledger.payers.iter().map(|(p, v)| (p.clone(), *v)).collect() };
        payers.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        payers.truncate(top);
        let mut routes: Vec<(String, u64)> = ledger.routes.iter().map(|(r, v)| (r.clone(), *v)).collect();
        routes.sort_unstable();
        let blocked = ledger
            .blocked
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(payer, (until, reason))| PayerBlock { payer: payer.clone(), until: *until, reason: reason.clone() })
            .collect();
        ExposureSnapshot { limits: ledger.limits, total: ledger.total, payer_count: ledger.payers.len(), routes, payers, blocked }
    }
}

/// The ledger at one moment, for operators.
#[derive(Debug, Clone)]
pub struct ExposureSnapshot {
    pub limits: ExposureLimits,
    pub total: u64,
    /// Payers with anything unsettled.
    pub payer_count: usize,
    pub routes: Vec<(String, u64)>,
    /// The largest debtors first.
    pub payers: Vec<(String, u64)>,
    pub blocked: Vec<PayerBlock>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited() -> Exposure {
        Exposure::new(ExposureLimits { per_payer: Some(3000), per_route: Some(5000), total: Some(6000) })
    }

    #[test]
    fn each_limit_refuses_what_would_exceed_it_and_counts_nothing() {
        let exposure = limited();
        for _ in 0..3 {
            exposure.try_add("alice", "a", 1000, 0).unwrap();
        }
        assert_eq!(exposure.try_add("alice", "a", 1, 0), Err(ExposureRefusal::Payer { unsettled: 3000, limit: 3000 }));
        exposure.try_add("bob", "a", 2000, 0).unwrap();
        assert_eq!(exposure.try_add("carol", "a", 1, 0), Err(ExposureRefusal::Route { unsettled: 5000, limit: 5000 }));
        exposure.try_add("carol", "b", 1000, 0).unwrap();
        assert_eq!(exposure.try_add("dave", "c", 1, 0), Err(ExposureRefusal::Total { unsettled: 6000, limit: 6000 }));
        assert_eq!((exposure.payer("alice"), exposure.route("a"), exposure.total()), (3000, 5000, 6000));
    }

    #[test]
    fn settled_value_frees_room() {
        let exposure = limited();
        exposure.try_add("alice", "a", 3000, 0).unwrap();
        exposure.remove("alice", "a", 1000);
        exposure.try_add("alice", "a", 1000, 0).unwrap();
        exposure.remove("alice", "a", 3000);
        exposure.remove("alice", "a", 3000);
        assert_eq!((exposure.payer("alice"), exposure.total()), (0, 0), "never below zero");
    }

    #[test]
    fn a_blocked_payer_is_refused_until_the_time_passes_or_it_is_cleared() {
        let exposure = Exposure::default();
        exposure.block("alice", "insufficient balance", 100);
        assert!(matches!(exposure.try_add("alice", "a", 1, 99), Err(ExposureRefusal::Blocked { until: 100, .. })));
        exposure.try_add("alice", "a", 1, 100).unwrap();
        exposure.block("bob", "cancelled", 100);
        assert!(exposure.unblock("bob"));
        exposure.try_add("bob", "a", 1, 0).unwrap();
        exposure.replace_blocks(vec![PayerBlock { payer: "carol".into(), until: 100, reason: "cancelled".into() }]);
        assert!(exposure.try_add("carol", "a", 1, 0).is_err());
        exposure.replace_blocks(Vec::new());
        exposure.try_add("carol", "a", 1, 0).unwrap();
    }
}
