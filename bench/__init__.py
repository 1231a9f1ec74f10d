"""Benchmarks: ``python -m bench`` (flask_sente against its peers, issue 7) and
``python -m bench.echo`` (the WebSocket handler against stock gevent-websocket, issue 2)."""
