//! The payment ledger in Redis (or a compatible server such as Valkey), shared by every
//! replica of a gateway fleet.
//!
//! Each payment is one hash, `{prefix}r:{receipt id}`, holding who holds it (a token), its
//! payer, route and value and whether it still counts (`c`). Once it no longer counts it
//! expires at the authorization's `validBefore`; while it counts it is also in a sorted set by
//! `validBefore` + a day, and a payment no replica resolved by then (its replica lost, its
//! journal never settled) stops counting, so nothing holds credit forever. Unsettled value
//! per payer, per route and in total lives in one hash, payer blocks in another, the loss
//! budget in a third. Every request-path operation is one Lua
//! script, so it is one atomic round trip; concurrent payments share the one multiplexed
//! connection (pipelined). All keys share the hash tag `{prefix}`, so they land in one slot
//! and the scripts are Cluster-safe (the client talks to one primary, found through Sentinels
//! when `store.url` names them, and found again after a failover: see [`endpoint`]; Cluster
//! redirections are not followed).
//!
//! Fails closed: a store that errs or is slower than the timeout refuses the payment as
//! [`StoreUnavailable`]. Nothing falls back to a local store, which would reopen
//! cross-replica replay. A store that lost its data (restarted empty, failed over to a
//! replica that had not caught up, flushed) is noticed by its missing generation: every
//! replica refuses payments, restores its journal into it, and payments resume after a short
//! quarantine that gives every running replica the time to do the same.

mod background;
mod channels;
mod endpoint;
mod scripts;

use crate::channels::ChannelRecord;
use crate::exposure::{ExposureLimits, ExposureSnapshot, PayerBlock};
use crate::ledger::{Counted, Hold, LedgerRefusal, PaymentLedger, Restored, StoreUnavailable};
use crate::replay::{MemoryReplayStore, ReplayStore};
use async_trait::async_trait;
use background::LedgerUpdate;
use endpoint::Primary;
pub use channels::{RedisChannelStore, RedisClaimerLease};
pub use endpoint::RedisEndpoint;
use redis::Value;
use scripts::{hold_answer, limit_arg, HoldAnswer, Keys, Scripts};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Where the store is and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    /// This replica's public listener as the others reach it: where receipt look-ups for the
    /// payments it holds are forwarded.
    pub advertise_url: Option<String>,
    /// Replicas of the store that must have each payment's reservation before the payment is
    /// accepted (`WAIT`, within `timeout`): a failover then cannot forget it. 0: none.
    pub wait_for_replicas: u32,
}

/// Why payments are refused while this replica's journal is restored into the store.
const RESTORING: &str = "the shared store lost its data; this replica is restoring its journal into it";

/// This replica's journal, read whenever the store must be given back what this replica
/// owes it: at start, and again if the store loses its data or the primary changes.
pub struct JournalSource {
    /// The payments still inside their validity, and every unsettled one.
    pub payments: Box<dyn Fn() -> Result<Vec<Restored>, String> + Send + Sync>,
    /// The `batch-settlement` channels this replica charged, as it last journaled them.
    pub channels: Box<dyn Fn() -> Result<Vec<ChannelRecord>, String> + Send + Sync>,
}

impl JournalSource {
    /// A journal of payments and no channels.
    pub fn payments(payments: impl Fn() -> Result<Vec<Restored>, String> + Send + Sync + 'static) -> Self {
        Self { payments: Box::new(payments), channels: Box::new(|| Ok(Vec::new())) }
    }
}

/// A reservation stays this long after `validBefore` while its payment still counts, so the
/// settler can resolve it (it gives up on a payment ten minutes after `validBefore`).
const COUNTED_GRACE_MS: u64 = 86_400_000;
/// And this long once it no longer counts: clocks of replicas and payers differ a little.
const SKEW_GRACE_MS: u64 = 120_000;
/// After the store lost its data, how long no replica takes payments: every running replica
/// notices within a second (its watch) and restores its journal in that time.
const RECOVERY_QUARANTINE_MS: u64 = 5_000;

/// Whether the store answered its last call, and counts for metrics.
#[derive(Default)]
pub(crate) struct StoreHealth {
    down: AtomicBool,
    last_error: Mutex<String>,
    errors: AtomicU64,
    /// Updates sent to the background and not yet applied.
    pending: AtomicU64,
}

impl StoreHealth {
    fn failed(&self, error: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(error, "shared payment store unavailable: priced routes answer 503 until it is back");
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            error.clone_into(&mut last);
        }
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::warn!("shared payment store is back: priced routes take payments again");
        }
    }

    /// Calls that failed or timed out since the process started.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreUnavailable {
    StoreUnavailable(error.to_string())
}

/// A store call that did not answer.
enum CallError {
    /// No answer in time: the command may still run in Redis.
    Late(StoreUnavailable),
    Failed(StoreUnavailable),
}

impl From<CallError> for StoreUnavailable {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Late(error) | CallError::Failed(error) => error,
        }
    }
}

/// A hold, owned, to run on the store's runtime.
struct OwnedHold {
    receipt_id: String,
    valid_before: u64,
    payer: String,
    route: String,
    usd_micros: u64,
    balance: Option<u64>,
    now: u64,
    token: u64,
}

impl OwnedHold {
    fn new(hold: &Hold<'_>) -> Self {
        Self {
            receipt_id: hold.receipt_id.to_owned(),
            valid_before: hold.valid_before,
            payer: hold.payer.to_owned(),
            route: hold.route.to_owned(),
            usd_micros: hold.usd_micros,
            balance: hold.balance,
            now: hold.now,
            token: hold.token,
        }
    }
}

/// What the ledger's handle and its background tasks share.
struct Inner {
    primary: Primary,
    channel_scripts: channels::ChannelScripts,
    timeout: Duration,
    /// Replicas that must have each hold before its payment is accepted (`WAIT`); 0: none.
    replica_acks: u32,
    keys: Keys,
    scripts: Scripts,
    limits: Mutex<ExposureLimits>,
    /// This replica's public listener, recorded with each payment it holds ('' for none).
    owner: String,
    /// Nonces this replica holds or charged: a repeat is refused without a round trip.
    seen: MemoryReplayStore,
    health: Arc<StoreHealth>,
    /// The store generation this replica's journal is restored into; empty while it must be
    /// restored again (the store lost its data), when every hold is refused.
    generation: Mutex<String>,
    /// Wakes the watch at once: the store lost its data, or the primary moved.
    watch_now: Notify,
    /// A call found the primary demoted (a failover): the watch connects to the new one.
    primary_moved: AtomicBool,
    journal: JournalSource,
    /// Payer blocks already sent, so each journal sync sends only what changed.
    sent_blocks: Mutex<HashMap<String, (u64, String)>>,
    updates: mpsc::UnboundedSender<LedgerUpdate>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn limits(&self) -> ExposureLimits {
        *lock(&self.limits)
    }

    fn generation(&self) -> String {
        lock(&self.generation).clone()
    }

    fn generation_lost(&self) -> bool {
        lock(&self.generation).is_empty()
    }

    /// The store no longer holds this replica's generation: it lost its data.
    fn lose_generation(&self) {
        if self.forget_generation() {
            tracing::error!("the shared store lost its data (restarted empty, failed over or flushed): no payment is taken until this replica's journal is restored into it");
        }
    }

    /// Refuses holds until the journal is restored into the store again (the watch does it);
    /// false if that was already due.
    fn forget_generation(&self) -> bool {
        let forgot = {
            let mut generation = lock(&self.generation);
            let forgot = !generation.is_empty();
            generation.clear();
            forgot
        };
        if forgot {
            lock(&self.sent_blocks).clear();
        }
        self.watch_now.notify_one();
        forgot
    }

    fn enqueue(&self, update: LedgerUpdate) {
        self.health.pending.fetch_add(1, Ordering::Relaxed);
        if self.updates.send(update).is_err() {
            self.health.pending.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("the shared store's updater has stopped; an update was not recorded there");
        }
    }

    /// Runs one call with the timeout; records the outcome for readiness.
    async fn call<T>(&self, call: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, CallError> {
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            // Sent, and then no answer: the command may have run in Redis.
            Ok(Err(error)) if error.is_timeout() || error.is_connection_dropped() => Err(CallError::Late(unavailable(error))),
            Ok(Err(error)) => {
                if endpoint::is_demoted(&error) {
                    self.primary_moved.store(true, Ordering::Relaxed);
                    self.watch_now.notify_one();
                }
                Err(CallError::Failed(unavailable(error)))
            }
            Err(_) => Err(CallError::Late(unavailable(format!("no answer within {} ms", self.timeout.as_millis())))),
        };
        match &outcome {
            Ok(_) => self.health.answered(),
            Err(CallError::Late(error) | CallError::Failed(error)) => self.health.failed(&error.0),
        }
        outcome
    }

    async fn hold(&self, hold: OwnedHold) -> Result<(), LedgerRefusal> {
        let generation = self.generation();
        if generation.is_empty() {
            return Err(unavailable(RESTORING).into());
        }
        let limits = self.limits();
        let expire_at_ms = hold.valid_before.saturating_mul(1000).saturating_add(COUNTED_GRACE_MS);
        let mut invocation = self.scripts.hold.key(self.keys.reservation(&hold.receipt_id));
        invocation
            .key(self.keys.exposure())
            .key(self.keys.blocks())
            .key(self.keys.losses())
            .key(self.keys.generation())
            .arg(hold.token)
            .arg(&hold.payer)
            .arg(&hold.route)
            .arg(hold.usd_micros)
            .arg(limit_arg(hold.balance))
            .arg(limit_arg(limits.per_payer))
            .arg(limit_arg(limits.per_route))
            .arg(limit_arg(limits.total))
            .arg(limit_arg(limits.losses_per_day))
            .arg(hold.now)
            .arg(expire_at_ms)
            .arg(&self.owner)
            .arg(&generation)
            .arg(crate::unix_now_ms());
        let reply = match self.run_hold(&invocation).await {
            Ok((_, acks)) if acks < i64::from(self.replica_acks) => {
                // Held on the primary only: a failover now would forget it. Undone, refused.
                self.enqueue(LedgerUpdate::Release { receipt_id: hold.receipt_id, token: hold.token, valid_before: hold.valid_before, keep: false });
                let error = format!("{acks} of the {} store replicas store.wait_for_replicas asks for confirmed the payment in time", self.replica_acks);
                self.health.failed(&error);
                return Err(unavailable(error).into());
            }
            Ok((reply, _)) => reply,
            Err(CallError::Late(error)) => {
                // The script may still run: undo it if it did, by its token.
                self.enqueue(LedgerUpdate::Release { receipt_id: hold.receipt_id, token: hold.token, valid_before: hold.valid_before, keep: false });
                return Err(error.into());
            }
            Err(CallError::Failed(error)) => return Err(error.into()),
        };
        match hold_answer(&reply) {
            HoldAnswer::Held => Ok(()),
            HoldAnswer::Refused(refusal) => Err(refusal),
            HoldAnswer::StoreLost => {
                self.lose_generation();
                Err(unavailable(RESTORING).into())
            }
            HoldAnswer::Quarantined { until_ms } => {
                let seconds = until_ms.saturating_sub(crate::unix_now_ms()).div_ceil(1000);
                Err(unavailable(format!("the shared store lost its data; payments resume in {seconds} s, once every replica has restored its journal into it")).into())
            }
        }
    }

    /// Runs the HOLD script, followed on the same socket by a `WAIT` for `replica_acks`
    /// replicas when asked: the script's answer, and how many replicas have it.
    async fn run_hold(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<(Vec<Value>, i64), CallError> {
        if self.replica_acks == 0 {
            let mut connection = self.primary.connection();
            return self.call(invocation.invoke_async(&mut connection)).await.map(|reply| (reply, 0));
        }
        let mut connection = self.primary.waiting_connection();
        // Half the call's time: the replicas' count comes back before the call times out.
        let wait_ms = u64::try_from(self.timeout.as_millis() / 2).unwrap_or(u64::MAX).max(1);
        let mut pipeline = redis::pipe();
        pipeline.invoke_script(invocation).cmd("WAIT").arg(self.replica_acks).arg(wait_ms);
        let query = async move {
            match pipeline.query_async::<(Vec<Value>, i64)>(&mut connection).await {
                // A pipeline does not load the script by itself (a new or restarted primary).
                Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    invocation.load_async(&mut connection).await?;
                    pipeline.query_async(&mut connection).await
                }
                outcome => outcome,
            }
        };
        self.call(query).await
    }

    async fn release(&self, receipt_id: String, token: u64, valid_before: u64, keep: bool) -> Result<bool, StoreUnavailable> {
        let mut connection = self.primary.connection();
        let mut invocation = self.scripts.release.key(self.keys.reservation(&receipt_id));
        invocation.key(self.keys.exposure()).arg(token).arg(u8::from(keep)).arg(valid_before.saturating_mul(1000).saturating_add(SKEW_GRACE_MS));
        match self.call(invocation.invoke_async::<i64>(&mut connection)).await {
            Ok(released) => Ok(released == 1),
            Err(error) => {
                // Undone later, by its token: an authorization nobody was charged for must not
                // stay counted (or, `keep` aside, spent).
                self.enqueue(LedgerUpdate::Release { receipt_id, token, valid_before, keep });
                Err(error.into())
            }
        }
    }

    /// Restores the journal's payments (only what the store does not know is added).
    async fn restore_payments(&self, payments: &[Restored]) -> Result<(), StoreUnavailable> {
        let mut connection = self.primary.connection();
        let patience = self.timeout * 20 + Duration::from_secs(5);
        let load = self.scripts.restore.load_async(&mut connection);
        let hash = tokio::time::timeout(patience, load).await.map_err(unavailable)?.map_err(unavailable)?;
        for chunk in payments.chunks(1000) {
            let mut pipeline = redis::pipe();
            for payment in chunk {
                self.seen.reserve(payment.key, payment.valid_before);
                let grace = if payment.unsettled { COUNTED_GRACE_MS } else { SKEW_GRACE_MS };
                pipeline
                    .cmd("EVALSHA")
                    .arg(&hash)
                    .arg(2)
                    .arg(self.keys.reservation(&payment.receipt_id))
                    .arg(self.keys.exposure())
                    .arg(0)
                    .arg(&payment.payer)
                    .arg(&payment.route)
                    .arg(payment.usd_micros)
                    .arg(u8::from(payment.unsettled))
                    .arg(payment.valid_before.saturating_mul(1000).saturating_add(grace))
                    .arg(&self.owner)
                    .ignore();
            }
            let run = pipeline.query_async::<()>(&mut connection);
            tokio::time::timeout(patience, run).await.map_err(unavailable)?.map_err(unavailable)?;
        }
        Ok(())
    }

    /// Takes the store's generation, creating it (open from `open_at_ms`) if it has none, and
    /// keeping it closed until at least `extend_to_ms`.
    async fn adopt(&self, open_at_ms: u64, extend_to_ms: u64) -> Result<String, StoreUnavailable> {
        let new_id = format!("{:016x}", random_u64());
        let mut connection = self.primary.connection();
        let mut invocation = self.scripts.adopt.key(self.keys.generation());
        invocation.arg(new_id).arg(open_at_ms).arg(extend_to_ms);
        Ok(self.call(invocation.invoke_async::<String>(&mut connection)).await?)
    }

    /// Restores this replica's journal into the store, then takes its generation.
    async fn restore_journal(&self) -> Result<String, StoreUnavailable> {
        let unreadable = |error: String| unavailable(format!("cannot read the journal: {error}"));
        let payments = (self.journal.payments)().map_err(unreadable)?;
        self.restore_payments(&payments).await?;
        let channels = (self.journal.channels)().map_err(unreadable)?;
        let channel_count = channels.len();
        channels::restore_records(self, channels).await?;
        let generation = self.adopt(0, 0).await?;
        tracing::info!(payments = payments.len(), channels = channel_count, generation, "journal restored into the shared store");
        Ok(generation)
    }

    /// After the store lost its data: closes it to payments for a moment (every replica takes
    /// that time to restore its journal), restores this one's, and takes the new generation.
    async fn recover(&self) -> Result<(), StoreUnavailable> {
        let quarantine = crate::unix_now_ms() + RECOVERY_QUARANTINE_MS;
        self.adopt(quarantine, quarantine).await?;
        let generation = self.restore_journal().await?;
        *lock(&self.generation) = generation;
        Ok(())
    }
}

/// The ledger every replica shares through Redis.
pub struct RedisLedger {
    inner: Arc<Inner>,
    /// Runs the connection, every store call and the background tasks; shut down with the
    /// ledger.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RedisLedger {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl RedisLedger {
    /// Connects (a store that is down at start is reported at once), restores `journal`'s
    /// payments into it and starts the background tasks.
    pub fn connect(settings: &RedisSettings, limits: ExposureLimits, journal: JournalSource) -> Result<Self, StoreUnavailable> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shared-store")
            .enable_all()
            .build()
            .map_err(unavailable)?;
        let endpoint = RedisEndpoint::parse(&settings.url).map_err(|error| unavailable(format!("store.url: {error}")))?;
        let (updates, queue) = mpsc::unbounded_channel();
        let inner = runtime.block_on(async {
            let primary = Primary::connect(endpoint, settings.timeout, settings.wait_for_replicas > 0).await.map_err(unavailable)?;
            let inner = Arc::new(Inner {
                primary,
                channel_scripts: channels::ChannelScripts::new(),
                timeout: settings.timeout,
                replica_acks: settings.wait_for_replicas,
                keys: Keys::new(&settings.key_prefix),
                scripts: Scripts::new(),
                limits: Mutex::new(limits),
                owner: settings.advertise_url.clone().unwrap_or_default(),
                seen: MemoryReplayStore::default(),
                health: Arc::default(),
                generation: Mutex::default(),
                watch_now: Notify::new(),
                primary_moved: AtomicBool::new(false),
                journal,
                sent_blocks: Mutex::default(),
                updates,
            });
            let generation = inner.restore_journal().await?;
            *lock(&inner.generation) = generation;
            Ok::<_, StoreUnavailable>(inner)
        })?;
        runtime.spawn(background::apply_updates(inner.clone(), queue));
        runtime.spawn(background::watch(inner.clone()));
        Ok(Self { inner, runtime: Some(runtime) })
    }

    /// The fleet's `batch-settlement` channel records, on this ledger's connection.
    pub fn channel_store(&self) -> Result<RedisChannelStore, StoreUnavailable> {
        let runtime = self.runtime.as_ref().ok_or_else(|| unavailable("the shared store is shut down"))?;
        Ok(RedisChannelStore::new(self.inner.clone(), runtime.handle().clone()))
    }

    /// The lease that makes one replica of the fleet the channels' claimer.
    pub fn claimer_lease(&self) -> Result<RedisClaimerLease, StoreUnavailable> {
        Ok(RedisClaimerLease { store: self.channel_store()?, holder: random_u64() })
    }

    /// Runs `work` on the store's runtime, where the connection's own tasks live (a
    /// reconnection started from a request's runtime would otherwise tie them to it).
    async fn on_store<T, F>(&self, work: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreUnavailable>
    where
        F: std::future::Future<Output = Result<T, StoreUnavailable>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(runtime) = self.runtime.as_ref() else { return Err(unavailable("the shared store is shut down")) };
        runtime.spawn(work(self.inner.clone())).await.map_err(unavailable)?
    }
}

/// A value nobody else draws: the process's random hasher keys, a counter and the clock.
fn random_u64() -> u64 {
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWN.fetch_add(1, Ordering::Relaxed));
    hasher.write_u64(crate::unix_now_ms());
    hasher.finish()
}

/// Lets `payer` pay again across the fleet, from a process that runs no ledger (the CLI):
/// removes its block from the shared store. True if it was blocked there.
pub fn unblock_in_store(settings: &RedisSettings, payer: &str) -> Result<bool, StoreUnavailable> {
    let endpoint = RedisEndpoint::parse(&settings.url).map_err(|error| unavailable(format!("store.url: {error}")))?;
    let client = endpoint.client_now().map_err(unavailable)?;
    let patience = settings.timeout.max(Duration::from_secs(2));
    let mut connection = client.get_connection_with_timeout(patience).map_err(unavailable)?;
    connection.set_read_timeout(Some(patience)).map_err(unavailable)?;
    let removed: i64 = redis::cmd("HDEL").arg(Keys::new(&settings.key_prefix).blocks()).arg(payer).query(&mut connection).map_err(unavailable)?;
    Ok(removed > 0)
}


#[async_trait]
impl PaymentLedger for RedisLedger {
    /// Blocks and the loss budget are checked inside `hold`, in the same round trip.
    async fn precheck(&self, _payer: &str, _now: u64) -> Result<(), LedgerRefusal> {
        Ok(())
    }

    async fn hold(&self, hold: &Hold<'_>) -> Result<(), LedgerRefusal> {
        if !self.inner.seen.reserve(hold.key, hold.valid_before) {
            return Err(LedgerRefusal::Replayed);
        }
        let owned = OwnedHold::new(hold);
        let outcome = match self.on_store(|inner| async move { Ok(inner.hold(owned).await) }).await {
            Ok(outcome) => outcome,
            Err(error) => Err(error.into()),
        };
        if outcome.is_err() {
            // Refused here or held by another replica (which may still release it): this
            // replica remembers only what it holds.
            self.inner.seen.release(&hold.key);
        }
        outcome
    }

    async fn release(&self, hold: &Hold<'_>, keep_reservation: bool) {
        let (receipt_id, token, valid_before) = (hold.receipt_id.to_owned(), hold.token, hold.valid_before);
        match self.on_store(move |inner| async move { inner.release(receipt_id, token, valid_before, keep_reservation).await }).await {
            // True: this hold was released; false: it was not ours (or long gone).
            Ok(true) if !keep_reservation => self.inner.seen.release(&hold.key),
            Ok(_) => {}
            Err(error) => tracing::warn!(receipt_id = hold.receipt_id, %error, "a payment's release waits for the shared store"),
        }
    }

    async fn restore(&self, payments: &[Restored]) -> Result<(), StoreUnavailable> {
        let payments = payments.to_vec();
        self.on_store(|inner| async move { inner.restore_payments(&payments).await }).await
    }

    fn resolved(&self, counted: &Counted<'_>) {
        let expire_at_ms = counted.valid_before.saturating_mul(1000).saturating_add(SKEW_GRACE_MS);
        self.inner.enqueue(LedgerUpdate::Resolved { receipt_id: counted.receipt_id.to_owned(), expire_at_ms });
    }

    fn record_loss(&self, usd_micros: u64, now: u64) {
        let per_day = self.inner.limits().losses_per_day;
        self.inner.enqueue(LedgerUpdate::Loss { usd_micros, forgive: false, now, per_day });
    }

    fn forgive_loss(&self, usd_micros: u64) {
        let per_day = self.inner.limits().losses_per_day;
        self.inner.enqueue(LedgerUpdate::Loss { usd_micros, forgive: true, now: crate::unix_now(), per_day });
    }

    fn block(&self, payer: &str, reason: &str, until: u64) {
        lock(&self.inner.sent_blocks).insert(payer.to_owned(), (until, reason.to_owned()));
        self.inner.enqueue(LedgerUpdate::Block { payer: payer.to_owned(), reason: reason.to_owned(), until });
    }

    fn merge_blocks(&self, blocks: Vec<PayerBlock>) {
        let mut sent = lock(&self.inner.sent_blocks);
        for block in blocks {
            let entry = (block.until, block.reason);
            if sent.get(&block.payer) != Some(&entry) {
                sent.insert(block.payer.clone(), entry.clone());
                self.inner.enqueue(LedgerUpdate::Block { payer: block.payer, reason: entry.1, until: entry.0 });
            }
        }
    }

    fn set_limits(&self, limits: ExposureLimits) {
        *lock(&self.inner.limits) = limits;
    }

    async fn unblock(&self, payer: &str) -> Result<bool, StoreUnavailable> {
        lock(&self.inner.sent_blocks).remove(payer);
        let payer = payer.to_owned();
        self.on_store(|inner| async move {
            let mut connection = inner.primary.connection();
            let removed: i64 = inner.call(redis::cmd("HDEL").arg(inner.keys.blocks()).arg(&payer).query_async(&mut connection)).await?;
            Ok(removed > 0)
        })
        .await
    }

    async fn reset_losses(&self, now: u64) -> Result<u64, StoreUnavailable> {
        self.on_store(move |inner| async move {
            let mut connection = inner.primary.connection();
            let mut invocation = inner.scripts.losses.key(inner.keys.losses());
            invocation.arg(limit_arg(inner.limits().losses_per_day)).arg(now).arg(0).arg(0).arg("reset");
            let level: i64 = inner.call(invocation.invoke_async(&mut connection)).await?;
            Ok(u64::try_from(level).unwrap_or(0))
        })
        .await
    }

    async fn snapshot(&self, top: usize, now: u64) -> Result<ExposureSnapshot, StoreUnavailable> {
        self.on_store(move |inner| async move {
            let mut connection = inner.primary.connection();
            let mut pipeline = redis::pipe();
            pipeline.cmd("HGETALL").arg(inner.keys.exposure()).cmd("HGETALL").arg(inner.keys.blocks()).cmd("HGETALL").arg(inner.keys.losses());
            type Maps = (HashMap<String, String>, HashMap<String, String>, HashMap<String, String>);
            let (exposure, blocks, losses): Maps = inner.call(pipeline.query_async(&mut connection)).await?;
            Ok(snapshot_of(inner.limits(), &exposure, &blocks, &losses, top, now))
        })
        .await
    }

    async fn receipt_owner(&self, receipt_id: &str) -> Result<Option<String>, StoreUnavailable> {
        let receipt_id = receipt_id.to_owned();
        self.on_store(|inner| async move {
            let mut connection = inner.primary.connection();
            let owner: Option<String> = inner.call(redis::cmd("HGET").arg(inner.keys.reservation(&receipt_id)).arg("o").query_async(&mut connection)).await?;
            Ok(owner.filter(|owner| !owner.is_empty() && *owner != inner.owner))
        })
        .await
    }

    async fn flush(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while self.inner.health.pending.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pending = self.inner.health.pending.load(Ordering::Relaxed), "updates not yet recorded in the shared store");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn unavailable(&self) -> Option<String> {
        if self.inner.generation_lost() {
            return Some(RESTORING.into());
        }
        self.inner.health.down.load(Ordering::Relaxed).then(|| lock(&self.inner.health.last_error).clone())
    }

    fn store_errors(&self) -> u64 {
        self.inner.health.errors()
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// The store's hashes as an operator's snapshot.
fn snapshot_of(
    limits: ExposureLimits,
    exposure: &HashMap<String, String>,
    blocks: &HashMap<String, String>,
    losses: &HashMap<String, String>,
    top: usize,
    now: u64,
) -> ExposureSnapshot {
    let value = |v: &String| v.parse::<u64>().unwrap_or(0);
    let with_prefix = |prefix: &str| -> Vec<(String, u64)> {
        exposure.iter().filter_map(|(field, v)| Some((field.strip_prefix(prefix)?.to_owned(), value(v)))).collect()
    };
    let mut payers = with_prefix("p:");
    let payer_count = payers.len();
    payers.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    payers.truncate(top);
    let mut routes = with_prefix("r:");
    routes.sort_unstable();
    let blocked = blocks
        .iter()
        .filter_map(|(payer, entry)| {
            let (until, reason) = entry.split_once('|')?;
            let until = until.parse().ok()?;
            (until > now).then(|| PayerBlock { payer: payer.clone(), until, reason: reason.to_owned() })
        })
        .collect();
    let field = |name: &str| losses.get(name).map_or(0, value);
    ExposureSnapshot {
        limits,
        total: exposure.get("t").map_or(0, value),
        payer_count,
        routes,
        payers,
        blocked,
        losses: field("level"),
        losses_spent: field("spent") == 1,
        lost_total: field("lost"),
    }
}
