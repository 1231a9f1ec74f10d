"""The topics one client is in or joining, and what a handshake, a reply, a leave, a batch
or a kick does to them — decided without I/O (docs/protocol.md §11).

Why apart from :mod:`.topics`: the rule is stated once for both clients, as data —
``tests/vectors/topics_handshake.json`` runs against :class:`TopicBook` and against
sente.js's topic functions (``topicsAtHandshake``, ``adoptTopicBatch``, ``dropsOnRefusal``) —
so it must be callable without a connection, a thread or a lock. :mod:`.topics` makes the
calls, holds the lock and tells the app.
"""
from __future__ import annotations

import dataclasses
import typing as t

from .positions import Positions

__all__ = ["JOINED", "JOINING", "HandshakeTopics", "TopicBook", "topics_at_handshake"]

#: A topic's states in the client: in it (rejoined after every handshake), or joining it
#: (a join call not answered yet, which answers for the topic whenever it is sent).
JOINED = "joined"
JOINING = "joining"


@dataclasses.dataclass(frozen=True)
class HandshakeTopics:
    """What one handshake does to the topics: rejoin some (in join order), drop others."""

    rejoin: tuple[str, ...]
    dropped: tuple[str, ...]


def topics_at_handshake(states: t.Mapping[str, str], user_changed: bool) -> HandshakeTopics:
    """The rule both clients follow after a handshake (sente.js: ``topicsAtHandshake``).

    ``states``: topic -> :data:`JOINED` or :data:`JOINING`, in join order. A new connection
    starts with no topics on the server, so every topic the client is in is rejoined from
    its position — unless the user changed since the last handshake (never on the first):
    the topics then were the other user's, and are dropped (the app gets ``chsk/left``,
    reason ``user-changed``). A topic still joining is in neither list: its own join call,
    sent on the new connection when it waited for one, answers for it, so it is neither
    joined twice nor lost — a join made right after ``connect()`` or during a reconnect
    (even one that signs in another user) is the new connection's.
    """
    joined = tuple(topic for topic, state in states.items() if state == JOINED)
    if user_changed:
        return HandshakeTopics(rejoin=(), dropped=joined)
    return HandshakeTopics(rejoin=joined, dropped=())


class TopicBook:
    """The topics one client is in or joining, without I/O; the caller holds the client's
    lock, makes the calls and tells the app. Twin of the topic records of sente.js.

    A topic is followed (its events and marks are taken) from the moment the app joins it
    — over Ajax the topic's first batch can overtake the join's reply — until it is left,
    refused, dropped or its join fails; it is joined once a join's reply allowed it.
    """

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        #: topic -> the data it was joined with (sent again on every rejoin), in join order
        self.joins: dict[str, t.Any] = {}

    def states(self) -> dict[str, str]:
        """topic -> :data:`JOINED` or :data:`JOINING`: joined ones first, in join order."""
        states = {topic: JOINED for topic in self.joins}
        for topic in self.positions.followed():
            states.setdefault(topic, JOINING)
        return states

    def follows(self, topic: str) -> bool:
        return self.positions.follows(topic)

    def join(self, topic: str) -> tuple[str, int] | None:
        """A join (or rejoin) call for ``topic`` is about to be made: follow the topic;
        returns the position the call carries (None: a first join)."""
        return self.positions.follow(topic)

    def allowed(self, topic: str, data: t.Any, position: t.Any,
                sent: tuple[str, int] | None) -> bool:
        """A join's reply let the client in: the topic is joined, at the reply's position
        unless a mark moved it since the call carried ``sent``. False when the topic was
        left or dropped meanwhile: it stays out (its leave told the server)."""
        if not self.positions.follows(topic):
            return False
        self.joins[topic] = data
        self.positions.joined(topic, position, sent)
        return True

    def failed(self, topic: str) -> None:
        """The app's join was refused or did not get through: a topic the client was not
        in already is not followed any more."""
        if topic not in self.joins:
            self.positions.unfollow(topic)

    def leave(self, topic: str) -> bool:
        """Out of ``topic`` from now on; False if the client was not in it."""
        joined = topic in self.joins
        self.joins.pop(topic, None)
        self.positions.unfollow(topic)
        return joined

    def handshake(self, info: t.Mapping[str, t.Any]) -> tuple[bool | None, tuple[str, ...]]:
        """A handshake: its positions adopted, the topics of another user dropped
        (:func:`topics_at_handshake`). Returns ``(recovered, dropped)``."""
        recovered, user_changed = self.positions.handshake(info)
        dropped = topics_at_handshake(self.states(), user_changed).dropped
        for topic in dropped:
            self.leave(topic)
        return recovered, dropped

    def rejoin_round(self) -> dict[str, t.Any]:
        """The topics to rejoin now (after a handshake), with the data of each."""
        return {topic: self.joins[topic]
                for topic in topics_at_handshake(self.states(), False).rejoin}

    def kicked(self) -> list[str]:
        """A kick: every topic goes, with the positions (the next connection starts afresh);
        returns the topics the client was in (a join in flight fails by itself)."""
        dropped = list(self.joins)
        self.joins.clear()
        self.positions.forget()
        return dropped

    def server_joined(self, topic: str, position: t.Any) -> None:
        """``chsk/joined``: the server put the client in ``topic``."""
        if topic not in self.joins:
            self.joins[topic] = None
            self.positions.follow(topic)
            self.positions.joined(topic, position, None)
