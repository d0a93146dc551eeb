"""Relay benchmarks: one command, one table, and the performance targets as PASS/FAIL.

    python benchmarks/run.py                  # full: 3 interleaved rounds (several minutes)
    python benchmarks/run.py --quick          # one round, small sizes (under a minute)
    python benchmarks/run.py --only W1,W3 --rounds 5 --json out.json

Every subject runs as its own process and is measured from outside: wall
time on the client, and the CPU (user+sys, from /proc via psutil) of the
process(es) that moved the bytes, read before and after each run, so
"relay CPU per unit" is the relay's own work. The load generator
(``loadgen.py``) sends prebuilt frames and counts raw bytes; its own CPU is
shown per unit too. Rounds are interleaved (round 1 of every subject, then
round 2 ...) so drift on a shared machine hits every subject alike; rows
show the median and min–max.

Subjects (``subjects.py``): ``swsrs`` (``swsrs serve --no-auth``), ``naive``
(``naive_relay.py``, a textbook aiohttp relay: the baseline), ``direct WS``
(masked frames straight to the receiver, no relay), ``direct TCP``, and
``socat`` (TCP↔TCP, no framing). See README.md for the workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recovery
import subjects
from loadgen import (
    AdminClient,
    GiB,
    Link,
    MiB,
    Stream,
    connect,
    hard_close,
    open_pairs,
    pair_many,
    ping_pong,
    transfer,
)
from subjects import (
    Direct,
    RedisServer,
    Relay,
    Socat,
    SplicePair,
    Subject,
    Tunnel,
    raise_nofile,
    self_cpu,
    start_naive,
    start_swsrs,
    swsrs_has_workers,
    tree_cpu,
)


@dataclass
class Sample:
    """One run of one workload on one subject."""

    wall: float  # seconds
    units: float  # bytes, messages, round trips, creates or pairs
    relay_cpu: float  # seconds, user+sys of the subject's process(es)
    client_cpu: float  # seconds, user+sys of this process
    extra: dict[str, float] = field(default_factory=dict)


# unit -> (rate label, rate scale, per-unit label, per-unit scale)
UNITS = {
    "byte": ("MB/s", 1e-6, "s/GiB", GiB),
    "msg": ("msg/s", 1.0, "µs/msg", 1e6),
    "rt": ("rt/s", 1.0, "µs/rt", 1e6),
    "create": ("creates/s", 1.0, "µs/create", 1e6),
    "pair": ("pairs/s", 1.0, "µs/pair", 1e6),
}


@dataclass
class Workload:
    key: str
    title: str
    unit: str
    subjects: list[str]
    run: Callable[[str], Sample]
    extras: list[tuple[str, str, int]] = field(default_factory=list)  # key, label, digits


@dataclass
class Sizes:
    bulk: int
    small: int
    round_trips: int
    idle: list[int]
    tunnel: int
    creates: int
    pair_latency: int
    pair_concurrent: int
    cuts: int = 100


QUICK = Sizes(128 * MiB, 50_000, 2_000, [1_000], 64 * MiB, 1_000, 200, 500, 20)
FULL = Sizes(GiB, 200_000, 10_000, [1_000, 10_000], 512 * MiB, 5_000, 1_000, 2_000, 100)
NO_RESUME = "swsrs --reconnect 0"  # W5: the same tunnel with resume off


def pct(sorted_values: list[float], p: int) -> float:
    return sorted_values[min(len(sorted_values) - 1, len(sorted_values) * p // 100)]


def measure(subj: Subject | Relay, fn: Callable[[], float]) -> tuple[float, float, float]:
    """Run ``fn`` (returns wall seconds); also return the subject's and our CPU spent."""
    c0, m0 = subj.cpu(), self_cpu()
    wall = fn()
    c1, m1 = subj.cpu(), self_cpu()
    return wall, c1 - c0, m1 - m0


class Bench:
    def __init__(self, sizes: Sizes, notes: list[str]) -> None:
        self.sizes = sizes
        self.notes = notes
        self.started: dict[str, Subject] = {}
        self.workers = swsrs_has_workers()
        self.redis: RedisServer | None = None
        self._store_dir: str | None = None

    def _redis_url(self) -> str:
        if self.redis is None:
            self.redis = RedisServer()
        return self.redis.url

    # -- subjects, started once and reused across rounds -----------------------------------

    def subject(self, name: str) -> Subject:
        old = self.started.get(name)
        if isinstance(old, Relay) and old.proc.poll() is not None:
            self.notes.append(f"{name} exited ({old.proc.returncode}) during the run; restarted")
            del self.started[name]
        if name not in self.started:
            s: Subject
            if name == "swsrs":
                s = start_swsrs()
            elif name.startswith("swsrs --workers "):
                s = start_swsrs(workers=int(name.rsplit(" ", 1)[1]))
            elif name == "swsrs sqlite":
                self._store_dir = self._store_dir or tempfile.mkdtemp(prefix="swsrs-bench-")
                s = start_swsrs(store=f"sqlite://{self._store_dir}/sessions.db", name=name)
            elif name == "swsrs redis":
                s = start_swsrs(store=self._redis_url(), name=name)
            elif name == BANDWIDTH_SUBJECT:
                s = start_swsrs(name=name, extra=("--session-bandwidth", BANDWIDTH_LIMIT))
            elif name == "swsrs splice":
                s = SplicePair(self._redis_url())
            elif name == "naive":
                s = start_naive()
            elif name == "direct WS":
                s = Direct("masked")
            elif name == "direct TCP":
                s = Direct("raw")
            elif name == "socat":
                s = Socat()
            else:
                raise KeyError(name)
            self.started[name] = s
        return self.started[name]

    def relay(self, name: str) -> Relay:
        r = self.subject(name)
        assert isinstance(r, Relay)
        return r

    def stop(self) -> None:
        for s in self.started.values():
            try:
                s.stop()
            except Exception as exc:
                print(f"stopping {s.name}: {exc}", file=sys.stderr)
        self.started.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self._store_dir is not None:
            shutil.rmtree(self._store_dir, ignore_errors=True)
            self._store_dir = None

    # -- workloads -------------------------------------------------------------------------

    def workloads(self) -> list[Workload]:
        z = self.sizes
        refs = ["swsrs", "naive", "direct WS", "direct TCP", "socat"]
        ws = ["swsrs", "naive", "direct WS"]
        multi = ["swsrs --workers 1", "swsrs --workers 2"] if self.workers else ["swsrs"]
        lat = [("p50_us", "p50 µs", 0), ("p99_us", "p99 µs", 0)]
        pair_lat = [("p50_ms", "p50 ms", 2), ("p99_ms", "p99 ms", 2)]
        mem = [("kb_rss", "KB/pair RSS", 1), ("kb_uss", "KB/pair USS", 1)]
        out = [
            Workload(
                "W1-64K",
                "W1 bulk 64 KiB msgs",
                "byte",
                refs,
                lambda s: self.bulk(s, 64 * 1024, z.bulk),
            ),
            Workload(
                "W1-1M", "W1 bulk 1 MiB msgs", "byte", refs, lambda s: self.bulk(s, MiB, z.bulk)
            ),
            Workload(
                "W1-both",
                "W1 both ways 64 KiB",
                "byte",
                refs,
                lambda s: self.bulk(s, 64 * 1024, z.bulk, both=True),
            ),
            Workload(
                "W1x8",
                "W1 8 pairs 64 KiB",
                "byte",
                multi,
                lambda s: self.bulk(s, 64 * 1024, z.bulk, pairs=8),
            ),
            Workload(
                "W2",
                f"W2 {z.small // 1000}k × 64 B",
                "msg",
                ws,
                lambda s: self.small(s, 64, z.small),
            ),
            Workload(
                "W3",
                "W3 ping-pong 64 B",
                "rt",
                refs,
                lambda s: self.ping_pong(s, 64, z.round_trips),
                lat,
            ),
        ]
        for n in z.idle:
            label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
            out.append(
                Workload(
                    f"W4-{label}",
                    f"W4 {label} idle pairs",
                    "pair",
                    ["swsrs", "naive"],
                    lambda s, n=n: self.idle(s, n),
                    mem,
                )
            )
        out += [
            Workload(
                "W5",
                "W5 TCP tunnel",
                "byte",
                ["swsrs", NO_RESUME, "direct TCP", "socat"],
                lambda s: self.tunnel(s, z.tunnel),
                [("listen_s_gib", "tcp-listen s/GiB", 2), ("dial_s_gib", "tcp-dial s/GiB", 2)],
            ),
            Workload(
                "W6",
                "W6 admin creates, 16 at once",
                "create",
                ["swsrs", *self.stores],
                lambda s: self.creates(s, z.creates),
            ),
            Workload(
                "W7",
                "W7 pairing latency",
                "pair",
                ["swsrs", *self.stores, "naive"],
                lambda s: self.pairing(s, z.pair_latency, 1),
                pair_lat,
            ),
            Workload(
                "W7-50",
                "W7 50 pairing at once",
                "pair",
                ["swsrs", "naive"],
                lambda s: self.pairing(s, z.pair_concurrent, 50),
                pair_lat,
            ),
        ]
        out.append(
            Workload(
                "W9",
                f"W9 bulk 64 KiB, {BANDWIDTH_LIMIT}/s cap",
                "byte",
                [BANDWIDTH_SUBJECT],
                lambda s: self.bulk(s, 64 * 1024, BANDWIDTH_TOTAL),
            )
        )
        out.append(
            Workload(
                "W10",
                "W10 a cut to bytes flowing again",
                "rt",
                ["swsrs"],
                lambda s: self.recovery(s, z.cuts),
                [("p50_ms", "p50 ms", 1), ("p99_ms", "p99 ms", 1)],
            )
        )
        if "swsrs redis" in self.stores:
            out.append(
                Workload(
                    "W8",
                    "W8 splice, 64 KiB msgs",
                    "byte",
                    ["swsrs redis", "swsrs splice"],
                    lambda s: self.bulk(s, 64 * 1024, z.bulk),
                )
            )
        return out

    @property
    def stores(self) -> list[str]:
        """Session stores to compare (W6, W7): SQLite always, Redis where it is installed."""
        return ["swsrs sqlite"] + (["swsrs redis"] if shutil.which("redis-server") else [])

    def bulk(
        self, name: str, size: int, total: int, *, both: bool = False, pairs: int = 1
    ) -> Sample:
        subj = self.subject(name)
        stream = Stream(size, total // size // pairs, subj.kind)
        links: list[Link] = []
        try:
            for _ in range(pairs):
                links.append(subj.open_link())
            wall, cpu, me = measure(subj, lambda: transfer(links, stream, both))
        finally:
            for ln in links:
                ln.close()
        return Sample(wall, stream.payload * pairs * (2 if both else 1), cpu, me)

    def small(self, name: str, size: int, count: int) -> Sample:
        subj = self.subject(name)
        stream = Stream(size, count, subj.kind)
        link = subj.open_link()
        try:
            wall, cpu, me = measure(subj, lambda: transfer([link], stream))
        finally:
            link.close()
        return Sample(wall, stream.count, cpu, me)

    def ping_pong(self, name: str, size: int, count: int) -> Sample:
        subj = self.subject(name)
        link = subj.open_link()
        times: list[float] = []
        try:
            ping_pong(link, size, 50)  # warm up

            def run() -> float:
                times.extend(ping_pong(link, size, count))
                return sum(times)

            wall, cpu, me = measure(subj, run)
        finally:
            link.close()
        times.sort()
        extra = {"p50_us": pct(times, 50) * 1e6, "p99_us": pct(times, 99) * 1e6}
        return Sample(wall, count, cpu, me, extra)

    def idle(self, name: str, n: int) -> Sample:
        """N idle pairs on a fresh relay process: memory per pair (and attach rate)."""
        relay = start_swsrs() if name == "swsrs" else start_naive()
        socks: list[socket.socket] = []
        try:
            # Warm up: a few pairs opened and closed, so the baseline has the code paths loaded.
            warm = self._paths(relay, 20)
            for s in asyncio.run(open_pairs(relay.port, warm)):
                hard_close(s)
            time.sleep(0.5)
            rss0, uss0 = relay.memory()
            paths = self._paths(relay, n)

            def run() -> float:
                t0 = time.perf_counter()
                socks.extend(asyncio.run(open_pairs(relay.port, paths)))
                return time.perf_counter() - t0

            wall, cpu, me = measure(relay, run)
            rss1, uss1 = self._settled_memory(relay)
        finally:
            for s in socks:
                hard_close(s)
            relay.stop()
        extra = {"kb_rss": (rss1 - rss0) / n / 1000, "kb_uss": (uss1 - uss0) / n / 1000}
        return Sample(wall, n, cpu, me, extra)

    @staticmethod
    def _paths(relay: Relay, n: int) -> list[tuple[str, str | None, str | None]]:
        if not relay.sessions:
            return relay.naive_paths(n)
        return relay.paths(asyncio.run(AdminClient(relay.port).create(n)))

    @staticmethod
    def _settled_memory(relay: Relay) -> tuple[int, int]:
        """Wait until the relay's RSS stops moving (at most 10 s); return RSS and USS."""
        time.sleep(1.0)
        last = relay.memory(uss=False)[0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = relay.memory(uss=False)[0]
            if abs(now - last) < max(last // 500, 64 * 1024):
                break
            last = now
        return relay.memory()

    def tunnel(self, name: str, total: int) -> Sample:
        stream = Stream(MiB, total // MiB, "raw")
        if name not in ("swsrs", NO_RESUME):
            subj = self.subject(name)
            link = subj.open_link()
            try:
                wall, cpu, me = measure(subj, lambda: transfer([link], stream))
            finally:
                link.close()
            return Sample(wall, stream.payload, cpu, me)
        relay = self.relay("swsrs")
        sink = socket.create_server(("127.0.0.1", 0))
        extra = ("--reconnect=0",) if name == NO_RESUME else ()
        tunnel = Tunnel(relay, sink.getsockname()[1], extra)
        link: Link | None = None
        try:
            # tcp-dial connects to its target only once the other side is there: start
            # tcp-listen, connect the client (which makes it attach), then take the sink's.
            sink.settimeout(30)
            port = tunnel.start_listen()
            a = connect(port)
            try:
                b, _ = sink.accept()  # paired: tcp-dial has connected to its target
            except TimeoutError:
                hard_close(a)
                raise RuntimeError(
                    f"tcp-dial never reached the sink; {tunnel.dial_status()}"
                ) from None
            b.settimeout(60)
            link = Link(a, b, "raw")
            assert tunnel.listen is not None
            listen0, dial0 = tree_cpu(tunnel.listen.pid), tree_cpu(tunnel.dial.pid)
            wall, cpu, me = measure(relay, lambda: transfer([link], stream))  # type: ignore[list-item]
            listen = tree_cpu(tunnel.listen.pid) - listen0
            dial = tree_cpu(tunnel.dial.pid) - dial0
        finally:
            if link is not None:
                link.close()
            tunnel.stop()
            sink.close()
        gib = stream.payload / GiB
        return Sample(
            wall, stream.payload, cpu, me, {"listen_s_gib": listen / gib, "dial_s_gib": dial / gib}
        )

    def creates(self, name: str, n: int) -> Sample:
        relay = self.relay(name)
        client = AdminClient(relay.port, concurrency=16)

        def run() -> float:
            t0 = time.perf_counter()
            asyncio.run(client.create(n, keep=False))
            return time.perf_counter() - t0

        wall, cpu, me = measure(relay, run)
        return Sample(wall, n, cpu, me)

    def recovery(self, name: str, cuts: int) -> Sample:
        relay = self.relay(name)
        times: list[float] = []

        def run() -> float:
            t0 = time.perf_counter()
            times.extend(asyncio.run(recovery.cut_and_measure(relay.port, relay.create, cuts)))
            return time.perf_counter() - t0

        wall, cpu, me = measure(relay, run)
        times.sort()
        extra = {"p50_ms": pct(times, 50) * 1e3, "p99_ms": pct(times, 99) * 1e3}
        return Sample(wall, len(times), cpu, me, extra)

    def pairing(self, name: str, n: int, concurrency: int) -> Sample:
        relay = self.relay(name)
        paths = self._paths(relay, n)
        times: list[float] = []

        def run() -> float:
            t0 = time.perf_counter()
            times.extend(asyncio.run(pair_many(relay.port, paths, concurrency)))
            return time.perf_counter() - t0

        wall, cpu, me = measure(relay, run)
        times.sort()
        extra = {"p50_ms": pct(times, 50) * 1e3, "p99_ms": pct(times, 99) * 1e3}
        return Sample(wall, n, cpu, me, extra)


# -- the table -------------------------------------------------------------------------------


def num(v: float, digits: int) -> str:
    """A number for the table: 0.57, 1142, 432k, 46.0M."""
    if abs(v) >= 1e6:
        return f"{v / 1e6:.1f}M"
    if abs(v) >= 1e5:
        return f"{v / 1e3:.0f}k"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    return f"{v:.{digits}f}"


def fmt(values: list[float], digits: int) -> str:
    med = num(statistics.median(values), digits)
    if len(values) == 1:
        return med
    return f"{med} ({num(min(values), digits)}–{num(max(values), digits)})"


def digits_for(values: list[float]) -> int:
    m = statistics.median(values)
    return 0 if m >= 100 else 1 if m >= 10 else 2 if m >= 0.1 else 3


def row_cells(w: Workload, samples: list[Sample]) -> tuple[str, str, str, str]:
    rate_label, rate_scale, per_label, per_scale = UNITS[w.unit]
    rates = [s.units / s.wall * rate_scale for s in samples]
    relay = [s.relay_cpu / s.units * per_scale for s in samples]
    client = [s.client_cpu / s.units * per_scale for s in samples]
    extras = []
    for key, label, d in w.extras:
        vals = [s.extra[key] for s in samples if key in s.extra]
        if vals:
            extras.append(f"{label} {fmt(vals, d)}")
    return (
        f"{fmt(rates, digits_for(rates))} {rate_label}",
        f"{fmt(relay, digits_for(relay))} {per_label}",
        f"{fmt(client, digits_for(client))} {per_label}",
        "  ".join(extras),
    )


def print_table(
    workloads: list[Workload], results: dict[tuple[str, str], list[Sample | str]]
) -> None:
    head = ("workload", "subject", "wall throughput", "relay CPU / unit", "client CPU / unit", "")
    lines = [head]
    for w in workloads:
        for name in w.subjects:
            res = results.get((w.key, name), [])
            ok = [r for r in res if isinstance(r, Sample)]
            errs = [r for r in res if isinstance(r, str)]
            if ok:
                cells = row_cells(w, ok)
                note = cells[3] + (f"  ({len(errs)} failed: {errs[0]})" if errs else "")
                relay = "—" if name.startswith("direct") else cells[1]  # no process in the path
                lines.append((w.title, name, cells[0], relay, cells[2], note))
            elif errs:
                lines.append((w.title, name, "ERROR", "", "", errs[0][:90]))
    widths = [max(len(ln[i]) for ln in lines) for i in range(5)]
    for ln in lines:
        print(
            f"{ln[0]:<{widths[0]}}  {ln[1]:<{widths[1]}}  {ln[2]:>{widths[2]}}  "
            f"{ln[3]:>{widths[3]}}  {ln[4]:>{widths[4]}}  {ln[5]}".rstrip()
        )


# W9: one session under swsrs serve --session-bandwidth (same size in --quick: ~3 s a round).
BANDWIDTH_LIMIT = "16MiB"
BANDWIDTH = 16 * MiB  # bytes per second
BANDWIDTH_TOTAL = 64 * MiB
BANDWIDTH_SUBJECT = f"swsrs --session-bandwidth {BANDWIDTH_LIMIT}"


def median_of(
    results: dict[tuple[str, str], list[Sample | str]],
    key: str,
    name: str,
    value: Callable[[Sample], float],
) -> float | None:
    vals = [value(s) for s in results.get((key, name), []) if isinstance(s, Sample)]
    return statistics.median(vals) if vals else None


def targets(
    results: dict[tuple[str, str], list[Sample | str]], bench: Bench, sizes: Sizes
) -> list[dict[str, object]]:
    def per_gib(s: Sample) -> float:
        return s.relay_cpu / (s.units / GiB)

    def per_unit(s: Sample) -> float:
        return s.relay_cpu / s.units

    def mbps(s: Sample) -> float:
        return s.units / s.wall / 1e6

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    rows: list[dict[str, object]] = []

    def add(name: str, value: float | None, target: str, ok: bool | None, na: str = "") -> None:
        rows.append({"target": name, "value": value, "goal": target, "pass": ok, "na": na})

    for key, label in (("W1-64K", "64 KiB"), ("W1-1M", "1 MiB")):
        r = ratio(
            median_of(results, key, "swsrs", per_gib), median_of(results, key, "socat", per_gib)
        )
        add(f"W1 relay CPU/GiB vs socat ({label})", r, "≤ 1.30×", None if r is None else r <= 1.3)
    r = ratio(
        median_of(results, "W2", "swsrs", per_unit), median_of(results, "W2", "naive", per_unit)
    )
    add("W2 relay CPU/msg vs naive aiohttp", r, "≤ 0.25×", None if r is None else r <= 0.25)
    big = max(sizes.idle)
    label = f"{big // 1000}k" if big % 1000 == 0 else str(big)
    kb = median_of(results, f"W4-{label}", "swsrs", lambda s: s.extra["kb_rss"])
    add(f"W4 KB per idle pair at {big} pairs", kb, "≤ 8 KB", None if kb is None else kb <= 8)
    r = ratio(median_of(results, "W5", "swsrs", mbps), median_of(results, "W5", "direct TCP", mbps))
    add("W5 tunnel throughput vs direct TCP", r, "≥ 0.70×", None if r is None else r >= 0.7)
    p50 = median_of(results, "W7", "swsrs", lambda s: s.extra["p50_ms"])
    add("W7 pairing latency p50 (ms)", p50, "≤ 5 ms", None if p50 is None else p50 <= 5)
    if bench.workers:
        r = ratio(
            median_of(results, "W1x8", "swsrs --workers 2", mbps),
            median_of(results, "W1x8", "swsrs --workers 1", mbps),
        )
        add("W1 8 pairs: --workers 2 vs --workers 1", r, "≥ 1.70×", None if r is None else r >= 1.7)
    else:
        add("W1 8 pairs: --workers 2 vs --workers 1", None, "≥ 1.70×", None, "n/a (no --workers)")
    # A capped session runs at its cap. The first second's worth crosses at once (the
    # bucket starts full), so the rate is what follows it over the time it took.
    r = ratio(
        median_of(results, "W9", BANDWIDTH_SUBJECT, lambda s: (s.units - BANDWIDTH) / s.wall),
        BANDWIDTH,
    )
    add("W9 sustained rate vs --session-bandwidth", r, "0.9–1.1×",
        None if r is None else 0.9 <= r <= 1.1)  # fmt: skip
    return rows


def print_targets(rows: list[dict[str, object]]) -> None:
    print("\ntargets (ratios of medians from this run)\n")
    width = max(len(str(r["target"])) for r in rows)
    for r in rows:
        value = r["value"]
        if r["na"]:
            shown, verdict = str(r["na"]), ""
        elif value is None:
            shown, verdict = "not measured", ""
        else:
            assert isinstance(value, float)
            shown = f"{value:.3f}" if value < 10 else f"{value:.1f}"
            verdict = "PASS" if r["pass"] else "FAIL"
        print(f"{r['target']!s:<{width}}  {shown:>20}  {r['goal']!s:<8}  {verdict}")


def as_json(x: Sample | str) -> dict[str, object]:
    return asdict(x) if isinstance(x, Sample) else {"error": x}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, one round (< 1 minute)")
    ap.add_argument("--only", help="comma-separated workloads, e.g. W1,W3 (prefix match)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    ap.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    ap.add_argument(
        "--swsrs",
        metavar="CMD",
        help="command that runs swsrs "
        "(default: this interpreter's -m swsrs), e.g. /other/tree/.venv/bin/swsrs",
    )
    ap.add_argument("--debug", action="store_true", help="print tracebacks of failed runs")
    args = ap.parse_args()
    if args.swsrs:
        subjects.SWSRS_CMD[:] = shlex.split(args.swsrs)
    rounds = args.rounds or (1 if args.quick else 3)
    sizes = QUICK if args.quick else FULL
    notes: list[str] = []

    hard = raise_nofile()
    # Two sockets per pair, in the client and in the relay, which keeps 1% of its descriptors
    # (at least 112) for itself beyond its --max-conns.
    max_pairs = (hard - max(400, hard // 50)) // 2
    if any(n > max_pairs for n in sizes.idle):
        notes.append(
            f"W4: RLIMIT_NOFILE hard limit is {hard}; {max(sizes.idle)} pairs need "
            f"{2 * max(sizes.idle)} sockets per process, scaled down to {max_pairs}"
        )
        sizes.idle = [min(n, max_pairs) for n in sizes.idle]

    bench = Bench(sizes, notes)
    if not bench.workers:
        notes.append(
            "multi-core: `swsrs serve --help` has no --workers; W1 8 pairs runs one process"
        )
    workloads = bench.workloads()
    if args.only:
        wanted = [w.strip().upper() for w in args.only.split(",") if w.strip()]
        workloads = [w for w in workloads if any(w.key.upper().startswith(p) for p in wanted)]
    results: dict[tuple[str, str], list[Sample | str]] = {}
    t_start = time.monotonic()
    try:
        for rnd in range(rounds):
            for w in workloads:
                for name in w.subjects:
                    t0 = time.monotonic()
                    try:
                        res: Sample | str = w.run(name)
                    except Exception as exc:
                        res = f"{type(exc).__name__}: {exc}"
                        if args.debug:
                            traceback.print_exc()
                    results.setdefault((w.key, name), []).append(res)
                    status = "ok" if isinstance(res, Sample) else res
                    print(
                        f"[round {rnd + 1}/{rounds}] {w.title} / {name}: {status} "
                        f"({time.monotonic() - t0:.1f}s)",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        bench.stop()

    z = sizes
    print(
        f"\nswsrs benchmarks: rounds={rounds}, bulk={z.bulk // MiB} MiB, small={z.small} msgs, "
        f"round trips={z.round_trips}, idle pairs={z.idle}, tunnel={z.tunnel // MiB} MiB, "
        f"creates={z.creates}, pairings={z.pair_latency}/{z.pair_concurrent}; "
        f"{time.monotonic() - t_start:.0f} s"
    )
    print("median (min–max) over rounds; CPU is user+sys per unit of work\n")
    print_table(workloads, results)
    rows = targets(results, bench, sizes)
    print_targets(rows)
    for n in notes:
        print(f"note: {n}")
    if args.json:
        data = {
            "rounds": rounds,
            "sizes": asdict(sizes),
            "notes": notes,
            "results": [
                {
                    "workload": k,
                    "subject": s,
                    "samples": [asdict(x) if isinstance(x, Sample) else {"error": x} for x in v],
                }
                for (k, s), v in results.items()
            ],
            "targets": rows,
        }
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
