"""Several relay nodes for the tests: a real ``redis-server`` and a real ``nginx`` in front.

nginx runs ``deploy/nginx/swsrs.conf`` — the file the docs ship — with the
test's ports written into it, so the tests check the configuration users get.
Every process is started on 127.0.0.1 and stopped by its PID.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .conftest import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "swsrs.conf"


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port}") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RedisServer:
    """A ``redis-server`` process of this test: no persistence, 127.0.0.1 only."""

    directory: Path
    port: int = 0
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, password=self.password())

    def password(self) -> str | None:
        return (
            self.args[self.args.index("--requirepass") + 1]
            if "--requirepass" in self.args
            else None
        )

    def start(self, *, attempts: int = 5) -> None:
        """Start on ``self.port`` (a free one if 0); a port someone took meanwhile: another."""
        for _ in range(attempts):
            port = self.port or free_port()
            log = (self.directory / f"redis-{port}.log").open("ab")
            proc = subprocess.Popen(
                [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory), *self.args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if redis.Redis(port=port, socket_timeout=1, password=self.password()).ping():
                        self.port, self.proc = port, proc
                        return
                except redis.RedisError:
                    time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            time.sleep(0.2)  # the same port (a restart) may take a moment to be released
        raise RuntimeError(f"redis-server did not start on port {self.port or '(any)'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def dump(self) -> bytes:
        """Every key and every value in the database, concatenated."""
        c = self.client()
        out = []
        for key in c.scan_iter("*"):
            out.append(key)
            kind = c.type(key)
            if kind == b"hash":
                for k, v in c.hgetall(key).items():
                    out += [k, v]
            elif kind == b"zset":
                out += [m for m, _ in c.zrange(key, 0, -1, withscores=True)]
            elif kind == b"string":
                out.append(c.get(key) or b"")
        return b"\0".join(out)


@dataclass
class Nginx:
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        return (self.conf.parent / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc, signal.SIGQUIT)


def render(
    template: str,
    listen: int,
    nodes: list[int],
    *,
    round_robin: bool,
    directives: dict[str, str] | None = None,
) -> str:
    """The shipped configuration with these ports (and, for ``round_robin``, no hash).

    ``directives`` sets the value of directives the file already has, wherever it has
    them (``{"proxy_read_timeout": "2s"}``): a test tunes what users would tune.
    """
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;\n" for p in nodes)
    out = re.sub(r"(upstream \w+ \{\n(?:    hash [^\n]*\n)?)(?:    server [^\n]*\n)+",
                 lambda m: m.group(1) + servers, template)  # fmt: skip
    out = out.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
    if round_robin:
        out = out.replace("    hash $uri consistent;\n", "")
    for name, value in (directives or {}).items():
        out, n = re.subn(rf"(?m)^(\s*{name}\s+)[^;]*;", rf"\g<1>{value};", out)
        assert n, f"{name} is not in {TEMPLATE}"
    return out


def start_nginx(
    workdir: Path,
    nodes: list[int],
    *,
    round_robin: bool = False,
    directives: dict[str, str] | None = None,
) -> Nginx:
    workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        port = free_port()
        site = workdir / "swsrs.conf"
        site.write_text(
            render(
                TEMPLATE.read_text(), port, nodes, round_robin=round_robin, directives=directives
            )
        )
        conf = workdir / "nginx.conf"
        conf.write_text(
            f"""daemon off;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;  # info: timeouts of upgraded connections
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    include {site};
}}
"""
        )
        proc = subprocess.Popen(
            [NGINX, "-p", str(workdir), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(port, proc, "nginx")
            return Nginx(port, proc, conf)
        except RuntimeError:
            stop(proc)
    raise RuntimeError(f"could not start nginx: {(workdir / 'error.log').read_text()}")
