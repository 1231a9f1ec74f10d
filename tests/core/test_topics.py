"""Topics in the core: a topic is one more log a reader may read, joined and left at will."""
from flask_sente.core.delivery import GAP, join_target, split_target, topic_log_name

from .test_delivery import events_of, make


def test_a_publish_reaches_the_topics_readers_only():
    d = make()
    a = d.open_reader("ann", "a", "ws", now=0)
    b = d.open_reader("bob", "b", "ws", now=0)
    assert d.join(a, "room/1", now=0) == (None, (d.logs[("t", "room/1")].epoch, 0))
    d.publish("room/1", ["chat/msg", "hi"], None, now=0)
    batches, _, _ = d.collect("ws")
    assert events_of(batches, a) == [["chat/msg", "hi"]]
    assert events_of(batches, b) == []
    assert a.positions[topic_log_name("room/1")] == 1


def test_a_publish_to_a_topic_nobody_joined_is_not_kept():
    d = make()
    assert d.publish("empty", ["x/y", 1], None, now=0) == ()
    assert ("t", "empty") not in d.logs


def test_topic_entries_keep_send_order_with_pushes_in_one_batch():
    d = make()
    a = d.open_reader("ann", "a", "ws", now=0)
    d.join(a, "r", now=0)
    d.push("ann", ["p/n", 1], None, now=0)
    d.publish("r", ["t/n", 2], None, now=0)
    d.broadcast(["b/n", 3], now=0)
    d.publish("r", ["t/n", 4], None, now=0)
    batches, _, _ = d.collect("ws")
    assert events_of(batches, a) == [["p/n", 1], ["t/n", 2], ["b/n", 3], ["t/n", 4]]
    (batch,) = batches
    assert set(batch.end) == {"u", "*", "t:r"}


def test_exclude_skips_one_client_and_the_others_share_one_batch():
    d = make()
    readers = [d.open_reader(f"u{i}", f"c{i}", "ws", now=0) for i in range(5)]
    for r in readers:
        d.join(r, "r", now=0)
    d.publish("r", ["t/said", "x"], "c0", now=0)
    batches, _, _ = d.collect("ws")
    assert events_of(batches, readers[0]) == []
    assert len(batches) == 1 and set(batches[0].readers) == set(readers[1:])
    # the excluded reader moved past it all the same
    assert readers[0].positions["t:r"] == 1


def test_an_excluded_lazy_reader_is_not_given_the_entry_but_passes_it():
    d = make()
    r = d.open_reader("ann", "a", "ajax", now=0)
    d.join(r, "r", now=0)
    d.publish("r", ["t/n", 1], "a", now=0)
    d.publish("r", ["t/n", 2], None, now=0)
    pending = d.pending(r)
    assert [e.event for _, e in pending if e.for_client("a")] == [["t/n", 2]]


def test_leave_stops_delivery_and_the_log_goes_idle():
    d = make()
    a = d.open_reader("ann", "a", "ws", now=0)
    d.join(a, "r", now=0)
    assert d.leave(a, "r", now=5)
    assert not d.leave(a, "r", now=5)
    assert d.publish("r", ["t/n", 1], None, now=5) == ()   # kept, but nobody reads it
    assert d.collect("ws") == ([], [], [])
    assert d.logs[("t", "r")].idle_since == 5
    assert "t:r" not in a.positions and d.topics_of(a) == []


def test_rejoin_with_a_position_replays_what_was_missed():
    d = make()
    a = d.open_reader("ann", "a", "ws", now=0)
    _, (epoch, _) = d.join(a, "r", now=0)
    d.publish("r", ["t/n", 1], None, now=0)
    d.collect("ws")
    d.close_reader(a, now=1)
    d.publish("r", ["t/n", 2], None, now=1)           # kept: the log outlives its readers
    a2 = d.open_reader("ann", "a", "ws", now=2)
    assert d.join(a2, "r", now=2, position=(epoch, 1)) == (True, (epoch, 1))
    batches, _, _ = d.collect("ws")
    assert events_of(batches, a2) == [["t/n", 2]]


def test_rejoin_from_another_epoch_or_too_far_back_is_not_recovered():
    d = make(history_size=2)
    a = d.open_reader("ann", "a", "ws", now=0)
    _, (epoch, _) = d.join(a, "r", now=0)
    assert d.join(a, "r", now=0, position=("other", 0)) == (False, (epoch, 0))
    for i in range(6):
        d.publish("r", ["t/n", i], None, now=0)
        d.collect("ws")
    assert d.logs[("t", "r")].after(0) is GAP
    assert d.join(a, "r", now=0, position=(epoch, 0)) == (False, (epoch, 6))


def test_topics_are_mirrored_and_applied_like_other_logs():
    d = make()
    a = d.open_reader("ann", "a", "ajax", now=0)
    d.mirror(("t", "r"), "E", 4, now=0)
    assert d.join(a, "r", now=0, position=("E", 4)) == (True, ("E", 4))
    assert d.apply(("t", "r"), "E", 5, ["t/n", 5], join_target(None, "a"), None, now=0) \
        == ("ajax",)
    (_, entry), = d.pending(a)
    assert entry.exclude == "a" and not entry.for_client("a")


def test_target_fields_round_trip():
    assert split_target(join_target("c1", None)) == ("c1", None)
    assert split_target(join_target(None, "c1")) == (None, "c1")
    assert split_target(None) == (None, None)


def test_random_joins_leaves_and_publishes_deliver_each_reader_exactly_its_events():
    """Hypothesis drives opens, closes, joins, leaves, pushes, publishes (some excluding one
    client), collects and polls; a plain model says what each live reader is owed: the
    publishes of the topics it is in from its join on, except those excluding it, merged
    in send order with its user's pushes."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    clients = [("x", "a", "ws"), ("x", "b", "ajax"), ("y", "c", "ws"), ("y", "d", "ajax")]
    topics = ["r1", "r2"]
    op = st.one_of(
        st.tuples(st.just("open"), st.integers(0, 3)),
        st.tuples(st.just("close"), st.integers(0, 3)),
        st.tuples(st.just("join"), st.integers(0, 3), st.sampled_from(topics)),
        st.tuples(st.just("leave"), st.integers(0, 3), st.sampled_from(topics)),
        st.tuples(st.just("push"), st.sampled_from(["x", "y"])),
        st.tuples(st.just("publish"), st.sampled_from(topics),
                  st.sampled_from([None, "a", "b", "c", "d"])),
        st.tuples(st.just("collect")),
        st.tuples(st.just("poll"), st.integers(0, 3)),
    )

    def drain(d, reader):
        pending = d.pending(reader)
        assert pending is not GAP
        d.advance(reader, pending)
        return [e.event[1] for _, e in pending if e.for_client(reader.client_id)]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(op, max_size=60))
    def run(ops):
        d = make(history_size=1000)
        live: dict[int, object] = {}
        owed: dict[int, list] = {}
        got: dict[int, list] = {}
        n = 0

        def collect():
            batches, gapped, _ = d.collect("ws")
            assert not gapped
            for b in batches:
                for r in b.readers:
                    i = next(k for k, v in live.items() if v is r)
                    got[i] += [e[1] for e in b.events]

        for o in ops:
            if o[0] == "open" and o[1] not in live:
                uid, cid, tr = clients[o[1]]
                live[o[1]] = d.open_reader(uid, cid, tr, now=0)
                owed[o[1]], got[o[1]] = [], []
            elif o[0] == "close" and o[1] in live:
                d.close_reader(live.pop(o[1]), now=0)
            elif o[0] == "join" and o[1] in live:
                d.join(live[o[1]], o[2], now=0)
            elif o[0] == "leave" and o[1] in live:
                # what it was owed of the topic up to now still counts once collected:
                # collect first, as the hub answers a leave after earlier batches
                collect()
                for i, r in live.items():
                    if r.transport == "ajax":
                        got[i] += drain(d, r)
                d.leave(live[o[1]], o[2], now=0)
            elif o[0] == "push":
                n += 1
                d.push(o[1], ["t/n", n], None, now=0)
                for i, r in live.items():
                    if r.uid == o[1]:
                        owed[i].append(n)
            elif o[0] == "publish":
                n += 1
                d.publish(o[1], ["t/n", n], o[2], now=0)
                for i, r in live.items():
                    if f"t:{o[1]}" in r.logs and r.client_id != o[2]:
                        owed[i].append(n)
            elif o[0] == "collect":
                collect()
            elif o[0] == "poll" and o[1] in live and live[o[1]].transport == "ajax":
                got[o[1]] += drain(d, live[o[1]])
        collect()
        for i, r in live.items():
            if r.transport == "ajax":
                got[i] += drain(d, r)
        for i in live:
            assert got[i] == owed[i]        # all of it, once, in send order

    run()


def test_a_position_is_answered_for_a_client_with_no_reader_as_join_would():
    d = make(history_size=3)
    a = d.open_reader("ann", "a", "ws", now=0)
    d.join(a, "room/1", now=0)                       # keeps the topic's log alive
    epoch = d.logs[("t", "room/1")].epoch
    for n in range(2):
        d.publish("room/1", ["t/n", n], None, now=0)
    assert d.topic_position("room/1", 0, None) == (None, (epoch, 2))
    assert d.topic_position("room/1", 0, (epoch, 0)) == (True, (epoch, 0))   # stays there
    for n in range(2, 6):
        d.publish("room/1", ["t/n", n], None, now=0)
    d.collect("ws")                                  # ann read them: the history is trimmed
    assert d.topic_position("room/1", 0, (epoch, 0)) == (False, (epoch, 6))  # gone: head
    assert d.topic_position("room/1", 0, ("other", 1)) == (False, (epoch, 6))
