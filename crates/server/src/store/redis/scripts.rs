//! The Lua scripts that change a history: [`PUBLISH`] (one per group
//! commit), [`HELLO`] (every new connection's handshake) and [`FORGET`] (the
//! retention sweep). redis-rs sends each by its hash and loads it again
//! where Redis lost it (a restart).
//!
//! Each starts with a shebang: Redis then refuses them before they run when
//! it is out of memory or cannot persist, instead of aborting half-way (a
//! script has no rollback). All validation reads come before the first write.

use std::sync::LazyLock;

use redis::Script;

/// Stores one group of publish requests. Atomic: it checks each request's
/// idempotency key, gives the new events the next sequence numbers (dense:
/// a replayed request takes none), appends each to its topic's stream,
/// updates the index, records the batch under the node's id and publishes
/// the whole batch on the feed, in one message.
///
/// KEYS: meta, index, names, nodes, then one stream per topic, then the
/// idempotency keys, then the Mercure ids of the topics whose updates carry
/// a publisher's id. ARGV: epoch, node id, batch number, now (ms), stream
/// length cap, stream TTL (ms, 0 for none), idempotency TTL (ms), request
/// count, stream count, feed channel, Mercure ids count, the length cap and
/// the TTL of hub-owned topics' streams (`$…`), then per request: its idempotency
/// key's KEYS index (0 for none), its fingerprint, its event count, then per
/// event: its stream's KEYS index, topic, frame body; for a Mercure update
/// the index is negated and three more follow: its metadata (JSON), the
/// KEYS index of its topic's Mercure ids (0 when it has no publisher's id)
/// and that id (else '').
///
/// An update's metadata is stored beside its frame (field `m`) and sent on
/// the feed; its publisher's id points at it in the topic's Mercure ids,
/// from which the ids of events `MAXLEN` trimmed are removed at once.
///
/// Returns `{'EPOCH', epoch}` without writing when the history is not the
/// caller's, else `{'OK', epoch, outcomes}`: per request, space-separated,
/// `N<first>` (new), `R<first>` (replayed) or `K` (key reused).
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_SCRIPT));

const PUBLISH_SCRIPT: &str = r#"#!lua
local meta, index, names, nodes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local e = redis.call('HGET', meta, 'epoch')
if e ~= ARGV[1] then return {'EPOCH', e or ''} end
local streams = tonumber(ARGV[9])
for s = 5, 4 + streams do
  local kind = redis.call('TYPE', KEYS[s])['ok']
  if kind ~= 'none' and kind ~= 'stream' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[s] .. ' holds a ' .. kind .. ', not a stream')
  end
end
for s = #KEYS - tonumber(ARGV[11]) + 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[s])['ok']
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[s] .. ' holds a ' .. kind .. ', not a sorted set')
  end
end
local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
local forgotten = tonumber(redis.call('HGET', meta, 'forgotten') or '0')
local first = seq + 1
local now, maxlen, ttl, key_ttl = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
-- Hub-owned topics ('$...', byte 36) keep history by bounds of their own.
local hub_maxlen, hub_ttl = ARGV[12], tonumber(ARGV[13])
local last, touched, seen, marked = {}, {}, {}, {}
local outcomes, exceptions, records = {}, {}, {}
local a = 14
for r = 1, tonumber(ARGV[8]) do
  local k, fingerprint, n = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local earlier = false
  if k > 0 then earlier = seen[k] or redis.call('GET', KEYS[k]) end
  if earlier then
    local s, f = string.match(earlier, '^(%d+) (%x+)$')
    if f == fingerprint then outcomes[r] = 'R' .. s else outcomes[r] = 'K' end
    exceptions[#exceptions + 1] = r .. '=' .. outcomes[r]
    for _ = 1, n do
      if tonumber(ARGV[a]) < 0 then a = a + 6 else a = a + 3 end
    end
  else
    local start = seq + 1
    for _ = 1, n do
      local stream, topic, body = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
      seq = seq + 1
      local cap = maxlen
      if string.byte(topic, 1) == 36 then cap = hub_maxlen end
      -- A topic the index does not know may be one the sweep forgot.
      local prev = last[topic] or tonumber(redis.call('ZSCORE', index, topic) or forgotten)
      if stream > 0 then
        a = a + 3
        redis.call('XADD', KEYS[stream], 'MAXLEN', '~', cap, seq .. '-0', 'p', prev, 't', now, 'f', body)
        records[#records + 1] = seq .. ' ' .. #topic .. ' ' .. #body .. '\n' .. topic .. body
      else
        local m, ids, id = ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5]
        a = a + 6
        stream = -stream
        redis.call('XADD', KEYS[stream], 'MAXLEN', '~', cap, seq .. '-0', 'p', prev, 't', now, 'f', body, 'm', m)
        records[#records + 1] = seq .. ' ' .. #topic .. ' ' .. #body .. ' ' .. #m .. '\n' .. topic .. body .. m
        if ids > 0 then
          redis.call('ZADD', KEYS[ids], seq, id)
          marked[ids] = stream
        end
      end
      last[topic] = seq
      touched[stream] = topic
    end
    if k > 0 then
      seen[k] = start .. ' ' .. fingerprint
      redis.call('SET', KEYS[k], seen[k], 'PX', key_ttl)
    end
    outcomes[r] = 'N' .. start
  end
end
for stream, topic in pairs(touched) do
  local expiry = ttl
  if string.byte(topic, 1) == 36 then expiry = hub_ttl end
  if expiry > 0 then redis.call('PEXPIRE', KEYS[stream], expiry) end
  redis.call('ZADD', index, last[topic], topic)
  redis.call('ZADD', names, 0, topic)
end
-- Ids of events trimmed from their stream point at nothing: dropped.
for ids, stream in pairs(marked) do
  local oldest = redis.call('XRANGE', KEYS[stream], '-', '+', 'COUNT', 1)[1]
  if oldest then
    redis.call('ZREMRANGEBYSCORE', KEYS[ids], '-inf', '(' .. string.match(oldest[1], '^(%d+)'))
  end
end
local count = seq - first + 1
redis.call('HSET', meta, 'seq', seq)
redis.call('HSET', nodes, ARGV[2],
  ARGV[3] .. ' ' .. e .. ' ' .. first .. ' ' .. count .. ' ' .. now .. ' ' .. table.concat(exceptions, ','))
if count > 0 then
  redis.call('PUBLISH', ARGV[10], e .. ' ' .. first .. ' ' .. count .. ' ' .. now .. '\n' .. table.concat(records))
end
return {'OK', e, table.concat(outcomes, ' ')}
"#;

/// A connection's handshake: which history Redis holds, rotated to a new
/// one (the candidate epoch, sequence 0) when acknowledged events may be
/// gone: the history is missing, another Redis process took it over while
/// restarts are not known to keep acknowledged writes, or its sequence is
/// below one the caller saw (a rollback).
///
/// KEYS: meta. ARGV: the caller's epoch ('' if none), the highest sequence
/// it saw of it, a candidate epoch, '1' if restarts keep acknowledged writes.
/// Returns `{epoch, seq, why, previous epoch or ''}`, `why` being `ok`,
/// `data_lost`, `restart` or `rollback`.
pub(crate) static HELLO: LazyLock<Script> = LazyLock::new(|| Script::new(HELLO_SCRIPT));

const HELLO_SCRIPT: &str = r#"#!lua
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local meta = KEYS[1]
local v = redis.call('HMGET', meta, 'epoch', 'seq', 'r', 'prev')
local e, s, r = v[1], v[2], v[3]
local function rotate(why)
  -- The history given up: Redis's, or, when Redis lost even that, the caller's.
  local old, old_end = e or ARGV[1], s or ARGV[2]
  if old ~= '' then redis.call('HSET', meta, 'prev', old, 'prev_end', old_end) end
  -- The new history forgot nothing: `forgotten` was the old one's.
  redis.call('HSET', meta, 'epoch', ARGV[3], 'seq', 0, 'r', run, 'forgotten', 0)
  return {ARGV[3], '0', why, old}
end
if not e then return rotate('data_lost') end
if r ~= run then
  if ARGV[4] ~= '1' then return rotate('restart') end
  redis.call('HSET', meta, 'r', run)
end
if e == ARGV[1] and tonumber(s) < tonumber(ARGV[2]) then return rotate('rollback') end
return {e, s, 'ok', v[4] or ''}
"#;

/// Forgets the topics (of one history) whose stream expired: drops them
/// from the index and the names, deletes their Mercure ids and raises
/// `forgotten` to the highest sequence of any of them, in one step, so that
/// a reader sees either the topic or the mark; a topic published again
/// meanwhile has a stream and keeps its place. Of the topics kept, the
/// Mercure ids of events no longer in the stream are dropped (the stream
/// expired and came back, or was trimmed by events without an id).
///
/// KEYS: meta, index, names, then per topic its stream and its Mercure
/// ids. ARGV: the topics, in that order. Returns how many topics it forgot.
pub(crate) static FORGET: LazyLock<Script> = LazyLock::new(|| Script::new(FORGET_SCRIPT));

const FORGET_SCRIPT: &str = r#"#!lua
local meta, index, names = KEYS[1], KEYS[2], KEYS[3]
local forgotten, dropped = 0, 0
for t = 1, #ARGV do
  local stream, ids, topic = KEYS[2 + 2 * t], KEYS[3 + 2 * t], ARGV[t]
  if redis.call('EXISTS', stream) == 0 then
    local last = tonumber(redis.call('ZSCORE', index, topic) or '0')
    if last > forgotten then forgotten = last end
    redis.call('ZREM', index, topic)
    redis.call('ZREM', names, topic)
    redis.call('UNLINK', ids)
    dropped = dropped + 1
  elseif redis.call('EXISTS', ids) == 1 then
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if oldest then redis.call('ZREMRANGEBYSCORE', ids, '-inf', '(' .. string.match(oldest[1], '^(%d+)')) end
  end
end
if forgotten > tonumber(redis.call('HGET', meta, 'forgotten') or '0') then
  redis.call('HSET', meta, 'forgotten', string.format('%d', forgotten))
end
return dropped
"#;

/// The newest retained event of a topic whose Mercure update carries a
/// publisher's id: its sequence, or nil when the id is unknown or its
/// event was trimmed or expired (the ids may lag the stream until the next
/// update or sweep drops them).
///
/// KEYS: the topic's Mercure ids, its stream. ARGV: the id.
pub(crate) static FIND_MERCURE_ID: LazyLock<Script> = LazyLock::new(|| Script::new(FIND_MERCURE_ID_SCRIPT));

const FIND_MERCURE_ID_SCRIPT: &str = r#"#!lua flags=no-writes
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return false end
local seq = string.format('%d', tonumber(score))
if #redis.call('XRANGE', KEYS[2], seq .. '-0', seq .. '-0') == 0 then return false end
return seq
"#;
