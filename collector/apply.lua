-- Apply one batch of one run's events to the run's record, atomically, once.
-- Redis 6.2 and 7.x (EVAL/EVALSHA). Every key is in the run's hash-tag slot.
--
-- KEYS[1] seqs hash, KEYS[2] meta hash, KEYS[3] live stream, KEYS[4..] keys the ops name.
-- ARGV[1] producer id ("" = the collector itself: no seq check)
-- ARGV[2] seq   ARGV[3] live stream cap   ARGV[4] live payload ("" = none)
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
-- Returns 1 if applied, 0 if the seq was applied before.

local producer, seq = ARGV[1], tonumber(ARGV[2])
if producer ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[1], producer) or '0')
  if seq <= last then
    return 0
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
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'p', producer, 'q', ARGV[2], 'b', ARGV[i + 2])
    end
    i = i + 4
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end

if producer ~= '' then
  redis.call('HSET', KEYS[1], producer, ARGV[2])
end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'p', producer, 'q', ARGV[2], 'b', ARGV[4])
end
return 1
