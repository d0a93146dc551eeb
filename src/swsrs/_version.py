"""Version and build metadata shown by ``swsrs version``.

The commit comes from, in order: ``SWSRS_BUILD_COMMIT``/``SWSRS_BUILD_DATE``;
git, when this file is still in a clone (``pip install -e .``, ``PYTHONPATH=src``);
``_build_info.json`` beside this file, which ``setup.py`` writes into wheels built
from a clone (``pip install .``) and into sdists; else ``unknown``. Only the
standard library here: ``setup.py`` loads this file before anything is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

__version__ = "0.1.0"

BUILD_INFO_FILE = "_build_info.json"


def utc(epoch: float) -> str:
    """RFC 3339 in UTC, ``Z`` suffix, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def git_head(root: Path) -> tuple[str, int] | None:
    """The checked-out commit of the clone at ``root`` (12 hex digits) and its commit
    time, or ``None`` when ``root`` is not a clone or git is missing or refuses."""
    if not (root / ".git").exists():
        return None
    # GIT_DIR and friends (set when a git hook runs this) would point git elsewhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "-c", "log.showSignature=false",
             "log", "-1", "--format=%H %ct"],
            capture_output=True, text=True, timeout=5, check=True, env=env,
        ).stdout.split()  # fmt: skip
        commit, when = out
        int(commit, 16)
        return commit[:12], int(when)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _from_clone() -> dict[str, str] | None:
    root = Path(__file__).resolve().parents[2]  # src/swsrs/_version.py -> the clone
    if not (root / "pyproject.toml").exists():
        return None
    head = git_head(root)
    return {"commit": head[0], "date": utc(head[1])} if head else None


def _from_build() -> dict[str, str] | None:
    try:
        data = json.loads(Path(__file__).with_name(BUILD_INFO_FILE).read_text())
        return {"commit": str(data["commit"]), "date": str(data["date"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_info() -> dict[str, str]:
    """Version, commit and build date (in a clone: the commit's date)."""
    commit = os.environ.get("SWSRS_BUILD_COMMIT", "")
    date = os.environ.get("SWSRS_BUILD_DATE", "")
    if not commit or not date:
        found = _from_clone() or _from_build() or {}
        commit = commit or found.get("commit", "")
        date = date or found.get("date", "")
    return {"version": __version__, "commit": commit or "unknown", "date": date or "unknown"}
