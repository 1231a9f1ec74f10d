import pytest

from flask_sente.exceptions import LocalProtocolError
from flask_sente.protocol import events as ev


@pytest.mark.parametrize("obj, reason", [
    (["todo/add", 1], None),
    (("todo/add",), None),
    (["a/b", None], None),
    ("todo/add", "wrong-type"),
    ({"id": "a/b"}, "wrong-type"),
    ([], "wrong-length"),
    (["a/b", 1, 2], "wrong-length"),
    ([1, 2], "wrong-id-type"),
    (["nonamespace"], "unnamespaced-id"),
    (["/name"], "unnamespaced-id"),
    (["ns/"], "unnamespaced-id"),
])
def test_event_validation_table(obj, reason):
    assert ev.event_error(obj) == reason


def test_as_event_fills_missing_data_with_none():
    assert ev.as_event(["a/b"]) == ("a/b", None)
    assert ev.as_event(["a/b", {"x": 1}]) == ("a/b", {"x": 1})


def test_outgoing_reserved_ids_are_refused_with_a_clear_message():
    with pytest.raises(LocalProtocolError, match="reserved"):
        ev.validate_outgoing(("chsk/handshake", 1))
    assert ev.validate_outgoing(("chsk/x", 1), allow_reserved=True) == ("chsk/x", 1)


def test_outgoing_invalid_event_names_the_shape():
    with pytest.raises(LocalProtocolError, match="namespaced id"):
        ev.validate_outgoing(("plain", 1))


def test_to_wire_drops_absent_data():
    assert ev.to_wire(("a/b", None)) == ["a/b"]
    assert ev.to_wire(("a/b", 0)) == ["a/b", 0]
