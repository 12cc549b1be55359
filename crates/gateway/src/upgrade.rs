//! The graceful-upgrade window: while two processes share one journal, each one's replay
//! store misses what the other charged since it started, so a payment charged by one could
//! be served again by the other (the journal refuses it only after the upstream answered).
//! While the window is open, every nonce a replay store reserves fresh is also looked up in
//! the journal, one index seek, before the upstream is called.
//!
//! Outside upgrades the look-up is skipped: it costs about 15 µs on a journal of 200,000
//! payments (mostly SQLite page reads), several percent of a paid request's CPU.
//!
//! - The new process (`run --upgrade`) opens it at start and, once the old process has let
//!   go of the journal (the settler lock), closes it when the old process's payments have
//!   expired: at the latest `validBefore` then journaled, and no earlier than the longest
//!   quote the serving config gives from then.
//! - The old process opens it on SIGQUIT, when the new one starts serving, and keeps it open
//!   until it exits.

use std::sync::atomic::{AtomicU64, Ordering};

/// When the window closes, in Unix seconds: 0 closed, `u64::MAX` open until told otherwise.
#[derive(Debug, Default)]
pub struct UpgradeWindow {
    closes_at: AtomicU64,
}

impl UpgradeWindow {
    /// Open until [`UpgradeWindow::close_at`].
    pub fn open(&self) {
        self.closes_at.store(u64::MAX, Ordering::Relaxed);
    }

    /// Closes the window at `at` (Unix seconds).
    pub fn close_at(&self, at: u64) {
        self.closes_at.store(at, Ordering::Relaxed);
    }

    pub fn is_open(&self, now: u64) -> bool {
        now < self.closes_at.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_open_from_open_until_its_close_time() {
        let window = UpgradeWindow::default();
        assert!(!window.is_open(1_000), "closed outside upgrades");
        window.open();
        assert!(window.is_open(u64::MAX - 1), "open until told when it closes");
        window.close_at(1_300);
        assert!(window.is_open(1_299));
        assert!(!window.is_open(1_300));
    }
}
