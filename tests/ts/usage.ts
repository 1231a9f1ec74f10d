// Typed use of sente.js through flask_sente/static/sente.d.ts: everything here must compile
// under `tsc --strict` (tests/ts/test_types.py). A script file, as on a page that loads
// /chsk/sente.js with a classic <script> tag and uses the global `Sente`.
/// <reference path="../../flask_sente/static/sente.d.ts" />

const chsk: Sente.ChannelSocket = Sente.connect();
const other = Sente.connect("/chsk", { type: "ajax", csrfToken: () => "token" });
const third = Sente.connect({
  type: "auto",
  csrfToken: null,
  packer: Sente.msgpackPacker({ encode: (v: unknown) => new Uint8Array([1]), decode: (b: Uint8Array) => b.length }),
  params: () => ({ token: "abc", page: 2 }),
  clientId: "tab-1",
  keepAliveMs: 0,
  pingTimeoutMs: 10000,
  backoffMs: (attempt: number) => attempt * 1000,
  upgradeRetryMs: null,
  reconnectOnAuthFailure: true,
  connectTimeoutMs: 15000,
  ajaxTimeoutMs: 60000,
  callTimeoutMs: 25000,
  headers: { "X-App": "1" },
  positions: chsk.positions,
  WebSocket: WebSocket,
  fetch: fetch,
  baseUrl: "https://example.com/",
});

// Listeners: data, event, meta; the unsubscribe function.
interface Said { who: string; text: string }
const off: () => void = chsk.on<Said>("chat/said", (data, event, meta) => {
  const who: string = data.who;
  const id: string = event[0];
  const topic: string | null = meta.topic;
  console.log(who, id, topic);
});
off();
chsk.on("*", (data, [id]) => console.log(id, data));
chsk.on("chsk/handshake", (info) => {
  const first: boolean = info.firstHandshake;
  const type: "ws" | "ajax" = info.type;
  if (info.recovered !== true) console.log("reload", first, type, info.uid, info.handshakeData);
});
chsk.on("chsk/rejoined", ({ topic, recovered }) => {
  if (recovered === false) console.log("reload", topic);
});
chsk.on("chsk/left", ({ topic, reason }) => console.log(topic.length, reason.length));

// State.
chsk.onState((state, old) => {
  const open: boolean = state.open && !old.open;
  const reason: Sente.CloseReason | undefined = state.lastClose?.reason;
  const at: number | undefined = state.lastClose?.at;
  const next: number | null = state.nextReconnectAt;
  const recovered: boolean | null = state.recovered;
  const stopped: boolean = !state.active && old.active;  // a refusal: state.lastClose says which
  console.log(open, reason, at, next, recovered, stopped, state.type, state.everOpened,
    Sente.protocol.STOP_STATUSES.has(state.lastClose?.status ?? 0));
});
const s: Sente.State = chsk.state;
if (s.lastClose && s.lastClose.reason === "rejected") console.log(s.lastClose.status);

// Sending and calls.
const sent: boolean = chsk.send(["todo/log", "hi"]);
chsk.send(["todo/ping"], { timeout: 1000 });
async function calls(): Promise<void> {
  const reply = await chsk.call<{ ok: boolean }>(["todo/add", { text: "milk" }], { timeout: 5000 });
  const ok: boolean = reply.ok;
  try {
    await chsk.call(["todo/add", null]);
  } catch (error) {
    if (error instanceof Sente.TimeoutError) { const k: "timeout" = error.kind; console.log(k); }
    if (error instanceof Sente.ReplyError) console.log(error.info, error.status, error.message);
    if (error instanceof Sente.SenteError) {
      const kind: Sente.ErrorKind = error.kind;
      console.log(kind);
    }
  }
  const accepted: boolean = chsk.call<number>(["todo/count"], { timeout: 100 }, (error, count) => {
    if (error === null && count !== undefined) console.log(count + 1);
  });
  const viaCallback: boolean = chsk.call(["todo/count"], (error) => console.log(error?.kind));
  console.log(ok, accepted, viaCallback);
}

// Answering the server's calls (protocol 3).
interface Confirm { todo: number }
const unanswer: () => void = chsk.answer<Confirm, boolean>("app/confirm", (data, info) => {
  const todo: number = data.todo;
  const callId: string = info.id;
  const eventId: string = info.eventId;
  return todo > 0 && callId !== eventId;
});
unanswer();
chsk.answer("app/ask", async (data: unknown, { id }: Sente.CallInfo) => ({ id, data }));
chsk.answer<string, string>("app/later", (text) => Promise.resolve(text.toUpperCase()));
chsk.answer("app/fire", () => undefined);
const handler: Sente.AnswerHandler<number, number> = (n) => n + 1;
chsk.answer("app/inc", handler);

// Topics.
async function topics(): Promise<void> {
  const joined = await chsk.join<{ title: string }>("room/42", { invite: "x" });
  const title: string = joined.data.title;
  const recovered: boolean | null = joined.recovered;
  try {
    await chsk.join("room/secret");
  } catch (error) {
    const reason: string = (error as Sente.JoinRefusedError).reason;
    console.log(reason);
    if (error instanceof Sente.JoinRefusedError) console.log(error.kind === "refused", error.topic);
  }
  await chsk.join("room/7", null, { timeout: 5000 });
  const unsubscribe = chsk.onTopic<Said>("room/42", (eventId, data) => console.log(eventId, data.text));
  chsk.onTopic<Sente.MembersChange>("room/42", (eventId, data) => {
    if (eventId === "chsk/members") console.log(data.joined, data.left);
  });
  unsubscribe();
  const names: string[] = chsk.topics();
  await chsk.leave("room/42", { timeout: 5000 });
  console.log(title, recovered, names);
}

// Control.
const broke: boolean = chsk.breakConnection({ closeWs: false, wsCode: Sente.CLOSE.BROKEN });
chsk.disconnect();
chsk.reconnect();
const version: 3 = Sente.PROTOCOL_VERSION;
const kicked: 4001 = Sente.CLOSE.KICKED;
const json: Sente.Packer = Sente.jsonPacker;
const ms: number = Sente.DEFAULTS.callTimeoutMs;
const ids: [string, string] = [chsk.clientId, chsk.url];
const direct = new Sente.ChannelSocket("/chsk", { type: "ws" });

// The pure protocol section.
const delay: number = Sente.protocol.backoffDelay(3, 0.5, { cap: 30000 });
const bad = Sente.protocol.eventError(["noslash"]);
const verdict: "downgrade" | "stop" | "retry" =
  Sente.protocol.afterWsFailure({ auto: true, probe: { status: 0, handshake: null } });
const batch = Sente.protocol.takeBatch(null, [["todo/added", 1], ["chsk/pos", { u: ["e", 1] }]]);
const records = new Map([["room/1", Sente.protocol.newTopicRecord({ n: 1 })]]);
const changed: boolean = Sente.protocol.userChanged(Sente.protocol.initialState("ws"), { uid: "ann" });
const round: string[] = Sente.protocol.topicsAtHandshake(Sente.protocol.topicStates(records), changed).rejoin;
Sente.protocol.adoptTopicBatch(records, Sente.protocol.takeTopicBatch(null, Sente.protocol.topicPositions(records), []));
const after = Sente.protocol.readAfter('{"u":["e",1]}');
const reached: boolean = after === null || Sente.protocol.afterReached(null, Sente.protocol.topicPositions(records), after);
const serverCall = Sente.protocol.readCall({ id: "c1", event: ["app/confirm", { todo: 4 }], timeout: 20000 });
const callTimeout: number | undefined = serverCall?.timeout;
const answerEvent: Sente.AnswerEvent = serverCall === null
  ? Sente.protocol.answerError("c1", "no-handler", "no handler")
  : Sente.protocol.answerValue(serverCall.id, true);
const fresh: boolean = new Sente.protocol.RecentIds(Sente.protocol.CALL_IDS_REMEMBERED).add("c1");
for (const item of batch.seen ? [] : Sente.protocol.takeTopicBatch(null, new Map(), []).items) {
  if (item.kind === "call" && item.call !== null) console.log(item.call.event[0], item.data);
}

console.log(other, third, sent, calls, topics, broke, version, kicked, json, ms, ids, direct,
  delay, bad, verdict, batch.seen, round, reached, new Sente.ClosedError().kind, callTimeout, answerEvent, fresh,
  Sente.protocol.EV.CALL, Sente.protocol.MAX_ANSWER_MESSAGE, Sente.protocol.MAX_CALL_ID_LENGTH);
