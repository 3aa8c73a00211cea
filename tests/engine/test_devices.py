"""Device placement and the worker's device work, on this CPU: the CUDA calls are never reached,
``auto`` falls back loudly where CUDA should have worked, ``--require-gpu`` stops the process,
warm-up runs on the worker thread (a video model decodes in it), TF32 is a per-model choice."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest
import torch

from perceiver_serve.engine import ModelRegistry, ModelRepository
from perceiver_serve.engine.devices import WorkerStream, configure_tf32, resolve_device
from perceiver_serve.server import EXIT_NO_GPU
from perceiver_serve.tasks import TASKS
from perceiver_serve.tasks.video import VideoRunner

from ..models.repository import REPOSITORY


def test_a_cpu_worker_never_touches_cuda(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CPU worker called into torch.cuda")

    for name in ("set_device", "Stream", "stream", "empty_cache", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    stream = WorkerStream("cpu")
    stream.bind()
    with stream.running():
        torch.ones(2).sum()
    stream.synchronize()
    stream.release_cached_memory()


def test_auto_on_a_cpu_build_is_the_cpu_with_the_reason():
    placement = resolve_device("auto")
    assert placement.device == "cpu" and "no CUDA support" in placement.fallback
    assert resolve_device("cpu").fallback is None
    with pytest.raises(RuntimeError, match="'cuda:1' is not available .*no CUDA support"):
        resolve_device("cuda:1")


def test_auto_on_a_cuda_build_whose_driver_fails_warns(monkeypatch, caplog):
    """What a GPU node with a mismatched driver looks like to torch: CUDA built in, init fails."""
    def init():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040)")

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "init", init)
    with caplog.at_level(logging.INFO, logger="perceiver_serve.engine.devices"):
        placement = resolve_device("auto")
    assert placement.device == "cpu" and "driver on your system is too old" in placement.fallback
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "falls back to the CPU" in record.getMessage()


def _repository(tmp_path, *folders: tuple[str, str]):
    """A repository of demo models (name, device); checkpoints linked, not copied."""
    for name, device in folders:
        target = tmp_path / name
        target.mkdir()
        (target / "checkpoint").symlink_to(REPOSITORY / name / "checkpoint")
        text = (REPOSITORY / name / "model.toml").read_text().replace('device = "auto"', f'device = "{device}"')
        (target / "model.toml").write_text(text)
    return tmp_path


def test_require_gpu_exits_non_zero_when_a_gpu_model_lands_on_the_cpu(tmp_path):
    root = _repository(tmp_path, ("text-sentiment", "cpu"), ("image-classifier", "auto"))
    done = subprocess.run([sys.executable, "-m", "perceiver_serve.cli", "--model-repository", str(root),
                           "--http-port", "0", "--grpc-port", "-1", "--require-gpu"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_NO_GPU, done.stderr
    assert "image-classifier" in done.stderr and "text-sentiment" not in done.stderr
    assert "no CUDA support" in done.stderr


def test_models_shows_the_fallback_and_warm_up_decodes_video_on_the_worker_thread(tmp_path, monkeypatch):
    threads = []
    real_run = VideoRunner.run

    def run(self, payloads):
        threads.append((threading.current_thread().name, type(payloads[0]).__name__, payloads[0].__dict__.get("label")))
        return real_run(self, payloads)

    monkeypatch.setattr(VideoRunner, "run", run)
    registry = ModelRegistry(ModelRepository.scan(_repository(tmp_path, ("video-autoencoder", "auto")), TASKS))
    registry.load_all()
    try:
        served = registry.get("video-autoencoder")
        assert served.state == "ready", served.reason
        info = served.describe()
        assert (info["device"], info["requested_device"], "tf32" in info) == ("cpu", "auto", False)
        assert "no CUDA support" in info["device_fallback"]
        assert threads == [("device-worker:video-autoencoder", "EncodeWindow", None),
                           ("device-worker:video-autoencoder", "DecodeChunk", False),
                           ("device-worker:video-autoencoder", "DecodeChunk", True)]
        assert served.runner.decoded_chunks == 2
    finally:
        registry.stop()


def test_tf32_is_on_only_when_every_gpu_model_asks(caplog):
    try:
        assert configure_tf32({"a": True, "b": True})
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        with caplog.at_level(logging.WARNING):
            assert not configure_tf32({"a": True, "b": False})
        assert "models a ask for it, but b do not" in caplog.text
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert not configure_tf32({})
    finally:
        configure_tf32({})


def test_a_windows_decode_chunks_reuse_one_latents_tensor(monkeypatch):
    """The model's memo of prepared latents goes by tensor identity (no device sync), so the
    runner hands it the same stacked tensor for every chunk of the same windows."""
    from perceiver_serve.modeling import load_model
    from perceiver_serve.tasks.video import DecodeChunk, VideoOptions

    model = load_model(REPOSITORY / "video-autoencoder" / "checkpoint")
    runner = VideoRunner(model, VideoOptions())
    seen = []
    real_decode = model.decode
    monkeypatch.setattr(model, "decode", lambda latents, *a, **k: seen.append(latents) or real_decode(latents, *a, **k))
    with torch.inference_mode():
        (window,) = runner.run(runner.warmup_payloads()[:1])
        other = window.clone()
        chunks = [DecodeChunk(window, torch.arange(s, s + 50), torch.zeros(0, dtype=torch.long)) for s in (0, 50)]
        for chunk in chunks:
            runner.run([chunk])
        runner.run([DecodeChunk(other, torch.arange(50), torch.zeros(0, dtype=torch.long))])
        runner.run([chunks[0], DecodeChunk(other, torch.arange(50), torch.zeros(0, dtype=torch.long))])
    assert seen[0] is seen[1] and seen[2] is not seen[1] and seen[3].shape[0] == 2
