"""worker = "process": a model instance computing in a process of its own (engine/worker_process.py)."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from perceiver_serve.engine import DynamicBatcher
from perceiver_serve.engine.batcher import is_out_of_memory
from perceiver_serve.engine.repository import BatchingConfig
from perceiver_serve.engine.worker_process import ProcessRunner, WorkerSetup, dumps
from perceiver_serve.errors import InferenceFailed, InvalidInput

from .worker_runners import Probe


def setup_for(checkpoint, **changes):
    fields = dict(name="probe", checkpoint=checkpoint, device="cpu", dtype="float32", compile=False, runner=Probe,
                  options=None, threads=1, max_batch_size=4)
    return WorkerSetup(**{**fields, **changes})


@pytest.fixture
def worker(text_checkpoint):
    runner = ProcessRunner(setup_for(text_checkpoint), progress=lambda message: None)
    runner.start()
    yield runner
    runner.close()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_batches_run_in_the_worker_process(worker):
    assert worker.facts.precision == "float32" and worker.facts.compiled is False
    answers = worker.run(["a", "b"])
    assert answers == [(worker.pid, "a"), (worker.pid, "b")]
    assert worker.pid != os.getpid() and alive(worker.pid)


def test_a_worker_that_dies_fails_its_batch_and_the_next_batch_starts_another(worker):
    first = worker.pid
    with pytest.raises(InferenceFailed, match=r"exited while computing a batch of 1 \(exit code 3\)"):
        worker.run(["exit"])
    assert not alive(first)
    ((pid, payload),) = worker.run(["after"])
    assert payload == "after" and pid == worker.pid != first and worker.starts == 2
    os.kill(pid, signal.SIGKILL)  # killed while idle: found dead before the next batch is sent
    time.sleep(0.2)
    ((again, _),) = worker.run(["again"])
    assert again not in (first, pid) and worker.starts == 3


def test_errors_come_back_as_the_worker_raised_them(worker):
    with pytest.raises(InvalidInput, match="the probe refuses this payload") as caught:
        worker.run(["invalid"])
    assert caught.value.code == "probe_refused"
    assert any("in the worker process" in note for note in caught.value.__notes__)
    with pytest.raises(torch.OutOfMemoryError) as caught:
        worker.run(["oom-if-batched", "x"])
    assert is_out_of_memory(caught.value)
    assert worker.run(["still"]) == [(worker.pid, "still")]  # the same process serves on


async def test_the_batcher_splits_a_batch_its_worker_process_had_no_memory_for(text_checkpoint):
    runner = ProcessRunner(setup_for(text_checkpoint), progress=lambda message: None)
    limits = BatchingConfig(max_batch_size=4, max_delay_ms=200, max_queue=16, timeout_ms=30000)
    batcher = DynamicBatcher("probe", Probe(None, None), limits, executors=[runner])
    batcher.start(warm_up=lambda executor: executor.start())
    try:
        payloads = ["oom-if-batched", "b", "c", "d"]
        answers = await asyncio.gather(*(batcher.submit(p) for p in payloads))
        assert {pid for pid, _ in answers} == {runner.pid} != {os.getpid()}  # computed there, every one
    finally:
        batcher.stop()
    assert [payload for _, payload in answers] == payloads
    # The batch of 4 failed; of its halves, ["c", "d"] ran, and ["oom-if-batched", "b"] failed and ran as two.
    assert batcher.forward_passes == 1 + 2 + 2
    assert runner.pid is None  # the worker process ended with its thread


def test_a_worker_whose_model_cannot_load_says_why(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["PerceiverForSequenceClassification"]}')
    runner = ProcessRunner(setup_for(tmp_path), progress=lambda message: None)
    with pytest.raises(Exception, match="no weights|weights") as caught:
        runner.start()
    assert not isinstance(caught.value, InferenceFailed)  # the loader's own words, not "it exited"
    assert runner.pid is None


def test_a_worker_ends_when_closed_and_when_its_server_process_dies(worker, text_checkpoint):
    pid = worker.pid
    worker.close()
    assert not alive(pid) and worker.pid is None

    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from perceiver_serve.engine.worker_process import ProcessRunner
        from tests.engine.test_worker_process import setup_for
        runner = ProcessRunner(setup_for(Path({str(text_checkpoint)!r})), progress=lambda message: None)
        runner.start()
        print(runner.pid, flush=True)
        os._exit(0)  # no close(): the server process is gone
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    orphan = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 20
    while alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(orphan)


@pytest.mark.parametrize("value", [
    torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),  # not contiguous
    torch.randn(2, 3).to(torch.bfloat16),
    torch.zeros(0, 5, dtype=torch.int64),
    torch.tensor(7, dtype=torch.uint8),
])
def test_tensors_cross_the_pipe_unchanged(value):
    import pickle

    message = {"payload": [value, np.arange(3)], "label": "x"}
    got = pickle.loads(dumps(message))
    assert got["payload"][0].dtype == value.dtype and got["payload"][0].shape == value.shape
    assert torch.equal(got["payload"][0], value)
    np.testing.assert_array_equal(got["payload"][1], np.arange(3))
