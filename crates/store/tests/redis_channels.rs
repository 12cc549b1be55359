//! `batch-settlement` channel records in a real Redis on 127.0.0.1:6379 (each test under a
//! fresh key prefix): the rules the request path relies on, held across two replicas.

use std::time::Duration;
use x402_store::{ChannelRecord, ChannelRefusal, ChannelStore, ChannelTerms, ClaimerLease, ExposureLimits, JournalSource, OnchainChannel, RedisChannelStore, RedisLedger, RedisSettings};

const REDIS: &str = "redis://127.0.0.1:6379/0";

/// A replica's ledger (kept alive: it runs the connection) and its channel store.
fn replica(prefix: &str) -> (RedisLedger, RedisChannelStore) {
    replica_with_journal(prefix, Vec::new())
}

/// A replica whose journal holds the channel records `journaled`.
fn replica_with_journal(prefix: &str, journaled: Vec<ChannelRecord>) -> (RedisLedger, RedisChannelStore) {
    let settings = RedisSettings { url: REDIS.into(), key_prefix: prefix.to_owned(), timeout: Duration::from_secs(2), advertise_url: None, wait_for_replicas: 0 };
    let journal = JournalSource { payments: Box::new(|| Ok(Vec::new())), channels: Box::new(move || Ok(journaled.clone())) };
    let ledger = RedisLedger::connect(&settings, ExposureLimits::default(), journal).expect("a Redis on 127.0.0.1:6379 (tests/run.sh starts one)");
    let channels = ledger.channel_store().expect("a running ledger");
    (ledger, channels)
}

fn fresh_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("x402-channels-{}-{}-{}", std::process::id(), x402_store::unix_now_ms(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn record(id: u8, charged: u128) -> ChannelRecord {
    ChannelRecord {
        id: [id; 32],
        network: "eip155:84532".into(),
        chain_id: 84532,
        terms: ChannelTerms { payer: [1; 20], payer_authorizer: [1; 20], receiver: [2; 20], receiver_authorizer: [3; 20], token: [4; 20], withdraw_delay: 900, salt: [5; 32] },
        charged,
        signed_max: charged + 1,
        signature: (0..65).collect(),
        // Above 2^64 and 2^53: amounts must survive the store exactly.
        onchain: OnchainChannel { balance: u128::from(u64::MAX) * 3, total_claimed: 7, withdraw_requested_at: 0, refund_nonce: 2, synced_at_ms: 10 },
        last_charged_at_ms: 99,
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
}

fn now_ms() -> u64 {
    x402_store::unix_now_ms()
}

#[test]
fn one_request_in_flight_per_channel_across_replicas_and_a_commit_seen_by_both() {
    let prefix = fresh_prefix();
    let ((_a, a), (_b, b)) = (replica(&prefix), replica(&prefix));
    block_on(async {
        let (ticket, stored) = a.begin(&[9; 32], now_ms(), now_ms() + 30_000).await.expect("a free slot");
        assert_eq!(stored, None, "a channel never charged");
        assert_eq!(b.begin(&[9; 32], now_ms(), now_ms() + 30_000).await, Err(ChannelRefusal::Busy), "the other replica waits");
        let (other, _) = b.begin(&[8; 32], now_ms(), now_ms() + 30_000).await.expect("another channel is independent");
        b.cancel(other).await;
        let charged = record(9, u128::from(u64::MAX) + 1_000);
        a.commit(ticket, charged.clone()).await.expect("the holder commits");
        let (ticket, stored) = b.begin(&[9; 32], now_ms(), now_ms() + 30_000).await.expect("the commit freed the slot");
        assert_eq!(stored, Some(charged.clone()), "the other replica reads exactly what was charged");
        b.cancel(ticket).await;
        assert_eq!(a.list().await.unwrap(), vec![charged], "only charged channels are listed");
    });
}
#[test]
fn an_expired_slot_is_taken_over_and_its_late_commit_refused() {
    let (_ledger, store) = replica(&fresh_prefix());
    block_on(async {
        let (stale, _) = store.begin(&[9; 32], now_ms(), now_ms() + 50).await.expect("a free slot");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let fresh = loop {
            match store.begin(&[9; 32], now_ms(), now_ms() + 30_000).await {
                Ok((ticket, _)) => break ticket,
                Err(ChannelRefusal::Busy) if std::time::Instant::now() < deadline => tokio::task::yield_now().await,
                Err(other) => panic!("the slot never expired: {other}"),
            }
        };
        assert_eq!(store.commit(stale, record(9, 1_000)).await, Err(ChannelRefusal::SlotLost));
        store.commit(fresh, record(9, 1_000)).await.expect("the new holder commits");
    });
}
#[test]
fn charges_never_go_backwards_and_a_refused_commit_frees_the_slot() {
    let (_ledger, store) = replica(&fresh_prefix());
    block_on(async {
        store.restore(vec![record(9, 5_000)]).await.unwrap();
        let (ticket, _) = store.begin(&[9; 32], now_ms(), now_ms() + 30_000).await.unwrap();
        assert_eq!(store.commit(ticket, record(9, 4_999)).await, Err(ChannelRefusal::Backwards { stored: 5_000, offered: 4_999 }));
        assert_eq!(store.get(&[9; 32]).await.unwrap().map(|r| r.charged), Some(5_000));
        let (ticket, _) = store.begin(&[9; 32], now_ms(), now_ms() + 30_000).await.expect("the slot is free again");
        // 10,000 > 5,000 though "10000" < "5000" as text.
        store.commit(ticket, record(9, 10_000)).await.expect("a charge forward");
        store.restore(vec![record(9, 6_000)]).await.unwrap();
        assert_eq!(store.get(&[9; 32]).await.unwrap().map(|r| r.charged), Some(10_000), "a journal's older copy does not undo a charge");
    });
}
#[test]
fn cancel_frees_only_its_own_slot_and_an_unknown_channel_stays_unknown() {
    let (_ledger, store) = replica(&fresh_prefix());
    block_on(async {
        let (stale, _) = store.begin(&[9; 32], now_ms(), now_ms() + 50).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let holder = loop {
            if let Ok((ticket, _)) = store.begin(&[9; 32], now_ms(), now_ms() + 30_000).await {
                break ticket;
            }
            assert!(std::time::Instant::now() < deadline, "the slot never expired");
            tokio::task::yield_now().await;
        };
        store.cancel(stale).await;
        assert_eq!(store.begin(&[9; 32], now_ms(), now_ms() + 30_000).await, Err(ChannelRefusal::Busy), "a stale cancel leaves the new holder's slot");
        store.cancel(holder).await;
        assert!(store.begin(&[9; 32], now_ms(), now_ms() + 30_000).await.is_ok());
        assert!(store.list().await.unwrap().is_empty());
        assert_eq!(store.get(&[9; 32]).await.unwrap(), None);
    });
}
#[test]
fn mirror_updates_a_known_channel_only_and_never_with_an_older_read() {
    let (_ledger, store) = replica(&fresh_prefix());
    block_on(async {
        store.restore(vec![record(9, 1_000)]).await.unwrap();
        let fresh = OnchainChannel { balance: 20_000, total_claimed: 1_000, withdraw_requested_at: 1_700_000_000, refund_nonce: 3, synced_at_ms: 500 };
        store.mirror(&[9; 32], fresh).await.unwrap();
        store.mirror(&[8; 32], fresh).await.unwrap();
        store.mirror(&[9; 32], OnchainChannel { synced_at_ms: 400, ..OnchainChannel::default() }).await.unwrap();
        assert_eq!(store.get(&[9; 32]).await.unwrap().map(|r| r.onchain), Some(fresh));
        assert_eq!(store.get(&[8; 32]).await.unwrap(), None, "an unknown channel is not created by a mirror");
        let (ticket, _) = store.begin(&[9; 32], now_ms(), now_ms() + 30_000).await.unwrap();
        store.commit(ticket, record(9, 2_000)).await.unwrap();
        let stored = store.get(&[9; 32]).await.unwrap().expect("charged");
        assert_eq!((stored.charged, stored.onchain), (2_000, fresh), "a request's older view keeps the fresher mirror");
    });
}

#[test]
fn journaled_channels_go_back_into_a_store_that_lost_its_data_and_never_lower_a_charge() {
    let prefix = fresh_prefix();
    let (_a, a) = replica_with_journal(&prefix, vec![record(9, 5_000), record(8, 700)]);
    let (_b, b) = replica_with_journal(&prefix, vec![record(9, 3_000)]);
    block_on(async {
        assert_eq!(b.get(&[9; 32]).await.unwrap().map(|r| r.charged), Some(5_000), "restored at start; B's older copy lowers nothing");
        // Redis restarts empty (or fails over to a replica that had not caught up).
        let mut redis = redis::Client::open(REDIS).expect("a client").get_connection().expect("a connection");
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg(format!("{{{prefix}}}*")).query(&mut redis).expect("keys");
        let _: () = redis::cmd("DEL").arg(keys).query(&mut redis).expect("deleted");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while b.get(&[8; 32]).await.ok().flatten().is_none() {
            assert!(std::time::Instant::now() < deadline, "the channels were never restored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut charged: Vec<(u8, u128)> = b.list().await.unwrap().iter().map(|r| (r.id[0], r.charged)).collect();
        charged.sort_unstable();
        assert_eq!(charged, vec![(8, 700), (9, 5_000)], "every replica restored its journal; the highest charge holds");
        assert_eq!(a.begin(&[9; 32], now_ms(), now_ms() + 30_000).await.map(|(_, r)| r.map(|r| r.charged)), Ok(Some(5_000)));
    });
}

#[test]
fn one_replica_claims_at_a_time_and_another_takes_over_when_its_lease_lapses() {
    let prefix = fresh_prefix();
    let (a, b) = (replica(&prefix).0, replica(&prefix).0);
    let (a, b) = (a.claimer_lease().unwrap(), b.claimer_lease().unwrap());
    block_on(async {
        let ttl = Duration::from_millis(300);
        assert!(a.lead(ttl).await, "the first to ask leads");
        assert!(!b.lead(ttl).await, "the other does not");
        assert!(a.lead(ttl).await, "the leader renews its lease");
        // A stops renewing (stopped, or cut off from the store): B takes over once it lapses.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !b.lead(ttl).await {
            assert!(std::time::Instant::now() < deadline, "the lease never lapsed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!a.lead(ttl).await, "A is no longer the claimer");
    });
}
