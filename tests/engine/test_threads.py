"""Only computing device workers keep OpenMP teams (see ``perceiver_serve.modeling.threads``).

libgomp stops a team's idle threads from spinning while the threads of all live teams outnumber the
CPUs, so a team left behind by a thread that computed once (the import-time kernel probes, the
thread that loaded a model, an idle model's worker) slows every other model's forward passes. The
checks count the process's OS threads against its Python threads: what is left over are native
threads, OpenMP's team threads among them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from perceiver_serve.modeling.threads import (PROCESS_THREADS, default_torch_threads, in_fresh_thread,
                                              on_own_thread, use_torch_threads)

from .test_repository import GOOD, write_model

SCRIPT = textwrap.dedent("""
    import asyncio, json, os, sys, threading, time

    import torch

    def native():  # OS threads that are not Python threads: torch's own, and OpenMP teams
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    torch.get_num_threads()
    report = {"after_torch": native()}
    from perceiver_serve.engine import batcher as batching
    from perceiver_serve.engine import ModelRegistry, ModelRepository
    from perceiver_serve.modeling import ByteTokenizer
    from perceiver_serve.modeling.threads import serve_single_threaded
    from perceiver_serve.tasks import TASKS
    report["after_import"] = native()
    serve_single_threaded()
    batching.RENEW_AFTER_S = 0.1
    registry = ModelRegistry(ModelRepository.scan(sys.argv[1], TASKS), progress=lambda message: None)
    registry.load_all()
    texts = [ByteTokenizer().encode(f"teams {i} " * 3) for i in range(4)]
    workers = {}

    async def ask(name):
        answers = await registry.get(name).batcher.submit_all(texts)
        workers.setdefault(name, []).append(
            [(t.name, t.ident) for t in threading.enumerate() if t.name == f"device-worker:{name}"])
        return answers

    def logits(answers):
        return [[round(float(x), 5) for x in answer] for answer in answers]

    first = {name: logits(asyncio.run(ask(name))) for name in ("a", "b")}
    report["threads_per_instance"] = [registry.get(name).batcher.threads for name in ("a", "b")]
    report["after_work"] = native()
    deadline = time.monotonic() + 20
    while native() > report["after_import"] and time.monotonic() < deadline:
        time.sleep(0.05)
    report["after_idle"] = native()
    again = {name: logits(asyncio.run(ask(name))) for name in ("a", "b")}
    report["same_answers"] = first == again
    report["workers"] = workers
    registry.stop()
    print(json.dumps(report))
""")


def test_import_and_idle_models_leave_no_openmp_team(tmp_path, text_checkpoint):
    for name in ("a", "b"):
        write_model(tmp_path, name, GOOD, text_checkpoint)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["threads_per_instance"] == [2, 2]
    # Importing the server computes its kernel probes on threads that end: no team is left.
    assert report["after_import"] == report["after_torch"], report
    # Two models computed on two threads each: their teams exist while they work...
    assert report["after_work"] >= report["after_import"] + 1, report
    # ...and end once they fall idle: each worker handed its work to a new thread and ended.
    assert report["after_idle"] == report["after_import"], report
    for name in ("a", "b"):
        (before,), (after,) = report["workers"][name]
        assert before[0] == after[0] == f"device-worker:{name}" and before[1] != after[1], report["workers"]
    assert report["same_answers"]


def test_a_thread_sets_its_own_count_and_leaves_later_threads_theirs():
    default = default_torch_threads()
    seen = {}

    def worker() -> None:
        use_torch_threads(default + 1)
        seen["own"] = torch.get_num_threads()
        seen["later"] = on_own_thread(torch.get_num_threads)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"own": default + 1, "later": default}
    assert default_torch_threads() == default


def test_in_fresh_thread_runs_with_the_process_threads_and_hands_back_result_or_error():
    main = threading.get_ident()
    ident, threads = in_fresh_thread(lambda: (threading.get_ident(), torch.get_num_threads()))
    assert ident != main and threads == PROCESS_THREADS
    with pytest.raises(ZeroDivisionError):
        in_fresh_thread(lambda: 1 / 0)
