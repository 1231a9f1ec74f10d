"""The shared vectors in ``tests/vectors/`` against the Python client's sans-I/O parts.

``tests/js/vectors.test.mjs`` runs the same files against sente.js, so a behaviour both
clients must share is stated once, as data.
"""
from __future__ import annotations

import collections
import inspect
import json
import pathlib
import re
import typing as t

import pytest

from flask_sente.client import Client
from flask_sente.client.positions import Positions, read_after
from flask_sente.client.state import (
    STOP_STATUSES,
    CloseInfo,
    after_ws_failure,
    describe_http_failure,
    describe_ws_close,
    handshake_error,
    initial_state,
    should_reconnect,
    state_after_close,
    state_after_handshake,
)
from flask_sente.client.topicbook import TopicBook
from flask_sente.client.topics import REJOIN_TIMEOUT
from flask_sente.config import CLIENT_AJAX_TIMEOUT, Options
from flask_sente.exceptions import RemoteProtocolError
from flask_sente.protocol import PROTOCOL_VERSION, closecodes, wire
from flask_sente.protocol import events as ev
from flask_sente.protocol.backoff import backoff_delay

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors"
README = VECTORS.parent.parent / "README.md"


def load(name: str) -> t.Any:
    return json.loads((VECTORS / name).read_text())


def close_of(spec: dict[str, t.Any]) -> CloseInfo:
    return CloseInfo(spec["reason"], code=spec.get("code"), status=spec.get("status"),
                     message=spec.get("message") or "")


def as_dict(close: CloseInfo | None) -> dict[str, t.Any] | None:
    """A close as the vectors write it: only the fields that are set."""
    if close is None:
        return None
    out = {"reason": close.reason, "code": close.code, "status": close.status,
           "message": close.message}
    return {k: v for k, v in out.items() if v not in (None, "")}


def test_every_vector_file_has_a_runner() -> None:
    names = {p.name for p in VECTORS.glob("*.json")}
    assert names == {"backoff.json", "close_codes.json", "reconnect.json", "ws_failure.json",
                     "transitions.json", "envelopes.json", "handshake.json",
                     "topics_handshake.json", "reply_after.json", "positions.json",
                     "defaults.json",
                     # run elsewhere: tests/client/test_auto_mode_rule.py and, through a
                     # whole client over real sockets, tests/client/test_calls_vectors.py
                     "auto_mode.json", "calls.json"}


@pytest.mark.parametrize("case", load("backoff.json")["cases"], ids=str)
def test_backoff(case: dict[str, t.Any]) -> None:
    options = {"cap": case["cap"]} if "cap" in case else {}
    assert backoff_delay(case["attempt"], case["rand"], **options) == pytest.approx(
        case["seconds"])


def test_close_codes() -> None:
    data = load("close_codes.json")
    assert closecodes.BY_NAME == data["codes"]
    assert sorted(closecodes.NO_RECONNECT_CODES) == data["no_reconnect"]


def test_stop_statuses() -> None:
    assert sorted(STOP_STATUSES) == load("reconnect.json")["stop_statuses"]


@pytest.mark.parametrize("case", load("reconnect.json")["ws_close"], ids=str)
def test_ws_close(case: dict[str, t.Any]) -> None:
    close = describe_ws_close(case["code"], case["text"], received=case["received"],
                              local_reason=case.get("local_reason"))
    assert as_dict(close) == case["expect"]
    assert should_reconnect(close) is case["reconnect"]


@pytest.mark.parametrize("case", load("reconnect.json")["http_failure"], ids=str)
def test_http_failure(case: dict[str, t.Any]) -> None:
    close = describe_http_failure(case["status"], case["message"])
    assert as_dict(close) == case["expect"]
    assert should_reconnect(close) is case["reconnect"]["default"]
    assert should_reconnect(close, reconnect_on_auth_failure=True) is (
        case["reconnect"]["reconnect_on_auth_failure"])


@pytest.mark.parametrize("case", load("reconnect.json")["closes"], ids=str)
def test_should_reconnect(case: dict[str, t.Any]) -> None:
    flag = case.get("reconnect_on_auth_failure", False)
    assert should_reconnect(close_of(case["close"]), reconnect_on_auth_failure=flag) is (
        case["reconnect"])


@pytest.mark.parametrize("case", load("ws_failure.json")["cases"], ids=str)
def test_ws_failure(case: dict[str, t.Any]) -> None:
    decision = after_ws_failure(
        auto=case["auto"],
        probe_status=case["probe"]["status"], probe_handshake=case["probe"]["handshake"],
        reconnect_on_auth_failure=case.get("reconnect_on_auth_failure", False))
    assert decision == case["decision"]


@pytest.mark.parametrize("sequence", load("transitions.json")["sequences"],
                         ids=lambda s: s["name"])
def test_transitions(sequence: dict[str, t.Any]) -> None:
    def view(state: t.Any, fields: t.Iterable[str]) -> dict[str, t.Any]:
        return {f: as_dict(state.last_close) if f == "last_close" else getattr(state, f)
                for f in fields}

    state = initial_state(sequence["type"])
    assert view(state, sequence["initial"]) == sequence["initial"]
    for step in sequence["steps"]:
        if "handshake" in step:
            state = state_after_handshake(state, step["handshake"]["transport"],
                                          step["handshake"]["info"])
        else:
            state = state_after_close(state, close_of(step["close"]))
        assert view(state, step["expect"]) == step["expect"], step


@pytest.mark.parametrize("case", load("envelopes.json")["valid"], ids=lambda c: c["name"])
def test_valid_envelopes(case: dict[str, t.Any]) -> None:
    message = wire.decode_server(case["value"])
    got = {"kind": message.kind, "cb_id": message.cb_id,
           "events": [list(e) for e in message.events], "outcome": message.outcome,
           "value": message.value}
    assert got == case["expect"]


@pytest.mark.parametrize("case", load("envelopes.json")["invalid"], ids=lambda c: c["name"])
def test_invalid_envelopes(case: dict[str, t.Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        wire.decode_server(case["value"])


def test_handshake_version_check() -> None:
    """Broken on purpose by accepting any version from 2 on in ``handshake_error``: the
    ``$PREVIOUS`` case failed (before it was mapped, the text "$PREVIOUS" itself was the
    version checked, and was refused whatever the rule)."""
    versions = {"$VERSION": PROTOCOL_VERSION, "$OTHER": PROTOCOL_VERSION + 1,
                "$PREVIOUS": PROTOCOL_VERSION - 1}
    for case in load("handshake.json")["cases"]:
        info = {k: versions.get(v, v) if isinstance(v, str) else v
                for k, v in case["info"].items()}
        assert not any(isinstance(v, str) and v.startswith("$") for v in info.values()), case
        assert (handshake_error(info) is None) is case["ok"], case


@pytest.mark.parametrize("case", load("reply_after.json")["headers"], ids=str)
def test_reply_after_header(case: dict[str, t.Any]) -> None:
    after = read_after(case["text"])
    assert (None if after is None else {k: list(v) for k, v in after.items()}) == case["after"]


@pytest.mark.parametrize("case", load("reply_after.json")["cases"], ids=lambda c: c["name"])
def test_reply_after_reached(case: dict[str, t.Any]) -> None:
    positions = Positions()
    positions.handshake({"uid": "u", "protocol": 2, "positions": case["positions"]})
    for topic, position in case["topics"].items():
        positions.follow(topic)
        if position is not None:
            positions.joined(topic, position, None)
    after = {name: (pos[0], pos[1]) for name, pos in case["after"].items()}
    assert positions.reached(after) is case["reached"]


def _positions_at(before: dict[str, t.Any] | None) -> Positions:
    """A client's positions standing at ``before`` (None: a client never connected)."""
    positions = Positions()
    if before is not None:
        positions.handshake({"uid": "ann", "protocol": 2, "positions": before})
    return positions


def _current(positions: Positions) -> dict[str, list[t.Any]]:
    return {name: list(pos) for name, pos in positions.current.items()}


@pytest.mark.parametrize("case", load("positions.json")["handshakes"], ids=lambda c: c["name"])
def test_positions_after_handshake(case: dict[str, t.Any]) -> None:
    """Broken on purpose by letting ``Positions.handshake`` adopt ``t:`` names (dropping
    its ``not name.startswith("t:")``): "topic names in a handshake are ignored" failed
    (the one at seq -1 is no position at all, and stays out anyway)."""
    positions = _positions_at(case["before"])
    positions.handshake(case["info"])
    assert _current(positions) == case["expect"]


@pytest.mark.parametrize("case", load("positions.json")["batches"], ids=lambda c: c["name"])
def test_positions_batches(case: dict[str, t.Any]) -> None:
    """Broken on purpose by letting a mark move a position back within its epoch (``seq !=
    old[1]`` for ``seq > old[1]`` in ``Positions.batch``): the replay that overlaps, and
    the mark behind in one log, failed."""
    positions = _positions_at(case["before"])
    for n, step in enumerate(case["steps"]):
        events = [(event[0], event[1]) for event in step["events"]]
        delivered = [event_id for event_id, _ in positions.batch(events)
                     if not ev.is_reserved(event_id)]
        assert delivered == step["delivered"], f"step {n}"
        assert _current(positions) == step["positions"], f"step {n}"


#: The Python name of each shared default (defaults.json) -> sente.js's option name.
JS_OPTION = {"keepalive": "keepAliveMs", "ping_timeout": "pingTimeoutMs",
             "upgrade_retry": "upgradeRetryMs", "connect_timeout": "connectTimeoutMs",
             "ajax_timeout": "ajaxTimeoutMs", "call_timeout": "callTimeoutMs"}


def test_option_defaults() -> None:
    """The Python client's defaults are the shared ones; so is the server's copy of the
    Ajax timeout (it bounds ``lp_timeout``). tests/js/vectors.test.mjs checks sente.js's.

    Broken on purpose by making ``connect_timeout`` default to 15.0, and (separately)
    ``CLIENT_AJAX_TIMEOUT`` 50.0 in flask_sente/config.py: this test failed each time."""
    defaults = load("defaults.json")["defaults"]
    assert set(defaults) == set(JS_OPTION)
    init = inspect.signature(Client.__init__).parameters
    for name in ("keepalive", "ping_timeout", "upgrade_retry", "connect_timeout",
                 "ajax_timeout"):
        assert init[name].default == defaults[name], name
    for method in (Client.call, Client.join, Client.leave):
        assert inspect.signature(method).parameters["timeout"].default == (
            defaults["call_timeout"]), method.__name__
    assert REJOIN_TIMEOUT == defaults["call_timeout"]
    assert CLIENT_AJAX_TIMEOUT == defaults["ajax_timeout"]


def test_option_defaults_fit_the_servers() -> None:
    """The rules of defaults.json against the server's defaults: a parked poll is answered
    before the client's Ajax timeout, and a call made while connecting still hears the
    server's ``chsk/timeout`` before its own timer (sente.js's defaults before they were
    settled broke it: 20 + 15 > 25).

    Broken on purpose by setting ``call_timeout`` to 25 in defaults.json: this test
    failed."""
    defaults = load("defaults.json")["defaults"]
    options = Options()
    assert options.lp_timeout < defaults["ajax_timeout"]
    assert options.reply_timeout + defaults["connect_timeout"] <= defaults["call_timeout"]


def test_option_tables_state_the_defaults() -> None:
    """The README's two option tables (included in the docs) show the shared defaults.

    Broken on purpose by putting back the browser table's ``connectTimeoutMs`` 15000:
    this test failed."""
    readme = README.read_text()
    for name, value in load("defaults.json")["defaults"].items():
        js_row = re.search(rf"^\| `{JS_OPTION[name]}` \| `(\d+)` \|", readme, re.M)
        assert js_row is not None and int(js_row[1]) == value * 1000, JS_OPTION[name]
        if name == "call_timeout":  # an argument of call(), join() and leave(), no option
            continue
        python_row = re.search(rf"^\| `{name}` \| `([\d.]+)` s \|", readme, re.M)
        assert python_row is not None and float(python_row[1]) == value, name


class TopicsModel:
    """The Python client's topics without I/O, driven the way ``Topics`` drives them
    (client/topics.py): a :class:`TopicBook` over :class:`Positions`, and the join and
    rejoin calls still unanswered, oldest first per topic."""

    def __init__(self) -> None:
        self.positions = Positions()
        self.book = TopicBook(self.positions)
        #: topic -> unanswered calls: (kind, the position the call carried)
        self.calls: dict[str, collections.deque[tuple[str, t.Any]]] = (
            collections.defaultdict(collections.deque))

    def table(self) -> dict[str, t.Any]:
        return {topic: {"state": state, "position": _listed(self.positions.position(topic))}
                for topic, state in self.book.states().items()}

    def step(self, step: dict[str, t.Any]) -> dict[str, t.Any]:
        """Apply one step; what it did, in the vectors' terms."""
        got: dict[str, t.Any] = {"left": [], "rejoined": []}
        if "join" in step:
            topic = step["join"]
            self.book.join(topic)
            sent = self.positions.position(topic)  # read when the call's turn comes: now
            self.calls[topic].append(("join", sent))
            got["sent"] = _listed(sent)
        elif "leave" in step:
            self.book.leave(step["leave"])
        elif "handshake" in step:
            info = {"uid": step["handshake"]["uid"], "protocol": 2, "recovered": None,
                    "positions": step["handshake"].get("positions", {"u": ["eu", 0]})}
            _, dropped = self.book.handshake(info)
            got["positions"] = {name: list(pos) for name, pos in self.positions.current.items()
                                if not name.startswith("t:")}
            got["left"] = [{"topic": topic, "reason": "user-changed"} for topic in dropped]
            got["rejoin"] = []
            for topic in self.book.rejoin_round():
                sent = self.book.join(topic)
                self.calls[topic].append(("rejoin", sent))
                got["rejoin"].append({"topic": topic, "position": _listed(sent)})
        elif "reply" in step:
            reply = step["reply"]
            topic = reply["topic"]
            kind, sent = self.calls[topic].popleft()
            if kind == "join":
                if reply["ok"]:
                    self.book.allowed(topic, None, reply.get("position"), sent)
                else:
                    self.book.failed(topic)
            elif not reply["ok"]:
                if topic in self.book.joins:  # as Topics._forget_topic
                    self.book.leave(topic)
                    got["left"].append({"topic": topic, "reason": reply["reason"]})
            elif self.book.allowed(topic, self.book.joins.get(topic), reply.get("position"),
                                   sent):
                got["rejoined"].append({"topic": topic, "recovered": reply.get("recovered")})
        elif "fail" in step:
            self._fail(step["fail"])
        elif "batch" in step:
            topic = step["batch"]["topic"]
            notice = ([("chsk/joined", {"topic": topic, "position": step["batch"]["joined"]})]
                      if "joined" in step["batch"] else [])
            events = self.positions.batch([*notice, ("chsk/topic", [topic, ["t/said", "x"]]),
                                           ("chsk/pos", step["batch"]["mark"])])
            got["delivered"] = False
            for event_id, data in events:  # as Topics.system_push
                if event_id == "chsk/joined":
                    self.book.server_joined(data["topic"], data["position"])
                elif event_id == "chsk/topic":
                    got["delivered"] = self.book.follows(topic)
        elif "kick" in step:
            for topic in list(self.calls):
                while self.calls[topic]:
                    self._fail(topic)
            got["left"] = [{"topic": topic, "reason": "kicked"} for topic in self.book.kicked()]
        else:
            raise AssertionError(f"unknown step {step}")
        got["topics"] = self.table()
        return got

    def _fail(self, topic: str) -> None:
        kind, _ = self.calls[topic].popleft()
        if kind == "join":  # a rejoin that fails is tried again after the next handshake
            self.book.failed(topic)


def _listed(position: t.Any) -> list[t.Any] | None:
    return None if position is None else list(position)


@pytest.mark.parametrize("sequence", load("topics_handshake.json")["sequences"],
                         ids=lambda s: s["name"])
def test_topics_handshake(sequence: dict[str, t.Any]) -> None:
    model = TopicsModel()
    for n, step in enumerate(sequence["steps"]):
        got = model.step(step)
        for key, expected in step.get("expect", {}).items():
            assert got[key] == expected, f"step {n} {step}: {key}"
