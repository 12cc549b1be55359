//! The Lua scripts of the Redis ledger, the key names they use, and how their answers read.
//! Every key of a fleet carries the hash tag `{key_prefix}`, so a script's keys are in one
//! slot (Cluster-safe) and the keys a script derives (`…exposure:counted`, a
//! payment's hash found by the sweep) are in that slot too.

use super::unavailable;
use crate::exposure::ExposureRefusal;
use crate::ledger::LedgerRefusal;
use redis::{Script, Value};

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

/// KEYS: reservation, exposure, blocks, losses, generation. ARGV: token, payer, route, usd,
/// balance, per_payer, per_route, total, per_day (-1: none), now, expire_at_ms, owner ('' for
/// none), the generation this replica restored its journal into, now_ms.
const HOLD: &str = r"
local g = redis.call('HMGET', KEYS[5], 'id', 'open_at')
if g[1] ~= ARGV[13] then return {'generation'} end
local open_at = tonumber(g[2]) or 0
if open_at > tonumber(ARGV[14]) then return {'quarantine', open_at} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'replayed'} end
local now, usd, per_day = tonumber(ARGV[10]), tonumber(ARGV[4]), tonumber(ARGV[9])
if per_day >= 0 then
  local level, spent = bucket(KEYS[4], per_day, now)
  if spent then return {'loss_budget', level, per_day} end
end
local block = redis.call('HGET', KEYS[3], ARGV[2])
if block then
  local sep = string.find(block, '|', 1, true) or (#block + 1)
  local untl = tonumber(string.sub(block, 1, sep - 1)) or 0
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

/// KEYS: generation. ARGV: a new id, open_at_ms if this call creates the generation,
/// open_at_ms to extend an existing one to (0: leave it). Returns the generation's id.
const ADOPT: &str = r"
local id = redis.call('HGET', KEYS[1], 'id')
if not id then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'open_at', ARGV[2])
  return ARGV[1]
end
local open_at = tonumber(redis.call('HGET', KEYS[1], 'open_at')) or 0
if tonumber(ARGV[3]) > open_at then redis.call('HSET', KEYS[1], 'open_at', ARGV[3]) end
return id
";

pub(super) struct Scripts {
    pub hold: Script,
    pub release: Script,
    pub resolve: Script,
    pub restore: Script,
    pub losses: Script,
    pub sweep: Script,
    pub adopt: Script,
}

impl Scripts {
    pub fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        // Scripts that only free memory run on a Redis that is full (`maxmemory` with
        // `noeviction`): otherwise nothing could stop counting there, and the store stays full.
        let freeing = |body: &str| Script::new(&format!("#!lua flags=allow-oom\n{LUA_PRELUDE}{body}"));
        Self {
            hold: with_prelude(HOLD),
            release: freeing(RELEASE),
            resolve: freeing(RESOLVE),
            restore: with_prelude(RESTORE),
            losses: with_prelude(LOSSES),
            sweep: freeing(SWEEP),
            adopt: Script::new(ADOPT),
        }
    }
}

/// Key names, all in one hash slot.
pub(super) struct Keys {
    tag: String,
}

impl Keys {
    pub fn new(key_prefix: &str) -> Self {
        Self { tag: format!("{{{key_prefix}}}") }
    }
    pub fn reservation(&self, receipt_id: &str) -> String {
        format!("{}r:{receipt_id}", self.tag)
    }
    pub fn exposure(&self) -> String {
        format!("{}exposure", self.tag)
    }
    pub fn blocks(&self) -> String {
        format!("{}blocks", self.tag)
    }
    pub fn losses(&self) -> String {
        format!("{}losses", self.tag)
    }
    /// Which incarnation of the store this is: recreated when the store lost its data.
    pub fn generation(&self) -> String {
        format!("{}generation", self.tag)
    }
    /// A `batch-settlement` channel's record (the id's raw bytes end the key).
    pub fn channel(&self, id: &crate::ChannelId) -> Vec<u8> {
        [format!("{}ch:", self.tag).as_bytes(), id.as_slice()].concat()
    }
    /// A channel's one request slot.
    pub fn channel_slot(&self, id: &crate::ChannelId) -> Vec<u8> {
        [format!("{}chs:", self.tag).as_bytes(), id.as_slice()].concat()
    }
    /// Every channel's id.
    pub fn channels(&self) -> String {
        format!("{}channels", self.tag)
    }
    /// Which replica claims the channels.
    pub fn channel_claimer(&self) -> String {
        format!("{}channel-claimer", self.tag)
    }
}

/// `-1` says "no limit" to the scripts.
pub(super) fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX))
}

pub(super) fn text(value: Option<&Value>) -> String {
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

/// What the hold script answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HoldAnswer {
    Held,
    Refused(LedgerRefusal),
    /// The store does not hold this replica's generation: it lost its data.
    StoreLost,
    /// The store was reset; payments resume at this Unix time in ms.
    Quarantined { until_ms: u64 },
}

pub(super) fn hold_answer(reply: &[Value]) -> HoldAnswer {
    let (a, b) = (number(reply.get(1)), number(reply.get(2)));
    let refusal = match text(reply.first()).as_str() {
        "ok" => return HoldAnswer::Held,
        "generation" => return HoldAnswer::StoreLost,
        "quarantine" => return HoldAnswer::Quarantined { until_ms: a },
        "replayed" => return HoldAnswer::Refused(LedgerRefusal::Replayed),
        "loss_budget" => ExposureRefusal::LossBudgetSpent { lost: a, limit: b },
        "blocked" => ExposureRefusal::Blocked { until: a, reason: text(reply.get(2)) },
        "uncovered" => ExposureRefusal::Uncovered { balance: a, owed: b },
        "payer" => ExposureRefusal::Payer { unsettled: a, limit: b },
        "route" => ExposureRefusal::Route { unsettled: a, limit: b },
        "total" => ExposureRefusal::Total { unsettled: a, limit: b },
        other => return HoldAnswer::Refused(unavailable(format!("unexpected answer from the hold script: {other:?}")).into()),
    };
    HoldAnswer::Refused(refusal.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_answers_map_to_refusals() {
        let reply = |parts: &[&str]| -> Vec<Value> { parts.iter().map(|p| Value::BulkString(p.as_bytes().to_vec())).collect() };
        assert_eq!(hold_answer(&reply(&["ok"])), HoldAnswer::Held);
        assert_eq!(hold_answer(&reply(&["replayed"])), HoldAnswer::Refused(LedgerRefusal::Replayed));
        assert_eq!(hold_answer(&reply(&["generation"])), HoldAnswer::StoreLost);
        assert_eq!(hold_answer(&[Value::BulkString(b"quarantine".to_vec()), Value::Int(5)]), HoldAnswer::Quarantined { until_ms: 5 });
        assert_eq!(hold_answer(&reply(&["payer", "3000", "3000"])), HoldAnswer::Refused(ExposureRefusal::Payer { unsettled: 3000, limit: 3000 }.into()));
        assert!(matches!(hold_answer(&reply(&["nonsense"])), HoldAnswer::Refused(LedgerRefusal::Unavailable(_))));
        let blocked = vec![Value::BulkString(b"blocked".to_vec()), Value::Int(100), Value::BulkString(b"cancelled".to_vec())];
        assert_eq!(hold_answer(&blocked), HoldAnswer::Refused(ExposureRefusal::Blocked { until: 100, reason: "cancelled".into() }.into()));
    }
}
