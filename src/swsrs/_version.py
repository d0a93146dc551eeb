"""Version and build metadata shown by ``swsrs version``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__version__ = "0.1.0"


def build_info() -> dict[str, str]:
    """Version, commit and build date.

    Release builds set ``SWSRS_BUILD_COMMIT``/``SWSRS_BUILD_DATE``; a source
    checkout falls back to asking git, and anything else says ``unknown``.
    """
    commit = os.environ.get("SWSRS_BUILD_COMMIT", "")
    date = os.environ.get("SWSRS_BUILD_DATE", "")
    if not commit or not date:
        root = Path(__file__).resolve().parents[2]
        if (root / ".git").exists():
            try:
                out = subprocess.run(
                    ["git", "-C", str(root), "log", "-1", "--format=%H %cI"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                ).stdout.split()
                if len(out) == 2:
                    commit = commit or out[0][:12]
                    date = date or out[1]
            except (OSError, subprocess.SubprocessError):
                pass
    return {"version": __version__, "commit": commit or "unknown", "date": date or "unknown"}
