"""What the chaos drill checks, from what it recorded: pure functions over data, no I/O, so a
run's data (``data.json`` in its work folder) can be checked again and the rules can be
tested on made-up records (tests/scaleout/test_chaos.py).

**Records.** Each client (a Python :class:`~flask_sente.client.Client` or a sente.js page)
has one list of records in the order its handlers saw them:

- ``["e", stream, n, t_push, t_recv, final]`` an event of ``stream`` with counter ``n``;
- ``["hs", recovered, type, t, first]`` a handshake (``recovered`` true / false / null);
- ``["rj", topic, recovered, t]`` a topic rejoined after a reconnect;
- ``["jn", topic, null, t]`` the drill's own join answered; ``["jerr", topic, error, t]``;
- ``["left", topic, reason, t]`` the client was taken out of a topic (it never leaves one
  itself in the drill);
- ``["st", open, type, t, last_close]`` the connection opened or closed;
- ``["cl", last_close, type, t]`` a connection or connection attempt ended (every one).

**Streams.** A stream is one producer's numbered pushes to one target: ``emit:u:<uid>`` and
``emit:*`` (the Emitter process), ``w<pid>:u:<uid>``, ``w<pid>:*``, ``w<pid>:t:<topic>``
(one gunicorn worker's HTTP-driven ``send`` / ``broadcast`` / ``publish``). For each, the
drill knows when each counter was *issued* (before the push could reach Redis) and the
final marker's counter, when one was pushed.

**The rules**, per client and stream:

- *Expected*: every counter issued after the client was ready for the stream (its first
  handshake; for a topic, its join answered) up to the final marker. For a stream whose
  worker died (no final marker), up to the highest counter any client got.
- *Gap*: a run of expected counters never received, with a later one received. It is
  *announced* if the client was told in between — a handshake saying ``recovered: false``
  for user and broadcast streams; for a topic, only a rejoin of that topic saying
  ``recovered: false`` (the rejoin may answer after the connection's first events, so
  until the next handshake) — and *silent* otherwise. Silent gaps are violations.
- *Duplicate*: a counter received twice. *Reordering*: a counter received after a higher
  one. Both violations.
- *Stuck*: a final marker that did not arrive (the drill waits for them after settling).
- *Refused*: a connection attempt that failed more than ``off_bound`` seconds after every
  fault that concerned the client had ended (the server should have taken it back).
- *Silent while open*: a connection open for more than ``off_bound`` seconds without an
  event (traffic flows at several events a second to every client).
- *Kept off* (figures, not a rule): per fault, how long until each client it concerned got
  an event pushed after the fault's start, and after its end. A client's own backoff after
  repeated failures counts here (it is the documented schedule, not a refusal).

**Calls** (server -> client, protocol 3; :func:`check_calls`). The drill asks a random
worker to call a random client (``sente.call(uid, ("chaos/ask", {"nonce", "x"}),
client_id=...)`` in a greenlet of that worker); the worker writes down the call's start and
its outcome (the value, or the ``CallError`` / ``BackplaneError`` class name). Every client
answers with :func:`answer_value` and records ``["ans", nonce, value, t]``. A nonce names
one call. The rules:

- *Lost*: a call a worker started with no outcome at the end — unless that worker was
  SIGKILLed after the call began (*caller killed*: nobody is left to tell; counted).
- *Answered twice*: two outcomes for one call at the caller.
- *Handler twice*: the answer handler ran twice for one nonce (a replayed request must not
  run it again); *misrouted*: it ran on another client than the one asked.
- *Wrong value*: a value outcome that differs from what the client computed for that nonce
  (or that no client computed).
- *Call error*: an outcome the drill's clients never cause (``NoAnswerHandler``,
  ``ClientCallError``, ``CallsUnsupported``, any other exception).
- *Unexplained*: a ``CallTimeout``, ``ClientGone`` or ``BackplaneError`` with no fault
  near the call (none from :data:`CALL_FAULT_AFTER` s before it began to its end; for a
  ``BackplaneError``, no Redis fault) while the client stayed open throughout: nothing in
  the run excuses it. With a fault near, or the client off at some point, these are
  honest outcomes: counted per kind with the faults that were near, and the timeouts whose
  handler ran while the client stayed open (:data:`ANSWER_OPEN_AFTER` s after it, or to the
  outcome: the answer, not the request, was lost) apart.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import typing as t

Rec = list[t.Any]

#: Fault kinds, in the order the report lists them.
FAULT_KINDS = ["cut", "kill-worker", "redis-freeze", "redis-restart", "client-break",
               "no-upgrade", "combo"]


@dataclasses.dataclass
class ClientLog:
    label: str                 #: e.g. "py07"
    uid: str
    kind: str                  #: "python" or "chromium"
    requested: str             #: the type asked for: "ws", "ajax", "auto", "auto/no-upgrade"
    topics: list[str]          #: the topics the drill joined it to
    recs: list[Rec]
    end_state: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    @property
    def group(self) -> str:
        """The client's kind and requested transport, as the report groups them."""
        return f"{'py' if self.kind == 'python' else 'js'}-{self.requested}"


@dataclasses.dataclass
class StreamLog:
    stream: str
    issued: dict[int, float]   #: counter -> time it was issued (known ones)
    final: int | None = None   #: the final marker's counter, when one was pushed
    acked_max: int = 0         #: highest counter the producer saw accepted
    #: counter -> tries, for pushes the producer had to try again (the Emitter after a
    #: BackplaneError): a duplicate of one may be two entries in the log.
    retried: dict[int, int] = dataclasses.field(default_factory=dict)

    @property
    def producer(self) -> str:
        return self.stream.split(":", 1)[0]

    @property
    def kind(self) -> str:
        return parse_stream(self.stream)[1]

    @property
    def target(self) -> str | None:
        return parse_stream(self.stream)[2]


@dataclasses.dataclass
class Fault:
    kind: str
    start: float
    end: float
    detail: str
    targets: list[str] | None = None   #: client labels it concerned; None: every client
    #: For combined faults: the kinds of its parts.
    parts: list[str] = dataclasses.field(default_factory=list)

    def concerns(self, label: str) -> bool:
        return self.targets is None or label in self.targets


@dataclasses.dataclass
class Violation:
    kind: str
    client: str = ""
    transport: str = ""
    stream: str = ""
    expected: str = ""
    got: str = ""
    t: float = 0.0
    context: list[str] = dataclasses.field(default_factory=list)
    count: int = 1             #: entries it covers (a gap's length, duplicates, ...)


@dataclasses.dataclass
class Call:
    """One call the drill asked a worker to make, and what became of it."""
    nonce: str
    target: str                #: the label of the client asked
    client_id: str
    x: int
    asked: float               #: when the drill asked (its POST)
    timeout: float
    pid: int | None = None     #: the worker that took it (its HTTP answer or its start line)
    http_error: str = ""       #: the drill's POST failed (the call may have started anyway)
    started: float | None = None   #: when the worker wrote its start line
    #: The worker's outcome lines: ``{"kind", "value" | "message", "t", "pid"}``; one,
    #: unless something is wrong.
    outcomes: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Report:
    violations: list[Violation]
    counts: dict[str, int]
    off: dict[str, dict[str, t.Any]]      #: fault kind -> kept-off figures
    latency: dict[str, dict[str, float]]  #: group -> p50/p99/max (s)
    deliveries: dict[str, int]            #: group -> events received
    group_violations: dict[str, collections.Counter[str]]
    info: list[str]
    #: The calls section (:func:`check_calls`); empty when the run made no calls.
    calls: dict[str, t.Any] = dataclasses.field(default_factory=dict)


def parse_stream(stream: str) -> tuple[str, str, str | None]:
    """``(producer, kind, target)``: kind ``u`` (a user), ``*`` (broadcast), ``t`` (topic)."""
    producer, _, rest = stream.partition(":")
    if rest == "*":
        return producer, "*", None
    kind, _, target = rest.partition(":")
    return producer, kind, target


def percentile(values: t.Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


class _Client:
    """One client's records, indexed for the rules."""

    def __init__(self, log: ClientLog) -> None:
        self.log = log
        self.events: dict[str, list[tuple[int, int, float, float]]] = collections.defaultdict(
            list)  # stream -> [(idx, n, t_recv, t_push)]
        self.handshakes: list[tuple[int, t.Any, str, float]] = []   # (idx, recovered, type, t)
        self.rejoins: dict[str, list[tuple[int, t.Any, float]]] = collections.defaultdict(list)
        self.joins: dict[str, tuple[int, float]] = {}
        self.left: dict[str, tuple[int, t.Any, float]] = {}
        self.receipts: list[tuple[float, float]] = []   # (t_recv, t_push)
        self.notes: list[tuple[int, float, str]] = []   # (idx, t, text) for the context
        self.switches: list[tuple[float, bool]] = []    # (t, open)
        # (idx, t, close, transport) of every connection or attempt that ended
        self.failures: list[tuple[int, float, t.Any, str]] = []
        self._last_failure_note = float("-inf")
        self.answers: list[tuple[int, str, t.Any, float]] = []  # (idx, nonce, value, t)
        for idx, rec in enumerate(log.recs):
            tag = rec[0]
            if tag == "e":
                _, stream, n, t_push, t_recv = rec[:5]
                self.events[stream].append((idx, int(n), float(t_recv), float(t_push)))
                self.receipts.append((float(t_recv), float(t_push)))
            elif tag == "hs":
                self.handshakes.append((idx, rec[1], str(rec[2]), float(rec[3])))
                self.notes.append((idx, float(rec[3]),
                                   f"handshake {rec[2]} recovered={_js(rec[1])}"))
            elif tag == "rj":
                self.rejoins[rec[1]].append((idx, rec[2], float(rec[3])))
                self.notes.append((idx, float(rec[3]),
                                   f"rejoined {rec[1]} recovered={_js(rec[2])}"))
            elif tag == "jn":
                self.joins.setdefault(rec[1], (idx, float(rec[3])))
            elif tag == "left":
                self.left.setdefault(rec[1], (idx, rec[2], float(rec[3])))
                self.notes.append((idx, float(rec[3]), f"left {rec[1]} ({rec[2]})"))
            elif tag == "st":
                close = rec[4] if len(rec) > 4 else None
                text = "open" if rec[1] else f"closed {_close_text(close)}"
                self.notes.append((idx, float(rec[3]), f"{text} ({rec[2]})"))
                self.switches.append((float(rec[3]), bool(rec[1])))
            elif tag == "cl":
                self.failures.append((idx, float(rec[3]), rec[1], str(rec[2])))
                if self.failures[-1][1] - self._last_failure_note > 1.0:
                    self.notes.append((idx, float(rec[3]),
                                       f"attempt failed {_close_text(rec[1])} ({rec[2]})"))
                    self._last_failure_note = float(rec[3])
            elif tag == "jerr":
                self.notes.append((idx, float(rec[3]), f"join {rec[1]} failed: {rec[2]}"))
            elif tag == "ans":
                self.answers.append((idx, str(rec[1]), rec[2], float(rec[3])))
        self.receipts.sort()
        self.hs_idx = [h[0] for h in self.handshakes]

    def ready(self, kind: str, target: str | None) -> tuple[int, float] | None:
        if kind == "t":
            return self.joins.get(t.cast(str, target))
        if not self.handshakes:
            return None
        return self.handshakes[0][0], self.handshakes[0][3]

    def open_spans(self, until: float) -> list[tuple[float, float]]:
        """(opened, closed) for every time the connection was open (closed: ``until`` if it
        still was)."""
        spans: list[tuple[float, float]] = []
        opened: float | None = None
        for tm, is_open in self.switches:
            if is_open and opened is None:
                opened = tm
            elif not is_open and opened is not None:
                spans.append((opened, tm))
                opened = None
        if opened is not None and opened < until:
            spans.append((opened, until))
        return spans

    def open_throughout(self, start: float, end: float) -> bool:
        """Whether the connection was open from ``start`` to ``end`` without a close."""
        is_open = False
        for tm, state in self.switches:
            if tm <= start:
                is_open = state
            elif tm <= end and not state:
                return False
        return is_open

    def transport_at_time(self, tm: float) -> str:
        kinds = [kind for _, _, kind, when in self.handshakes if when <= tm]
        return kinds[-1] if kinds else self.log.requested

    def transport_at(self, idx: int) -> str:
        pos = bisect.bisect_right(self.hs_idx, idx) - 1
        return self.handshakes[pos][2] if pos >= 0 else self.log.requested

    def told(self, kind: str, target: str | None, after: int, before: float) -> bool:
        """Whether the client was told it missed something between record ``after`` and
        ``before`` (an index; may be inf)."""
        if kind == "t":
            return any(after < idx < before and recovered is False
                       for idx, recovered, _ in self.rejoins.get(t.cast(str, target), []))
        return any(after < idx < before and recovered is False
                   for idx, recovered, _, _ in self.handshakes)

    def next_handshake(self, idx: int) -> float:
        pos = bisect.bisect_right(self.hs_idx, idx)
        return float(self.hs_idx[pos]) if pos < len(self.hs_idx) else float("inf")

    def context(self, lo: int, hi: float, t0: float, limit: int = 8) -> list[str]:
        """What the client saw between records ``lo`` and ``hi``, as report lines."""
        lines = [f"{tm - t0:+.2f}s {text}" for idx, tm, text in self.notes if lo < idx < hi]
        if len(lines) > limit:
            lines = lines[:limit // 2] + [f"... {len(lines) - limit} more"] + lines[-limit // 2:]
        return lines


    def context_in_time(self, start: float, end: float, t0: float, limit: int = 8) -> list[str]:
        lines = [f"{tm - t0:+.2f}s {text}" for _, tm, text in self.notes if start <= tm <= end]
        if len(lines) > limit:
            lines = lines[:limit // 2] + [f"... {len(lines) - limit} more"] + lines[-limit // 2:]
        return lines


def _issued(log: StreamLog, lo: int, hi: int, t0: float) -> str:
    """When the missing counters were issued, as far as the drill knows."""
    times = [log.issued[n] - t0 for n in (lo, hi) if n in log.issued]
    if not times:
        return ""
    if len(times) == 1 or lo == hi:
        return f" (issued at +{times[0]:.2f}s)"
    return f" (issued +{times[0]:.2f}s..+{times[1]:.2f}s)"


def _js(value: t.Any) -> str:
    return {True: "true", False: "false", None: "null"}.get(value, repr(value))


def _close_text(close: t.Any) -> str:
    if not isinstance(close, dict):
        return ""
    parts = [str(close.get("reason") or "")]
    for key in ("code", "status"):
        if close.get(key) is not None:
            parts.append(f"{key} {close[key]}")
    if close.get("message"):
        parts.append(repr(str(close["message"])[:80]))
    return " ".join(p for p in parts if p)


def faults_near(faults: list[Fault], label: str, start: float, end: float, t0: float,
                before: float = 3.0) -> list[str]:
    return [f"fault {f.start - t0:+.2f}s..{f.end - t0:+.2f}s {f.kind} {f.detail}".rstrip()
            for f in faults if f.concerns(label) and f.start <= end + 0.5
            and f.end >= start - before]


def check(clients: list[ClientLog], streams: dict[str, StreamLog], faults: list[Fault], *,
          t0: float, traffic_end: float, off_bound: float = 10.0,
          extra: list[Violation] | None = None, calls: list[Call] | None = None,
          killed: dict[int, float] | None = None) -> Report:
    """Apply every rule; ``extra`` are violations found elsewhere (presence, tracebacks);
    ``calls`` the calls made, ``killed`` the workers SIGKILLed (pid -> when)."""
    views = [_Client(c) for c in clients]
    violations: list[Violation] = []
    counts: collections.Counter[str] = collections.Counter()
    info: list[str] = []
    by_label = {v.log.label: v for v in views}

    # Streams seen by clients but unknown to the drill (an HTTP answer lost, say) still count.
    streams = dict(streams)
    for view in views:
        for stream in view.events:
            streams.setdefault(stream, StreamLog(stream, {}))

    def eligible(view: _Client, log: StreamLog) -> bool:
        kind, target = log.kind, log.target
        return (kind == "*" or (kind == "u" and target == view.log.uid)
                or (kind == "t" and target in view.joins))

    # The end of a stream without a final marker: the highest counter anyone got.
    seen_max: dict[str, int] = {}
    for view in views:
        for stream, evs in view.events.items():
            if evs:
                seen_max[stream] = max(seen_max.get(stream, 0), max(n for _, n, _, _ in evs))

    stuck: dict[str, list[str]] = collections.defaultdict(list)
    for view in views:
        label = view.log.label
        if not view.handshakes:
            violations.append(Violation("never-connected", label, view.log.requested,
                                        got=_close_text(view.log.end_state.get("last_close"))))
            continue
        for topic in view.log.topics:
            if topic not in view.joins:
                violations.append(Violation("never-joined", label, view.log.requested,
                                            stream=topic))
        for topic, (idx, reason, tm) in view.left.items():
            violations.append(Violation(
                "left-topic", label, view.transport_at(idx), stream=topic,
                expected="still in the topic (the drill never leaves one)",
                got=f"chsk/left reason={reason!r}", t=tm - t0,
                context=view.context(idx - 20, idx + 5, t0)
                + faults_near(faults, label, tm - 5, tm, t0)))
        for stream, evs in view.events.items():
            log = streams[stream]
            if not eligible(view, log):
                violations.append(Violation(
                    "misdelivered", label, view.transport_at(evs[0][0]), stream,
                    expected="no event of this stream (another user's, or a topic not joined)",
                    got=f"{len(evs)} events", t=evs[0][2] - t0, count=len(evs)))
        for stream in sorted(streams):
            log = streams[stream]
            if not eligible(view, log):
                continue
            evs = view.events.get(stream, [])
            ready = view.ready(log.kind, log.target)
            if ready is None:
                continue
            ready_idx, ready_t = ready
            _order_rules(view, log, evs, violations, counts, faults, t0)
            issued_after = sorted(n for n, tm in log.issued.items() if tm > ready_t)
            if not issued_after:
                continue
            start = issued_after[0]
            end = log.final if log.final is not None else seen_max.get(stream, 0)
            if log.kind == "t" and log.target in view.left:
                left_idx = view.left[log.target][0]
                end = max((n for idx, n, _, _ in evs if idx < left_idx), default=start - 1)
            if end < start:
                continue
            got = {n for _, n, _, _ in evs}
            first_idx: dict[int, tuple[int, float]] = {}
            for idx, n, t_recv, _ in evs:
                first_idx.setdefault(n, (idx, t_recv))
            missing = [n for n in range(start, end + 1) if n not in got]
            for lo, hi in _runs(missing):
                if lo > start:
                    prev_idx, prev_t = first_idx[lo - 1]
                else:
                    prev_idx, prev_t = ready_idx, ready_t
                later = [(idx, n, t_recv) for idx, n, t_recv, _ in evs if n > hi]
                transport = view.transport_at(prev_idx)
                size = hi - lo + 1
                if not later:
                    if log.final is not None:
                        last = max(got) if got else None
                        told = view.told(log.kind, log.target, prev_idx, float("inf"))
                        stuck[label].append(
                            f"{stream}: last got {last}, final {log.final}"
                            + (" (told recovered:false after it)" if told else ""))
                        counts["stuck-streams"] += 1
                        continue
                    issued = log.issued.get(lo)
                    if issued is not None and view.receipts and issued > view.receipts[-1][0]:
                        # Pushed after the last event this client ever got: it is stuck (its
                        # final markers say so too), not missing a piece of this stream.
                        stuck[label].append(f"{stream}: missed {lo}..{hi}, the end of a "
                                            "stream whose worker died")
                        counts["stuck-streams"] += 1
                        continue
                    if view.told(log.kind, log.target, prev_idx, float("inf")):
                        counts["announced-gaps"] += 1
                        counts["announced-entries"] += size
                        continue
                    violations.append(Violation(
                        "silent-gap", label, transport, stream,
                        expected=f"{lo}..{hi}{_issued(log, lo, hi, t0)} (the end of a stream "
                                 "whose worker died)",
                        got=f"{lo - 1 if lo > start else 'nothing'} at {prev_t - t0:+.2f}s, "
                            "then nothing", t=prev_t - t0, count=size,
                        context=view.context(prev_idx, prev_idx + 200, t0)
                        + faults_near(faults, label, prev_t, prev_t + 10, t0)))
                    counts["silent-gaps"] += 1
                    counts["silent-entries"] += size
                    continue
                next_idx, next_n, next_t = min(later)
                limit = view.next_handshake(next_idx) if log.kind == "t" else next_idx
                if view.told(log.kind, log.target, prev_idx, limit):
                    counts["announced-gaps"] += 1
                    counts["announced-entries"] += size
                    continue
                violations.append(Violation(
                    "silent-gap", label, transport, stream,
                    expected=(f"{lo}..{hi}" if lo != hi else str(lo)) + _issued(log, lo, hi, t0),
                    got=(f"{lo - 1} at {prev_t - t0:+.2f}s" if lo > start
                         else f"ready at {prev_t - t0:+.2f}s")
                        + f", then {next_n} at {next_t - t0:+.2f}s",
                    t=prev_t - t0, count=size,
                    context=view.context(prev_idx, next_idx + 1, t0)
                    + faults_near(faults, label, prev_t, next_t, t0)))
                counts["silent-gaps"] += 1
                counts["silent-entries"] += size
    for label, lines in stuck.items():
        state = by_label[label].log.end_state
        violations.append(Violation(
            "stuck", label, str(state.get("type") or by_label[label].log.requested),
            expected="every final marker", got=f"{len(lines)} missing",
            context=lines[:12] + ([f"... {len(lines) - 12} more"] if len(lines) > 12 else [])
            + [f"at the end: open={state.get('open')} type={state.get('type')} "
               f"last_close={_close_text(state.get('last_close'))}"],
            count=len(lines)))
    counts["stuck-clients"] = len(stuck)

    # Pushes a killed worker accepted (HTTP 200) that no client ever got: they were in its
    # memory, on their way to Redis, when it died. Counted, not a violation of the docs.
    lost = sum(max(0, log.acked_max - seen_max.get(s, 0)) for s, log in streams.items()
               if log.final is None and log.producer.startswith("w"))
    if lost:
        info.append(f"{lost} pushes a worker accepted and was SIGKILLed before they reached "
                    "Redis (no client got them; not counted as violations)")

    off = _kept_off(views, faults, t0, traffic_end, off_bound, violations)
    latency, deliveries = _latency(views)
    calls_summary = (check_calls(calls, views, faults, killed or {}, t0, violations)
                     if calls else {})
    for extra_violation in extra or []:
        violations.append(extra_violation)
    group_violations: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter)
    group_of = {v.log.label: v.log.group for v in views}
    for violation in violations:
        if violation.client in group_of:
            group_violations[group_of[violation.client]][violation.kind] += 1
    return Report(violations, dict(counts), off, latency, deliveries, group_violations, info,
                  calls_summary)


def _order_rules(view: _Client, log: StreamLog, evs: list[tuple[int, int, float, float]],
                 violations: list[Violation], counts: collections.Counter[str],
                 faults: list[Fault], t0: float) -> None:
    """Duplicates and reorderings of one client's stream."""
    label = view.log.label
    seen: dict[int, tuple[int, float]] = {}
    top = (0, -1, 0.0)  # (n, idx, t)
    for idx, n, t_recv, _ in evs:
        if n in seen:
            first_idx, first_t = seen[n]
            retried = []
            if n in log.retried:
                retried = [f"the producer pushed {n} {log.retried[n]} times (a BackplaneError, "
                           "then the same event again, as a retrying task would): if Redis "
                           "ran the first try too, the log holds it twice"]
                counts["retried-duplicates"] += 1
            violations.append(Violation(
                "duplicate", label, view.transport_at(idx), log.stream,
                expected=f"{n} once", got=f"{n} at {first_t - t0:+.2f}s and {t_recv - t0:+.2f}s",
                t=t_recv - t0, context=retried + view.context(first_idx, idx + 1, t0)
                + faults_near(faults, label, first_t, t_recv, t0)))
            counts["duplicates"] += 1
            continue
        seen[n] = (idx, t_recv)
        if n < top[0]:
            violations.append(Violation(
                "reordered", label, view.transport_at(idx), log.stream,
                expected=f"{n} before {top[0]}",
                got=f"{top[0]} at {top[2] - t0:+.2f}s, then {n} at {t_recv - t0:+.2f}s",
                t=t_recv - t0, context=view.context(top[1], idx + 1, t0)
                + faults_near(faults, label, top[2], t_recv, t0)))
            counts["reorderings"] += 1
        else:
            top = (n, idx, t_recv)


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in values:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


#: Seconds: a client that got an event this shortly before a fault was being fed when it
#: came (every client gets several a second during traffic).
LIVE_BEFORE = 1.0


def _kept_off(views: list[_Client], faults: list[Fault], t0: float, traffic_end: float,
              off_bound: float, violations: list[Violation]) -> dict[str, dict[str, t.Any]]:
    """Per fault kind: how long each client it concerned went without a new event, from the
    fault's start and from its end; and the violations of ``off_bound``."""
    from_start: dict[str, list[float]] = collections.defaultdict(list)
    from_end: dict[str, list[float]] = collections.defaultdict(list)
    #: From the end, only clients that were being fed when the fault began (an event within
    #: LIVE_BEFORE s before it): what the fault itself cost, not the wait of a client that
    #: was already off (in its backoff after an earlier fault) when it came.
    live_end: dict[str, list[float]] = collections.defaultdict(list)
    never: collections.Counter[str] = collections.Counter()
    n_faults = collections.Counter(f.kind for f in faults)
    for view in views:
        label = view.log.label
        if not view.handshakes:
            continue
        ready_t = view.handshakes[0][3]
        pushes = sorted(view.receipts, key=lambda r: r[1])  # by push time
        push_times = [p for _, p in pushes]
        recv_times = [r for r, _ in view.receipts]  # sorted by receipt time
        for fault in faults:
            if not fault.concerns(label) or fault.start < ready_t:
                continue
            for origin, sink in ((fault.start, from_start), (fault.end, from_end)):
                # The first event pushed after the origin that this client got, and when.
                pos = bisect.bisect_left(push_times, origin)
                recv = min((r for r, _ in pushes[pos:]), default=None)
                if recv is None:
                    if sink is from_start:
                        never[fault.kind] += 1
                    continue
                sink[fault.kind].append(max(0.0, recv - origin))
                if sink is from_end:
                    before = bisect.bisect_left(recv_times, fault.start)
                    if before and fault.start - recv_times[before - 1] <= LIVE_BEFORE:
                        live_end[fault.kind].append(max(0.0, recv - origin))
        _refused(view, faults, t0, off_bound, violations)
        _silent_while_open(view, faults, t0, traffic_end, off_bound, violations)
    off: dict[str, dict[str, t.Any]] = {}
    for kind in FAULT_KINDS:
        if not n_faults[kind]:
            continue
        s, e = from_start[kind], from_end[kind]
        off[kind] = {"faults": n_faults[kind], "measured": len(s),
                     "start_p50": percentile(s, 50), "start_max": max(s, default=float("nan")),
                     "end_p50": percentile(e, 50), "end_max": max(e, default=float("nan")),
                     "live_end_p50": percentile(live_end[kind], 50),
                     "live_end_max": max(live_end[kind], default=float("nan")),
                     "never": never[kind]}
    return off


def _refused(view: _Client, faults: list[Fault], t0: float, off_bound: float,
             violations: list[Violation]) -> None:
    """Connection attempts that failed more than ``off_bound`` seconds after every fault
    concerning the client had ended: the server (or the path) refused a client it should
    have taken back by then. A client waiting out its own backoff is not refused: its wait
    shows in the kept-off table, not here."""
    label = view.log.label
    late = []
    for idx, tm, close, transport in view.failures:
        if isinstance(close, dict) and str(close.get("reason", "")).startswith("requested-"):
            continue  # the drill's own disconnect at the end
        ended = max((f.end for f in faults if f.concerns(label) and f.start <= tm),
                    default=float("-inf"))
        if tm - ended > off_bound:
            late.append((idx, tm, close, transport, ended))
    if not late:
        return
    reasons = collections.Counter(_close_text(c) for _, _, c, _, _ in late)
    first, last = late[0], late[-1]
    ended = first[4]
    violations.append(Violation(
        "refused", label, first[3],
        expected=f"connection attempts to succeed within {off_bound:.0f} s of the last "
                 "fault's end",
        got=f"{len(late)} failed from {first[1] - t0:+.2f}s to {last[1] - t0:+.2f}s "
            + (f"(the last fault ended at {ended - t0:+.2f}s): " if ended > 0 else ": ")
            + "; ".join(f"{n} x {r}" for r, n in reasons.most_common(4)),
        t=first[1] - t0, count=len(late),
        context=view.context_in_time(first[1] - 2, first[1] + 3, t0)
        + faults_near(faults, label, ended, first[1], t0)))


def _silent_while_open(view: _Client, faults: list[Fault], t0: float, traffic_end: float,
                       off_bound: float, violations: list[Violation]) -> None:
    """A connection open for more than ``off_bound`` seconds of traffic without an event:
    every client gets broadcasts several times a second, so it is open but not fed."""
    label = view.log.label
    times = [r for r, _ in view.receipts]
    for opened, closed in view.open_spans(traffic_end):
        inside = [r for r in times if opened <= r <= closed]
        edges = [opened, *inside, min(closed, traffic_end)]
        for a, b in zip(edges, edges[1:], strict=False):
            if b - a > off_bound:
                violations.append(Violation(
                    "silent-while-open", label, view.transport_at_time(a),
                    expected=f"an event at least every {off_bound:.0f} s on an open "
                             "connection",
                    got=f"none from {a - t0:+.2f}s to {b - t0:+.2f}s while open",
                    t=a - t0, context=view.context_in_time(a - 1, b, t0)
                    + faults_near(faults, label, a, b, t0)))


def _latency(views: list[_Client]) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    lat: dict[str, list[float]] = collections.defaultdict(list)
    for view in views:
        for t_recv, t_push in view.receipts:
            lat[view.log.group].append(t_recv - t_push)
            lat["all"].append(t_recv - t_push)
    return ({g: {"p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v)}
             for g, v in lat.items()}, {g: len(v) for g, v in lat.items()})


# --- calls -------------------------------------------------------------------------------

#: A fault this many seconds before a call began may still explain its failure: the clients
#: it cut are still in their backoff, presence is being re-sent after a Redis restart.
CALL_FAULT_AFTER = 5.0
#: Outcomes that faults explain; any other error is a violation (the drill's clients all
#: answer "chaos/ask", never raise, and speak protocol 3).
HONEST_ERRORS = ("CallTimeout", "ClientGone", "BackplaneError")
#: The fault kinds that take Redis away (what explains a BackplaneError).
REDIS_FAULTS = ("redis-freeze", "redis-restart", "combo")
#: Rows of the calls table, in this order (then any other outcome kind).
CALL_ROWS = ["value", "CallTimeout", "ClientGone", "BackplaneError", "NoAnswerHandler",
             "ClientCallError", "CallsUnsupported", "caller killed", "lost", "not started"]
#: A CallTimeout whose handler ran while the client stayed open this long after (or to the
#: outcome) lost its answer, not its request: the answer goes out at once.
ANSWER_OPEN_AFTER = 2.0
#: Violation kinds of the calls section.
CALL_VIOLATIONS = ["call-lost", "call-answered-twice", "handler-twice", "call-misrouted",
                   "call-wrong-value", "call-error", "call-unexplained"]


def answer_value(nonce: str, x: int, client_id: str) -> dict[str, t.Any]:
    """What every drill client answers to ``("chaos/ask", {"nonce", "x"})`` (the pages'
    JavaScript computes the same): it depends on the call's data and on who answered."""
    return {"n": nonce, "y": x * 3 + 1, "by": client_id}


def merge_calls(made: list[dict[str, t.Any]], lines: list[dict[str, t.Any]]) -> list[Call]:
    """The drill's record of each call it asked for (``made``: ``{"nonce", "target",
    "client_id", "x", "t", "timeout", "pid", "http_error"}``) joined with the workers'
    call logs (``lines``: ``{"ev": "start" | "end", "nonce", "pid", "t", ...}``). A line
    of a nonce the drill never asked for is kept as a call to ``"?"``."""
    calls: dict[str, Call] = {}
    for m in made:
        calls[m["nonce"]] = Call(m["nonce"], m["target"], m["client_id"], int(m["x"]),
                                 float(m["t"]), float(m["timeout"]), m.get("pid"),
                                 m.get("http_error", ""))
    for line in sorted(lines, key=lambda x: float(x.get("t", 0))):
        nonce = str(line.get("nonce"))
        call = calls.get(nonce)
        if call is None:
            call = calls[nonce] = Call(nonce, "?", str(line.get("client", "")), 0,
                                       float(line.get("t", 0)), 0.0)
        if line.get("ev") == "start":
            call.started = float(line["t"])
            call.pid = int(line["pid"])
        elif line.get("ev") == "end":
            call.outcomes.append({k: v for k, v in line.items() if k not in ("ev", "nonce")})
    return list(calls.values())


def check_calls(calls: list[Call], views: list[_Client], faults: list[Fault],
                killed: dict[int, float], t0: float,
                violations: list[Violation]) -> dict[str, t.Any]:
    """The calls section: its violations are appended to ``violations``; returns the
    figures the report prints (see the module docstring for the rules)."""
    by_label = {v.log.label: v for v in views}
    runs: dict[str, list[tuple[str, int, t.Any, float]]] = collections.defaultdict(list)
    for view in views:
        for idx, nonce, value, tm in view.answers:
            runs[nonce].append((view.log.label, idx, value, tm))
    rows: dict[str, dict[str, t.Any]] = {}
    answered_timeouts: dict[str, t.Any] = {"calls": 0, "faults": collections.Counter()}
    #: Outcome kind -> calls whose handler ran after the caller had its (failed) outcome.
    late_runs: collections.Counter[str] = collections.Counter()
    known = {c.nonce for c in calls}

    def row(kind: str) -> dict[str, t.Any]:
        return rows.setdefault(kind, {"calls": 0, "handler_ran": 0, "open": 0, "no_fault": 0,
                                      "faults": collections.Counter()})

    def flag(kind: str, call: Call, expected: str, got: str, start: float, end: float,
             more: list[str]) -> None:
        view = by_label.get(call.target)
        story = [f"{call.asked - t0:+.2f}s asked worker {call.pid} to call {call.target} "
                 f"({call.client_id}), x={call.x}, timeout {call.timeout:g} s"
                 + (f"; the drill's POST failed: {call.http_error}" if call.http_error
                    else "")]
        story += [f"{tm - t0:+.2f}s handler ran on {label}: {value!r}"
                  for label, _, value, tm in runs.get(call.nonce, [])]
        story += [f"{float(o.get('t', 0)) - t0:+.2f}s outcome at worker {o.get('pid')}: "
                  f"{o.get('kind')} {o.get('value', o.get('message', ''))!r}"[:300]
                  for o in call.outcomes]
        violations.append(Violation(
            kind, call.target, view.transport_at_time(start) if view else "",
            expected=expected, got=f"call {call.nonce}: {got}", t=start - t0,
            context=story + more + (view.context_in_time(start - 1, end + 1, t0) if view
                                    else [])
            + faults_near(faults, call.target, start, end, t0, before=CALL_FAULT_AFTER)))

    for call in sorted(calls, key=lambda c: c.asked):
        ran = runs.get(call.nonce, [])
        made = (call.started is not None or call.pid is not None or bool(call.outcomes)
                or bool(ran))
        if not made:
            row("not started")["calls"] += 1
            continue
        start = call.started if call.started is not None else call.asked
        end = (float(call.outcomes[0]["t"]) if call.outcomes
               else start + call.timeout)
        asked_view = by_label.get(call.target)
        near = [f for f in faults if f.concerns(call.target) and f.start <= end + 0.5
                and f.end + CALL_FAULT_AFTER >= start]
        steady = asked_view is not None and asked_view.open_throughout(start - 0.5, end)
        if len(call.outcomes) > 1:
            flag("call-answered-twice", call, "one outcome at the caller",
                 f"{len(call.outcomes)} outcomes", start, end, [])
        wrong_client = [r for r in ran if r[0] != call.target]
        if wrong_client or call.target not in by_label:
            flag("call-misrouted", call, f"the handler of {call.target} only",
                 ("ran on " + ", ".join(r[0] for r in ran)) if ran
                 else f"no client {call.target!r} in the drill", start, end, [])
        if len(ran) > 1:
            flag("handler-twice", call, "the handler run once for the call",
                 f"{len(ran)} runs", start, end, [])
        if not call.outcomes:
            kind = ("caller killed" if call.pid in killed and killed[call.pid] >= start - 1
                    else "lost")
        else:
            kind = str(call.outcomes[0].get("kind"))
        r = row(kind)
        r["calls"] += 1
        r["handler_ran"] += bool(ran)
        r["open"] += steady
        r["no_fault"] += not near
        for f in {f.kind for f in near}:
            r["faults"][f] += 1
        if call.outcomes and kind != "value" and any(tm > end for _, _, _, tm in ran):
            late_runs[kind] += 1
        if kind == "lost":
            flag("call-lost", call, "an outcome at the caller (its worker was not killed)",
                 "none when the run ended", start, end, [])
        elif kind == "value":
            value = call.outcomes[0].get("value")
            want = answer_value(call.nonce, call.x, call.client_id)
            computed = [v for label, _, v, _ in ran if label == call.target]
            if value != want or not computed or value not in computed:
                flag("call-wrong-value", call,
                     f"{want!r} (what {call.target} computes for it)",
                     f"{value!r}" + ("" if computed else ", and no handler of it ran"),
                     start, end, [])
        elif kind in HONEST_ERRORS:
            explained = [f for f in near if kind != "BackplaneError" or f.kind in REDIS_FAULTS]
            first_run = min((tm for _, _, _, tm in ran), default=None)
            if kind == "CallTimeout" and first_run is not None and asked_view is not None \
                    and asked_view.open_throughout(first_run,
                                                   min(first_run + ANSWER_OPEN_AFTER, end)):
                answered_timeouts["calls"] += 1
                for f in {f.kind for f in explained}:
                    answered_timeouts["faults"][f] += 1
            if not explained and (steady or kind == "BackplaneError"):
                flag("call-unexplained", call,
                     "a value: no fault near the call" + (
                         " (no Redis fault)" if kind == "BackplaneError" else
                         " and the client open throughout"),
                     f"{kind} {call.outcomes[0].get('message', '')!r}"[:200]
                     + (" (its handler ran)" if ran else " (its handler did not run)"),
                     start, end, [])
        elif kind != "caller killed":
            flag("call-error", call, "a value or an outcome a fault explains",
                 f"{kind} {call.outcomes[0].get('message', '')!r}"[:200], start, end, [])
    for nonce in sorted(set(runs) - known):
        for label, _, value, tm in runs[nonce]:
            violations.append(Violation(
                "call-misrouted", label, by_label[label].transport_at_time(tm),
                expected="handlers run only for the drill's calls",
                got=f"ran for nonce {nonce!r}, which the drill never asked for: {value!r}",
                t=tm - t0))
    ordered = {k: rows[k] for k in CALL_ROWS if k in rows}
    ordered.update({k: v for k, v in rows.items() if k not in ordered})
    for r in ordered.values():
        r["faults"] = dict(r["faults"])
    answered_timeouts["faults"] = dict(answered_timeouts["faults"])
    return {"asked": len(calls), "made": sum(r["calls"] for k, r in ordered.items()
                                             if k != "not started"),
            "handler_runs": sum(len(v) for v in runs.values()), "rows": ordered,
            "answered_timeouts": answered_timeouts, "late_runs": dict(late_runs)}
