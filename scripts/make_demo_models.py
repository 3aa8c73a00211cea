"""Write the bundled demo model repository: one small, random-weight model per task.

The demo models let a fresh clone serve every endpoint offline through the same loading
code that real checkpoints use; they have not been trained, so their answers mean nothing.
Each is built with our task heads, initialised the way ``transformers`` initialises a new
Perceiver, and written in Hugging Face layout (``config.json`` + ``model.safetensors``)
next to its ``model.toml``.

The output is reproducible to the byte: weights come from NumPy's legacy ``RandomState``
(a stream frozen across NumPy releases and platforms, unlike ``torch.normal_``, whose CPU
kernels vary by instruction set), JSON is written with sorted keys, and the safetensors
header carries fixed metadata.

Usage: ``python scripts/make_demo_models.py [--out models]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from perceiver_serve.modeling import ARCHITECTURES, PerceiverConfig

ROOT = Path(__file__).resolve().parent.parent

#: ``initializer_range`` of ``transformers.PerceiverConfig``.
INIT_STD = 0.02

#: Widths shared by the demo models: a latent array of 64 × 128 and two self-attention layers.
SMALL = dict(
    num_latents=64, d_latents=128, num_blocks=1, num_self_attends_per_block=2,
    num_self_attention_heads=4, num_cross_attention_heads=4,
)

#: Fourier-feature inputs are 322–405 channels wide, and by default keys and values are
#: projected at that width; 128 keeps those projections from dominating the checkpoint.
NARROW_ATTENTION = dict(qk_channels=128, v_channels=128)

#: The ten ImageNet classes of the Imagenette subset (ImageNet's own label strings).
IMAGENETTE = (
    "tench, Tinca tinca", "English springer, English springer spaniel", "cassette player",
    "chain saw, chainsaw", "church, church building", "French horn, horn", "garbage truck, dustcart",
    "gas pump, gasoline pump, petrol pump, island dispenser", "golf ball", "parachute, chute",
)

#: The first eight Kinetics-700 classes (the official multimodal model knows all 700).
KINETICS = (
    "abseiling", "acting in play", "adjusting glasses", "air drumming", "alligator wrestling",
    "answering questions", "applauding", "applying cream",
)

#: Frame rate the video demo model assumes; its audio rate is this × audio_samples_per_frame.
VIDEO_FPS = 25


@dataclasses.dataclass(frozen=True)
class DemoModel:
    name: str
    task: str
    seed: int
    config: PerceiverConfig
    batching: dict[str, int]
    options: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.config.architectures[0]


def _config(architecture: str, labels: tuple[str, ...] | None = None, **fields: Any) -> PerceiverConfig:
    if labels is not None:
        fields["id2label"] = dict(enumerate(labels))
    return PerceiverConfig(architectures=(architecture,), **fields)


def _batching(max_batch_size: int, max_queue: int = 256, timeout_ms: int = 30000) -> dict[str, int]:
    return dict(max_batch_size=max_batch_size, max_delay_ms=5, max_queue=max_queue, timeout_ms=timeout_ms)


_VIDEO = _config(
    "PerceiverForMultimodalAutoencoding", KINETICS,
    **{**SMALL, "d_latents": 64, "qk_channels": 64, "v_channels": 64, "num_cross_attention_heads": 1},
    num_frames=4, image_size=32, output_shape=(1, 4, 32, 32), audio_samples_per_frame=64,
    samples_per_patch=16, output_num_channels=64, label_trainable_num_channels=64,
)

DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel(
        "text-sentiment", "text-classification", seed=1,
        config=_config("PerceiverForSequenceClassification", ("negative", "positive"), **SMALL,
                       d_model=64, max_position_embeddings=2048),
        batching=_batching(16),
    ),
    DemoModel(
        "language-mlm", "fill-mask", seed=2,
        config=_config("PerceiverForMaskedLM", **SMALL, d_model=64, max_position_embeddings=2048),
        batching=_batching(16),
    ),
    DemoModel(
        "image-classifier", "image-classification", seed=3,
        config=_config("PerceiverForImageClassificationConvProcessing", IMAGENETTE,
                       **{**SMALL, "num_blocks": 2, "num_cross_attention_heads": 1}, **NARROW_ATTENTION),
        batching=_batching(16),
    ),
    DemoModel(
        "optical-flow", "optical-flow", seed=4,
        config=_config("PerceiverForOpticalFlow", **{**SMALL, "num_cross_attention_heads": 1},
                       **NARROW_ATTENTION, train_size=(48, 64)),
        batching=_batching(16, timeout_ms=60000),
        options=dict(tile_overlap=20, decode_chunk=16384),
    ),
    DemoModel(
        "video-autoencoder", "video-autoencoding", seed=5,
        config=_VIDEO,
        batching=_batching(2, max_queue=32, timeout_ms=60000),
        options=dict(chunks_per_window=8, fps=VIDEO_FPS, sample_rate=VIDEO_FPS * _VIDEO.audio_samples_per_frame),
    ),
)


def init_weights(model: nn.Module, seed: int, std: float = INIT_STD) -> None:
    """Initialise as ``transformers`` does for a new Perceiver, from a platform-independent stream.

    Every weight — linear, convolution, embedding, latent array, learned position table,
    modality padding and mask — is drawn from N(0, std²), every bias is zero, and layer and
    batch norms start as the identity (BatchNorm with fresh running statistics).
    """
    rng = np.random.RandomState(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                module.reset_parameters()
                continue
            for name, param in module.named_parameters(recurse=False):
                if name == "bias":
                    param.zero_()
                else:
                    values = rng.standard_normal(tuple(param.shape)) * std
                    param.copy_(torch.from_numpy(values.astype(np.float32)))


def build(demo: DemoModel) -> nn.Module:
    model = ARCHITECTURES[demo.architecture](demo.config)
    init_weights(model, demo.seed)
    return model.eval()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def model_toml(demo: DemoModel) -> str:
    lines = [
        "# Generated by scripts/make_demo_models.py: edit the script and rerun it, not this file.",
        f"# A random-weight {demo.architecture}: it serves the endpoint, its answers mean nothing.",
        f"task = {_toml_value(demo.task)}",
        'source = "checkpoint"',
        'device = "auto"',
        'dtype = "float32"',
        "default = true",
        "",
        "[batching]",
        *(f"{key} = {_toml_value(value)}" for key, value in demo.batching.items()),
        "",
        "[options]",
        *(f"{key} = {_toml_value(value)}" for key, value in demo.options.items()),
    ]
    return "\n".join(lines) + "\n"


def write(demo: DemoModel, out: Path) -> Path:
    """Write ``out/<name>/model.toml`` and its checkpoint directory; returns the model folder."""
    folder = out / demo.name
    checkpoint = folder / "checkpoint"
    checkpoint.mkdir(parents=True, exist_ok=True)
    model = build(demo)
    config = json.dumps(demo.config.to_dict(), indent=2, sort_keys=True) + "\n"
    (checkpoint / "config.json").write_text(config, encoding="utf-8")
    state = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    (folder / "model.toml").write_text(model_toml(demo), encoding="utf-8")
    return folder


def write_all(out: Path, say: Callable[[str], None] = print) -> None:
    for demo in DEMO_MODELS:
        folder = write(demo, out)
        size = sum(f.stat().st_size for f in (folder / "checkpoint").iterdir())
        say(f"{demo.name}: {demo.architecture}, {size / 1e6:.2f} MB -> {folder}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models", help="model repository to write (default: models/)")
    args = parser.parse_args(argv)
    write_all(args.out)


if __name__ == "__main__":
    main()
