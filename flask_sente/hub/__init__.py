"""The hub: one per app, a facade (:class:`Hub`) over services that each own one job —
see :mod:`flask_sente.hub.hub`."""
from __future__ import annotations

from ..core.presence import ConnectedUids
from .hub import Hub
from .topics import JoinHandlers

__all__ = ["ConnectedUids", "Hub", "JoinHandlers"]
