"""The Redis side of the backplane: key names and the Lua scripts, shared by the server's
:class:`~flask_sente.backplanes.redis.RedisBackplane` and the write-only
:class:`~flask_sente.emitter.Emitter`. No gevent here, so the emitter runs anywhere.

Keys (``P`` is the prefix, ``U`` a user's key: the JSON of the uid, or ``*`` for broadcasts):

=====================  ==========  ===========================================================
``P:{U}:log``          stream      entries ``<seq>-0`` with fields e (packed event), t (target
                                   client id, "!" + an excluded one, or ""), k (control: "",
                                   "kick", or a topic command "join" / "leave" / "remove")
``P:{t:T}:…``          (as above)  topic T's log: meta, stream and channel like a user's
``P:{U}:grants:<c>``   set         topics client c of the user was let into (TTL 1 day, renewed)
``P:{U}:cursor:<c>``   string      positions of protocol-1 long-poller c (TTL history_ttl)
``P:tp:…``             (as below)  topic presence: the presence keys with prefix ``P:tp``
                                   and, as the user key, the JSON of ``[topic, uid]``
``P:{U}:meta``         hash        epoch, seq
``P:{U}:ch``           channel     one message per append: [epoch, seq, target, control, e]
``P:{U}:members``      sorted set  ``transport|node|client_id``; score 0 = connected, else the
                                   end of its grace window (ms since the epoch)
``P:online``           set         online user keys (and ``P:online:ws``, ``P:online:ajax``)
``P:leaving``          sorted set  user keys with members in a grace window, by earliest end
``P:presence``         channel     [U, ws, ajax] whenever a user's online state changes
``P:nodes``            sorted set  node id -> last heartbeat (ms)
``P:node:<id>``        set         user keys with members on that node
=====================  ==========  ===========================================================
"""
from __future__ import annotations

import json
import typing as t

import msgpack

from ..core.presence import Uid

BROADCAST_KEY = "*"
#: How long a client's topic grants outlive their last join (seconds).
GRANTS_TTL = 86_400


def user_key(uid: Uid) -> str:
    """The user's key: its JSON, so ``42`` and ``"42"`` stay apart and come back typed."""
    return _json(uid)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def uid_of(key: str) -> Uid:
    """The uid a :func:`user_key` names."""
    return t.cast(Uid, json.loads(key))


def topic_user_key(topic: str, uid: Uid) -> str:
    """A user's key in a topic's presence: the JSON of ``[topic, uid]``."""
    return _json([topic, uid])


def topic_uid_of(key: str) -> tuple[str, Uid]:
    """``(topic, uid)`` from :func:`topic_user_key`."""
    topic, uid = json.loads(key)
    return topic, uid


def topic_presence_prefix(prefix: str) -> str:
    """Topic presence: the presence keys and scripts of users, under this prefix (``P:tp``),
    with :func:`topic_user_key` as the user key; ``P:tp:online`` holds every user in every
    topic."""
    return f"{prefix}:tp"


def topic_members_match(topic: str) -> str:
    """A ``SCAN MATCH`` pattern for the :func:`topic_user_key` of every user in ``topic``:
    the JSON up to the uid, its glob characters escaped (a topic name may hold any)."""
    head = _json([topic])[:-1] + ","
    return "".join("\\" + c if c in "\\*?[]" else c for c in head) + "*"


def topic_key(topic: str) -> str:
    """A topic log's key: ``t:`` + the name (a user's key is JSON, never starting so)."""
    return "t:" + topic


def cursor_key(prefix: str, ukey: str, client_id: str) -> str:
    """Where a protocol-1 long-poller stands (JSON positions, TTL ``history_ttl``)."""
    return f"{prefix}:{{{ukey}}}:cursor:{client_id}"


def members_key(prefix: str, ukey: str) -> str:
    """A user's members: ``transport|node|client_id``, scored 0 while connected, else by
    the end of its grace window (ms since the epoch)."""
    return f"{prefix}:{{{ukey}}}:members"


def live_clients(rows: t.Iterable[tuple[bytes, float]], now_ms: int) -> dict[str, list[str]]:
    """The client ids by transport of a user's members (``ZRANGE … WITHSCORES``), those
    in a grace window that has not ended by ``now_ms`` included."""
    found: dict[str, list[str]] = {"ws": [], "ajax": []}
    for member, score in rows:
        if score and score <= now_ms:
            continue
        transport, _node, client_id = member.decode().split("|", 2)
        found.setdefault(transport, []).append(client_id)
    return found


def grants_key(prefix: str, ukey: str, client_id: str) -> str:
    """The set of topics one client of a user was let into."""
    return f"{prefix}:{{{ukey}}}:grants:{client_id}"


def log_keys(prefix: str, key: str) -> tuple[str, str, str]:
    """(meta, log, channel) of one log."""
    base = f"{prefix}:{{{key}}}"
    return f"{base}:meta", f"{base}:log", f"{base}:ch"


def route_keys(prefix: str) -> list[str]:
    """The key a script that builds its own key names (from the prefix in ARGV) is sent
    with. It reads nothing from it: a Redis Cluster client routes the script by it, to the
    one slot every key of the deployment hashes to (on a Cluster the prefix is a hash tag,
    ``{sente}``; see :mod:`~flask_sente.backplanes.redis_connect`)."""
    return [f"{prefix}:online"]


def append_call(prefix: str, ukey: str, packed: bytes, *, target: str, size: int, ttl: int,
                epoch: str, create: bool, control: str, writer: str, counter: int,
                rotate: bool = False) -> tuple[list[str], list[str | int | bytes]]:
    """KEYS and ARGV of one :data:`APPEND` to the log ``ukey`` (``*``: broadcasts), built
    here only — the backplane's publisher and the :class:`~flask_sente.emitter.Emitter`
    append alike.

    :param packed: the event (or a control's value), :func:`pack_event`-ed.
    :param target: the target client id, "!" + an excluded one, or "".
    :param size: entries kept (``history_size``); ``ttl``: seconds the log lives unused.
    :param epoch: the epoch a log made (or rotated) by this append gets.
    :param create: make the log if missing (broadcasts); else a user nobody read has none.
    :param control: "", "kick", a topic command, or "gap".
    :param writer: the writer id, and ``counter`` its counter (an entry sent again is
        appended once).
    :param rotate: give the log a new epoch first (entries were lost).
    """
    meta, log, channel = log_keys(prefix, ukey)
    return [meta, log], [packed, target, size, ttl, epoch, channel, "1" if create else "0",
                         control, writer, counter, "1" if rotate else "0"]


def pack_event(event: t.Any) -> bytes:
    return t.cast(bytes, msgpack.packb(event, use_bin_type=True))


def unpack_event(data: bytes) -> t.Any:
    return msgpack.unpackb(data, raw=False)


#: Append one entry: KEYS meta, log; ARGV event, target, maxlen, ttl s, new epoch, channel,
#: create ("1": make the log if missing, as for broadcasts; "0": a user nobody has read
#: has no log, and the push reaches nobody), control, writer id, writer counter, rotate.
#: A writer's counter only grows: an entry it sent again after a timeout is not appended
#: twice. ``rotate`` = "1" gives the log a new epoch first (entries were lost: every reader
#: must learn it). Returns {epoch, seq}, or nil when nothing was appended.
APPEND = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[7] == '0' then return false end
  epoch = ARGV[5]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
elseif ARGV[11] == '1' then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local writer = 'w:' .. ARGV[9]
local counter = tonumber(ARGV[10])
if counter <= tonumber(redis.call('HGET', KEYS[1], writer) or '0') then return false end
redis.call('HSET', KEYS[1], writer, counter)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0',
           'e', ARGV[1], 't', ARGV[2], 'k', ARGV[8])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[6], cmsgpack.pack({epoch, seq, ARGV[2], ARGV[8], ARGV[1]}))
return {epoch, seq}
"""

#: A reader opens: KEYS meta, log; ARGV new epoch, ttl s[, epoch seen, seq seen, diverged].
#: Returns {epoch, seq}. With what a mirror saw: if the log still has that epoch but stands
#: before that seq, or ``diverged`` is "1" (the mirror saw another entry at a seq the log
#: has now), the log went back — a failover lost entries that readers saw — and gets a new
#: epoch (its seq goes on from what was seen), so every reader is told.
TOUCH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
elseif ARGV[3] and epoch == ARGV[3] then
  local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
  if ARGV[5] == '1' or seq < tonumber(ARGV[4]) then
    epoch = ARGV[1]
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', math.max(seq, tonumber(ARGV[4])))
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {epoch, tonumber(redis.call('HGET', KEYS[1], 'seq'))}
"""

# Presence. Every script that changes members ends with sync(): prune members whose grace
# window ended, recompute the user's online sets and publish a delta when they changed.
# Scripts run atomically, so each 0 -> 1 and 1 -> 0 transition is seen by exactly one
# caller, which is the one that tells its app (signals, chsk/uidport-*). sync() returns
# {was online, online, on ws, on ajax, changed}: the caller updates its own copy of the
# online sets at once (the delta reaches the other processes through the channel).
_SYNC = """
local function sync(prefix, ukey, now)
  local members = prefix .. ':{' .. ukey .. '}:members'
  redis.call('ZREMRANGEBYSCORE', members, '(0', now)
  local ws, ajax = 0, 0
  for _, m in ipairs(redis.call('ZRANGE', members, 0, -1)) do
    local tr = string.match(m, '^([a-z]+)|')
    if tr == 'ws' then ws = 1 elseif tr == 'ajax' then ajax = 1 end
  end
  local on = (ws == 1 or ajax == 1) and 1 or 0
  local was = redis.call('SISMEMBER', prefix .. ':online', ukey)
  local was_ws = redis.call('SISMEMBER', prefix .. ':online:ws', ukey)
  local was_ajax = redis.call('SISMEMBER', prefix .. ':online:ajax', ukey)
  local function put(key, yes)
    if yes == 1 then redis.call('SADD', key, ukey) else redis.call('SREM', key, ukey) end
  end
  put(prefix .. ':online', on)
  put(prefix .. ':online:ws', ws)
  put(prefix .. ':online:ajax', ajax)
  local changed = 0
  if was ~= on or was_ws ~= ws or was_ajax ~= ajax then
    redis.call('PUBLISH', prefix .. ':presence', cmsgpack.pack({ukey, ws, ajax}))
    changed = 1
  end
  local nxt = redis.call('ZRANGEBYSCORE', members, '(0', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if nxt[2] then
    redis.call('ZADD', prefix .. ':leaving', nxt[2], ukey)
  else
    redis.call('ZREM', prefix .. ':leaving', ukey)
  end
  return {was, on, ws, ajax, changed}
end
"""

#: ARGV prefix, user key, transport, node, client id, now ms, keep ("1": other nodes'
#: members of this client stay — an Ajax client's topic membership, held by every node
#: that holds the client; "0": they are replaced — the client is here now). Returns what
#: sync() returns.
ATTACH = _SYNC + """
local prefix, ukey, tr, node, cid, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local members = prefix .. ':{' .. ukey .. '}:members'
for _, m in ipairs(redis.call('ZRANGE', members, 0, -1)) do
  local mtr, mnode, mcid = string.match(m, '^([a-z]+)|([^|]*)|(.*)$')
  if mtr == tr and mcid == cid and (ARGV[7] ~= '1' or mnode == node) then
    redis.call('ZREM', members, m)
  end
end
redis.call('ZADD', members, 0, tr .. '|' .. node .. '|' .. cid)
redis.call('SADD', prefix .. ':node:' .. node, ukey)
-- a node with members is watched from its first member on, heartbeat or not
redis.call('ZADD', prefix .. ':nodes', 'NX', now, node)
return sync(prefix, ukey, now)
"""

#: ARGV prefix, user key, transport, node, client id, end of grace ms, now ms.
DETACH = _SYNC + """
local prefix, ukey = ARGV[1], ARGV[2]
local members = prefix .. ':{' .. ukey .. '}:members'
local member = ARGV[3] .. '|' .. ARGV[4] .. '|' .. ARGV[5]
if redis.call('ZSCORE', members, member) then
  redis.call('ZADD', members, 'XX', ARGV[6], member)
end
return sync(prefix, ukey, ARGV[7])
"""

#: ARGV prefix, user key, transport, client id, now ms: gone at once (a kick).
REMOVE = _SYNC + """
local prefix, ukey, tr, cid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local members = prefix .. ':{' .. ukey .. '}:members'
for _, m in ipairs(redis.call('ZRANGE', members, 0, -1)) do
  local mtr, mnode, mcid = string.match(m, '^([a-z]+)|([^|]*)|(.*)$')
  if mtr == tr and mcid == cid then redis.call('ZREM', members, m) end
end
return sync(prefix, ukey, ARGV[5])
"""

#: ARGV prefix, now ms, limit. Ends due grace windows cluster-wide; returns
#: {user key, was online, online, on ws, on ajax} for each user whose online state changed
#: (this caller updates its copy of the online sets, and reports those that went offline).
EXPIRE = _SYNC + """
local prefix, now = ARGV[1], ARGV[2]
local changed = {}
for _, ukey in ipairs(redis.call('ZRANGEBYSCORE', prefix .. ':leaving', '-inf', now,
                                 'LIMIT', 0, tonumber(ARGV[3]))) do
  local r = sync(prefix, ukey, now)
  if r[5] == 1 then table.insert(changed, {ukey, r[1], r[2], r[3], r[4]}) end
end
return changed
"""

#: ARGV prefix, node, now ms, dead after ms, grace ms. Heartbeat for ``node``; the members
#: of nodes silent longer than ``dead after`` start their grace window (a killed worker's
#: users leave unless they reconnect elsewhere). Returns nothing.
HEARTBEAT = _SYNC + """
local prefix, node, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', prefix .. ':nodes', now, node)
local dead = redis.call('ZRANGEBYSCORE', prefix .. ':nodes', '-inf', now - tonumber(ARGV[4]))
for _, d in ipairs(dead) do
  local until_ms = now + tonumber(ARGV[5])
  for _, ukey in ipairs(redis.call('SMEMBERS', prefix .. ':node:' .. d)) do
    local members = prefix .. ':{' .. ukey .. '}:members'
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', members, 0, 0)) do
      if string.match(m, '^[a-z]+|([^|]*)|') == d then
        redis.call('ZADD', members, 'XX', until_ms, m)
      end
    end
    sync(prefix, ukey, now)
  end
  redis.call('DEL', prefix .. ':node:' .. d)
  redis.call('ZREM', prefix .. ':nodes', d)
end
return #dead
"""
