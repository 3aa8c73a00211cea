"""On CUDA (marked ``gpu``; skipped where there is none): fused attention at every official
geometry, and parity with transformers in float32, bfloat16 and float16.

``scripts/gpu_check.sh`` runs these. The geometry list itself is checked on every machine.
"""

from __future__ import annotations

import copy

import pytest
import torch
from perceiver_serve.engine.devices import configure_tf32
from perceiver_serve.modeling import kernels, load_model

from .geometries import official_geometries
from .hf_models import HEAD_CONFIGS
from .inputs import run_pair

GEOMETRIES = official_geometries()

#: Attentions with fewer scores than this (the one-query classifier decoders) gain nothing from
#: a fused kernel; they are checked for equality under the default choice only.
FUSED_FROM_SCORES = 1 << 16


def test_the_official_geometries_include_the_widths_cuda_refuses_unpadded():
    widths = {g.q[-1] for g in GEOMETRIES}
    assert {322, 261, 32, 704} <= widths
    assert any(g.masked for g in GEOMETRIES) and any(g.biased for g in GEOMETRIES)
    assert {g.head for g in GEOMETRIES} >= {"optical-flow-perceiver", "multimodal-perceiver", "language-perceiver"}


@pytest.fixture()
def no_tf32():
    configure_tf32({})  # parity: float32 products in float32


def _inputs(geometry, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g, device="cuda", dtype=dtype) for shape in (geometry.q, geometry.k, geometry.v))
    batch, keys = geometry.k[0], geometry.k[2]
    mask = torch.rand(batch, keys, generator=g, device="cuda") > 0.2 if geometry.masked else None
    bias = torch.randn(batch, keys, generator=g, device="cuda") if geometry.biased else None
    return q, k, v, mask, bias


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
def test_fused_attention_at_every_official_geometry(geometry, dtype, no_tf32):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v, mask, bias = _inputs(geometry, dtype)
    with sdpa_kernel([SDPBackend.MATH]):
        expected = kernels.attend(q.float(), k.float(), v.float(), mask, scale=geometry.scale, key_bias=bias)
    scores = geometry.q[0] * geometry.q[1] * geometry.q[2] * geometry.k[2]
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    backends = fused if scores >= FUSED_FROM_SCORES else [*fused, SDPBackend.MATH]
    with sdpa_kernel(backends):  # raises "No available kernel" where no fused kernel takes the call
        got = kernels.attend(q, k, v, mask, scale=geometry.scale, key_bias=bias)
    assert got.shape == expected.shape and got.dtype == dtype
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    assert (got.float() - expected).abs().max().item() <= tolerance * max(1.0, expected.abs().max().item())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("arch", list(HEAD_CONFIGS))
def test_cuda_matches_transformers(arch, dtype, reference_models, checkpoint_dirs, no_tf32):
    ours = load_model(checkpoint_dirs[arch, "safetensors"], device="cuda", dtype=dtype)
    reference = copy.deepcopy(reference_models[arch]).to("cuda")
    for name, (ref, got) in run_pair(arch, reference, ours, dtype=ours.dtype, device="cuda").items():
        assert got.device.type == "cuda" and got.dtype == ours.dtype, name
        assert torch.isfinite(got).all(), name
        ref, got = ref.float().cpu(), got.float().cpu()
        if dtype == "float32":
            assert (got - ref).abs().max().item() <= 1e-4, name
        elif name in ("logits", "label"):
            assert torch.equal(got.argmax(-1), ref.argmax(-1)), name
        else:  # regression outputs (flow, pixels, audio): close relative to their scale
            assert (got - ref).norm() <= 0.05 * ref.norm(), name
