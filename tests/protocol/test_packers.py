import pytest

from flask_sente.exceptions import PackError, RemoteProtocolError
from flask_sente.protocol.packers import JsonPacker, MsgpackPacker, content_type_of, get_packer

VALUES = [None, True, 0, -1, 2**40, 1.5, "", "héllo ✓", [], [1, [2, [3]]],
          {"a": {"b": [1, None]}}, [["chsk/reply", {"x": 1}], "cb"]]


@pytest.mark.parametrize("packer", [JsonPacker(), MsgpackPacker()], ids=["json", "msgpack"])
@pytest.mark.parametrize("value", VALUES)
def test_round_trip(packer, value):
    packed = packer.pack(value)
    assert isinstance(packed, bytes if packer.binary else str)
    assert packer.unpack(packed) == value


def test_json_is_compact_text():
    assert JsonPacker().pack([["a/b", {"k": 1}], None]) == '[["a/b",{"k":1}],null]'


def test_json_accepts_utf8_bytes():
    assert JsonPacker().unpack('["é"]'.encode()) == ["é"]


def test_msgpack_carries_bytes():
    assert MsgpackPacker().unpack(MsgpackPacker().pack([b"\x00\xff"])) == [b"\x00\xff"]


@pytest.mark.parametrize("packer, data", [
    (JsonPacker(), "{not json"),
    (JsonPacker(), b"\xff\xfe"),
    (MsgpackPacker(), b"\xc1"),
    (MsgpackPacker(), "text frame"),
])
def test_malformed_input_is_a_remote_error(packer, data):
    with pytest.raises(RemoteProtocolError):
        packer.unpack(data)


@pytest.mark.parametrize("text", ['[1,"a"]', ' [1,"a"]', '[1,"a"] ', '\n[1,"a"]\t', '"x"', "3",
                                  '{"a":[1]}', "NaN", "[Infinity]"])
def test_json_unpack_agrees_with_the_stdlib_decoder(text):
    import json
    assert repr(JsonPacker().unpack(text)) == repr(json.loads(text))  # repr: NaN != NaN


@pytest.mark.parametrize("text", ["", " ", "[1] x", "[1][2]", "[1", '"a', "[1,]", "nul"])
def test_json_unpack_refuses_what_the_stdlib_decoder_refuses(text):
    with pytest.raises(RemoteProtocolError, match="malformed JSON"):
        JsonPacker().unpack(text)


@pytest.mark.parametrize("packer", [JsonPacker(), MsgpackPacker()], ids=["json", "msgpack"])
def test_unpackable_values_raise_pack_error_and_packer_recovers(packer):
    with pytest.raises(PackError):
        packer.pack([object()])
    assert packer.unpack(packer.pack([1])) == [1]


def test_get_packer():
    assert get_packer("json").name == "json"
    assert get_packer("msgpack").binary is True
    custom = JsonPacker()
    assert get_packer(custom) is custom
    with pytest.raises(PackError, match="unknown packer"):
        get_packer("edn")
    with pytest.raises(PackError, match="not a packer"):
        get_packer(42)  # type: ignore[arg-type]


def test_each_packer_names_the_content_type_of_its_ajax_answers():
    assert content_type_of(JsonPacker()) == "application/json; charset=utf-8"
    assert content_type_of(MsgpackPacker()) == "application/msgpack"


class _Custom:
    """A packer written before ``content_type`` existed: still a packer."""

    name = "custom"

    def __init__(self, binary: bool) -> None:
        self.binary = binary

    def pack(self, value):
        return repr(value)

    def unpack(self, data):
        return data


@pytest.mark.parametrize("binary, expected", [(False, "application/json; charset=utf-8"),
                                              (True, "application/msgpack")])
def test_a_packer_without_a_content_type_gets_the_default_for_its_kind(binary, expected):
    """What the server labelled every text and binary packer's answers with before packers
    named their own; shown to fail by making the attribute required in ``content_type_of``
    (AttributeError)."""
    custom = _Custom(binary)
    assert get_packer(custom) is custom
    assert content_type_of(custom) == expected
    custom.content_type = "application/cbor"  # type: ignore[attr-defined]
    assert content_type_of(custom) == "application/cbor"
