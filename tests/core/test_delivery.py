"""Delivery rules without sockets or gevent: logs, positions, batches, targets, gaps."""
import itertools
import typing as t

import pytest

from flask_sente.core.delivery import BROADCAST, GAP, USER, Delivery

epochs = itertools.count()


def make(history_size=100, history_ttl=120.0):
    return Delivery(history_size=history_size, history_ttl=history_ttl,
                    new_epoch=lambda: f"e{next(epochs)}")


def events_of(batches, reader):
    found = [b.events for b in batches if reader in b.readers]
    assert len(found) <= 1
    return found[0] if found else []


def drain(d, reader):
    """What a lazy reader's next poll gets (every entry for it), advancing it."""
    pending = d.pending(reader)
    if pending is GAP:
        return GAP
    d.advance(reader, pending)
    return [e.event for _, e in pending if e.target in (None, reader.client_id)]


def test_a_push_to_a_user_nobody_read_is_not_kept():
    d = make()
    assert d.push("ghost", ["t/x", 1], None, now=0) == ()
    assert ("u", "ghost") not in d.logs


def test_pushes_and_broadcasts_keep_send_order_in_one_batch():
    d = make()
    r = d.open_reader("ivy", "c1", "ws", now=0)
    d.push("ivy", ["t/n", 1], None, now=0)
    d.broadcast(["t/n", 2], now=0)
    d.push("ivy", ["t/n", 3], None, now=0)
    batches, gapped, woken = d.collect("ws")
    assert events_of(batches, r) == [["t/n", 1], ["t/n", 2], ["t/n", 3]]
    assert gapped == [] and woken == []
    assert d.collect("ws") == ([], [], [])            # nothing twice


def test_a_broadcast_is_one_batch_for_every_reader_at_the_same_position():
    d = make()
    readers = [d.open_reader(f"u{i}", f"c{i}", "ws", now=0) for i in range(50)]
    d.broadcast(["t/all", "hi"], now=0)
    batches, _, _ = d.collect("ws")
    assert len(batches) == 1 and set(batches[0].readers) == set(readers)


def test_targeted_push_reaches_one_tab_and_moves_the_others_past_it():
    d = make()
    a = d.open_reader("finn", "tab-a", "ws", now=0)
    b = d.open_reader("finn", "tab-b", "ws", now=0)
    d.push("finn", ["t/only-b", 1], "tab-b", now=0)
    d.push("finn", ["t/all", 2], None, now=0)
    batches, _, _ = d.collect("ws")
    assert events_of(batches, a) == [["t/all", 2]]
    assert events_of(batches, b) == [["t/only-b", 1], ["t/all", 2]]
    assert a.positions[USER] == b.positions[USER] == 2


def test_a_lazy_reader_keeps_what_it_is_owed_until_it_polls():
    d = make()
    r = d.open_reader("bob", "p", "ajax", now=0)
    assert d.push("bob", ["t/a", 1], None, now=0) == ("ajax",)
    assert d.collect("ajax") == ([], [], [])         # no poll parked: nobody to wake
    d.push("bob", ["t/b", 2], None, now=0)
    assert drain(d, r) == [["t/a", 1], ["t/b", 2]]
    assert drain(d, r) == []


def test_a_parked_lazy_reader_is_woken_once():
    d = make()
    r = d.open_reader("bob", "p", "ajax", now=0)
    r.ready = True
    d.push("bob", ["t/a", 1], None, now=0)
    assert d.collect("ajax")[2] == [r]
    assert not r.ready
    d.push("bob", ["t/a", 2], None, now=0)
    assert d.collect("ajax")[2] == []                # not parked any more


def test_partial_advance_leaves_the_rest_owed_in_order():
    d = make()
    r = d.open_reader("kay", "p", "ajax", now=0)
    for i in range(5):
        d.push("kay", ["t/n", i], None, now=0)
        d.broadcast(["t/b", i], now=0)
    pending = d.pending(r)
    d.advance(r, pending[:3])
    assert [e.event for _, e in d.pending(r)] == [e.event for _, e in pending[3:]]


def test_a_reader_behind_the_history_has_a_gap_never_a_silent_skip():
    d = make(history_size=3)
    r = d.open_reader("lag", "p", "ajax", now=0)
    for i in range(10):
        d.push("lag", ["t/n", i], None, now=0)
    d.expire(now=0)                                  # trims to the newest 3
    assert d.pending(r) is GAP
    d.skip_to_head(r)
    assert d.pending(r) == []


def test_eager_readers_are_not_trimmed_past_before_their_collect():
    """A burst bigger than the history inside one batching window still arrives whole."""
    d = make(history_size=3)
    r = d.open_reader("burst", "c", "ws", now=0)
    for i in range(50):
        d.push("burst", ["t/n", i], None, now=0)
    batches, gapped, _ = d.collect("ws")
    assert gapped == [] and events_of(batches, r) == [["t/n", i] for i in range(50)]


def test_history_expires_with_ttl_and_idle_logs_go_away():
    d = make(history_ttl=10.0)
    r = d.open_reader("old", "c", "ws", now=0)
    d.push("old", ["t/n", 1], None, now=0)
    d.collect("ws")
    d.close_reader(r, now=1.0)
    d.expire(now=5.0)
    assert ("u", "old") in d.logs                    # idle, but not for history_ttl yet
    d.expire(now=11.5)
    assert ("u", "old") not in d.logs


def test_a_reopened_reader_starts_at_the_head():
    d = make()
    r = d.open_reader("n", "c", "ws", now=0)
    d.push("n", ["t/n", 1], None, now=0)
    d.collect("ws")
    d.close_reader(r, now=0)
    d.push("n", ["t/n", 2], None, now=0)             # kept for replay, owed to nobody now
    r2 = d.open_reader("n", "c", "ws", now=0)
    assert r2.positions[USER] == 2 and not r2.owed()


@pytest.mark.parametrize("pattern", ["udu", "bbu", "ubtb", "tttu"])
def test_every_reader_gets_its_own_events_in_send_order(pattern):
    """Mixed user pushes (u), broadcasts (b) and targeted pushes (t), two tabs of one user
    and a second user: each gets exactly the events meant for it, in send order."""
    d = make()
    a = d.open_reader("x", "a", "ws", now=0)
    b = d.open_reader("x", "b", "ws", now=0)
    other = d.open_reader("y", "c", "ws", now=0)
    expected = {a: [], b: [], other: []}
    got = {a: [], b: [], other: []}
    n = 0
    for _round in range(3):
        for kind in pattern:
            n += 1
            event = ["t/n", n]
            if kind == "b":
                d.broadcast(event, now=0)
                for r in expected:
                    expected[r].append(event)
            elif kind == "t":
                d.push("x", event, "b", now=0)
                expected[b].append(event)
            else:
                d.push("x", event, None, now=0)
                expected[a].append(event)
                expected[b].append(event)
        batches, gapped, _ = d.collect("ws")
        assert not gapped
        for r in got:
            got[r] += events_of(batches, r)
    assert got == expected
    assert a.positions == b.positions and a.positions[BROADCAST] == other.positions[BROADCAST]


def test_resume_replays_what_a_returning_client_missed_then_new_pushes():
    d = make()
    first = d.open_reader("rex", "tab", "ws", now=0)
    d.push("rex", ["t/n", 1], None, now=0)
    batches, _, _ = d.collect("ws")
    seen = {name: pos for name, pos in batches[0].end.items()}
    assert seen == {USER: (first.logs[USER].epoch, 1)}
    d.close_reader(first, now=0)                     # the connection drops
    d.push("rex", ["t/n", 2], None, now=0)           # kept for it
    d.broadcast(["t/b", 3], now=0)
    again = d.open_reader("rex", "tab", "ws", now=0)
    positions = {USER: seen[USER], BROADCAST: (again.logs[BROADCAST].epoch, 0)}
    assert d.resume(again, positions) is True
    d.push("rex", ["t/n", 4], None, now=0)
    batches, _, _ = d.collect("ws")
    assert events_of(batches, again) == [["t/n", 2], ["t/b", 3], ["t/n", 4]]


def test_resume_says_not_recovered_for_another_epoch_a_trimmed_seq_or_a_missing_log():
    d = make(history_size=2)
    r = d.open_reader("sam", "tab", "ajax", now=0)
    user, bcast = r.logs[USER], r.logs[BROADCAST]
    for i in range(6):
        d.push("sam", ["t/n", i], None, now=0)
    d.expire(now=0)
    assert not d.resume(r, {USER: ("other-epoch", 6), BROADCAST: (bcast.epoch, 0)})
    assert r.positions[USER] == 6                    # at the head: nothing replayed
    assert not d.resume(r, {USER: (user.epoch, 1), BROADCAST: (bcast.epoch, 0)})
    assert not d.resume(r, {BROADCAST: (bcast.epoch, 0)})
    assert not d.resume(r, {USER: (user.epoch, 99), BROADCAST: (bcast.epoch, 0)})
    assert d.resume(r, {USER: (user.epoch, 4), BROADCAST: (bcast.epoch, 0)})
    assert [e.event for _, e in d.pending(r)] == [["t/n", 4], ["t/n", 5]]


def test_targeted_batches_end_past_entries_for_other_tabs():
    d = make()
    a = d.open_reader("tia", "a", "ws", now=0)
    d.open_reader("tia", "b", "ws", now=0)
    d.push("tia", ["t/x", 1], None, now=0)
    d.push("tia", ["t/only-b", 2], "b", now=0)
    batches, _, _ = d.collect("ws")
    mine = [b for b in batches if a in b.readers][0]
    assert mine.events == [["t/x", 1]] and mine.end[USER][1] == 2


def test_random_operations_deliver_each_reader_exactly_its_events_in_order():
    """Hypothesis drives opens, closes, pushes (targeted or not), broadcasts, collects and
    polls; a plain model says what each live reader is owed. History is large enough that
    no gap can happen, so every event must arrive exactly once, in send order."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    clients = [("x", "a", "ws"), ("x", "b", "ajax"), ("y", "c", "ws"), ("y", "d", "ajax")]
    op = st.one_of(
        st.tuples(st.just("open"), st.integers(0, 3)),
        st.tuples(st.just("close"), st.integers(0, 3)),
        st.tuples(st.just("push"), st.sampled_from(["x", "y"]),
                  st.sampled_from([None, "a", "b", "c", "d"])),
        st.tuples(st.just("broadcast")),
        st.tuples(st.just("collect")),
        st.tuples(st.just("poll"), st.integers(0, 3)),
    )

    @settings(max_examples=300, deadline=None)
    @given(st.lists(op, max_size=60))
    def run(ops):
        d = make(history_size=1000)
        live: dict[int, t.Any] = {}
        owed: dict[int, list] = {}
        got: dict[int, list] = {}
        n = 0
        for o in ops:
            if o[0] == "open" and o[1] not in live:
                uid, cid, tr = clients[o[1]]
                live[o[1]] = d.open_reader(uid, cid, tr, now=0)
                owed[o[1]], got[o[1]] = [], []
            elif o[0] == "close" and o[1] in live:
                d.close_reader(live.pop(o[1]), now=0)
            elif o[0] == "push":
                n += 1
                d.push(o[1], ["t/n", n], o[2], now=0)
                for i, r in live.items():
                    if r.uid == o[1] and o[2] in (None, r.client_id):
                        owed[i].append(n)
            elif o[0] == "broadcast":
                n += 1
                d.broadcast(["t/n", n], now=0)
                for i in live:
                    owed[i].append(n)
            elif o[0] == "collect":
                batches, gapped, _ = d.collect("ws")
                assert not gapped
                for b in batches:
                    for r in b.readers:
                        i = next(k for k, v in live.items() if v is r)
                        got[i] += [e[1] for e in b.events]
            elif o[0] == "poll" and o[1] in live and live[o[1]].transport == "ajax":
                got[o[1]] += [e[1] for e in drain(d, live[o[1]])]
        batches, _, _ = d.collect("ws")  # what is left, then the model check
        for b in batches:
            for r in b.readers:
                i = next(k for k, v in live.items() if v is r)
                got[i] += [e[1] for e in b.events]
        for i, r in live.items():
            if r.transport == "ajax":
                got[i] += [e[1] for e in drain(d, r)]
        for i in live:
            assert got[i] == owed[i]        # all of it, once, in send order

    run()


def test_a_mirror_whose_epoch_changes_puts_its_readers_at_a_gap():
    """Redis lost a log's history: every reader of the mirror is told on the next collect
    (eager) or poll (lazy), even if nothing new is appended."""
    d = make()
    d.mirror(("u", "m"), "e1", 5, now=0)
    ws = d.open_reader("m", "w", "ws", now=0)
    ajax = d.open_reader("m", "a", "ajax", now=0)
    ajax.ready = True
    d.mirror(("u", "m"), "e2", 0, now=0)
    _, gapped, _ = d.collect("ws")
    assert gapped == [ws]
    assert d.collect("ajax")[2] == [ajax]            # woken to read its gap
    assert d.pending(ajax) is GAP


def test_collect_due_batches_per_connection_within_its_window():
    """A reader given a batch less than a window ago waits for the rest of it (its log
    stays dirty, the next due time is returned); the others get theirs at once."""
    d = make()
    busy = d.open_reader("ann", "c1", "ws", now=0)
    calm = d.open_reader("bea", "c2", "ws", now=0)
    d.push("ann", ["t/n", 1], None, now=0)
    batches, _, _, later = d.collect_due("ws", now=0.0, window=0.01)
    assert (events_of(batches, busy), later) == ([["t/n", 1]], None)
    d.push("ann", ["t/n", 2], None, now=0.002)
    d.push("bea", ["t/n", 3], None, now=0.002)
    d.broadcast(["t/all", 4], now=0.003)
    batches, _, _, later = d.collect_due("ws", now=0.004, window=0.01)
    assert events_of(batches, calm) == [["t/n", 3], ["t/all", 4]]
    assert events_of(batches, busy) == [] and later == pytest.approx(0.01)
    # Its window over, the busy reader gets everything it waited for, in send order.
    batches, _, _, later = d.collect_due("ws", now=0.01, window=0.01)
    assert (events_of(batches, busy), later) == ([["t/n", 2], ["t/all", 4]], None)
    assert events_of(batches, calm) == []
    # collect() (an explicit flush) gives everything owed, windows or not.
    d.push("ann", ["t/n", 5], None, now=0.011)
    assert events_of(d.collect("ws")[0], busy) == [["t/n", 5]]


def test_a_log_a_waiting_reader_still_needs_is_not_trimmed():
    d = make(history_size=2)
    busy = d.open_reader("cal", "c1", "ws", now=0)
    other = d.open_reader("dee", "c2", "ws", now=0)
    d.broadcast(["t/n", 0], now=0)
    d.collect_due("ws", now=0.0, window=1.0)  # both given a batch at 0
    other.collected_at = float("-inf")        # only "busy" is inside its window now
    for i in range(1, 6):
        d.broadcast(["t/n", i], now=0.1)
    batches, gapped, _, later = d.collect_due("ws", now=0.1, window=1.0)
    assert events_of(batches, other) == [["t/n", i] for i in range(1, 6)]
    assert (gapped, later) == ([], 1.0)
    batches, gapped, _, _ = d.collect_due("ws", now=1.0, window=1.0)
    assert gapped == [] and events_of(batches, busy) == [["t/n", i] for i in range(1, 6)]


def test_a_poll_answers_the_pushes_before_a_kick_then_the_kick_alone():
    from flask_sente.core.readers import until_kick

    d = Delivery(history_size=100, history_ttl=60, new_epoch=iter("abcdef").__next__)
    r = d.open_reader("k", "tab", "ajax", 0.0)
    d.push("k", ["t/n", 1], None, 0.0)
    d.push("k", ["t/n", 2], None, 0.0)
    d.kick("k", "kicked", 0.0)
    d.push("k", ["t/n", 3], None, 0.0)
    pending = d.pending(r)
    before, kick = until_kick(pending)            # the first poll: the two pushes
    assert [e.event for _, e in before] == [["t/n", 1], ["t/n", 2]] and kick is None
    d.advance(r, before)
    before, kick = until_kick(d.pending(r))      # the next: the kick, alone
    assert before == [] and kick is not None and kick[1].control == "kick"
