//! Unsettled value: what the operator has delivered on credit, per payer, per route and in
//! total, against limits the operator chose. Values are in micro-dollars (1e-6 USD), the
//! unit every stablecoin price converts to exactly or rounds up to.
//!
//! A payment counts from the moment it is admitted (before the upstream is called) until
//! it is settled or failed on-chain, or released because nobody was charged. A payer whose
//! settlement failed for want of funds or a cancelled authorization is refused for a while.
//!
//! Refusing a payer protects nothing against the next fresh address, so value that was
//! served and never paid also counts against a loss budget shared by every payer: a bucket
//! that drains at `losses_per_day` per day. While it is full, every new payment is refused.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExposureLimits {
    pub per_payer: Option<u64>,
    pub per_route: Option<u64>,
    pub total: Option<u64>,
    /// The loss budget: served-but-unpaid value the operator accepts per day.
    pub losses_per_day: Option<u64>,
}

const SECONDS_PER_DAY: u64 = 86_400;

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
    /// The payer's token balance, less what it owes unsettled, does not cover the payment.
    #[error("the payer's token balance ({balance} micro-USD) does not cover {owed} micro-USD unsettled plus this payment")]
    Uncovered { balance: u64, owed: u64 },
    #[error("the gateway has lost {lost} micro-USD to payments that never settled, its loss budget ({limit} micro-USD a day): new payments are refused until it drains or an operator resets it")]
    LossBudgetSpent { lost: u64, limit: u64 },
}

#[derive(Default)]
struct Ledger {
    limits: ExposureLimits,
    payers: HashMap<String, u64>,
    routes: HashMap<String, u64>,
    total: u64,
    /// payer → (until, reason)
    blocked: HashMap<String, (u64, String)>,
    losses: LossBucket,
}

/// Lost value that drains linearly at the budget's daily rate.
#[derive(Debug, Default, Clone, Copy)]
struct LossBucket {
    level: u64,
    /// Unix seconds of the last drain.
    drained_at: u64,
    /// Everything lost since the process started, for metrics.
    lost_total: u64,
}

impl LossBucket {
    fn drain(&mut self, per_day: Option<u64>, now: u64) {
        let elapsed = now.saturating_sub(self.drained_at);
        if elapsed == 0 {
            return;
        }
        let drained = per_day.map_or(self.level, |rate| u64::try_from(u128::from(rate) * u128::from(elapsed) / u128::from(SECONDS_PER_DAY)).unwrap_or(u64::MAX));
        self.level = self.level.saturating_sub(drained);
        self.drained_at = now;
    }

    fn add(&mut self, per_day: Option<u64>, value: u64, now: u64) {
        self.drain(per_day, now);
        self.level = self.level.saturating_add(value);
        self.lost_total = self.lost_total.saturating_add(value);
    }
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

    /// Counts `value` against every limit, or refuses it and counts nothing. `balance`: the
    /// payer's token balance when it was read; checked against what the payer owes under the
    /// same lock, so concurrent payments of one payer cannot each see the same room.
    pub fn try_add(&self, payer: &str, route: &str, value: u64, now: u64, balance: Option<u64>) -> Result<(), ExposureRefusal> {
        let mut guard = lock(&self.ledger);
        let ledger = &mut *guard;
        let limits = ledger.limits;
        ledger.losses.drain(limits.losses_per_day, now);
        if let Some(limit) = limits.losses_per_day.filter(|&limit| ledger.losses.level >= limit) {
            return Err(ExposureRefusal::LossBudgetSpent { lost: ledger.losses.level, limit });
        }
        if let Some((until, reason)) = ledger.blocked.get(payer) {
            if *until > now {
                return Err(ExposureRefusal::Blocked { reason: reason.clone(), until: *until });
            }
            ledger.blocked.remove(payer);
        }
        let payer_unsettled = ledger.payers.get(payer).copied().unwrap_or(0);
        if let Some(balance) = balance.filter(|&balance| balance < payer_unsettled.saturating_add(value)) {
            return Err(ExposureRefusal::Uncovered { balance, owed: payer_unsettled });
        }
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

    /// Value served and never paid (settlement failed or expired) goes into the loss budget.
    pub fn record_loss(&self, value: u64, now: u64) {
        let mut ledger = lock(&self.ledger);
        let per_day = ledger.limits.losses_per_day;
        ledger.losses.add(per_day, value, now);
    }

    /// A payment counted as lost was paid after all (its transaction landed late).
    pub fn forgive_loss(&self, value: u64) {
        let mut ledger = lock(&self.ledger);
        ledger.losses.level = ledger.losses.level.saturating_sub(value);
        ledger.losses.lost_total = ledger.losses.lost_total.saturating_sub(value);
    }

    /// An operator's reset: the losses so far no longer count against the budget.
    pub fn reset_losses(&self, now: u64) -> u64 {
        let mut ledger = lock(&self.ledger);
        let cleared = ledger.losses.level;
        ledger.losses.level = 0;
        ledger.losses.drained_at = now;
        cleared
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
        let mut ledger = lock(&self.ledger);
        let per_day = ledger.limits.losses_per_day;
        ledger.losses.drain(per_day, now);
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
        ExposureSnapshot {
            limits: ledger.limits,
            total: ledger.total,
            payer_count: ledger.payers.len(),
            routes,
            payers,
            blocked,
            losses: ledger.losses.level,
            lost_total: ledger.losses.lost_total,
        }
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
    /// Lost value still counting against the loss budget (micro-USD).
    pub losses: u64,
    /// Everything lost since the process started (micro-USD).
    pub lost_total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited() -> Exposure {
        Exposure::new(ExposureLimits { per_payer: Some(3000), per_route: Some(5000), total: Some(6000), losses_per_day: None })
    }

    #[test]
    fn each_limit_refuses_what_would_exceed_it_and_counts_nothing() {
        let exposure = limited();
        for _ in 0..3 {
            exposure.try_add("alice", "a", 1000, 0, None).unwrap();
        }
        assert_eq!(exposure.try_add("alice", "a", 1, 0, None), Err(ExposureRefusal::Payer { unsettled: 3000, limit: 3000 }));
        exposure.try_add("bob", "a", 2000, 0, None).unwrap();
        assert_eq!(exposure.try_add("carol", "a", 1, 0, None), Err(ExposureRefusal::Route { unsettled: 5000, limit: 5000 }));
        exposure.try_add("carol", "b", 1000, 0, None).unwrap();
        assert_eq!(exposure.try_add("dave", "c", 1, 0, None), Err(ExposureRefusal::Total { unsettled: 6000, limit: 6000 }));
        assert_eq!((exposure.payer("alice"), exposure.route("a"), exposure.total()), (3000, 5000, 6000));
    }

    #[test]
    fn settled_value_frees_room() {
        let exposure = limited();
        exposure.try_add("alice", "a", 3000, 0, None).unwrap();
        exposure.remove("alice", "a", 1000);
        exposure.try_add("alice", "a", 1000, 0, None).unwrap();
        exposure.remove("alice", "a", 3000);
        exposure.remove("alice", "a", 3000);
        assert_eq!((exposure.payer("alice"), exposure.total()), (0, 0), "never below zero");
    }

    #[test]
    fn a_blocked_payer_is_refused_until_the_time_passes_or_it_is_cleared() {
        let exposure = Exposure::default();
        exposure.block("alice", "insufficient balance", 100);
        assert!(matches!(exposure.try_add("alice", "a", 1, 99, None), Err(ExposureRefusal::Blocked { until: 100, .. })));
        exposure.try_add("alice", "a", 1, 100, None).unwrap();
        exposure.block("bob", "cancelled", 100);
        assert!(exposure.unblock("bob"));
        exposure.try_add("bob", "a", 1, 0, None).unwrap();
        exposure.replace_blocks(vec![PayerBlock { payer: "carol".into(), until: 100, reason: "cancelled".into() }]);
        assert!(exposure.try_add("carol", "a", 1, 0, None).is_err());
        exposure.replace_blocks(Vec::new());
        exposure.try_add("carol", "a", 1, 0, None).unwrap();
    }

    #[test]
    fn a_balance_covers_what_the_payer_owes_plus_the_payment() {
        let exposure = Exposure::default();
        exposure.try_add("alice", "a", 600, 0, Some(1000)).unwrap();
        assert_eq!(exposure.try_add("alice", "a", 500, 0, Some(1000)), Err(ExposureRefusal::Uncovered { balance: 1000, owed: 600 }));
        exposure.try_add("alice", "a", 400, 0, Some(1000)).unwrap();
        assert_eq!(exposure.payer("alice"), 1000, "the refused payment counted nothing");
    }

    #[test]
    fn a_spent_loss_budget_refuses_everyone_until_it_drains_or_is_reset() {
        let day = SECONDS_PER_DAY;
        let exposure = Exposure::new(ExposureLimits { losses_per_day: Some(1000), ..ExposureLimits::default() });
        exposure.record_loss(600, 0);
        exposure.try_add("fresh-1", "a", 1, 0, None).unwrap();
        exposure.record_loss(400, 0);
        assert_eq!(exposure.try_add("fresh-2", "a", 1, 0, None), Err(ExposureRefusal::LossBudgetSpent { lost: 1000, limit: 1000 }));
        // A tenth of a day drains a tenth of the daily budget.
        assert!(exposure.try_add("fresh-3", "a", 1, day / 10, None).is_ok());
        assert_eq!(exposure.snapshot(0, day / 10).losses, 900);
        exposure.record_loss(5000, day / 10);
        assert!(exposure.try_add("fresh-4", "a", 1, day / 5, None).is_err());
        assert_eq!(exposure.reset_losses(day / 5), 5800);
        exposure.try_add("fresh-4", "a", 1, day / 5, None).unwrap();
        assert_eq!(exposure.snapshot(0, day / 5).lost_total, 6000);
    }
}
