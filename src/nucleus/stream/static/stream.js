/**
 * Nucleus Stream browser client, served at `/nucleus/stream.js`.
 *
 * One dependency-free ES module speaking the `nucleus.v1` wire protocol
 * (docs/protocol.md): channel subscriptions that survive reconnects with
 * missed messages replayed, exactly once and in order, within the server's
 * history window; an outgoing queue; token refresh; plus `Signal` and
 * `renderList`, the two pieces a reactive page needs.
 *
 * It never parses HTML, defines no globals, and never lets a malformed frame
 * or a throwing callback escape into the socket's event handlers.
 *
 * @module nucleus/stream
 */

const PROTOCOL = "nucleus.v1";
/** Close code of a socket that sent too fast: reconnect after a backoff (1008 is final). */
const RATE_LIMITED = 4029;

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "closed"} StreamState
 *
 * @typedef {object} StreamOptions
 * @property {string} [token] Token sent on connect (see `tokenIn`).
 * @property {() => (string | null | undefined | Promise<string | null | undefined>)} [getToken]
 *   Called before every (re)connect and before a JWT's `exp`; its answer replaces `token`.
 * @property {"protocol" | "query"} [tokenIn="protocol"] Carry the token as the
 *   `nucleus.token.<token>` subprotocol, or as the URL's `token` query parameter
 *   (query strings end up in proxy and server logs).
 * @property {number} [minDelay=500] First reconnect backoff ceiling, ms.
 * @property {number} [maxDelay=30000] Largest reconnect backoff ceiling, ms.
 * @property {number} [stableAfter=5000] Backoff resets once a connection stayed open this long, ms.
 * @property {number} [refreshBefore=30000] Refresh a JWT this long before its `exp`, ms.
 * @property {number} [maxQueue=1000] Sends held while not open; `send()` throws beyond it.
 * @property {number} [connectTimeout=10000] A connection not open within this many ms is
 *   abandoned and dialed again (with backoff).
 * @property {number} [heartbeat=8000] When nothing arrives for this many ms, send a `ping`;
 *   when nothing arrives for another such interval after it, the link is dead (a half-open
 *   socket after a network change): reconnect and recover. 0 turns it off.
 * @property {number} [presenceDelay=2000] A user who leaves a watched room is reported gone
 *   only if not back within this many ms: a page reload is not a leave-then-join.
 *
 * @typedef {object} Meta
 * @property {string | null} channel The channel, or null for a direct message.
 * @property {string | null} event The publication's event name, if it had one.
 * @property {number | null} offset The message's offset in the channel's history.
 *
 * @typedef {object} StreamErrorInfo
 * @property {string} code `forbidden`, `bad_request`, `invalid`, `rate_limited`,
 *   `unauthorized`, `not_found` from the server; `bad_frame`, `unsupported_protocol`,
 *   `policy_violation`, `message_too_big`, `token_expired`, `token_revoked`,
 *   `token_unavailable`, `connect_failed` from the client.
 * @property {string} message Human-readable; never shown to end users as-is.
 * @property {number} [id] The request this answers.
 * @property {string} [channel] The channel concerned; a subscription to it was refused.
 *
 * @typedef {object} RequestOptions
 * @property {number} [timeout=10000] Reject with code `timeout` after this many ms.
 * @property {"queue" | "reject"} [offline="queue"] While not open: send it once open
 *   (the timeout runs meanwhile), or reject at once with code `offline`.
 *
 * @typedef {Error & {code: string}} RequestFailure `code`: the server's (`RequestError`'s
 *   code, `invalid`, `rate_limited`, `not_found`, `internal`...) or the client's
 *   (`timeout`, `offline`, `disconnected`: the link dropped after sending, the server may
 *   or may not have acted; `closed`).
 *
 * @typedef {object} PresenceChange
 * @property {"state" | "join" | "leave"} type `state`: the whole list (the first call);
 *   `join` / `leave`: one user arrived or left (also the differences a reconnect finds).
 * @property {string} [user] The user who joined or left.
 *
 * @typedef {object} Stream
 * @property {StreamState} state The current state.
 * @property {(channel: string, callback: (data: any, meta: Meta) => void) => () => void} subscribe
 *   Receive a channel's messages; returns the unsubscribe function.
 * @property {(channel: string, callback: (users: string[], change: PresenceChange) => void) => () => void} presence
 *   Who is in a channel (sorted user ids; many tabs count once), now and on every change;
 *   subscribes to the channel while watched. The route must allow it (`presence=True`);
 *   returns the function that stops watching.
 * @property {(data: any, options?: RequestOptions) => Promise<any>} request Ask the server's
 *   `on_request`; resolves with its answer, rejects with a `RequestFailure`.
 * @property {(value: any) => void} send Send to the server's handler; strings as text,
 *   binary as-is, anything else as JSON. Queued while not open; throws when the queue
 *   is full or the stream is closed.
 * @property {(type: "state" | "message" | "gap" | "error", callback: Function) => () => void} on
 *   Listen to `state` (state), `message` (data, meta), `gap` ({channel, epoch, offset})
 *   or `error` (StreamErrorInfo); returns the function that removes the listener.
 * @property {() => void} close Close for good: no reconnect; forgets subscriptions,
 *   listeners, queued sends and the token.
 */

/** Call `fn`, reporting rather than throwing what it throws: one bad callback must not break delivery. */
function call(fn, ...args) {
  try {
    fn(...args);
  } catch (error) {
    (globalThis.reportError || console.error)(error);
  }
}

/** JSON-decode text when it is JSON, else keep the string. */
function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The JWT's `exp` in ms since the epoch, or 0. Decoded, not verified: it only times the refresh. */
function expiry(token) {
  try {
    const exp = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp;
    return typeof exp === "number" ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

/** A copy of `value` that later mutation by the caller cannot change (binary values). */
function snapshot(value) {
  if (value instanceof ArrayBuffer) return value.slice(0);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice();
  return value;
}

/**
 * Open a stream to a Nucleus Stream endpoint, reconnecting until `close()`.
 *
 * @param {string | URL} url `ws:`/`wss:` URL; `http(s):` and relative URLs are mapped to WebSocket ones.
 * @param {StreamOptions} [options]
 * @returns {Stream}
 */
export function connect(url, options = {}) {
  const {
    getToken,
    tokenIn = "protocol",
    minDelay = 500,
    maxDelay = 30000,
    stableAfter = 5000,
    refreshBefore = 30000,
    maxQueue = 1000,
    presenceDelay = 2000,
    heartbeat = 8000,
    connectTimeout = 10000,
  } = options;
  const target = new URL(url, globalThis.location?.href);
  target.protocol = target.protocol.replace(/^http/, "ws");
  if (!/^wss?:$/.test(target.protocol)) throw new SyntaxError(`not a WebSocket URL: ${url}`);

  let token = options.token;
  /** @type {StreamState} */
  let state = "connecting";
  let ws = null; // the current socket; null while waiting, probing or fetching a token
  let raw = false; // the server did not select nucleus.v1: every frame is a direct message
  let attempt = 0;
  let authRetried = false;
  let seq = 0;
  let retryTimer = 0; // truthy while idle: a timer id, or -1 while waiting for "online"
  let stableTimer = 0;
  let refreshTimer = 0;
  let refreshing = 0; // the id of the last refresh sent
  let beatTimer = 0;
  let heard = false; // a frame arrived since the last heartbeat check
  let pinged = false; // a ping is waiting for an answer
  /**
   * @type {Map<string, {callbacks: Set<Function>, epoch?: string, offset?: number, refused?: boolean,
   *   watchers: Set<Function>, users: Set<string>, shown: Set<string> | null, leaving: Map<string, number>}>}
   */
  const channels = new Map();
  const newChannel = () => ({ callbacks: new Set(), watchers: new Set(), users: new Set(), shown: null, leaving: new Map() });
  /** @type {Map<string, Set<Function>>} */
  const listeners = new Map();
  const queue = []; // [text, isString] for text/JSON, else the binary value
  /** @type {Map<number, {resolve: Function, reject: Function, timer: number, frame: string, sent: boolean}>} */
  const requests = new Map();
  const failure = (code, message) => Object.assign(new Error(message), { code });
  const settle = (id, reply) => {
    const r = requests.get(id);
    if (!r) return; // timed out already: the late reply is dropped
    requests.delete(id);
    clearTimeout(r.timer);
    if (reply.error) r.reject(failure(String(reply.error.code), String(reply.error.message)));
    else r.resolve(reply.data);
  };
  // Requests the link took with it may or may not have been handled: never resent.
  const dropInFlight = () => {
    for (const [id, r] of requests) {
      if (r.sent) settle(id, { error: { code: "disconnected", message: "the connection dropped before the reply" } });
    }
  };

  const emit = (type, ...args) => {
    for (const cb of [...(listeners.get(type) || [])]) call(cb, ...args);
  };
  const setState = (next) => {
    if (next !== state) emit("state", (state = next));
  };
  const isOpen = () => state === "open" && ws?.readyState === 1;
  // The channel entry each unanswered subscription was sent for, by its sub's id
  // (by name for a hello entry): an error refuses that entry and no other, not one
  // re-created since, nor the channel of a refused unsub.
  const asked = new Map();
  const sendFrame = (frame) => {
    if (frame.type === "sub") asked.set(frame.id, channels.get(frame.channel));
    ws.send(JSON.stringify(frame));
  };
  // Resume only from a complete position: an offset means nothing without its epoch.
  const position = (c) => (c.epoch != null && c.offset != null ? { epoch: c.epoch, offset: c.offset } : {});
  // What a sub (or hello) frame asks for a channel: its position, and its presence if watched.
  const wants = (c) => (c.watchers.size ? { ...position(c), presence: true } : position(c));
  const wire = (entry) =>
    !Array.isArray(entry)
      ? entry
      : raw
        ? entry[0]
        : entry[1]
          ? JSON.stringify({ type: "msg", text: entry[0] })
          : `{"type":"msg","data":${entry[0]}}`;

  function retry(delay = Math.random() * Math.min(maxDelay, minDelay * 2 ** attempt++)) {
    if (state === "closed") return;
    setState("reconnecting");
    clearTimeout(retryTimer);
    retryTimer = setTimeout(dial, delay);
  }

  /**
   * Every `heartbeat` ms: if nothing arrived since the last check, ping; if nothing
   * arrived since the ping either, the link is dead. One small frame per interval,
   * only on an idle link; the server keeps no timer for it.
   */
  function beat(socket) {
    if (socket !== ws) return;
    if (heard) {
      heard = pinged = false;
    } else if (!pinged) {
      pinged = true;
      sendFrame({ type: "ping" });
    } else {
      return drop(socket);
    }
    beatTimer = setTimeout(beat, heartbeat, socket);
  }

  /** Give up on `socket` now rather than wait for TCP to notice, and dial again. */
  function drop(socket) {
    ws = null;
    dropInFlight();
    clearTimeout(stableTimer);
    clearTimeout(beatTimer);
    socket.close();
    retry(0);
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const left = expiry(token) - Date.now();
    // Half the remaining life at least, so a short-lived token cannot cause a refresh loop;
    // clamped because larger setTimeout delays fire at once.
    if (getToken && left > 0) {
      refreshTimer = setTimeout(refresh, Math.min(Math.max(left - refreshBefore, left / 2), 2 ** 31 - 1));
    }
  }

  /** A refresh failed (getToken threw, or the server refused the token): try again soon. */
  function retryRefresh() {
    clearTimeout(refreshTimer);
    const left = expiry(token) - Date.now();
    if (getToken && left > 0) refreshTimer = setTimeout(refresh, Math.max(1000, Math.min(30000, left / 4)));
  }

  async function refresh() {
    if (!isOpen()) return; // the next connect fetches a fresh token anyway
    const socket = ws;
    let fresh;
    try {
      fresh = await getToken();
    } catch (error) {
      emit("error", { code: "token_unavailable", message: `getToken() failed: ${error?.message || error}` });
      return retryRefresh();
    }
    if (!fresh) return retryRefresh();
    token = fresh;
    if (socket === ws && isOpen() && !raw) sendFrame({ type: "refresh", id: (refreshing = ++seq), token });
    scheduleRefresh();
  }

  async function dial() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    if (state === "closed") return;
    if (globalThis.navigator?.onLine === false) return void (retryTimer = -1); // "online" resumes
    if (getToken) {
      try {
        token = await getToken();
      } catch (error) {
        if (state === "closed") return;
        emit("error", { code: "token_unavailable", message: `getToken() failed: ${error?.message || error}` });
        return retry();
      }
      if (state === "closed") return;
    }
    scheduleRefresh();
    const u = new URL(target);
    const protocols = [PROTOCOL];
    if (token) tokenIn === "query" ? u.searchParams.set("token", token) : protocols.push("nucleus.token." + token);
    let socket;
    let opened = false;
    try {
      socket = new WebSocket(u.href, protocols);
    } catch (error) {
      // e.g. a token with characters a subprotocol cannot hold: retrying cannot help
      return end({ code: "connect_failed", message: `cannot open the WebSocket: ${error.message}` });
    }
    ws = socket;
    socket.binaryType = "arraybuffer";
    const giveUp = setTimeout(() => {
      if (socket !== ws || opened) return;
      ws = null;
      socket.close();
      retry();
    }, connectTimeout);

    socket.onopen = () => {
      clearTimeout(giveUp);
      if (socket !== ws) return;
      opened = true;
      authRetried = false;
      raw = socket.protocol !== PROTOCOL;
      asked.clear(); // answers to the last connection's requests never come
      if (!raw) {
        const hello = {};
        for (const [name, c] of channels) {
          if (c.refused) continue;
          hello[name] = wants(c);
          asked.set(name, c);
        }
        sendFrame({ type: "hello", channels: hello });
      }
      for (const entry of queue.splice(0)) socket.send(wire(entry));
      for (const [id, r] of requests) {
        if (r.sent) continue;
        if (raw) settle(id, { error: { code: "offline", message: `the server does not speak ${PROTOCOL}` } });
        else socket.send(r.frame), (r.sent = true);
      }
      stableTimer = setTimeout(() => (attempt = 0), stableAfter);
      heard = pinged = false;
      if (heartbeat > 0 && !raw) beatTimer = setTimeout(beat, heartbeat, socket);
      setState("open");
      if (raw) {
        emit("error", {
          code: "unsupported_protocol",
          message: `the server did not select ${PROTOCOL}; every frame is delivered as a direct message`,
        });
      }
    };

    socket.onmessage = (event) => {
      if (socket !== ws) return;
      heard = true;
      receive(event.data);
    };

    socket.onclose = ({ code, reason }) => {
      clearTimeout(giveUp);
      if (socket !== ws) return;
      ws = null;
      clearTimeout(stableTimer);
      clearTimeout(beatTimer);
      dropInFlight();
      if (!opened) return probe(u);
      if (code === 1000) return end();
      if (code === 1008) return end({ code: "policy_violation", message: reason || "the server refused this connection" });
      if (code === 4003) return end({ code: "token_revoked", message: reason || "the token was revoked" });
      if (code === 4001 && !getToken) {
        return end({ code: "token_expired", message: "the token expired and there is no getToken() to renew it" });
      }
      if (code === 1009) emit("error", { code: "message_too_big", message: reason || "a message was too big" });
      if (code === RATE_LIMITED) {
        emit("error", { code: "rate_limited", message: reason || "closed for sending too fast" });
        // Back off for real: at least half the backoff ceiling, never at once.
        const ceiling = Math.min(maxDelay, minDelay * 2 ** attempt++);
        return retry(ceiling / 2 + (Math.random() * ceiling) / 2);
      }
      // A restarting server: spread its clients' return over 0.5-5 s.
      retry(code === 1001 || code === 1012 ? 500 + Math.random() * 4500 : undefined);
    };
  }

  /**
   * The handshake failed and the browser will not say why (1006): ask the same URL
   * over HTTP whether it refuses our credentials.
   */
  async function probe(u) {
    let status = 0;
    if (globalThis.navigator?.onLine !== false) {
      try {
        const p = new URL(u);
        p.protocol = p.protocol.replace("ws", "http");
        // A subprotocol cannot travel with fetch: offer the token as a bearer header instead.
        const headers = token && tokenIn !== "query" ? { authorization: `Bearer ${token}` } : {};
        status = (await fetch(p.href, { cache: "no-store", headers, signal: AbortSignal.timeout(10000) })).status;
      } catch {
        // unreachable: a network error, retried with backoff
      }
    }
    if (state === "closed") return;
    if (status !== 401 && status !== 403) return retry();
    if (getToken && !authRetried) {
      authRetried = true;
      return retry(0);
    }
    end({ code: "unauthorized", message: `the server refused the connection (HTTP ${status})` });
  }

  function receive(input) {
    if (raw) {
      const data = typeof input === "string" ? parse(input) : new Uint8Array(input);
      return emit("message", data, { channel: null, event: null, offset: null });
    }
    let frame;
    let payload;
    try {
      if (typeof input === "string") {
        frame = JSON.parse(input);
      } else {
        // 4-byte big-endian header length, the JSON header, then the payload bytes
        const length = new DataView(input).getUint32(0);
        frame = JSON.parse(new TextDecoder().decode(new Uint8Array(input, 4, length)));
        payload = new Uint8Array(input, 4 + length);
      }
      if (typeof frame?.type !== "string") throw 0;
    } catch {
      return emit("error", { code: "bad_frame", message: "ignored a malformed frame from the server" });
    }
    const { type, channel, offset, epoch } = frame;
    const data = payload ?? ("data" in frame ? frame.data : frame.text);
    const c = channels.get(channel);
    if (type === "pub") {
      if (!c) return; // no callbacks here for this channel
      if (typeof offset === "number") {
        if (offset <= c.offset) return; // already delivered (false while c.offset is unknown)
        c.offset = offset;
      }
      const meta = { channel, event: frame.event ?? null, offset: offset ?? null };
      for (const cb of [...c.callbacks]) call(cb, data, meta);
    } else if (type === "msg") {
      emit("message", data, { channel: null, event: frame.event ?? null, offset: null });
    } else if (type === "joined") {
      asked.delete(frame.id ?? channel);
      if (!c) return;
      c.epoch = epoch;
      c.refused = false;
      // recovered: true keeps our position, the missed pubs follow; otherwise continue from the room's.
      if (frame.recovered !== true) c.offset = typeof offset === "number" ? offset : undefined;
      if (frame.recovered === false) emit("gap", { channel, epoch, offset });
    } else if (type === "reply") {
      if (typeof frame.id === "number") settle(frame.id, frame);
    } else if (type === "presence_state") {
      if (!c || !Array.isArray(frame.users)) return;
      c.users = new Set(frame.users);
      reconcile(c);
    } else if (type === "presence_diff") {
      if (!c) return;
      for (const user of frame.join || []) c.users.add(user);
      for (const user of frame.leave || []) c.users.delete(user);
      reconcile(c);
    } else if (type === "error") {
      if (frame.id != null && frame.id === refreshing) retryRefresh(); // the token was refused
      const watched = frame.presence != null && channels.get(frame.presence);
      if (watched) watched.watchers.clear(); // presence refused; the subscription stands
      else if (channel != null) {
        const key = frame.id ?? channel; // a sub's id, or a hello entry's name
        const refused = asked.get(key);
        asked.delete(key);
        if (refused && refused === c) c.refused = true; // not retried until subscribe() is called for it again
      }
      const { type: _, ...info } = frame;
      emit("error", info);
    }
    // "left", "refreshed", "pong" and types this version does not know need nothing.
  }

  /**
   * Bring what watchers were shown (`shown`) in line with the server's list (`users`):
   * arrivals at once, departures after `presenceDelay` unless the user is back by then.
   */
  function reconcile(c) {
    const tell = (change) => {
      const users = [...c.shown].sort();
      for (const cb of [...c.watchers]) call(cb, users, change);
    };
    if (!c.shown) {
      c.shown = new Set(c.users);
      return tell({ type: "state" });
    }
    for (const user of c.users) {
      if (c.leaving.has(user)) {
        clearTimeout(c.leaving.get(user));
        c.leaving.delete(user);
      } else if (!c.shown.has(user)) {
        c.shown.add(user);
        tell({ type: "join", user });
      }
    }
    for (const user of c.shown) {
      if (c.users.has(user) || c.leaving.has(user)) continue;
      c.leaving.set(user, setTimeout(() => {
        c.leaving.delete(user);
        if (c.users.has(user) || !c.shown.delete(user)) return;
        tell({ type: "leave", user });
      }, presenceDelay));
    }
  }

  const stopPresence = (c) => {
    for (const timer of c.leaving.values()) clearTimeout(timer);
    c.leaving.clear();
    c.users = new Set();
    c.shown = null;
  };

  const onOnline = () => retryTimer && dial();
  // Drop the socket now rather than wait for TCP to notice; "online" reconnects.
  const onOffline = () => ws && drop(ws);

  function end(error) {
    const socket = ws;
    ws = null;
    clearTimeout(retryTimer);
    clearTimeout(stableTimer);
    clearTimeout(refreshTimer);
    clearTimeout(beatTimer);
    retryTimer = 0;
    globalThis.removeEventListener?.("online", onOnline);
    globalThis.removeEventListener?.("offline", onOffline);
    socket?.close(1000);
    if (state !== "closed") {
      if (error) emit("error", error);
      setState("closed");
    }
    for (const c of channels.values()) stopPresence(c);
    for (const id of [...requests.keys()]) settle(id, { error: { code: "closed", message: "the stream was closed" } });
    channels.clear();
    listeners.clear();
    queue.length = 0;
    token = null;
  }

  globalThis.addEventListener?.("online", onOnline);
  globalThis.addEventListener?.("offline", onOffline);
  queueMicrotask(dial); // after the caller attached its listeners

  const api = {
    get state() {
      return state;
    },

    subscribe(channel, callback) {
      if (typeof channel !== "string" || !channel) throw new TypeError("channel must be a non-empty string");
      if (typeof callback !== "function") throw new TypeError("callback must be a function");
      if (state === "closed") return () => {};
      let c = channels.get(channel);
      if (!c) channels.set(channel, (c = newChannel()));
      const cb = (data, meta) => callback(data, meta); // distinct even when callback is reused
      if (!c.callbacks.size || c.refused) {
        c.refused = false;
        if (isOpen() && !raw) sendFrame({ type: "sub", id: ++seq, channel, ...wants(c) });
      }
      c.callbacks.add(cb);
      return () => {
        if (!c.callbacks.delete(cb) || c.callbacks.size || channels.get(channel) !== c) return;
        channels.delete(channel);
        stopPresence(c);
        if (isOpen() && !raw && !c.refused) sendFrame({ type: "unsub", id: ++seq, channel });
      };
    },

    presence(channel, callback) {
      if (typeof channel !== "string" || !channel) throw new TypeError("channel must be a non-empty string");
      if (typeof callback !== "function") throw new TypeError("callback must be a function");
      if (state === "closed") return () => {};
      const cb = (users, change) => callback(users, change);
      let c = channels.get(channel);
      if (!c) channels.set(channel, (c = newChannel()));
      const first = !c.watchers.size;
      const subscribed = c.callbacks.size > 0 && !c.refused;
      c.watchers.add(cb);
      // A member while it watches (presence is for a channel's members); a new
      // subscription's sub frame asks for the presence too.
      const unsubscribe = api.subscribe(channel, () => {});
      if (subscribed && first && isOpen() && !raw) {
        sendFrame({ type: "sub", id: ++seq, channel, ...wants(c) });
      } else if (!first && c.shown) call(cb, [...c.shown].sort(), { type: "state" });
      return () => {
        if (!c.watchers.delete(cb)) return unsubscribe();
        if (!c.watchers.size && channels.get(channel) === c) {
          stopPresence(c);
          if (isOpen() && !raw && !c.refused) sendFrame({ type: "sub", id: ++seq, channel, ...position(c), presence: false });
        }
        unsubscribe();
      };
    },

    send(value) {
      if (state === "closed") throw new Error("the stream is closed");
      const binary = value instanceof ArrayBuffer || ArrayBuffer.isView(value) || (globalThis.Blob && value instanceof Blob);
      let entry = value;
      if (!binary) {
        const text = typeof value === "string" ? value : JSON.stringify(value);
        if (text === undefined) throw new TypeError("send() takes a string, binary data or a JSON value");
        entry = [text, typeof value === "string"];
      }
      if (isOpen()) ws.send(wire(entry));
      else if (queue.length < maxQueue) queue.push(snapshot(entry));
      else throw new Error(`the send queue is full (maxQueue ${maxQueue}); wait for the "open" state`);
    },

    request(data, { timeout = 10000, offline = "queue" } = {}) {
      if (state === "closed") return Promise.reject(failure("closed", "the stream is closed"));
      if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) throw new TypeError("request() takes a string or a JSON value");
      const text = typeof data === "string" ? data : JSON.stringify(data === undefined ? null : data);
      if (text === undefined) throw new TypeError("request() takes a string or a JSON value");
      const id = ++seq;
      const frame = typeof data === "string" ? JSON.stringify({ type: "req", id, text }) : `{"type":"req","id":${id},"data":${text}}`;
      return new Promise((resolve, reject) => {
        const ready = isOpen() && !raw;
        if (!ready && (offline === "reject" || raw)) {
          return reject(failure("offline", raw ? "the server does not speak nucleus.v1" : "not connected"));
        }
        const timer = setTimeout(() => settle(id, { error: { code: "timeout", message: `no reply within ${timeout} ms` } }), timeout);
        requests.set(id, { resolve, reject, timer, frame, sent: ready });
        if (ready) ws.send(frame);
      });
    },

    on(type, callback) {
      if (typeof callback !== "function") throw new TypeError("callback must be a function");
      let set = listeners.get(type);
      if (!set) listeners.set(type, (set = new Set()));
      const cb = (...args) => callback(...args);
      set.add(cb);
      return () => void set.delete(cb);
    },

    close() {
      end();
    },
  };
  return api;
}

/**
 * A value that tells its subscribers when it changes (the guide's `Signal`).
 *
 * @template T
 */
export class Signal {
  #value;
  #subscribers = new Set();

  /** @param {T} initial */
  constructor(initial) {
    this.#value = initial;
  }

  /** @returns {T} the current value. */
  get() {
    return this.#value;
  }

  /** Replace the value; subscribers hear of it only when it changed (`Object.is`). @param {T} value */
  set(value) {
    if (Object.is(value, this.#value)) return;
    this.#value = value;
    this.#notify();
  }

  /**
   * Change the value in place with `fn(value)`, or replace it with what `fn` returns.
   * Always notifies.
   *
   * A returned value is ignored when it is undefined, or when the value is an object
   * and the return is not an object of the same kind (array or not): so
   * `m => m.push(x)`, which returns the new length, keeps the array, as in the guide.
   * Methods that return another array (`splice`) need a block body:
   * `m => { m.splice(i, 1); }`.
   *
   * @param {(value: T) => T | void} fn
   */
  modify(fn) {
    const value = this.#value;
    const next = fn(value);
    const isObject = (v) => typeof v === "object" && v !== null;
    if (next !== undefined && (!isObject(value) || (isObject(next) && Array.isArray(next) === Array.isArray(value)))) {
      this.#value = next;
    }
    this.#notify();
  }

  /**
   * Call `fn(value)` on every change from now on (not immediately).
   *
   * @param {(value: T) => void} fn
   * @returns {() => void} unsubscribe
   */
  subscribe(fn) {
    const cb = (value) => fn(value);
    this.#subscribers.add(cb);
    return () => void this.#subscribers.delete(cb);
  }

  #notify() {
    for (const cb of [...this.#subscribers]) call(cb, this.#value);
  }
}

/**
 * Render `signal`'s array into `element`, and again on every change.
 *
 * `renderItem(item)` returns a Node, or a string that becomes a text node (wrapped in
 * an `<li>` when `element` is a `<ul>` or `<ol>`): never parsed as HTML.
 *
 * @template T
 * @param {Signal<Iterable<T>>} signal
 * @param {Element} element
 * @param {(item: T) => Node | string} renderItem
 * @returns {() => void} stop re-rendering
 */
export function renderList(signal, element, renderItem) {
  const doc = element.ownerDocument;
  const list = /^[OU]L$/.test(element.tagName);
  const node = (item) => {
    const out = renderItem(item);
    if (typeof out === "object" && out) return out;
    const text = doc.createTextNode(String(out ?? ""));
    if (!list) return text;
    const li = doc.createElement("li");
    li.append(text);
    return li;
  };
  const render = (items) => element.replaceChildren(...Array.from(items ?? [], node));
  render(signal.get());
  return signal.subscribe(render);
}
