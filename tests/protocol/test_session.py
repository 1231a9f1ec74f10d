"""The session decisions both transports share, without a server: what an incoming message
is (docs/protocol.md §4), and how logs are named on the wire (§10, §11)."""
from __future__ import annotations

import pytest

from flask_sente.protocol import wire
from flask_sente.protocol.session import (
    Incoming,
    PollStep,
    classify,
    main_logs_intact,
    main_positions,
    poll_step,
    topic_log_name,
    topic_of,
)


@pytest.mark.parametrize("payload, cb_id, ws, ajax", [
    (["todo/add", {"text": "milk"}], "a", Incoming.EVENT, Incoming.EVENT),
    (["chsk/ws-ping"], "p", Incoming.PING, Incoming.BAD),
    (["chsk/ws-pong"], None, Incoming.PONG, Incoming.BAD),
    (["chsk/join", {"topic": "room/a"}], "j", Incoming.TOPIC, Incoming.TOPIC),
    (["chsk/leave", {"topic": "room/a"}], "l", Incoming.TOPIC, Incoming.TOPIC),
    (["chsk/handshake"], None, Incoming.BAD, Incoming.BAD),       # reserved, not a client's
    (["no-namespace"], None, Incoming.BAD, Incoming.BAD),
    ([42, "x"], None, Incoming.BAD, Incoming.BAD),
])
def test_each_transport_takes_its_own_reserved_ids(payload, cb_id, ws, ajax):
    msg = wire.decode_client([payload, cb_id])
    assert classify(msg, "ws")[0] is ws
    assert classify(msg, "ajax")[0] is ajax
    kind, reason = classify(msg, "ajax")
    assert (reason is not None) == (kind is Incoming.BAD)


def test_a_bad_message_says_why():
    assert classify(wire.decode_client([["chsk/handshake"], None]), "ws") == (
        Incoming.BAD, "reserved-id")
    kind, reason = classify(wire.decode_client([[42], None]), "ws")
    assert kind is Incoming.BAD and reason and reason != "reserved-id"


def test_log_names_and_the_main_logs():
    assert topic_log_name("room/a") == "t:room/a" and topic_of("t:room/a") == "room/a"
    positions = {"u": ["e", 1], "*": ["f", 2], "t:room/a": ["g", 3]}
    assert main_positions(positions) == {"u": ["e", 1], "*": ["f", 2]}
    assert main_logs_intact({"t:room/a"}) and main_logs_intact(set())
    assert not main_logs_intact({"t:room/a", "u"}) and not main_logs_intact({"*"})


FACTS = ("draining", "handshake", "kicked", "held", "has_positions", "close_pending")


def expected_step(draining: bool, handshake: bool, kicked: bool, held: bool,
                  has_positions: bool, close_pending: bool) -> PollStep:
    """docs/protocol.md §6 and §10 read as a list of rules, the first that applies wins —
    written apart from ``poll_step``'s if-chain, as the order of the prose."""
    rules = [
        (draining and not handshake, PollStep.GOING_AWAY),   # §6: 1001 while draining
        (kicked, PollStep.KICKED),                            # §6: a kick between polls
        (handshake, PollStep.CONNECT),
        (not held and not has_positions, PollStep.CONNECT),   # nothing to resume from
        (not held, PollStep.ADOPT),                           # §10: positions are enough
        (close_pending, PollStep.CLOSE),
    ]
    return next((step for applies, step in rules if applies), PollStep.POLL)


@pytest.mark.parametrize("facts", [
    tuple(bool(bits >> i & 1) for i in range(len(FACTS))) for bits in range(2 ** len(FACTS))])
def test_every_ajax_get_goes_one_documented_way(facts: tuple[bool, ...]) -> None:
    """All 64 combinations; shown to fail by checking ``close_pending`` before ``held``
    (a pending close of a client another worker holds would be read from no client)."""
    assert poll_step(**dict(zip(FACTS, facts, strict=True))) is expected_step(*facts)


def test_the_races_of_an_ajax_get() -> None:
    """The cases the fault drill found, by name: a poll that reaches a new worker brings
    its positions (adopted there, not a new session); a handshake while draining is still
    answered (the client learns where it stands); a kicked client's handshake is refused."""
    base = dict(draining=False, handshake=False, kicked=False, held=False,
                has_positions=True, close_pending=False)
    assert poll_step(**base) is PollStep.ADOPT
    assert poll_step(**{**base, "has_positions": False}) is PollStep.CONNECT
    assert poll_step(**{**base, "draining": True, "handshake": True}) is PollStep.CONNECT
    assert poll_step(**{**base, "kicked": True, "handshake": True}) is PollStep.KICKED
    assert poll_step(**{**base, "held": True, "close_pending": True}) is PollStep.CLOSE
