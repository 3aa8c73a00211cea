"""The README's perceiver-client commands and Python snippet run as printed against the real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ..support import REPO

README = (REPO / "README.md").read_text()


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("perceiver-client ")]


def snippet() -> str:
    return next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "perceiver_serve.client" in b)


def inputs(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("cat.jpg", "frame_0016.png", "frame_0017.png"):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / name)
    shutil.copy(REPO / "examples" / "clip.mp4", folder / "input.mp4")


def test_every_readme_command_runs(process, tmp_path):
    found = commands()
    assert {c.split()[1] for c in found} >= {"classify-text", "fill-mask", "classify-image", "flow", "reconstruct",
                                              "models", "health"}
    inputs(tmp_path)
    env = {**os.environ, "PERCEIVER_URL": process.url, "PERCEIVER_GRPC": f"127.0.0.1:{process.grpc_port}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in found:
        run = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{command}\n{run.stderr}"
    assert {"flow.png", "out.mp4", "labels.json"} <= {p.name for p in tmp_path.iterdir()}


def test_the_python_snippet_runs(process, tmp_path):
    inputs(tmp_path)
    code = snippet().replace("http://127.0.0.1:8000", process.url).replace("127.0.0.1:50051",
                                                                          f"127.0.0.1:{process.grpc_port}")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "(60, 80, 2)"
