"""The live connections of one hub: WebSockets and Ajax clients, by transport, user and
client id, plus the Ajax clients holding a fast-path key.

A plain container with types (``WsConnection`` / ``AjaxClient``): who decides when a
connection comes and goes is elsewhere (``hub.presence`` forgets, the transports
register). Registering the first connection calls ``on_first`` (the hub starts its sweeper
and its metrics then).
"""
from __future__ import annotations

import typing as t

from ..connections import AjaxClient, WsConnection
from ..core.presence import Transport, Uid

Connection = WsConnection | AjaxClient


class ConnectionTable:
    def __init__(self, on_first: t.Callable[[], None] = lambda: None) -> None:
        self._ws: dict[Uid, dict[str, WsConnection]] = {}
        self._ajax: dict[Uid, dict[str, AjaxClient]] = {}
        #: Ajax clients by client id that were given a fast-path key (``fastpath``).
        self.keyed: dict[str, AjaxClient] = {}
        self._on_first: t.Callable[[], None] | None = on_first

    def _of(self, transport: Transport) -> dict[Uid, dict[str, t.Any]]:
        return self._ws if transport == "ws" else self._ajax

    # --- lookups -------------------------------------------------------------------------

    def ws(self, uid: Uid, client_id: str) -> WsConnection | None:
        clients = self._ws.get(uid)
        return clients.get(client_id) if clients else None

    def ajax(self, uid: Uid, client_id: str) -> AjaxClient | None:
        clients = self._ajax.get(uid)
        return clients.get(client_id) if clients else None

    def get(self, transport: Transport, uid: Uid, client_id: str) -> Connection | None:
        return self.ws(uid, client_id) if transport == "ws" else self.ajax(uid, client_id)

    def ws_of(self, uid: Uid) -> list[WsConnection]:
        return list(self._ws.get(uid, {}).values())

    def ajax_of(self, uid: Uid) -> list[AjaxClient]:
        return list(self._ajax.get(uid, {}).values())

    def of_user(self, uid: Uid) -> list[Connection]:
        return [*self.ws_of(uid), *self.ajax_of(uid)]

    def all_ws(self) -> t.Iterator[WsConnection]:
        for clients in self._ws.values():
            yield from clients.values()

    def all_ajax(self) -> t.Iterator[AjaxClient]:
        for clients in self._ajax.values():
            yield from clients.values()

    def all(self, transport: Transport) -> list[Connection]:
        return list(self.all_ws() if transport == "ws" else self.all_ajax())

    # --- changes -------------------------------------------------------------------------

    def register(self, conn: Connection) -> Connection | None:
        """Put ``conn`` in the table; returns the connection of the same client id it
        replaced (or None)."""
        if self._on_first is not None:
            on_first, self._on_first = self._on_first, None
            on_first()
        clients = self._of(conn.transport).setdefault(conn.uid, {})
        old: Connection | None = clients.get(conn.client_id)
        clients[conn.client_id] = conn
        if old is not None:
            self.unkey(old)  # its key stood for the connection replaced
        return old

    def pop(self, transport: Transport, uid: Uid, client_id: str) -> Connection | None:
        """Take the client out of the table (and its key); None when it was not there."""
        by_uid = self._of(transport)
        clients = by_uid.get(uid)
        conn: Connection | None = clients.pop(client_id, None) if clients else None
        if conn is None:
            return None
        if not clients:
            del by_uid[uid]
        self.unkey(conn)
        return conn

    def holds(self, conn: Connection) -> bool:
        """Whether ``conn`` is still the table's connection for its client id."""
        return self.get(conn.transport, conn.uid, conn.client_id) is conn

    def unkey(self, conn: Connection) -> None:
        """Forget the fast-path key of ``conn`` (when it holds the one of its client id)."""
        if self.keyed.get(conn.client_id) is conn:
            del self.keyed[conn.client_id]
