"""Server -> client calls: asking a client and waiting for its answer, on any process.

A call is a pushed request (``protocol/calls.py``) in the user's log for one client, so it
reaches the client however and wherever it is connected, in order with the pushes around
it, and is replayed if a cut connection comes back within its grace window. What this
service adds is the waiting side:

* the **pending table** of this process's calls, each settled exactly once — by the
  client's answer, routed here by whichever process received it (the call id names this
  process); by its timer (:class:`~flask_sente.exceptions.CallTimeout`); or at once by what
  shows the client cannot answer (:class:`~flask_sente.exceptions.ClientGone`: not
  connected, closed its connection itself, kicked, its grace window ended;
  :class:`~flask_sente.exceptions.CallsUnsupported`: it speaks protocol 1 or 2);
* the **presence watch**: while calls are pending, every :data:`WATCH_EVERY` seconds the
  users they target are looked up (one round trip per user on a shared backplane); a
  client no longer there has left for good (its grace window ended) — this is what turns
  a cut that never comes back into an error well before the timeout;
* the **answer handler** for ``chsk/answer`` (run like an app handler, in the pool):
  checks the answer comes from the client asked, and hands it to the process waiting;
* **refusing** requests that reach an old client (``refuse_legacy``: the flusher and the
  long-polls call it for connections without calls, never for the others).

Callers may be greenlets of the hub's thread (handlers, routes) or other OS threads (a
task pool): the call is started on the hub's thread either way, and each caller waits on
what its thread can wait on.
"""
from __future__ import annotations

import itertools
import logging
import time
import typing as t

import gevent
import gevent.event
import gevent.monkey

from ..backplanes import Backplane
from ..backplanes.base import CallOutcome
from ..connections import WsConnection
from ..core.delivery import Entry, Reader
from ..core.presence import Uid
from ..exceptions import (
    BackplaneError,
    CallError,
    CallsUnsupported,
    CallTimeout,
    ClientGone,
    LocalProtocolError,
    RemoteProtocolError,
)
from ..messages import EventMsg
from ..protocol import calls
from ..protocol import events as ev
from .events import SystemEvents
from .loop import HubLoop
from .table import Connection, ConnectionTable

logger = logging.getLogger("flask_sente")

#: Seconds between two looks at the presence of the clients that pending calls target.
WATCH_EVERY = 0.25
#: Longest wait of a process's first call for its subscription to routed outcomes.
ANSWERS_WAIT = 2.0
#: Seconds a caller waits past a call's timeout for the hub to settle it (a hub that
#: stopped meanwhile cannot): then it raises CallTimeout itself.
SLACK = 5.0

_RealEvent: t.Any = gevent.monkey.get_original("threading", "Event")


class _Outcome:
    """Where one caller waits: a gevent event on the hub's thread, a real lock off it."""

    __slots__ = ("value", "error", "_event")

    def __init__(self, on_hub_thread: bool) -> None:
        self.value: t.Any = None
        self.error: BaseException | None = None
        self._event: t.Any = gevent.event.Event() if on_hub_thread else _RealEvent()

    @property
    def done(self) -> bool:
        return bool(self._event.is_set())

    def settle(self, value: t.Any = None, error: BaseException | None = None) -> None:
        if not self._event.is_set():
            self.value, self.error = value, error
            self._event.set()

    def wait(self, timeout: float) -> bool:
        return bool(self._event.wait(timeout))

    def result(self) -> t.Any:
        if self.error is not None:
            raise self.error
        return self.value


class _Pending:
    """One call of this process, until it is settled."""

    __slots__ = ("id", "uid", "uid_key", "client_id", "event_id", "outcome", "timer")

    def __init__(self, call: str, uid: Uid, client_id: str, event_id: str,
                 outcome: _Outcome) -> None:
        self.id = call
        self.uid = uid
        self.uid_key = repr(uid)
        self.client_id = client_id
        self.event_id = event_id
        self.outcome = outcome
        self.timer: t.Any = None


class CallService:
    """See the module docstring."""

    def __init__(self, loop: HubLoop, backplane: Backplane, table: ConnectionTable,
                 events: SystemEvents) -> None:
        self.loop = loop
        #: Sends one WebSocket connection's batch now: the flusher's, set by the hub (which
        #: builds the flusher after this service, and gives it refuse_legacy).
        self.flush_now: t.Callable[[WsConnection, Reader], None] = \
            lambda conn, reader: None
        self._backplane = backplane
        self._table = table
        self._events = events
        self._counter = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._watcher: gevent.Greenlet | None = None

    # --- asking ------------------------------------------------------------------------------

    def call(self, uid: Uid, event: object, client_id: str, timeout: float) -> t.Any:
        """Ask one client; returns its value or raises a :class:`CallError` (see the
        module docstring). Any thread; blocks the calling greenlet or thread only."""
        pair = self._checked(uid, event, timeout)
        if not isinstance(client_id, str) or not client_id:
            raise LocalProtocolError("call() needs the client_id of the client to ask "
                                     "(clients_of(uid) lists them; call_all asks them all)")
        here = self.loop.on_hub_thread()
        outcome = _Outcome(here)
        if here:
            self._start(uid, pair, client_id, timeout, outcome, None)
        else:
            self.loop.call_from_thread(self._start, uid, pair, client_id, timeout, outcome,
                                       None)
        return self._wait(outcome, timeout, client_id)

    def call_all(self, uid: Uid, event: object, timeout: float) -> dict[str, t.Any]:
        """Ask every client of ``uid`` at once; returns, per client id, its value or the
        :class:`CallError` it ended with, when all are settled (at most ``timeout``)."""
        pair = self._checked(uid, event, timeout)
        here = self.loop.on_hub_thread()
        listed = _Outcome(here)
        if here:
            self._start_all(uid, pair, timeout, listed, here)
        else:
            self.loop.call_from_thread(self._start_all, uid, pair, timeout, listed, here)
        deadline = time.monotonic() + timeout
        outcomes: dict[str, _Outcome] = self._wait(listed, timeout, None)
        results: dict[str, t.Any] = {}
        for client_id, outcome in outcomes.items():
            try:
                results[client_id] = self._wait(
                    outcome, max(0.0, deadline - time.monotonic()), client_id)
            except CallError as exc:
                results[client_id] = exc
        return results

    @staticmethod
    def _checked(uid: Uid, event: object, timeout: float) -> ev.Event:
        if uid is None:
            raise LocalProtocolError("cannot call uid None; anonymous users share the uid "
                                     "flask_sente.ANONYMOUS_UID")
        if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise LocalProtocolError("a call's timeout is a positive number of seconds")
        return ev.validate_outgoing(event)

    @staticmethod
    def _wait(outcome: _Outcome, timeout: float, client_id: str | None) -> t.Any:
        if not outcome.wait(timeout + SLACK):
            raise CallTimeout(f"no answer within {timeout:g} s", client_id)
        return outcome.result()

    def _start_all(self, uid: Uid, pair: ev.Event, timeout: float, listed: _Outcome,
                   caller_on_hub_thread: bool) -> None:
        """On the hub's thread: one call per client of ``uid`` found now (each waited on
        by the caller, from its own thread)."""
        try:
            clients = self._backplane.clients_of(uid)
        except BackplaneError as exc:
            listed.settle(error=exc)
            return
        ids = sorted({cid for ids in clients.values() for cid in ids})
        outcomes = {cid: _Outcome(caller_on_hub_thread) for cid in ids}
        for cid, outcome in outcomes.items():
            self._start(uid, pair, cid, timeout, outcome, clients)
        listed.settle(outcomes)

    def _start(self, uid: Uid, pair: ev.Event, client_id: str, timeout: float,
               outcome: _Outcome, clients: dict[str, list[str]] | None) -> None:
        """On the hub's thread: check the client can answer, then push the request."""
        try:
            if self.loop.closed:
                raise ClientGone("the server is stopping", client_id)
            held = self._held(uid, client_id)
            if held is not None and not held.wire.calls:
                raise CallsUnsupported(calls.old_protocol(held.wire.version, held.wire.dialect),
                                       client_id)
            if clients is None:
                clients = self._backplane.clients_of(uid)
            if not any(client_id in ids for ids in clients.values()):
                raise ClientGone(f"client {client_id!r} of uid {uid!r} is not connected",
                                 client_id)
        except (CallError, BackplaneError) as exc:
            outcome.settle(error=exc)
            return
        self._backplane.await_answers(ANSWERS_WAIT)
        call = calls.call_id(next(self._counter), self._backplane.node)
        pending = self._pending[call] = _Pending(call, uid, client_id, pair[0], outcome)
        pending.timer = self.loop.timer(timeout)
        pending.timer.start(self._timed_out, call)
        try:
            self._backplane.push(uid, calls.request(call, pair, timeout), client_id,
                                 time.monotonic())
        except Exception as exc:  # an unpackable event: the caller hears why
            self._settle(call, error=exc)
            return
        if isinstance(held, WsConnection) and held.reader is not None \
                and not self._backplane.shared:
            # The request is in this process's log: it leaves now, not at the end of the
            # connection's batching window (a call is waited on; a push is not).
            self.flush_now(held, held.reader)
        if self._watcher is None:
            self._watcher = self.loop.spawn(self._watch)

    def _held(self, uid: Uid, client_id: str) -> Connection | None:
        conn: Connection | None = self._table.ws(uid, client_id)
        if conn is None:
            conn = self._table.ajax(uid, client_id)
        return conn

    # --- settling ----------------------------------------------------------------------------

    def _settle(self, call: str, value: t.Any = None,
                error: BaseException | None = None) -> None:
        pending = self._pending.pop(call, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.close()
        pending.outcome.settle(value, error)

    def _timed_out(self, call: str) -> None:
        pending = self._pending.get(call)
        if pending is not None:
            self._settle(call, error=CallTimeout(
                f"client {pending.client_id!r} did not answer {pending.event_id!r} in time",
                pending.client_id))

    def _gone(self, match: t.Callable[[_Pending], bool], why: str) -> None:
        for pending in [p for p in self._pending.values() if match(p)]:
            self._settle(pending.id, error=ClientGone(
                f"client {pending.client_id!r} {why}", pending.client_id))

    def client_closed(self, uid_key: str, client_id: str) -> None:
        """The client closed its connection itself, here or on another process."""
        self._gone(lambda p: p.client_id == client_id and p.uid_key == uid_key,
                   "closed its connection")

    def kicked(self, uid: Uid) -> None:
        """Every client of ``uid`` is gone (the kick reached this process)."""
        self._gone(lambda p: p.uid == uid, "was kicked")

    def stop(self) -> None:
        """The hub stops: nothing will answer its calls."""
        self._gone(lambda p: True, "cannot answer: the server is stopping")

    def _watch(self) -> None:
        """While calls are pending: fail those whose client left (see the module
        docstring). One look per user per round; a shared store that does not answer
        skips the round (its calls keep their timers)."""
        try:
            while self._pending and not self.loop.closed:
                gevent.sleep(WATCH_EVERY)
                by_uid: dict[t.Any, list[_Pending]] = {}
                for pending in list(self._pending.values()):
                    try:
                        by_uid.setdefault(pending.uid, []).append(pending)
                    except TypeError:  # an unhashable uid: looked up on its own
                        self._look(pending.uid, [pending])
                for uid, targets in by_uid.items():
                    self._look(uid, targets)
        finally:
            self._watcher = None

    def _look(self, uid: Uid, targets: list[_Pending]) -> None:
        try:
            clients = self._backplane.clients_of(uid)
        except BackplaneError:
            return
        present = {cid for ids in clients.values() for cid in ids}
        for pending in targets:
            if pending.client_id not in present and pending.id in self._pending:
                self._settle(pending.id, error=ClientGone(
                    f"client {pending.client_id!r} left (its grace window ended)",
                    pending.client_id))

    # --- answers -----------------------------------------------------------------------------

    def answered(self, msg: EventMsg) -> None:
        """``chsk/answer`` from a client (the router runs it like an app handler): hand it
        to the process whose call it is."""
        try:
            answer = calls.decode_answer(msg.data)
        except RemoteProtocolError as exc:
            self._events.bad_event(list(msg.event), str(exc), msg.uid, msg.client_id,
                                   t.cast(str, msg.transport), msg.request)
            return
        outcome = calls.outcome_of(answer, msg.uid, msg.client_id)
        self._route(outcome)

    def _route(self, outcome: CallOutcome) -> None:
        try:
            self._backplane.route_call(calls.node_of(outcome["id"]), outcome)
        except BackplaneError as exc:
            logger.warning("the answer to call %s was lost: %s (the caller times out)",
                           outcome["id"], exc)

    def routed(self, outcome: CallOutcome) -> None:
        """An outcome of one of this process's calls (from any process)."""
        call = outcome.get("id")
        pending = self._pending.get(call) if isinstance(call, str) else None
        if pending is None:
            logger.debug("an answer to call %r, which is not waiting (settled, or not "
                         "this process's): dropped", call)
            return
        if not calls.from_asked(outcome, pending.uid, pending.client_id):
            logger.debug("an answer to call %s from another client than the one asked: "
                         "dropped", call)
            return
        value, error = calls.result(outcome, pending.client_id)
        self._settle(pending.id, value, error)

    # --- old clients -------------------------------------------------------------------------

    def refuse_legacy(self, conn: Connection, entries: t.Iterable[tuple[str, Entry]]) -> None:
        """Requests about to reach ``conn``, whose client speaks no calls: their callers
        are told at once (the client itself ignores an unknown ``chsk/`` push)."""
        for _, entry in entries:
            event = entry.event
            if (entry.target == conn.client_id and type(event) is list and event
                    and event[0] == ev.CALL and isinstance(event[1], dict)):
                call = event[1].get("id")
                if isinstance(call, str):
                    self._route(calls.unsupported(call, conn.uid, conn.client_id,
                                                  conn.wire.version, conn.wire.dialect))

