"""Prometheus metrics of the relay (``--metrics-addr``): off unless enabled.

Every recording function here is safe to call at any time: until
:func:`enable` runs they return at once (one global check), so code on any
layer may call them unconditionally. This module imports nothing else of
the server, so every layer (stores, data plane, control, workers) may import
it without bending the import contracts.

**Several processes.** With ``--workers N`` an event is recorded in the
process where it happens: admission refusals, the admin API, OIDC and the
store in the front; seats (409), pairing, tunnels and bytes in the workers.
prometheus-client's multiprocess mode sums them: every process writes its
values to memory-mapped files in one directory, private to this relay run
(a fresh ``mkdtemp``, removed at exit), and the front's ``/metrics`` reads
them all. We chose it over aggregating in the front through the worker
channel because it needs no new messages, covers every metric the same way
(histograms included), and stays right when a worker dies: a dead worker's
counter and histogram files stay and keep counting in the sums (counters
never go back), while its live-tunnel gauge is dropped
(:func:`process_dead`). The same mode is used with one process, so there is
one code path. Bytes not yet flushed when a worker is killed (at most
:data:`BYTES_FLUSH` seconds' worth) are lost to the metrics.

**Bytes** are never counted per frame: the data plane already keeps
per-session counters (``LiveSession.bytes_in``/``bytes_out``), and
:func:`count_bytes` adds what they grew since last time, when a tunnel ends
and every :data:`BYTES_FLUSH` seconds for tunnels still open.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

DIR_ENV = "SWSRS_METRICS_DIR"  # set by the front for its workers (they inherit it)
BYTES_FLUSH = 1.0  # seconds between flushes of live tunnels' byte counters

PAIRING_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300)
DURATION_BUCKETS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 86400)
STORE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

_m: Any = None  # the metric objects once enabled (see enable())
_dir = ""
_seen: dict[str, tuple[int, int]] = {}  # session id -> bytes (in, out) already counted


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.attaches = Counter(
            "swsrs_attaches", "Attaches to /relay/{id} by outcome: ok or the HTTP status of "
            "the refusal", ["outcome"])  # fmt: skip
        self.limits = Counter(
            "swsrs_limit_refusals", "Refusals by an abuse limit, by limit", ["kind"]
        )
        self.tunnels = Counter("swsrs_tunnels", "Tunnels opened (both peers attached)")
        self.tunnels_live = Gauge(
            "swsrs_tunnels_live", "Tunnels open now", multiprocess_mode="livesum"
        )
        self.bytes = Counter(
            "swsrs_relayed_bytes", "Payload bytes relayed, by direction (initiator_to_responder "
            "is a session's bytes_in)", ["direction"])  # fmt: skip
        self.pairing = Histogram(
            "swsrs_pairing_seconds", "From the first peer's attach to the second's",
            buckets=PAIRING_BUCKETS)  # fmt: skip
        self.duration = Histogram(
            "swsrs_tunnel_duration_seconds", "From pairing to the first peer leaving",
            buckets=DURATION_BUCKETS)  # fmt: skip
        self.closes = Counter("swsrs_peer_closes", "Peer connections ended, by reason", ["reason"])
        self.oidc = Counter(
            "swsrs_oidc_verifications", "Admin API bearer token checks by outcome", ["outcome"]
        )
        self.jwks = Counter(
            "swsrs_jwks_refreshes", "Fetches of the IdP's discovery document and key set",
            ["trigger", "result"])  # fmt: skip
        self.admin = Counter(
            "swsrs_admin_requests", "Admin API requests by action and HTTP status",
            ["action", "status"])  # fmt: skip
        self.store = Histogram(
            "swsrs_store_operation_seconds", "Session store operations", ["backend", "op"],
            buckets=STORE_BUCKETS)  # fmt: skip
        self.store_errors = Counter(
            "swsrs_store_errors", "Session store operations that failed", ["backend", "op"]
        )
        self.direction = (self.bytes.labels("initiator_to_responder"),
                          self.bytes.labels("responder_to_initiator"))  # fmt: skip


# -- switching it on -----------------------------------------------------------------


def new_run_dir() -> str:
    """A fresh, empty directory for this relay run's metric files (see the module doc).

    Its name carries the front's pid; directories left by runs whose front is gone
    (killed with SIGKILL, say) are removed first.
    """
    for stale in Path(tempfile.gettempdir()).glob("swsrs-metrics-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"swsrs-metrics-{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def enable(directory: str) -> None:
    """Record metrics from now on, into ``directory`` (shared by the front and its workers)."""
    global _m, _dir
    if _m is not None:
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[DIR_ENV] = directory
    from prometheus_client import values

    # The value class is chosen from the environment when prometheus_client is first
    # imported; pick it again in case something imported it before us.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    _dir = directory
    _m = _Metrics()


def enable_from_env() -> None:
    """In a worker: record metrics if the front does (it passes the directory down)."""
    directory = os.environ.get(DIR_ENV)
    if directory:
        enable(directory)


def enabled() -> bool:
    return _m is not None


def cleanup() -> None:
    """At the front's exit: remove this run's metric files."""
    if _dir:
        shutil.rmtree(_dir, ignore_errors=True)


def process_dead(pid: int) -> None:
    """A worker exited: drop its live gauges (its counters stay in the sums)."""
    if _m is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, _dir)  # type: ignore[no-untyped-call]


def exposition(extra: Iterable[Any] = ()) -> tuple[bytes, str]:
    """The text exposition of every process's metrics plus ``extra`` collectors."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=_dir)  # type: ignore[no-untyped-call]
    for c in extra:
        registry.register(c)
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- the data plane ------------------------------------------------------------------


def attach_ok() -> None:
    m = _m
    if m is not None:
        m.attaches.labels("ok").inc()


def attach_refused(status: int) -> None:
    """An attach (``/relay/{id}`` upgrade) refused with HTTP ``status``: 401, 403, 404, 409,
    429, 503… Call it once, where the refusal is decided (the helpers that write or log a
    refusal do not count)."""
    m = _m
    if m is not None:
        m.attaches.labels(str(status)).inc()


def limit_hit(kind: str) -> None:
    """A refusal by an abuse limit: ``kind`` is e.g. token_guessing, max_conns, header_timeout,
    attach_rate, bandwidth, sessions_per_subject."""
    m = _m
    if m is not None:
        m.limits.labels(kind).inc()


def tunnel_opened(waited: float) -> None:
    """Both peers are attached; the first waited ``waited`` seconds for the second."""
    m = _m
    if m is not None:
        m.tunnels.inc()
        m.tunnels_live.inc()
        m.pairing.observe(waited)


def tunnel_closed(duration: float) -> None:
    m = _m
    if m is not None:
        m.tunnels_live.dec()
        m.duration.observe(duration)


def close_kind(reason: str, code: int | None = None) -> str:
    """A few stable words for why a peer's connection ended (a metric label, a log field)."""
    r = reason.removesuffix(" (aborted mid-frame)")
    for prefix, kind in _CLOSE_KINDS:
        if r.startswith(prefix):
            return kind
    if code in (1002, 1007, 1009):
        return "protocol_error"
    return "other"


_CLOSE_KINDS = (
    ("closed by client", "client_close"),
    ("connection lost", "connection_lost"),
    ("peer disconnected", "peer_left"),
    ("peer did not attach", "peer_wait"),
    ("session expired", "expired"),
    ("session deleted", "deleted"),
    ("relay shutting down", "shutdown"),
    ("session moved", "moved"),
)


def peer_closed(kind: str) -> None:
    m = _m
    if m is not None:
        m.closes.labels(kind).inc()


class Counted(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...


def count_bytes(s: Counted) -> None:
    """Add what a session's byte counters grew since they were last counted."""
    m = _m
    if m is None:
        return
    last_in, last_out = _seen.get(s.id, (0, 0))
    b_in, b_out = s.bytes_in, s.bytes_out
    if b_in != last_in or b_out != last_out:
        if b_in > last_in:
            m.direction[0].inc(b_in - last_in)
        if b_out > last_out:
            m.direction[1].inc(b_out - last_out)
        _seen[s.id] = (b_in, b_out)


def forget(s: Counted) -> None:
    """The session is gone from this process: count its last bytes, then forget it."""
    if _m is not None:
        count_bytes(s)
        _seen.pop(s.id, None)


async def flush_bytes(sessions: Callable[[], Iterable[Counted]]) -> None:
    """Count live tunnels' bytes every :data:`BYTES_FLUSH` seconds (a background task)."""
    while True:
        await asyncio.sleep(BYTES_FLUSH)
        for s in list(sessions()):
            count_bytes(s)


# -- the control plane and the stores ------------------------------------------------


def oidc_verification(outcome: str) -> None:
    """ok, missing, invalid, forbidden (scope) or unavailable (IdP not loaded)."""
    m = _m
    if m is not None:
        m.oidc.labels(outcome).inc()


def jwks_refresh(trigger: str, ok: bool) -> None:
    """trigger: start, periodic or unknown_kid."""
    m = _m
    if m is not None:
        m.jwks.labels(trigger, "ok" if ok else "error").inc()


def admin_request(action: str, status: int) -> None:
    m = _m
    if m is not None:
        m.admin.labels(action, str(status)).inc()


def store_op(backend: str, op: str, started: float, failed: bool) -> None:
    """A store operation that began at ``started`` (``time.perf_counter()``) has ended."""
    m = _m
    if m is not None:
        m.store.labels(backend, op).observe(time.perf_counter() - started)
        if failed:
            m.store_errors.labels(backend, op).inc()
