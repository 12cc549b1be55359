//! The Redis ledger's scripts against a real Redis on 127.0.0.1:6379 (each test under a fresh
//! key prefix): what the request path and the settler rely on, one operation at a time.

use std::time::Duration;
use x402_store::{ExposureLimits, ExposureRefusal, Hold, LedgerRefusal, PaymentLedger, RedisLedger, RedisSettings, ReplayKey, Restored};

const NOW: u64 = 1_000_000;

fn ledger(limits: ExposureLimits) -> RedisLedger {
    ledger_with_journal(limits, Vec::new()).0
}

/// A ledger whose replica's journal holds `journal`, and its key prefix.
fn ledger_with_journal(limits: ExposureLimits, journal: Vec<Restored>) -> (RedisLedger, String) {
    let prefix = format!("x402-unit-{}-{}-{}", std::process::id(), x402_store::unix_now_ms(), rand_byte());
    (replica(&prefix, limits, journal), prefix)
}

/// A replica of the fleet sharing `prefix`.
fn replica(prefix: &str, limits: ExposureLimits, journal: Vec<Restored>) -> RedisLedger {
    let prefix = prefix.to_owned();
    let settings = RedisSettings { url: REDIS.into(), key_prefix: prefix, timeout: Duration::from_secs(2), advertise_url: None, wait_for_replicas: 0 };
    RedisLedger::connect(&settings, limits, x402_store::JournalSource::payments(move || Ok(journal.clone()))).expect("a Redis on 127.0.0.1:6379 (tests/run.sh starts one)")
}

const REDIS: &str = "redis://127.0.0.1:6379/0";

fn rand_byte() -> u8 {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
}

fn hold<'a>(id: &'a str, payer: &'a str, usd_micros: u64, token: u64) -> Hold<'a> {
    let mut nonce = [0u8; 32];
    nonce[..id.len().min(32)].copy_from_slice(&id.as_bytes()[..id.len().min(32)]);
    Hold {
        key: ReplayKey { chain_id: 1, asset: [1; 20], from: [2; 20], nonce },
        receipt_id: id,
        // Far in the future: the reservation outlives the test.
        valid_before: x402_store::unix_now() + 3600,
        payer,
        route: "weather",
        usd_micros,
        balance: None,
        now: NOW,
        token,
    }
}

#[test]
fn a_nonce_is_held_once_and_only_its_own_hold_releases_it() {
    let ledger = ledger(ExposureLimits::default());
    block_on(async {
        let first = hold("n1", "alice", 1000, 7);
        assert_eq!(ledger.hold(&first).await, Ok(()));
        assert_eq!(ledger.hold(&first).await, Err(LedgerRefusal::Replayed), "this replica's cache");
        // Another replica's hold of the same nonce, with another token, cannot release ours.
        ledger.release(&hold("n1", "alice", 1000, 8), false).await;
        assert_eq!(ledger.snapshot(10, NOW).await.map(|s| s.total), Ok(1000));
        ledger.release(&first, false).await;
        assert_eq!(ledger.snapshot(10, NOW).await.map(|s| s.total), Ok(0));
        assert_eq!(ledger.hold(&hold("n1", "alice", 1000, 9)).await, Ok(()), "released: the same payment may be used");
        ledger.release(&hold("n1", "alice", 1000, 9), true).await;
        assert_eq!(ledger.hold(&hold("n1", "alice", 1000, 10)).await, Err(LedgerRefusal::Replayed), "spent: the reservation stays");
        assert_eq!(ledger.snapshot(10, NOW).await.map(|s| s.total), Ok(0), "but counts nothing");
    });
}

#[test]
fn limits_and_the_balance_refuse_what_would_exceed_them_and_count_nothing() {
    let limits = ExposureLimits { per_payer: Some(2000), per_route: None, total: Some(3000), losses_per_day: None };
    let ledger = ledger(limits);
    block_on(async {
        assert_eq!(ledger.hold(&hold("a1", "alice", 1000, 1)).await, Ok(()));
        assert_eq!(ledger.hold(&hold("a2", "alice", 1000, 1)).await, Ok(()));
        assert_eq!(ledger.hold(&hold("a3", "alice", 1, 1)).await, Err(ExposureRefusal::Payer { unsettled: 2000, limit: 2000 }.into()));
        let covered = Hold { balance: Some(1500), ..hold("b1", "bob", 1000, 1) };
        assert_eq!(ledger.hold(&covered).await, Ok(()));
        let uncovered = Hold { balance: Some(1500), ..hold("b2", "bob", 1000, 1) };
        assert_eq!(ledger.hold(&uncovered).await, Err(ExposureRefusal::Uncovered { balance: 1500, owed: 1000 }.into()));
        assert_eq!(ledger.hold(&hold("c1", "carol", 1, 1)).await, Err(ExposureRefusal::Total { unsettled: 3000, limit: 3000 }.into()));
        let snapshot = ledger.snapshot(10, NOW).await.expect("a snapshot");
        assert_eq!((snapshot.total, snapshot.payer_count), (3000, 2));
        assert_eq!(snapshot.payers[0], ("alice".to_owned(), 2000));
        assert_eq!(snapshot.routes, vec![("weather".to_owned(), 3000)]);
        // A refused nonce was not reserved: it works once there is room.
        ledger.release(&hold("a1", "alice", 1000, 1), false).await;
        assert_eq!(ledger.hold(&hold("c1", "carol", 1, 1)).await, Ok(()));
    });
}

fn restored(id: &str, unsettled: bool) -> Restored {
    Restored {
        key: hold(id, "alice", 0, 0).key,
        receipt_id: id.to_owned(),
        valid_before: x402_store::unix_now() + 3600,
        payer: "alice".into(),
        route: "weather".into(),
        usd_micros: 500,
        unsettled,
    }
}

#[test]
fn restoring_a_journal_twice_counts_its_payments_once_and_settled_ones_not_at_all() {
    let ledger = ledger(ExposureLimits::default());
    block_on(async {
        let journal = [restored("r1", true), restored("r2", true), restored("r3", false)];
        ledger.restore(&journal).await.expect("restored");
        ledger.restore(&journal).await.expect("restored again");
        assert_eq!(ledger.snapshot(10, NOW).await.map(|s| s.total), Ok(1000));
        // r2 settled while the store still counted it: the next start frees it.
        ledger.restore(&[restored("r2", false)]).await.expect("restored");
        assert_eq!(ledger.snapshot(10, NOW).await.map(|s| s.total), Ok(500));
        // Every restored payment is reserved, settled or not.
        for id in ["r1", "r2", "r3"] {
            assert_eq!(ledger.hold(&hold(id, "alice", 500, 99)).await, Err(LedgerRefusal::Replayed), "{id}");
        }
    });
}

#[test]
fn a_spent_loss_budget_and_a_blocked_payer_are_refused_until_reset_or_unblocked() {
    let ledger = ledger(ExposureLimits { losses_per_day: Some(1000), ..ExposureLimits::default() });
    block_on(async {
        ledger.block("mallory", "cancelled its authorization", NOW + 10);
        assert!(ledger.flush(Duration::from_secs(5)).await);
        let blocked = ledger.hold(&hold("m1", "mallory", 1, 1)).await;
        assert!(matches!(blocked, Err(LedgerRefusal::Exposure(ExposureRefusal::Blocked { until, .. })) if until == NOW + 10), "{blocked:?}");
        assert_eq!(ledger.unblock("mallory").await, Ok(true));
        assert_eq!(ledger.hold(&hold("m1", "mallory", 1, 1)).await, Ok(()));

        ledger.record_loss(600, NOW);
        assert!(ledger.flush(Duration::from_secs(5)).await);
        assert_eq!(ledger.hold(&hold("l1", "alice", 1, 1)).await, Ok(()), "600 of 1000 lost: still open");
        ledger.record_loss(5000, NOW);
        assert!(ledger.flush(Duration::from_secs(5)).await);
        let snapshot = ledger.snapshot(0, NOW).await.expect("a snapshot");
        assert_eq!((snapshot.losses, snapshot.lost_total), (1000, 5600), "the bucket holds no more than its size");
        assert_eq!(ledger.hold(&hold("l2", "alice", 1, 1)).await, Err(ExposureRefusal::LossBudgetSpent { lost: 1000, limit: 1000 }.into()));
        // Half a day drains half the budget: open again.
        let later = Hold { now: NOW + 43_200, ..hold("l2", "alice", 1, 1) };
        assert_eq!(ledger.hold(&later).await, Ok(()));
        ledger.record_loss(1000, NOW + 43_200);
        assert!(ledger.flush(Duration::from_secs(5)).await);
        assert!(ledger.hold(&Hold { now: NOW + 43_200, ..hold("l3", "alice", 1, 1) }).await.is_err());
        assert_eq!(ledger.reset_losses(NOW + 43_200).await, Ok(1000));
        assert_eq!(ledger.hold(&Hold { now: NOW + 43_200, ..hold("l3", "alice", 1, 1) }).await, Ok(()));
    });
}

#[test]
fn no_store_at_the_address_is_refused_at_once() {
    let settings = RedisSettings { url: "redis://127.0.0.1:1/0".into(), key_prefix: "x".into(), timeout: Duration::from_millis(50), advertise_url: None, wait_for_replicas: 0 };
    assert!(RedisLedger::connect(&settings, ExposureLimits::default(), x402_store::JournalSource::payments(|| Ok(Vec::new()))).is_err());
}

#[test]
fn a_payment_nobody_resolves_stops_counting_a_day_past_its_valid_before() {
    let ledger = ledger(ExposureLimits::default());
    block_on(async {
        // Its replica was lost and its journal never settled: two days past validBefore.
        let stale = Hold { valid_before: x402_store::unix_now() - 2 * 86_400, ..hold("s1", "alice", 700, 1) };
        assert_eq!(ledger.hold(&stale).await, Ok(()));
        assert_eq!(ledger.hold(&hold("s2", "alice", 300, 1)).await, Ok(()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ledger.snapshot(0, NOW).await.map(|s| s.total) != Ok(300) {
            assert!(std::time::Instant::now() < deadline, "the stale payment still counts");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ledger.snapshot(10, NOW).await.map(|s| s.payers), Ok(vec![("alice".to_owned(), 300)]));
    });
}

#[test]
fn a_store_that_lost_its_data_takes_no_payment_until_the_journal_is_restored_into_it() {
    let (ledger, prefix) = ledger_with_journal(ExposureLimits::default(), vec![restored("charged", true)]);
    let other = replica(&prefix, ExposureLimits::default(), Vec::new());
    block_on(async {
        assert_eq!(ledger.hold(&hold("charged", "alice", 500, 1)).await, Err(LedgerRefusal::Replayed), "restored at start");
        // Redis restarts empty (or fails over to a replica that had not caught up).
        let mut redis = redis::Client::open(REDIS).expect("a client").get_connection().expect("a connection");
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{{{prefix}}}*")).query(&mut redis).expect("keys");
        let _: () = redis::cmd("DEL").arg(keys).query(&mut redis).expect("deleted");
        let refused = ledger.hold(&hold("fresh-1", "bob", 100, 1)).await;
        assert!(matches!(&refused, Err(LedgerRefusal::Unavailable(e)) if e.0.contains("lost its data")), "{refused:?}");
        // Within a few seconds (the watch, the restore, the quarantine) payments are taken
        // again, and the payment charged before the loss is still refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while other.hold(&hold("fresh-2", "bob", 100, 2)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "payments never resumed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(ledger.snapshot(10, NOW).await.map(|s| s.total), Ok(600), "the journal's unsettled payment counts again");
        assert_eq!(other.hold(&hold("charged", "alice", 500, 3)).await, Err(LedgerRefusal::Replayed), "the other replica refuses it: the store knows it again");
    });
}
