"""Coming back after a drop: exponential backoff with jitter, within a time budget.

Refusals that no retry can change end it at once: the session is gone (404),
the token is refused (401) or forbidden (403). A slot still held (409) is
retried: after a drop it is usually our own old connection, which the relay
has not noticed yet.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from swsrs.durations import format_duration
from swsrs.errors import Forbidden, NotFound, SwsrsError, Unauthorized
from swsrs.peer import Reconnecting

T = TypeVar("T")

FIRST_DELAY = 0.25
MAX_DELAY = 10.0
_FINAL = (NotFound, Unauthorized, Forbidden)


class GaveUp(SwsrsError):
    """Reattaching failed for good: the message says why."""


async def until_attached(
    attach: Callable[[], Awaitable[T]],
    budget: float,
    on_try: Callable[[Reconnecting], None] | None = None,
    *,
    rng: Callable[[], float] = random.random,
) -> T:
    """``attach()`` until it succeeds, sleeping 0.25 s, 0.5 s, 1 s … (±50 %, at most 10 s)
    between tries, for at most ``budget`` seconds; raises :class:`GaveUp`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    delay = FIRST_DELAY
    attempt = 0
    while True:
        attempt += 1
        try:
            return await attach()
        except _FINAL as exc:
            raise GaveUp(f"could not reattach: {exc}") from None
        except SwsrsError as exc:
            cause = str(exc)
        left = deadline - loop.time()
        if left <= 0:
            raise GaveUp(
                f"could not reattach within {format_duration(round(budget))}: {cause}"
            ) from None
        pause = min(delay * (0.5 + rng()), left)
        if on_try is not None:
            on_try(Reconnecting(attempt, pause, cause))
        await asyncio.sleep(pause)
        delay = min(delay * 2, MAX_DELAY)
