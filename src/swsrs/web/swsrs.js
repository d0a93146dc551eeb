// @ts-check
/**
 * swsrs.js — the browser client of swsrs (Simple WebSocket Relay Service).
 *
 * Dependency-free ES modules. The relay serves this one at `/swsrs.js`
 * (`import {...} from "https://relay.example.com/swsrs.js"` works from any
 * origin) next to the modules it imports (`swsrs-errors.js`,
 * `swsrs-connection.js`, `swsrs-peer.js`, `swsrs-events.js`, relative to
 * it); a static site can also ship copies of the five files, side by side.
 *
 *   import { AdminClient, dial, accept } from "/swsrs.js";
 *   const admin = new AdminClient("https://relay.example.com", { token: () => getJwt() });
 *   const s = await admin.create();          // {id, initiator_token, responder_token, ...}
 *   const conn = await dial("https://relay.example.com", s.id, s.initiator_token, {
 *     onwaiting: (seconds) => show(`waiting for the other side (up to ${seconds} s)`),
 *   });
 *   await conn.paired;                       // the other side is there
 *   conn.send("hello");                      // text stays text, binary stays binary
 *   for await (const msg of conn) { ... }    // string, or ArrayBuffer; ends at their end
 *   const { ok, cause } = await conn.end();  // our end; resolves when both ends are done
 *
 * The peer protocol `swsrs.v1` (docs/peer-protocol.md) is offered by
 * default: with our relay and a counterpart that speaks it too, the
 * connection knows when the other side is there (`paired`, `waiting`), ends
 * each direction on its own (`end()`; the other side's end rejects `recv()`
 * with a clean {@link PeerGone} and fires `end`) and tells whether
 * everything was delivered (`ended`). `send()` before the pairing queues.
 * Against a counterpart that does not speak it, or with `{extensions:
 * false}`, messages are raw as in the reference protocol. A relay that does
 * not know it (the reference relay) needs `{extensions: false}`: browsers,
 * unlike other clients, fail an upgrade whose answer selects none of the
 * subprotocols offered (`AttachRefused`).
 *
 * Objects from the admin API are the relay's JSON as it is (snake_case
 * fields, RFC 3339 times), exactly as SPEC section 4 describes them.
 *
 * A browser cannot read the HTTP status of a refused WebSocket upgrade (404
 * unknown session, 401 token, 403 Origin, 409 slot held all look the same
 * to a page), so a refused attach is one error, {@link AttachRefused}, that
 * names the possible causes. The developer tools' network panel shows the
 * status (the relay logs refusals too, at info).
 *
 * @module swsrs
 */

import { Connection } from "./swsrs-connection.js";
import {
  AttachRefused,
  AuthDisabled,
  Forbidden,
  HandshakeTimeout,
  HTTPStatusError,
  NotFound,
  RelayUnreachable,
  SlotTaken,
  SwsrsError,
  Unauthorized,
} from "./swsrs-errors.js";
import { SUBPROTOCOL } from "./swsrs-peer.js";

export * from "./swsrs-errors.js";
export { Connection } from "./swsrs-connection.js";
export { SUBPROTOCOL } from "./swsrs-peer.js";

/** @typedef {import("./swsrs-connection.js").Role} Role */
/** @typedef {import("./swsrs-connection.js").CloseInfo} CloseInfo */
/** @typedef {import("./swsrs-connection.js").Message} Message */
/** @typedef {import("./swsrs-events.js").Paired} Paired */
/** @typedef {import("./swsrs-events.js").Ended} Ended */

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
 * @typedef {object} ConnectOptions
 * @property {Role} [role="responder"]
 * @property {AbortSignal} [signal]   aborts the attach; after it, closes the connection
 * @property {number} [timeoutMs=10000]  bound on the WebSocket handshake
 * @property {boolean} [extensions=true]  offer the `swsrs.v1` peer protocol; false: offer
 *   nothing (raw messages, no signals, exactly the reference protocol). Needed against a
 *   relay that does not know `swsrs.v1` (the reference relay): browsers fail a handshake
 *   whose answer selects none of the subprotocols offered, so the attach is refused.
 * @property {(seconds: number) => void} [onwaiting]  the relay holds our slot this long
 *   for the other side (its `waiting` signal)
 * @property {(paired: Paired) => void} [onpaired]  the other side is there
 * @property {() => void} [onend]  the other side ended its stream (every message before
 *   it was handed out)
 * @property {(ended: Ended) => void} [onended]  the tunnel is over
 */

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
 * Attach to `role`'s slot of `session` with its token (sent as `?token=`,
 * since a browser cannot set headers on a WebSocket upgrade).
 *
 * Resolves once the WebSocket is open, before the other side may be there
 * (see {@link Connection}'s `paired`). Rejects with {@link AttachRefused}
 * when the upgrade fails (see the module note: the status is hidden from
 * pages), {@link HandshakeTimeout} after `timeoutMs`, or the signal's reason
 * when aborted.
 * @param {string} url  the relay's base (`http(s)://` or `ws(s)://`), or a `.../relay/{id}` URL
 * @param {string} session
 * @param {string} token
 * @param {ConnectOptions} [options]
 * @returns {Promise<Connection>}
 */
export function connect(url, session, token, options = {}) {
  const { role = "responder", signal, timeoutMs = 10000, extensions = true } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const target = `${relayUrl(url, session)}?token=${encodeURIComponent(token)}`;
    let ws;
    try {
      ws = extensions ? new WebSocket(target, [SUBPROTOCOL]) : new WebSocket(target);
    } catch (err) {
      reject(new SwsrsError(`cannot open a WebSocket to ${relayUrl(url, session)}`, { cause: err }));
      return;
    }
    const conn = new Connection(ws, session, role);
    // Before the socket opens, so that no signal is missed.
    const { onwaiting, onpaired, onend, onended } = options;
    const on = (/** @type {string} */ type, /** @type {(detail: any) => void} */ fn) =>
      conn.addEventListener(type, (ev) => fn(/** @type {CustomEvent} */ (ev).detail));
    if (onwaiting) on("waiting", (d) => onwaiting(d.seconds));
    if (onpaired) on("paired", onpaired);
    if (onend) on("end", () => onend());
    if (onended) on("ended", onended);
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
            "--allowed-origins (403), slot already held (409), " +
            (extensions
              ? "a relay that does not know the swsrs.v1 subprotocol (connect with " +
                "{extensions: false}), "
              : "") +
            "or a network/TLS failure; browsers do not tell pages which (the developer " +
            "tools' network panel shows the status)",
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
