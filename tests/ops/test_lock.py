"""The dependency lock (requirements/*.txt) agrees with pyproject.toml.

`make lock` writes the lock from pyproject.toml; this test catches the two drifting apart: a
dependency added to one but not the other, a pin outside its range, an entry without a hash
(pip's --require-hashes would refuse the whole file), or the serving lock and the test lock
disagreeing on a version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.ops.metric_contract import REPO_ROOT

REQUIREMENTS = REPO_ROOT / "requirements"
PYPROJECT_SOURCE = "perceiver-serve (pyproject.toml)"
BUILD_SOURCE = "-r requirements/build.in"
# The platform every lock is resolved for (make lock: --python-version 3.11, x86_64 Linux).
TARGET = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


@dataclass
class Pin:
    version: str
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def read_lock(path: Path) -> dict[str, Pin]:
    """name -> pin, with its hash count and the `# via` sources uv wrote."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)", line):
            current = pins[canonicalize_name(match[1])] = Pin(match[3])
            in_via = False
        elif current is None or not line.strip():
            continue
        elif line.strip().startswith("--hash="):
            current.hashes += 1
        elif line.strip() == "# via":
            in_via = True
        elif line.strip().startswith("# via "):
            current.via.append(line.strip()[len("# via "):])
        elif in_via and line.strip().startswith("#   "):
            current.via.append(line.strip()[len("#   "):])
    return pins


def declared(pyproject: dict, extras: bool) -> list[Requirement]:
    """pyproject's requirements that apply on the lock's platform: runtime, and every extra's."""
    lists = [pyproject["project"]["dependencies"]]
    if extras:
        lists += pyproject["project"].get("optional-dependencies", {}).values()
    reqs = [Requirement(spec) for specs in lists for spec in specs]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET)]


def lock_problems(root: Path) -> list[str]:
    """Everything wrong between ``root``'s pyproject.toml and its requirements/ (empty: in agreement)."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    requirements = root / "requirements"
    problems: list[str] = []
    build = [line.strip() for line in (requirements / "build.in").read_text().splitlines() if line.strip()]
    if sorted(build) != sorted(pyproject["build-system"]["requires"]):
        problems.append(f"requirements/build.in {build} is not [build-system].requires")
    locks = {name: read_lock(requirements / f"{name}.txt")
             for name in ("dev-cpu", "serve-cpu", "dev-cuda", "serve-cuda")}
    for name, pins in locks.items():
        reqs = declared(pyproject, extras=name.startswith("dev")) + [Requirement(b) for b in build]
        direct = {canonicalize_name(r.name) for r in reqs}
        for req in reqs:
            pin = pins.get(canonicalize_name(req.name))
            if pin is None:
                problems.append(f"{name}.txt lacks {req.name}, which pyproject.toml requires")
            elif not req.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{name}.txt pins {req.name}=={pin.version}, outside pyproject's {req.specifier}")
        for package, pin in pins.items():
            if not pin.hashes:
                problems.append(f"{name}.txt: {package} has no hash")
            sources = [v for v in pin.via if not v.startswith("-c ")]
            if not sources:
                problems.append(f"{name}.txt: {package} is required by nothing in pyproject.toml")
            for source in sources:
                if source == PYPROJECT_SOURCE and package not in direct:
                    problems.append(f"{name}.txt: {package} says pyproject.toml requires it; it no longer does")
                elif source not in (PYPROJECT_SOURCE, BUILD_SOURCE) and canonicalize_name(source) not in pins:
                    problems.append(f"{name}.txt: {package} is required by {source}, which is not locked")
    for flavour in ("cpu", "cuda"):
        serve, dev = locks[f"serve-{flavour}"], locks[f"dev-{flavour}"]
        for package, pin in serve.items():
            if package in dev and dev[package].version != pin.version:
                problems.append(f"serve-{flavour}.txt pins {package}=={pin.version}, dev-{flavour}.txt "
                                f"=={dev[package].version}")
    if locks["dev-cpu"].get("torch", Pin("")).version != "2.13.0+cpu":
        problems.append("dev-cpu.txt must pin the CPU build of torch (2.13.0+cpu)")
    if read_lock(requirements / "torch-cpu.txt").get("torch") != locks["dev-cpu"].get("torch"):
        problems.append("torch-cpu.txt is not dev-cpu.txt's torch stanza")
    return problems


def test_the_lock_agrees_with_pyproject():
    assert lock_problems(REPO_ROOT) == []


def test_every_locked_package_is_pinned_with_a_hash():
    pins = read_lock(REQUIREMENTS / "dev-cpu.txt")
    assert len(pins) > 50 and all(pin.hashes for pin in pins.values())
    assert {"fastapi", "uvicorn", "h11", "httptools", "starlette", "transformers", "pytest"} <= set(pins)


@pytest.fixture()
def copy_of_repo(tmp_path: Path) -> Path:
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REQUIREMENTS, tmp_path / "requirements")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_a_dependency_added_only_to_pyproject_is_caught(copy_of_repo):
    edit(copy_of_repo / "pyproject.toml", '"numpy>=1.26,<3",', '"numpy>=1.26,<3",\n    "left-pad>=1",')
    assert any("lacks left-pad" in p for p in lock_problems(copy_of_repo))


def test_a_dependency_added_only_to_the_lock_is_caught(copy_of_repo):
    with open(copy_of_repo / "requirements" / "serve-cpu.txt", "a") as lock:
        lock.write("left-pad==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert any("left-pad is required by nothing" in p for p in lock_problems(copy_of_repo))


def test_a_dependency_removed_from_pyproject_but_still_locked_is_caught(copy_of_repo):
    edit(copy_of_repo / "pyproject.toml", '    "soundfile>=0.12",\n', "")
    assert any("soundfile says pyproject.toml requires it" in p for p in lock_problems(copy_of_repo))


def test_a_pin_outside_the_range_is_caught(copy_of_repo):
    pins = read_lock(copy_of_repo / "requirements" / "serve-cpu.txt")
    edit(copy_of_repo / "pyproject.toml", '"numpy>=1.26,<3",', f'"numpy>{pins["numpy"].version}",')
    assert any("pins numpy" in p and "outside" in p for p in lock_problems(copy_of_repo))


def test_a_missing_hash_and_a_version_split_are_caught(copy_of_repo):
    lock = copy_of_repo / "requirements" / "serve-cpu.txt"
    version = read_lock(lock)["fastapi"].version
    text = lock.read_text()
    text = re.sub(r"(fastapi==)\S+ \\\n(    --hash=\S+( \\)?\n)+", rf"\g<1>{version}.post9\n", text)
    lock.write_text(text)
    problems = lock_problems(copy_of_repo)
    assert any("fastapi has no hash" in p for p in problems)
    assert any("serve-cpu.txt pins fastapi" in p and "dev-cpu.txt" in p for p in problems)


def make_dry_run(*args: str) -> subprocess.CompletedProcess:
    """The commands `make` would run (-n: nothing runs; -B: as if nothing were installed yet)."""
    return subprocess.run(["make", "-n", "-B", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k not in ("TORCH", "MAKEFLAGS")})


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_run_installs_only_the_serving_lock_and_make_test_the_full_one():
    run = make_dry_run("run").stdout
    assert "-r requirements/serve-cpu.txt" in run and "dev-cpu" not in run
    assert "-r requirements/torch-cpu.txt" in run  # the CPU wheel, explicitly, before anything else
    assert run.index("torch-cpu.txt") < run.index("serve-cpu.txt") < run.index("--no-deps --no-build-isolation -e .")
    test = make_dry_run("test").stdout
    assert "-r requirements/dev-cpu.txt" in test and "pytest" in test
    cuda = make_dry_run("test", "TORCH=cuda").stdout
    assert "-r requirements/dev-cuda.txt" in cuda and "torch-cpu.txt" not in cuda
    wrong = make_dry_run("run", "TORCH=rocm")
    assert wrong.returncode != 0 and "TORCH must be cpu or cuda" in wrong.stderr


def test_the_installed_package_declares_ranges_not_the_lock():
    """`pip install perceiver-serve` resolves against ranges: the lock is this repository's, not the package's."""
    from importlib.metadata import requires

    declared_requirements = [Requirement(r) for r in requires("perceiver-serve") or ()]
    assert any(r.name == "torch" for r in declared_requirements)
    pinned = [str(r) for r in declared_requirements if any(s.operator == "==" for s in r.specifier)]
    assert pinned == []
