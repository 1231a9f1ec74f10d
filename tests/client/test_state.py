"""The client's ConnectionMachine: attempts and their reset, the transport plan, and the
auto-mode fallback rule, driven with a clock passed in (no sockets, no threads)."""
from __future__ import annotations

import pytest

from flask_sente.client.state import STABLE_AFTER, CloseInfo, ConnectionMachine


def test_attempts_count_failures_and_reset_after_a_stable_connection() -> None:
    machine = ConnectionMachine("ws")
    assert [machine.next_attempt() for _ in range(3)] == [1, 2, 3]
    machine.connection_ended(opened_at=100.0, now=100.0 + STABLE_AFTER / 2)  # flapping
    assert machine.next_attempt() == 4
    machine.connection_ended(opened_at=100.0, now=100.0 + STABLE_AFTER)  # stayed up
    assert machine.next_attempt() == 1
    machine.next_attempt()
    machine.new_session()  # connect()/reconnect()/disconnect()
    assert machine.next_attempt() == 1


@pytest.mark.parametrize("type_, plan", [("ws", ("ws",)), ("ajax", ("ajax",)),
                                         ("auto", ("ws", "ajax"))])
def test_the_transport_plan_follows_the_type(type_: str, plan: tuple[str, ...]) -> None:
    assert ConnectionMachine(type_).transports(now=0.0) == plan


def test_after_a_fallback_auto_stays_on_ajax_until_upgrade_retry_passes() -> None:
    machine = ConnectionMachine("auto", upgrade_retry=30.0)
    assert machine.may_probe(ws_status=400) == "downgrade"
    machine.fell_back(now=10.0)
    assert machine.transports(now=39.9) == ("ajax",)
    assert machine.transports(now=40.0) == ("ws", "ajax")
    machine.opened("ws")  # the upgrader moved up: WebSocket first again
    assert machine.transports(now=11.0) == ("ws", "ajax")


def test_without_upgrade_retry_only_reconnect_tries_websocket_again() -> None:
    machine = ConnectionMachine("auto", upgrade_retry=None)
    machine.fell_back(now=0.0)
    assert machine.transports(now=1e9) == ("ajax",)
    machine.reset_transport()
    assert machine.transports(now=1e9) == ("ws", "ajax")


def test_probe_after_a_websocket_failure_unless_refused() -> None:
    machine = ConnectionMachine("auto")
    assert machine.may_probe(ws_status=403) == "stop"
    assert machine.may_probe(ws_status=0) == "downgrade"
    machine.opened("ws")
    # Even after a WebSocket worked: the Ajax probe decides (a server that is down fails
    # the probe too, and the client retries WebSocket; a proxy that started refusing
    # upgrades lets the probe through, and the client goes on over Ajax).
    assert machine.may_probe(ws_status=0) == "downgrade"
    assert ConnectionMachine("ws").may_probe(ws_status=0) == "retry"
    lenient = ConnectionMachine("auto", reconnect_on_auth_failure=True)
    assert lenient.may_probe(ws_status=401) == "retry"


def test_the_reconnect_decision_uses_the_auth_option() -> None:
    forbidden = CloseInfo("rejected", status=403)
    assert not ConnectionMachine("ws").should_reconnect(forbidden)
    assert ConnectionMachine("ws", reconnect_on_auth_failure=True).should_reconnect(forbidden)
    assert not ConnectionMachine("ws").should_reconnect(CloseInfo("protocol-mismatch"))


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="type must be one of"):
        ConnectionMachine("sse")
