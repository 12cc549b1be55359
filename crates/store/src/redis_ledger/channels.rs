//! `batch-settlement` channel records in Redis, shared by the replicas of a fleet, with the
//! same two rules as in one process ([`crate::ChannelStore`]): one request in flight per
//! channel, and charges that only grow.
//!
//! A channel is one hash, `{prefix}ch:<id>` (the id as its 32 raw bytes): `charged` (the
//! cumulative charge, decimal), `record` (the rest of what was charged: terms, last voucher),
//! `onchain` (the escrow mirror) and `synced` (when that mirror was read, ms). Its request slot
//! is a key of its own, `{prefix}chs:<id>`, taken with `SET NX PX` and a random token, so a
//! slot whose request died expires by itself and only its holder can commit or free it. The
//! set `{prefix}channels` lists every channel. Each step is one Lua script, so one atomic
//! round trip; charges are compared as decimal strings (Lua numbers would round a `u128`).

use super::{unavailable, Inner};
use crate::channels::{ChannelId, ChannelRecord, ChannelRefusal, ChannelStore, ChannelTerms, ChannelTicket, ClaimerLease, OnchainChannel};
use crate::ledger::StoreUnavailable;
use async_trait::async_trait;
use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// KEYS: slot, channel. ARGV: token, slot ms. Takes the slot; answers `{1, {charged, record,
/// onchain}}`, or `{0}` while another request holds it.
const BEGIN: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
return {1, redis.call('HMGET', KEYS[2], 'charged', 'record', 'onchain')}
";

/// Compares two canonical decimals (no leading zeros): true if `a` < `b`.
const LUA_DECIMALS: &str = r"
local function below(a, b)
  if string.len(a) ~= string.len(b) then return string.len(a) < string.len(b) end
  return a < b
end
local function mirror(channel, onchain, synced)
  local stored = tonumber(redis.call('HGET', channel, 'synced') or '-1')
  if tonumber(synced) >= stored then redis.call('HSET', channel, 'onchain', onchain, 'synced', synced) end
end
";

/// KEYS: slot, channel, channel list. ARGV: token, charged, record, onchain, synced ms, id.
/// Answers `{'ok'}`, `{'lost'}` (the slot is not this request's) or `{'backwards', stored}`.
const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost'} end
redis.call('DEL', KEYS[1])
local stored = redis.call('HGET', KEYS[2], 'charged')
if stored and below(ARGV[2], stored) then return {'backwards', stored} end
redis.call('HSET', KEYS[2], 'charged', ARGV[2], 'record', ARGV[3])
mirror(KEYS[2], ARGV[4], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[6])
return {'ok'}
";

/// KEYS: channel, channel list. ARGV: charged, record, onchain, synced ms, id. A journal's
/// copy after the store lost its data: kept only where it charged more than the store holds.
const RESTORE: &str = r"
local stored = redis.call('HGET', KEYS[1], 'charged')
if stored and not below(stored, ARGV[1]) then mirror(KEYS[1], ARGV[3], ARGV[4]) return 0 end
redis.call('HSET', KEYS[1], 'charged', ARGV[1], 'record', ARGV[2])
mirror(KEYS[1], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
return 1
";

/// KEYS: slot. ARGV: token. Frees the slot if it is still this request's.
const CANCEL: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// KEYS: lease. ARGV: this replica's id, ttl ms. Takes a free lease or renews its own.
const LEAD: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
";

/// KEYS: channel. ARGV: onchain, synced ms. A known channel only.
const MIRROR: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
mirror(KEYS[1], ARGV[1], ARGV[2])
return 1
";

pub(super) struct ChannelScripts {
    begin: Script,
    commit: Script,
    restore: Script,
    cancel: Script,
    mirror: Script,
    lead: Script,
}

impl ChannelScripts {
    pub(super) fn new() -> Self {
        let with_helpers = |body: &str| Script::new(&format!("{LUA_DECIMALS}{body}"));
        Self { begin: Script::new(BEGIN), commit: with_helpers(COMMIT), restore: with_helpers(RESTORE), cancel: Script::new(CANCEL), mirror: with_helpers(MIRROR), lead: Script::new(LEAD) }
    }
}

/// What `record` holds: the charge's context. Amounts as strings (JSON numbers are doubles
/// to many readers).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCharge {
    network: String,
    chain_id: u64,
    payer: [u8; 20],
    payer_authorizer: [u8; 20],
    receiver: [u8; 20],
    receiver_authorizer: [u8; 20],
    token: [u8; 20],
    withdraw_delay: u64,
    salt: [u8; 32],
    signed_max: String,
    signature: Vec<u8>,
    last_charged_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMirror {
    balance: String,
    total_claimed: String,
    withdraw_requested_at: u64,
    refund_nonce: u64,
    synced_at_ms: u64,
}

fn charge_json(record: &ChannelRecord) -> String {
    let terms = &record.terms;
    let stored = StoredCharge {
        network: record.network.clone(),
        chain_id: record.chain_id,
        payer: terms.payer,
        payer_authorizer: terms.payer_authorizer,
        receiver: terms.receiver,
        receiver_authorizer: terms.receiver_authorizer,
        token: terms.token,
        withdraw_delay: terms.withdraw_delay,
        salt: terms.salt,
        signed_max: record.signed_max.to_string(),
        signature: record.signature.clone(),
        last_charged_at_ms: record.last_charged_at_ms,
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

fn mirror_json(onchain: &OnchainChannel) -> String {
    let stored = StoredMirror {
        balance: onchain.balance.to_string(),
        total_claimed: onchain.total_claimed.to_string(),
        withdraw_requested_at: onchain.withdraw_requested_at,
        refund_nonce: onchain.refund_nonce,
        synced_at_ms: onchain.synced_at_ms,
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

/// A channel's hash fields (`charged`, `record`, `onchain`) back into a record; `None` for a
/// channel never charged. A field that does not read is the store's fault: unavailable.
fn record_of(id: &ChannelId, fields: &[Value]) -> Result<Option<ChannelRecord>, StoreUnavailable> {
    let [charged, charge, onchain] = fields else { return Err(unavailable("a channel's fields are missing")) };
    let (Value::BulkString(charged), Value::BulkString(charge)) = (charged, charge) else { return Ok(None) };
    let bad = |what: &str| unavailable(format!("channel {}: unreadable {what}", short(id)));
    let charged: u128 = std::str::from_utf8(charged).ok().and_then(|text| text.parse().ok()).ok_or_else(|| bad("charge"))?;
    let charge: StoredCharge = serde_json::from_slice(charge).map_err(|_| bad("record"))?;
    let onchain = match onchain {
        Value::BulkString(bytes) => {
            let stored: StoredMirror = serde_json::from_slice(bytes).map_err(|_| bad("mirror"))?;
            OnchainChannel {
                balance: stored.balance.parse().map_err(|_| bad("mirror"))?,
                total_claimed: stored.total_claimed.parse().map_err(|_| bad("mirror"))?,
                withdraw_requested_at: stored.withdraw_requested_at,
                refund_nonce: stored.refund_nonce,
                synced_at_ms: stored.synced_at_ms,
            }
        }
        _ => OnchainChannel::default(),
    };
    Ok(Some(ChannelRecord {
        id: *id,
        network: charge.network,
        chain_id: charge.chain_id,
        terms: ChannelTerms {
            payer: charge.payer,
            payer_authorizer: charge.payer_authorizer,
            receiver: charge.receiver,
            receiver_authorizer: charge.receiver_authorizer,
            token: charge.token,
            withdraw_delay: charge.withdraw_delay,
            salt: charge.salt,
        },
        charged,
        signed_max: charge.signed_max.parse().map_err(|_| bad("voucher"))?,
        signature: charge.signature,
        onchain,
        last_charged_at_ms: charge.last_charged_at_ms,
    }))
}

fn short(id: &ChannelId) -> String {
    id[..4].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Writes journaled records back where the store holds less (at a replica's start, after the
/// store lost its data or the primary changed): a charge never goes backwards, a mirror never
/// gets older.
pub(super) async fn restore_records(inner: &Inner, records: Vec<ChannelRecord>) -> Result<(), StoreUnavailable> {
    let mut connection = inner.primary.connection();
    for record in records {
        let mut invocation = inner.channel_scripts.restore.key(inner.keys.channel(&record.id));
        invocation
            .key(inner.keys.channels())
            .arg(record.charged.to_string())
            .arg(charge_json(&record))
            .arg(mirror_json(&record.onchain))
            .arg(record.onchain.synced_at_ms)
            .arg(record.id.as_slice());
        inner.call(invocation.invoke_async::<i64>(&mut connection)).await?;
    }
    Ok(())
}

/// The claimer lease in the fleet's Redis; made by [`super::RedisLedger::claimer_lease`].
pub struct RedisClaimerLease {
    pub(super) store: RedisChannelStore,
    /// Drawn per process: a restarted replica waits for its old lease to expire.
    pub(super) holder: u64,
}

#[async_trait]
impl ClaimerLease for RedisClaimerLease {
    async fn lead(&self, ttl: std::time::Duration) -> bool {
        let (holder, ttl_ms) = (self.holder, u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let led = self
            .store
            .on_store(move |inner| async move {
                let mut invocation = inner.channel_scripts.lead.key(inner.keys.channel_claimer());
                invocation.arg(holder).arg(ttl_ms);
                let mut connection = inner.primary.connection();
                Ok(inner.call(invocation.invoke_async::<i64>(&mut connection)).await? == 1)
            })
            .await;
        led.unwrap_or(false)
    }
}

/// Channel records in the fleet's Redis; made by [`super::RedisLedger::channel_store`], it
/// shares the ledger's connection, runtime and timeout.
pub struct RedisChannelStore {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
}

impl RedisChannelStore {
    pub(super) fn new(inner: Arc<Inner>, runtime: tokio::runtime::Handle) -> Self {
        Self { inner, runtime }
    }

    /// [`restore_records`], for a caller outside the store's runtime.
    pub async fn restore(&self, records: Vec<ChannelRecord>) -> Result<(), StoreUnavailable> {
        self.on_store(move |inner| async move { restore_records(&inner, records).await }).await
    }

    /// Runs `work` on the store's runtime, as the ledger's calls do.
    async fn on_store<T, F>(&self, work: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreUnavailable>
    where
        F: std::future::Future<Output = Result<T, StoreUnavailable>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.spawn(work(self.inner.clone())).await.map_err(unavailable)?
    }
}

#[async_trait]
impl ChannelStore for RedisChannelStore {
    async fn begin(&self, id: &ChannelId, now_ms: u64, expires_at_ms: u64) -> Result<(ChannelTicket, Option<ChannelRecord>), ChannelRefusal> {
        let (id, token) = (*id, super::random_u64());
        let slot_ms = expires_at_ms.saturating_sub(now_ms).max(1);
        let answer = self
            .on_store(move |inner| async move {
                let mut invocation = inner.channel_scripts.begin.key(inner.keys.channel_slot(&id));
                invocation.key(inner.keys.channel(&id)).arg(token).arg(slot_ms);
                let mut connection = inner.primary.connection();
                match inner.call(invocation.invoke_async::<Vec<Value>>(&mut connection)).await {
                    Ok(reply) => Ok(reply),
                    Err(error) => {
                        // Maybe taken after all: its token frees it.
                        cancel_in_background(&inner, id, token);
                        Err(error.into())
                    }
                }
            })
            .await?;
        match answer.as_slice() {
            [Value::Int(1), Value::Array(fields)] => Ok((ChannelTicket { id, serial: token }, record_of(&id, fields)?)),
            _ => Err(ChannelRefusal::Busy),
        }
    }

    async fn commit(&self, ticket: ChannelTicket, next: ChannelRecord) -> Result<(), ChannelRefusal> {
        let offered = next.charged;
        let answer = self
            .on_store(move |inner| async move {
                let id = ticket.id;
                let mut invocation = inner.channel_scripts.commit.key(inner.keys.channel_slot(&id));
                invocation
                    .key(inner.keys.channel(&id))
                    .key(inner.keys.channels())
                    .arg(ticket.serial)
                    .arg(next.charged.to_string())
                    .arg(charge_json(&next))
                    .arg(mirror_json(&next.onchain))
                    .arg(next.onchain.synced_at_ms)
                    .arg(id.as_slice());
                let mut connection = inner.primary.connection();
                Ok(inner.call(invocation.invoke_async::<Vec<String>>(&mut connection)).await?)
            })
            .await?;
        match answer.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["ok"] => Ok(()),
            ["backwards", stored] => Err(ChannelRefusal::Backwards { stored: stored.parse().unwrap_or(u128::MAX), offered }),
            _ => Err(ChannelRefusal::SlotLost),
        }
    }

    async fn cancel(&self, ticket: ChannelTicket) {
        let outcome = self
            .on_store(move |inner| async move {
                let mut invocation = inner.channel_scripts.cancel.key(inner.keys.channel_slot(&ticket.id));
                invocation.arg(ticket.serial);
                let mut connection = inner.primary.connection();
                Ok(inner.call(invocation.invoke_async::<i64>(&mut connection)).await?)
            })
            .await;
        if let Err(error) = outcome {
            tracing::warn!(%error, "a channel's request slot was not freed; it expires by itself");
        }
    }

    async fn mirror(&self, id: &ChannelId, onchain: OnchainChannel) -> Result<(), StoreUnavailable> {
        let id = *id;
        self.on_store(move |inner| async move {
            let mut invocation = inner.channel_scripts.mirror.key(inner.keys.channel(&id));
            invocation.arg(mirror_json(&onchain)).arg(onchain.synced_at_ms);
            let mut connection = inner.primary.connection();
            inner.call(invocation.invoke_async::<i64>(&mut connection)).await?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreUnavailable> {
        let id = *id;
        self.on_store(move |inner| async move {
            let mut connection = inner.primary.connection();
            let fields: Vec<Value> = inner.call(redis::cmd("HMGET").arg(inner.keys.channel(&id)).arg(&["charged", "record", "onchain"]).query_async(&mut connection)).await?;
            record_of(&id, &fields)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<ChannelRecord>, StoreUnavailable> {
        self.on_store(move |inner| async move {
            let mut connection = inner.primary.connection();
            let ids: Vec<Vec<u8>> = inner.call(redis::cmd("SMEMBERS").arg(inner.keys.channels()).query_async(&mut connection)).await?;
            let ids: Vec<ChannelId> = ids.iter().filter_map(|id| ChannelId::try_from(id.as_slice()).ok()).collect();
            let mut records = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(256) {
                let mut pipeline = redis::pipe();
                for id in chunk {
                    pipeline.cmd("HMGET").arg(inner.keys.channel(id)).arg(&["charged", "record", "onchain"]);
                }
                let replies: Vec<Vec<Value>> = inner.call(pipeline.query_async(&mut connection)).await?;
                for (id, fields) in chunk.iter().zip(replies) {
                    records.extend(record_of(id, &fields)?);
                }
            }
            Ok(records)
        })
        .await
    }
}

fn cancel_in_background(inner: &Arc<Inner>, id: ChannelId, token: u64) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut invocation = inner.channel_scripts.cancel.key(inner.keys.channel_slot(&id));
        invocation.arg(token);
        let mut connection = inner.primary.connection();
        let _ = invocation.invoke_async::<i64>(&mut connection).await;
    });
}
