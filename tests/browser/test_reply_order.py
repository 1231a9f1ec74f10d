"""A reply never overtakes its handler's pushes, in Chromium (issue 25 #2, docs/protocol.md
§6 "Replies after their pushes").

The README quickstart's app, as written, serves a page whose script makes the quickstart's
call 30 times, each on a fresh connection made right before it (as a page load does: the
call waits for the open), then 5 times on a connection that has been open and idle: when
the call's promise resolves, the ``chat/said`` listener must have seen that call's
broadcast. Over WebSocket the server sends the push first and sente.js runs listeners
before it resolves; over Ajax the reply carries ``X-Sente-After`` and sente.js holds it
until its polls got there.

Broken on purpose once: with ``_afterPushes`` delivering at once, the Ajax run had the
reply first in 30 of 30 fresh connections and 3 of 5 idle ones; the WebSocket run passes
either way (nothing changed there: the server orders the frames, sente.js runs the
listeners synchronously).
"""
from __future__ import annotations

import os
import sys
import typing as t

import pytest
from playwright.sync_api import Browser

from .conftest import HERE, PAGE_TIMEOUT, Server
from .test_readme import quickstart_blocks

PAGE = """{{ sente_script() }}
<script>
// One quickstart call on a connection of `type`; true when the broadcast's listener ran
// before the reply's promise resolved.
window.quickstartCall = async (chsk, seen, text) => {
  const reply = await chsk.call(["chat/say", text], {timeout: 5000});
  return reply.ok === true && seen.includes(text);
};
window.run = async (type, rounds, idle) => {
  const results = { fresh: 0, idle: 0, missed: [] };
  for (let n = 0; n < rounds; n++) {
    const chsk = Sente.connect({ type });
    const seen = [];
    chsk.on("chat/said", (m) => seen.push(m.text));
    if (await quickstartCall(chsk, seen, `${type} fresh ${n}`)) results.fresh += 1;
    else results.missed.push(`fresh ${n}: ${JSON.stringify(seen)}`);
    chsk.disconnect();
  }
  const chsk = Sente.connect({ type });
  const seen = [];
  chsk.on("chat/said", (m) => seen.push(m.text));
  await quickstartCall(chsk, seen, `${type} warm-up`);
  for (let n = 0; n < idle; n++) {
    await new Promise((resolve) => setTimeout(resolve, 300));  // open and idle
    if (await quickstartCall(chsk, seen, `${type} idle ${n}`)) results.idle += 1;
    else results.missed.push(`idle ${n}: ${JSON.stringify(seen)}`);
  }
  results.type = chsk.state.type;
  chsk.disconnect();
  return results;
};
</script>
"""


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_the_quickstart_call_resolves_after_its_broadcast(browser: Browser, tmp_path: t.Any,
                                                          transport: str) -> None:
    app_py, _ = quickstart_blocks()
    (tmp_path / "templates").mkdir()
    (tmp_path / "app.py").write_text(app_py, encoding="utf-8")
    (tmp_path / "templates" / "index.html").write_text(PAGE, encoding="utf-8")
    server = Server(str(tmp_path / "server.log"),
                    command=lambda port: [sys.executable, os.path.join(HERE, "quickstart_server.py"),
                                          str(tmp_path)],
                    ready=r"serving on http://127\.0\.0\.1:(\d+)")
    server.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/", timeout=PAGE_TIMEOUT)
        results = page.evaluate("([type]) => run(type, 30, 5)", [transport])
        assert not errors, errors
        assert results["type"] == transport
        assert (results["fresh"], results["idle"]) == (30, 5), results["missed"]
    finally:
        context.close()
        server.stop(graceful=False)
        print(server.log()[-3000:])
