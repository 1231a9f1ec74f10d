/**
 * TypeScript declarations of sente.js, the browser client of flask_sente (wire protocol 3).
 *
 * Served beside it at `<url>/sente.d.ts` (`/chsk/sente.d.ts` by default). sente.js is a
 * UMD-style file: a classic script sets the global `Sente`, node's `require` returns it.
 * So these declarations work both ways:
 *   - a script (no import/export): `/// <reference path="sente.d.ts" />`, then `Sente.connect()`;
 *   - a module: `import Sente = require("./sente")` (or `import * as Sente from "./sente"`
 *     with esModuleInterop), or the global with the `allowUmdGlobalAccess` compiler option.
 * They need the DOM library (WebSocket, fetch), as any browser code does.
 *
 * Checked against tests/ts/usage.ts (what must compile) and tests/ts/misuse.ts (what must
 * not) by `tsc --strict` in `make test`; keep them in step with sente.js.
 */
/// <reference lib="dom" />

export as namespace Sente;
export = Sente;

declare namespace Sente {
  // --- events ------------------------------------------------------------------------------

  /** A namespaced event id such as `"todo/add"`; ids in `"chsk/"` belong to the protocol. */
  type EventId = string;

  /**
   * An event the app sends: `[eventId, data]` or `[eventId]`. A bad shape, an id without a
   * namespace, a reserved `chsk/` id or data the packer cannot encode throws a TypeError.
   */
  type OutgoingEvent = readonly [EventId, unknown] | readonly [EventId];

  /** An event as listeners get it: always two elements, data `null` when it had none. */
  type ReceivedEvent<D = any> = readonly [EventId, D];

  /** What a listener learns besides the event. */
  interface ListenerMeta {
    /** The topic the event was published to, or `null` for a push to the user or to all. */
    readonly topic: string | null;
  }

  /** `fn(data, event, meta)`, as given to {@link ChannelSocket.on}. */
  type Listener<D = any> = (data: D, event: ReceivedEvent<D>, meta: ListenerMeta) => void;

  /** Removes the listener it was returned for. */
  type Unsubscribe = () => void;

  /** The data of the `"chsk/handshake"` listener event, sent on every handshake. */
  interface HandshakeInfo {
    readonly uid: unknown;
    readonly handshakeData: unknown;
    readonly type: "ws" | "ajax";
    /** True on this client's first handshake, false on every reconnect. */
    readonly firstHandshake: boolean;
    /** See {@link State.recovered}. */
    readonly recovered: boolean | null;
  }

  /** The data of the `"chsk/rejoined"` listener event: a topic rejoined after a reconnect. */
  interface RejoinedInfo {
    readonly topic: string;
    /** True: the missed events were replayed; false: some are gone, reload the topic's state. */
    readonly recovered: boolean | null;
  }

  /**
   * The data of the `"chsk/left"` listener event: this client is out of a topic — the server
   * took it out (`"removed"`), refused its rejoin (the server's reason), or the client was
   * kicked (`"kicked"`) or another user signed in (`"user-changed"`).
   */
  interface LeftInfo {
    readonly topic: string;
    readonly reason: string;
  }

  /**
   * The data of a topic's `"chsk/members"` events, which the server publishes into a topic
   * when `SENTE_TOPIC_PRESENCE` is on: the uids that joined or left.
   */
  interface MembersChange {
    readonly joined: readonly unknown[];
    readonly left: readonly unknown[];
  }

  // --- calls from the server (protocol 3) --------------------------------------------------

  /** What an answer handler learns besides the data (see {@link ChannelSocket.answer}). */
  interface CallInfo {
    /** The call's id, chosen by the server. */
    readonly id: string;
    /** The event id the call was made with: the one the handler was registered for. */
    readonly eventId: EventId;
  }

  /**
   * `fn(data, info)`, as given to {@link ChannelSocket.answer}: its value (or the value of
   * the promise it returns) is the answer; a throw or a rejection answers an error.
   */
  type AnswerHandler<T = unknown, R = unknown> = (data: T, info: CallInfo) => R | PromiseLike<R>;

  /** A `"chsk/call"` as `protocol.readCall` reads it. */
  interface ServerCall {
    readonly id: string;
    readonly event: ReceivedEvent;
    /** How long the server waits for the answer, in ms (0 when the call named none). */
    readonly timeout: number;
  }

  /** The error of an answer: no handler on this client, or the handler failed. */
  interface AnswerFailure {
    readonly kind: "no-handler" | "error";
    /** At most 500 characters. */
    readonly message: string;
  }

  /** The event a client answers a call with (sent with cb_id `null`). */
  type AnswerEvent =
    | readonly ["chsk/answer", { readonly id: string; readonly value: unknown }]
    | readonly ["chsk/answer", { readonly id: string; readonly error: AnswerFailure }];

  /** The ids of the last calls, so each is answered once (`protocol.RecentIds`). */
  interface RecentIds {
    /** False for an id among the remembered ones; true for a new one, now remembered. */
    add(id: string): boolean;
  }

  // --- state -------------------------------------------------------------------------------

  /** The transport: requested (`"auto"` before the first handshake), or the one in use. */
  type TransportType = "auto" | "ws" | "ajax";

  /**
   * Why the last connection (or attempt) ended. `kicked`, `requested-disconnect`,
   * `protocol-mismatch` and `rejected` with 401/403 stop the client; the others reconnect.
   */
  type CloseReason =
    | "clean"
    | "unexpected"
    | "rejected"
    | "ping-timeout"
    | "kicked"
    | "requested-disconnect"
    | "requested-reconnect"
    | "protocol-mismatch";

  interface CloseInfo {
    readonly reason: CloseReason;
    /** The WebSocket close code, if there was one. */
    readonly code: number | null;
    /** The HTTP status of a refusal (`rejected`). */
    readonly status: number | null;
    /** The server's text, or what went wrong. */
    readonly message: string | null;
    /** When it happened, in ms since the epoch. */
    readonly at: number;
  }

  /** A frozen snapshot; a new one replaces it on every change (see `onState`). */
  interface State {
    readonly type: TransportType;
    readonly open: boolean;
    readonly everOpened: boolean;
    readonly uid: unknown;
    readonly handshakeData: unknown;
    /**
     * What the last handshake said about pushes missed while away: `null` (a first
     * connection), `true` (nothing lost) or `false` (reload the app's state).
     */
    readonly recovered: boolean | null;
    readonly lastClose: CloseInfo | null;
    /** When the next planned attempt starts (ms since the epoch), or `null`. */
    readonly nextReconnectAt: number | null;
    /**
     * Connected or trying to be (connecting, open, waiting to reconnect). `false` once the
     * client stopped: `disconnect()`, a kick, a refusal that retrying cannot fix (401/403
     * and `protocol.STOP_STATUSES`: `lastClose` has the status and the server's text) or a
     * protocol mismatch — until `reconnect()`.
     */
    readonly active: boolean;
  }

  /** Where a client stands in each log it reads: `{log: [epoch, seq]}`. */
  type Positions = { readonly [log: string]: readonly [epoch: string, seq: number] };

  // --- options -----------------------------------------------------------------------------

  /** A wire codec; the server must use the same one. */
  interface Packer {
    readonly name: string;
    /** Binary packers produce bytes and use binary WebSocket frames. */
    readonly binary: boolean;
    pack(value: unknown): string | Uint8Array;
    unpack(data: string | ArrayBuffer | Uint8Array): unknown;
  }

  /** A msgpack codec the page supplies, e.g. `@msgpack/msgpack`'s `{encode, decode}`. */
  interface MsgpackCodec {
    encode(value: unknown): Uint8Array;
    decode(data: Uint8Array): unknown;
  }

  type QueryParams = Readonly<Record<string, string | number | boolean | null | undefined>>;
  type Headers = Readonly<Record<string, string>>;

  /** Options of {@link connect}; unknown names throw a TypeError. */
  interface Options {
    /** `"auto"` (default): WebSocket, Ajax when WebSocket cannot get through. */
    type?: TransportType;
    /** Default: `<meta name="sente-csrf-token">`. A function is read again for every request. */
    csrfToken?: string | null | (() => string | null | undefined);
    /** `"json"` (default) or a packer such as `Sente.msgpackPacker(MessagePack)`. */
    packer?: "json" | Packer;
    /** Extra query parameters on every request, POSTs included. */
    params?: QueryParams | (() => QueryParams);
    /** Default: 32 random URL-safe characters. At most 128 characters. */
    clientId?: string;
    /** Ping after this long with nothing received (20000); `0`/`null` turns it off. */
    keepAliveMs?: number | null;
    /** Drop the socket when nothing arrives this long after a ping (10000). */
    pingTimeoutMs?: number;
    /** Milliseconds before reconnect `attempt` (counted from 1). */
    backoffMs?: (attempt: number) => number;
    /** While on Ajax in auto mode, try WebSocket again this often (30000); `0`/`null`: never. */
    upgradeRetryMs?: number | null;
    /** Keep retrying after a 401/403 instead of stopping (false). */
    reconnectOnAuthFailure?: boolean;
    /** Longest wait for a WebSocket or Ajax handshake (10000). */
    connectTimeoutMs?: number;
    /** Timeout of a long-poll request (60000); above the server's `lp_timeout`. */
    ajaxTimeoutMs?: number;
    /** Default `timeout` of `call`, `join` and `leave` (30000). */
    callTimeoutMs?: number;
    /** Extra headers on the Ajax requests (browsers cannot set them on a WebSocket). */
    headers?: Headers | (() => Headers);
    /** Positions saved from `chsk.positions` by an earlier page, to resume from there. */
    positions?: Positions | null;
    /** For tests and hosts that are not browsers. */
    WebSocket?: typeof WebSocket;
    fetch?: typeof fetch;
    baseUrl?: string;
  }

  interface SendOptions {
    /** How long to wait for the open while connecting (default `connectTimeoutMs`). */
    timeout?: number;
  }

  interface CallOptions {
    /** Covers the wait for the open and the reply (default `callTimeoutMs`). */
    timeout?: number;
  }

  /** The callback form of `call`: `(null, reply)` or `(error)`. */
  type CallCallback<R = any> = (error: SenteError | null, reply?: R) => void;

  interface BreakOptions {
    /** False: leave the WebSocket open but unheard, like a half-open connection. */
    closeWs?: boolean;
    /** The close code (default 3000). */
    wsCode?: number;
  }

  /** What `join` resolves with. */
  interface JoinResult<D = any> {
    /** The join data: what the server's join handler returned (`null` when it returned `true`). */
    readonly data: D;
    /** Whether this client's earlier position in the topic was recovered (`null`: it had none). */
    readonly recovered: boolean | null;
  }

  // --- errors ------------------------------------------------------------------------------

  type ErrorKind = "timeout" | "closed" | "error" | "protocol" | "refused";

  /** Base class of the errors a call rejects with; `kind` is stable, messages are not. */
  class SenteError extends Error {
    constructor(message: string, kind: ErrorKind);
    readonly kind: ErrorKind;
  }

  /** No reply in time: the client's own timer, or the server's handler timeout. */
  class TimeoutError extends SenteError {
    constructor(message?: string);
    readonly kind: "timeout";
  }

  /** Not connected, or closed before the reply came (the event may or may not have arrived). */
  class ClosedError extends SenteError {
    constructor(message?: string);
    readonly kind: "closed";
  }

  /** The handler raised, no handler exists, or an Ajax POST was refused. */
  class ReplyError extends SenteError {
    constructor(message: string, info?: unknown, status?: number | null);
    readonly kind: "error";
    /** What the server said, e.g. `{message}`. */
    readonly info: unknown;
    /** The HTTP status of a refused Ajax POST. */
    readonly status: number | null;
  }

  /** The server's answer could not be read. */
  class ProtocolError extends SenteError {
    constructor(message: string);
    readonly kind: "protocol";
  }

  /** What `join` rejects with when the server refuses: `reason` is the server's. */
  class JoinRefusedError extends SenteError {
    constructor(topic: string, reason: string);
    readonly kind: "refused";
    readonly topic: string;
    /** E.g. `"forbidden"`, `"full"`, `"too-many-topics"`, or the app's own. */
    readonly reason: string;
  }

  // --- the channel socket ------------------------------------------------------------------

  /** One channel socket; make it with {@link connect}. */
  class ChannelSocket {
    constructor(url: string, options?: Options);

    /** The URL it connects to. */
    readonly url: string;
    /** This client's id (one per tab). */
    readonly clientId: string;
    readonly state: State;
    /** Where this client stands in the server's logs, or `null` when it has none. */
    readonly positions: Positions | null;

    /** Each handshake. */
    on(eventId: "chsk/handshake", fn: Listener<HandshakeInfo>): Unsubscribe;
    /** A topic rejoined after a reconnect. */
    on(eventId: "chsk/rejoined", fn: Listener<RejoinedInfo>): Unsubscribe;
    /** Out of a topic without asking (see {@link LeftInfo}). */
    on(eventId: "chsk/left", fn: Listener<LeftInfo>): Unsubscribe;
    /** Pushed events with this id; `"*"`: every pushed id without a listener of its own. */
    on<D = any>(eventId: EventId, fn: Listener<D>): Unsubscribe;

    /** `fn(state, oldState)` on every state change. */
    onState(fn: (state: State, oldState: State) => void): Unsubscribe;

    /** Send with no reply wanted; `false` when the client is stopped (nothing is sent). */
    send(event: OutgoingEvent, options?: SendOptions): boolean;

    /**
     * Answer the server's calls of `eventId` (protocol 3) with `fn`: one handler per id (a
     * second throws an `Error`; a malformed or `chsk/` id a `TypeError`). Calls never reach
     * `on()` listeners. Returns the function that unregisters it.
     */
    answer<T = unknown, R = unknown>(eventId: EventId, fn: AnswerHandler<T, R>): Unsubscribe;

    /** Send and wait for the handler's reply. */
    call<R = any>(event: OutgoingEvent, options?: CallOptions): Promise<R>;
    /** The callback form; `false` when the call failed at once (the client is stopped). */
    call<R = any>(event: OutgoingEvent, callback: CallCallback<R>): boolean;
    call<R = any>(event: OutgoingEvent, options: CallOptions | undefined,
                  callback: CallCallback<R>): boolean;

    /** Drop the connection as a network failure would; `false` when nothing was open. */
    breakConnection(options?: BreakOptions): boolean;
    /** Close (code 1000) and stay closed until `reconnect()`. */
    disconnect(): void;
    /** Close and connect again at once (after a login or logout: the uid is per handshake). */
    reconnect(): void;

    /**
     * Join a topic (a non-empty name of at most 200 characters, else a TypeError at once);
     * `data` goes to the server's join handler. Rejects with a {@link JoinRefusedError} when
     * refused, or the errors of `call`. Rejoined on its own after a reconnect.
     */
    join<D = any>(topic: string, data?: unknown, options?: CallOptions): Promise<JoinResult<D>>;
    /** Leave a topic: its events stop at once; resolves when the server confirms. */
    leave(topic: string, options?: CallOptions): Promise<void>;
    /** The names of the joined topics. */
    topics(): string[];
    /** `fn(eventId, data)` for each event published to `topic`. */
    onTopic<D = any>(topic: string, fn: (eventId: EventId, data: D) => void): Unsubscribe;
  }

  /**
   * Open a channel socket. `url` defaults to `<meta name="sente-url">`, else `"/chsk"`.
   */
  function connect(url?: string | null, options?: Options): ChannelSocket;
  function connect(options: Options): ChannelSocket;

  /** A msgpack packer from the page's codec (the client bundles none). */
  function msgpackPacker(codec: MsgpackCodec): Packer;
  /** The default packer: compact JSON, text frames; NaN and Infinity throw. */
  const jsonPacker: Packer;

  const PROTOCOL_VERSION: 3;

  /** WebSocket close codes with a meaning for the client (docs/protocol.md §5). */
  const CLOSE: {
    readonly NORMAL: 1000;
    readonly GOING_AWAY: 1001;
    readonly ABNORMAL: 1006;
    readonly TOO_SLOW: 1013;
    readonly KICKED: 4001;
    readonly PING_TIMEOUT: 4002;
    readonly REPLACED: 4003;
    readonly BROKEN: 3000;
  };

  /** Default durations (ms), shared with the Python client and the server. */
  const DEFAULTS: {
    readonly keepAliveMs: number;
    readonly pingTimeoutMs: number;
    readonly upgradeRetryMs: number;
    readonly connectTimeoutMs: number;
    readonly ajaxTimeoutMs: number;
    readonly callTimeoutMs: number;
  };

  // --- the pure protocol section (for tests and tools that speak the wire) -----------------

  /** A decoded server → client message. */
  interface ServerMessage {
    readonly kind: "handshake" | "events" | "reply" | "ping" | "timeout" | "ack" | "close";
    readonly cbId: string | null;
    readonly events: ReceivedEvent[];
    readonly outcome: EventId | null;
    readonly value: unknown;
  }

  type ReplyOutcome = { readonly ok: true; readonly value: unknown }
    | { readonly ok: false; readonly error: SenteError };

  /** A close as the protocol functions describe it (`at` is added when it is recorded). */
  type CloseDescription = Omit<CloseInfo, "at">;

  const protocol: {
    readonly EV: {
      readonly HANDSHAKE: "chsk/handshake";
      readonly REPLY: "chsk/reply";
      readonly TIMEOUT: "chsk/timeout";
      readonly ERROR: "chsk/error";
      readonly CLOSED: "chsk/closed";
      readonly ACK: "chsk/ack";
      readonly CLOSE: "chsk/close";
      readonly WS_PING: "chsk/ws-ping";
      readonly WS_PONG: "chsk/ws-pong";
      readonly POS: "chsk/pos";
      readonly JOIN: "chsk/join";
      readonly LEAVE: "chsk/leave";
      readonly TOPIC: "chsk/topic";
      readonly JOINED: "chsk/joined";
      readonly LEFT: "chsk/left";
      readonly REJOINED: "chsk/rejoined";
      readonly CALL: "chsk/call";
      readonly ANSWER: "chsk/answer";
    };
    readonly AJAX_CB: "ajax";
    readonly STABLE_AFTER_MS: number;
    eventError(obj: unknown): "wrong-type" | "wrong-length" | "wrong-id-type" | "unnamespaced-id" | null;
    isEvent(obj: unknown): boolean;
    isReserved(eventId: EventId): boolean;
    asEvent(event: OutgoingEvent): ReceivedEvent;
    toWire(event: OutgoingEvent): OutgoingEvent;
    validateOutgoing(event: unknown, allowReserved?: boolean): ReceivedEvent;
    clientEnvelope(event: OutgoingEvent, cbId?: string | null): [OutgoingEvent, string | null];
    decodeServer(value: unknown): ServerMessage;
    replyOutcome(outcome: EventId, value: unknown): ReplyOutcome;
    resolvePacker(spec?: "json" | Packer): Packer;
    backoffDelay(attempt: number, rand: number, options?: { base?: number; cap?: number }): number;
    randomId(length: number): string;
    buildUrl(base: string, path: string, params: QueryParams, kind?: "ws" | "http"): string;
    initialState(type: TransportType): State;
    stateAfterHandshake(state: State, type: "ws" | "ajax", info: Readonly<Record<string, unknown>>): State;
    stateAfterClose(state: State, close: CloseDescription, at?: number): State;
    stateWithRetryAt(state: State, at: number | null): State;
    stateWithActive(state: State, active: boolean): State;
    /** 401 and 403: the client stops unless `reconnectOnAuthFailure`. */
    readonly AUTH_STATUSES: ReadonlySet<number>;
    /** Other refusals that retrying cannot fix: the client stops. */
    readonly STOP_STATUSES: ReadonlySet<number>;
    shouldReconnect(close: CloseDescription, options?: { reconnectOnAuthFailure?: boolean }): boolean;
    closeInfo(reason: CloseReason,
              details?: { code?: number | null; status?: number | null; message?: string | null }): CloseDescription;
    describeWsClose(code: number, text: string, wasClean: boolean,
                    localReason?: CloseReason | null): CloseDescription;
    describeHttpFailure(status: number, message?: string | null): CloseDescription;
    afterWsFailure(args: {
      auto: boolean;
      probe: { status: number; handshake: unknown };
      reconnectOnAuthFailure?: boolean;
    }): "downgrade" | "stop" | "retry";
    firstTransport(args: {
      type: TransportType;
      hasWebSocket?: boolean;
      wsBlockedForMs?: number | null;
      upgradeRetryMs?: number | null;
    }): "ws" | "ajax";
    nextAttempt(attempt: number, upMs: number | null, stableAfterMs?: number): number;
    handshakeError(info: Readonly<Record<string, unknown>>): string | null;
    readPositions(value: unknown): Positions | null;
    posParam(positions: Positions | null): string | null;
    positionsAfterHandshake(info: unknown): Positions | null;
    batchMark(events: readonly ReceivedEvent[]): Positions | null;
    isSeenMark(positions: Positions | null, mark: Positions | null): boolean;
    positionsAfterMark(positions: Positions | null, mark: Positions | null): Positions | null;
    takeBatch(positions: Positions | null, events: readonly ReceivedEvent[]): {
      events: ReceivedEvent[];
      positions: Positions | null;
      seen: boolean;
    };
    readonly MAX_TOPIC_LENGTH: number;
    topicError(topic: unknown): string | null;
    validateTopic(topic: unknown): string;
    topicLog(topic: string): string;
    mainPositions(positions: Positions | null): Positions | null;
    withTopicLogs(positions: Positions | null,
                  topics: ReadonlyMap<string, Positions[string] | null>): Positions | null;
    takeTopicBatch(positions: Positions | null,
                   topics: ReadonlyMap<string, Positions[string] | null>,
                   events: readonly ReceivedEvent[]): {
      items: TopicBatchItem[];
      positions: Positions | null;
      topics: Map<string, Positions[string] | null>;
      seen: boolean;
    };
    /** An Ajax reply's X-Sente-After header, or null when absent or malformed. */
    readAfter(text: string | null | undefined): Positions | null;
    /** Whether the positions reach `after` (see docs/protocol.md §6). */
    afterReached(positions: Positions | null,
                 topics: ReadonlyMap<string, Positions[string] | null>,
                 after: Positions): boolean;
    readJoinReply(value: unknown):
      | { ok: true; data: unknown; position: Positions[string] | null; recovered: boolean | null }
      | { ok: false; reason: string };
    newTopicRecord(data: unknown): TopicRecord;
    topicStates(topics: ReadonlyMap<string, TopicRecord>): Map<string, TopicState>;
    topicPositions(topics: ReadonlyMap<string, TopicRecord>): Map<string, Positions[string] | null>;
    userChanged(state: State, info: Readonly<Record<string, unknown>>): boolean;
    topicsAtHandshake(states: ReadonlyMap<string, TopicState>, changed: boolean): {
      rejoin: string[];
      dropped: string[];
    };
    positionAfterJoin(position: Positions[string] | null, movedSince: boolean,
                      replied: Positions[string] | null): Positions[string] | null;
    dropsOnRefusal(state: TopicState, rejoin: boolean): boolean;
    adoptTopicBatch(topics: Map<string, TopicRecord>,
                    batch: { items: readonly TopicBatchItem[];
                             topics: ReadonlyMap<string, Positions[string] | null> }): void;
    /** The longest call id (80). */
    readonly MAX_CALL_ID_LENGTH: number;
    /** How many call ids a client remembers (1024). */
    readonly CALL_IDS_REMEMBERED: number;
    /** An error answer's message is cut to this many characters (500). */
    readonly MAX_ANSWER_MESSAGE: number;
    /** A `"chsk/call"`'s data, or null when it has no call id or no valid event. */
    readCall(data: unknown): ServerCall | null;
    answerValue(id: string, value: unknown): AnswerEvent;
    answerError(id: string, kind: AnswerFailure["kind"], message: string): AnswerEvent;
    readonly RecentIds: new (size?: number) => RecentIds;
  };

  /** Whether a client is in a topic, or joining it (a join not answered yet). */
  type TopicState = "joining" | "joined";

  /** A topic a client is in or joining, as the channel keeps it (`protocol.newTopicRecord`). */
  interface TopicRecord {
    state: TopicState;
    data: unknown;
    position: Positions[string] | null;
    moves: number;
  }

  /** What one push batch asks of a client in topics (see `protocol.takeTopicBatch`). */
  type TopicBatchItem =
    | { readonly kind: "event"; readonly event: ReceivedEvent; readonly topic: string | null }
    | { readonly kind: "joined"; readonly topic: string; readonly position: Positions[string] | null }
    | { readonly kind: "left"; readonly topic: string; readonly reason: string | null }
    /** A call from the server; `call` is null when it was malformed. */
    | { readonly kind: "call"; readonly call: ServerCall | null; readonly data: unknown };
}
