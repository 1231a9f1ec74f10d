"""What every backplane repeats: this process's bookkeeping, and the listener it reports to.

Whether the logs live in memory or in Redis, each process keeps its own copy of what its
readers read (a :class:`~flask_sente.core.delivery.Delivery`: the logs themselves in
memory, a mirror of the shared ones with Redis), its own members (a
:class:`~flask_sente.core.presence.Presence`: client-level signals, grace timers, who to
drop), the same for topics, and the users in each topic (the members map). It tells the
hub of changes through one listener, and reports nothing before ``start`` or after
``close``. :class:`BackplaneBase` owns all of that, plus the defaults of the optional
:class:`~flask_sente.backplanes.base.Capabilities`, so that
:class:`~flask_sente.backplanes.local.LocalBackplane` is only what memory does differently
and :class:`~flask_sente.backplanes.redis.RedisBackplane` only what Redis does.

Like :mod:`~flask_sente.backplanes.base`, this module does no I/O: it imports the standard
library, ``flask_sente.core`` and the seam only (``tests/test_import_rules.py``).
"""
from __future__ import annotations

import secrets
import typing as t

from ..core.delivery import Delivery, Reader
from ..core.presence import Change, Presence, Transport, Uid
from .base import AdminAsk, AdminReport, BackplaneListener, CallOutcome, current_record


def new_epoch() -> str:
    """A random log epoch: 8 URL-safe characters (48 bits) are plenty per process."""
    return secrets.token_urlsafe(6)


def track_members(members: dict[str, set[Uid]], changes: t.Iterable[Change]) -> None:
    """Keep ``topic -> uids`` in step with topic presence transitions (each change's uid
    is ``(topic, uid)``)."""
    for change in changes:
        topic, uid = change.uid
        if change.kind == "user-online":
            members.setdefault(topic, set()).add(uid)
        else:
            uids = members.get(topic)
            if uids is not None:
                uids.discard(uid)
                if not uids:
                    del members[topic]


class BackplaneBase:
    """This process's logs, members and listener; the capabilities' defaults.

    Subclasses implement the appends, the readers, the presence transitions and the
    per-client records (:class:`~flask_sente.backplanes.base.Backplane`); the parts of a
    shared backplane are given this object to keep its bookkeeping in step.
    """

    #: See :attr:`Capabilities.shared <flask_sente.backplanes.base.Capabilities.shared>`.
    shared: bool = False
    #: Grants here end with their client (``drop_grants``), never by time.
    grants_ttl: float | None = None

    def __init__(self, *, history_size: int, history_ttl: float) -> None:
        #: This process's readers and its logs (or its mirror of the shared ones).
        self.delivery = Delivery(history_size=history_size, history_ttl=history_ttl,
                                 new_epoch=new_epoch)
        #: This process's members only (client-level signals, grace timers, who to drop).
        self.presence = Presence()
        #: Topic presence: a member's "uid" is ``(topic, uid)``.
        self.topic_presence = Presence()
        #: The users in each topic (cluster-wide for a shared backplane), kept by
        #: :meth:`report_topics` (and by a shared backplane's deltas).
        self.topic_members: dict[str, set[Uid]] = {}
        self.listener: BackplaneListener | None = None
        #: This process's name in call ids (a shared backplane names its node).
        self.node = new_epoch() + new_epoch()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, listener: BackplaneListener) -> None:
        """Begin reporting to ``listener``."""
        self.listener = listener

    def close(self) -> None:
        """Report nothing more."""
        self.listener = None

    # --- what both keep the same way -------------------------------------------------------

    def is_member(self, uid: Uid, transport: Transport, client_id: str) -> bool:
        return self.presence.is_member(uid, transport, client_id)

    def next_deadline(self) -> float | None:
        due = [d for d in (self.presence.next_deadline(), self.topic_presence.next_deadline())
               if d is not None]
        return min(due) if due else None

    def members(self, topic: str) -> frozenset[Uid]:
        return frozenset(self.topic_members.get(topic, ()))

    def topics(self) -> dict[str, int]:
        return {topic: len(uids) for topic, uids in self.topic_members.items()}

    def close_reader(self, reader: Reader, now: float) -> None:
        self.delivery.close_reader(reader, now)

    def leave(self, reader: Reader, topic: str, now: float) -> None:
        self.delivery.leave(reader, topic, now)

    # --- capabilities: the in-memory defaults ----------------------------------------------

    @property
    def healthy(self) -> bool:
        """Always: nothing outside this process to lose."""
        return True

    @property
    def outbox_depth(self) -> int | None:
        """None: appends are made at once."""
        return None

    def settled(self, timeout: float = 0.0, upto: int | None = None) -> None:
        """Nothing to wait for: a push is in the log when its call returns."""

    def caught_up(self, reader: Reader, timeout: float = 0.0) -> None:
        """Nothing to wait for: the logs are this process's own."""

    def check_secret(self, fingerprint: str) -> None:
        """One process, one key: nothing to compare."""

    # --- call routing: in memory, every call is this process's ------------------------------

    def route_call(self, node: str, outcome: CallOutcome) -> None:
        """In memory only this process's calls can be answered: another node's outcome
        (a call id from another deployment sharing nothing with this one) is dropped."""
        if node == self.node and self.listener is not None:
            self.listener.call_routed(outcome)

    def await_answers(self, timeout: float) -> None:
        """In memory outcomes are handed over directly: nothing to wait for."""

    def announce_closed(self, uid_key: str, client_id: str) -> None:
        """In memory there is no other process to tell (the hub tells its own calls)."""

    # --- the admin dashboard: in memory, this process is every process ---------------------

    def gather(self, ask: AdminAsk, timeout: float) -> tuple[list[AdminReport], int]:
        if self.listener is None:
            return [], 0
        return [self.listener.admin_report(ask)], 0

    # --- reporting to the listener ---------------------------------------------------------

    def report_appended(self, due: tuple[Transport, ...]) -> None:
        """Readers on these transports are owed entries."""
        if due and self.listener is not None:
            self.listener.logs_appended(due)

    def report(self, changes: list[Change]) -> None:
        """Presence transitions, in the order the app hears them."""
        if changes and self.listener is not None:
            self.listener.presence_changed(changes)

    def report_topics(self, changes: list[Change]) -> None:
        """Topic presence transitions: the users' ones (not a client's own) update the
        members map first — a receiver reads the state after the change — then go to the
        listener."""
        changes = [c for c in changes if c.kind.startswith("user-")]
        if not changes:
            return
        track_members(self.topic_members, changes)
        if self.listener is not None:
            self.listener.topic_presence_changed(changes)

    def report_kicked(self, uid: Uid, reason: str) -> None:
        """``uid`` was kicked: its connections here close."""
        if self.listener is not None:
            self.listener.kicked(uid, reason)

    def report_command(self, uid: Uid, client_id: str | None, kind: str, topic: str) -> None:
        """A topic command for ``uid`` (or one client of it) reached this process."""
        if self.listener is not None:
            self.listener.topic_command(uid, client_id, kind, topic)

    def report_state(self, healthy: bool) -> None:
        """The shared store went away or came back."""
        if self.listener is not None:
            self.listener.backplane_state(healthy)

    def record_position(self, key: t.Hashable, target: str | None = None,
                        exclude: str | None = None) -> None:
        """Tell the request or handler recording its pushes where this one went (a log
        this process appends to itself: its position is known at once); ``target`` /
        ``exclude``: the one client it is for, or the one that skips it."""
        record = current_record()
        if record is not None:
            log = self.delivery.logs.get(key)
            if log is not None:
                record.add(key, (log.epoch, log.seq), target, exclude)
