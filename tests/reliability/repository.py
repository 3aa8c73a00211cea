"""Model repositories for the reliability tests: copies of the demo models with tuned batching."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..grpc.inprocess import write_repository

ALL_MODELS = ("text-sentiment", "language-mlm", "image-classifier", "optical-flow", "video-autoencoder")


def set_batching(root: Path, name: str, **values: float) -> None:
    """Rewrite ``[batching]`` keys of ``root/name/model.toml``."""
    toml = root / name / "model.toml"
    text = toml.read_text()
    for key, value in values.items():
        text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert count == 1, (name, key)
    toml.write_text(text)


def clone_model(root: Path, base: str, name: str, **batching: float) -> None:
    """A second, non-default model serving ``base``'s checkpoint with other batching."""
    shutil.copytree(root / base, root / name)
    toml = root / name / "model.toml"
    toml.write_text(toml.read_text().replace("default = true", "default = false"))
    set_batching(root, name, **batching)


def repository(root: Path, *names: str, **batching: dict[str, float]) -> Path:
    """The named demo models (default: all) in ``root``, with ``batching[name]`` overrides."""
    write_repository(root, *(names or ALL_MODELS))
    for name, values in batching.items():
        set_batching(root, name, **values)
    return root
