// @ts-check
/**
 * The `swsrs.v1` peer protocol as a state machine, without I/O: the browser
 * twin of the Python `swsrs.peer.PeerProtocol` (docs/peer-protocol.md), kept
 * in step with it message for message and cause for cause.
 *
 * The connection (swsrs-connection.js) feeds it what arrives
 * (`receiveMessage`, `receiveClose`) and what the application does
 * (`sendData`, `sendText`, `sendEof`, `delivered`, `deliveredEof`, `fail`),
 * then collects `dataToSend()` (messages, and a {@link Close})
 * and `eventsReceived()`.
 *
 * Units are bytes of binary data and characters (Unicode code points, as
 * Python counts them, not UTF-16 code units) of text data.
 *
 * @module swsrs-peer
 */

import { Close, LEFT_BEFORE_CONFIRMING, VANISHED, isPeerLeft, relayClose } from "./swsrs-events.js";

/** @typedef {import("./swsrs-events.js").Paired} Paired */
/** @typedef {import("./swsrs-events.js").Ended} Ended */
/** @typedef {import("./swsrs-events.js").PeerEvent} PeerEvent */

export const SUBPROTOCOL = "swsrs.v1";
export const ACK_INTERVAL = 1024 * 1024; // an "ack" at least every this many delivered units
export const CLOSE_DONE = 1000;
// A browser may close only with 1000 or 3000-4999: the Python side's 1011 and 1002, moved
// into the application range. Only the relay sees them; the other side hears "peer disconnected".
export const CLOSE_FAILED = 4011;
export const CLOSE_PROTOCOL = 4002;

/** @typedef {string | ArrayBuffer | ArrayBufferView | Blob} Payload */
/** @typedef {Payload | Close} Outgoing */

/**
 * Units of one message: code points of a string, bytes of anything else.
 * @param {Payload} data
 * @returns {number}
 */
export function units(data) {
  if (typeof data === "string") {
    let n = 0;
    for (let i = 0; i < data.length; i++) {
      const c = data.charCodeAt(i);
      // A high surrogate followed by a low one is one code point.
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < data.length) {
        const d = data.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) i++;
      }
      n++;
    }
    return n;
  }
  if (typeof Blob !== "undefined" && data instanceof Blob) return data.size;
  return /** @type {ArrayBuffer | ArrayBufferView} */ (data).byteLength;
}

/**
 * A signal or control message, or null if `text` is not a JSON object with a type.
 * @param {string} text
 * @returns {Record<string, unknown> & {type: string} | null}
 */
function decode(text) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    return null;
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return null;
  return typeof obj.type === "string" ? obj : null;
}

/**
 * @param {unknown} n
 * @returns {n is number}
 */
const isCount = (n) => typeof n === "number" && Number.isInteger(n);

/** The application called the protocol at the wrong time (a bug in the caller). */
export class ProtocolUsageError extends Error {}

/** One end of a tunnel. `selected` is the subprotocol the relay chose on the upgrade. */
export class PeerProtocol {
  /** @param {string} selected  `WebSocket.protocol` after open ("" when none) */
  constructor(selected) {
    /** @type {"waiting" | "open" | "ended"} */
    this.state = "waiting";
    /** @type {Paired | null} */
    this.paired = null;
    /** @type {Ended | null} */
    this.ended = null;
    this.sent = 0; // units we sent
    this.received = 0; // units that arrived
    this.deliveredUnits = 0; // of those, handed to the application
    this.acknowledged = 0; // of ours, delivered by the other side
    this.eofSent = false;
    this.eofReceived = false;
    /** @private */ this._confirmedEof = false; // our "done" sent
    /** @private */ this._eofConfirmed = false; // their "done" received
    /** @private */ this._lastAck = 0;
    /** @private @type {Outgoing[]} */ this._out = [];
    /** @private @type {PeerEvent[]} */ this._events = [];
    if (selected !== SUBPROTOCOL) {
      // A relay that knows no signals: no pairing news, raw messages, as before.
      this._pair({ features: null, confirmed: false, signalled: false });
    }
  }

  /** @returns {Outgoing[]} */
  dataToSend() {
    return this._out.splice(0);
  }

  /** @returns {PeerEvent[]} */
  eventsReceived() {
    return this._events.splice(0);
  }

  /** Paired with a counterpart that confirms delivery (end-of-stream travels). */
  get confirmed() {
    return this.paired !== null && this.paired.confirmed;
  }

  get canSend() {
    return this.state === "open" && !this.eofSent;
  }

  // -- what arrives ---------------------------------------------------------------------

  /** @param {string | ArrayBuffer} message  a WebSocket message from the relay */
  receiveMessage(message) {
    if (this.state === "ended") return;
    if (this.state === "waiting") {
      this._signal(message);
    } else if (!this.confirmed) {
      this.received += units(message);
      this._events.push({ type: "data", payload: message });
    } else if (typeof message === "string") {
      this._control(message);
    } else if (this.eofReceived) {
      this._violation("data arrived after the other side's end-of-stream");
    } else {
      this.received += units(message);
      this._events.push({ type: "data", payload: message });
    }
  }

  /**
   * The connection closed.
   * @param {number | null} code  null: lost without a close frame
   * @param {string} [reason=""]
   */
  receiveClose(code, reason = "") {
    if (this.state === "ended") return;
    if (this.confirmed && isPeerLeft(code, reason)) {
      this._end({ ok: false, cause: this.eofReceived ? LEFT_BEFORE_CONFIRMING : VANISHED, code });
    } else if (this.paired !== null && !this.confirmed && (code === 1000 || code === 1005)) {
      // A raw counterpart ends the tunnel by leaving: as before, that is the end.
      this._end({ ok: true, cause: "", code });
    } else {
      this._end({ ok: false, cause: relayClose(code, reason), code });
    }
  }

  /**
   * This side closed the connection itself (`Connection.close()`) before the end.
   * @param {number} code
   */
  closedHere(code) {
    if (this.state === "ended") return;
    if (this.paired !== null && !this.confirmed && code === 1000) {
      this._end({ ok: true, cause: "", code });
    } else {
      this._end({ ok: false, cause: "closed by this side before the end", code });
    }
  }

  /**
   * @private
   * @param {string | ArrayBuffer} message
   */
  _signal(message) {
    const obj = typeof message === "string" ? decode(message) : null;
    if (obj === null) {
      this._violation("the relay sent data before its pairing signal");
      return;
    }
    if (obj.type === "waiting") {
      this._events.push({ type: "waiting", seconds: typeof obj.wait === "number" ? obj.wait : 0 });
    } else if (obj.type === "paired") {
      if (Array.isArray(obj.features)) {
        // We offer no feature beyond swsrs.v1 yet: the common set is empty.
        this._pair({ features: [], confirmed: true, signalled: true });
      } else {
        this._pair({ features: null, confirmed: false, signalled: true });
      }
    }
  }

  /**
   * @private
   * @param {Paired} paired
   */
  _pair(paired) {
    this.paired = paired;
    this.state = "open";
    this._events.push({ type: "paired", ...paired });
  }

  /**
   * @private
   * @param {string} text
   */
  _control(text) {
    const obj = decode(text);
    if (obj === null) {
      this._violation("unreadable control message from the other side");
      return;
    }
    switch (obj.type) {
      case "eos": {
        if (this.eofReceived) {
          this._violation("a second end-of-stream");
        } else if (obj.sent !== this.received) {
          this._violation(`the other side sent ${obj.sent} bytes but ${this.received} arrived`);
        } else {
          this.eofReceived = true;
          this._events.push({ type: "eos" });
        }
        return;
      }
      case "ack":
      case "done": {
        const delivered = obj.delivered;
        if (!isCount(delivered) || delivered < 0 || delivered > this.sent) {
          this._violation(
            `the other side acknowledged ${JSON.stringify(delivered)} of ${this.sent} bytes`,
          );
          return;
        }
        this.acknowledged = Math.max(this.acknowledged, delivered);
        this._events.push({ type: "acknowledged", delivered: this.acknowledged });
        if (obj.type === "done") {
          if (!this.eofSent || delivered !== this.sent) {
            this._violation("the other side confirmed an end-of-stream never sent");
            return;
          }
          this._eofConfirmed = true;
          this._finishIfComplete();
        }
        return;
      }
      case "abort": {
        const reason = String(obj.reason || "no reason given");
        this._end({ ok: false, cause: `the other side failed: ${reason}`, code: null },
          new Close(CLOSE_DONE, ""));
        return;
      }
      case "text": {
        if (typeof obj.data !== "string" || this.eofReceived) {
          this._violation("a malformed text message, or one after end-of-stream");
          return;
        }
        this.received += units(obj.data);
        this._events.push({ type: "data", payload: obj.data });
        return;
      }
      default:
        // "paired" again, or a type of a later version: ignored.
    }
  }

  // -- what the application does ----------------------------------------------------------

  /** @param {string} what */
  _usage(what) {
    return new ProtocolUsageError(`cannot ${what} now (state ${this.state})`);
  }

  /**
   * One binary message. Only once paired, before `sendEof`.
   * @param {ArrayBuffer | ArrayBufferView | Blob} data
   */
  sendData(data) {
    if (!this.canSend) throw this._usage("send data");
    this.sent += units(data);
    this._out.push(data);
  }

  /**
   * One text message (inside a control message when the other side is ours).
   * @param {string} text
   */
  sendText(text) {
    if (!this.canSend) throw this._usage("send data");
    this.sent += units(text);
    this._out.push(this.confirmed ? JSON.stringify({ type: "text", data: text }) : text);
  }

  /** Our input ended. A raw counterpart knows no end-of-stream: the tunnel ends here. */
  sendEof() {
    if (!this.canSend) throw this._usage("end the stream");
    this.eofSent = true;
    if (!this.confirmed) {
      this._end({ ok: true, cause: "", code: CLOSE_DONE }, new Close(CLOSE_DONE, ""));
      return;
    }
    this._out.push(JSON.stringify({ type: "eos", sent: this.sent }));
  }

  /** @param {number} n  more received units handed to the application */
  delivered(n) {
    this.deliveredUnits += n;
    if (this.deliveredUnits > this.received) throw new ProtocolUsageError("delivered more than arrived");
    const due = this.deliveredUnits - this._lastAck >= ACK_INTERVAL;
    if (due && this.confirmed && this.state === "open") this._ack("ack");
  }

  /** Everything received, and the end of the stream, are delivered. */
  deliveredEof() {
    if (!this.eofReceived || this.deliveredUnits !== this.received) {
      throw new ProtocolUsageError("end-of-stream delivered before it arrived in full");
    }
    if (this.state !== "open" || this._confirmedEof) return;
    this._confirmedEof = true;
    this._ack("done");
    this._finishIfComplete();
  }

  /**
   * This side cannot go on: tell the other side.
   * @param {string} reason
   */
  fail(reason) {
    if (this.state === "ended") return;
    if (this.confirmed) this._out.push(JSON.stringify({ type: "abort", reason }));
    this._end({ ok: false, cause: reason, code: null }, new Close(CLOSE_FAILED, reason));
  }

  // -- internals ------------------------------------------------------------------------------

  /**
   * @private
   * @param {"ack" | "done"} kind
   */
  _ack(kind) {
    this._lastAck = this.deliveredUnits;
    this._out.push(JSON.stringify({ type: kind, delivered: this.deliveredUnits }));
  }

  /** @private */
  _finishIfComplete() {
    if (this._eofConfirmed && this._confirmedEof) {
      this._end({ ok: true, cause: "", code: CLOSE_DONE }, new Close(CLOSE_DONE, "done"));
    }
  }

  /**
   * @private
   * @param {string} what
   */
  _violation(what) {
    this._end({ ok: false, cause: `protocol error: ${what}`, code: null },
      new Close(CLOSE_PROTOCOL, what));
  }

  /**
   * @private
   * @param {Ended} ended
   * @param {Close} [close]
   */
  _end(ended, close) {
    this.state = "ended";
    this.ended = ended;
    if (close) this._out.push(close);
    this._events.push({ type: "ended", ...ended });
  }
}
