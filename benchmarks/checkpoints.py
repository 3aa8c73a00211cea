"""Random-weight checkpoints in Hugging Face layout, written once with ``save_pretrained`` and cached.

Both implementations load the same directory: transformers with ``from_pretrained``, ours
with :func:`perceiver_serve.modeling.load_model`, so every comparison runs on identical weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .configs import HeadSpec

#: Ignored by git (see .gitignore); checkpoints of the official sizes take a few GB.
DEFAULT_CACHE = Path(__file__).parent / "results" / "tmp" / "checkpoints"

#: Part of the cache key: change it when :func:`randomize` changes.
WEIGHTS_SCHEME = "fan-in-1"


def checkpoint_dir(spec: HeadSpec, cache: Path = DEFAULT_CACHE) -> Path:
    """The directory holding ``spec``'s checkpoint, creating it on first use."""
    import transformers

    key = json.dumps({"arch": spec.architecture, "weights": WEIGHTS_SCHEME, **spec.config}, sort_keys=True)
    directory = cache / f"{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    if (directory / "config.json").is_file() and (directory / "model.safetensors").is_file():
        return directory
    torch.manual_seed(0)
    config = transformers.PerceiverConfig(**spec.config)
    model = getattr(transformers, spec.architecture)(config).eval()
    randomize(model)
    model.save_pretrained(directory)
    return directory


def randomize(model: torch.nn.Module) -> None:
    """Weights that keep activations at unit scale through every layer.

    transformers' initialisation (std 0.02) makes the deep stacks nearly constant and the
    outputs tiny, which would make "max abs diff" meaningless; these are like trained weights
    in scale: projections with std 1/sqrt(fan-in), layer norms and biases perturbed,
    non-trivial batch-norm statistics.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if isinstance(_owner(model, name), (torch.nn.Linear, torch.nn.Conv2d)) and name.endswith("weight"):
                p.normal_(0, p[0].numel() ** -0.5)
            elif "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
        for name, buf in model.named_buffers():
            if buf.is_floating_point() and "running" in name:
                buf.copy_(torch.rand_like(buf) + 0.5)


def _owner(model: torch.nn.Module, name: str) -> torch.nn.Module:
    return model.get_submodule(name.rsplit(".", 1)[0])


def load_reference(directory: Path) -> torch.nn.Module:
    import transformers

    config = json.loads((directory / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    return cls.from_pretrained(directory).eval()
