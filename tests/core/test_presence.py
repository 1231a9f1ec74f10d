"""Presence rules without sockets or gevent: joins, grace windows, stale closes, kicks."""
import itertools

from flask_sente.core.presence import Change, Presence


def kinds(changes):
    return [(c.kind, c.uid, c.client_id, c.transport) for c in changes]


def test_first_member_brings_the_user_online_then_the_client_joins():
    p = Presence()
    assert kinds(p.attach("amy", "ws", "t1", 1)) == [
        ("user-online", "amy", None, None), ("client-joined", "amy", "t1", "ws")]
    assert kinds(p.attach("amy", "ajax", "t2", 2)) == [("client-joined", "amy", "t2", "ajax")]
    assert p.connected_uids.ws == {"amy"} and p.connected_uids.ajax == {"amy"}
    assert p.clients_of("amy") == {"ws": ["t1"], "ajax": ["t2"]}


def test_a_member_leaves_only_when_its_grace_window_ends():
    p = Presence()
    p.attach("amy", "ws", "t1", 1)
    assert p.detach("amy", "ws", "t1", 1, deadline=10.0)
    assert p.next_deadline() == 10.0
    assert p.expire(9.99) == []
    assert "amy" in p.connected_uids.ws              # still in the window
    assert kinds(p.expire(10.0)) == [("user-offline", "amy", None, None),
                                     ("client-left", "amy", "t1", "ws")]
    assert p.connected_uids.any == frozenset() and p.next_deadline() is None


def test_coming_back_within_grace_says_nothing_and_cancels_the_leave():
    p = Presence()
    p.attach("cal", "ws", "tab", 1)
    p.detach("cal", "ws", "tab", 1, deadline=5.0)
    assert p.attach("cal", "ws", "tab", 2) == []     # a reload: same client, new connection
    assert p.expire(6.0) == []
    assert "cal" in p.connected_uids.ws


def test_a_stale_close_of_a_replaced_connection_changes_nothing():
    p = Presence()
    p.attach("cal", "ws", "tab", 1)
    p.attach("cal", "ws", "tab", 2)                  # replaced (4003) before 1 closed
    assert not p.detach("cal", "ws", "tab", 1, deadline=1.0)
    assert p.expire(100.0) == []
    assert p.is_member("cal", "ws", "tab")


def test_an_old_deadline_does_not_fire_after_a_later_detach_moved_it():
    p = Presence()
    p.attach("eve", "ajax", "p", 1)
    p.detach("eve", "ajax", "p", 1, deadline=1.0)
    p.attach("eve", "ajax", "p", 2)                  # the next poll
    p.detach("eve", "ajax", "p", 2, deadline=3.0)
    assert p.expire(2.0) == []                       # the first window is void
    assert kinds(p.expire(3.0))[0] == ("user-offline", "eve", None, None)


def test_the_user_stays_online_while_any_member_is():
    p = Presence()
    p.attach("dee", "ws", "a", 1)
    p.attach("dee", "ws", "b", 2)
    p.detach("dee", "ws", "a", 1, deadline=1.0)
    assert kinds(p.expire(1.0)) == [("client-left", "dee", "a", "ws")]
    assert "dee" in p.connected_uids.ws


def test_leaving_one_transport_updates_that_set_only():
    p = Presence()
    p.attach("fay", "ws", "a", 1)
    p.attach("fay", "ajax", "b", 2)
    p.remove("fay", "ajax", "b")
    assert p.connected_uids.ajax == frozenset() and p.connected_uids.ws == {"fay"}


def test_remove_is_immediate_and_idempotent():
    p = Presence()
    p.attach("kim", "ws", "a", 1)
    p.detach("kim", "ws", "a", 1, deadline=50.0)
    assert kinds(p.remove("kim", "ws", "a"))[0][0] == "user-offline"
    assert p.remove("kim", "ws", "a") == []
    assert p.expire(60.0) == []                      # its old deadline finds nothing


def test_snapshot_is_reused_until_membership_changes():
    p = Presence()
    p.attach("a", "ws", "1", 1)
    first = p.connected_uids
    p.attach("a", "ws", "2", 2)                      # same uid, same sets
    assert p.connected_uids is first
    p.attach("b", "ws", "3", 3)
    assert p.connected_uids is not first and p.connected_uids.any == {"a", "b"}


def test_every_interleaving_of_two_tabs_opens_and_closes_the_user_once():
    """Two tabs, each attaching and detaching, in every order: one online and one offline
    for the user, and it is offline at the end."""
    steps = [("attach", "a"), ("detach", "a"), ("attach", "b"), ("detach", "b")]
    for order in itertools.permutations(range(4)):
        seq = [steps[i] for i in order]
        if seq.index(("attach", "a")) > seq.index(("detach", "a")) or \
                seq.index(("attach", "b")) > seq.index(("detach", "b")):
            continue
        p = Presence()
        changes: list[Change] = []
        for now, (what, tab) in enumerate(seq):
            changes += p.expire(float(now))
            if what == "attach":
                changes += p.attach("u", "ws", tab, ord(tab))
            else:
                p.detach("u", "ws", tab, ord(tab), deadline=now + 0.5)
        changes += p.expire(100.0)
        user = [c.kind for c in changes if c.kind.startswith("user")]
        assert user[0] == "user-online" and user[-1] == "user-offline", (seq, user)
        assert all(a != b for a, b in zip(user, user[1:], strict=False)), (seq, user)
        assert p.connected_uids.any == frozenset()
