"""``--metrics-addr``: a real Prometheus scrapes a relay with ``--workers 2``; PromQL checks."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from .conftest import Relay
from .prom import Prometheus, prometheus_missing_reason, start_prometheus
from .test_relay import attach, closed_with

MiB = 1024 * 1024
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CHUNK = 64 * 1024
METRICS_AT = re.compile(r"metrics on http://(127\.0\.0\.1:\d+)/metrics")


def metrics_addr(relay: Relay) -> str:
    m = METRICS_AT.search(relay.log())
    assert m, relay.log()
    return m.group(1)


@pytest.fixture
def relay2(relay_factory: Any) -> Relay:
    r: Relay = relay_factory("--workers", "2", "--metrics-addr", "127.0.0.1:0")
    return r


@pytest.fixture
def prometheus(tmp_path: Path, relay2: Relay) -> Iterator[Prometheus]:
    if (why := prometheus_missing_reason()) is not None:
        pytest.skip(why)
    p = start_prometheus(tmp_path / "prometheus", [metrics_addr(relay2)])
    yield p
    p.stop()


async def refused(relay: Relay, sid: str, token: str | None, status: int) -> None:
    url = f"{relay.ws_url}/relay/{sid}"
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with pytest.raises(websockets.InvalidStatus) as exc:
        await websockets.connect(url, additional_headers=headers)
    assert exc.value.response.status_code == status


async def send(ws: ClientConnection, n: int) -> None:
    chunk = os.urandom(CHUNK)
    for _ in range(n // CHUNK):
        await ws.send(chunk)


async def receive(ws: ClientConnection, n: int) -> None:
    got = 0
    while got < n:
        got += len(await ws.recv())
    assert got == n


def worker_pids(relay: Relay) -> list[int]:
    return sorted(p.pid for p in psutil.Process(relay.proc.pid).children())


async def test_prometheus_sums_bytes_and_refusals_over_workers(
    relay2: Relay, prometheus: Prometheus
) -> None:
    prometheus.wait_value('up{job="swsrs"}', 1)
    s = relay2.create()
    sid = s["id"]
    # Refusals: three in the front (404, 401 wrong token, 401 no token), one in a worker (409).
    await refused(relay2, "no-such-session", s["initiator_token"], 404)
    await refused(relay2, sid, "A" * 22, 401)
    await refused(relay2, sid, None, 401)
    a = await attach(relay2, sid, s["initiator_token"])
    b = await attach(relay2, sid, s["responder_token"], query=True)
    await refused(relay2, sid, s["initiator_token"], 409)
    # 10 MiB through the tunnel: 6 MiB one way, 4 MiB the other, at the same time.
    await asyncio.gather(send(a, 6 * MiB), send(b, 4 * MiB), receive(b, 6 * MiB),
                         receive(a, 4 * MiB))  # fmt: skip
    await a.close()
    assert await closed_with(b) == (1000, "peer disconnected")

    def check() -> None:
        prometheus.wait_value("sum(swsrs_relayed_bytes_total)", 10 * MiB)
        prometheus.wait_value(
            'swsrs_relayed_bytes_total{direction="initiator_to_responder"}', 6 * MiB
        )
        prometheus.wait_value('sum(swsrs_attaches_total{outcome!="ok"})', 4)
        prometheus.wait_value('swsrs_attaches_total{outcome="401"}', 2)
        prometheus.wait_value('swsrs_attaches_total{outcome="409"}', 1)
        prometheus.wait_value('swsrs_attaches_total{outcome="ok"}', 2)
        prometheus.wait_value("swsrs_tunnels_total", 1)
        prometheus.wait_value("swsrs_tunnels_live", 0)
        prometheus.wait_value("swsrs_pairing_seconds_count", 1)
        prometheus.wait_value("swsrs_tunnel_duration_seconds_count", 1)
        prometheus.wait_value('swsrs_peer_closes_total{reason="client_close"}', 1)
        prometheus.wait_value('swsrs_peer_closes_total{reason="peer_left"}', 1)
        prometheus.wait_value('swsrs_sessions{state="pending"}', 1)

    await asyncio.to_thread(check)

    # Kill both workers: the front starts new ones, and nothing they counted is lost.
    before = worker_pids(relay2)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while len(after := worker_pids(relay2)) < 2 or set(after) & set(before):
        assert time.monotonic() < deadline, relay2.log()
        await asyncio.sleep(0.1)
    restarted = time.time()
    await asyncio.to_thread(
        prometheus.wait_value, f"max(timestamp(swsrs_tunnels_total)) > bool {restarted}", 1
    )
    await asyncio.to_thread(check)
    # ... and the new workers count on top of it.
    a = await attach(relay2, sid, s["initiator_token"])
    b = await attach(relay2, sid, s["responder_token"])
    await asyncio.gather(send(a, MiB), receive(b, MiB))
    await asyncio.to_thread(prometheus.wait_value, "swsrs_tunnels_live", 1)
    await a.close()
    await closed_with(b)
    await asyncio.to_thread(prometheus.wait_value, "sum(swsrs_relayed_bytes_total)", 11 * MiB)
    await asyncio.to_thread(prometheus.wait_value, "swsrs_tunnels_live", 0)

    # Every query of the Grafana dashboard is valid PromQL over these metrics.
    dashboard = json.loads((DEPLOY / "grafana" / "swsrs.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        q = expr.replace("$__rate_interval", "1m").replace("$job", ".+")
        prometheus.query(q)  # asserts status success
    assert prometheus.query('sum by (direction) (swsrs_relayed_bytes_total{job=~".+"})')


def test_metrics_are_off_by_default_and_never_on_the_main_port(relay: Relay) -> None:
    assert relay.request("GET", "/metrics")[0] == 404
    assert "metrics on" not in relay.log()


def test_metrics_listener_serves_the_exposition_format(relay_factory: Any, tmp_path: Path) -> None:
    gone = psutil.Popen(["true"])
    gone.wait()
    stale = tmp_path / f"swsrs-metrics-{gone.pid}-left-by-a-killed-relay"
    stale.mkdir()
    r = relay_factory("--metrics-addr", "127.0.0.1:0", "--store", f"sqlite://{tmp_path}/s.db",
                      "--workers", "2", env={"TMPDIR": str(tmp_path)})  # fmt: skip
    r.create()
    worker = psutil.Process(r.proc.pid).children()[0]
    files = Path(worker.environ()["PROMETHEUS_MULTIPROC_DIR"])  # the front set it for them
    assert files.is_dir() and files.parent == tmp_path
    assert files.name.startswith(f"swsrs-metrics-{r.proc.pid}-")
    assert not stale.exists()  # a dead run's files are removed at start
    with urllib.request.urlopen(f"http://{metrics_addr(r)}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    assert 'swsrs_sessions{state="pending"} 1.0' in text
    assert re.search(r'swsrs_store_operation_seconds_count\{backend="sqlite",op="add"\} 1\.0', text)
    assert 'swsrs_admin_requests_total{action="create",status="201"} 1.0' in text
    assert r.request("GET", "/metrics")[0] == 404
    assert r.stop() == 0
    assert not files.exists()  # this run's metric files are removed at exit
