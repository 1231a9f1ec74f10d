import pytest

from flask_sente.exceptions import RemoteProtocolError
from flask_sente.protocol import PROTOCOL_VERSION, wire
from flask_sente.protocol.packers import JsonPacker

J = JsonPacker()


def test_exact_server_encodings():
    assert J.pack(wire.handshake("alice", {"v": 1}, version=1)) == (
        '[["chsk/handshake",{"uid":"alice","handshake_data":{"v":1},"protocol":1}],null]')
    assert PROTOCOL_VERSION == 3
    assert J.pack(wire.handshake("al", None, positions={"u": ("e1", 3)}, recovered=True)) == (
        '[["chsk/handshake",{"uid":"al","handshake_data":null,"protocol":3,'
        '"positions":{"u":["e1",3]},"recovered":true}],null]')
    assert J.pack(wire.position_mark({"*": ("e2", 7)})) == '["chsk/pos",{"*":["e2",7]}]'
    assert J.pack(wire.batch([("a/b", 1), ("a/c", None)])) == '[[["a/b",1],["a/c"]],null]'
    assert J.pack(wire.reply({"ok": True}, "k1")) == '[["chsk/reply",{"ok":true}],"k1"]'
    assert J.pack(wire.failure("chsk/timeout", "k1")) == '[["chsk/timeout"],"k1"]'
    assert J.pack(wire.PING) == '[["chsk/ws-ping"],null]'
    assert J.pack(wire.LP_TIMEOUT) == '[["chsk/timeout"],null]'
    assert J.pack(wire.ACK) == '[["chsk/ack"],null]'
    assert J.pack(wire.close(4001, "kicked")) == (
        '[["chsk/close",{"code":4001,"reason":"kicked"}],null]')


def test_client_message_round_trip():
    msg = wire.decode_client(J.unpack(J.pack(wire.client_event(("todo/add", {"t": 1}), "cb1"))))
    assert msg.event == ("todo/add", {"t": 1}) and msg.cb_id == "cb1"


def test_bad_event_inside_a_good_envelope_is_reported_not_raised():
    msg = wire.decode_client([[1, 2], None])
    assert msg.event is None and msg.bad_reason == "wrong-id-type" and msg.raw == [1, 2]


@pytest.mark.parametrize("value", [None, {}, [], [1], [1, 2, 3], [["a/b"], 5], [["a/b"], ""],
                                   [["a/b"], "x" * 65]])
def test_malformed_envelopes_raise(value):
    with pytest.raises(RemoteProtocolError):
        wire.decode_client(value)


def test_decode_server_kinds():
    assert wire.decode_server(wire.handshake("u")).kind == "handshake"
    batch = wire.decode_server(wire.batch([("a/b", 1)]))
    assert batch.kind == "events" and batch.events == [("a/b", 1)]
    reply = wire.decode_server(wire.reply("chsk/timeout", "c"))
    # A handler replying with the string "chsk/timeout" is still a value, not a timeout.
    assert (reply.kind, reply.outcome, reply.value) == ("reply", "chsk/reply", "chsk/timeout")
    failure = wire.decode_server(wire.failure("chsk/timeout", "c"))
    assert (failure.kind, failure.outcome) == ("reply", "chsk/timeout")
    assert wire.decode_server(wire.PING).kind == "ping"
    assert wire.decode_server(wire.LP_TIMEOUT).kind == "timeout"
    assert wire.decode_server(wire.ACK).kind == "ack"
    assert wire.decode_server(wire.close(4001, "k")).value == {"code": 4001, "reason": "k"}


@pytest.mark.parametrize("value", [[[], None], [["x"], None], [[["a/b"], 3], None],
                                   [["a/b", 1], "cb"], [["chsk/unknown"], None]])
def test_decode_server_rejects_malformed(value):
    with pytest.raises(RemoteProtocolError):
        wire.decode_server(value)


def test_positions_parameter_is_parsed_strictly():
    assert wire.decode_positions('{"u":["e1",3],"*":["e2",0]}') == {"u": ("e1", 3),
                                                                   "*": ("e2", 0)}
    for bad in ('[1]', '{"u":["e1",-1]}', '{"u":["e1","3"]}', '{"u":[1,3]}', 'nope',
                '{"u":["e1",3,4]}', '{"u":["e1",true]}', "{" * 5000):
        with pytest.raises(RemoteProtocolError):
            wire.decode_positions(bad)
