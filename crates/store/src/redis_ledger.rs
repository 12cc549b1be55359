//! The payment ledger in Redis (or a compatible server such as Valkey), shared by every
//! replica of a gateway fleet.
//!
//! Each payment is one hash, `{prefix}r:{receipt id}`, holding who holds it (a token), its
//! payer, route and value and whether it still counts (`c`). Once it no longer counts it
//! expires at the authorization's `validBefore`; while it counts it is also in a sorted set by
//! `validBefore` + a day, and a payment no replica resolved by then (its replica lost, its
//! journal never settled) stops counting, so nothing holds credit forever. Unsettled value per payer, per route and in total lives in one hash, payer
//! blocks in another, the loss budget in a third. Every request-path operation is one Lua
//! script, so it is one atomic round trip; concurrent payments share the one multiplexed
//! connection (pipelined). All keys share the hash tag `{prefix}`, so they land in one slot
//! and the scripts work on Redis Cluster too.
//!
//! Fails closed: a store that errs or is slower than the timeout refuses the payment as
//! [`StoreUnavailable`]. Nothing falls back to a local store, which would reopen
//! cross-replica replay.

use crate::exposure::{ExposureLimits, ExposureRefusal, ExposureSnapshot, PayerBlock};
use crate::journal::PaymentRecord;
use crate::ledger::{Hold, LedgerRefusal, PaymentLedger, Restored, StoreUnavailable};
use crate::replay::{MemoryReplayStore, ReplayStore};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where the store is and how long a call may take.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    /// This replica's public listener as the others reach it: where receipt look-ups for the
    /// payments it holds are forwarded.
    pub advertise_url: Option<String>,
}

/// A reservation stays this long after `validBefore` while its payment still counts, so the
/// settler can resolve it (it gives up on a payment ten minutes after `validBefore`).
const COUNTED_GRACE_MS: u64 = 86_400_000;
/// And this long once it no longer counts: clocks of replicas and payers differ a little.
const SKEW_GRACE_MS: u64 = 120_000;

/// Shared helpers of the scripts: exposure counters and the loss bucket (which drains
/// linearly at the daily budget's rate, as [`crate::Exposure`]'s does).
const LUA_PRELUDE: &str = r"
local function count(exposure, key, payer, route, usd, expire_at)
  for _, field in ipairs({'p:' .. payer, 'r:' .. route, 't'}) do redis.call('HINCRBY', exposure, field, usd) end
  redis.call('ZADD', exposure .. ':counted', expire_at, key)
end
local function uncount(exposure, key, payer, route, usd)
  for _, field in ipairs({'p:' .. payer, 'r:' .. route, 't'}) do
    if redis.call('HINCRBY', exposure, field, -usd) <= 0 then redis.call('HDEL', exposure, field) end
  end
  redis.call('ZREM', exposure .. ':counted', key)
end
local function bucket(losses, per_day, now)
  local b = redis.call('HMGET', losses, 'level', 'at', 'carry', 'spent')
  local level, at, carry, spent = tonumber(b[1]) or 0, tonumber(b[2]) or now, tonumber(b[3]) or 0, b[4] == '1'
  local elapsed = math.min(now - at, 86400)
  if elapsed > 0 then
    if per_day < 0 then level = 0 else
      local owed = per_day * elapsed + carry
      carry = owed % 86400
      level = math.max(0, level - math.floor(owed / 86400))
      if level == 0 then carry = 0 end
    end
  end
  if now > at then at = now end
  if per_day >= 0 then
    if level >= per_day then spent = true elseif level <= math.floor(per_day / 2) then spent = false end
  end
  redis.call('HSET', losses, 'level', level, 'at', at, 'carry', carry, 'spent', spent and 1 or 0)
  return level, spent
end
";

/// KEYS: reservation, exposure, blocks, losses. ARGV: token, payer, route, usd, balance,
/// per_payer, per_route, total, per_day (-1: none), now, expire_at_ms, owner ('' for none).
const HOLD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'replayed'} end
local now, usd, per_day = tonumber(ARGV[10]), tonumber(ARGV[4]), tonumber(ARGV[9])
if per_day >= 0 then
  local level, spent = bucket(KEYS[4], per_day, now)
  if spent then return {'loss_budget', level, per_day} end
end
local block = redis.call('HGET', KEYS[3], ARGV[2])
if block then
  local sep = string.find(block, '|', 1, true)
  local untl = tonumber(string.sub(block, 1, sep - 1))
  if untl > now then return {'blocked', untl, string.sub(block, sep + 1)} end
  redis.call('HDEL', KEYS[3], ARGV[2])
end
local c = redis.call('HMGET', KEYS[2], 'p:' .. ARGV[2], 'r:' .. ARGV[3], 't')
local payer, route, total = tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0
local balance = tonumber(ARGV[5])
if balance >= 0 and balance < payer + usd then return {'uncovered', balance, payer} end
for i, pair in ipairs({{payer, 'payer'}, {route, 'route'}, {total, 'total'}}) do
  local limit = tonumber(ARGV[5 + i])
  if limit >= 0 and pair[1] + usd > limit then return {pair[2], pair[1], limit} end
end
count(KEYS[2], KEYS[1], ARGV[2], ARGV[3], usd, ARGV[11])
redis.call('HSET', KEYS[1], 't', ARGV[1], 'p', ARGV[2], 'r', ARGV[3], 'v', usd, 'c', 1, 'o', ARGV[12])
return {'ok'}
";

/// KEYS: reservation, exposure. ARGV: token, keep (1/0), expire_at_ms once it stops counting.
const RELEASE: &str = r"
local h = redis.call('HMGET', KEYS[1], 't', 'p', 'r', 'v', 'c')
if h[1] ~= ARGV[1] then return 0 end
if h[5] == '1' then uncount(KEYS[2], KEYS[1], h[2], h[3], tonumber(h[4])) end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'c', 0)
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// KEYS: reservation, exposure. ARGV: expire_at_ms once it stops counting.
const RESOLVE: &str = r"
local h = redis.call('HMGET', KEYS[1], 'p', 'r', 'v', 'c')
if not h[1] then return 0 end
if h[4] == '1' then
  uncount(KEYS[2], KEYS[1], h[1], h[2], tonumber(h[3]))
  redis.call('HSET', KEYS[1], 'c', 0)
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
";

/// KEYS: reservation, exposure. ARGV: token, payer, route, usd, counts (1/0), expire_at_ms, owner.
/// Idempotent: a restart restores only what the store does not already know.
const RESTORE: &str = r"
local c = redis.call('HGET', KEYS[1], 'c')
if not c then
  redis.call('HSET', KEYS[1], 't', ARGV[1], 'p', ARGV[2], 'r', ARGV[3], 'v', ARGV[4], 'c', ARGV[5], 'o', ARGV[7])
  if ARGV[5] == '1' then
    count(KEYS[2], KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[6])
  else
    redis.call('PEXPIREAT', KEYS[1], ARGV[6])
  end
elseif c == '1' and ARGV[5] == '0' then
  uncount(KEYS[2], KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'c', 0)
  redis.call('PEXPIREAT', KEYS[1], ARGV[6])
end
return 1
";

/// KEYS: exposure. ARGV: now_ms. Payments still counted a day past their `validBefore` (their
/// replica never resolved them: lost, and its journal never settled) stop counting.
const SWEEP: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1] .. ':counted', '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, key in ipairs(due) do
  local h = redis.call('HMGET', key, 'p', 'r', 'v', 'c')
  if h[4] == '1' then uncount(KEYS[1], key, h[1], h[2], tonumber(h[3])) else redis.call('ZREM', KEYS[1] .. ':counted', key) end
  redis.call('DEL', key)
end
return #due
";

/// KEYS: losses. ARGV: per_day (-1: none), now, add, forgive. Returns the level before a reset.
const LOSSES: &str = r"
local per_day, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local level = bucket(KEYS[1], per_day, now)
local add, forgive = tonumber(ARGV[3]), tonumber(ARGV[4])
if add > 0 then
  local cap = per_day >= 0 and per_day or level + add
  redis.call('HSET', KEYS[1], 'level', math.min(level + add, cap))
  redis.call('HINCRBY', KEYS[1], 'lost', add)
end
if forgive > 0 then
  redis.call('HSET', KEYS[1], 'level', math.max(0, level - forgive))
  local lost = tonumber(redis.call('HGET', KEYS[1], 'lost')) or 0
  redis.call('HSET', KEYS[1], 'lost', math.max(0, lost - forgive))
end
if ARGV[5] == 'reset' then
  redis.call('HSET', KEYS[1], 'level', 0, 'spent', 0, 'carry', 0, 'at', now)
end
bucket(KEYS[1], per_day, now)
return level
";

/// Scripts the settler sends without waiting: applied in order by a background task.
#[derive(Debug)]
enum LedgerUpdate {
    Resolved { receipt_id: String, expire_at_ms: u64 },
    Loss { usd_micros: u64, forgive: bool, now: u64 },
    Block { payer: String, reason: String, until: u64 },
}

struct Scripts {
    hold: Script,
    release: Script,
    resolve: Script,
    restore: Script,
    losses: Script,
    sweep: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        Self { hold: with_prelude(HOLD), release: with_prelude(RELEASE), resolve: with_prelude(RESOLVE), restore: with_prelude(RESTORE), losses: with_prelude(LOSSES), sweep: with_prelude(SWEEP) }
    }
}

/// Key names, all in one hash slot.
struct Keys {
    tag: String,
}

impl Keys {
    fn reservation(&self, receipt_id: &str) -> String {
        format!("{}r:{receipt_id}", self.tag)
    }
    fn exposure(&self) -> String {
        format!("{}exposure", self.tag)
    }
    fn blocks(&self) -> String {
        format!("{}blocks", self.tag)
    }
    fn losses(&self) -> String {
        format!("{}losses", self.tag)
    }
}

/// Whether the store answered its last call, and counts for metrics.
#[derive(Default)]
pub struct StoreHealth {
    down: AtomicBool,
    last_error: Mutex<String>,
    errors: AtomicU64,
    /// Settler updates sent and not yet applied.
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

/// The ledger every replica shares through Redis.
pub struct RedisLedger {
    connection: ConnectionManager,
    timeout: Duration,
    keys: Keys,
    scripts: Arc<Scripts>,
    limits: Mutex<ExposureLimits>,
    /// This replica's public listener, recorded with each payment it holds ('' for none).
    owner: String,
    /// Nonces this replica holds or charged: a repeat is refused without a round trip.
    seen: MemoryReplayStore,
    health: Arc<StoreHealth>,
    updates: mpsc::UnboundedSender<LedgerUpdate>,
    /// Runs the connection and the background updates; shut down with the ledger.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RedisLedger {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreUnavailable {
    StoreUnavailable(error.to_string())
}

impl RedisLedger {
    /// Connects (waiting at most `timeout` × 20 for the first connection, so a store that is
    /// down at start is reported at once) and starts the background updater.
    pub fn connect(settings: &RedisSettings, limits: ExposureLimits) -> Result<Self, StoreUnavailable> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shared-store")
            .enable_all()
            .build()
            .map_err(unavailable)?;
        let client = redis::Client::open(settings.url.as_str()).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = runtime
            .block_on(async { tokio::time::timeout(settings.timeout * 20 + Duration::from_secs(1), ConnectionManager::new_with_config(client, config)).await })
            .map_err(|_| unavailable(format!("no answer from {} in time", redacted(&settings.url))))?
            .map_err(unavailable)?;
        let keys = Keys { tag: format!("{{{}}}", settings.key_prefix) };
        let scripts = Arc::new(Scripts::new());
        let health = Arc::new(StoreHealth::default());
        let (updates, queue) = mpsc::unbounded_channel();
        let updater = Updater { connection: connection.clone(), keys: Keys { tag: keys.tag.clone() }, scripts: scripts.clone(), health: health.clone(), per_day: limits.losses_per_day };
        runtime.spawn(updater.run(queue));
        let sweeper = Sweeper { scripts: scripts.clone(), exposure: keys.exposure() };
        runtime.spawn(watch_health(connection.clone(), health.clone(), sweeper));
        Ok(Self {
            connection,
            timeout: settings.timeout,
            keys,
            scripts,
            limits: Mutex::new(limits),
            owner: settings.advertise_url.clone().unwrap_or_default(),
            seen: MemoryReplayStore::default(),
            health,
            updates,
            runtime: Some(runtime),
        })
    }

    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    fn limits(&self) -> ExposureLimits {
        self.limits.lock().map(|l| *l).unwrap_or_default()
    }

    /// Runs one call with the timeout; records the outcome for readiness.
    async fn call<T, F>(&self, call: F) -> Result<T, StoreUnavailable>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(unavailable(format!("no answer within {} ms", self.timeout.as_millis()))),
        };
        match &outcome {
            Ok(_) => self.health.answered(),
            Err(error) => self.health.failed(&error.0),
        }
        outcome
    }

    async fn hold_shared(&self, hold: &Hold<'_>) -> Result<(), LedgerRefusal> {
        let limits = self.limits();
        let mut connection = self.connection.clone();
        let expire_at_ms = hold.valid_before.saturating_mul(1000).saturating_add(COUNTED_GRACE_MS);
        let reply: Vec<Value> = self
            .call(
                self.scripts
                    .hold
                    .key(self.keys.reservation(hold.receipt_id))
                    .key(self.keys.exposure())
                    .key(self.keys.blocks())
                    .key(self.keys.losses())
                    .arg(hold.token)
                    .arg(hold.payer)
                    .arg(hold.route)
                    .arg(hold.usd_micros)
                    .arg(limit_arg(hold.balance))
                    .arg(limit_arg(limits.per_payer))
                    .arg(limit_arg(limits.per_route))
                    .arg(limit_arg(limits.total))
                    .arg(limit_arg(limits.losses_per_day))
                    .arg(hold.now)
                    .arg(expire_at_ms)
                    .arg(&self.owner)
                    .invoke_async(&mut connection),
            )
            .await?;
        hold_outcome(&reply)
    }
}

/// `-1` says "no limit" to the scripts.
fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX))
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(Value::SimpleString(text)) => text.clone(),
        Some(Value::Int(number)) => number.to_string(),
        _ => String::new(),
    }
}

fn number(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Int(number)) => u64::try_from(*number).unwrap_or(0),
        other => text(other).parse().unwrap_or(0),
    }
}

/// The hold script's answer: `{'ok'}` or a refusal with its figures.
fn hold_outcome(reply: &[Value]) -> Result<(), LedgerRefusal> {
    let (a, b) = (number(reply.get(1)), number(reply.get(2)));
    let refusal = match text(reply.first()).as_str() {
        "ok" => return Ok(()),
        "replayed" => return Err(LedgerRefusal::Replayed),
        "loss_budget" => ExposureRefusal::LossBudgetSpent { lost: a, limit: b },
        "blocked" => ExposureRefusal::Blocked { until: a, reason: text(reply.get(2)) },
        "uncovered" => ExposureRefusal::Uncovered { balance: a, owed: b },
        "payer" => ExposureRefusal::Payer { unsettled: a, limit: b },
        "route" => ExposureRefusal::Route { unsettled: a, limit: b },
        "total" => ExposureRefusal::Total { unsettled: a, limit: b },
        other => return Err(unavailable(format!("unexpected answer from the hold script: {other:?}")).into()),
    };
    Err(refusal.into())
}

/// Stops counting payments nobody resolved a day past their `validBefore`.
struct Sweeper {
    scripts: Arc<Scripts>,
    exposure: String,
}

impl Sweeper {
    async fn sweep(&self, connection: &mut ConnectionManager) -> redis::RedisResult<i64> {
        let mut invocation = self.scripts.sweep.key(&self.exposure);
        invocation.arg(crate::unix_now_ms());
        invocation.invoke_async(connection).await
    }
}

/// Every second: a store that answers sweeps stale counts (so readiness recovers without
/// traffic after an outage); one that does not is reported.
async fn watch_health(connection: ConnectionManager, health: Arc<StoreHealth>, sweeper: Sweeper) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let mut connection = connection.clone();
        match tokio::time::timeout(Duration::from_secs(1), sweeper.sweep(&mut connection)).await {
            Ok(Ok(swept)) => {
                health.answered();
                if swept > 0 {
                    tracing::warn!(swept, "payments still unsettled a day past their validBefore no longer count against the exposure limits");
                }
            }
            Ok(Err(error)) => health.failed(&error.to_string()),
            Err(_) => health.failed("no answer to the sweep within 1 s"),
        }
    }
}

/// Applies the settler's updates in order, retrying each until the store takes it.
struct Updater {
    connection: ConnectionManager,
    keys: Keys,
    scripts: Arc<Scripts>,
    health: Arc<StoreHealth>,
    per_day: Option<u64>,
}

impl Updater {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<LedgerUpdate>) {
        while let Some(update) = queue.recv().await {
            let mut delay = Duration::from_millis(50);
            while let Err(error) = self.apply(&update).await {
                self.health.failed(&error.to_string());
                tracing::warn!(?update, %error, "shared store update failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            self.health.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn apply(&self, update: &LedgerUpdate) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        match update {
            LedgerUpdate::Resolved { receipt_id, expire_at_ms } => {
                let mut invocation = self.scripts.resolve.key(self.keys.reservation(receipt_id));
                invocation.key(self.keys.exposure()).arg(*expire_at_ms);
                invocation.invoke_async::<i64>(&mut connection).await.map(drop)
            }
            LedgerUpdate::Loss { usd_micros, forgive, now } => {
                let (add, forgiven) = if *forgive { (0, *usd_micros) } else { (*usd_micros, 0) };
                let mut invocation = self.scripts.losses.key(self.keys.losses());
                invocation.arg(limit_arg(self.per_day)).arg(*now).arg(add).arg(forgiven).arg("");
                invocation.invoke_async::<i64>(&mut connection).await.map(drop)
            }
            LedgerUpdate::Block { payer, reason, until } => {
                redis::cmd("HSET").arg(self.keys.blocks()).arg(payer).arg(format!("{until}|{reason}")).query_async::<i64>(&mut connection).await.map(drop)
            }
        }
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[async_trait]
impl PaymentLedger for RedisLedger {
    /// Blocks and the loss budget are checked inside `hold`, in the same round trip.
    async fn precheck(&self, _payer: &str, _now: u64) -> Result<(), LedgerRefusal> {
        Ok(())
    }

    async fn hold(&self, hold: &Hold<'_>) -> Result<(), LedgerRefusal> {
        if !self.seen.reserve(hold.key, hold.valid_before) {
            return Err(LedgerRefusal::Replayed);
        }
        let outcome = self.hold_shared(hold).await;
        if outcome.is_err() {
            // Refused here or held by another replica (which may still release it): this
            // replica remembers only what it holds.
            self.seen.release(&hold.key);
        }
        outcome
    }

    async fn release(&self, hold: &Hold<'_>, keep_reservation: bool) {
        let mut connection = self.connection.clone();
        let expire_at_ms = hold.valid_before.saturating_mul(1000).saturating_add(SKEW_GRACE_MS);
        let released = self
            .call(
                self.scripts
                    .release
                    .key(self.keys.reservation(hold.receipt_id))
                    .key(self.keys.exposure())
                    .arg(hold.token)
                    .arg(u8::from(keep_reservation))
                    .arg(expire_at_ms)
                    .invoke_async::<i64>(&mut connection),
            )
            .await;
        match released {
            // 1: this hold was released; 0: it was not ours (or long gone), nothing changed.
            Ok(1) if !keep_reservation => self.seen.release(&hold.key),
            Ok(_) => {}
            // The reservation stays in the store until `validBefore`: the authorization is
            // lost to its payer, never reusable twice.
            Err(error) => tracing::warn!(receipt_id = hold.receipt_id, %error, "could not release a payment's reservation in the shared store"),
        }
    }

    async fn restore(&self, payments: &[Restored]) -> Result<(), StoreUnavailable> {
        let mut connection = self.connection.clone();
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

    fn resolved(&self, record: &PaymentRecord) {
        let expire_at_ms = record.item.valid_before.saturating_mul(1000).saturating_add(SKEW_GRACE_MS);
        self.enqueue(LedgerUpdate::Resolved { receipt_id: record.receipt_id.clone(), expire_at_ms });
    }

    fn record_loss(&self, usd_micros: u64, now: u64) {
        self.enqueue(LedgerUpdate::Loss { usd_micros, forgive: false, now });
    }

    fn forgive_loss(&self, usd_micros: u64) {
        self.enqueue(LedgerUpdate::Loss { usd_micros, forgive: true, now: crate::unix_now() });
    }

    fn block(&self, payer: &str, reason: &str, until: u64) {
        self.enqueue(LedgerUpdate::Block { payer: payer.to_owned(), reason: reason.to_owned(), until });
    }

    fn merge_blocks(&self, blocks: Vec<PayerBlock>) {
        for block in blocks {
            self.enqueue(LedgerUpdate::Block { payer: block.payer, reason: block.reason, until: block.until });
        }
    }

    fn set_limits(&self, limits: ExposureLimits) {
        if let Ok(mut current) = self.limits.lock() {
            *current = limits;
        }
    }

    async fn unblock(&self, payer: &str) -> Result<bool, StoreUnavailable> {
        let mut connection = self.connection.clone();
        let removed: i64 = self.call(redis::cmd("HDEL").arg(self.keys.blocks()).arg(payer).query_async(&mut connection)).await?;
        Ok(removed > 0)
    }

    async fn reset_losses(&self, now: u64) -> Result<u64, StoreUnavailable> {
        let mut connection = self.connection.clone();
        let per_day = limit_arg(self.limits().losses_per_day);
        let mut invocation = self.scripts.losses.key(self.keys.losses());
        invocation.arg(per_day).arg(now).arg(0).arg(0).arg("reset");
        let level: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
        Ok(u64::try_from(level).unwrap_or(0))
    }

    async fn snapshot(&self, top: usize, now: u64) -> Result<ExposureSnapshot, StoreUnavailable> {
        let mut connection = self.connection.clone();
        let mut pipeline = redis::pipe();
        pipeline.cmd("HGETALL").arg(self.keys.exposure()).cmd("HGETALL").arg(self.keys.blocks()).cmd("HGETALL").arg(self.keys.losses());
        type Maps = (HashMap<String, String>, HashMap<String, String>, HashMap<String, String>);
        let (exposure, blocks, losses): Maps = self.call(pipeline.query_async(&mut connection)).await?;
        Ok(snapshot_of(self.limits(), &exposure, &blocks, &losses, top, now))
    }

    async fn receipt_owner(&self, receipt_id: &str) -> Result<Option<String>, StoreUnavailable> {
        let mut connection = self.connection.clone();
        let owner: Option<String> = self.call(redis::cmd("HGET").arg(self.keys.reservation(receipt_id)).arg("o").query_async(&mut connection)).await?;
        Ok(owner.filter(|owner| !owner.is_empty() && *owner != self.owner))
    }

    async fn flush(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while self.health.pending.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pending = self.health.pending.load(Ordering::Relaxed), "settlement outcomes not yet recorded in the shared store");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn unavailable(&self) -> Option<String> {
        self.health.down.load(Ordering::Relaxed).then(|| self.health.last_error.lock().map(|e| e.clone()).unwrap_or_default())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

impl RedisLedger {
    fn enqueue(&self, update: LedgerUpdate) {
        self.health.pending.fetch_add(1, Ordering::Relaxed);
        if self.updates.send(update).is_err() {
            tracing::error!("the shared store's updater has stopped; a settlement outcome was not recorded there");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(redacted("redis://user:secret@redis:6379/0"), "redis://…@redis:6379/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn hold_answers_map_to_refusals() {
        let reply = |parts: &[&str]| -> Vec<Value> { parts.iter().map(|p| Value::BulkString(p.as_bytes().to_vec())).collect() };
        assert_eq!(hold_outcome(&reply(&["ok"])), Ok(()));
        assert_eq!(hold_outcome(&reply(&["replayed"])), Err(LedgerRefusal::Replayed));
        assert_eq!(hold_outcome(&reply(&["payer", "3000", "3000"])), Err(ExposureRefusal::Payer { unsettled: 3000, limit: 3000 }.into()));
        assert!(matches!(hold_outcome(&reply(&["nonsense"])), Err(LedgerRefusal::Unavailable(_))));
        let blocked = vec![Value::BulkString(b"blocked".to_vec()), Value::Int(100), Value::BulkString(b"cancelled".to_vec())];
        assert_eq!(hold_outcome(&blocked), Err(ExposureRefusal::Blocked { until: 100, reason: "cancelled".into() }.into()));
    }
}
