-- Apply one batch of one run's events to the run's record, atomically, once.
-- Redis 6.2 and 7.x (EVAL/EVALSHA). Every key is in the run's hash-tag slot.
--
-- KEYS[1] seqs hash, KEYS[2] meta hash, KEYS[3] live stream, KEYS[4..] keys the ops name.
-- ARGV[1] producer id ("" = the collector itself: no seq check)
-- ARGV[2] seq, or "seq/last": apply over the gap after last (see below)
-- ARGV[3] live stream cap   ARGV[4] live payload ("" = none)
-- ARGV[5..] ops, each an opcode, a key index, and a fixed number of arguments:
--   P k t bytes        append a packed chunk to a series: small chunks gather in the tail
--                      string t, sealed into the list k once it reaches SEAL bytes; a big
--                      chunk is sealed at once (lists hold strings without APPEND's slack)
--   H k field value    HSET
--   N k field value    HSETNX
--   I k field n        HINCRBY
--   R k value          RPUSH
--   X k cap s l t      XADD k MAXLEN ~ cap * s <s> l <l> t <t>   (output lines)
--   K k name kind      set a metric's kind; "list" wins over "series", else the first stays
--   S k status error ts   status transition (only forward; final statuses stay; NotResponding,
--                      which ranks as Running, may follow any status short of final, and
--                      records when in not_responding_at)
--   W k payload ts     the run was heard from: if NotResponding, back to Running (resumed_at ts),
--                      and the live update of that (payload) goes out first
--
-- A producer's seqs are applied in order, each once (DESIGN §3): seq N only after N-1.
-- Returns 1 if applied, 0 if the seq was applied before (a duplicate: skip it), {2, last}
-- if it is ahead of a gap (seqs last+1..seq-1 not applied yet: nothing is written, and
-- the collector tries it again once they are), {3, last} if it is more than AHEAD past
-- the last applied (no gap that long comes from a failed send: a forged or corrupt seq,
-- which the collector dead-letters; waiting for it, or applying it, would freeze the
-- run, every later real batch skipped as seen).  "seq/last" is the collector giving up
-- on a gap that never filled (its letter written): applied if last is still the last
-- applied, the seqs between counted in the meta hash's lost_batches; else as "seq".

local AHEAD = 1000000 -- as runstream.collector.applier.MAX_AHEAD
local producer, seq_text, over = ARGV[1], ARGV[2], nil
local slash = string.find(seq_text, '/', 1, true)
if slash then
  over = tonumber(string.sub(seq_text, slash + 1))
  seq_text = string.sub(seq_text, 1, slash - 1)
end
local seq = tonumber(seq_text)
if producer ~= '' then
  local last_text = redis.call('HGET', KEYS[1], producer) or '0'
  local last = tonumber(last_text)
  if seq <= last then
    return 0
  elseif seq - last > AHEAD then
    return {3, last_text}
  elseif seq > last + 1 then
    if over ~= last then
      return {2, last_text}
    end
    redis.call('HINCRBY', KEYS[2], 'lost_batches', seq - last - 1)
  end
end

-- As runstream.events.STATUS_RANK / status_follows.
local rank = {NotStarted = 0, Queued = 1, Starting = 2, Running = 3, NotResponding = 3, Finalizing = 4,
              Completed = 5, Failed = 5, Canceled = 5}

local function follows(current, status)
  local from = current and rank[current] or -1
  if not rank[status] or from >= 5 then
    return false
  elseif status == 'NotResponding' then
    return current ~= status
  end
  return rank[status] >= from
end

local SEAL = 65536

local function seal(list, tail)
  local pending = redis.call('GET', tail)
  if pending then
    redis.call('RPUSH', list, pending)
    redis.call('DEL', tail)
  end
end

local i = 5
while i <= #ARGV do
  local op, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'P' then
    local tail, chunk = KEYS[tonumber(ARGV[i + 2])], ARGV[i + 3]
    if #chunk >= SEAL then
      seal(key, tail)
      redis.call('RPUSH', key, chunk)
    elseif redis.call('APPEND', tail, chunk) >= SEAL then
      seal(key, tail)
    end
    i = i + 4
  elseif op == 'H' then
    redis.call('HSET', key, ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'N' then
    redis.call('HSETNX', key, ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'I' then
    redis.call('HINCRBY', key, ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'R' then
    redis.call('RPUSH', key, ARGV[i + 2]); i = i + 3
  elseif op == 'X' then
    redis.call('XADD', key, 'MAXLEN', '~', ARGV[i + 2], '*', 's', ARGV[i + 3], 'l', ARGV[i + 4], 't', ARGV[i + 5])
    i = i + 6
  elseif op == 'K' then
    local name, kind = ARGV[i + 2], ARGV[i + 3]
    local current = redis.call('HGET', key, name)
    if not current or (current == 'series' and kind == 'list') then
      redis.call('HSET', key, name, kind)
    end
    i = i + 4
  elseif op == 'S' then
    local status, err, ts = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    if follows(redis.call('HGET', key, 'status'), status) then
      redis.call('HSET', key, 'status', status)
      if err ~= '' then redis.call('HSET', key, 'error', err) end
      if rank[status] >= 3 and status ~= 'NotResponding' then redis.call('HSETNX', key, 'started_at', ts) end
      if rank[status] == 5 then redis.call('HSET', key, 'ended_at', ts) end
      if status == 'NotResponding' then redis.call('HSET', key, 'not_responding_at', ts) end
    end
    i = i + 5
  elseif op == 'W' then
    if redis.call('HGET', key, 'status') == 'NotResponding' then
      redis.call('HSET', key, 'status', 'Running', 'resumed_at', ARGV[i + 3])
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'p', producer, 'q', seq_text, 'b', ARGV[i + 2])
    end
    i = i + 4
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end

if producer ~= '' then
  redis.call('HSET', KEYS[1], producer, seq_text)
end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'p', producer, 'q', seq_text, 'b', ARGV[4])
end
return 1
