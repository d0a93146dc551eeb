"""Build hooks only (the project is described in pyproject.toml): record the git
commit a wheel or sdist is built from, for ``swsrs version``."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent


def _version_module() -> ModuleType:
    """src/swsrs/_version.py alone (importing ``swsrs`` would need its dependencies)."""
    spec = importlib.util.spec_from_file_location("_swsrs_version", ROOT / "src/swsrs/_version.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_info() -> dict[str, str] | None:
    """This build's commit and date: SWSRS_BUILD_COMMIT (and _DATE) if set, else git
    (dated now, or SOURCE_DATE_EPOCH), else what an sdist carries, else ``None``."""
    version = _version_module()
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = version.utc(int(epoch) if epoch else time.time())
    if commit := os.environ.get("SWSRS_BUILD_COMMIT"):
        return {"commit": commit, "date": os.environ.get("SWSRS_BUILD_DATE") or now}
    if head := version.git_head(ROOT):
        return {"commit": head[0], "date": now}
    carried = ROOT / "src" / "swsrs" / version.BUILD_INFO_FILE
    return dict(json.loads(carried.read_text())) if carried.exists() else None


def _write(directory: Path, info: dict[str, str] | None) -> None:
    if info is not None:
        target = directory / "swsrs" / _version_module().BUILD_INFO_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(info) + "\n")


class BuildPy(build_py):  # type: ignore[misc]  # setuptools has no type hints
    def run(self) -> None:
        super().run()
        # An editable install runs from the clone, where swsrs asks git itself.
        if not getattr(self, "editable_mode", False):
            _write(Path(self.build_lib), _build_info())


class SDist(sdist):  # type: ignore[misc]
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        _write(Path(base_dir, "src"), _build_info())


setup(cmdclass={"build_py": BuildPy, "sdist": SDist})
