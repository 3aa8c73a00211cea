"""A real server whose model computes in worker processes (model.toml ``worker = "process"``)."""

import os
import re
import time

import httpx
import psutil

from ..support import REPO, running


def test_a_server_answers_from_worker_processes_and_ends_them_when_it_stops(tmp_path):
    toml = (REPO / "models" / "text-sentiment" / "model.toml").read_text()
    toml = toml.replace('source = "checkpoint"', f'source = "{REPO / "models" / "text-sentiment" / "checkpoint"}"')
    toml = re.sub(r"\n\[batching\]", '\ninstances = 2\nthreads = 1\nworker = "process"\n\n[batching]', toml, count=1)
    (tmp_path / "sentiment").mkdir()
    (tmp_path / "sentiment" / "model.toml").write_text(toml)
    with running(repository=tmp_path) as server:
        info = httpx.get(f"{server.url}/models/sentiment").json()
        assert (info["worker"], info["instances"]) == ("process", 2), info
        pids = info["worker_pids"]
        children = {child.pid for child in psutil.Process(server.process.pid).children()}
        assert set(pids) <= children and len(set(pids)) == 2
        answers = httpx.post(f"{server.url}/classify/text",
                             json={"texts": ["I loved this film, it was wonderful.", "I hated it, an awful film."]})
        assert answers.status_code == 200, answers.text
        top = [result["predictions"][0]["label"] for result in answers.json()["results"]]
        assert top == ["positive", "negative"]
        bad = httpx.post(f"{server.url}/classify/text", json={"texts": [""]})
        assert bad.status_code == 400  # refused in the server process, before any worker sees it
    deadline = time.monotonic() + 20
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids):
        assert time.monotonic() < deadline, "worker processes outlived their server"
        time.sleep(0.1)
    assert os.getpid() not in pids
