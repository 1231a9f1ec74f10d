"""The sans-I/O core of flask_sente.

Rule for this folder: no I/O, no clock reads, no gevent, no flask. Values in, values out;
time, when needed, is passed in. ``tests/test_import_rules.py`` enforces the imports. The
server, the Python client and (by hand, mirrored in JavaScript) the browser client all
follow what is written here and in ``docs/protocol.md``.
"""
from __future__ import annotations

#: The newest protocol version this code speaks (2: positions and replay; 3: and server ->
#: client calls).
PROTOCOL_VERSION = 3
#: Versions the server accepts; it answers each client in the client's own version.
SUPPORTED_PROTOCOLS = frozenset({1, 2, 3})


def requested_version(text: str | None) -> int | None:
    """The protocol version a request's ``protocol`` parameter asks for (1 when absent), or
    None when this server does not speak it."""
    version = {None: 1, "1": 1, "2": 2, "3": 3}.get(text, 0)
    return version if version in SUPPORTED_PROTOCOLS else None
