//! Draining requests at shutdown and at a graceful upgrade, so that a payment the gateway
//! charges always leaves with its response.
//!
//! Why this exists: once Pingora stops accepting, it sleeps a fixed grace period and then
//! drops its runtimes, and every request future still running with them, wherever it is.
//! A paid request dropped while its journal write was committing (the write goes on, on
//! the journal's own thread) or after it, before its response went out, was charged and
//! never answered; its payer's retry was then refused as a replay. With a grace period of
//! 0 any request in flight when the listener closed was cut that way.
//!
//! Here every request holds an [`InFlightRequest`] from when its header is read until it is
//! finished. When Pingora has stopped accepting, [`Drain::settle`] waits for them, up to
//! the grace period, and then closes the drain: requests read after that are closed unread
//! (nothing reserved, so the same payment can be sent again), no journal write starts, and
//! the requests already past that point get `graceful_shutdown_timeout` to finish. The
//! process then goes on to drain its settler and exits, without waiting out the rest of
//! Pingora's own, longer, grace period.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often [`Drain::settle`] looks at the count of requests in flight.
const POLL: Duration = Duration::from_millis(10);

/// The requests in flight, and whether new ones and new charges are still taken.
#[derive(Debug, Default)]
pub struct Drain {
    in_flight: AtomicUsize,
    /// Set by [`Drain::settle`]: no request is taken and no payment charged any more.
    closed: AtomicBool,
    /// A stop was asked for: responses tell clients not to reuse their connection.
    stopping: AtomicBool,
}

/// One request being served; dropped when it is finished (or when its future is dropped).
#[derive(Debug)]
pub struct InFlightRequest {
    drain: Arc<Drain>,
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.drain.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How [`Drain::settle`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Requests still in flight when the process stopped waiting (they are cut).
    pub cut: usize,
}

impl Drain {
    /// Counts a request in, or `None` when the drain is closed and it must not be served.
    pub fn enter(self: &Arc<Self>) -> Option<InFlightRequest> {
        // Counted before `closed` is read, and `settle` sets `closed` before it counts: a
        // request either sees the drain closed or is counted and waited for (SeqCst).
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let request = InFlightRequest { drain: self.clone() };
        (!self.closed.load(Ordering::SeqCst)).then_some(request)
    }

    /// Whether a payment may still be charged: not once the drain is closed, because the
    /// process may then exit before its response is written.
    pub fn may_charge(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }

    /// A stop (or a hand-over to a new process) was asked for.
    pub fn begin(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Called once nothing new is accepted: waits up to `grace` for the requests in flight,
    /// closes the drain, then waits up to `finish` for those still running.
    pub fn settle(&self, grace: Duration, finish: Duration) -> Settled {
        self.begin();
        self.wait_for_none_in_flight(grace);
        self.closed.store(true, Ordering::SeqCst);
        self.wait_for_none_in_flight(finish);
        Settled { cut: self.in_flight() }
    }

    fn wait_for_none_in_flight(&self, at_most: Duration) {
        let deadline = Instant::now() + at_most;
        while self.in_flight() > 0 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_waits_for_requests_in_flight_then_refuses_new_ones_and_charges() {
        let drain = Arc::new(Drain::default());
        let request = drain.enter().expect("open before settling");
        assert!(drain.may_charge());
        let settling = {
            let drain = drain.clone();
            std::thread::spawn(move || drain.settle(Duration::from_secs(30), Duration::from_secs(30)))
        };
        // A request in flight holds the drain open and may still be charged.
        while !drain.is_stopping() {
            std::thread::yield_now();
        }
        assert!(!settling.is_finished());
        drop(request);
        assert_eq!(settling.join().expect("settle"), Settled { cut: 0 });
        assert!(drain.enter().is_none(), "closed: a request read now is not served");
        assert!(!drain.may_charge());
        assert_eq!(drain.in_flight(), 0, "a refused request is not counted");
    }

    #[test]
    fn after_the_grace_period_charges_stop_and_what_is_left_is_reported_cut() {
        let drain = Arc::new(Drain::default());
        let _stuck = drain.enter().expect("open before settling");
        assert_eq!(drain.settle(Duration::ZERO, Duration::ZERO), Settled { cut: 1 });
        assert!(!drain.may_charge());
    }
}
