"""Reconnect backoff, shared by both clients (``sente.js`` mirrors it).

Sente's backoff is uncapped and starts at 2 s; ours retries at once the first time, then
doubles from 1 s with equal jitter (never less than half the step, so a fleet of clients
restarting together spreads out) and stops growing at ``cap`` (30 s by default).
"""
from __future__ import annotations

DEFAULT_CAP = 30.0
DEFAULT_BASE = 1.0


def backoff_delay(
    attempt: int, rand: float, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP
) -> float:
    """Seconds to wait before reconnect ``attempt`` (1-based); ``rand`` is in [0, 1).

    Attempt 1 is immediate; attempt n >= 2 waits in [step/2, step) with
    ``step = min(cap, base * 2 ** (n - 2))``.
    """
    if attempt <= 1:
        return 0.0
    step = min(cap, base * 2.0 ** min(attempt - 2, 62))
    return step / 2.0 + rand * step / 2.0
