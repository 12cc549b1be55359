//! Admission by settlement capacity: priced routes stop taking payments while the settler
//! could not put a new one on-chain before its `validBefore` runs out.
//!
//! A guard beside the stall guard looks at every settled network once a second:
//! - the **backlog**: the `validBefore` of every unsettled payment, earliest first (the order
//!   the settler takes them in), read from the journal's partial index;
//! - the **measured capacity**: payments settled per second, counted only over intervals that
//!   began with at least a full batch waiting. With less waiting, the settled rate measures the
//!   offered load, not what the settler can do. Until enough busy time has been seen, a
//!   cautious prior stands in: one full batch per batch window plus a slow block.
//!
//! A network refuses new payments when the time to clear its backlog (backlog / capacity)
//! is above its threshold: the shortest quote offered on it (`maxTimeoutSeconds`) minus the
//! settle margin minus a safety share; or when, at that capacity, some queued payment would
//! be reached too close to its `validBefore`. It takes payments again once the time to clear
//! is below [`REOPEN_SHARE`] of the threshold, so it does not flap.
//!
//! [`SettlementAdmission`] is what the request path reads: one atomic load per priced
//! request while no network refuses.

use crate::metrics::SettlementMetrics;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use x402_store::{unix_now, Journal};

/// A refusing network takes payments again when the time to clear its backlog is below this
/// share of the threshold.
pub const REOPEN_SHARE: f64 = 0.8;
/// Capacity is averaged over at most this much busy time: recent enough to follow gas and
/// block changes, long enough to smooth out whole batches landing at once.
const WINDOW_SECS: f64 = 60.0;
/// Busy time seen before the measurement replaces the prior.
const MIN_MEASURED_SECS: f64 = 10.0;
/// The slow block the prior assumes besides the batch window (an Ethereum mainnet slot).
const PRIOR_BLOCK_SECS: f64 = 12.0;
/// The longest `Retry-After` given: a client should come back and look again.
const MAX_RETRY_AFTER_SECS: u64 = 300;

/// What the admission rule needs from the settlement config.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionPolicy {
    /// Most payments per settlement transaction.
    pub max_batch: usize,
    /// Longest a payment waits for its batch to fill.
    pub batch_window: Duration,
    /// Payments are accepted only with this much time left before `validBefore`; the time
    /// the settler is owed at the end of a quote.
    pub settle_margin_secs: u64,
    /// The settler gives up on a payment with less than this left before `validBefore`.
    pub min_time_left_secs: u64,
}

impl AdmissionPolicy {
    /// Payments per second assumed before any are measured: one full batch per batch
    /// window plus a slow block. Cautious on purpose; the measurement soon replaces it.
    pub fn prior_capacity(&self) -> f64 {
        self.max_batch as f64 / (self.batch_window.as_secs_f64() + PRIOR_BLOCK_SECS)
    }

    /// The longest the backlog may take to clear while a quote of `quote_secs` is offered: a
    /// payment accepted now must settle before its `validBefore` minus the settle margin,
    /// with a safety share (a tenth, at least one batch window) for a capacity that drops.
    pub fn threshold_secs(&self, quote_secs: u64) -> f64 {
        let budget = quote_secs.saturating_sub(self.settle_margin_secs) as f64;
        let safety = (budget * 0.1).max(self.batch_window.as_secs_f64());
        (budget - safety).max(0.0)
    }
}

/// Settlement capacity in payments per second, and whether it was measured or is the prior.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub per_second: f64,
    pub measured: bool,
}

/// Measures payments settled per second over the busy intervals of a sliding window.
#[derive(Debug)]
pub struct CapacityEstimator {
    /// (seconds, payments settled) per busy interval, oldest first.
    samples: VecDeque<(f64, u64)>,
    busy_secs: f64,
    settled: u64,
    prior: f64,
}

impl CapacityEstimator {
    pub fn new(prior: f64) -> Self {
        Self { samples: VecDeque::new(), busy_secs: 0.0, settled: 0, prior }
    }

    /// An interval of `secs` in which `settled` payments settled; `busy`: at least a full
    /// batch was waiting when it began. Only busy intervals measure capacity.
    pub fn observe(&mut self, secs: f64, settled: u64, busy: bool) {
        if !busy || secs.is_nan() || secs <= 0.0 {
            return;
        }
        self.samples.push_back((secs, settled));
        self.busy_secs += secs;
        self.settled += settled;
        while let Some(&(oldest_secs, oldest_settled)) = self.samples.front() {
            if self.busy_secs - oldest_secs < WINDOW_SECS {
                break;
            }
            self.samples.pop_front();
            self.busy_secs -= oldest_secs;
            self.settled -= oldest_settled;
        }
    }

    pub fn capacity(&self) -> Capacity {
        if self.busy_secs >= MIN_MEASURED_SECS {
            Capacity { per_second: self.settled as f64 / self.busy_secs, measured: true }
        } else {
            Capacity { per_second: self.prior, measured: false }
        }
    }
}

/// One network's admission state: what the admin API and the metrics show.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkAdmission {
    /// Unsettled payments.
    pub backlog: u64,
    pub capacity: Capacity,
    /// Estimated time to clear the backlog at that capacity (infinite when nothing settles).
    pub backlog_secs: f64,
    /// Above it new payments are refused; `None` when no priced route offers the network.
    pub threshold_secs: Option<f64>,
    /// Why new payments are refused, if they are.
    pub refusal: Option<String>,
    /// When the backlog should be back under the reopening level.
    pub retry_after_secs: u64,
    /// The backlog in the settler's order, to judge one more payment against.
    pub schedule: Arc<Schedule>,
}

/// The backlog as the settler will take it, earliest `validBefore` first, at one look: a
/// new payment goes in at its deadline's place, waits behind the payments ending no later,
/// and makes every payment ending later wait one payment longer.
#[derive(Debug, Default, PartialEq)]
pub struct Schedule {
    /// When the backlog was read (unix seconds).
    at: u64,
    /// Seconds of settling per payment at the measured capacity.
    per_payment: f64,
    /// Time a payment needs besides its place in the queue: a batch window and the time the
    /// settler keeps in hand before `validBefore`.
    reserve: f64,
    deadlines: Vec<u64>,
    /// `spare_from[k]`: the least time to spare of the queued payments from the k-th
    /// (0-based) on, each reached after the ones before it; infinite past the end.
    spare_from: Vec<f64>,
}

impl Schedule {
    fn new(deadlines: &[u64], at: u64, per_payment: f64, reserve: f64) -> Self {
        let mut spare_from = vec![f64::INFINITY; deadlines.len() + 1];
        for (k, &deadline) in deadlines.iter().enumerate().rev() {
            let spare = deadline as f64 - at as f64 - reserve - (k + 1) as f64 * per_payment;
            spare_from[k] = spare.min(spare_from[k + 1]);
        }
        Self { at, per_payment, reserve, deadlines: deadlines.to_vec(), spare_from }
    }

    /// Whether a payment ending at `valid_before` fits: reached in time itself, and pushing
    /// no queued payment past its deadline. `unseen`: payments accepted since the look,
    /// taken to be ahead of it and of everyone. `Err` tells how many would settle first.
    fn fits(&self, valid_before: u64, unseen: u64) -> Result<(), u64> {
        let place = self.deadlines.partition_point(|&deadline| deadline <= valid_before);
        let ahead = place as u64 + unseen;
        let own_spare = valid_before as f64 - self.at as f64 - self.reserve - (ahead + 1) as f64 * self.per_payment;
        let pushed_spare = self.spare_from[place] - (unseen + 1) as f64 * self.per_payment;
        if own_spare >= 0.0 && pushed_spare >= 0.0 { Ok(()) } else { Err(ahead) }
    }
}

/// A priced request refused for a settlement backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogRefusal {
    pub network: String,
    pub message: String,
    pub retry_after_secs: u64,
}

/// Whether each network takes new payments, shared by the guard (writer) and the proxy
/// (reader).
#[derive(Debug, Default)]
pub struct SettlementAdmission {
    /// Some network refuses: the request path looks at nothing else while it is false.
    refusing: AtomicBool,
    /// Payments accepted since the guard last read the backlogs: not in any schedule yet.
    unseen: AtomicU64,
    networks: RwLock<BTreeMap<String, NetworkAdmission>>,
}

impl SettlementAdmission {
    /// The refusal of the first of `networks` (CAIP-2 ids) that refuses, if any. Costs one
    /// atomic load while none does.
    pub fn refusal<'a>(&self, networks: impl IntoIterator<Item = &'a str>) -> Option<BacklogRefusal> {
        if !self.refusing.load(Ordering::Acquire) {
            return None;
        }
        let states = self.read();
        networks.into_iter().find_map(|network| {
            let state = states.get(network)?;
            let message = state.refusal.clone()?;
            Some(BacklogRefusal { network: network.to_owned(), message, retry_after_secs: state.retry_after_secs })
        })
    }

    /// A refusal for one payment on `network` ending at `valid_before` that the settler,
    /// at its measured capacity, would reach too close to its deadline, or that would push
    /// a queued payment past its own, though the network takes payments: a payer that
    /// signed long before sending, or that offers less time than the quote. Refused before
    /// it is reserved, so the payer can send one valid for longer.
    pub fn late_payment(&self, network: &str, valid_before: u64, now: u64) -> Option<BacklogRefusal> {
        let states = self.read();
        let state = states.get(network)?;
        state.threshold_secs?;
        let ahead = state.schedule.fits(valid_before, self.unseen.load(Ordering::Acquire)).err()?;
        let message = format!(
            "{ahead} payments settle before it or would then settle too late, at {:.2} payments/s, and its validBefore is {} s away; sign one valid for longer",
            state.capacity.per_second,
            valid_before.saturating_sub(now)
        );
        Some(BacklogRefusal { network: network.to_owned(), message, retry_after_secs: 1 })
    }

    /// A payment was accepted: it waits in a backlog the guard has not read yet.
    pub fn payment_accepted(&self) {
        self.unseen.fetch_add(1, Ordering::AcqRel);
    }

    /// Every network's state, by CAIP-2 id.
    pub fn snapshot(&self) -> BTreeMap<String, NetworkAdmission> {
        self.read().clone()
    }

    fn publish(&self, network: &str, state: NetworkAdmission) {
        let mut states = self.networks.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let was = states.get(network).and_then(|s| s.refusal.as_deref());
        match (was, state.refusal.as_deref()) {
            (None, Some(reason)) => tracing::warn!(network, backlog = state.backlog, capacity_per_second = state.capacity.per_second, %reason, "settlement backlog: priced routes refuse new payments on this network"),
            (Some(_), None) => tracing::info!(network, backlog = state.backlog, backlog_seconds = state.backlog_secs, "settlement backlog cleared: priced routes take payments again"),
            _ => {}
        }
        states.insert(network.to_owned(), state);
        let any = states.values().any(|s| s.refusal.is_some());
        self.refusing.store(any, Ordering::Release);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NetworkAdmission>> {
        self.networks.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The admission rule for one network. `deadlines`: the backlog's `validBefore`s, earliest
/// first; `threshold_secs`: `None` when no priced route offers the network; `refusing`:
/// whether it refuses now (then it reopens only below [`REOPEN_SHARE`] of the threshold).
pub fn assess(deadlines: &[u64], now: u64, capacity: Capacity, threshold_secs: Option<f64>, refusing: bool, policy: &AdmissionPolicy) -> NetworkAdmission {
    let backlog = deadlines.len() as u64;
    let per_payment = per_payment_secs(capacity);
    let backlog_secs = if backlog == 0 { 0.0 } else { backlog as f64 * per_payment };
    let reserve = policy.batch_window.as_secs_f64() + policy.min_time_left_secs as f64;
    let schedule = Arc::new(Schedule::new(deadlines, now, per_payment, reserve));
    let mut state = NetworkAdmission { backlog, capacity, backlog_secs, threshold_secs, refusal: None, retry_after_secs: 0, schedule };
    let Some(threshold) = threshold_secs else { return state };
    let reopen_at = threshold * REOPEN_SHARE;
    let limit = if refusing { reopen_at } else { threshold };
    if backlog_secs > limit {
        state.refusal = Some(format!(
            "{backlog} payments wait for settlement, about {} s of work at {:.2} payments/s, more than the {} s a new payment can wait",
            seconds_text(backlog_secs),
            capacity.per_second,
            limit.floor()
        ));
        state.retry_after_secs = retry_after(backlog_secs - reopen_at);
    } else if let Some((position, deadline)) = first_late(deadlines, now, per_payment, policy) {
        let reached = position as f64 * per_payment;
        state.refusal = Some(format!(
            "at {:.2} payments/s the settler would reach a queued payment {} s from now, too close to its validBefore in {} s",
            capacity.per_second,
            seconds_text(reached),
            deadline.saturating_sub(now)
        ));
        state.retry_after_secs = retry_after(reached);
    }
    state
}

/// Seconds of settling per payment at `capacity` (infinite when nothing settles).
fn per_payment_secs(capacity: Capacity) -> f64 {
    if capacity.per_second > 0.0 { 1.0 / capacity.per_second } else { f64::INFINITY }
}

/// The first queued payment (1-based position, deadline) the settler would reach, at
/// `per_payment` seconds each plus a batch window, later than its `validBefore` minus the
/// time it needs left.
fn first_late(deadlines: &[u64], now: u64, per_payment: f64, policy: &AdmissionPolicy) -> Option<(usize, u64)> {
    let window = policy.batch_window.as_secs_f64();
    deadlines.iter().enumerate().map(|(i, &deadline)| (i + 1, deadline)).find(|&(position, deadline)| {
        let reached = now as f64 + position as f64 * per_payment + window;
        reached > deadline.saturating_sub(policy.min_time_left_secs) as f64
    })
}

fn retry_after(secs: f64) -> u64 {
    if secs.is_finite() {
        (secs.ceil() as u64).clamp(1, MAX_RETRY_AFTER_SECS)
    } else {
        MAX_RETRY_AFTER_SECS
    }
}

fn seconds_text(secs: f64) -> String {
    if secs.is_finite() { format!("{}", secs.ceil() as u64) } else { "unbounded".to_owned() }
}

/// The shortest quote (`maxTimeoutSeconds`) each network (CAIP-2 id) is offered with now,
/// read from the serving config at every check so a reload is followed.
pub type ShortestQuotes = Box<dyn Fn() -> BTreeMap<String, u64> + Send>;

/// Keeps a [`SettlementAdmission`] up to date from the journal and the settler's counters.
pub struct AdmissionGuard {
    pub journal: Arc<Journal>,
    /// The settler's counters: `x402_settlement_payments_total{state="settled"}` per network.
    pub metrics: Arc<SettlementMetrics>,
    /// CAIP-2 ids of the settled networks, as the journal and the settler name them.
    pub networks: Vec<String>,
    pub policy: AdmissionPolicy,
    pub shortest_quotes: ShortestQuotes,
    pub admission: Arc<SettlementAdmission>,
}

/// What the guard remembers of a network between checks.
struct Watch {
    estimator: CapacityEstimator,
    at: Instant,
    settled: u64,
    backlog: u64,
}

impl AdmissionGuard {
    /// Checks every second until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let prior = self.policy.prior_capacity();
        let mut watches: Vec<Watch> = self
            .networks
            .iter()
            .map(|network| Watch { estimator: CapacityEstimator::new(prior), at: Instant::now(), settled: self.settled(network), backlog: 0 })
            .collect();
        loop {
            let quotes = (self.shortest_quotes)();
            // Accepted before the backlogs are read: in them once published (a payment
            // accepted meanwhile is counted twice, which only errs on the safe side).
            let unseen = self.admission.unseen.load(Ordering::Acquire);
            for (network, watch) in self.networks.iter().zip(watches.iter_mut()) {
                self.check(network, watch, quotes.get(network).copied());
            }
            self.admission.unseen.fetch_sub(unseen, Ordering::AcqRel);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    fn settled(&self, network: &str) -> u64 {
        self.metrics.payments.with_label_values(&[network, "settled"]).get()
    }

    fn check(&self, network: &str, watch: &mut Watch, shortest_quote: Option<u64>) {
        let deadlines = match self.journal.unsettled_deadlines(network) {
            Ok(deadlines) => deadlines,
            Err(error) => {
                // The stall guard refuses payments on an unreadable journal; keep the last state.
                tracing::warn!(network, %error, "admission cannot read the backlog");
                return;
            }
        };
        let (now, settled) = (Instant::now(), self.settled(network));
        let busy = watch.backlog >= self.policy.max_batch as u64;
        watch.estimator.observe(now.duration_since(watch.at).as_secs_f64(), settled.saturating_sub(watch.settled), busy);
        (watch.at, watch.settled, watch.backlog) = (now, settled, deadlines.len() as u64);
        let refusing = self.admission.read().get(network).is_some_and(|s| s.refusal.is_some());
        let threshold = shortest_quote.map(|quote| self.policy.threshold_secs(quote));
        let state = assess(&deadlines, unix_now(), watch.estimator.capacity(), threshold, refusing, &self.policy);
        self.admission.publish(network, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: AdmissionPolicy =
        AdmissionPolicy { max_batch: 2, batch_window: Duration::from_secs(2), settle_margin_secs: 20, min_time_left_secs: 4 };

    fn measured(per_second: f64) -> Capacity {
        Capacity { per_second, measured: true }
    }

    #[test]
    fn the_prior_stands_until_enough_busy_time_is_seen() {
        let mut estimator = CapacityEstimator::new(POLICY.prior_capacity());
        assert_eq!(estimator.capacity(), Capacity { per_second: 2.0 / 14.0, measured: false });
        for _ in 0..9 {
            estimator.observe(1.0, 1, true);
        }
        assert!(!estimator.capacity().measured, "9 s of busy time is not enough");
        estimator.observe(1.0, 1, true);
        assert_eq!(estimator.capacity(), measured(1.0));
    }

    #[test]
    fn idle_intervals_measure_the_load_not_the_capacity_and_are_ignored() {
        let mut estimator = CapacityEstimator::new(1.0);
        for _ in 0..20 {
            estimator.observe(1.0, 4, true);
        }
        for _ in 0..100 {
            estimator.observe(1.0, 0, false);
        }
        assert_eq!(estimator.capacity(), measured(4.0));
    }

    #[test]
    fn the_window_follows_a_capacity_that_changes() {
        let mut estimator = CapacityEstimator::new(1.0);
        for _ in 0..60 {
            estimator.observe(1.0, 10, true);
        }
        assert_eq!(estimator.capacity(), measured(10.0));
        for _ in 0..60 {
            estimator.observe(1.0, 2, true);
        }
        assert_eq!(estimator.capacity(), measured(2.0), "the old samples left the window");
    }

    #[test]
    fn a_settler_that_settles_nothing_while_busy_has_no_capacity() {
        let mut estimator = CapacityEstimator::new(1.0);
        for _ in 0..10 {
            estimator.observe(1.0, 0, true);
        }
        let state = assess(&[1_000], 0, estimator.capacity(), Some(30.0), false, &POLICY);
        assert!(state.backlog_secs.is_infinite() && state.refusal.is_some());
        assert_eq!(state.retry_after_secs, MAX_RETRY_AFTER_SECS);
    }

    #[test]
    fn thresholds_leave_the_margin_and_a_safety_share() {
        assert_eq!(POLICY.threshold_secs(60), 36.0, "60 - 20 margin - 4 (a tenth of 40)");
        assert_eq!(POLICY.threshold_secs(25), 3.0, "the safety share is at least a batch window");
        assert_eq!(POLICY.threshold_secs(10), 0.0);
    }

    #[test]
    fn refuses_above_the_threshold_and_reopens_only_below_its_lower_share() {
        let now = 1_000;
        let queue = |n: usize| vec![now + 60; n];
        // 2 payments/s, threshold 36 s: 72 queued is at the threshold, 73 above it.
        assert_eq!(assess(&queue(72), now, measured(2.0), Some(36.0), false, &POLICY).refusal, None);
        let refused = assess(&queue(74), now, measured(2.0), Some(36.0), false, &POLICY);
        assert!(refused.refusal.as_deref().is_some_and(|r| r.contains("74 payments")), "{refused:?}");
        assert_eq!(refused.backlog_secs, 37.0);
        // Reopening level: 0.8 × 36 = 28.8 s, i.e. 57.6 payments; from 37 s that is ~8.2 s away.
        assert_eq!(refused.retry_after_secs, 9);
        assert!(assess(&queue(60), now, measured(2.0), Some(36.0), true, &POLICY).refusal.is_some(), "still above the reopening level");
        assert_eq!(assess(&queue(57), now, measured(2.0), Some(36.0), true, &POLICY).refusal, None);
    }

    #[test]
    fn a_payment_the_settler_would_reach_too_late_refuses_new_work() {
        let now = 1_000;
        // Two queued (2 s of work), but the earliest expires in 6 s: reached after 1 s and a
        // 2 s batch window, later than the 6 - 4 s it may take.
        let state = assess(&[now + 6, now + 60], now, measured(1.0), Some(36.0), false, &POLICY);
        assert!(state.refusal.as_deref().is_some_and(|r| r.contains("too close")), "{state:?}");
        assert!(assess(&[now + 60, now + 60], now, measured(1.0), Some(36.0), false, &POLICY).refusal.is_none());
    }

    #[test]
    fn a_network_no_priced_route_offers_is_reported_and_never_refuses() {
        let state = assess(&[0; 1000], 1_000, measured(0.0), None, false, &POLICY);
        assert_eq!((state.backlog, state.refusal), (1000, None));
        assert_eq!(assess(&[], 0, measured(0.0), Some(36.0), false, &POLICY).backlog_secs, 0.0, "an empty queue clears at once");
    }

    #[test]
    fn the_request_path_sees_only_refusing_networks() {
        let admission = SettlementAdmission::default();
        assert_eq!(admission.refusal(["eip155:1"]), None);
        let refusing = assess(&[100; 100], 0, measured(1.0), Some(36.0), false, &POLICY);
        admission.publish("eip155:1", refusing.clone());
        admission.publish("eip155:2", assess(&[], 0, measured(1.0), Some(36.0), false, &POLICY));
        assert_eq!(admission.refusal(["eip155:2"]), None);
        let refusal = admission.refusal(["eip155:2", "eip155:1"]).expect("eip155:1 refuses");
        assert_eq!((refusal.network.as_str(), refusal.retry_after_secs), ("eip155:1", refusing.retry_after_secs));
        admission.publish("eip155:1", assess(&[], 0, measured(1.0), Some(36.0), true, &POLICY));
        assert_eq!(admission.refusal(["eip155:1"]), None);
    }

    #[test]
    fn a_payment_that_would_expire_behind_the_backlog_is_refused_though_the_network_takes_payments() {
        let admission = SettlementAdmission::default();
        let now = 1_000;
        // 20 queued at 2/s ending in 16 s: the last is reached after 10 s, with the 2 s
        // window and 4 s kept in hand just in time. Nothing refuses the network.
        let state = assess(&[now + 16; 20], now, measured(2.0), Some(36.0), false, &POLICY);
        assert_eq!(state.refusal, None);
        admission.publish("eip155:1", state);
        let late = admission.late_payment("eip155:1", now + 16, now).expect("behind all 20, reached after 10.5 s of work + 6 s");
        assert!(late.message.starts_with("20 payments") && late.message.contains("16 s away"), "{late:?}");
        assert_eq!(admission.late_payment("eip155:1", now + 17, now), None, "one second more is enough");
        // Ending sooner, it would go first and push the 20th past its deadline.
        assert!(admission.late_payment("eip155:1", now + 10, now).is_some_and(|late| late.message.starts_with("0 payments")));
        assert_eq!(admission.late_payment("eip155:2", now + 1, now), None, "a network without state is not judged here");
        admission.publish("eip155:1", assess(&[], now, measured(2.0), None, false, &POLICY));
        assert_eq!(admission.late_payment("eip155:1", now + 1, now), None, "a network no priced route offers never refuses");
    }

    #[test]
    fn payments_accepted_since_the_last_look_count_as_ahead() {
        let admission = SettlementAdmission::default();
        let now = 1_000;
        admission.publish("eip155:1", assess(&[now + 300; 20], now, measured(2.0), Some(36.0), false, &POLICY));
        assert_eq!(admission.late_payment("eip155:1", now + 301, now), None, "behind 20: 10.5 s + 6 s");
        for _ in 0..600 {
            admission.payment_accepted();
        }
        assert!(admission.late_payment("eip155:1", now + 301, now).is_some(), "600 unseen more: 310.5 s of work ahead");
    }

    #[test]
    fn a_schedule_places_a_payment_at_its_deadline() {
        let schedule = Schedule::new(&[10, 20, 30], 0, 1.0, 2.0);
        // Spare time: 10-2-1 = 7, 20-2-2 = 16, 30-2-3 = 25; least from each on: 7, 16, 25, inf.
        assert_eq!(schedule.spare_from, vec![7.0, 16.0, 25.0, f64::INFINITY]);
        assert_eq!(schedule.fits(5, 0), Ok(()), "first in line: 2 s to spare, and the others still fit");
        assert_eq!(schedule.fits(5, 2), Ok(()), "behind 2 unseen: 0 s to spare");
        assert_eq!(schedule.fits(5, 3), Err(3));
        assert_eq!(schedule.fits(30, 0), Ok(()), "last in line");
        // One ending at 10, nine at 12: the ninth is reached at 10 s, just in time.
        let mut deadlines = vec![10];
        deadlines.extend([12; 9]);
        let tight = Schedule::new(&deadlines, 0, 1.0, 2.0);
        assert_eq!(tight.fits(11, 0), Err(1), "it would have time itself, but push the last of the nine past 12");
        assert_eq!(tight.fits(12, 0), Err(10), "behind all ten it is reached too late itself");
        assert_eq!(tight.fits(40, 0), Ok(()));
    }
}
