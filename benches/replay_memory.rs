//! Memory per held nonce in the replay store, with 1M entries: the store holds every
//! accepted authorization until its `validBefore`, so this is what a busy gateway keeps.
//! Counts bytes through a counting global allocator (exact, unlike RSS), and shows moka's
//! cache (the store's previous backing) beside it. Target: ≤ 128 bytes per entry.
//! `cargo bench -p x402-gateway-benches --bench replay_memory [-- --quick]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};
use x402_store::{MemoryReplayStore, ReplayKey, ReplayStore};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn key(n: u64) -> ReplayKey {
    let mut nonce = [0u8; 32];
    nonce[24..].copy_from_slice(&n.to_be_bytes());
    ReplayKey { chain_id: 84532, asset: [0x03; 20], from: [(n % 251) as u8; 20], nonce }
}

fn measure(name: &str, entries: u64, fill: impl FnOnce(u64) -> Box<dyn std::any::Any>) -> f64 {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let started = Instant::now();
    let store = fill(entries);
    let elapsed = started.elapsed();
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let per_entry = bytes as f64 / entries as f64;
    println!(
        "{name:<28} {entries:>9} entries  {:>8.1} MiB  {per_entry:>6.1} B/entry  {:>6.0} ns/insert",
        bytes as f64 / (1 << 20) as f64,
        elapsed.as_nanos() as f64 / entries as f64
    );
    drop(store);
    per_entry
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let entries = if quick { 100_000 } else { 1_000_000 };
    let until = x402_store::unix_now() + 3600;
    let ours = measure("MemoryReplayStore", entries, |n| {
        let store = MemoryReplayStore::default();
        for i in 0..n {
            assert!(store.reserve(key(i), until));
        }
        Box::new(store)
    });
    measure("moka sync::Cache (before)", entries, |n| {
        let cache: moka::sync::Cache<ReplayKey, u64> = moka::sync::Cache::builder().time_to_live(Duration::from_secs(3600)).build();
        for i in 0..n {
            cache.entry(key(i)).or_insert_with(|| until);
        }
        cache.run_pending_tasks();
        Box::new(cache)
    });
    println!("target ≤ 128 B/entry: {}", if ours <= 128.0 { "MET" } else { "NOT MET" });
}
