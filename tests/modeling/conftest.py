from pathlib import Path

import pytest

from .hf_models import HEAD_CONFIGS, build_reference, save_reference


@pytest.fixture(scope="session")
def reference_models():
    """One randomised transformers model per head, built once per session."""
    return {arch: build_reference(arch) for arch in HEAD_CONFIGS}


@pytest.fixture(scope="session")
def checkpoint_dirs(reference_models, tmp_path_factory):
    """``(arch, fmt) → directory`` holding that model saved in Hugging Face layout."""
    root: Path = tmp_path_factory.mktemp("checkpoints")
    dirs = {}
    for arch, model in reference_models.items():
        for fmt in ("safetensors", "bin"):
            dirs[arch, fmt] = save_reference(model, root / f"{arch}-{fmt}", fmt)
    return dirs
