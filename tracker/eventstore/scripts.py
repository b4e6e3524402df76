"""The Lua scripts: idempotent group append, and checkpoint-with-changes. Each touches one slot."""

from __future__ import annotations

from typing import Final

# KEYS[1] stream, KEYS[2] group token, KEYS[3..] idempotency keys.
# ARGV[1] idempotency ttl (s), ARGV[2] token ttl (s), ARGV[3] n, then n pairs: key index (0 = none),
# payload. Returns one string per event: the new entry id, or "=" .. original id for a duplicate.
# A re-sent call (client retry after a lost reply) finds its token and returns {"replay", saved}:
# "<first new id> <count new> <i>=<dup id> ..." (entries of one call are consecutive in the stream).
APPEND: Final = """
local saved = redis.call('GET', KEYS[2])
if saved then return {'replay', saved} end
local n = tonumber(ARGV[3])
local prev = {}
for i = 1, n do  -- every read first: an error (e.g. WRONGTYPE) aborts before anything is written
  local ki = tonumber(ARGV[2 + 2 * i])
  if ki > 0 then prev[i] = redis.call('GET', KEYS[ki]) else prev[i] = false end
end
local out, dups, seen = {}, {}, {}
local first, nnew = '-', 0
for i = 1, n do
  local ki = tonumber(ARGV[2 + 2 * i])
  local dup = prev[i] or (ki > 0 and seen[ki])
  if dup then
    out[i] = '=' .. dup
    dups[#dups + 1] = i .. '=' .. dup
  else
    local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[3 + 2 * i])
    if ki > 0 then
      redis.call('SET', KEYS[ki], id, 'EX', ARGV[1])
      seen[ki] = id
    end
    if nnew == 0 then first = id end
    nnew = nnew + 1
    out[i] = id
  end
end
redis.call('SET', KEYS[2], first .. ' ' .. nnew .. ' ' .. table.concat(dups, ' '), 'EX', ARGV[2])
return out
"""

# KEYS[1] checkpoint, KEYS[2..] the keys the ops touch.
# ARGV[1] expected checkpoint ('' = none yet), ARGV[2] new checkpoint, then ops, each:
# command, key index, argument count, arguments... Applies every op and moves the checkpoint in one
# step, only if the checkpoint is still the expected one (so a re-sent call is a no-op).
# Returns 1, or the checkpoint found instead.
COMMIT: Final = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {0, cur} end
local i = 3
while i <= #ARGV do
  local nargs = tonumber(ARGV[i + 2])
  redis.call(ARGV[i], KEYS[tonumber(ARGV[i + 1])], unpack(ARGV, i + 3, i + 2 + nargs))
  i = i + 3 + nargs
end
redis.call('SET', KEYS[1], ARGV[2])
return {1, ARGV[2]}
"""
