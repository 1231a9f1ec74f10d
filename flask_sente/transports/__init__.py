"""Transports: the I/O side of one connection (gevent). They know nothing of Flask or of
the hub's maps; the hub drives them through the small interfaces in :mod:`.base`."""
