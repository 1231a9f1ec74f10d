"""Kept so ``from flask_sente.client_ws import WebSocket`` goes on working: the client's
WebSocket lives in :mod:`flask_sente.client.websocket`, its codec in
:mod:`flask_sente.protocol.frames`."""
from __future__ import annotations

from .client.websocket import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from .client.websocket import WebSocket as WebSocket
from .protocol.frames import accept_key as accept_key
from .protocol.frames import encode_frame as encode_frame
from .protocol.frames import mask as mask

__all__ = ["WebSocket", "mask", "accept_key"]
