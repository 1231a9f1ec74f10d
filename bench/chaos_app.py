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
- ``POST /chaos/call`` ``{"nonce", "uid", "client", "x", "timeout"}`` asks that client
  (``sente.call(uid, ("chaos/ask", {"nonce", "x"}), client_id=client, timeout=...)``) from
  a greenlet of this worker and answers ``{"pid", "nonce"}`` at once. The greenlet writes
  one line of JSON when it starts (``{"ev": "start", ...}``, before the route answers) and
  one with the outcome (``{"ev": "end", "kind": "value" | the CallError's class name,
  "value" | "message", ...}``) to ``calls-<pid>.jsonl`` in ``CHAOS_LOG_DIR``: the drill
  reads every worker's file at the end, so a call started by a worker that was then killed
  is known too.
- ``GET /chaos/page?uid=&type=&topics=&cid=`` a page that connects with sente.js (client id
  ``cid``), joins its topics, answers ``chaos/ask`` calls and records every event and
  every call it answered (the drill reads ``window.rec`` back).

Settings from the environment: ``CHAOS_REDIS_URL`` (required), ``CHAOS_HISTORY_SIZE``,
``CHAOS_LOG_DIR`` (each worker's stderr goes to ``worker-<pid>.log`` there instead of
gunicorn's: two workers' tracebacks written at once would interleave line by line).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import typing as t

import gevent
from flask import Flask, render_template_string, request

from flask_sente import Sente
from flask_sente.exceptions import BackplaneError, CallError

EVENT = "chaos/ev"
#: The call every drill client answers (bench/chaos_check.py: answer_value).
ASK = "chaos/ask"
TOPIC_PATTERN = "room/*"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>chaos {{ uid }}</title>{{ sente_script() }}</head>
<body><script>
(() => {
  const uid = {{ uid|tojson }}, type = {{ type|tojson }}, topics = {{ topics|tojson }};
  const cid = {{ cid|tojson }};
  const now = () => Date.now() / 1000;
  // Every record the drill reads back, in the order the page saw them (bench/chaos_check.py).
  window.rec = [];
  window.ready = false;
  const options = {type, params: {uid}, upgradeRetryMs: 5000};
  if (cid) options.clientId = cid;
  const chsk = Sente.connect(options);
  window.chsk = chsk;
  // The drill's calls: the value is chaos_check.answer_value's, recorded with the nonce.
  chsk.answer("chaos/ask", (d) => {
    const value = {n: d.nonce, y: d.x * 3 + 1, by: chsk.clientId};
    rec.push(["ans", d.nonce, value, now()]);
    return value;
  });
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
    calls_fd = (os.open(os.path.join(log_dir, f"calls-{pid}.jsonl"),
                        os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if log_dir else None)

    def note_call(record: dict[str, t.Any]) -> None:
        """One line of the calls log, in one write (never interleaved with another's)."""
        assert calls_fd is not None
        os.write(calls_fd, (json.dumps({**record, "pid": pid, "t": time.time()}) + "\n"
                            ).encode())

    def ask(nonce: str, uid: str, client: str, x: int, timeout: float) -> None:
        """Make one call and write down its one outcome."""
        record: dict[str, t.Any] = {"ev": "end", "nonce": nonce}
        try:
            value = sente.call(uid, (ASK, {"nonce": nonce, "x": x}), client_id=client,
                               timeout=timeout)
            record.update(kind="value", value=value)
        except (CallError, BackplaneError) as exc:
            record.update(kind=type(exc).__name__, message=str(exc)[:300])
        except Exception as exc:  # noqa: BLE001 - an outcome the checker calls wrong
            record.update(kind=f"unexpected {type(exc).__name__}", message=str(exc)[:300])
        note_call(record)

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

    @app.post("/chaos/call")
    def call_route() -> t.Any:
        if calls_fd is None:
            return "CHAOS_LOG_DIR is not set: no calls log\n", 503
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return "expected a JSON object {nonce, uid, client, x, timeout}\n", 400
        nonce, uid, client = body.get("nonce"), body.get("uid"), body.get("client")
        x, timeout = body.get("x"), body.get("timeout")
        if not all(isinstance(v, str) and v for v in (nonce, uid, client)):
            return "nonce, uid and client must be non-empty strings\n", 400
        if not (isinstance(x, int) and isinstance(timeout, (int, float)) and timeout > 0):
            return "x must be an integer, timeout a positive number\n", 400
        note_call({"ev": "start", "nonce": nonce, "uid": uid, "client": client})
        gevent.spawn(ask, nonce, uid, client, x, float(timeout))
        return {"pid": pid, "nonce": nonce}

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
        return render_template_string(PAGE, uid=uid, type=kind, topics=topics,
                                      cid=request.args.get("cid", ""))

    return app
