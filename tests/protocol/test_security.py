import pytest

from flask_sente.protocol.security import csrf_token_valid, normalize_origin, origin_allowed

OWN = "http://app.test:5000/"


@pytest.mark.parametrize("allowed, origin, ok", [
    (None, None, True),                              # no Origin: not a foreign page
    (None, "http://app.test:5000", True),            # same origin
    (None, "HTTP://APP.test:5000", True),
    (None, "http://evil.test", False),
    (None, "http://app.test:5001", False),
    (None, "https://app.test:5000", False),
    (None, "null", False),
    ("*", "http://evil.test", True),
    (["https://site.com"], "https://site.com", True),
    (["https://site.com"], "https://site.com:443", True),
    (["https://site.com"], "https://site.com.evil.com", False),
    (["https://site.com"], "http://site.com", False),
])
def test_origin_truth_table(allowed, origin, ok):
    assert origin_allowed(allowed, origin, OWN) is ok


def test_normalize_origin_drops_default_ports():
    assert normalize_origin("https://a.b:443/x") == "https://a.b"
    assert normalize_origin("http://a.b:8080") == "http://a.b:8080"


@pytest.mark.parametrize("expected, supplied, ok", [
    ("tok", "tok", True),
    ("tok", "tok2", False),
    ("tok", None, False),
    ("tok", "", False),
    (None, "tok", False),     # fail closed when there is no reference token
    ("", "", False),
    ("ünï", "ünï", True),
])
def test_csrf_truth_table(expected, supplied, ok):
    assert csrf_token_valid(expected, supplied) is ok


def test_ws_tickets_single_use_bound_and_expiring():
    from flask_sente.protocol.security import WsTickets

    now = [1000.0]
    tickets = WsTickets(clock=lambda: now[0], ttl=30)
    first = tickets.issue("tab", "key")
    assert not tickets.redeem(first, "other-tab", "key")     # bound to its client id
    assert not tickets.redeem(first, "tab", "other-key")     # and to the app's key
    assert tickets.redeem(first, "tab", "key")
    assert not tickets.redeem(first, "tab", "key")           # single use
    late = tickets.issue("tab", "key")
    now[0] += 31
    assert not tickets.redeem(late, "tab", "key")            # expired
    assert WsTickets(clock=lambda: now[0]).redeem(tickets.issue("tab", "key"), "tab", "key")
    for junk in (None, "", "a.b", "1.2.3", "x" * 300, "a.b.c.d"):
        assert not tickets.redeem(junk, "tab", "key")
