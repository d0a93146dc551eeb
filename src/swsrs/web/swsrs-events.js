// @ts-check
/**
 * What the peer protocol (swsrs-peer.js) reports, and why a tunnel ended in
 * words a person reads: the browser twin of the Python `swsrs.peer.events`
 * and `swsrs.peer.ends`, cause for cause.
 * @module swsrs-events
 */

// -- why a tunnel ended (swsrs/peer/ends.py) --------------------------------------------

export const CONNECTION_LOST = "lost the connection to the relay";
export const VANISHED = "the other side vanished mid-stream (no end-of-stream arrived)";
export const LEFT_BEFORE_CONFIRMING =
  "the other side left before confirming delivery of what was sent to it";

/** @type {[string, (reason: string) => string][]} */
const BY_REASON = [
  ["peer did not attach within", (r) => `nobody came: ${r} (the relay's --peer-wait)`],
  ["session expired", () => "the session expired (the relay's --session-ttl)"],
  ["session deleted", () => "the session was deleted"],
  ["relay shutting down", () => "the relay is shutting down"],
  ["session moved to another relay node", () => "the session moved to another relay node"],
];

/**
 * The cause of a close that the relay (not the other side) decided.
 * @param {number | null} code  null or 1006: no close frame came
 * @param {string} reason
 */
export function relayClose(code, reason) {
  if (code === null || code === 1006) return CONNECTION_LOST;
  for (const [prefix, text] of BY_REASON) if (reason.startsWith(prefix)) return text(reason);
  const withReason = reason ? `: ${reason}` : "";
  if (code === 1009) return `a message was too big for the relay (close 1009${withReason})`;
  if (code === 1011 && reason) return reason;
  return `the relay closed the tunnel (close ${code}${withReason})`;
}

/**
 * The relay's "your counterpart is gone" close.
 * @param {number | null} code
 * @param {string} reason
 */
export function isPeerLeft(code, reason) {
  return code === 1000 && reason === "peer disconnected";
}

// -- what the protocol reports --------------------------------------------------------

/**
 * The other side is there. `features`: the peer-protocol features both sides
 * speak (none are defined yet, so `[]`), or `null` when the other side (or
 * the relay) speaks raw messages only: then no end-of-stream travels and
 * delivery is not confirmed. `confirmed` is `features !== null`.
 * `signalled` is false when the relay gave no pairing signal at all (it does
 * not know `swsrs.v1`): the other side may not even be there yet.
 * @typedef {object} Paired
 * @property {string[] | null} features
 * @property {boolean} confirmed
 * @property {boolean} signalled
 */

/**
 * How the tunnel ended. `ok`: every unit both ways was delivered and the end
 * was clean (or, with a raw counterpart, the tunnel closed normally). `cause`
 * says in words why it is not ok (empty when ok); `code` is the close code
 * that ended it, if one did.
 * @typedef {object} Ended
 * @property {boolean} ok
 * @property {string} cause
 * @property {number | null} code
 */

/**
 * @typedef {{type: "waiting", seconds: number}
 *   | ({type: "paired"} & Paired)
 *   | {type: "data", payload: string | ArrayBuffer}
 *   | {type: "eos"}
 *   | {type: "acknowledged", delivered: number}
 *   | ({type: "ended"} & Ended)} PeerEvent
 */

const MAX_REASON = 123; // bytes of UTF-8 in a close frame's reason

/** Outgoing: close the WebSocket with this code and reason (clipped to fit a close frame). */
export class Close {
  /**
   * @param {number} code
   * @param {string} reason
   */
  constructor(code, reason) {
    this.code = code;
    const enc = new TextEncoder();
    let fits = reason;
    if (enc.encode(reason).length > MAX_REASON) {
      fits = "";
      for (const ch of reason) {
        if (enc.encode(fits + ch).length > MAX_REASON) break;
        fits += ch;
      }
    }
    this.reason = fits;
  }
}
