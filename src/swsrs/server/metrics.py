"""Prometheus metrics of the relay (``--metrics-addr``): off unless enabled.

Every recording function here is safe to call at any time: until
:func:`enable` runs they return at once (one global check), so code on any
layer may call them unconditionally. This module imports nothing else of
the server, so every layer (stores, data plane, control, workers) may import
it without bending the import contracts.
"""

from __future__ import annotations

from typing import Any

_m: Any = None  # the metric objects once enabled (see enable())


def attach_refused(status: int) -> None:
    """An attach (``/relay/{id}`` upgrade) refused with HTTP ``status``: 401, 403, 404, 409,
    429, 503…"""
    m = _m
    if m is not None:
        m.attaches.labels(str(status)).inc()


def limit_hit(kind: str) -> None:
    """A refusal by an abuse limit: ``kind`` is e.g. token_guessing, max_conns, header_timeout,
    attach_rate, bandwidth, sessions_per_subject."""
    m = _m
    if m is not None:
        m.limits.labels(kind).inc()
