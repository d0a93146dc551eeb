"""A real Prometheus server (Debian's ``prometheus``), scraping relays on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .conftest import free_port

SCRAPE_INTERVAL = "1s"


def prometheus_missing_reason() -> str | None:
    if shutil.which("prometheus") is None:
        return "prometheus not installed (Debian package prometheus; .ci/run installs it)"
    return None


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API: the result vector."""
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, promql: str) -> float | None:
        """The single number a query returns, or ``None`` while it returns nothing."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_value(self, promql: str, want: float, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        got = self.value(promql)
        while got != want:
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql} = {got}, want {want}")
            time.sleep(0.2)
            got = self.value(promql)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_prometheus(directory: Path, targets: list[str]) -> Prometheus:
    """Prometheus scraping ``targets`` (host:port of ``--metrics-addr``) every second."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    target_list = ", ".join(json.dumps(t) for t in targets)
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  scrape_timeout: {SCRAPE_INTERVAL}\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n"
        "  - job_name: swsrs\n"
        f"    static_configs:\n      - targets: [{target_list}]\n"
    )
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited ({proc.returncode}):\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(prom.url + "/-/ready", timeout=1) as r:
                if r.status == 200:
                    return prom
        except OSError:
            pass
        if time.monotonic() > deadline:
            prom.stop()
            raise RuntimeError(f"prometheus did not come up:\n{log_path.read_text()}")
        time.sleep(0.1)
