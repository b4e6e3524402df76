"""The Lua scripts: idempotent group append, and checkpoint-with-changes. Each touches one slot."""

from __future__ import annotations

from typing import Final

# KEYS[1] stream, KEYS[2] group token, KEYS[3..] idempotency and claim keys.
# ARGV[1] idempotency ttl (s), ARGV[2] token ttl (s), ARGV[3] n, then 5 fields per event:
# idempotency key index (0 = none), claim key index (0 = none), claim ttl (s), payload, alternative.
# A claim is "first of its kind within ttl" (e.g. an affiliate's imp_id per offer for 24 h): the
# first event takes it and is appended as is; later ones are appended as their alternative payload.
# Returns one string per event: the new entry id; "=" .. original id for a duplicate key;
# "!" .. id when the alternative was appended. A re-sent call (client retry after a lost reply)
# finds its token and returns {"replay", saved}: "<first new id> <count new> <i>=<id> <i>! ..."
# (the entries of one call are consecutive in the stream).
APPEND: Final = """
local saved = redis.call('GET', KEYS[2])
if saved then return {'replay', saved} end
local n = tonumber(ARGV[3])
local prev = {}
for i = 1, n do  -- every read first: an error (e.g. WRONGTYPE) aborts before anything is written
  local ki = tonumber(ARGV[5 * i - 1])
  if ki > 0 then prev[i] = redis.call('GET', KEYS[ki]) else prev[i] = false end
end
local out, notes, seen = {}, {}, {}
local first, nnew = '-', 0
for i = 1, n do
  local base = 5 * i - 1
  local ki, ci = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local dup = prev[i] or (ki > 0 and seen[ki])
  if dup then
    out[i] = '=' .. dup
    notes[#notes + 1] = i .. '=' .. dup
  else
    local payload, mark = ARGV[base + 3], ''
    if ci > 0 and not redis.call('SET', KEYS[ci], '1', 'NX', 'EX', ARGV[base + 2]) then
      payload, mark = ARGV[base + 4], '!'
      notes[#notes + 1] = i .. '!'
    end
    local id = redis.call('XADD', KEYS[1], '*', 'event', payload)
    if ki > 0 then
      redis.call('SET', KEYS[ki], id, 'EX', ARGV[1])
      seen[ki] = id
    end
    if nnew == 0 then first = id end
    nnew = nnew + 1
    out[i] = mark .. id
  end
end
redis.call('SET', KEYS[2], first .. ' ' .. nnew .. ' ' .. table.concat(notes, ' '), 'EX', ARGV[2])
return out
"""

# KEYS[1] checkpoint, KEYS[2..] the keys the ops touch.
# ARGV[1] expected checkpoint ('' = none yet), ARGV[2] new checkpoint, ARGV[3] the ops as one
# MessagePack array of [command, key index, argument...] (one argument for the client to pack,
# however many ops); an argument that is a number n stands for ARGV[n] (binary values travel
# there: Redis 6.2's cmsgpack cannot decode MessagePack bin). Applies every op and moves the
# checkpoint in one step, only if the checkpoint is still the expected one (so a re-sent call is
# a no-op).
# Returns {1, new}, or {0, the checkpoint found instead}.
COMMIT: Final = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {0, cur} end
local ops = cmsgpack.unpack(ARGV[3])
for i = 1, #ops do
  local op = ops[i]
  local args = {}
  for j = 3, #op do
    local a = op[j]
    if type(a) == 'number' then a = ARGV[a] end
    args[j - 2] = a
  end
  redis.call(op[1], KEYS[op[2]], unpack(args))
end
redis.call('SET', KEYS[1], ARGV[2])
return {1, ARGV[2]}
"""
