"""The ``swsrs.v1`` WebSocket subprotocol: how peers announce themselves, and the relay's signals.

A peer that speaks the swsrs peer protocol offers ``Sec-WebSocket-Protocol:
swsrs.v1`` on its upgrade, plus one ``swsrs.<feature>`` token per optional
feature it speaks. Our relay then selects ``swsrs.v1`` and, to that peer
only, sends two kinds of text message of its own (JSON objects):

- ``{"type": "waiting", "wait": 119.5}`` right after the upgrade when the
  counterpart is not there yet (seconds the relay will wait for it);
- ``{"type": "paired", "features": [...]}`` when the counterpart is there,
  before any byte of it: the features the counterpart announced, or
  ``null`` when it did not offer ``swsrs.v1`` (it then sends raw bytes).

A peer that offers nothing (the reference CLI and SDK) sees nothing new;
a relay that does not know the subprotocol (the reference relay) selects
none, and the peer falls back. See ``docs/peer-protocol.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

SUBPROTOCOL = "swsrs.v1"
_PREFIX = "swsrs."
_FEATURE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_FEATURES = 16

WAITING = "waiting"
PAIRED = "paired"


def offer(features: Iterable[str]) -> tuple[str, ...]:
    """The subprotocol list a peer offers: ``swsrs.v1`` then a token per feature."""
    return (SUBPROTOCOL, *(_PREFIX + f for f in features))


def parse_offer(header: str | None) -> tuple[str, ...] | None:
    """The features a client's ``Sec-WebSocket-Protocol`` header announces.

    ``None`` when the header does not offer ``swsrs.v1`` (a peer that knows
    none of this); otherwise the ``swsrs.<feature>`` names, malformed or
    excess ones left out.
    """
    if not header:
        return None
    tokens = [t.strip() for t in header.split(",")]
    if SUBPROTOCOL not in tokens:
        return None
    features: list[str] = []
    for t in tokens:
        if t.startswith(_PREFIX) and t != SUBPROTOCOL:
            name = t[len(_PREFIX) :]
            if _FEATURE.fullmatch(name) and name not in features:
                features.append(name)
    return tuple(features[:MAX_FEATURES])


def waiting(seconds: float) -> str:
    """The relay's "your counterpart is not here yet" signal."""
    return json.dumps({"type": WAITING, "wait": round(max(0.0, seconds), 3)})


def paired(features: tuple[str, ...] | None) -> str:
    """The relay's "your counterpart is here" signal (``None``: it speaks raw bytes)."""
    return json.dumps({"type": PAIRED, "features": None if features is None else list(features)})


def decode(text: str) -> dict[str, Any] | None:
    """A signal or control message, or ``None`` if ``text`` is not a JSON object with a type."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return None
    return obj
