"""The Lua scripts: idempotent group append, and checkpoint-with-changes. Each touches one slot."""

from __future__ import annotations

from typing import Final

# KEYS[1] stream, KEYS[2] group token, KEYS[3] idempotency prefix, KEYS[4..] claim keys.
# ARGV[1] idempotency ttl T (s), ARGV[2] token ttl (s), ARGV[3] n, then 3 fields per event:
# idempotency key ('' = none), claim ('' = none, else "<claim key index> <ttl s>"), payload;
# the alternative payload of each claim follows, in order, after the last event's fields.
#
# Idempotency keys live in hash buckets, one per period of T seconds by Redis's clock
# (PREFIX:T:period): a key is written to the current bucket and looked up in the current and the
# previous one, and a bucket expires two periods after its start. A key is so remembered for at
# least T and at most 2T seconds, for about a third less Redis CPU than a string key with its own
# expiry per event (docs/architecture.md). Keys are looked up with HMGET and written with one
# HSET per call; a repeat within the call is found in `known`; the previous bucket is read only
# when it exists (one EXISTS, not an HMGET of nils, for the first T seconds of a log and after a
# quiet period). Expiring a bucket frees millions of fields at once: the embedded server runs
# with lazyfree-lazy-expire. Per event the loop is kept lean (redis.call and the stream name in
# locals, no string concatenation for a plain new id): it runs once per appended event.
# A claim is "first of its kind within ttl" (e.g. an affiliate's imp_id per offer for 24 h): the
# first event takes it and is appended as is; later ones are appended as their alternative payload.
# Returns one space-separated string, a word per event: the new entry id; "=" .. original id for
# a duplicate key; "!" .. id when the alternative was appended (one bulk reply instead of one per
# event: cheaper for Redis to send and for the client to read). A re-sent call (client retry
# after a lost reply) finds its token and returns {"replay", saved}: "<first new id> <count new>
# <i>=<id> <i>! ..." (the entries of one call are consecutive in the stream).
APPEND: Final = """
local call = redis.call
local saved = call('GET', KEYS[2])
if saved then return {'replay', saved} end
local stream = KEYS[1]
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local period = math.floor(tonumber(call('TIME')[1]) / ttl)
local cur = KEYS[3] .. ':' .. ttl .. ':' .. period
local prev = KEYS[3] .. ':' .. ttl .. ':' .. (period - 1)
-- every read first: an error (e.g. WRONGTYPE) aborts before anything is written
call('XLEN', stream)
local keyed = {}
for i = 1, n do
  local key = ARGV[3 * i + 1]
  if key ~= '' then keyed[#keyed + 1] = key end
end
local known = {}  -- idempotency key -> entry id: the buckets' (two HMGETs per 1000 keys), then ours
if #keyed > 0 then
  local old = call('EXISTS', prev) == 1
  for s = 1, #keyed, 1000 do
    local e = math.min(s + 999, #keyed)
    local a = call('HMGET', cur, unpack(keyed, s, e))
    local b = old and call('HMGET', prev, unpack(keyed, s, e)) or {}
    for j = 1, e - s + 1 do
      local found = a[j] or b[j]
      if found then known[keyed[s + j - 1]] = found end
    end
  end
end
local out, notes, sets = {}, {}, {}
local first, nnew, alt = '-', 0, 3 * n + 3
for i = 1, n do
  local base = 3 * i + 1
  local key, claim = ARGV[base], ARGV[base + 1]
  if claim ~= '' then alt = alt + 1 end
  local dup = key ~= '' and known[key]
  if dup then
    out[i] = '=' .. dup
    notes[#notes + 1] = i .. '=' .. dup
  else
    local payload, taken = ARGV[base + 2], false
    if claim ~= '' then
      local ci, cttl = string.match(claim, '^(%d+) (%d+)$')
      if not call('SET', KEYS[tonumber(ci)], '1', 'NX', 'EX', cttl) then
        payload, taken = ARGV[alt], true
        notes[#notes + 1] = i .. '!'
      end
    end
    local id = call('XADD', stream, '*', 'event', payload)
    if key ~= '' then
      known[key] = id
      sets[#sets + 1] = key
      sets[#sets + 1] = id
    end
    if nnew == 0 then first = id end
    nnew = nnew + 1
    out[i] = taken and '!' .. id or id
  end
end
if #sets > 0 then
  for s = 1, #sets, 1000 do call('HSET', cur, unpack(sets, s, math.min(s + 999, #sets))) end
  call('EXPIREAT', cur, (period + 2) * ttl)
end
call('SET', KEYS[2], first .. ' ' .. nnew .. ' ' .. table.concat(notes, ' '), 'EX', ARGV[2])
return table.concat(out, ' ')
"""

# APPEND for a group whose events all have neither key nor claim (a pixel's): KEYS[1] stream,
# KEYS[2] group token; ARGV[1] token ttl (s), then one payload per event. Same replies, token and
# replay as APPEND. No key lookup, no per-event branching, no type check before the first write
# (the first write is an XADD: on a wrong type it fails before anything is written), and one
# argument per event instead of three: about a fifth fewer Redis instructions per event at the
# pixel path's ~11 events a call (bench/README, session 16).
APPEND_PLAIN: Final = """
local call = redis.call
local saved = call('GET', KEYS[2])
if saved then return {'replay', saved} end
local stream, out = KEYS[1], {}
local n = #ARGV - 1
for i = 1, n do out[i] = call('XADD', stream, '*', 'event', ARGV[i + 1]) end
call('SET', KEYS[2], out[1] .. ' ' .. n .. ' ', 'EX', ARGV[1])
return table.concat(out, ' ')
"""

# KEYS[1] checkpoint, KEYS[2..] the keys the ops touch.
# ARGV[1] expected checkpoint ('' = none yet), ARGV[2] new checkpoint, ARGV[3] number of ops, then
# per op: command, key index, number of arguments, the arguments (plain strings: no decoding in
# Lua, and no table per op: the arguments are unpacked straight from ARGV; an op costs Redis about
# its command). Applies every op and moves the checkpoint in one step, only if the checkpoint is
# still the expected one (so a re-sent call is a no-op).
# Returns {1, new}, or {0, the checkpoint found instead}.
COMMIT: Final = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {0, cur} end
local call = redis.call
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[i + 2])
  call(ARGV[i], KEYS[tonumber(ARGV[i + 1])], unpack(ARGV, i + 3, i + 2 + n))
  i = i + 3 + n
end
redis.call('SET', KEYS[1], ARGV[2])
return {1, ARGV[2]}
"""
