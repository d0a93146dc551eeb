"""Abuse limits: their flags, per-source token buckets, and log lines that cannot flood.

Every limit here is a flag of ``swsrs serve`` with a safe default (see
:func:`load_limits`). The buckets and the log throttle are keyed by the
client's address (:mod:`swsrs.server.proxies` says which one) and bounded in
memory however many addresses an attacker has. Nothing here touches a
connection: the data plane and the admin API ask, then refuse.
"""

from __future__ import annotations

import logging
import math
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from swsrs.durations import parse_duration
from swsrs.errors import ConfigError
from swsrs.server.proxies import TrustedProxies

log = logging.getLogger("swsrs.limits")

MAX_KEYS = 100_000  # addresses remembered per bucket map (then the idle ones are forgotten)
LOG_INTERVAL = 10.0  # seconds: one refusal line per source and kind, then a count
FD_RESERVE_MIN = 64  # descriptors kept for the store, workers, logs beyond --max-conns
OVERFLOW_CONNS = 32  # connections over --max-conns kept for a look at their first line
ACCEPT_BATCH = 16  # connections asyncio accepts per loop turn, before any is counted

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\S+))?\s*$")
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgKMG]?)(i?)[bB]?\s*(?:/\s*s)?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` events per ``per`` seconds (a bucket of ``count``, refilled over ``per``)."""

    count: float = 0.0
    per: float = 1.0

    @property
    def on(self) -> bool:
        return self.count > 0

    def __str__(self) -> str:
        if not self.on:
            return "0"
        n = int(self.count) if self.count == int(self.count) else self.count
        return f"{n}/{self.per:g}s"


def parse_rate(name: str, text: str) -> Rate:
    """``N/DUR`` (``20/1s``, ``30/1m``), ``N`` (per second), or ``0``/``off`` (no limit)."""
    if text.strip().lower() in ("0", "off", "none"):
        return Rate()
    m = _RATE.match(text)
    if m is None:
        raise ConfigError(f"{name} must be N/DURATION like 20/1s, or 0 for none, got {text!r}")
    count = float(m.group(1))
    try:
        per = parse_duration(m.group(2)) if m.group(2) else 1.0
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if per <= 0:
        raise ConfigError(f"{name}: the period must be positive, got {text!r}")
    return Rate(count, per) if count > 0 else Rate()


def parse_bytes_rate(name: str, text: str) -> float:
    """Bytes per second: ``0`` (off), ``500k``, ``10MiB``, ``1M/s`` (k, M, G = 1000ⁿ; Ki… 1024ⁿ)."""
    m = _BYTES.match(text)
    if m is None:
        raise ConfigError(f"{name} must be a byte rate like 10MiB or 500k, or 0, got {text!r}")
    power = " kmg".index(m.group(2).lower() or " ")
    base = 1024.0 if m.group(3) else 1000.0
    return float(m.group(1)) * base**power


def fd_limit() -> int:
    """The soft ``RLIMIT_NOFILE``, raised to the hard limit first (as Go and nginx do)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def conns_for(fds: int) -> int:
    """How many client connections fit in ``fds`` descriptors with a reserve for the rest."""
    return max(8, fds - max(FD_RESERVE_MIN + OVERFLOW_CONNS + ACCEPT_BATCH, fds // 100))


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The abuse limits of ``swsrs serve`` (each a flag; see README "Server configuration")."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_conns: int = 0  # 0: derived from RLIMIT_NOFILE at start (conns_for)
    attach_rate: Rate = Rate(100, 1.0)
    failed_attach_limit: Rate = Rate(20, 60.0)
    session_bandwidth: float = 0.0  # bytes/s per direction of a session; 0 = unlimited
    max_sessions_per_subject: int = 1000  # 0 = unlimited
    max_admin_body: int = 64 * 1024
    trusted_proxies: tuple[str, ...] = ()
    proxies: TrustedProxies = field(default_factory=TrustedProxies, compare=False)


def load_limits(pick: Callable[[str, str], str | None]) -> LimitsConfig:
    """The limits from flags over environment (``pick(flag, VAR)``), validated."""

    def duration(flag: str, var: str, default: str) -> float:
        text = pick(flag, var) or default
        try:
            secs = parse_duration(text)
        except ConfigError as exc:
            raise ConfigError(f"--{flag.replace('_', '-')}: {exc}") from None
        if secs <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be positive, got {text!r}")
        return secs

    def count(flag: str, var: str, default: str, *, auto: bool = False) -> int:
        text = (pick(flag, var) or default).strip().lower()
        if auto and text == "auto":
            return 0
        if not text.isdigit():
            want = "a whole number or auto" if auto else "a whole number (0 = unlimited)"
            raise ConfigError(f"--{flag.replace('_', '-')} must be {want}, got {text!r}")
        return int(text)

    max_conns = count("max_conns", "SWSRS_MAX_CONNS", "auto", auto=True)
    if max_conns == 0 and (pick("max_conns", "SWSRS_MAX_CONNS") or "auto").strip() == "0":
        raise ConfigError("--max-conns must be a positive number or auto")
    body = parse_bytes_rate("--max-admin-body", pick("max_admin_body", "SWSRS_MAX_ADMIN_BODY")
                            or "64KiB")  # fmt: skip
    if body < 1:
        raise ConfigError("--max-admin-body must be at least 1 byte")
    cidrs = tuple(
        c.strip()
        for c in (pick("trusted_proxies", "SWSRS_TRUSTED_PROXIES") or "").split(",")
        if c.strip()
    )
    try:
        proxies = TrustedProxies(cidrs)
    except ValueError as exc:
        raise ConfigError(f"--trusted-proxies: {exc}") from None
    return LimitsConfig(
        header_timeout=duration("header_timeout", "SWSRS_HEADER_TIMEOUT", "10s"),
        keepalive_timeout=duration("keepalive_timeout", "SWSRS_KEEPALIVE_TIMEOUT", "75s"),
        max_conns=max_conns,
        attach_rate=parse_rate(
            "--attach-rate", pick("attach_rate", "SWSRS_ATTACH_RATE") or "100/1s"
        ),
        failed_attach_limit=parse_rate(
            "--failed-attach-limit",
            pick("failed_attach_limit", "SWSRS_FAILED_ATTACH_LIMIT") or "20/1m",
        ),
        session_bandwidth=parse_bytes_rate(
            "--session-bandwidth", pick("session_bandwidth", "SWSRS_SESSION_BANDWIDTH") or "0"
        ),
        max_sessions_per_subject=count(
            "max_sessions_per_subject", "SWSRS_MAX_SESSIONS_PER_SUBJECT", "1000"
        ),
        max_admin_body=math.floor(body),
        trusted_proxies=cidrs,
        proxies=proxies,
    )


class Buckets:
    """One token bucket per key (a client address): ``rate.count`` at once, refilled over
    ``rate.per``. Memory stays bounded: past ``max_keys`` the full buckets (idle keys)
    are forgotten, and if that is not enough, the oldest."""

    __slots__ = ("_burst", "_keys", "_max_keys", "_refill")

    def __init__(self, rate: Rate, max_keys: int = MAX_KEYS) -> None:
        self._burst = rate.count
        self._refill = rate.count / rate.per  # tokens per second
        self._max_keys = max_keys
        self._keys: dict[str, list[float]] = {}  # key -> [tokens, time of that count]

    def _level(self, key: str, now: float) -> list[float]:
        b = self._keys.get(key)
        if b is None:
            if len(self._keys) >= self._max_keys:
                self._prune(now)
            b = self._keys[key] = [self._burst, now]
        else:
            b[0] = min(self._burst, b[0] + (now - b[1]) * self._refill)
            b[1] = now
        return b

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` has a token (0: it has one now). Takes nothing."""
        b = self._keys.get(key)
        if b is None:
            return 0.0
        b = self._level(key, time.monotonic() if now is None else now)
        return 0.0 if b[0] >= 1 else (1 - b[0]) / self._refill

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token: 0 if there was one, else the seconds until there is (nothing taken)."""
        b = self._level(key, time.monotonic() if now is None else now)
        if b[0] >= 1:
            b[0] -= 1
            return 0.0
        return (1 - b[0]) / self._refill

    def _prune(self, now: float) -> None:
        keys = self._keys
        for k in [k for k, (t, at) in keys.items() if t + (now - at) * self._refill >= self._burst]:
            del keys[k]
        if len(keys) >= self._max_keys:
            for k in list(keys)[: len(keys) // 4 or 1]:
                del keys[k]

    def __len__(self) -> int:
        return len(self._keys)


class LogThrottle:
    """One log line per key (source and kind) per ``interval``; the rest are counted and the
    count is said with the next line that gets through."""

    __slots__ = ("_interval", "_keys", "_max_keys")

    def __init__(self, interval: float = LOG_INTERVAL, max_keys: int = 10_000) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._keys: dict[tuple[str, str], list[float]] = {}  # key -> [last line at, suppressed]

    def allow(self, source: str, kind: str, now: float | None = None) -> int | None:
        """``None``: stay quiet. Else log now, and mention the returned count of lines skipped."""
        now = time.monotonic() if now is None else now
        key = (source, kind)
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return None
        if entry is None and len(self._keys) >= self._max_keys:
            old = [k for k, (at, _) in self._keys.items() if now - at >= self._interval]
            for k in old or list(self._keys)[: len(self._keys) // 4 or 1]:
                del self._keys[k]
        skipped = int(entry[1]) if entry is not None else 0
        self._keys[key] = [now, 0]
        return skipped


def skipped_note(skipped: int) -> str:
    """The tail of a throttled line: how many like it were not logged."""
    return (
        f" (+{skipped} more like it from this source in the last {LOG_INTERVAL:g}s)"
        if (skipped)
        else ""
    )


class SourceLimits:
    """Per-address limits of the data plane's front door (one per process that admits)."""

    def __init__(self, config: LimitsConfig) -> None:
        self.config = config
        self.proxies = config.proxies
        self.attaches = Buckets(config.attach_rate) if config.attach_rate.on else None
        fail = config.failed_attach_limit
        self.failures = Buckets(fail) if fail.on else None
        self.logs = LogThrottle()

    def check_attach(self, source: str) -> tuple[float, str] | None:
        """Before anything is looked up: ``(retry_after, why)`` if ``source`` must wait."""
        if self.failures is not None and (wait := self.failures.wait(source)) > 0:
            return wait, "token_guessing"
        if self.attaches is not None and (wait := self.attaches.take(source)) > 0:
            return wait, "attach_rate"
        return None

    def failed(self, source: str) -> None:
        """An attach from ``source`` named an unknown session or a wrong token."""
        if self.failures is not None:
            self.failures.take(source)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
