"""Tests of the benchmark harnesses (``benchmarks/``)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_quick(module: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m MODULE --quick --out OUT [ARGS]`` from the repository root; asserts it exits 0."""
    done = subprocess.run([sys.executable, "-m", module, "--quick", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done
