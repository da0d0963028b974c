"""
The Lua scripts of the Redis backend: each hub operation is one atomic round trip.

Keys (``P`` is the backend's prefix, ``nucleus`` by default; docs/deployment.md
lists them with their memory cost):

====================================  =====  ================================================
``P:room:<room>:meta``                hash   ``e`` epoch, ``o`` last offset
``P:room:<room>:hist``                stream entry ``<offset>-0``: ``t`` ms, ``b`` body
``P:room:<room>:members``             zset   socket ids, scored by join order
``P:room:<room>:users``               hash   user id -> sockets of that user in the room
``P:sock:<id>``                       hash   ``n`` node, ``u`` user
``P:sock:<id>:rooms``                 set    the socket's rooms
``P:user:<id>``                       set    the user's socket ids
``P:online``                          set    users with at least one socket
``P:node:<node>``                     set    the node's socket ids
``P:nodes``                           zset   node -> lease deadline (ms, Redis clock)
``P:beat``                            string when a lease was last renewed (ms, Redis clock)
``P:count``                           string open sockets
``P:seq``                             string join counter (member order)
====================================  =====  ================================================

Channels: ``P:r:<room>`` carries a room's publications and presence changes,
``P:n:<node>`` what is addressed to one node. A publication on ``P:r:<room>``
is ``"<epoch> <offset> <len> " + exclude + body`` (an epoch is hex digits); a
user's arrival in the room is ``"+<user>"``, its departure ``"-<user>"``.

Every index script checks that the socket still exists, so an index update
that arrives after the socket's removal changes nothing; and every one is
idempotent, so a node can re-register its sockets after an outage.
"""

from __future__ import annotations

__all__ = [
    "HEARTBEAT",
    "LEAVE",
    "PUBLISH",
    "RECENT",
    "RECOVER",
    "SEND_NODE",
    "SEND_USER",
    "SOCKET_BIND",
    "SOCKET_CLOSE",
    "SOCKET_JOIN",
    "SOCKET_LEAVE",
    "SOCKET_OPEN",
]

# Shared functions; ARGV[1] is always the prefix.
_PRELUDE = """
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A user's sockets in a room; its arrival (first) and departure (last) are
-- published on the room's channel as "+<user>" and "-<user>".
local function user_room_delta(room, user, delta)
  local key = P .. ':room:' .. room .. ':users'
  local n = redis.call('HINCRBY', key, user, delta)
  if n <= 0 then redis.call('HDEL', key, user) end
  if (delta > 0 and n == 1) or (delta < 0 and n == 0) then
    redis.call('PUBLISH', P .. ':r:' .. room, (delta > 0 and '+' or '-') .. user)
  end
end
-- The room's epoch; a room without one (new, or its meta lost) starts one, empty.
local function room_epoch(meta, hist, fresh)
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = fresh
    redis.call('HSET', meta, 'e', epoch, 'o', 0)
    redis.call('DEL', hist)
  end
  return epoch
end
local function drop_socket(sid)
  local sk = P .. ':sock:' .. sid
  local fields = redis.call('HMGET', sk, 'n', 'u')
  local node, user = fields[1], fields[2]
  if not node then return 0 end
  local rooms = redis.call('SMEMBERS', sk .. ':rooms')
  for _, room in ipairs(rooms) do
    redis.call('ZREM', P .. ':room:' .. room .. ':members', sid)
    if user then user_room_delta(room, user, -1) end
  end
  if user then
    local uk = P .. ':user:' .. user
    redis.call('SREM', uk, sid)
    if redis.call('SCARD', uk) == 0 then redis.call('SREM', P .. ':online', user) end
  end
  redis.call('SREM', P .. ':node:' .. node, sid)
  redis.call('DEL', sk, sk .. ':rooms')
  redis.call('DECR', P .. ':count')
  return 1
end
"""


def _script(body: str) -> str:
    return _PRELUDE + body


#: ARGV: prefix, room, body, exclude, size, ttl ms, meta ttl ms, new epoch.
#: Returns {epoch, offset}.
PUBLISH = _script("""
local room = ARGV[2]
local meta = P .. ':room:' .. room .. ':meta'
local hist = P .. ':room:' .. room .. ':hist'
local epoch = room_epoch(meta, hist, ARGV[8])
local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('PEXPIRE', meta, ARGV[7])
local size = tonumber(ARGV[5])
if size > 0 then
  redis.call('XADD', hist, 'MAXLEN', size, offset .. '-0', 't', now_ms(), 'b', ARGV[3])
  redis.call('PEXPIRE', hist, ARGV[6])
else
  -- nothing may be kept across an unkept message: recovery never jumps a hole
  redis.call('DEL', hist)
end
redis.call('PUBLISH', P .. ':r:' .. room,
  epoch .. ' ' .. offset .. ' ' .. string.len(ARGV[4]) .. ' ' .. ARGV[4] .. ARGV[3])
return {epoch, offset}
""")

#: ARGV: prefix, room, epoch ('' for none), offset, ttl ms, meta ttl ms, new epoch.
#: Returns {epoch, offset, recovered (0/1), [id, fields]...}.
RECOVER = _script("""
local room = ARGV[2]
local meta = P .. ':room:' .. room .. ':meta'
local hist = P .. ':room:' .. room .. ':hist'
local epoch = room_epoch(meta, hist, ARGV[7])
redis.call('PEXPIRE', meta, ARGV[6])
local offset = tonumber(redis.call('HGET', meta, 'o'))
if ARGV[3] == '' then return {epoch, offset, 1} end
local want = tonumber(ARGV[4])
if ARGV[3] ~= epoch or want > offset or want < 0 then return {epoch, offset, 0} end
if want == offset then return {epoch, offset, 1} end
local entries = redis.call('XRANGE', hist, (want + 1) .. '-0', '+')
if #entries ~= offset - want then return {epoch, offset, 0} end
local first = entries[1]
if first[1] ~= (want + 1) .. '-0' then return {epoch, offset, 0} end
local horizon = now_ms() - tonumber(ARGV[5])
local fields = first[2]
for i = 1, #fields, 2 do
  if fields[i] == 't' and tonumber(fields[i + 1]) < horizon then
    return {epoch, offset, 0}
  end
end
return {epoch, offset, 1, entries}
""")

#: ARGV: prefix, room, limit, ttl ms. Returns the kept entries, newest first.
RECENT = _script("""
local hist = P .. ':room:' .. ARGV[2] .. ':hist'
local entries = redis.call('XREVRANGE', hist, '+', '-', 'COUNT', tonumber(ARGV[3]))
local horizon = now_ms() - tonumber(ARGV[4])
for i, entry in ipairs(entries) do
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if fields[j] == 't' and tonumber(fields[j + 1]) < horizon then
      return {unpack(entries, 1, i - 1)}
    end
  end
end
return entries
""")

#: ARGV: prefix, socket id, node.
SOCKET_OPEN = _script("""
local sid, node = ARGV[2], ARGV[3]
if redis.call('HSETNX', P .. ':sock:' .. sid, 'n', node) == 1 then
  redis.call('SADD', P .. ':node:' .. node, sid)
  redis.call('INCR', P .. ':count')
end
return 1
""")

#: ARGV: prefix, socket id.
SOCKET_CLOSE = _script("""
return drop_socket(ARGV[2])
""")

#: ARGV: prefix, socket id, user id. Returns 0 if the socket is gone.
SOCKET_BIND = _script("""
local sid, user = ARGV[2], ARGV[3]
local sk = P .. ':sock:' .. sid
if redis.call('EXISTS', sk) == 0 then return 0 end
local previous = redis.call('HGET', sk, 'u')
if previous == user then return 1 end
local rooms = redis.call('SMEMBERS', sk .. ':rooms')
if previous then
  local pk = P .. ':user:' .. previous
  redis.call('SREM', pk, sid)
  if redis.call('SCARD', pk) == 0 then redis.call('SREM', P .. ':online', previous) end
  for _, room in ipairs(rooms) do user_room_delta(room, previous, -1) end
end
redis.call('HSET', sk, 'u', user)
redis.call('SADD', P .. ':user:' .. user, sid)
redis.call('SADD', P .. ':online', user)
for _, room in ipairs(rooms) do user_room_delta(room, user, 1) end
return 1
""")

#: ARGV: prefix, socket id, room.
SOCKET_JOIN = _script("""
local sid, room = ARGV[2], ARGV[3]
local sk = P .. ':sock:' .. sid
if redis.call('EXISTS', sk) == 0 then return 0 end
if redis.call('SADD', sk .. ':rooms', room) == 1 then
  redis.call('ZADD', P .. ':room:' .. room .. ':members', redis.call('INCR', P .. ':seq'), sid)
  local user = redis.call('HGET', sk, 'u')
  if user then user_room_delta(room, user, 1) end
end
return 1
""")

#: ARGV: prefix, socket id, room.
SOCKET_LEAVE = _script("""
local sid, room = ARGV[2], ARGV[3]
local sk = P .. ':sock:' .. sid
if redis.call('SREM', sk .. ':rooms', room) == 1 then
  redis.call('ZREM', P .. ':room:' .. room .. ':members', sid)
  local user = redis.call('HGET', sk, 'u')
  if user then user_room_delta(room, user, -1) end
end
return 1
""")

#: ARGV: prefix, node, lease ms, sockets to reap per call.
#: Renews the node's lease and reaps nodes whose lease ran out.
#: Returns {was_registered (0/1), reaped sockets}.
#:
#: When no node renewed its lease for longer than a lease, Redis (or the way
#: to it) was down for every node, not one node dead: the first node back must
#: not reap the others, which are alive and about to renew. Every lease that
#: ran out then gets one more lease, so a node that really died is reaped one
#: lease after Redis is back.
HEARTBEAT = _script("""
local node = ARGV[2]
local nodes = P .. ':nodes'
local now = now_ms()
local lease = tonumber(ARGV[3])
local last = tonumber(redis.call('GET', P .. ':beat') or now)
redis.call('SET', P .. ':beat', now)
if now - last > lease then
  for _, stale in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', now)) do
    redis.call('ZADD', nodes, now + lease, stale)
  end
end
local known = redis.call('ZSCORE', nodes, node)
redis.call('ZADD', nodes, now + lease, node)
local budget = tonumber(ARGV[4])
local reaped = 0
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', now, 'LIMIT', 0, 16)) do
  local nk = P .. ':node:' .. dead
  local sids = redis.call('SPOP', nk, budget)
  for _, sid in ipairs(sids) do reaped = reaped + drop_socket(sid) end
  budget = budget - #sids
  if redis.call('SCARD', nk) == 0 then redis.call('ZREM', nodes, dead) end
  if budget <= 0 then break end
end
return {known and 1 or 0, reaped}
""")

#: ARGV: prefix, node. Forgets a node that stops cleanly (its sockets too).
LEAVE = _script("""
local node = ARGV[2]
local nk = P .. ':node:' .. node
for _, sid in ipairs(redis.call('SMEMBERS', nk)) do drop_socket(sid) end
redis.call('DEL', nk)
redis.call('ZREM', P .. ':nodes', node)
return 1
""")

#: ARGV: prefix, socket id, payload. Publishes to the socket's node; 0 if open nowhere.
SEND_NODE = _script("""
local node = redis.call('HGET', P .. ':sock:' .. ARGV[2], 'n')
if not node then return 0 end
redis.call('PUBLISH', P .. ':n:' .. node, ARGV[3])
return 1
""")

#: ARGV: prefix, user id, payload, node to skip ('' for none).
#: Publishes once to every node holding a socket of the user; returns how many
#: of the user's sockets are on the nodes reached.
SEND_USER = _script("""
local seen, count = {}, 0
for _, sid in ipairs(redis.call('SMEMBERS', P .. ':user:' .. ARGV[2])) do
  local node = redis.call('HGET', P .. ':sock:' .. sid, 'n')
  if node and node ~= ARGV[4] then
    count = count + 1
    if not seen[node] then
      seen[node] = true
      redis.call('PUBLISH', P .. ':n:' .. node, ARGV[3])
    end
  end
end
return count
""")
