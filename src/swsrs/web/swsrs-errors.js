// @ts-check
/**
 * The errors of swsrs.js (re-exported by it: import them from `/swsrs.js`).
 * @module swsrs-errors
 */

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
/**
 * The tunnel has no more to give: the other side ended its stream or left,
 * or the relay or this side closed the tunnel. `clean` is true only for the
 * other side's confirmed end-of-stream or a clean end of the tunnel; the
 * message says the cause otherwise.
 */
export class PeerGone extends SwsrsError {
  /**
   * @param {string} message
   * @param {number | null} code  the WebSocket close code, null while not closed
   * @param {string} reason       the close reason ("" if none)
   * @param {boolean} [clean=false]
   */
  constructor(message, code, reason, clean = false) {
    super(message);
    /** @type {number | null} */
    this.code = code;
    /** @type {string} */
    this.reason = reason;
    /** @type {boolean} */
    this.clean = clean;
  }
}
