"""The variant harnesses cannot rot: quick runs of benchmarks.variants (ours in every precision beside
transformers and ONNX Runtime) and benchmarks.served_ratio (served against isolated throughput)."""

import json

import pytest
import torch

from benchmarks import served_ratio

from . import run_quick

ROWS = ["transformers fp32", "ours fp32", "ours bf16", "ours int8", "onnxruntime fp32", "onnxruntime int8"]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    run_quick("benchmarks.variants", out, "--models", "text-classifier", "--rows", ",".join(ROWS), "--reps", "1")
    return json.loads((out / "variants.json").read_text()), (out / "variants.md").read_text()


def test_every_row_is_timed_and_compared_with_transformers(variants):
    payload, markdown = variants
    (result,) = payload["results"]
    assert [r["row"] for r in result["rows"]] == ROWS
    assert result["sets"] == ["batch 16", "batch 1"]
    for row in result["rows"]:
        assert all(row[name]["items_per_s"] > 0 for name in result["sets"]), row["row"]
        assert row["agreement_rows"] == 16
    by_row = {r["row"]: r for r in result["rows"]}
    assert by_row["transformers fp32"]["max_abs_diff"] == 0
    for exact in ("ours fp32", "onnxruntime fp32"):  # the same float32 computation, up to rounding
        assert by_row[exact]["max_abs_diff"] < 1e-4 and by_row[exact]["argmax_agreement"] == 1.0
    for reduced in ("ours bf16", "ours int8", "onnxruntime int8"):
        assert by_row[reduced]["argmax_agreement"] >= 0.9 and by_row[reduced]["max_abs_diff"] > 0
    assert payload["environment"]["cpu_features"] in markdown  # every result names the CPU's features
    assert "vs ORT int8" in markdown


def test_served_ratio_quick(tmp_path):
    run_quick("benchmarks.served_ratio", tmp_path, "--variants", "fp32,int8-x2p", "--rounds", "1", "--levels", "1,32")
    result = json.loads((tmp_path / "served_ratio.json").read_text())
    assert result["server_exit_code"] == 0
    assert [(r["variant"], r["concurrency"]) for r in result["rows"]] == [
        ("fp32", 1), ("fp32", 32), ("int8-x2p", 1), ("int8-x2p", 32)]  # int8-x2p: worker processes
    for row in result["rows"]:
        assert row["failed"] == 0 and row["served_median"] > 0 and row["isolated"] > 0
        assert row["ratio"] == pytest.approx(row["served_median"] / row["isolated"])
        assert row["served_cpu_ms_per_request"] > 0 and row["isolated_cpu_ms_per_item"] > 0
        assert row["loadgen_cpu_ms_per_request"] > 0
        assert set(row["vs_peers"]) == set(served_ratio.PEERS.values())  # transformers and ONNX Runtime
        for label, levels in result["peers"].items():
            peer = next(b for b in levels if b["concurrency"] == row["concurrency"])
            assert peer["failed"] == 0 and peer["served_median"] > 0
            assert row["vs_peers"][label] == pytest.approx(row["served_median"] / peer["served_median"])
    markdown = (tmp_path / "served_ratio.md").read_text()
    assert "served / isolated" in markdown
    assert all(f"vs {label}" in markdown for label in served_ratio.PEERS.values())


def test_onnx_runtime_baseline_answers_as_transformers(tmp_path):
    """The ONNX Runtime peers serve the same checkpoint: the same top label as the transformers one, and
    probabilities within float rounding (fp32) or int8's error."""
    from fastapi.testclient import TestClient

    from benchmarks.baseline_server import create_app
    from benchmarks.checkpoints import checkpoint_dir
    from benchmarks.configs import classifier_spec

    checkpoint = checkpoint_dir(classifier_spec(quick=True))
    texts = ["I loved it", "a longer text, with a few more bytes in it " * 3, "Grüße 👍"]
    answers = {}
    for engine in ("transformers", "onnxruntime", "onnxruntime-int8"):
        with TestClient(create_app(checkpoint, engine)) as client:
            answers[engine] = [client.post("/classify/text", json={"text": t, "top_k": 3}).json()["results"][0]
                               ["predictions"] for t in texts]
            assert client.post("/classify/text", json={"text": ""}).status_code == 400
    for reference, fp32, int8 in zip(*answers.values()):
        assert [p["label"] for p in fp32] == [p["label"] for p in reference]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(fp32, reference)) < 1e-4
        assert int8[0]["label"] == reference[0]["label"] or reference[0]["score"] - reference[1]["score"] < 0.05


def test_each_row_is_timed_after_a_quiet_pause(monkeypatch):
    """Idle threads of the row before (ONNX Runtime's spinning pool, OpenMP's) must not share the
    cores with the row being timed: every timed row starts after ``pause`` seconds of sleep."""
    from benchmarks import variants as harness

    events: list[str] = []

    def row(name):
        def run(batch):
            events.append(name)
            return torch.zeros(batch[0].shape[0], 3)
        return run

    monkeypatch.setattr(harness, "implementations", lambda *args: {"a": row("a"), "b": row("b")})
    monkeypatch.setattr(harness.time, "sleep", lambda seconds: events.append(f"sleep {seconds}"))
    harness.run_workload(harness.WORKLOADS["text-classifier"], True, ["a", "b"], 2, 1, lambda _: None, pause=0.3)
    timed = events[events.index("sleep 0.3"):]  # after the agreement set and warm-up
    runs = [i for i, e in enumerate(timed) if not e.startswith("sleep") and (i == 0 or timed[i - 1] != e)]
    assert runs and all(timed[i - 1] == "sleep 0.3" for i in runs)
    assert timed.count("sleep 0.3") == 2 * 2 * 2  # reps × sets × rows
