// The demo page: todo lists and an online panel kept live by flask_sente's browser client.
// Every change is a call with a reply (so failures show up), and every page applies the
// server's pushes, including the author's own page. The shared list reaches every user;
// a named list is a topic ("list/<name>") the page joins, so only its viewers get its todos;
// the user's own list ("mine") is the topic "list/@<uid>", which only they may join. Sharing
// a todo is the server asking the other user's pages (a server -> client call, chsk.answer).
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  const forced = params.get("type");
  const $ = (id) => document.getElementById(id);
  const me = $("me").textContent;
  const MAIN = "";                // the shared list; named lists are topics "list/<name>"
  const TOPIC = "list/";
  const MINE = "@" + me;          // the user's own list: shared todos land there
  // name -> {todos: Map id -> todo (creation order), viewers: Set of uids (named lists)}
  const lists = new Map([[MAIN, {todos: new Map(), viewers: null}]]);
  const early = new Map();        // name -> pushes that came before its join's reply
  let shown = MAIN;               // the list on screen
  const todosOf = () => lists.get(shown).todos;

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
      fill(MAIN, list);
      renderPresence(presence.users);
    } catch (err) {
      toast(`Could not load the list: ${err.message}`, true);
    }
  }

  /** Show `{todos, viewers}` (a join's data or a todo/list reply) as list `name`'s content. */
  function fill(name, {todos, viewers}) {
    const list = lists.get(name);
    if (!list) return; // left meanwhile
    list.todos = new Map(todos.map((t) => [t.id, t]));
    if (viewers) list.viewers = new Set(viewers);
    renderLists();
    renderTodos();
  }

  function renderTodos(freshId) {
    const ul = $("todo-list");
    const todos = todosOf();
    ul.replaceChildren(...[...todos.values()].map((t) => todoItem(t, t.id === freshId, shown)));
    $("empty").hidden = todos.size > 0;
  }

  function todoItem(todo, fresh, listName) {
    const li = document.createElement("li");
    li.className = "todo" + (todo.done ? " done" : "") + (fresh ? " fresh" : "");
    li.dataset.id = todo.id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = todo.done;
    box.disabled = !chsk.state.open;
    box.setAttribute("aria-label", "Done");
    box.addEventListener("change", () => change("todo/toggle", inList(listName, {id: todo.id})));
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = todo.text;
    text.title = "Double-click to edit";
    text.addEventListener("dblclick", () => startEdit(li, todo, listName));
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = todo.author;
    const share = document.createElement("button");
    share.className = "icon share";
    share.textContent = "↗";
    share.title = "Share with someone";
    share.setAttribute("aria-label", "Share");
    share.disabled = !chsk.state.open;
    share.addEventListener("click", () => openShare(listName, todo));
    const del = document.createElement("button");
    del.className = "icon delete";
    del.textContent = "✕";
    del.setAttribute("aria-label", "Delete");
    del.disabled = !chsk.state.open;
    del.addEventListener("click", () => change("todo/delete", inList(listName, {id: todo.id})));
    li.append(box, text, author, share, del);
    return li;
  }

  /** A todo event's data for list `name` (the shared list is the default: no key). */
  function inList(name, data) { return name === MAIN ? data : {...data, list: name}; }

  function startEdit(li, todo, listName) {
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
        change("todo/edit", inList(listName, {id: todo.id, text: input.value}));
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
    const reply = await change("todo/add", inList(shown, {text}));
    if (reply && reply.ok) input.value = "";
  });

  /**
   * A todo push: `meta.topic` says which list (null: the shared one, a broadcast). A push
   * for a list whose join has not answered yet waits for the join's data, then applies.
   */
  function onTodo(apply) {
    return (todo, event, meta) => {
      const name = meta.topic === null ? MAIN : meta.topic.slice(TOPIC.length);
      const list = lists.get(name);
      if (!list) { if (early.has(name)) early.get(name).push([apply, todo]); return; }
      apply(list.todos, todo);
      if (name === shown) renderTodos(event[0] === "todo/added" ? todo.id : undefined);
    };
  }
  chsk.on("todo/added", onTodo((todos, todo) => todos.set(todo.id, todo)));
  chsk.on("todo/changed", onTodo((todos, todo) => todos.set(todo.id, todo)));
  chsk.on("todo/deleted", onTodo((todos, todo) => todos.delete(todo.id)));

  // --- named lists: topics ---------------------------------------------------------------------
  // Opening a list joins its topic: the join's data is the list and who views it, then its
  // pushes arrive with meta.topic. The server pushes "chsk/members" diffs into the topic as
  // users come and go (SENTE_TOPIC_PRESENCE). After a reconnect sente.js rejoins by itself
  // and replays what the page missed; "recovered: false" means reload the list.

  const storageKey = `sente-demo-lists:${me}`;

  /** The named lists this page has open, kept for the next visit. */
  function remember() {
    try {
      const named = [...lists.keys()].filter((n) => n !== MAIN && n !== MINE);
      localStorage.setItem(storageKey, JSON.stringify(named));
    } catch (_) { /* storage off: lists are just not kept */ }
  }

  function remembered() {
    try {
      const names = JSON.parse(localStorage.getItem(storageKey) || "[]");
      return Array.isArray(names) ? names.filter((n) => typeof n === "string" && n !== MINE) : [];
    } catch (_) { return []; }
  }

  async function openList(name, show = true) {
    if (lists.has(name)) { if (show) showList(name); return; }
    early.set(name, []);
    try {
      const {data} = await chsk.join(TOPIC + name, null, {timeout: 5000});
      lists.set(name, {todos: new Map(), viewers: new Set()});
      remember();
      if (show) shown = name;
      fill(name, data);
      for (const [apply, todo] of early.get(name) || []) apply(lists.get(name).todos, todo);
      renderTodos();
    } catch (err) {
      toast(err.reason ? `Cannot open ${name || "that list"}: ${err.reason}` : `Opening ${name} failed: ${err.message}`, true);
    } finally {
      early.delete(name);
    }
  }

  async function leaveList(name) {
    lists.delete(name);
    remember();
    if (shown === name) shown = MAIN;
    renderLists();
    renderTodos();
    try {
      await chsk.leave(TOPIC + name, {timeout: 5000});
    } catch (err) {
      toast(`Leaving ${name} failed: ${err.message}`, true);
    }
  }

  function showList(name) {
    shown = name;
    renderLists();
    renderTodos();
  }

  async function reloadList(name) {
    try {
      const reply = await chsk.call(["todo/list", {list: name}], {timeout: 5000});
      if (reply.ok) fill(name, reply); else toast(reply.error, true);
    } catch (err) {
      toast(`Could not reload ${name}: ${err.message}`, true);
    }
  }

  chsk.on("chsk/members", (diff, event, meta) => {
    const list = meta.topic && lists.get(meta.topic.slice(TOPIC.length));
    if (!list) return;
    for (const uid of diff.joined || []) list.viewers.add(uid);
    for (const uid of diff.left || []) list.viewers.delete(uid);
    renderLists();
  });
  chsk.on("chsk/rejoined", ({topic, recovered}) => {
    if (recovered !== true && topic.startsWith(TOPIC)) reloadList(topic.slice(TOPIC.length));
  });
  chsk.on("chsk/left", ({topic, reason}) => {
    const name = topic.slice(TOPIC.length);
    if (!lists.has(name)) return;
    lists.delete(name);
    if (shown === name) shown = MAIN;
    renderLists();
    renderTodos();
    if (reason !== "kicked") toast(`You are no longer in ${name}: ${reason}`, true);
  });

  /** The chips' order: the shared list, the user's own, then the named ones as opened. */
  const rank = (name) => (name === MAIN ? 0 : name === MINE ? 1 : 2);

  function renderLists() {
    const names = [...lists.keys()].sort((a, b) => rank(a) - rank(b));
    $("lists").replaceChildren(...names.map((name) => {
      const li = document.createElement("li");
      li.className = "chip" + (name === shown ? " selected" : "");
      li.dataset.list = name;
      const open = document.createElement("button");
      open.type = "button";
      open.className = "chip-name";
      open.textContent = name === MAIN ? "everyone" : name === MINE ? "mine" : name;
      open.title = name === MAIN ? "The list every user sees"
        : name === MINE ? "Only you see this list; todos shared with you land here" : `Show ${name}`;
      open.addEventListener("click", () => showList(name));
      li.append(open);
      if (name !== MAIN && name !== MINE) {
        const leave = document.createElement("button");
        leave.type = "button";
        leave.className = "icon leave";
        leave.textContent = "✕";
        leave.setAttribute("aria-label", `Leave ${name}`);
        leave.addEventListener("click", () => leaveList(name));
        li.append(leave);
      }
      return li;
    }));
    const viewers = shown === MINE ? null : lists.get(shown).viewers;
    $("viewers-box").hidden = viewers === null;
    $("viewers").replaceChildren(...[...(viewers || [])].sort().map((uid) => {
      const li = document.createElement("li");
      li.dataset.uid = uid;
      li.textContent = uid + (uid === me ? " (you)" : "");
      return li;
    }));
  }

  $("join-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("join-name");
    const name = input.value.trim();
    if (!name) return;
    await openList(name);
    if (lists.has(name)) input.value = "";
  });
  renderLists();
  openList(MINE, false);
  for (const name of remembered()) openList(name, false);

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
    $("people").replaceChildren(...users.filter((u) => u.uid !== me).map((u) => new Option(u.uid)));
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

  // --- sharing a todo: the server asks the other user -------------------------------------------
  // "todo/share" replies once the other user has decided (or cannot): meanwhile the server
  // asks each of their open pages with a server -> client call, "todo/share-offer", which
  // the page answers below with the user's choice. The first page to decide wins.

  const shareDialog = $("share-dialog");
  let sharing = null;        // {list, todo} the dialog is about
  let shareAsking = false;   // a share of the dialog is waiting for its reply

  function openShare(listName, todo) {
    sharing = {list: listName, todo};
    $("share-what").textContent = `“${todo.text}”`;
    showShareStatus("", null);
    shareDialog.showModal();
    $("share-to").focus();
  }

  function showShareStatus(text, outcome) {
    const status = $("share-status");
    status.textContent = text;
    if (outcome) status.dataset.outcome = outcome; else delete status.dataset.outcome;
  }

  /** What the sharer reads for the reply's outcome. */
  function outcomeText(to, text, outcome) {
    switch (outcome) {
      case "accepted": return `${to} accepted “${text}”: it is on their list now.`;
      case "declined": return `${to} declined “${text}”.`;
      case "offline": return `${to} is not online: nobody to ask.`;
      case "timeout": return `${to} did not answer in time.`;
      default: return `${to} has no page open that can take it.`;
    }
  }

  $("share-close").addEventListener("click", () => shareDialog.close());
  $("share-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const to = $("share-to").value.trim();
    if (!to || !sharing || shareAsking) return;
    const asked = sharing;
    shareAsking = true;
    $("share-send").disabled = true;
    showShareStatus(`Asking ${to}…`, "asking");
    let text, outcome;
    try {
      // The server answers within its reply timeout (20 s): the offer waits 15 s at most.
      const reply = await chsk.call(["todo/share", inList(asked.list, {id: asked.todo.id, to})],
                                    {timeout: 30000});
      outcome = reply.ok ? reply.outcome : "error";
      text = reply.ok ? outcomeText(reply.to, asked.todo.text, outcome) : reply.error;
    } catch (err) {
      outcome = "error";
      text = `Sharing failed: ${err.message}`;
    } finally {
      shareAsking = false;
      $("share-send").disabled = !chsk.state.open;
    }
    if (shareDialog.open && sharing === asked) showShareStatus(text, outcome);
    else toast(text, outcome !== "accepted");  // the dialog was closed meanwhile
  });

  // An offer is shown until the user decides, another page of theirs decides first (the
  // server says "todo/share-closed"), or it expires; the answer is "accept", "decline" or
  // null (no decision from this page).
  const offers = new Map();  // offer id -> settle(answer)
  chsk.answer("todo/share-offer", (offer) => new Promise((resolve) => showOffer(offer, resolve)));
  chsk.on("todo/share-closed", ({offer}) => { if (offers.has(offer)) offers.get(offer)(null); });

  function showOffer(offer, resolve) {
    const card = document.createElement("section");
    card.className = "offer card";
    card.dataset.offer = offer.offer;
    card.setAttribute("aria-labelledby", `offer-${offer.offer}`);
    const what = document.createElement("p");
    what.id = `offer-${offer.offer}`;
    const from = document.createElement("strong");
    from.textContent = offer.from;
    const text = document.createElement("span");
    text.className = "offer-text";
    text.textContent = `“${offer.text}”`;
    what.append(from, " shares a todo with you: ", text);
    const accept = document.createElement("button");
    accept.type = "button";
    accept.className = "primary";
    accept.textContent = "Accept";
    const decline = document.createElement("button");
    decline.type = "button";
    decline.className = "secondary";
    decline.textContent = "Decline";
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.append(decline, accept);
    card.append(what, actions);

    const settle = (answer) => {
      clearTimeout(expiry);
      offers.delete(offer.offer);
      card.remove();
      resolve(answer);
    };
    const expiry = setTimeout(() => settle(null), offer.expires_in * 1000);
    accept.addEventListener("click", () => {
      settle("accept");
      if (lists.has(MINE)) showList(MINE);  // where it lands
    });
    decline.addEventListener("click", () => settle("decline"));
    offers.set(offer.offer, settle);
    $("offers").append(card);
  }

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
