"""Every shell and Python example of the README runs as printed against a real server.

The examples are read from the Markdown, so they cannot drift from what is tested. Each runs
from a directory holding the repository's ``examples/`` and ``models/`` (as the repository's
root does), against a server of the bundled demo models; the only change made to them is
the port, since the test server listens on free ports rather than 8000 and 50051 (for
``perceiver-client``, through its ``PERCEIVER_URL`` / ``PERCEIVER_GRPC`` variables). A block
that cannot run here says why in a ``<!-- readme-test: not run: … -->`` line above it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ..support import REPO

README = REPO / "README.md"
FENCE = re.compile(r"(?:<!-- readme-test: not run: (?P<why>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```",
                   re.S)
RUNNABLE = {"bash", "sh", "python"}


def blocks(lang: set[str]) -> list[tuple[str, str, str | None]]:
    """``(language, code, reason not run)`` of each fenced block in ``lang``."""
    return [(m["lang"], m["code"], m["why"]) for m in FENCE.finditer(README.read_text()) if m["lang"] in lang]


RUN = [(lang, code) for lang, code, why in blocks(RUNNABLE) if why is None]


def test_every_block_not_run_says_why():
    skipped = [(why, code) for _, code, why in blocks(RUNNABLE) if why is not None]
    assert all(why.strip() for why, _ in skipped)
    assert len(RUN) >= 3


def test_toml_examples_parse():
    for _, code, _ in blocks({"toml"}):
        tomllib.loads(code)


@pytest.fixture()
def workdir(tmp_path):
    for name in ("examples", "models"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def _on_test_ports(code: str, server) -> str:
    for host in ("localhost", "127.0.0.1"):
        code = code.replace(f"{host}:8000", f"{host}:{server.http_port}").replace(
            f"{host}:50051", f"{host}:{server.grpc_port}")
    return code


def test_the_client_commands_cover_every_subcommand():
    commands = [line.split("#")[0].split() for _, code in RUN for line in code.splitlines()
                if line.startswith("perceiver-client ")]
    assert {c[1] for c in commands} >= {"classify-text", "fill-mask", "classify-image", "flow", "reconstruct",
                                         "models", "health"}


@pytest.mark.parametrize("lang, code", RUN, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(RUN)])
def test_readme_example_runs_as_printed(process, workdir, lang, code):
    script = _on_test_ports(code, process)
    command = ["bash", "-euo", "pipefail", "-c", script] if lang in ("bash", "sh") else [sys.executable, "-c", script]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PERCEIVER_URL": process.url, "PERCEIVER_GRPC": f"127.0.0.1:{process.grpc_port}"}
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    made = {p.name for p in workdir.iterdir()}
    if "-o flow.png" in code:
        assert (workdir / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "perceiver-client reconstruct" in code:
        assert {"out.mp4", "labels.json"} <= made
    if "ReconstructVideo" in code:
        windows = [line for line in done.stdout.splitlines() if re.match(r"\d+ \[\(", line)]
        assert len(windows) == 8, done.stdout  # 32 frames, 4 per window of the demo model: every window's labels
    if "client.estimate_flow" in code:
        assert done.stdout.splitlines()[-1].startswith("(144, 192, 2) ")  # the held-out flower pair, then its mean flow
