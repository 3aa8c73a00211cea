"""The attention calls of every official head at its published size, found without computing.

Each head is built on the ``meta`` device (shapes only: no memory, no arithmetic) and run on
inputs of the official sizes; every call of :func:`kernels.attend` is recorded with its shapes
and options. The CUDA tests replay them with random values under forced fused kernels.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from perceiver_serve.modeling import ARCHITECTURES, PerceiverConfig, attention, cross_attention, kernels

from benchmarks.configs import head_spec

OFFICIAL_HEADS = ("language-perceiver", "text-classifier", "vision-perceiver-learned", "vision-perceiver-fourier",
                  "vision-perceiver-conv", "optical-flow-perceiver", "multimodal-perceiver")


@dataclasses.dataclass(frozen=True)
class Geometry:
    head: str
    q: tuple[int, ...]
    k: tuple[int, ...]
    v: tuple[int, ...]
    masked: bool
    biased: bool
    scale: float | None

    @property
    def name(self) -> str:
        extras = "-mask" if self.masked else "-bias" if self.biased else ""
        return f"{self.head}:q{'x'.join(map(str, self.q))}:k{self.k[2]}x{self.k[3]}:v{self.v[3]}{extras}"


@contextlib.contextmanager
def _recording(head: str, found: list[Geometry]) -> Iterator[None]:
    real = kernels.attend

    def record(q, k, v, key_mask=None, *, scale=None, key_bias=None, **kwargs):
        found.append(Geometry(head, tuple(q.shape), tuple(k.shape), tuple(v.shape), key_mask is not None,
                              key_bias is not None, scale))
        return real(q, k, v, key_mask, scale=scale, key_bias=key_bias, **kwargs)

    modules = (kernels, attention, cross_attention)
    for module in modules:
        module.attend = record
    try:
        yield
    finally:
        for module in modules:
            module.attend = real


def _run(model: torch.nn.Module, head: str) -> None:
    c = model.config
    if head in ("language-perceiver", "text-classifier"):
        ids = torch.zeros(1, c.max_position_embeddings, dtype=torch.long, device="meta")
        model(ids, torch.ones_like(ids))
    elif head.startswith("vision"):
        model(torch.zeros(1, 3, 224, 224, device="meta"))
    elif head == "optical-flow-perceiver":
        model.decode(model.encode(torch.zeros(1, 2, 27, *c.train_size, device="meta")),
                     torch.arange(16384, device="meta"))
    else:
        latents = model.encode(torch.zeros(1, c.num_frames, 3, c.image_size, c.image_size, device="meta"),
                               torch.zeros(1, c.num_frames * c.audio_samples_per_frame, device="meta"))
        model.decode(latents, torch.arange(model.num_image_points // 16, device="meta"),
                     torch.arange(model.num_audio_points // 16, device="meta"), label=True)


def official_geometries() -> list[Geometry]:
    """Every distinct attention call of the official heads (batch 1, one decode chunk per head)."""
    found: list[Geometry] = []
    for head in OFFICIAL_HEADS:
        spec = head_spec(head)
        with torch.device("meta"):
            model = ARCHITECTURES[spec.architecture](PerceiverConfig.from_dict(spec.config)).eval()
        with _recording(head, found), torch.inference_mode():
            _run(model, head)
    return list(dict.fromkeys(found))
