"""The server benchmark cannot rot: a --quick run starts every server, checks every answer, writes every artefact."""

import json

import pytest

from . import run_quick


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("server-bench")
    progress = run_quick("benchmarks.server_bench", out).stderr
    return out, json.loads((out / "server.json").read_text()), progress


def test_every_level_answered_with_batching_visible(quick_run):
    _, payload, progress = quick_run
    assert payload["quick"] is True
    assert set(payload["sweeps"]) == {"text", "image", "flow"}
    for endpoint, sweep in payload["sweeps"].items():
        labels = {"on", "off", "baseline"} if endpoint == "text" else {"on", "off"}
        assert set(sweep["results"]) == labels
        for label, levels in sweep["results"].items():
            assert [r["concurrency"] for r in levels] == sweep["levels"] == [1, 4]
            for r in levels:
                where = f"{endpoint}/{label}/c={r['concurrency']}"
                assert r["failed"] == 0 and r["errors"] == {}, where
                assert r["ok"] == r["requests"] > 0 and r["throughput_rps"] > 0, where
                lat = r["latency_ms"]
                assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], where
                if label == "baseline":
                    assert r["mean_batch_size"] is None  # it has no metrics: one request per forward pass
                else:
                    assert r["forward_passes"] > 0, where
                    assert r["mean_batch_size"] >= 1, where
                if label == "off":
                    assert r["mean_batch_size"] == 1, where
        assert f"{endpoint} " in progress
    assert payload["server_exit_codes"]["on"] == payload["server_exit_codes"]["off"] == 0


def test_headline_and_overhead_reported(quick_run):
    out, payload, _ = quick_run
    head = payload["headline"]
    (row,) = head["levels"]  # --quick: concurrency 1 and 4, the headline at the largest
    assert row["concurrency"] == 4
    assert row["on_vs_off"] == pytest.approx(row["throughput_rps"]["on"] / row["throughput_rps"]["off"])
    assert row["on_vs_baseline"] > 0 and set(head["met"]) == {"on_vs_off", "on_vs_baseline"}
    assert payload["model_batch_scaling"]["batch16_vs_batch1"] > 0
    over = payload["overhead"]["latency_ms"]
    assert set(over) == {"rest_classify", "grpc_classify", "rest_rejected", "grpc_rejected"}
    for name, r in over.items():
        assert r["failed"] == 0 and r["requests"] == 30 and r["p50"] > 0, name
    markdown = (out / "server.md").read_text()
    for heading in ("## Headline", "## text", "## image", "## flow", "## Per-request overhead", "## Environment"):
        assert heading in markdown
    assert "on / baseline" in markdown and "NaN" not in markdown
    for png in ("server_throughput.png", "server_latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 10_000


def test_baseline_tokenises_like_perceiver_serve():
    transformers = pytest.importorskip("transformers")
    from perceiver_serve.modeling import ByteTokenizer

    text = "Grüße, ça va? 👍"
    assert transformers.PerceiverTokenizer()(text)["input_ids"] == ByteTokenizer().encode(text)


def test_served_throughput_beside_the_isolated_model(quick_run):
    out, payload, _ = quick_run
    rows = payload["served_ratio"]["rows"]
    assert {r["variant"] for r in rows} == {"fp32", "int8-x2"} and {r["concurrency"] for r in rows} == {16, 32}
    assert all(r["failed"] == 0 and r["ratio"] > 0 for r in rows)
    assert "served / isolated" in (out / "server.md").read_text()
