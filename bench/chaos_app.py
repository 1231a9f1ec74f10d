"""The app the chaos drill (``python -m bench.chaos``) runs under ``gunicorn -k
flask_sente.worker.SenteWorker -w 3`` with the Redis backplane.

It is an ordinary app written from the README: users named by the ``uid`` query parameter
(token-less API clients: ``csrf=False``), topics ``room/*`` anyone may join, and plain HTTP
routes the drill drives from outside:

- ``POST /chaos/push`` ``{"u": [uid, ...], "b": true, "t": [topic, ...]}`` pushes one event
  to each user (``sente.send``), one broadcast and one publish per topic. Every event is
  ``("chaos/ev", {"s": stream, "n": counter, "t": wall time})``. A *stream* is one
  producer's pushes to one target, numbered 1, 2, 3 … here **per worker process**
  (``w<pid>:u:<uid>``, ``w<pid>:*``, ``w<pid>:t:<topic>``): the docs promise one order per
  log for what one process pushes, not an order between two workers' pushes, so a counter
  shared by the workers would report reorderings the library never promised to avoid. The
  answer lists the ``[stream, counter]`` pairs pushed.
- ``POST /chaos/final`` pushes the next counter of every stream this worker has pushed to,
  marked ``"f": 1`` — the end-of-run marker every client must get.
- ``GET /chaos/presence?topic=...`` this worker's ``connected_uids`` and ``members(topic)``.
- ``GET /chaos/page?uid=&type=&topics=`` a page that connects with sente.js, joins its
  topics and records every event it gets (the drill reads ``window.rec`` back).

Settings from the environment: ``CHAOS_REDIS_URL`` (required), ``CHAOS_HISTORY_SIZE``,
``CHAOS_LOG_DIR`` (each worker's stderr goes to ``worker-<pid>.log`` there instead of
gunicorn's: two workers' tracebacks written at once would interleave line by line).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import typing as t

from flask import Flask, render_template_string, request

from flask_sente import Sente

EVENT = "chaos/ev"
TOPIC_PATTERN = "room/*"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>chaos {{ uid }}</title>{{ sente_script() }}</head>
<body><script>
(() => {
  const uid = {{ uid|tojson }}, type = {{ type|tojson }}, topics = {{ topics|tojson }};
  const now = () => Date.now() / 1000;
  // Every record the drill reads back, in the order the page saw them (bench/chaos_check.py).
  window.rec = [];
  window.ready = false;
  const chsk = Sente.connect({type, params: {uid}, upgradeRetryMs: 5000});
  window.chsk = chsk;
  chsk.on("chaos/ev", (d) => rec.push(["e", d.s, d.n, d.t, now(), d.f ? 1 : 0]));
  chsk.on("chsk/handshake", (h) => rec.push(["hs", h.recovered, h.type, now(), h.firstHandshake]));
  chsk.on("chsk/rejoined", (r) => rec.push(["rj", r.topic, r.recovered, now()]));
  chsk.on("chsk/left", (r) => rec.push(["left", r.topic, r.reason, now()]));
  chsk.onState((s, old) => {
    if (s.open !== old.open) rec.push(["st", s.open, s.type, now(), s.lastClose]);
    if (s.lastClose && s.lastClose !== old.lastClose && !s.open) {
      rec.push(["cl", s.lastClose, s.type, now()]);
    }
  });
  (async () => {
    for (const topic of topics) {
      for (;;) {
        try {
          await chsk.join(topic, null, {timeout: 10000});
          rec.push(["jn", topic, null, now()]);
          break;
        } catch (e) {
          rec.push(["jerr", topic, String(e), now()]);
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    }
    window.ready = true;
  })();
})();
</script></body></html>
"""


def create_app() -> Flask:
    url = os.environ["CHAOS_REDIS_URL"]
    log_dir = os.environ.get("CHAOS_LOG_DIR")
    if log_dir:  # gunicorn loads the app in each worker: this is the worker's own stderr
        fd = os.open(os.path.join(log_dir, f"worker-{os.getpid()}.log"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__)
    app.secret_key = "chaos-drill"  # the same in every worker
    sente = Sente(app, csrf=False, backplane=url,
                  history_size=int(os.environ.get("CHAOS_HISTORY_SIZE", "2000")),
                  user_id=lambda client_id: request.args.get("uid"))
    pid = os.getpid()
    # stream -> (kind, target, last counter pushed); one lock so a counter and its push
    # are one step even if two requests of this worker interleave.
    streams: dict[str, tuple[str, str | None, int]] = {}
    lock = threading.Lock()

    def push(kind: str, target: str | None, final: bool = False) -> list[t.Any]:
        stream = f"w{pid}:*" if kind == "*" else f"w{pid}:{kind}:{target}"
        n = streams.get(stream, (kind, target, 0))[2] + 1
        data: dict[str, t.Any] = {"s": stream, "n": n, "t": time.time()}
        if final:
            data["f"] = 1
        if kind == "u":
            sente.send(target, (EVENT, data))
        elif kind == "*":
            sente.broadcast((EVENT, data))
        else:
            sente.publish(t.cast(str, target), (EVENT, data))
        streams[stream] = (kind, target, n)  # only once the push was accepted
        return [stream, n]

    @sente.on_join(TOPIC_PATTERN)
    def join(msg: t.Any) -> bool:
        return True

    @app.post("/chaos/push")
    def push_route() -> t.Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return "expected a JSON object {u: [uids], b: bool, t: [topics]}\n", 400
        uids, topics = body.get("u", []), body.get("t", [])
        if not (isinstance(uids, list) and all(isinstance(u, str) and u for u in uids)):
            return "u must be a list of non-empty strings\n", 400
        if not (isinstance(topics, list) and all(isinstance(x, str) and x.startswith("room/")
                                                 for x in topics)):
            return "t must be a list of topics room/...\n", 400
        pushed = []
        with lock:
            for uid in uids:
                pushed.append(push("u", uid))
            if body.get("b"):
                pushed.append(push("*", None))
            for topic in topics:
                pushed.append(push("t", topic))
        return {"pid": pid, "pushed": pushed}

    @app.post("/chaos/final")
    def final_route() -> t.Any:
        with lock:
            pushed = [push(kind, target, final=True)
                      for kind, target, _ in list(streams.values())]
        return {"pid": pid, "pushed": pushed}

    @app.get("/chaos/presence")
    def presence_route() -> t.Any:
        uids = sente.connected_uids
        return {"pid": pid, "ws": sorted(uids.ws), "ajax": sorted(uids.ajax),
                "any": sorted(uids.any),
                "members": {topic: sorted(sente.members(topic))
                            for topic in request.args.getlist("topic")}}

    @app.get("/chaos/page")
    def page_route() -> t.Any:
        uid, kind = request.args.get("uid", ""), request.args.get("type", "auto")
        topics = [x for x in request.args.get("topics", "").split(",") if x]
        if not uid or kind not in ("ws", "ajax", "auto"):
            return "uid and type (ws, ajax, auto) are required\n", 400
        return render_template_string(PAGE, uid=uid, type=kind, topics=topics)

    return app
