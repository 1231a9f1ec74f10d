"""The sans-I/O core of the server: delivery (logs, readers, batches) and presence.

Plain objects driven by calls, with the clock passed in: no gevent, no sockets, no Flask.
The hub (``flask_sente/hub.py``) is the gevent shell that feeds them and performs what they
decide. This package may import only the standard library and ``flask_sente.protocol``.
"""
