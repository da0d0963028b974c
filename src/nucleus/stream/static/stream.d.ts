/**
 * Types of the Nucleus Stream browser client (`stream.js`), served at
 * `/nucleus/stream.d.ts` next to `/nucleus/stream.js`.
 *
 * Messages arrive as whatever the server sent: `subscribe<T>`, `on<T>("message")`
 * and `request<T>` let a page say what it expects (checked by the compiler, not at
 * run time). `connect<Out>` types what the page sends (`send`, `request`), e.g. the
 * route's message model exported by `nucleus types app:server`.
 *
 * @module nucleus/stream
 */

/** `connecting` until the first open; `reconnecting` between connections; `closed` for good. */
export type StreamState = "connecting" | "open" | "reconnecting" | "closed";

export interface StreamOptions {
  /** Token sent on connect (see `tokenIn`). */
  token?: string | null;
  /** Called before every (re)connect and before a JWT's `exp`; its answer replaces `token`. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /**
   * Carry the token as the `nucleus.token.<token>` subprotocol, or as the URL's `token`
   * query parameter (query strings end up in proxy and server logs). Default `"protocol"`.
   */
  tokenIn?: "protocol" | "query";
  /** First reconnect backoff ceiling, ms (500). */
  minDelay?: number;
  /** Largest reconnect backoff ceiling, ms (30000). */
  maxDelay?: number;
  /** Backoff resets once a connection stayed open this long, ms (5000). */
  stableAfter?: number;
  /** Refresh a JWT this long before its `exp`, ms (30000). */
  refreshBefore?: number;
  /** Sends held while not open; `send()` throws beyond it (1000). */
  maxQueue?: number;
  /** A connection not open within this many ms is abandoned and dialed again, with backoff (10000). */
  connectTimeout?: number;
  /**
   * When nothing arrives for this many ms, send a `ping`; when nothing arrives for another
   * such interval after it, the link is dead: reconnect and recover. 0 turns it off (8000).
   */
  heartbeat?: number;
  /**
   * A user who leaves a watched room is reported gone only if not back within this many
   * ms: a page reload is not a leave-then-join (2000).
   */
  presenceDelay?: number;
}

/** Where a message came from. */
export interface Meta {
  /** The channel, or null for a direct message. */
  channel: string | null;
  /** The publication's event name, if it had one. */
  event: string | null;
  /** The message's offset in the channel's history. */
  offset: number | null;
}

/** The known error codes; others may come from newer servers. */
export type StreamErrorCode =
  // from the server
  | "forbidden"
  | "bad_request"
  | "invalid"
  | "rate_limited"
  | "unauthorized"
  | "not_found"
  | "unavailable"
  // from the client
  | "bad_frame"
  | "unsupported_protocol"
  | "policy_violation"
  | "message_too_big"
  | "token_expired"
  | "token_revoked"
  | "token_unavailable"
  | "connect_failed"
  | (string & {});

/** What `on("error", ...)` listeners receive. */
export interface StreamErrorInfo {
  code: StreamErrorCode;
  /** Human-readable; never shown to end users as-is. */
  message: string;
  /** The request this answers. */
  id?: number;
  /** The channel concerned; a subscription to it was refused. */
  channel?: string;
  /** The channel whose presence was refused; the subscription stands. */
  presence?: string;
}

/** A channel whose missed messages could not be replayed; delivery continues from here. */
export interface Gap {
  channel: string;
  /** The room history's new epoch. */
  epoch: string;
  /** The room's offset the stream continues from. */
  offset: number;
}

export interface RequestOptions {
  /** Reject with code `timeout` after this many ms (10000). */
  timeout?: number;
  /**
   * While not open: send it once open (`"queue"`, the default; the timeout runs
   * meanwhile), or reject at once with code `offline`.
   */
  offline?: "queue" | "reject";
}

/** The known `RequestFailure` codes; a handler's `RequestError` may use any other. */
export type RequestFailureCode =
  // from the server
  | "invalid"
  | "rate_limited"
  | "not_found"
  | "bad_request"
  | "internal"
  // from the client
  | "timeout"
  | "offline"
  | "disconnected"
  | "closed"
  | (string & {});

/**
 * Why `request()` rejected: the server's code (`RequestError`'s code, `invalid`,
 * `rate_limited`, `not_found`, `internal`...) or the client's (`timeout`, `offline`,
 * `disconnected`: the link dropped after sending, the server may or may not have
 * acted; `closed`).
 */
export interface RequestFailure extends Error {
  code: RequestFailureCode;
}

/**
 * `state`: the whole list (the first call); `join` / `leave`: one user arrived or
 * left (also the differences a reconnect finds).
 */
export type PresenceChange =
  | { type: "state" }
  | { type: "join" | "leave"; user: string };

/** Removes what it was returned for: a subscription, a watch, a listener. */
export type Unsubscribe = () => void;

/**
 * A stream to a Nucleus Stream endpoint, reconnecting until `close()`.
 *
 * `Out` is what the page sends with `send` and `request`: the route's message model
 * when it has one (anything else is refused by the server).
 */
export interface Stream<Out = unknown> {
  /** The current state. */
  readonly state: StreamState;

  /**
   * Receive a channel's messages (`T`: what the server publishes there); returns the
   * unsubscribe function. Binary messages arrive as `Uint8Array`.
   */
  subscribe<T = unknown>(channel: string, callback: (data: T, meta: Meta) => void): Unsubscribe;

  /**
   * Who is in a channel (sorted user ids; many tabs count once), now and on every change;
   * subscribes to the channel while watched. The route must allow it (`presence=True`);
   * returns the function that stops watching.
   */
  presence(channel: string, callback: (users: string[], change: PresenceChange) => void): Unsubscribe;

  /**
   * Ask the server's `on_request`; resolves with its answer (`Reply`), rejects with a
   * `RequestFailure`. Takes a string or a JSON value, not binary.
   */
  request<Reply = unknown>(data: Out, options?: RequestOptions): Promise<Reply>;

  /**
   * Send to the server's handler; strings as text, binary as-is, anything else as JSON.
   * Queued while not open; throws when the queue is full or the stream is closed.
   */
  send(value: Out): void;

  /** The state changed. */
  on(type: "state", callback: (state: StreamState) => void): Unsubscribe;
  /** A direct message (not from a channel) arrived; `T`: what the server sends. */
  on<T = unknown>(type: "message", callback: (data: T, meta: Meta) => void): Unsubscribe;
  /** A channel's missed messages could not be replayed. */
  on(type: "gap", callback: (gap: Gap) => void): Unsubscribe;
  /** Something went wrong; final errors are followed by the `closed` state. */
  on(type: "error", callback: (error: StreamErrorInfo) => void): Unsubscribe;

  /**
   * Close for good: no reconnect; forgets subscriptions, listeners, queued sends and
   * the token; pending requests reject with code `closed`.
   */
  close(): void;
}

/**
 * Open a stream to a Nucleus Stream endpoint, reconnecting until `close()`.
 *
 * @param url `ws:`/`wss:` URL; `http(s):` and relative URLs are mapped to WebSocket ones.
 */
export function connect<Out = unknown>(url: string | URL, options?: StreamOptions): Stream<Out>;

/** What `renderList` needs of a signal: its value, and news of changes. */
export interface ReadonlySignal<T> {
  get(): T;
  subscribe(fn: (value: T) => void): Unsubscribe;
}

/** A value that tells its subscribers when it changes (the guide's `Signal`). */
export class Signal<T> implements ReadonlySignal<T> {
  constructor(initial: T);
  /** The current value. */
  get(): T;
  /** Replace the value; subscribers hear of it only when it changed (`Object.is`). */
  set(value: T): void;
  /**
   * Change the value in place with `fn(value)`, or replace it with what `fn` returns.
   * Always notifies. A returned value is ignored when it is undefined, or when the value
   * is an object and the return is not an object of the same kind (array or not): so
   * `m => m.push(x)` keeps the array. Methods that return another array (`splice`)
   * need a block body: `m => { m.splice(i, 1); }`.
   */
  modify(
    fn: (value: T) => T | void | (T extends object ? string | number | boolean | bigint | symbol | null : never),
  ): void;
  /** Call `fn(value)` on every change from now on (not immediately). */
  subscribe(fn: (value: T) => void): Unsubscribe;
}

/**
 * Render `signal`'s items into `element`, and again on every change; returns the
 * function that stops re-rendering.
 *
 * `renderItem(item)` returns a Node, or a string that becomes a text node (wrapped in
 * an `<li>` when `element` is a `<ul>` or `<ol>`): never parsed as HTML.
 */
export function renderList<T>(
  signal: ReadonlySignal<Iterable<T>>,
  element: Element,
  renderItem: (item: T) => Node | string,
): Unsubscribe;
