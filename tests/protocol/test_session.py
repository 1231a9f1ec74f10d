"""The session decisions both transports share, without a server: what an incoming message
is (docs/protocol.md §4), and how logs are named on the wire (§10, §11)."""
from __future__ import annotations

import pytest

from flask_sente.protocol import wire
from flask_sente.protocol.session import (
    Incoming,
    classify,
    main_logs_intact,
    main_positions,
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
