"""Why a tunnel ended, in words a person reads at 3 a.m.: one line per cause.

The relay ends a peer with a close frame whose code and reason name the
cause (``server/dataplane/rendezvous.py``, ``server/control/admin.py``); the reference relay
uses the same words where it has the same ends.
"""

from __future__ import annotations

CONNECTION_LOST = "lost the connection to the relay"
VANISHED = "the other side vanished mid-stream (no end-of-stream arrived)"
LEFT_BEFORE_CONFIRMING = "the other side left before confirming delivery of what was sent to it"
CUT_NO_RESUME = (
    "the stream was cut and cannot be resumed (the other side or the relay "
    "came back without resume): bytes may be lost"
)
CUT_THEY_RESTARTED = (
    "the stream was cut: the other side restarted and lost its part of the "
    "stream; bytes may be lost"
)
CUT_WE_RESTARTED = (
    "the stream was cut: the other side was paired with an earlier run of this "
    "command; bytes may be lost"
)
CUT_GONE = (
    "the stream was cut: what the other side still needs is no longer kept "
    "(--resume-buffer); bytes may be lost"
)

_BY_REASON = (
    ("peer did not attach within", "nobody came: {reason} (the relay's --peer-wait)"),
    ("session expired", "the session expired (the relay's --session-ttl)"),
    ("session deleted", "the session was deleted"),
    ("relay shutting down", "the relay is shutting down"),
    ("session moved to another relay node", "the session moved to another relay node"),
    ("tunnel idle for", "the relay ended the idle tunnel: {reason}"),
)


def relay_close(code: int | None, reason: str) -> str:
    """The cause of a close that the relay (not the other side) decided."""
    if code is None or code == 1006:
        return CONNECTION_LOST
    for prefix, text in _BY_REASON:
        if reason.startswith(prefix):
            return text.format(reason=reason)
    if code == 1009:
        return f"a message was too big for the relay (close 1009{_with(reason)})"
    if code == 1011 and reason:
        return reason
    return f"the relay closed the tunnel (close {code}{_with(reason)})"


def not_back(reason: str) -> str:
    """The relay's peer-wait ran out while we waited for the other side to come back."""
    within = reason.removeprefix("peer did not attach").strip()
    return (
        f"the other side did not come back {within} (the relay's --peer-wait); "
        "the stream was cut: bytes may be lost"
    )


def is_peer_left(code: int | None, reason: str) -> bool:
    """The relay's "your counterpart is gone" close."""
    return code == 1000 and reason == "peer disconnected"


def _with(reason: str) -> str:
    return f": {reason}" if reason else ""
