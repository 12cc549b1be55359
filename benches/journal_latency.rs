//! The latency a durable journal adds to a paid response: each of `writers` concurrent
//! requests (1, then 32) records its payment and waits until it is on disk, as `response_filter` does.
//! Three ways, in one run, reported as p50/p99 and as ratios to the in-memory path:
//!   - in memory: a mutex-guarded map insert (the journal before it was durable);
//!   - SQLite, one transaction (one fsync) per payment;
//!   - SQLite with group commit: concurrent payments share a transaction and its fsync.
//!
//! Run: `cargo bench -p x402-gateway-benches --bench journal_latency` (`-- --quick` for a
//! short run). The journal file goes in the system temp folder, so this measures that disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use x402::{ExactEvmAuthorization, ExactEvmPayload};
use x402_store::{Journal, JournalOptions, NewPayment, SettlementItem};

fn payment(n: u64) -> NewPayment {
    let nonce = format!("0x{n:064x}");
    NewPayment {
        receipt_id: format!("{n:032x}"),
        route: "weather".into(),
        amount: "1000".into(),
        payer: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
        nonce: nonce.clone(),
        usd_micros: 1000,
        item: SettlementItem {
            network: "eip155:84532".into(),
            chain_id: 84532,
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            payload: ExactEvmPayload {
                signature: format!("0x{}", "ab".repeat(65)),
                authorization: ExactEvmAuthorization {
                    from: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
                    to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
                    value: "1000".into(),
                    valid_after: "0".into(),
                    valid_before: "4000000000".into(),
                    nonce,
                },
            },
            valid_before: 4_000_000_000,
        },
    }
}

/// Runs `per_writer` records on each of `writers` tasks; returns every latency and the wall time.
fn drive<F, Fut>(runtime: &tokio::runtime::Runtime, writers: usize, per_writer: usize, record: F) -> (Vec<Duration>, Duration)
where
    F: Fn(NewPayment) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let record = Arc::new(record);
    let started = Instant::now();
    let latencies = runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(per_writer);
                    for i in 0..per_writer {
                        let n = (w * per_writer + i) as u64 + 1;
                        let t = Instant::now();
                        record(payment(n)).await;
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("writer task"));
        }
        all
    });
    (latencies, started.elapsed())
}

struct Summary {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn summarize(name: &'static str, mut latencies: Vec<Duration>, wall: Duration) -> Summary {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Summary { name, p50: at(0.50), p99: at(0.99), per_second: latencies.len() as f64 / wall.as_secs_f64() }
}

fn durable(runtime: &tokio::runtime::Runtime, writers: usize, per_writer: usize, group_commit: bool, name: &'static str) -> Summary {
    let dir = std::env::temp_dir().join(format!("x402-journal-bench-{}-{group_commit}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench folder");
    let journal = Arc::new(Journal::open(&dir.join("journal.db"), JournalOptions { group_commit, ..JournalOptions::default() }).expect("open journal"));
    let (latencies, wall) = drive(runtime, writers, per_writer, move |p| {
        let journal = journal.clone();
        async move {
            journal.record(p).await.expect("record");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    summarize(name, latencies, wall)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    for writers in [1, 32] {
        let per_writer = if quick { 320 / writers / 4 } else { 3200 / writers };
        report(&runtime, writers, per_writer);
    }
}

fn report(runtime: &tokio::runtime::Runtime, writers: usize, per_writer: usize) {
    let memory = Arc::new(Mutex::new(BTreeMap::new()));
    let (latencies, wall) = drive(runtime, writers, per_writer, move |p| {
        let memory = memory.clone();
        async move {
            memory.lock().expect("lock").insert(p.receipt_id.clone(), p);
        }
    });
    let rows = [
        summarize("in memory", latencies, wall),
        durable(runtime, writers, per_writer, false, "SQLite, fsync per payment"),
        durable(runtime, writers, per_writer, true, "SQLite, group commit"),
    ];
    let base = &rows[0];
    println!("journal_latency: {writers} concurrent writers x {per_writer} payments each");
    println!(
        "{:<28} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "journal", "p50 µs", "p99 µs", "payments/s", "p50 added µs", "p99 added µs", "p50 × memory"
    );
    for row in &rows {
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>12.0} {:>12.1} {:>12.1} {:>12.0}",
            row.name,
            row.p50.as_secs_f64() * 1e6,
            row.p99.as_secs_f64() * 1e6,
            row.per_second,
            (row.p50.saturating_sub(base.p50)).as_secs_f64() * 1e6,
            (row.p99.saturating_sub(base.p99)).as_secs_f64() * 1e6,
            row.p50.as_secs_f64() / base.p50.as_secs_f64(),
        );
    }
    let (single, group) = (&rows[1], &rows[2]);
    println!(
        "group commit vs fsync per payment: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x\n",
        single.p50.as_secs_f64() / group.p50.as_secs_f64(),
        single.p99.as_secs_f64() / group.p99.as_secs_f64(),
        group.per_second / single.per_second,
    );
}
