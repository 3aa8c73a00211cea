"""Structured logs: one JSON object per line, carrying the request id the client sees."""

import json

import httpx

from ..support import ServerProcess


def test_json_logs_carry_the_request_id():
    with ServerProcess("--log-format", "json") as proc:
        proc.wait()
        r = httpx.post(proc.url + "/classify/text", json={"text": "log me"}, headers={"x-request-id": "trace-7"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-7"
        generated = httpx.post(proc.url + "/classify/text", json={"text": ""}).headers["x-request-id"]
        assert proc.stop() == 0
        lines = [json.loads(line) for line in proc.logs().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "perceiver_serve.access"]
    mine = next(line for line in access if line.get("request_id") == "trace-7")
    assert mine["status"] == 200 and mine["model"] == "text-sentiment" and mine["protocol"] == "rest"
    failed = next(line for line in access if line.get("request_id") == generated)
    assert failed["status"] == 400
    assert any("ready on cpu" in line["message"] for line in lines)  # model loading shows progress
