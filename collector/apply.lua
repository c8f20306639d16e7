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
-- Returns 1 if applied, 0 if the seq was applied before (a duplicate: skip it) or the run
-- was deleted, {4, last}
-- if the run is archived (nothing written: restore it, then apply), {2, last}
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
-- An archived run (its meta names the archive) takes no write here: {4, last} asks the
-- collector to restore its record into Redis first (runstream.archive.archiver).  A
-- deleted run's meta is a tombstone: its batches are dropped, as applied before.
local stub = redis.call('HMGET', KEYS[2], 'archive', 'deleted')
if stub[2] then
  return 0
end
local archived = stub[1] ~= false
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
    if archived then
      return {4, last_text}
    end
    redis.call('HINCRBY', KEYS[2], 'lost_batches', seq - last - 1)
  end
end
if archived then
  return {4, '0'}
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

-- Merging a tail's chunks as it is sealed: runstream.collector.merging is the same
-- algorithm in Python, byte for byte (its docstring has the rules, records.py the
-- format).  Lua numbers are doubles: steps of 2**53 and over are left as they are.
local EXACT = 9007199254740992
local MERGED = {a = 'A', d = 'D', q = 'Q', u = 'U'}
local STEP_BYTES = {a = 0, d = 4, q = 8, u = 8, A = 0, D = 4, Q = 8, U = 8}

local function fits32(x)
  return x >= -2147483648 and x <= 2147483647
end

-- The sum of n int32s at pos (a "d" chunk's deltas), unpacked 100 at a time.
local function sum32(data, pos, n)
  local total, done = 0, 0
  while done < n do
    local k = math.min(100, n - done)
    local got = {struct.unpack('<' .. string.rep('i4', k), data, pos + 4 * done)}
    for j = 1, k do total = total + got[j] end
    done = done + k
  end
  return total
end

-- The chunk at pos: its header fields, where its parts start, where the next chunk does.
local function read_chunk(data, pos)
  local kind, mode, n, _, step0, stride = struct.unpack('<c1c1I4di8i8', data, pos)
  local lo, hi = struct.unpack('<I4I4', data, pos + 6)
  local c = {kind = kind, mode = mode, n = n, step0 = step0, stride = stride, lo = lo, hi = hi, start = pos,
             body = pos + 30, first = 0, last = 0}
  c.values = c.body + STEP_BYTES[mode] * n
  c.elements = c.values
  if kind == 's' then
    local first = string.byte(data, c.values + 4)
    c.stop = c.values + 4 + struct.unpack('<I4', data, c.values)
    c.elements = c.values + 4 + ((first < 0xdc) and 1 or ((first == 0xdc) and 3 or 5))
  elseif kind == '?' then
    c.stop = c.values + n
  else
    c.stop = c.values + 8 * n
  end
  c.vstop = c.stop
  if not MERGED[mode] then
    c.stop = c.stop + 4 + 6 * struct.unpack('<I4', data, c.stop)
  end
  if mode == 'a' then
    c.first, c.last = step0, step0 + (n - 1) * stride
  elseif mode == 'd' then
    c.first, c.last = step0 + struct.unpack('<i4', data, c.body), step0 + sum32(data, c.body, n)
  end
  return c
end

local function joinable(c)
  if not MERGED[c.mode] or c.n > 65535 then
    return false
  end
  return c.mode == 'q' or c.mode == 'u' or (math.abs(c.step0) < EXACT and math.abs(c.stride) < EXACT
    and math.abs(c.first) < EXACT and math.abs(c.last) < EXACT)
end

local function start_run(data, c)
  return {head = c, mode = c.mode, n = c.n, stride = c.stride, last = c.last, lo = c.lo, hi = c.hi, count = 1,
          steps = {string.sub(data, c.body, c.values - 1)}, values = {string.sub(data, c.elements, c.vstop - 1)},
          times = {struct.pack('<I2i4', c.n, 0)}, raw = {string.sub(data, c.start, c.stop - 1)}}
end

-- Join chunk c to the run if it can (as merging._Run.add); false leaves the run as it was.
local function join(data, run, c)
  local head = run.head
  if not joinable(head) or not joinable(c) or c.kind ~= head.kind or run.n + c.n >= 4294967296 then
    return false
  end
  local delta = (c.hi - run.hi) * 4294967296 + (c.lo - run.lo)
  if not fits32(delta) then
    return false
  end
  local steps = string.sub(data, c.body, c.values - 1)
  if run.mode == 'q' or run.mode == 'u' or c.mode == 'q' or c.mode == 'u' then
    if c.mode ~= run.mode then
      return false
    end
    table.insert(run.steps, steps)
  else
    local gap = c.first - run.last
    local stride = gap
    if run.n > 1 then stride = run.stride end
    if run.mode == 'a' and c.mode == 'a' and gap == stride and (c.n == 1 or c.stride == stride) then
      run.stride = stride
    else
      if not fits32(gap) or (c.mode == 'a' and c.n > 1 and not fits32(c.stride)) then
        return false
      end
      if run.mode == 'a' then
        if run.n > 1 and not fits32(run.stride) then
          return false
        end
        run.mode = 'd'
        run.steps = {struct.pack('<i4', 0) .. string.rep(struct.pack('<i4', run.stride), run.n - 1)}
      end
      local rest
      if c.mode == 'a' then
        rest = string.rep(struct.pack('<i4', c.stride), c.n - 1)
      else
        rest = string.sub(steps, 5)
      end
      table.insert(run.steps, struct.pack('<i4', gap) .. rest)
    end
    run.last = c.last
  end
  run.n, run.lo, run.hi, run.count = run.n + c.n, c.lo, c.hi, run.count + 1
  table.insert(run.values, string.sub(data, c.elements, c.vstop - 1))
  table.insert(run.times, struct.pack('<I2i4', c.n, delta))
  table.insert(run.raw, string.sub(data, c.start, c.stop - 1))
  return true
end

local function pack_run(data, run)
  local head = run.head
  if run.count == 1 then
    return string.sub(data, head.start, head.stop - 1)
  end
  local values = table.concat(run.values)
  if head.kind == 's' then
    values = '\221' .. struct.pack('>I4', run.n) .. values
    values = struct.pack('<I4', #values) .. values
  end
  local fields -- step0 and stride: as the head's, but for the modes that change them
  if run.mode == 'a' then
    fields = struct.pack('<i8i8', head.first, run.stride)
  elseif run.mode == 'd' and head.mode == 'a' then
    fields = struct.pack('<i8i8', head.step0, 0)
  else
    fields = string.sub(data, head.start + 14, head.start + 29)
  end
  local merged = head.kind .. MERGED[run.mode] .. struct.pack('<I4', run.n)
    .. string.sub(data, head.start + 6, head.start + 13) .. fields .. table.concat(run.steps) .. values
    .. struct.pack('<I4', run.count) .. table.concat(run.times)
  local raw = table.concat(run.raw)
  if #merged < #raw then return merged end
  return raw -- a few points whose steps became int32 deltas: merged would not be smaller
end

local function merge(data)
  local out, run, pos = {}, nil, 1
  while pos <= #data do
    local c = read_chunk(data, pos)
    if run == nil or not join(data, run, c) then
      if run ~= nil then table.insert(out, pack_run(data, run)) end
      run = start_run(data, c)
    end
    pos = c.stop
  end
  if run ~= nil then table.insert(out, pack_run(data, run)) end
  return table.concat(out)
end

-- Seal the tail into the list, its chunks merged (as they were, should the merge fail:
-- a tail written by an older collector is still whole chunks, and nothing is lost).
local function seal(list, tail)
  local pending = redis.call('GET', tail)
  if pending then
    local ok, merged = pcall(merge, pending)
    redis.call('RPUSH', list, ok and merged or pending)
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
-- 5: applied to a run that has ended (by this batch or before), whose kept search summary,
-- if any, the collector drops (on another slot: not from here).
if rank[redis.call('HGET', KEYS[2], 'status')] == 5 then
  return 5
end
return 1
