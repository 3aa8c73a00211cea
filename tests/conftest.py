import os

import httpx
import pytest

from .support import grpc_channel, running

# Tests run on small CPUs next to other work: keep torch to the cores we have, deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# Under `make mutants` (tests/mutants) a failure is the expected outcome: report the first
# failing example without shrinking it, and keep it out of hypothesis' example database.
if os.environ.get("PERCEIVER_MUTANT"):
    from hypothesis import Phase, settings

    settings.register_profile("mutants", phases=(Phase.explicit, Phase.generate), database=None)
    settings.load_profile("mutants")


# -- one real process for the suite: `perceiver-serve serve` with REST and gRPC on the demo models --
# (what a user runs; the tests that compare answers with direct computations use tests/reactive.py)

@pytest.fixture(scope="session")
def process():
    with running(grpc=True) as proc:
        yield proc


@pytest.fixture(scope="session")
def rest(process):
    with httpx.Client(base_url=process.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def channel(process):
    with grpc_channel(process.grpc_port) as ch:
        yield ch


def pytest_collection_modifyitems(config, items):
    """``gpu``-marked tests run only where CUDA is available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
