// What sente.d.ts must refuse: every line after a `@ts-expect-error` has to be a type error,
// or tsc fails with "Unused '@ts-expect-error' directive" (tests/ts/test_types.py). Each
// mistake here is one sente.js would throw on or silently mishandle at run time.
/// <reference path="../../flask_sente/static/sente.d.ts" />

const c = Sente.connect();

// @ts-expect-error -- an unknown option (sente.js throws on it): a typo of keepAliveMs
Sente.connect({ keepAlive: 1000 });
// @ts-expect-error -- not a transport type
Sente.connect({ type: "sse" });
// @ts-expect-error -- "msgpack" needs a codec: Sente.msgpackPacker(codec)
Sente.connect({ packer: "msgpack" });
// @ts-expect-error -- durations are numbers of milliseconds
Sente.connect({ callTimeoutMs: "25s" });

// @ts-expect-error -- an event is an array, not an id
c.send("todo/add");
// @ts-expect-error -- at most [eventId, data]
c.send(["todo/add", 1, 2]);
// @ts-expect-error -- the id must be a string
c.call([42, "x"]);
// @ts-expect-error -- timeout is a number of milliseconds
c.call(["todo/add", 1], { timeout: "5s" });
// @ts-expect-error -- the promise form does not return a boolean
const sentByCall: boolean = c.call(["todo/add", 1]);

// @ts-expect-error -- the state is read-only
c.state.open = true;
// @ts-expect-error -- not a close reason
const reason: Sente.CloseReason = "timeout";
// @ts-expect-error -- the handshake event's data is typed
c.on("chsk/handshake", (info) => info.firstHandshakeX);
// @ts-expect-error -- listeners get the data first, not the event id
c.onTopic("room/1", (eventId: number) => eventId);
// @ts-expect-error -- onState listeners get state objects
c.onState((state: string) => state);

// @ts-expect-error -- join takes a topic name
c.join(["room/1"]);
// @ts-expect-error -- topics() is a method, not a property
const names: string[] = c.topics;
// @ts-expect-error -- leave resolves with nothing
const left: Promise<boolean> = c.leave("room/1");

// @ts-expect-error -- answer takes an event id, not an event
c.answer(["app/confirm"], () => true);
// @ts-expect-error -- the handler gets the data first, then the call's info (not a string)
c.answer("app/confirm", (data: unknown, info: string) => info);
// @ts-expect-error -- answer returns the unregister function, not a boolean
const registered: boolean = c.answer("app/confirm", () => true);
// @ts-expect-error -- the answer's type is given: a handler may not return another
c.answer<unknown, number>("app/count", () => "many");
// @ts-expect-error -- an error answer's kind is "no-handler" or "error"
Sente.protocol.answerError("c1", "timeout", "late");

// @ts-expect-error -- errors have a fixed set of kinds
const kind: "bad" = new Sente.TimeoutError().kind;

console.log(sentByCall, reason, names, left, kind, registered);
