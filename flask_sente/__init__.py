"""flask_sente: realtime web comms for Flask on gevent (a port of Clojure's Sente)."""
from __future__ import annotations
