"""Our heads against transformers on the same weights and inputs."""

import pytest

from perceiver_serve.modeling import load_model

from ..numerics import FP32, assert_close
from .hf_models import HEAD_CONFIGS
from .inputs import run_pair

ARCHS = list(HEAD_CONFIGS)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("arch", ARCHS)
def test_float32_outputs_match_transformers(arch, fmt, reference_models, checkpoint_dirs):
    ours = load_model(checkpoint_dirs[arch, fmt])
    assert type(ours).__name__ == arch
    for name, (ref, got) in run_pair(arch, reference_models[arch], ours).items():
        assert got.shape == ref.shape, name
        assert ref.abs().max() > 1e-3, f"{name}: reference output is degenerate, the check would be vacuous"
        assert_close(got, ref, FP32, name)


def test_loading_is_strict_about_every_reference_key(reference_models, checkpoint_dirs):
    for arch in ARCHS:
        ours = load_model(checkpoint_dirs[arch, "safetensors"])
        assert set(ours.state_dict()) == set(reference_models[arch].state_dict()), arch
