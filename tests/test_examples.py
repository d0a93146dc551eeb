"""The runnable SDK examples in ``examples/`` run against a real relay and say what they should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import Relay

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, relay: Relay) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), relay.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_quickstart(relay: Relay) -> None:
    out = run_example("quickstart.py", relay).splitlines()
    assert out[0].startswith("session ") and out[0].endswith(" is pending")
    assert out[1:] == [
        "responder got b'\\x00binary' text",
        "initiator read b'hello'",
        "responder saw the end: the other side ended its stream (clean)",
        "delivered both ways: True",
    ]


def test_blocking_socket(relay: Relay) -> None:
    assert run_example("blocking_socket.py", relay).splitlines() == [
        "echo: one",
        "echo: two",
        "echo: three",
    ]
