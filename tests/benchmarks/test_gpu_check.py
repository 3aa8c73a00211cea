"""scripts/gpu_check.sh where there is no GPU: it parses, refuses to run without CUDA before
writing anything, and the steps it delegates to Python work (repository, readiness wait, the
load generator's arguments, the gpu-marked tests it selects)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check, loadgen
from perceiver_serve.engine import ModelRepository
from perceiver_serve.tasks import TASKS

from . import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_the_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_it_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([str(SCRIPT), str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert done.returncode == 2 and "no CUDA device" in done.stderr
    assert not out.exists()


def test_the_server_repository_is_valid(tmp_path):
    root = gpu_check.repository(tmp_path / "repository", "cpu", "auto", quick=True)
    repository = ModelRepository.scan(root, TASKS)
    assert not repository.problems
    assert {(s.name, s.task, s.device, s.dtype) for s in repository.specs} == {
        ("text-mid", "text-classification", "cpu", "auto"), ("image", "image-classification", "cpu", "auto"),
        ("flow", "optical-flow", "cpu", "auto")}
    assert all(s.batching.max_batch_size == 64 for s in repository.specs)


def test_wait_ready_gives_up_on_a_server_that_never_answers():
    assert gpu_check.main(["wait-ready", f"http://127.0.0.1:{gpu_check.free_port()}", "1.5"]) == 1


def test_every_load_generator_sweep_in_the_script_parses():
    text = SCRIPT.read_text()
    sweeps = re.findall(r'"(\w+) ([\w-]+) \d+ (--levels [^"]+)"', text)
    assert [s[0] for s in sweeps] == ["text", "image", "flow"]
    for endpoint, model, extra in sweeps:
        assert model in gpu_check.SERVED
        args = loadgen.parser().parse_args(["sweep", "--endpoint", endpoint, "--target", f"cuda=http://127.0.0.1:8000#{model}",
                                            "--requests", "5000", "--duration", "3", *extra.split()])
        assert max(args.levels) == 64


def test_the_gpu_tests_it_runs_exist_and_are_marked():
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/modeling/test_cuda.py", "-m", "gpu", "--collect-only",
                           "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert any("test_fused_attention_at_every_official_geometry" in c and "bfloat16" in c for c in collected)
    assert {dtype for dtype in ("float32", "bfloat16", "float16")
            if any("test_cuda_matches_transformers" in c and dtype in c for c in collected)} == {
        "float32", "bfloat16", "float16"}
    assert shutil.which("timeout"), "the script bounds every step with coreutils' timeout"
