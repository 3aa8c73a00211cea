"""Apply a :class:`Mutant` to a copy of the package, and run the tests that must kill it.

The working tree is never touched: ``server/perceiver_serve`` is copied to a temporary
directory, the mutant's replacement is made there, and pytest runs in a subprocess with
that copy first on ``PYTHONPATH`` (ahead of the editable install), so the servers the tests
start import the mutated code too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "server" / "perceiver_serve"


@dataclasses.dataclass(frozen=True)
class Mutant:
    """A bug planted by replacing ``old`` (which must occur exactly once) in ``path`` by ``new``."""

    name: str
    path: str  # relative to server/perceiver_serve
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids (relative to the repository root) that must fail

    def mutated(self, source: str) -> str:
        count = source.count(self.old)
        if count != 1:
            raise StaleMutant(f"{self.name}: {self.old!r} occurs {count} times in {self.path}, not once: "
                              "the code moved; update the mutant in tests/mutants/catalogue.py")
        return source.replace(self.old, self.new)


class StaleMutant(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Outcome:
    mutant: Mutant
    killed: bool
    returncode: int
    seconds: float
    output: str


def copy_package(into: Path) -> Path:
    """A pristine copy of the package under ``into``; returns the directory to put on ``PYTHONPATH``."""
    shutil.copytree(PACKAGE, into / "perceiver_serve", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def run_tests(site: Path, tests: Sequence[str], label: str, timeout: float = 600.0) -> tuple[int, str, float]:
    """pytest ``tests`` (stopping at the first failure) with the package imported from ``site``:
    its exit status, its output and the seconds it took."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1", "PERCEIVER_MUTANT": label}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        code, output = -1, f"timed out after {timeout:.0f} s\n{partial}"
    return code, output, time.perf_counter() - started


def run_mutant(mutant: Mutant, timeout: float = 600.0) -> Outcome:
    """Run the mutant's tests against a mutated copy; see :func:`killed`."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        site = copy_package(Path(tmp))
        target = site / "perceiver_serve" / mutant.path
        target.write_text(mutant.mutated(target.read_text(encoding="utf-8")), encoding="utf-8")
        code, output, seconds = run_tests(site, mutant.tests, mutant.name, timeout)
        return Outcome(mutant, killed(code, output), code, seconds, output)


def killed(returncode: int, output: str) -> bool:
    """pytest reported failing tests (exit 1); or it reported one (an ``F`` in its progress line)
    and the process then died of a signal, as a mutant that leaks a task can make grpc do at exit."""
    return returncode == 1 or (returncode < 0 and re.search(r"(?m)^[.sxXE]*F", output) is not None)


def skipped_here(returncode: int, output: str) -> bool:
    """Every test pytest ran was skipped (a test of kernels this CPU does not have, such as native fp16
    products): the mutant cannot be judged on this machine, only where its tests run."""
    return returncode == 0 and re.search(r"\b\d+ skipped\b", output) is not None \
        and re.search(r"\b\d+ passed\b", output) is None


def imported_from(site: Path) -> Path:
    """Where a subprocess with ``site`` on ``PYTHONPATH`` imports the package from (must be the copy)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", "import perceiver_serve; print(perceiver_serve.__file__)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return Path(out.strip())
