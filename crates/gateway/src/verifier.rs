//! Signature recovery off the Pingora workers.
//!
//! Recovering a payment's signer costs ~40 µs of CPU, ten times what the rest of its checks
//! cost, and a flood of well-formed payments with bad signatures costs the sender nothing.
//! Run inline, that work would sit on the event loop that also serves every free route and
//! every other payment. Here it runs on a few dedicated threads fed by a bounded queue: when
//! the queue is full the request is answered at once (503, retry) instead of waiting, so
//! the workers keep their pace whatever the flood.

use crate::payment::{PaymentCheck, PaymentRejection, SignedPayment};
use prometheus::IntGauge;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Where signature recovery runs: inline on the caller's thread, or on a pool.
pub struct SignatureVerifier {
    queue: Option<SyncSender<Job>>,
    queue_depth: usize,
    /// Payments queued and not yet taken by a thread: how close the next 503 is.
    waiting: IntGauge,
}

impl SignatureVerifier {
    /// `threads == 0` recovers inline on the calling thread; otherwise `threads` threads
    /// share a queue of `queue_depth` waiting payments, counted in `waiting`.
    pub fn start(threads: usize, queue_depth: usize, waiting: IntGauge) -> std::io::Result<Self> {
        if threads == 0 {
            return Ok(Self { queue: None, queue_depth, waiting });
        }
        let (queue, jobs) = mpsc::sync_channel::<Job>(queue_depth);
        let jobs = Arc::new(Mutex::new(jobs));
        for index in 0..threads {
            let (jobs, waiting) = (Arc::clone(&jobs), waiting.clone());
            std::thread::Builder::new().name(format!("x402-verify-{index}")).spawn(move || run_until_closed(&jobs, &waiting))?;
        }
        Ok(Self { queue: Some(queue), queue_depth, waiting })
    }

    /// Recovers the payment's signer; [`PaymentRejection::AtCapacity`] when the queue is full.
    pub async fn recover_signer(&self, check: PaymentCheck) -> Result<SignedPayment, PaymentRejection> {
        let Some(queue) = &self.queue else { return check.recover_signer() };
        let (reply_to, reply) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The request may have gone away meanwhile; nobody is left to tell.
            let _ = reply_to.send(check.recover_signer());
        });
        self.try_run(queue, job)?;
        reply.await.unwrap_or(Err(PaymentRejection::AtCapacity { queue_depth: self.queue_depth }))
    }

    fn try_run(&self, queue: &SyncSender<Job>, job: Job) -> Result<(), PaymentRejection> {
        // Counted before it is sent, so the thread that takes it can never count it out
        // first; a refused one is counted for the instant until its refusal.
        self.waiting.inc();
        match queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.waiting.dec();
                Err(PaymentRejection::AtCapacity { queue_depth: self.queue_depth })
            }
            // Only if every thread died, which a bug would take: run it here rather than
            // refuse every payment from now on.
            Err(TrySendError::Disconnected(job)) => {
                self.waiting.dec();
                job();
                Ok(())
            }
        }
    }
}

fn run_until_closed(jobs: &Mutex<Receiver<Job>>, waiting: &IntGauge) {
    loop {
        // One thread waits in `recv` holding the lock and the others wait for the lock, so
        // each job goes to exactly one thread.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        waiting.dec();
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_is_refused_at_once_and_frees_up_again() {
        let waiting = IntGauge::new("waiting", "test").unwrap();
        let verifier = SignatureVerifier::start(1, 1, waiting.clone()).unwrap();
        let queue = verifier.queue.clone().unwrap();
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        let blocker: Job = Box::new(move || {
            started_tx.send(()).unwrap();
            release.recv().unwrap();
        });
        verifier.try_run(&queue, blocker).unwrap();
        started.recv().unwrap();
        let (ran_tx, ran) = mpsc::channel();
        let queued: Job = Box::new(move || ran_tx.send(()).unwrap());
        verifier.try_run(&queue, queued).unwrap();
        assert_eq!(waiting.get(), 1, "the queued job waits while the blocker runs");
        let refused = verifier.try_run(&queue, Box::new(|| {}));
        assert!(matches!(refused, Err(PaymentRejection::AtCapacity { queue_depth: 1 })));
        assert_eq!(waiting.get(), 1, "a refused job is not counted");
        release_tx.send(()).unwrap();
        ran.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(waiting.get(), 0);
    }
}
