"""What a peer command says on stderr while it works: waiting, connected, progress, summary.

Quiet (``--quiet``) keeps only errors, which the CLI prints itself.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from swsrs.durations import format_duration
from swsrs.peer import Away, Event, Paired, PeerProtocol, Reconnecting, Resumed, Waiting

PROGRESS_EVERY = 0.5  # seconds between progress line updates on a terminal


def size(n: float) -> str:
    """Bytes as people read them: ``512 B``, ``1.5 KiB``, ``50.0 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Reporter:
    """One peer command's status lines."""

    def __init__(
        self, session: str, *, quiet: bool, resume: bool = False, stream: TextIO | None = None
    ) -> None:
        self.session = session
        self.quiet = quiet
        self.resume = resume  # we offered resume: say once when the other side cannot
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._progress_shown = False
        self._paired_once = False

    def say(self, line: str) -> None:
        if not self.quiet:
            self._clear_progress()
            print(line, file=self.stream, flush=True)

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, Waiting):
            wait = f" (up to {format_duration(int(ev.seconds))})" if ev.seconds >= 1 else ""
            self.say(f"waiting for the other side of session {self.session}{wait}…")
        elif isinstance(ev, Paired):
            if self._paired_once:
                return  # a reconnect: "resumed" says it
            self._paired_once = True
            self.started = time.monotonic()
            self.say(self._paired_line(ev))
        elif isinstance(ev, Away):
            self.say(f"{ev.cause}; reconnecting…")
        elif isinstance(ev, Reconnecting):
            self.say(f"reconnect {ev.attempt} failed ({ev.cause}); trying again in "
                     f"{ev.delay:.1f}s")  # fmt: skip
        elif isinstance(ev, Resumed):
            self.say(f"resumed: the stream goes on ({size(ev.resent)} sent again)")

    def _paired_line(self, ev: Paired) -> str:
        if ev.confirmed and self.resume and "resume" not in (ev.features or ()):
            return "connected: the other side is here (it does not resume: a drop ends the tunnel)"
        if ev.confirmed:
            return "connected: the other side is here"
        off = "; no resume after a drop" if self.resume else ""
        if ev.signalled:
            return (
                "connected: the other side does not speak swsrs.v1 (a reference peer?): "
                f"the first end ends the tunnel and delivery is not confirmed{off}"
            )
        return (
            "attached: the relay does not speak swsrs.v1 (a reference relay?): no pairing "
            f"signal, the first end ends the tunnel and delivery is not confirmed{off}"
        )

    def summary(self, proto: PeerProtocol) -> None:
        """The last line of a successful run: bytes each way, time, rate."""
        took = max(time.monotonic() - self.started, 1e-6)
        moved = proto.sent + proto.received
        note = "" if proto.confirmed else " (delivery not confirmed)"
        self.say(
            f"done{note}: sent {size(proto.sent)}, received {size(proto.received)} "
            f"in {took:.1f}s ({size(moved / took)}/s)"
        )

    # -- a progress line on a terminal ---------------------------------------------------

    async def progress(self, proto: PeerProtocol) -> None:
        """Keep one updating line on a terminal while bytes move (cancel to stop)."""
        if self.quiet or not self.stream.isatty():
            return
        try:
            while True:
                await asyncio.sleep(PROGRESS_EVERY)
                if proto.sent or proto.received:
                    took = max(time.monotonic() - self.started, 1e-6)
                    rate = size((proto.sent + proto.received) / took)
                    line = f"sent {size(proto.sent)}, received {size(proto.received)} ({rate}/s)"
                    self.stream.write(f"\r\x1b[K{line}")
                    self.stream.flush()
                    self._progress_shown = True
        finally:
            self._clear_progress()

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._progress_shown = False
