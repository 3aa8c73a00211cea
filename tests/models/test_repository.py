"""The model repository: valid ``model.toml`` files, one default per task, small reproducible demos."""

import collections
import json
import re
import sys

import pytest

from .repository import (
    REPOSITORY, TASK_ARCHITECTURES, checkpoint_of, demo_folders, load_script, model_folders, random_folders,
    TRAIN_SCRIPT, read_toml, trained_folders,
)

#: Bound on a demo checkpoint directory: small enough to commit.
MAX_CHECKPOINT_BYTES = 12_000_000

BATCHING = ("max_batch_size", "max_delay_ms", "max_queue", "timeout_ms")

#: Options each task requires (all positive integers).
TASK_OPTIONS = {
    "text-classification": set(),
    "fill-mask": set(),
    "image-classification": set(),
    "optical-flow": {"tile_overlap", "decode_chunk"},
    "video-autoencoding": {"chunks_per_window", "sample_rate", "fps"},
}


def _config(folder):
    return json.loads((checkpoint_of(folder) / "config.json").read_text())


def _ids(folder):
    return folder.name


def test_every_task_has_one_default_model():
    defaults = collections.Counter(read_toml(f)["task"] for f in model_folders() if read_toml(f).get("default"))
    assert defaults == dict.fromkeys(TASK_ARCHITECTURES, 1)


def test_every_demo_model_is_either_trained_or_random():
    trained, random = {f.name for f in trained_folders()}, {f.name for f in random_folders()}
    assert not trained & random
    assert trained | random == set(load_script(TRAIN_SCRIPT).TRAINERS)


def test_demo_models_cover_every_task():
    assert sorted(read_toml(folder)["task"] for folder in demo_folders()) == sorted(TASK_ARCHITECTURES)


@pytest.mark.parametrize("folder", model_folders(), ids=_ids)
def test_model_toml_is_valid(folder):
    spec = read_toml(folder)
    assert set(spec) - {"default"} == {"task", "source", "device", "dtype", "batching", "options"}
    assert type(spec.get("default", False)) is bool
    assert spec["task"] in TASK_ARCHITECTURES
    assert re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec["device"])
    assert spec["dtype"] in ("float32", "bfloat16", "float16")
    assert set(spec["batching"]) == set(BATCHING)
    assert all(type(spec["batching"][k]) is int and spec["batching"][k] > 0 for k in BATCHING)
    assert TASK_OPTIONS[spec["task"]] <= set(spec["options"])
    assert all(type(v) is int and v > 0 for v in spec["options"].values())
    if not spec["source"].startswith("hf://"):
        assert _config(folder)["architectures"][0] in TASK_ARCHITECTURES[spec["task"]]


@pytest.mark.parametrize("folder", demo_folders(), ids=_ids)
def test_demo_checkpoint_is_small_hf_layout(folder):
    checkpoint = checkpoint_of(folder)
    assert checkpoint.resolve().parent == folder.resolve()
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "model.safetensors"]
    assert sum(p.stat().st_size for p in checkpoint.iterdir()) <= MAX_CHECKPOINT_BYTES


def test_demo_options_agree_with_the_checkpoints():
    by_task = {read_toml(folder)["task"]: folder for folder in demo_folders()}
    flow = by_task["optical-flow"]
    assert read_toml(flow)["options"]["tile_overlap"] < min(_config(flow)["train_size"])
    video = by_task["video-autoencoding"]
    options, config = read_toml(video)["options"], _config(video)
    assert options["sample_rate"] == options["fps"] * config["audio_samples_per_frame"]
    image_points = config["output_shape"][1] * config["output_shape"][2] * config["output_shape"][3]
    assert image_points % options["chunks_per_window"] == 0
    for task in ("text-classification", "fill-mask"):  # 2046 bytes of text, as the official model
        assert _config(by_task[task])["max_position_embeddings"] == 2048


def test_regenerating_gives_identical_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # the generator must not need it
    load_script().main(["--out", str(tmp_path)])
    assert len(capsys.readouterr().out.splitlines()) == len(random_folders())
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(REPOSITORY) for f in random_folders() for p in f.rglob("*") if p.is_file())
    assert written == committed
    for path in written:
        assert (tmp_path / path).read_bytes() == (REPOSITORY / path).read_bytes(), path


@pytest.mark.parametrize("folder", trained_folders(), ids=_ids)
def test_trained_model_has_a_model_card(folder):
    card = (folder / "README.md").read_text()
    assert "demo model" in card and "## Held-out results" in card and "## Limits" in card
