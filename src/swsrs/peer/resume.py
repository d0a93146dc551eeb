"""Resume, sans I/O: what a side keeps to resend after a reconnect, and when a drop is one.

With the ``resume`` feature on both sides, each side keeps every message it
sent until the other side acknowledges it (:class:`ReplayBuffer`), and after
both have reattached they exchange where they are (a ``resume`` control
message) and resend the gap. The relay buffers nothing: it only keeps the
session and the slots while both sides come back.
"""

from __future__ import annotations

from collections import deque

DEFAULT_BUFFER = 4 * 1024 * 1024  # units kept for resending; a full buffer pauses sending
# With resume, acknowledge at least this often, or every quarter of the sender's replay
# buffer if that is less (a full buffer must always drain). Measured: acknowledging every
# 256 KiB cost the ends ~15 % more CPU per GiB than every MiB (benchmarks W5).
RESUME_ACK_INTERVAL = 1024 * 1024

# Closes after which both sides come back, rather than ending (code, reason prefix).
_AGAIN = (
    (1000, "peer disconnected"),  # the other side dropped: it will come back
    (1001, "relay shutting down"),
    (1001, "session moved to another relay node"),
)
_AGAIN_CODES = frozenset((1006, 1011, 1012, 1013, 1014))


def worth_resuming(code: int | None, reason: str) -> bool:
    """Whether a close is a drop (reconnect and resume) rather than an end.

    Never for ends the relay decided for good: the session deleted or
    expired, the other side not coming back within the peer-wait.
    """
    if code is None or code in _AGAIN_CODES:
        return True
    return any(code == c and reason.startswith(r) for c, r in _AGAIN)


def away_cause(code: int | None, reason: str) -> str:
    """What happened, for the "reconnecting" line."""
    if code is None or code == 1006:
        return "lost the connection to the relay"
    if code == 1000:
        return "the other side's connection dropped"
    if (code == 1001 and reason.startswith("relay shutting down")) or code == 1012:
        return "the relay is restarting"
    return f"the relay closed the connection ({code}{': ' + reason if reason else ''})"


class ReplayBuffer:
    """Sent messages, in order, until the other side has them.

    Offsets count units (bytes of binary data, characters of text) from the
    start of the stream; a message is kept whole, with the offset where it ends.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start = 0  # offset of the first unit still kept
        self.size = 0  # units kept
        self._kept: deque[tuple[int, int, bytes | str]] = deque()  # (end, units, wire form)

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def add(self, end: int, units: int, message: bytes | str) -> None:
        self._kept.append((end, units, message))
        self.size += units

    def release(self, upto: int) -> None:
        """The other side has everything before ``upto``: forget it."""
        kept = self._kept
        while kept and kept[0][0] <= upto:
            _, units, _ = kept.popleft()
            self.size -= units
        self.start = kept[0][0] - kept[0][1] if kept else max(self.start, upto)

    def since(self, offset: int) -> list[bytes | str] | None:
        """Every kept message from ``offset`` on, or ``None`` if some of it is gone."""
        out: list[bytes | str] = []
        for end, units, message in self._kept:
            if end <= offset:
                continue
            if not out and end - units != offset:
                return None  # the gap starts before what is kept, or inside a message
            out.append(message)
        if not out and offset < self.start:
            return None
        return out
