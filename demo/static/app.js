// The demo page: a todo list and an online panel kept live by flask_sente's browser client.
// Every change is a call with a reply (so failures show up), and every page applies the
// server's pushes, including the author's own page.
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  const forced = params.get("type");
  const $ = (id) => document.getElementById(id);
  const todos = new Map();        // id -> todo, in creation order
  const me = $("me").textContent;

  const forceAjax = $("force-ajax");
  forceAjax.checked = forced === "ajax";
  forceAjax.addEventListener("change", () => {
    const next = new URL(location.href);
    if (forceAjax.checked) next.searchParams.set("type", "ajax");
    else next.searchParams.delete("type");
    location.assign(next);
  });

  const chsk = Sente.connect(undefined, {type: forced === "ajax" || forced === "ws" ? forced : "auto"});
  window.chsk = chsk;  // handy in devtools, and used by the browser tests

  // --- connection indicator ---------------------------------------------------------------

  /**
   * Why the client stopped for good (it does not reconnect on its own after these), as a
   * sentence for the page; null while it is open or still trying.
   */
  function stoppedBecause(state) {
    const last = state.lastClose;
    if (state.open || !last) return null;
    if (last.reason === "rejected" && (last.status === 401 || last.status === 403)) {
      return `The server refused this page (${last.status}): it was probably restarted with ` +
        "a new secret key, or your session ended.";
    }
    if (last.reason === "kicked") return "You were signed out.";
    if (last.reason === "protocol-mismatch") return "The server was updated.";
    return null;
  }

  let countdown = null; // the timer that refreshes "reconnecting in N s"

  function showState(state) {
    const stopped = stoppedBecause(state);
    let label;
    if (state.open) label = "open";
    else if (stopped || (state.lastClose && state.lastClose.reason === "requested-disconnect")) label = "offline";
    else if (state.everOpened) label = "reconnecting";
    else label = "connecting";
    $("status").dataset.state = label;
    const secondsLeft = state.nextReconnectAt === null ? 0 : Math.ceil((state.nextReconnectAt - Date.now()) / 1000);
    $("status-text").textContent = label === "reconnecting" && secondsLeft > 0 ? `reconnecting in ${secondsLeft} s` : label;
    // The state does not change while a backoff runs down, so the page ticks on its own.
    const waiting = label === "reconnecting" && secondsLeft > 0;
    if (waiting && countdown === null) countdown = setInterval(() => showState(chsk.state), 250);
    if (!waiting && countdown !== null) { clearInterval(countdown); countdown = null; }
    $("transport").textContent = state.open ? state.type : "";
    $("transport").hidden = !state.open;
    // Offline, changes could only fail: say so up front instead of with an error toast.
    document.body.classList.toggle("offline", !state.open);
    for (const el of document.querySelectorAll("[data-needs-connection]")) el.disabled = !state.open;
    $("stopped").hidden = stopped === null;
    $("stopped-text").textContent = stopped ? `${stopped} Reload the page to go on.` : "";
  }
  $("reload").addEventListener("click", () => location.reload());
  chsk.onState((state, old) => {
    showState(state);
    if (state.open !== Boolean(old && old.open)) renderTodos(); // its controls follow the connection
  });
  showState(chsk.state);

  // Load the list and the online panel on the first connection (recovered: null), and again
  // whenever the server says this page missed something it cannot replay (recovered: false,
  // e.g. after a server restart). After recovered: true the missed pushes are replayed in
  // order, so what the page shows is already right: nothing to do.
  chsk.on("chsk/handshake", (info) => { if (info.recovered !== true) resync(); });

  // --- todos ---------------------------------------------------------------------------------
  async function resync() {
    try {
      const [list, presence] = await Promise.all([
        chsk.call(["todo/list"], {timeout: 5000}),
        chsk.call(["presence/list"], {timeout: 5000}),
      ]);
      todos.clear();
      for (const t of list.todos) todos.set(t.id, t);
      renderTodos();
      renderPresence(presence.users);
    } catch (err) {
      toast(`Could not load the list: ${err.message}`, true);
    }
  }

  function renderTodos(freshId) {
    const ul = $("todo-list");
    ul.replaceChildren(...[...todos.values()].map((t) => todoItem(t, t.id === freshId)));
    $("empty").hidden = todos.size > 0;
  }

  function todoItem(todo, fresh) {
    const li = document.createElement("li");
    li.className = "todo" + (todo.done ? " done" : "") + (fresh ? " fresh" : "");
    li.dataset.id = todo.id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = todo.done;
    box.disabled = !chsk.state.open;
    box.setAttribute("aria-label", "Done");
    box.addEventListener("change", () => change("todo/toggle", {id: todo.id}));
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = todo.text;
    text.title = "Double-click to edit";
    text.addEventListener("dblclick", () => startEdit(li, todo));
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = todo.author;
    const del = document.createElement("button");
    del.className = "icon delete";
    del.textContent = "✕";
    del.setAttribute("aria-label", "Delete");
    del.disabled = !chsk.state.open;
    del.addEventListener("click", () => change("todo/delete", {id: todo.id}));
    li.append(box, text, author, del);
    return li;
  }

  function startEdit(li, todo) {
    if (!chsk.state.open) return;
    const input = document.createElement("input");
    input.className = "edit-input";
    input.value = todo.text;
    li.querySelector(".text").replaceWith(input);
    input.focus();
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      if (save && input.value.trim() && input.value !== todo.text) {
        change("todo/edit", {id: todo.id, text: input.value});
      } else {
        renderTodos();
      }
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") finish(true);
      if (e.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
  }

  async function change(eventId, data) {
    try {
      const reply = await chsk.call([eventId, data], {timeout: 5000});
      if (!reply.ok) toast(reply.error, true);
      return reply;
    } catch (err) {
      toast(`${eventId} failed: ${err.message}`, true);
      renderTodos();
      return null;
    }
  }

  $("add-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("add-text");
    const text = input.value;
    if (!text.trim()) return;
    const reply = await change("todo/add", {text});
    if (reply && reply.ok) input.value = "";
  });

  chsk.on("todo/added", (todo) => { todos.set(todo.id, todo); renderTodos(todo.id); });
  chsk.on("todo/changed", (todo) => { todos.set(todo.id, todo); renderTodos(); });
  chsk.on("todo/deleted", (todo) => { todos.delete(todo.id); renderTodos(); });

  // --- presence and direct messages ----------------------------------------------------------
  function renderPresence(users) {
    const ul = $("online");
    ul.replaceChildren(...users.map((u) => {
      const li = document.createElement("li");
      li.dataset.uid = u.uid;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = u.uid + (u.uid === me ? " (you)" : "");
      li.append(name);
      for (const kind of ["ws", "ajax"]) {
        if (!u[kind]) continue;
        const badge = document.createElement("span");
        badge.className = `badge ${kind}`;
        badge.textContent = `${kind} × ${u[kind]}`;
        badge.title = `${u[kind]} tab(s) over ${kind === "ws" ? "WebSocket" : "Ajax long-polling"}`;
        li.append(badge);
      }
      return li;
    }));
    const select = $("dm-to");
    const current = select.value;
    select.replaceChildren(...users.filter((u) => u.uid !== me).map((u) => new Option(u.uid, u.uid)));
    if (!select.options.length) select.append(new Option("nobody else is online", ""));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }
  chsk.on("presence/changed", (p) => renderPresence(p.users));

  $("dm-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const to = $("dm-to").value;
    const input = $("dm-text");
    if (!to || !input.value.trim()) return;
    const reply = await change("dm/send", {to, text: input.value});
    if (reply && reply.ok) {
      addInbox(`to ${to}`, input.value);
      input.value = "";
    }
  });
  chsk.on("dm/received", (m) => { addInbox(`from ${m.from}`, m.text); toast(`${m.from}: ${m.text}`); });

  function addInbox(who, text) {
    const li = document.createElement("li");
    const strong = document.createElement("strong");
    strong.textContent = who + ": ";
    li.append(strong, document.createTextNode(text));
    $("inbox").prepend(li);
  }

  function toast(text, isError) {
    const div = document.createElement("div");
    div.className = "toast" + (isError ? " error" : "");
    div.textContent = text;
    $("toasts").append(div);
    setTimeout(() => div.remove(), 4000);
  }
})();
