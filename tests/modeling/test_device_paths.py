"""The accelerator paths of the model code, checked on this CPU.

Padding attention widths up to what CUDA's fused kernels need leaves results unchanged; on any
device that is not a CPU (here: ``meta``, which computes nothing and allocates nothing, at the
official multimodal size), a video decode chunk is about a hundred operations whatever the
batch size, where the CPU path loops per batch item and per cache-sized row chunk.
"""

from __future__ import annotations

import collections

import pytest
import torch
from perceiver_serve.modeling import PerceiverConfig, PerceiverForMultimodalAutoencoding, cross_attention, kernels
from perceiver_serve.modeling.kernels import attend
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.configs import head_spec


class OpCounter(TorchDispatchMode):
    """Counts the aten operations that reach a device kernel (views and metadata excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.sdpa_widths: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not (torch.Tag.view_copy in func.tags or func.is_view or func._schema.name in _METADATA):
            self.ops[func._schema.name] += 1
        if "scaled_dot_product" in func._schema.name:
            self.sdpa_widths.append((args[0].shape[-1], args[2].shape[-1]))
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


_METADATA = {"aten::detach", "aten::lift_fresh", "aten::_to_copy", "aten::empty.memory_format", "aten::empty_strided"}

# (batch, heads, queries, keys, qk width, v width, masked): the official heads' attentions that
# CUDA's fused kernels refuse unpadded (322: flow and conv, 261: Fourier, 32/160: language).
GEOMETRIES = [
    (2, 1, 64, 300, 322, 322, False),
    (2, 1, 48, 200, 261, 261, True),
    (2, 8, 40, 96, 32, 160, True),
    (1, 1, 4096, 1200, 322, 322, False),  # past FUSED_SCORES_THRESHOLD
    (3, 1, 70, 50, 197, 1026, False),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[:6])) + ("-mask" if g[6] else ""))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padding_to_a_width_multiple_leaves_attention_unchanged(geometry, dtype):
    b, h, nq, nk, qk, v, masked = geometry
    g = torch.Generator().manual_seed(sum(geometry[:6]))
    q, k = (torch.randn(b, h, n, qk, generator=g).to(dtype) for n in (nq, nk))
    values = torch.randn(b, h, nk, v, generator=g).to(dtype)
    mask = torch.rand(b, nk, generator=g) > 0.3 if masked else None
    bias = torch.randn(b, nk, generator=g) if not masked else None
    plain = attend(q, k, values, mask, key_bias=bias, width_multiple=1)
    with OpCounter() as counter:
        padded = attend(q, k, values, mask, key_bias=bias, width_multiple=8)
    assert all(w % 8 == 0 for pair in counter.sdpa_widths for w in pair), counter.sdpa_widths
    assert padded.shape == plain.shape == (b, h, nq, v)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert (padded.float() - plain.float()).abs().max() <= tolerance


def test_cpu_attention_keeps_its_widths():
    q = torch.randn(1, 1, 8, 322)
    assert kernels.sdpa_width_multiple(q) == 1
    with OpCounter() as counter:
        attend(q, q, q)
    assert counter.sdpa_widths == [(322, 322)]


def _official_video_model(device: str) -> PerceiverForMultimodalAutoencoding:
    config = PerceiverConfig.from_dict(head_spec("multimodal-perceiver").config)
    with torch.device(device):
        return PerceiverForMultimodalAutoencoding(config).eval()


def _ops_per_chunk(model: PerceiverForMultimodalAutoencoding, batch: int, chunks_per_window: int = 16) -> int:
    """Operations of one server decode chunk (every modality) at ``batch``, the latents already prepared."""
    config = model.config
    latents = torch.zeros(batch, config.num_latents, config.d_latents, device=model.device)
    images = torch.arange(model.num_image_points // chunks_per_window, device=model.device)
    audio = torch.arange(model.num_audio_points // chunks_per_window, device=model.device)
    with torch.inference_mode():
        model.decode(latents, images, audio)  # the first decode of an encoding prepares it
        with OpCounter() as counter:
            out = model.decode(latents, images, audio)
    assert out["image"].shape == (batch, len(images), 3)
    return counter.total


@pytest.fixture(scope="module")
def meta_video_model():
    return _official_video_model("meta")


def test_an_accelerator_decodes_a_video_chunk_in_a_few_batched_operations(meta_video_model):
    assert kernels.launch_bound(meta_video_model.device)
    per_chunk = {batch: _ops_per_chunk(meta_video_model, batch) for batch in (1, 8)}
    assert per_chunk[1] == per_chunk[8] <= 130, per_chunk


def test_the_cpu_path_loops_where_an_accelerator_batches(meta_video_model, monkeypatch):
    """The same chunks on the CPU path's choices: per-item products and cache-sized row chunks."""
    monkeypatch.setattr(kernels, "launch_bound", lambda device: False)
    monkeypatch.setattr(cross_attention, "launch_bound", lambda device: False)
    per_chunk = {batch: _ops_per_chunk(meta_video_model, batch) for batch in (1, 8)}
    assert per_chunk[8] > 4 * per_chunk[1] > 4 * 130, per_chunk
