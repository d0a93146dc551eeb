// @ts-check
/**
 * swsrs.js — the browser client of swsrs (Simple WebSocket Relay Service).
 *
 * One dependency-free ES module. The relay serves it at `/swsrs.js`
 * (`import {...} from "https://relay.example.com/swsrs.js"` works from any
 * origin); a static site can also ship a copy of this file.
 *
 *   import { AdminClient, dial, accept } from "/swsrs.js";
 *   const admin = new AdminClient("https://relay.example.com", { token: () => getJwt() });
 *   const s = await admin.create();          // {id, initiator_token, responder_token, ...}
 *   const conn = await dial("https://relay.example.com", s.id, s.initiator_token);
 *   conn.send("hello");                      // text stays text, binary stays binary
 *   for await (const msg of conn) { ... }    // string, or ArrayBuffer for binary
 *   const { code, reason } = await conn.closed;
 *
 * Objects from the admin API are the relay's JSON as it is (snake_case
 * fields, RFC 3339 times), exactly as SPEC section 4 describes them.
 *
 * A browser cannot read the HTTP status of a refused WebSocket upgrade (404
 * unknown session, 401 token, 403 Origin, 409 slot held all look the same
 * to a page), so a refused attach is one error, {@link AttachRefused}, that
 * names the possible causes. The developer tools' network panel shows the
 * status (the relay does not log refusals).
 *
 * @module swsrs
 */

// -- errors ----------------------------------------------------------------------------

/** Base class of every error this module throws on purpose. */
export class SwsrsError extends Error {
  /**
   * @param {string} message
   * @param {ErrorOptions} [options]
   */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The relay answered an admin request with an unexpected HTTP status. */
export class HTTPStatusError extends SwsrsError {
  /**
   * @param {number} status
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    /** @type {number} */
    this.status = status;
  }
}

/** 404: the session does not exist, expired or was deleted. */
export class NotFound extends HTTPStatusError {}
/** 401: the admin token was missing or refused. */
export class Unauthorized extends HTTPStatusError {}
/** 403: the admin token lacks a scope. */
export class Forbidden extends HTTPStatusError {}
/** 409: the slot is already held by another connection. */
export class SlotTaken extends HTTPStatusError {}

/** Discovery answered 404: the relay runs `--no-auth`, no admin token is needed. */
export class AuthDisabled extends SwsrsError {}

/**
 * The relay could not be reached: network, TLS, or a cross-origin request the
 * browser blocked because this page's origin is not in the relay's
 * `--allowed-origins` (the page cannot tell these apart).
 */
export class RelayUnreachable extends SwsrsError {}

/** The WebSocket did not open within `timeoutMs`. */
export class HandshakeTimeout extends RelayUnreachable {}

/**
 * The WebSocket upgrade failed. The relay refuses before the upgrade with
 * 404 (unknown or expired session), 401 (wrong token), 403 (this page's
 * Origin is not allowed) or 409 (slot already held), or it was unreachable;
 * browsers hide which.
 */
export class AttachRefused extends SwsrsError {}

/** The tunnel is closed: the counterpart left, or the relay or this side closed it. */
export class PeerGone extends SwsrsError {
  /**
   * @param {string} message
   * @param {number} code
   * @param {string} reason
   */
  constructor(message, code, reason) {
    super(message);
    /** @type {number} */
    this.code = code;
    /** @type {string} */
    this.reason = reason;
  }
}

// -- types -------------------------------------------------------------------------------

/**
 * A bearer token, or a provider asked before every request (so it can refresh).
 * `null`/`undefined`/`""` means no `Authorization` header (a `--no-auth` relay).
 * @typedef {string | null | undefined | (() => string | null | undefined | Promise<string | null | undefined>)} TokenArg
 */

/**
 * `POST /admin/sessions` → the only time the tokens are shown.
 * @typedef {object} CreatedSession
 * @property {string} id
 * @property {string} initiator_token
 * @property {string} responder_token
 * @property {string} [initiator_url]  only when the relay has `--public-base-url`
 * @property {string} [responder_url]
 * @property {string} created_at  RFC 3339 UTC
 * @property {string} expires_at
 */

/**
 * @typedef {"pending" | "half_open" | "open" | "closed"} SessionState
 */

/**
 * @typedef {object} SessionStatus
 * @property {string} id
 * @property {SessionState} state
 * @property {string} created_at
 * @property {string} expires_at
 * @property {string} last_activity
 * @property {number} bytes_in   initiator → responder payload bytes
 * @property {number} bytes_out  responder → initiator
 * @property {boolean} initiator_connected
 * @property {boolean} responder_connected
 */

/**
 * @typedef {object} RequestOptions
 * @property {AbortSignal} [signal]  aborts the request (rejects with the signal's reason)
 * @property {number} [timeoutMs]    overrides the client's timeout
 */

/**
 * @typedef {object} AdminClientOptions
 * @property {TokenArg} [token]
 * @property {number} [timeoutMs=30000]  per request
 * @property {typeof fetch} [fetch]      a fetch implementation (default: the global one)
 */

/**
 * @typedef {"initiator" | "responder"} Role
 */

/**
 * @typedef {object} ConnectOptions
 * @property {Role} [role="responder"]
 * @property {AbortSignal} [signal]   aborts the attach; after it, closes the connection
 * @property {number} [timeoutMs=10000]  bound on the WebSocket handshake
 */

/**
 * How a connection ended.
 * @typedef {object} CloseInfo
 * @property {number} code      1000 normal, 1001 going away (expiry, shutdown), 1006 dropped...
 * @property {string} reason    e.g. "peer disconnected", "session deleted"
 * @property {boolean} wasClean
 */

/** @typedef {string | ArrayBuffer} Message */

// -- URLs -------------------------------------------------------------------------------

const WS_SCHEME = /** @type {Record<string, string>} */ ({
  "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:",
});
const HTTP_SCHEME = /** @type {Record<string, string>} */ ({
  "http:": "http:", "https:": "https:", "ws:": "http:", "wss:": "https:",
});

/**
 * @param {string} url
 * @param {Record<string, string>} schemes
 * @returns {string}
 */
function base(url, schemes) {
  let u;
  try {
    u = new URL(url, globalThis.location?.href);
  } catch {
    throw new SwsrsError(`invalid relay URL ${JSON.stringify(url)}`);
  }
  const scheme = schemes[u.protocol];
  if (!scheme) throw new SwsrsError(`invalid relay URL ${JSON.stringify(url)} (want http(s) or ws(s))`);
  return `${scheme}//${u.host}${u.pathname.replace(/\/+$/, "")}`;
}

/**
 * The relay's `http(s)://` base, without a trailing slash.
 * @param {string} url  `http(s)://` or `ws(s)://`, absolute or relative to the page
 */
export function httpBase(url) {
  return base(url, HTTP_SCHEME);
}

/**
 * The data-plane URL of a session: `ws(s)://host/relay/{id}`. A URL that
 * already ends in `/relay/{id}` (as `initiator_url` does) is kept.
 * @param {string} url
 * @param {string} session
 */
export function relayUrl(url, session) {
  const ws = base(url, WS_SCHEME);
  if (/\/relay\/[^/]+$/.test(ws)) return ws;
  return `${ws}/relay/${encodeURIComponent(session)}`;
}

// -- admin API ----------------------------------------------------------------------------

/**
 * @param {AbortSignal | undefined} signal
 * @param {number} timeoutMs
 * @returns {AbortSignal}
 */
function withTimeout(signal, timeoutMs) {
  const t = AbortSignal.timeout(timeoutMs);
  return signal ? AbortSignal.any([signal, t]) : t;
}

/**
 * @param {Response} resp
 * @returns {Promise<never>}
 */
async function raiseFor(resp) {
  const text = (await resp.text().catch(() => "")).trim().split("\n")[0].slice(0, 300);
  const msg = `HTTP ${resp.status}: ${text || resp.statusText || "error"}`;
  const kinds = /** @type {Record<number, typeof HTTPStatusError>} */ ({
    404: NotFound, 401: Unauthorized, 403: Forbidden, 409: SlotTaken,
  });
  throw new (kinds[resp.status] ?? HTTPStatusError)(resp.status, msg);
}

/**
 * @param {unknown} err
 * @param {AbortSignal | undefined} signal
 * @param {string} where
 * @returns {never}
 */
function rethrow(err, signal, where) {
  if (signal?.aborted) throw signal.reason;
  if (err instanceof DOMException && err.name === "TimeoutError") {
    throw new RelayUnreachable(`no answer from the relay at ${where} in time`, { cause: err });
  }
  if (err instanceof SwsrsError) throw err;
  throw new RelayUnreachable(
    `cannot reach the relay at ${where} (network, TLS, or this page's origin is not in ` +
      "the relay's --allowed-origins)",
    { cause: err },
  );
}

/**
 * Talks to `/admin/sessions`. The token provider is called before every request.
 */
export class AdminClient {
  /**
   * @param {string} baseUrl  the relay, `http(s)://host[:port]` (or relative to the page)
   * @param {AdminClientOptions} [options]
   */
  constructor(baseUrl, options = {}) {
    /** @readonly */
    this.baseUrl = httpBase(baseUrl);
    /** @private */
    this._token = options.token;
    /** @private */
    this._timeoutMs = options.timeoutMs ?? 30000;
    /** @private */
    this._fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * @private
   * @param {string} method
   * @param {string} path
   * @param {RequestOptions} [opts]
   * @returns {Promise<Response>}
   */
  async _request(method, path, opts = {}) {
    const headers = /** @type {Record<string, string>} */ ({});
    const token = typeof this._token === "function" ? await this._token() : this._token;
    if (token) headers.Authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await this._fetch(this.baseUrl + path, {
        method,
        headers,
        signal: withTimeout(opts.signal, opts.timeoutMs ?? this._timeoutMs),
      });
    } catch (err) {
      rethrow(err, opts.signal, this.baseUrl);
    }
    if (!resp.ok) await raiseFor(resp);
    return resp;
  }

  /**
   * Mint a session. The tokens are shown only here.
   * @param {RequestOptions} [opts]
   * @returns {Promise<CreatedSession>}
   */
  async create(opts) {
    return (await this._request("POST", "/admin/sessions", opts)).json();
  }

  /**
   * @param {RequestOptions} [opts]
   * @returns {Promise<SessionStatus[]>}
   */
  async list(opts) {
    return (await (await this._request("GET", "/admin/sessions", opts)).json()).sessions;
  }

  /**
   * @param {string} id
   * @param {RequestOptions} [opts]
   * @returns {Promise<SessionStatus>}
   */
  async get(id, opts) {
    return (await this._request("GET", `/admin/sessions/${encodeURIComponent(id)}`, opts)).json();
  }

  /**
   * End a session; its connected peers are disconnected.
   * @param {string} id
   * @param {RequestOptions} [opts]
   * @returns {Promise<void>}
   */
  async delete(id, opts) {
    await this._request("DELETE", `/admin/sessions/${encodeURIComponent(id)}`, opts);
  }
}

/**
 * The relay's discovery document (`/.well-known/swsrs-config`): the IdP and
 * scopes for the caller's own OAuth flow. Rejects with {@link AuthDisabled}
 * when the relay runs `--no-auth` (its discovery answers 404).
 * @param {string} baseUrl
 * @param {RequestOptions & {fetch?: typeof fetch}} [opts]
 * @returns {Promise<Record<string, unknown>>}
 */
export async function discover(baseUrl, opts = {}) {
  const url = httpBase(baseUrl);
  const f = opts.fetch ?? globalThis.fetch.bind(globalThis);
  let resp;
  try {
    resp = await f(`${url}/.well-known/swsrs-config`, {
      signal: withTimeout(opts.signal, opts.timeoutMs ?? 30000),
    });
  } catch (err) {
    rethrow(err, opts.signal, url);
  }
  if (resp.status === 404) {
    throw new AuthDisabled("the relay runs without admin auth (--no-auth)");
  }
  if (!resp.ok) await raiseFor(resp);
  return resp.json();
}

// -- the data plane -----------------------------------------------------------------------

/**
 * One end of a tunnel over the browser's native WebSocket. Messages keep
 * their type: text arrives as `string`, binary as `ArrayBuffer`.
 *
 * Read with `for await (const m of conn)` (ends when the tunnel closes),
 * `await conn.recv()` (rejects with {@link PeerGone} once closed), or by
 * setting `conn.onmessage` (then messages go to it, queued ones first).
 */
export class Connection {
  /**
   * @param {WebSocket} ws
   * @param {string} sessionId
   * @param {Role} role
   */
  constructor(ws, sessionId, role) {
    /** @readonly */
    this.sessionId = sessionId;
    /** @readonly */
    this.role = role;
    /** @private */
    this._ws = ws;
    /** @private @type {Message[]} */
    this._queue = [];
    /** @private @type {{resolve: (m: Message) => void, reject: (e: Error) => void}[]} */
    this._waiters = [];
    /** @private @type {((m: Message) => void) | null} */
    this._onmessage = null;
    /** @private @type {CloseInfo | null} */
    this._closeInfo = null;
    /** @private @type {(info: CloseInfo) => void} */
    let settle = () => {};
    /**
     * Resolves (never rejects) once the tunnel is closed, with how it ended.
     * @type {Promise<CloseInfo>}
     */
    this.closed = new Promise((resolve) => {
      settle = resolve;
    });
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (ev) => this._deliver(ev.data));
    ws.addEventListener("close", (ev) => {
      const info = { code: ev.code, reason: ev.reason, wasClean: ev.wasClean };
      this._closeInfo = info;
      for (const w of this._waiters.splice(0)) w.reject(this._gone());
      settle(info);
    });
  }

  /**
   * @private
   * @param {Message} data
   */
  _deliver(data) {
    if (this._onmessage) {
      this._onmessage(data);
      return;
    }
    const w = this._waiters.shift();
    if (w) w.resolve(data);
    else this._queue.push(data);
  }

  /** @private */
  _gone() {
    const i = this._closeInfo ?? { code: 1006, reason: "", wasClean: false };
    return new PeerGone(`tunnel closed (${i.code}${i.reason ? ` ${i.reason}` : ""})`, i.code, i.reason);
  }

  /**
   * A callback for every message, instead of `recv()`/iteration.
   * @type {((m: Message) => void) | null}
   */
  get onmessage() {
    return this._onmessage;
  }

  set onmessage(fn) {
    this._onmessage = fn;
    if (fn) for (const m of this._queue.splice(0)) fn(m);
  }

  /** Whether the tunnel is still open. */
  get isOpen() {
    return this._closeInfo === null && this._ws.readyState === WebSocket.OPEN;
  }

  /** Bytes queued by `send` and not yet handed to the network (for pacing large sends). */
  get bufferedAmount() {
    return this._ws.bufferedAmount;
  }

  /**
   * Send one message: a string goes as text, anything else as binary.
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   */
  send(data) {
    if (!this.isOpen) throw this._gone();
    this._ws.send(/** @type {any} */ (data));
  }

  /**
   * The next message.
   * @returns {Promise<Message>}
   */
  recv() {
    const m = this._queue.shift();
    if (m !== undefined) return Promise.resolve(m);
    if (this._closeInfo) return Promise.reject(this._gone());
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** @returns {AsyncGenerator<Message, void, undefined>} */
  async *[Symbol.asyncIterator]() {
    for (;;) {
      try {
        yield await this.recv();
      } catch (err) {
        if (err instanceof PeerGone) return;
        throw err;
      }
    }
  }

  /**
   * Close the tunnel (the counterpart is then closed by the relay with
   * 1000 "peer disconnected"). Resolves with how it ended.
   * @param {number} [code=1000]
   * @param {string} [reason=""]
   * @returns {Promise<CloseInfo>}
   */
  close(code = 1000, reason = "") {
    if (this._ws.readyState <= WebSocket.OPEN) this._ws.close(code, reason);
    return this.closed;
  }
}

/**
 * Attach to `role`'s slot of `session` with its token (sent as `?token=`,
 * since a browser cannot set headers on a WebSocket upgrade).
 *
 * Rejects with {@link AttachRefused} when the upgrade fails (see the module
 * note: the status is hidden from pages), {@link HandshakeTimeout} after
 * `timeoutMs`, or the signal's reason when aborted.
 * @param {string} url  the relay's base (`http(s)://` or `ws(s)://`), or a `.../relay/{id}` URL
 * @param {string} session
 * @param {string} token
 * @param {ConnectOptions} [options]
 * @returns {Promise<Connection>}
 */
export function connect(url, session, token, options = {}) {
  const { role = "responder", signal, timeoutMs = 10000 } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const target = `${relayUrl(url, session)}?token=${encodeURIComponent(token)}`;
    let ws;
    try {
      ws = new WebSocket(target);
    } catch (err) {
      reject(new SwsrsError(`cannot open a WebSocket to ${relayUrl(url, session)}`, { cause: err }));
      return;
    }
    const conn = new Connection(ws, session, role);
    let done = false;
    const finish = (/** @type {Error | null} */ err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ws.removeEventListener("open", onOpen);
      ws.removeEventListener("close", onClose);
      if (err) {
        signal?.removeEventListener("abort", onAbort);
        if (ws.readyState <= WebSocket.OPEN) ws.close();
        reject(err);
      } else {
        resolve(conn);
      }
    };
    const onOpen = () => finish(null);
    const onClose = () =>
      finish(
        new AttachRefused(
          `the relay refused the attach to session ${session} or could not be reached: unknown ` +
            "or expired session (404), wrong token (401), this page's origin not in " +
            "--allowed-origins (403), slot already held (409), or a network/TLS failure; " +
            "browsers do not tell pages which (the developer tools' network panel shows the status)",
        ),
      );
    const onAbort = () => {
      if (done) conn.close(1000, "aborted");
      else finish(/** @type {Error} */ (signal?.reason));
    };
    const timer = setTimeout(
      () => finish(new HandshakeTimeout(`no WebSocket handshake with the relay within ${timeoutMs} ms`)),
      timeoutMs,
    );
    ws.addEventListener("open", onOpen);
    ws.addEventListener("close", onClose);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Attach as the initiator (see {@link connect}).
 * @param {string} url
 * @param {string} session
 * @param {string} token
 * @param {Omit<ConnectOptions, "role">} [options]
 */
export function dial(url, session, token, options = {}) {
  return connect(url, session, token, { ...options, role: "initiator" });
}

/**
 * Attach as the responder (see {@link connect}).
 * @param {string} url
 * @param {string} session
 * @param {string} token
 * @param {Omit<ConnectOptions, "role">} [options]
 */
export function accept(url, session, token, options = {}) {
  return connect(url, session, token, { ...options, role: "responder" });
}
