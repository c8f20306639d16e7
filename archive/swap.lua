-- Replace an ended run's record by its archive's stub, if nothing changed since it was read.
-- Redis 6.2 and 7.x. Every key is in the run's hash-tag slot.
--
-- KEYS[1] meta hash, KEYS[2] applied seqs hash, KEYS[3..] the record's keys that go
-- ARGV[1] the applied seqs when the record was read: sorted "producer=seq" lines
-- ARGV[2] the archive's store (URL)   ARGV[3] the run's folder in it   ARGV[4] the time
-- ARGV[5] the record's digest   ARGV[6..] the final statuses
-- Returns 1 when swapped; 0 if a batch was applied since (archive it again later);
-- 2 if archived already; 3 if the run is not final.
if redis.call('HEXISTS', KEYS[1], 'archive') == 1 then
  return 2
end
local status = redis.call('HGET', KEYS[1], 'status')
local final = false
for i = 6, #ARGV do
  if status == ARGV[i] then final = true end
end
if not final then
  return 3
end
local flat = redis.call('HGETALL', KEYS[2])
local seqs = {}
for i = 1, #flat, 2 do
  seqs[#seqs + 1] = flat[i] .. '=' .. flat[i + 1]
end
table.sort(seqs)
if table.concat(seqs, '\n') ~= ARGV[1] then
  return 0
end
for i = 3, #KEYS do
  redis.call('UNLINK', KEYS[i])
end
redis.call('HSET', KEYS[1], 'archive', ARGV[2], 'archive_path', ARGV[3], 'archived_at', ARGV[4],
  'archive_digest', ARGV[5])
return 1
