// @ts-check
/**
 * One end of a tunnel over the browser's WebSocket (re-exported by swsrs.js:
 * import {@link Connection} from `/swsrs.js`, and get one from its `connect`,
 * `dial` or `accept`). It drives the sans-I/O {@link PeerProtocol}
 * (swsrs-peer.js), as the Python SDK's `Connection` does.
 * @module swsrs-connection
 */

import { PeerGone } from "./swsrs-errors.js";
import { Close } from "./swsrs-events.js";
import { PeerProtocol, units } from "./swsrs-peer.js";

/** @typedef {import("./swsrs-events.js").Paired} Paired */
/** @typedef {import("./swsrs-events.js").Ended} Ended */
/** @typedef {import("./swsrs-events.js").PeerEvent} PeerEvent */

/** @typedef {"initiator" | "responder"} Role */

/**
 * How the WebSocket closed.
 * @typedef {object} CloseInfo
 * @property {number} code      1000 normal, 1001 going away (expiry, shutdown), 1006 dropped...
 * @property {string} reason    e.g. "peer disconnected", "session deleted"
 * @property {boolean} wasClean
 */

/** @typedef {string | ArrayBuffer} Message */

/** @param {unknown} err */
function report(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else setTimeout(() => { throw err; });
}

/**
 * One end of a tunnel. Messages keep their type: text arrives as `string`,
 * binary as `ArrayBuffer`.
 *
 * Read with `for await (const m of conn)` (ends at the other side's
 * end-of-stream or when the tunnel closes), `await conn.recv()` (rejects with
 * {@link PeerGone} at the end: `clean` true for the other side's
 * end-of-stream), or by setting `conn.onmessage` (then messages go to it,
 * queued ones first). A message counts as delivered (for the other side's
 * confirmation) when it is handed to the application by one of these.
 *
 * With the `swsrs.v1` peer protocol (docs/peer-protocol.md; the default
 * when the relay and the other side speak it) the connection also knows when
 * the other side is there (`paired`) and ends each direction on its own:
 * `end()` sends our end-of-stream, and `ended` says whether everything was
 * delivered both ways. Events (an `EventTarget`; `detail` of a
 * `CustomEvent`): `waiting` ({seconds}: the relay holds our slot that long
 * for the other side), `paired` ({@link Paired}), `end` (the other side's
 * end-of-stream, once every message before it was handed out), `ended`
 * ({@link Ended}).
 */
export class Connection extends EventTarget {
  /**
   * @param {WebSocket} ws  not yet open: the connection starts its protocol on `open`
   * @param {string} sessionId
   * @param {Role} role
   */
  constructor(ws, sessionId, role) {
    super();
    /** @readonly */
    this.sessionId = sessionId;
    /** @readonly */
    this.role = role;
    /**
     * Seconds the relay said it would wait for the other side (its last
     * `waiting` signal), or null when no such signal came.
     * @type {number | null}
     */
    this.waiting = null;
    /** @private */ this._ws = ws;
    /** @private @type {PeerProtocol | null} */ this._proto = null;
    /** @private @type {Message[]} */ this._queue = [];
    /** @private @type {{resolve: (m: Message) => void, reject: (e: Error) => void}[]} */
    this._waiters = [];
    /** @private @type {((m: Message) => void) | null} */ this._onmessage = null;
    /** @private @type {CloseInfo | null} */ this._closeInfo = null;
    /** @private @type {(string | ArrayBuffer | ArrayBufferView | Blob)[]} */ this._outbox = [];
    /** @private */ this._endAsked = false;
    /** @private */ this._eos = false; // the other side's end-of-stream arrived
    /** @private */ this._eosDelivered = false; // ... and was handed out after every message
    /** @private */ this._pumping = false;

    /** @type {(info: CloseInfo) => void} */
    let settleClosed = () => {};
    /**
     * Resolves (never rejects) once the WebSocket is closed, with its close code and reason.
     * @type {Promise<CloseInfo>}
     */
    this.closed = new Promise((resolve) => {
      settleClosed = resolve;
    });
    /** @private @type {(p: Paired) => void} */ this._resolvePaired = () => {};
    /** @private @type {(e: Error) => void} */ this._rejectPaired = () => {};
    /**
     * Resolves once the other side is there (the relay's `paired` signal), with
     * `{features, confirmed, signalled}`: `confirmed` is false against a raw
     * counterpart (or a relay that knows no signals: then it resolves at once,
     * with `signalled` false). Rejects with {@link PeerGone} if the tunnel
     * ends first (the relay's --peer-wait expired, the session was deleted...).
     * @type {Promise<Paired>}
     */
    this.paired = new Promise((resolve, reject) => {
      this._resolvePaired = resolve;
      this._rejectPaired = reject;
    });
    this.paired.catch(() => {}); // nobody may be waiting for it
    /** @private @type {(e: Ended) => void} */ this._resolveEnded = () => {};
    /**
     * Resolves (never rejects) once the tunnel is over, with `{ok, cause,
     * code}`. `ok` only after a clean end: both ends of stream sent and
     * confirmed (or, against a raw counterpart, a normal close); `cause`
     * says why otherwise, in one line.
     * @type {Promise<Ended>}
     */
    this.ended = new Promise((resolve) => {
      this._resolveEnded = resolve;
    });

    ws.binaryType = "arraybuffer";
    ws.addEventListener("open", () => {
      this._proto = new PeerProtocol(ws.protocol);
      this._pump();
    });
    ws.addEventListener("message", (ev) => {
      if (!this._proto) return;
      this._proto.receiveMessage(ev.data);
      this._pump();
    });
    ws.addEventListener("close", (ev) => {
      const info = { code: ev.code, reason: ev.reason, wasClean: ev.wasClean };
      this._closeInfo = info;
      if (this._proto) {
        this._proto.receiveClose(ev.code, ev.reason);
        this._pump();
      } else {
        const cause = "the relay refused the attach or could not be reached";
        this._rejectPaired(new PeerGone(cause, ev.code, ev.reason));
        this._resolveEnded({ ok: false, cause, code: ev.code });
      }
      for (const w of this._waiters.splice(0)) w.reject(this._gone());
      settleClosed(info);
    });
  }

  // -- driving the protocol -------------------------------------------------------------

  /** @private Send what the protocol queued and handle what it reports, until both are empty. */
  _pump() {
    const proto = this._proto;
    if (!proto || this._pumping) return; // a callback sent: the running pump picks it up
    this._pumping = true;
    try {
      for (;;) {
        const out = proto.dataToSend();
        for (const item of out) this._write(item);
        const events = proto.eventsReceived();
        if (out.length === 0 && events.length === 0) break;
        for (const ev of events) this._handle(ev);
      }
    } finally {
      this._pumping = false;
    }
  }

  /**
   * @private
   * @param {import("./swsrs-peer.js").Outgoing} item
   */
  _write(item) {
    const ws = this._ws;
    if (item instanceof Close) {
      if (ws.readyState <= WebSocket.OPEN) ws.close(item.code, item.reason);
    } else if (ws.readyState === WebSocket.OPEN) {
      ws.send(/** @type {any} */ (item));
    }
  }

  /**
   * @private
   * @param {string} type
   * @param {unknown} detail
   */
  _emit(type, detail) {
    try {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    } catch (err) {
      report(err);
    }
  }

  /**
   * @private
   * @param {PeerEvent} ev
   */
  _handle(ev) {
    const proto = /** @type {PeerProtocol} */ (this._proto);
    switch (ev.type) {
      case "waiting":
        this.waiting = ev.seconds;
        this._emit("waiting", { seconds: ev.seconds });
        break;
      case "paired": {
        const paired = { features: ev.features, confirmed: ev.confirmed, signalled: ev.signalled };
        // What the application sent while alone goes first, then its end if it asked.
        for (const data of this._outbox.splice(0)) this._sendNow(data);
        if (this._endAsked && proto.canSend) proto.sendEof();
        this._resolvePaired(paired);
        this._emit("paired", paired);
        break;
      }
      case "data":
        this._deliver(ev.payload);
        break;
      case "eos":
        this._eos = true;
        this._maybeEos();
        break;
      case "ended": {
        const ended = { ok: ev.ok, cause: ev.cause, code: ev.code };
        this._outbox.length = 0;
        this._rejectPaired(new PeerGone(ended.cause || "the tunnel ended", ended.code, ""));
        if (this._queue.length === 0 && !this._eosDelivered) {
          for (const w of this._waiters.splice(0)) w.reject(this._gone());
        }
        this._resolveEnded(ended);
        this._emit("ended", ended);
        break;
      }
      default: // "acknowledged": see `acknowledged`
    }
  }

  /**
   * @private
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   */
  _sendNow(data) {
    const proto = /** @type {PeerProtocol} */ (this._proto);
    if (typeof data === "string") proto.sendText(data);
    else proto.sendData(data);
  }

  /**
   * A message of the other side's: to the callback, a waiting `recv()`, or the queue.
   * @private
   * @param {Message} data
   */
  _deliver(data) {
    if (this._onmessage) {
      this._handOut(data, this._onmessage);
      return;
    }
    const w = this._waiters.shift();
    if (w) this._handOut(data, w.resolve);
    else this._queue.push(data);
  }

  /**
   * Give `data` to the application: from now on it counts as delivered.
   * @private
   * @param {Message} data
   * @param {(m: Message) => void} to
   */
  _handOut(data, to) {
    /** @type {PeerProtocol} */ (this._proto).delivered(units(data));
    try {
      to(data);
    } catch (err) {
      report(err);
    }
    this._maybeEos();
  }

  /** @private The other side's end-of-stream, once every message before it is handed out. */
  _maybeEos() {
    if (!this._eos || this._eosDelivered || this._queue.length > 0) return;
    this._eosDelivered = true;
    /** @type {PeerProtocol} */ (this._proto).deliveredEof(); // answers "done"
    for (const w of this._waiters.splice(0)) w.reject(this._endOfStream());
    this._emit("end", null);
    this._pump();
  }

  /** @private */
  _endOfStream() {
    const i = this._closeInfo;
    return new PeerGone("the other side ended its stream", i?.code ?? null, i?.reason ?? "", true);
  }

  /**
   * @private
   * @param {string} [fallback]
   */
  _gone(fallback) {
    const ended = this._proto?.ended ?? null;
    const i = this._closeInfo;
    const code = i ? i.code : (ended?.code ?? null);
    let message = fallback ?? "the tunnel ended";
    if (ended && !ended.ok && ended.cause) message = ended.cause;
    else if (!fallback && i) message = `tunnel closed (${i.code}${i.reason ? ` ${i.reason}` : ""})`;
    return new PeerGone(message, code, i?.reason ?? "", !fallback && (ended?.ok ?? false));
  }

  // -- reading --------------------------------------------------------------------------------

  /**
   * A callback for every message, instead of `recv()`/iteration.
   * @type {((m: Message) => void) | null}
   */
  get onmessage() {
    return this._onmessage;
  }

  set onmessage(fn) {
    this._onmessage = fn;
    if (!fn) return;
    for (const m of this._queue.splice(0)) this._handOut(m, fn);
    this._maybeEos();
    this._pump();
  }

  /**
   * The next message. Rejects with {@link PeerGone}: `clean` true once the
   * other side ended its stream (and every time after), or when the tunnel
   * ended (after the messages that arrived before).
   * @returns {Promise<Message>}
   */
  recv() {
    if (this._queue.length > 0) {
      const m = /** @type {Message} */ (this._queue.shift());
      /** @type {Promise<Message>} */
      const p = new Promise((resolve) => this._handOut(m, resolve));
      this._pump();
      return p;
    }
    if (this._eosDelivered) return Promise.reject(this._endOfStream());
    if (this._closeInfo || this._proto?.ended) return Promise.reject(this._gone());
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

  // -- writing --------------------------------------------------------------------------------

  /** The subprotocol the relay selected: "swsrs.v1", or "" (no signals, raw messages). */
  get subprotocol() {
    return this._ws.protocol;
  }

  /** Whether the tunnel is still open (not closed, and not ended). */
  get isOpen() {
    return (
      this._closeInfo === null &&
      this._ws.readyState === WebSocket.OPEN &&
      this._proto?.state !== "ended"
    );
  }

  /** Bytes queued by `send` and not yet handed to the network (for pacing large sends). */
  get bufferedAmount() {
    return this._ws.bufferedAmount;
  }

  /** Units (bytes of binary, characters of text) of ours the other side confirmed delivered. */
  get acknowledged() {
    return this._proto?.acknowledged ?? 0;
  }

  /**
   * Send one message: a string goes as text, anything else as binary.
   *
   * Before the other side is there (before `paired`), messages are queued
   * here and sent, in order, at the pairing; they are dropped if the tunnel
   * ends first. Throws {@link PeerGone} once the tunnel is over or after
   * `end()`.
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   */
  send(data) {
    if (this._endAsked) throw this._gone("cannot send: this side ended its stream");
    if (!this.isOpen) throw this._gone();
    const proto = /** @type {PeerProtocol} */ (this._proto);
    if (proto.state === "waiting") {
      this._outbox.push(data);
      return;
    }
    this._sendNow(data);
    this._pump();
  }

  /**
   * No more messages from this side: sends our end-of-stream (`eos`) with the
   * count of units sent; the other direction keeps flowing until the other
   * side ends too. Before the pairing it is sent at the pairing, after the
   * queued messages. Against a raw counterpart (or a relay without
   * `swsrs.v1`) there is no end-of-stream: this closes the tunnel (1000).
   * Returns {@link Connection.ended}: resolves when the tunnel is over.
   * @returns {Promise<Ended>}
   */
  end() {
    if (!this._endAsked) {
      this._endAsked = true;
      const proto = this._proto;
      if (proto && proto.canSend) {
        proto.sendEof();
        this._pump();
      }
    }
    return this.ended;
  }

  /**
   * This side cannot go on: the other side is told `reason` (an `abort`: it
   * ends with "the other side failed: <reason>") and the tunnel closes.
   * @param {string} reason
   * @returns {Promise<Ended>}
   */
  fail(reason) {
    this._proto?.fail(reason);
    this._pump();
    return this.ended;
  }

  /**
   * Leave now: close the WebSocket (the relay then closes the other side with
   * 1000 "peer disconnected"). Resolves with how the WebSocket closed. Use
   * `end()` for a clean end where the other side confirms delivery; a close
   * before that ends the tunnel with `ok` false (except against a raw
   * counterpart, where a 1000 close is the normal end).
   * @param {number} [code=1000]  1000 or 3000-4999 (browsers allow no others)
   * @param {string} [reason=""]
   * @returns {Promise<CloseInfo>}
   */
  close(code = 1000, reason = "") {
    if (this._ws.readyState <= WebSocket.OPEN) this._ws.close(code, reason);
    if (this._proto && this._proto.state !== "ended") {
      this._proto.closedHere(code);
      this._pump();
    }
    return this.closed;
  }
}
