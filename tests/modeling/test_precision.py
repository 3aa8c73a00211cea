"""Reduced precision runs on CPU for every head and keeps the decisions of float32."""

import pytest
import torch

from perceiver_serve.modeling import load_model

from .hf_models import HEAD_CONFIGS
from .inputs import run_pair


def _decisions(name: str, out: torch.Tensor) -> torch.Tensor:
    return out.float().argmax(-1)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("arch", list(HEAD_CONFIGS))
def test_reduced_precision_agrees_with_float32(arch, dtype, reference_models, checkpoint_dirs):
    low = load_model(checkpoint_dirs[arch, "safetensors"], dtype=dtype)
    assert low.dtype == getattr(torch, dtype)
    for name, (ref, got) in run_pair(arch, reference_models[arch], low, dtype=low.dtype).items():
        assert got.dtype == low.dtype
        assert torch.isfinite(got).all(), name
        got = got.float()
        if name in ("logits", "label"):
            assert torch.equal(_decisions(name, got), _decisions(name, ref)), name
        else:  # regression outputs (flow, pixels, audio): close relative to their scale
            assert (got - ref).norm() <= 0.05 * ref.norm(), name
