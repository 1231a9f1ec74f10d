"""What each client is owed: logs of pushes and readers with positions, without I/O.

Every push is appended to a **log**: one per user (``send``) and one shared by everyone
(``broadcast``), each with an *epoch* (a random name for this log's history) and an integer
``seq`` per entry. Every connected client has a **reader** holding its *position* in each log
it reads — the last seq it was given. What a client is owed is simply everything after its
positions, so:

* order per client is the order of appends, ``flush=True`` or not (two logs are merged by a
  process-wide stamp, so a batch keeps the global send order);
* a push to one tab (``client_id=``) is an entry with a target: other tabs skip it, but
  their positions still move past it;
* a WebSocket reader is *eager*: :meth:`Delivery.collect` hands it everything new at each
  flush. An Ajax reader is *lazy*: entries wait in the log until its next poll reads them
  with :meth:`Delivery.pending` (this replaces a per-client backlog);
* history is bounded (``history_size`` entries and ``history_ttl`` seconds per log); a reader
  whose position fell out of it has a *gap* (:data:`GAP`), which the caller must make known.

Readers that start at the same positions and are named by no targeted (or excluding) entry
get the same batch:
:meth:`Delivery.collect` groups them so the hub packs each distinct batch once.

The logs themselves are in ``core.logs``, the readers and batches in ``core.readers``; this
module keeps them together (``Delivery``: appending, collecting, resuming, mirroring logs kept
elsewhere). The clock (``now``) and the epoch source are passed in. This module may import
only the standard library.
"""
from __future__ import annotations

import typing as t

from ..protocol.session import is_topic_log, topic_of
from .logs import (
    BROADCAST,
    GAP,
    TOPIC,
    USER,
    Entry,
    Gap,
    Position,
    WireEvent,
    join_target,
    split_target,
    topic_log_name,
)
from .presence import TRANSPORTS, Transport
from .readers import (
    Batch,
    Log,
    Part,
    Reader,
    in_send_order,
    merged_for,
    owed_parts,
    reaches,
    split_positions,
)

__all__ = ["BROADCAST", "GAP", "TOPIC", "USER", "Batch", "Delivery", "Entry", "Log", "Position",
           "Reader", "WireEvent", "join_target", "split_positions", "split_target",
           "topic_log_name"]

class Delivery:
    """The logs and readers of one process; see the module docstring."""

    def __init__(self, *, history_size: int, history_ttl: float,
                 new_epoch: t.Callable[[], str]) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._new_epoch = new_epoch
        self.logs: dict[t.Hashable, Log] = {}
        self._stamp = 0
        #: Logs with entries not yet collected, per transport with eager readers.
        self._dirty: dict[Transport, set[Log]] = {"ws": set(), "ajax": set()}

    # --- readers ---------------------------------------------------------------------------

    def open_reader(self, uid: t.Any, client_id: str, transport: Transport,
                    now: float) -> Reader:
        """A reader at the head of the user's and the broadcast log (nothing owed yet);
        :meth:`resume` moves it back to where a returning client was."""
        reader = Reader(uid, client_id, transport)
        for name, key in ((USER, (USER, uid)), (BROADCAST, BROADCAST)):
            log = self._log(key, now)
            reader.logs[name] = log
            reader.positions[name] = log.seq
            log.readers.add(reader)
            log.counts[transport] += 1
            log.idle_since = None
        return reader

    def resume(self, reader: Reader, positions: t.Mapping[str, tuple[str, int]]) -> bool:
        """:meth:`resume_logs`, as one verdict: True when nothing was lost."""
        return not self.resume_logs(reader, positions)

    def resume_logs(self, reader: Reader, positions: t.Mapping[str, tuple[str, int]]
                    ) -> set[str]:
        """Put the reader where the client says it was; returns the names of the logs
        whose history no longer holds everything after that position (empty: the client
        will miss nothing).

        A log the client names with another epoch, a seq the history no longer reaches,
        or a main log (its user's, the broadcast log) it does not name at all, leaves the
        reader at that log's head, and is in the answer: the caller tells the client. A
        topic it does not name is left where it is (topics are resumed by their joins, or
        by the poll that names them). Logs the client names that the reader does not read
        are ignored.
        """
        lost: set[str] = set()
        for name, log in reader.logs.items():
            given = positions.get(name)
            if given is None and is_topic_log(name):
                continue
            if given is None or not reaches(log, given):
                lost.add(name)
                reader.positions[name] = log.seq
            else:
                reader.positions[name] = given[1]
        if reader.owed() and reader.transport == "ws":
            for log in reader.logs.values():
                self._dirty["ws"].add(log)
        return lost

    def close_reader(self, reader: Reader, now: float) -> None:
        """The reader is gone for good; its logs start their idle time when it was the last."""
        for log in reader.logs.values():
            if reader in log.readers:
                log.readers.discard(reader)
                log.counts[reader.transport] -= 1
            if not log.readers:
                log.idle_since = now
        reader.ready = False

    # --- topics ----------------------------------------------------------------------------

    def join(self, reader: Reader, topic: str, now: float,
             position: tuple[str, int] | None = None) -> tuple[bool | None, tuple[str, int]]:
        """Make ``reader`` read the topic's log, from ``position`` when the client brings
        one its history still reaches (a rejoin: what it missed is owed at once), else from
        the head. Returns ``(recovered, position)``: recovered is None without a position,
        and the position is the one to tell the client.

        A reader that already reads the topic is not moved: what it was given since is on
        its way to the client (a WebSocket's queue, a poll's answer), and moving it back
        would give those entries twice. A WebSocket client is told the reader's position
        (the reply follows on the same socket, after the batches that moved it there); an
        Ajax client its own when still reachable — its next poll names it and is served
        from there — else the head. Over Ajax a poll, not a join, moves the reader.
        """
        log = self._log((TOPIC, topic), now)
        name = topic_log_name(topic)
        recovered = None if position is None else reaches(log, position)
        if reader.logs.get(name) is log:
            if reader.transport == "ajax" and position is not None:
                return recovered, (position if recovered else (log.epoch, log.seq))
            return recovered, (log.epoch, reader.positions[name])
        reader.logs[name] = log
        reader.positions[name] = position[1] if position and recovered else log.seq
        log.readers.add(reader)
        log.counts[reader.transport] += 1
        log.idle_since = None
        if reader.positions[name] < log.seq:  # a replay is owed: the caller flushes
            self._dirty[reader.transport].add(log)
        return recovered, (log.epoch, reader.positions[name])

    def leave(self, reader: Reader, topic: str, now: float) -> bool:
        """Stop ``reader`` reading the topic; False when it did not."""
        name = topic_log_name(topic)
        log = reader.logs.pop(name, None)
        if log is None:
            return False
        del reader.positions[name]
        if reader in log.readers:
            log.readers.discard(reader)
            log.counts[reader.transport] -= 1
            if not log.readers:
                log.idle_since = now
        return True

    def topic_position(self, topic: str, now: float, position: tuple[str, int] | None
                       ) -> tuple[bool | None, tuple[str, int]]:
        """:meth:`join`'s answer for a client with no reader here (an Ajax client this
        process forgot, or has not seen, between its handshake and its first poll): whether
        the topic's history still reaches ``position``, and where the client stands — at
        ``position`` when it does, so that the poll that brings it back is replayed from
        there, else at the head. The log is made if missing."""
        log = self._log((TOPIC, topic), now)
        if position is None:
            return None, (log.epoch, log.seq)
        if reaches(log, position):
            return True, (position[0], position[1])
        return False, (log.epoch, log.seq)

    def topics_of(self, reader: Reader) -> list[str]:
        return [topic_of(name) for name in reader.logs if is_topic_log(name)]

    def leave_all(self, reader: Reader, now: float) -> list[str]:
        """Stop ``reader`` reading every topic (a new connection starts with none: the
        client rejoins each with its own position); returns the topics it read."""
        topics = self.topics_of(reader)
        for topic in topics:
            self.leave(reader, topic, now)
        return topics

    def _log(self, key: t.Hashable, now: float) -> Log:
        log = self.logs.get(key)
        if log is None:
            log = self.logs[key] = Log(key, self._new_epoch(), now)
        return log

    # --- appending -------------------------------------------------------------------------

    def push(self, uid: t.Any, event: t.Any, target: str | None,
             now: float) -> tuple[Transport, ...]:
        """Append to ``uid``'s log; returns the transports whose readers must be flushed.

        A user nobody has read the log of has no log: the push reaches nobody and is not
        kept (no client can be waiting for it).
        """
        log = self.logs.get((USER, uid))
        if log is None:
            return ()
        return self._append(log, event, target, now)

    def publish(self, topic: str, event: t.Any, exclude: str | None,
                now: float) -> tuple[Transport, ...]:
        """Append to the topic's log (``exclude``: the one client that skips it). A topic
        nobody has joined has no log: the publish reaches nobody and is not kept."""
        log = self.logs.get((TOPIC, topic))
        if log is None:
            return ()
        return self._append(log, event, None, now, exclude=exclude)

    def broadcast(self, event: t.Any, now: float) -> tuple[Transport, ...]:
        return self._append(self._log(BROADCAST, now), event, None, now)

    def kick(self, uid: t.Any, reason: str, now: float) -> None:
        """Append a kick record to ``uid``'s log: after every earlier push, so a poller
        gets those first and then the close."""
        log = self.logs.get((USER, uid))
        if log is not None:
            self._append(log, reason, None, now, control="kick")

    def _append(self, log: Log, event: t.Any, target: str | None, now: float,
                control: str | None = None, exclude: str | None = None
                ) -> tuple[Transport, ...]:
        self._stamp += 1
        log.seq += 1
        log.entries.append(Entry(log.seq, self._stamp, event, target, now, control, exclude))
        # Trim in halves (amortized), but never what eager readers have not been given yet:
        # a burst inside one batching window must arrive whole. collect() trims after.
        if len(log.entries) >= 2 * self.history_size and log not in self._dirty["ws"]:
            log.trim(self.history_size, now - self.history_ttl)
        due = tuple(tr for tr in TRANSPORTS if log.counts[tr])
        for transport in due:
            self._dirty[transport].add(log)
        return due

    # --- reading ---------------------------------------------------------------------------

    def collect(self, transport: Transport) -> tuple[list[Batch], list[Reader], list[Reader]]:
        """Everything new since the last collect for this transport's readers.

        Returns ``(batches, gapped, woken)``: eager (WebSocket) readers' batches, already
        counted as delivered; eager readers whose history was trimmed past their position;
        lazy (Ajax) readers with a parked poll and entries owed (they read with
        :meth:`pending`).
        """
        batches, gapped, woken, _ = self.collect_due(transport, float("-inf"), 0.0)
        return batches, gapped, woken

    def collect_due(self, transport: Transport, now: float, window: float
                    ) -> tuple[list[Batch], list[Reader], list[Reader], float | None]:
        """:meth:`collect`, but an eager reader given a batch less than ``window`` before
        ``now`` is left for later (batching is per connection: a busy one gets a batch per
        window, the others theirs at once). The fourth value is when the first reader left
        for later is due (None: none was)."""
        dirty = self._dirty[transport]
        if not dirty:
            return [], [], [], None
        self._dirty[transport] = set()
        readers: set[Reader] = set()
        for log in dirty:
            readers.update(r for r in log.readers if r.transport == transport)
        batches: dict[t.Hashable, Batch] = {}
        gapped: list[Reader] = []
        woken: list[Reader] = []
        later: set[Log] = set()
        next_due: float | None = None
        lazy = transport == "ajax"
        for reader in readers:
            if lazy:
                if reader.ready and reader.owed():
                    reader.ready = False
                    woken.append(reader)
                continue
            due = reader.collected_at + window
            if window > 0 and due > now and reader.owed():  # dirty until its window ends
                later.update(log for log in reader.logs.values() if log in dirty)
                next_due = due if next_due is None else min(next_due, due)
                continue
            if self._collect_one(reader, batches, gapped):
                reader.collected_at = now
        if later:
            self._dirty[transport] |= later
        if not lazy:
            for log in dirty:  # a log some reader has not been given yet is not trimmed
                if len(log.entries) >= 2 * self.history_size and log not in later:
                    log.trim(self.history_size, log.entries[-1].at - self.history_ttl)
        return [b for b in batches.values() if b.entries], gapped, woken, next_due

    def collect_reader(self, reader: Reader, now: float) -> Batch | Gap | None:
        """What one eager reader is owed now, as :meth:`collect` would give it (None:
        nothing for this client; :data:`GAP`: its history is gone). The reader's logs stay
        dirty for their other readers."""
        batches: dict[t.Hashable, Batch] = {}
        gapped: list[Reader] = []
        if not self._collect_one(reader, batches, gapped):
            return GAP if gapped else None
        reader.collected_at = now
        batch = next(iter(batches.values()))
        return batch if batch.entries else None

    def _collect_one(self, reader: Reader, batches: dict[t.Hashable, Batch],
                     gapped: list[Reader]) -> bool:
        """Put the reader in the batch of what it is owed; False when it is owed nothing.
        Runs once per reader per flush: kept to plain loops (a burst to a thousand users is
        a thousand calls in one flush)."""
        positions = reader.positions
        owed = owed_parts(reader)
        if owed is GAP:
            gapped.append(reader)
            return False
        parts = t.cast("list[Part]", owed)
        if not parts:
            return False
        # Readers named by a targeted or excluding entry get a batch of their own; every
        # other reader at the same positions shares one (packed once).
        cid = reader.client_id
        named = False
        for _, _, entries in parts:
            for e in entries:
                if (e.target is not None or e.exclude is not None) and (
                        e.target == cid or e.exclude == cid):
                    named = True
                    break
        key: t.Hashable = (tuple([(log.key, positions[name]) for name, log, _ in parts]),
                           cid if named else None)
        batch = batches.get(key)
        if batch is None:
            if len(parts) == 1:
                name, _, entries = parts[0]
                merged = [(name, e) for e in entries if e.for_client(cid)]
            else:
                merged = merged_for(parts, cid)
            batch = Batch(merged, {name: (log.epoch, log.seq) for name, log, _ in parts})
            batches[key] = batch
        batch.readers.append(reader)
        for name, log, _ in parts:
            positions[name] = log.seq
        return True

    def pending(self, reader: Reader) -> list[tuple[str, Entry]] | Gap:
        """What a lazy reader is owed, oldest first, as ``(log name, entry)`` pairs
        (targeted entries for other clients included: :meth:`advance` must pass them)."""
        parts = owed_parts(reader)
        return GAP if parts is GAP else in_send_order(t.cast("list[Part]", parts))

    def advance(self, reader: Reader, delivered: t.Iterable[tuple[str, Entry]]) -> None:
        """Move a lazy reader past entries it was given (and any skipped before them)."""
        positions = reader.positions
        for name, entry in delivered:
            if entry.seq > positions[name]:
                positions[name] = entry.seq

    def skip_to_head(self, reader: Reader, names: t.Iterable[str] | None = None) -> None:
        """Forget what the reader was owed in these logs (all of them by default), after a
        gap was made known to it."""
        for name in reader.logs if names is None else names:
            reader.positions[name] = reader.logs[name].seq

    def gaps(self, reader: Reader) -> list[str]:
        """The logs whose history no longer reaches the reader's position."""
        return [name for name, log in reader.logs.items()
                if log.after(reader.positions[name]) is GAP]

    def positions_of(self, reader: Reader, *, topics: bool = True
                     ) -> dict[str, tuple[str, int]]:
        """Where the reader stands, per log; ``topics=False``: its user's and the broadcast
        log only (what a handshake tells: topics are resumed by their rejoins)."""
        return {name: (log.epoch, reader.positions[name]) for name, log in reader.logs.items()
                if topics or not is_topic_log(name)}

    # --- replicas of logs kept elsewhere (a shared backplane) ------------------------------

    def mirror(self, key: t.Hashable, epoch: str, seq: int, now: float) -> Log:
        """The local copy of a log kept elsewhere, made to stand at ``(epoch, seq)``.

        A new epoch means the history its readers stood in is gone: they are put where
        :meth:`collect` and :meth:`pending` report a gap, so each is told.
        """
        log = self.logs.get(key)
        if log is None:
            log = self.logs[key] = Log(key, epoch, now)
            log.seq = seq
        elif log.epoch != epoch:
            log.epoch, log.seq, log.entries = epoch, seq, []
            for transport in TRANSPORTS:
                if log.counts[transport]:
                    self._dirty[transport].add(log)  # the next collect finds the gaps
            for reader in log.readers:
                for name, mine in reader.logs.items():
                    if mine is log:
                        reader.positions[name] = -1  # behind anything: a gap
        return log

    def apply(self, key: t.Hashable, epoch: str, seq: int, event: t.Any, target: str | None,
              control: str | None, now: float) -> tuple[Transport, ...] | None:
        """Append an entry made elsewhere with its own seq. Returns the transports to
        flush, ``()`` for an entry already here, or None when entries are missing before
        it (the caller fetches them and applies them in order first)."""
        log = self.logs.get(key)
        if log is None:
            return ()
        if log.epoch != epoch:
            self.mirror(key, epoch, seq - 1, now)
        if seq <= log.seq:
            return ()
        if seq != log.seq + 1:
            return None
        log.seq = seq - 1
        target, exclude = split_target(target)
        return self._append(log, event, target, now, control, exclude)

    def backfill(self, key: t.Hashable, older: list[tuple[int, t.Any, str | None, str | None]],
                 now: float) -> None:
        """Put entries fetched from elsewhere in front of the local history (a returning
        reader's replay reaches further back than this process has seen)."""
        log = self.logs.get(key)
        if log is None or not older:
            return
        first = log.entries[0].seq if log.entries else log.seq + 1
        fetched = []
        for seq, event, field, control in older:
            if seq < first:
                target, exclude = split_target(field)
                fetched.append(Entry(seq, 0, event, target, now, control, exclude))
        if fetched and fetched[-1].seq == first - 1:
            log.entries[:0] = fetched

    # --- housekeeping ----------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Trim history older than ``history_ttl`` and drop logs idle for that long."""
        oldest = now - self.history_ttl
        for key, log in list(self.logs.items()):
            if log.idle_since is not None and log.idle_since <= oldest:
                del self.logs[key]
            else:
                log.trim(self.history_size, oldest)
