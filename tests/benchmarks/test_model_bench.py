"""The model benchmark cannot rot: a --quick run produces every artefact with sane numbers."""

import json
import math
import shutil

import pytest
import torch

from benchmarks.flow_tiling import tile_origins, tile_weights, tiled_flow
from benchmarks.measure import FlopCounter
from benchmarks.model_bench import CASES

from . import run_quick


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run_quick("benchmarks.run", out).stdout


def test_quick_run_reports_every_case(quick_run):
    out, stdout = quick_run
    payload = json.loads((out / "results.json").read_text())
    assert payload["quick"] is True
    assert all(v > 0 for v in payload["matmul_peak_gflops"].values())
    assert payload["environment"]["torch_threads"] == 2
    assert [r["case"] for r in payload["results"]] == [c.name for c in CASES]
    for r in payload["results"]:
        for impl in ("ref", "ours"):
            assert r[impl]["median_s"] > 0 and r[impl]["spread_s"] >= 0, r["case"]
        assert math.isfinite(r["speedup"]) and r["speedup"] > 0
        assert r["ref_max_abs"] > 1e-6, f"{r['case']}: degenerate reference output"
        if r["ours_dtype"] == "float32":
            assert r["max_abs_diff"] <= 1e-4, r["case"]
        else:
            assert r["argmax_agreement"] >= 0.9, r["case"]
        assert set(r["met"]) <= set(r["target"]), r["case"]
        assert f"`{r['case']}`" in (out / "results.md").read_text()
        assert r["case"] in stdout
    clip = next(r for r in payload["results"] if r["case"] == "multimodal-clip")
    assert 0 < clip["ours"]["marks_s"]["first_chunk"] < clip["ours"]["median_s"]


def test_quick_run_probes_memory_where_it_is_a_target(quick_run):
    out, _ = quick_run
    flow = next(r for r in json.loads((out / "results.json").read_text())["results"] if r["case"] == "flow-368x496")
    for impl in ("ref", "ours"):
        probe = flow[impl]
        assert 0 < probe["base_rss_mb"] <= probe["peak_rss_mb"] < 16_000
        assert probe["flops"] > 0 and probe["gflops"] > 0 and probe["pct_of_peak"] > 0
    assert flow["memory_ratio"] == pytest.approx(flow["ref"]["peak_rss_mb"] / flow["ours"]["peak_rss_mb"])
    assert "memory" in flow["met"]


def test_quick_run_writes_table_and_charts(quick_run):
    out, _ = quick_run
    table = (out / "results.md").read_text()
    assert "| case | transformers | ours | ratio |" in table
    for chart in ("latency_ratio.png", "peak_memory.png", "throughput.png"):
        data = (out / chart).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, chart


def test_update_measures_named_cases_again_and_keeps_the_rest(quick_run, tmp_path):
    out, _ = quick_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    before = {r["case"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}
    run_quick("benchmarks.run", tmp_path, "--update", "--cases", "text-short", "--no-memory")
    after = json.loads((tmp_path / "results.json").read_text())
    rows = {r["case"]: r for r in after["results"]}
    assert list(rows) == list(before)  # same cases, same order
    assert rows["text-short"]["measured"] > before["text-short"]["measured"]
    assert all(rows[name] == before[name] for name in rows if name != "text-short")
    assert after["updated"] and "`text-short` measured again" in (tmp_path / "results.md").read_text()


def test_tiles_cover_sintel_frames_as_deepmind_does():
    assert tile_origins(436, 1024, (368, 496)) == [(0, 0), (0, 476), (0, 528), (68, 0), (68, 476), (68, 528)]
    assert tile_origins(368, 496, (368, 496)) == [(0, 0)]
    for y, x in tile_origins(500, 700, (368, 496)):
        assert 0 <= y <= 500 - 368 and 0 <= x <= 700 - 496
    with pytest.raises(ValueError):
        tile_origins(300, 496, (368, 496))


def test_tile_weights_fall_off_towards_the_border():
    w = tile_weights((6, 8))
    assert w[0, 0] == 1 and w[0].tolist() == [1, 1, 1, 1, 1, 1, 1, 1]
    assert w[2, 3] == 3 and w.max() == 3 and torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))


def test_tiled_flow_of_a_constant_field_is_that_constant():
    frames = torch.zeros(2, 30, 41, 3, dtype=torch.uint8)
    flow = tiled_flow(frames, lambda p: torch.full((1, *p.shape[-2:], 2), 2.5), (24, 32), min_overlap=20)
    assert flow.shape == (30, 41, 2) and torch.allclose(flow, torch.full_like(flow, 2.5))


@pytest.mark.parametrize("inference", [True, False])
def test_flop_counter_counts_products_convolutions_and_fused_attention(inference):
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    with torch.inference_mode(inference), FlopCounter() as counter:
        a @ b
        torch.nn.functional.linear(a, b.t(), torch.zeros(4))
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
        torch.nn.functional.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3))
    assert counter.flops == 2 * (2 * 8 * 16 * 4) + 2 * 2 * 5 * 7 * (8 + 8) + 2 * (4 * 6 * 6) * 27


def test_device_option_refuses_cuda_where_there_is_none_and_moves_nested_inputs(capsys):
    from benchmarks.run import main, to_device

    with pytest.raises(SystemExit) as exited:
        main(["--quick", "--device", "cuda", "--cases", "text-short"])
    assert exited.value.code == 2 and "CUDA is not available here" in capsys.readouterr().err
    moved = to_device({"ids": torch.ones(2), "pair": (torch.zeros(1), 3), "chunks": 8}, "meta")
    assert moved["ids"].is_meta and moved["pair"][0].is_meta and moved["pair"][1] == 3 and moved["chunks"] == 8
