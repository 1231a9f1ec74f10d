"""The Redis backplane's presence: members in Redis, the online copy here, and expiry.

Members live in per-user sorted sets (users' presence under the prefix, topics' under
``P:tp`` with ``[topic, uid]`` as the user). The scripts that change them report each
user's online/offline transition to exactly one caller, so ``chsk/uidport-open/close`` and
the user signals fire once in the cluster; client-level changes come from this process's own
:class:`~flask_sente.core.presence.Presence` (of
:class:`~flask_sente.backplanes.common.BackplaneBase`). Workers heartbeat; the members of a
worker silent for ``DEAD_AFTER`` seconds start their grace window.

``connected_uids`` is a copy of the online sets kept here, current by each script's answer
and the deltas every change publishes; the topic members map likewise. A receiver of a
presence signal reads the state after the change, on every backplane (docs/concepts.md,
"Presence"): the copy is updated from each script's answer before its change is reported,
and a user's transitions are reported around the client's own — user-online before
client-joined, client-left before user-offline.
"""
from __future__ import annotations

import time

import gevent.lock
import msgpack

from ..core.presence import TRANSPORTS, Change, ConnectedUids, Transport, Uid
from ..exceptions import BackplaneError
from . import redis_scripts as rs
from .common import BackplaneBase, track_members
from .redis_link import RedisLink, ScriptArg, now_ms

#: Heartbeat period, and the silence after which a worker counts as dead.
HEARTBEAT = 2.0
DEAD_AFTER = 6.0

#: A membership change for Redis: prefix, script, user key, the script's other arguments.
_Change = tuple[str, str, str, tuple[ScriptArg, ...]]


def _until_ms(deadline: float) -> int:
    """A monotonic ``deadline`` as the wall-clock milliseconds the scripts compare."""
    return now_ms() + int(max(0.0, deadline - time.monotonic()) * 1000)


class RedisPresence:
    """See the module docstring. ``home`` holds this process's members and the topic
    members map, and reports to the listener.

    :param dead_grace_ms: the grace window a dead node's members get.
    """

    def __init__(self, link: RedisLink, home: BackplaneBase, *, dead_grace_ms: int) -> None:
        self.link = link
        self.home = home
        self._dead_grace_ms = dead_grace_ms
        self._online: dict[Transport, set[Uid]] = {"ws": set(), "ajax": set()}
        self._snapshot: ConnectedUids | None = None
        #: Users gone at once by a detach with no grace: told after their client's leaving.
        self._offline_due: list[Change] = []
        #: Membership changes that could not reach Redis yet, oldest first.
        self._unsent: list[_Change] = []
        #: Held while the unsent changes are made: the housekeeping loop and a
        #: resubscription both send them, and each waits on Redis between two changes.
        self._sending = gevent.lock.Semaphore()

    # --- the copy of the online sets -------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        if self._snapshot is None:
            ws, ajax = frozenset(self._online["ws"]), frozenset(self._online["ajax"])
            self._snapshot = ConnectedUids(ws, ajax, ws | ajax)
        return self._snapshot

    def clients_of(self, uid: Uid) -> dict[str, list[str]]:
        """Read from the user's members in Redis (grace windows included)."""
        rows = self.link.client.zrange(rs.members_key(self.link.prefix, rs.user_key(uid)),
                                       0, -1, withscores=True)
        return rs.live_clients(rows, now_ms())

    def reload(self) -> None:
        """Read the online sets and the topic members from Redis (after subscribing)."""
        for transport in TRANSPORTS:
            keys = self.link.client.smembers(f"{self.link.prefix}:online:{transport}")
            self._online[transport] = {rs.uid_of(k.decode()) for k in keys}
        self._snapshot = None
        members: dict[str, set[Uid]] = {}
        for key in self.link.client.smembers(f"{self.link.topic_prefix}:online"):
            topic, uid = rs.topic_uid_of(key.decode())
            members.setdefault(topic, set()).add(uid)
        self.home.topic_members = members

    def on_delta(self, data: bytes) -> None:
        """A user's online state changed (``P:presence``)."""
        ukey, ws, ajax = msgpack.unpackb(data, raw=False)
        self._set_online(rs.uid_of(ukey), ws, ajax)

    def on_topic_delta(self, data: bytes) -> None:
        """A user's presence in a topic changed (``P:tp:presence``)."""
        ukey, ws, ajax = msgpack.unpackb(data, raw=False)
        topic, uid = rs.topic_uid_of(ukey)
        track_members(self.home.topic_members, [
            Change("user-online" if ws or ajax else "user-offline", (topic, uid))])

    def _set_online(self, uid: Uid, ws: int, ajax: int) -> None:
        for transport, present in zip(TRANSPORTS, (ws, ajax), strict=True):
            if present:
                self._online[transport].add(uid)
            else:
                self._online[transport].discard(uid)
        self._snapshot = None

    def _refresh_online(self, uids: set[Uid]) -> None:
        """Read these users' online state from Redis into the copy here (another process
        may have seen their transition; its delta may not have arrived yet)."""
        with self.link.calling():
            pipe = self.link.client.pipeline(transaction=False)
            for uid in uids:
                ukey = rs.user_key(uid)
                pipe.sismember(f"{self.link.prefix}:online:ws", ukey)
                pipe.sismember(f"{self.link.prefix}:online:ajax", ukey)
            found = pipe.execute()
        for i, uid in enumerate(uids):
            self._set_online(uid, int(found[2 * i]), int(found[2 * i + 1]))

    # --- members ---------------------------------------------------------------------------

    def attach(self, uid: Uid, transport: Transport, client_id: str, conn_id: int) -> None:
        joined = [c for c in self.home.presence.attach(uid, transport, client_id, conn_id)
                  if not c.kind.startswith("user-")]
        online: list[Change] = []
        try:
            online = self._membership(self.link.prefix, "ATTACH", rs.user_key(uid),
                                      transport, self.link.node, client_id, now_ms(), "0")
        finally:
            self.home.report(online + joined)

    def detach(self, uid: Uid, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        if self.home.presence.detach(uid, transport, client_id, conn_id, deadline):
            # With no grace the member is gone at once: the user's leaving, if it is one,
            # is told after the client's, by the expiry that follows.
            self._offline_due += self._membership(
                self.link.prefix, "DETACH", rs.user_key(uid), transport, self.link.node,
                client_id, _until_ms(deadline), now_ms())

    def remove(self, uid: Uid, transport: Transport, client_id: str) -> None:
        left = [c for c in self.home.presence.remove(uid, transport, client_id)
                if not c.kind.startswith("user-")]
        offline: list[Change] = []
        try:
            offline = self._membership(self.link.prefix, "REMOVE", rs.user_key(uid),
                                       transport, client_id, now_ms())
        finally:
            self.home.report(left + offline)

    def topic_attach(self, topic: str, uid: Uid, transport: Transport, client_id: str,
                     conn_id: int) -> None:
        self.home.topic_presence.attach((topic, uid), transport, client_id, conn_id)
        # An Ajax client's topic membership is held by every process that holds the client
        # (its polls may reach any of them, and each forgets it on its own): one member
        # per process, none replacing another's. A WebSocket is on one process at a time.
        self.home.report_topics(self._membership(
            self.link.topic_prefix, "ATTACH", rs.topic_user_key(topic, uid), transport,
            self.link.node, client_id, now_ms(), "1" if transport == "ajax" else "0"))

    def topic_detach(self, topic: str, uid: Uid, transport: Transport, client_id: str,
                     conn_id: int, deadline: float) -> None:
        if self.home.topic_presence.detach((topic, uid), transport, client_id, conn_id,
                                           deadline):
            self.home.report_topics(self._membership(
                self.link.topic_prefix, "DETACH", rs.topic_user_key(topic, uid), transport,
                self.link.node, client_id, _until_ms(deadline), now_ms()))

    def topic_remove(self, topic: str, uid: Uid, transport: Transport,
                     client_id: str) -> None:
        self.home.topic_presence.remove((topic, uid), transport, client_id)
        self.home.report_topics(self._membership(
            self.link.topic_prefix, "REMOVE", rs.topic_user_key(topic, uid), transport,
            client_id, now_ms()))

    def restore(self) -> None:
        """Put this process's members back into Redis (after a resubscription: presence
        lost with Redis's data is re-established from here; its users may see a second
        ``uidport-open``)."""
        link = self.link
        for uid, transport, client_id in self.home.presence.connected():
            link.run_in(link.prefix, "ATTACH", rs.user_key(uid), transport, link.node,
                        client_id, now_ms(), "0")
        for (topic, uid), transport, client_id in self.home.topic_presence.connected():
            link.run_in(link.topic_prefix, "ATTACH", rs.topic_user_key(topic, uid), transport,
                        link.node, client_id, now_ms(), "1" if transport == "ajax" else "0")

    def _membership(self, prefix: str, script: str, ukey: str,
                    *args: ScriptArg) -> list[Change]:
        """One change of a member in Redis (ATTACH, DETACH, REMOVE of user or topic
        presence), made in order with the others; returns the user's (or user-in-topic's)
        transition this call saw, for the caller to report.

        A change that cannot reach Redis now is kept and made once Redis answers again (the
        housekeeping loop's probe), and so are the ones after it meanwhile: a member that
        left while Redis was away must not stay online for good, nor one that came back be
        dropped by an older change. Those report their transitions when made. The raised
        :class:`BackplaneError` tells the caller it is late."""
        change = (prefix, script, ukey, args)
        if self._unsent:
            self._unsent.append(change)
            return []
        try:
            return self._make_change(change)
        except BackplaneError:
            self._unsent.append(change)
            raise

    def _make_change(self, change: _Change) -> list[Change]:
        """Run one membership script; keep the online sets copied here in step with its
        answer; return the transition it saw (empty: none)."""
        prefix, script, ukey, args = change
        was, on, ws, ajax, _ = self.link.run_in(prefix, script, ukey, *args)
        key: Uid
        if prefix == self.link.topic_prefix:
            key = rs.topic_uid_of(ukey)
        else:
            key = rs.uid_of(ukey)
            self._set_online(key, ws, ajax)
        if was == on:
            return []
        return [Change("user-online" if on else "user-offline", key)]

    def send_unsent(self) -> None:
        """Make the membership changes that waited for Redis, in order (the housekeeping
        loop calls it once Redis answers), reporting what they saw; stops at the first that
        still cannot."""
        with self._sending:  # one sender at a time: each change made once, none skipped
            while self._unsent:
                prefix = self._unsent[0][0]
                changes = self._make_change(self._unsent[0])
                self._unsent.pop(0)
                if prefix == self.link.topic_prefix:
                    self.home.report_topics(changes)
                else:
                    self.home.report(changes)

    # --- expiry ----------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Grace windows of this process's members that ended by ``now`` (client-level
        changes), and the cluster's (user-level ones, from Redis)."""
        # Presence deadlines only: the hub's sweep expires the logs every few seconds (a
        # scan of every log per ended grace window made connect storms quadratic).
        left = [c for c in self.home.presence.expire(now) if not c.kind.startswith("user-")]
        self.home.topic_presence.expire(now)  # the cluster-wide transitions come from Redis
        offline, self._offline_due = self._offline_due, []
        try:
            offline += self._expire_users()
            if left:  # a receiver of client-left reads the cluster's state after it
                self._refresh_online({c.uid for c in left})
            self._expire_topics()
        finally:
            self.home.report(left + offline)

    def expire_cluster(self) -> None:
        """The housekeeping loop's share: grace windows ended anywhere in the cluster."""
        self.home.report(self._expire_users())
        self._expire_topics()

    def _expire_users(self) -> list[Change]:
        """End the grace windows due cluster-wide; the users who went offline, each after
        the client-level leaving of its members here whose grace window the cluster's
        clock ended before this process's timer did (the housekeeping loop may run first:
        a client's leaving is told before its user's, on the worker telling both)."""
        changes = []
        for ukey, was, on, ws, ajax in self.link.run_in(self.link.prefix, "EXPIRE",
                                                        now_ms(), 100):
            uid = rs.uid_of(ukey.decode())
            self._set_online(uid, ws, ajax)
            if was and not on:
                changes += self.home.presence.end_leaving(uid)
                changes.append(Change("user-offline", uid))
        return changes

    def _expire_topics(self) -> None:
        rows = self.link.run_in(self.link.topic_prefix, "EXPIRE", now_ms(), 100)
        self.home.report_topics([Change("user-offline", rs.topic_uid_of(row[0].decode()))
                                 for row in rows if row[1] and not row[2]])

    def heartbeat(self) -> None:
        """This node is alive; the members of nodes silent for ``DEAD_AFTER`` start their
        grace window."""
        for prefix in (self.link.prefix, self.link.topic_prefix):
            self.link.run_in(prefix, "HEARTBEAT", self.link.node, now_ms(),
                             int(DEAD_AFTER * 1000), self._dead_grace_ms)
