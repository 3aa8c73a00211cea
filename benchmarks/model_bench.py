"""The model benchmark: each case runs one task the way a user would, with transformers and with ours.

A :class:`Case` names the checkpoint, builds its inputs, and says how each implementation
computes the answer. Both implementations load the same checkpoint directory. The
reference is used the documented transformers way (padded text with a mask, one full
forward pass per multimodal chunk as in the Hugging Face colab); ours is used the way the
server uses it (unpadded text, encode once and decode only what is needed).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from perceiver_serve.modeling import ByteTokenizer

from .configs import head_spec
from .flow_tiling import tiled_flow

Outputs = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Target:
    """What "done" means for a case (any field left None is not a target)."""

    speedup: float | None = None  # reference time / our time
    memory: float | None = None  # reference peak RSS / our peak RSS
    max_abs_diff: float | None = None  # outputs agree within this
    argmax_agreement: float | None = None  # share of positions with the same arg-max

    def describe(self) -> str:
        parts = []
        if self.speedup:
            parts.append(f"≥ {self.speedup:g}× faster")
        if self.memory:
            parts.append(f"≥ {self.memory:g}× less memory")
        if self.max_abs_diff:
            parts.append(f"|diff| ≤ {self.max_abs_diff:g}")
        if self.argmax_agreement:
            parts.append(f"arg-max agreement ≥ {self.argmax_agreement:.0%}")
        return ", ".join(parts)


class Marks:
    """Time points an implementation reports from inside a run (e.g. its first streamed chunk)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.points: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.points.setdefault(name, time.perf_counter() - self.start)


#: ``(model, inputs, marks, limit) → outputs``; ``limit`` truncates multi-unit work (memory probes).
RunFn = Callable[[torch.nn.Module, dict[str, Any], Marks, "int | None"], Outputs]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    title: str
    head: str
    inputs: Callable[[dict[str, Any]], dict[str, Any]]  # checkpoint config → inputs
    ref: RunFn
    ours: RunFn
    target: Target = Target()
    ours_dtype: str = "float32"
    reps: int = 5
    warmup: bool = True
    units: int | Callable[[dict[str, Any]], int] = 1  # identical work units per run (tiles, chunks)
    probe_limit: dict[str, int] = dataclasses.field(default_factory=dict)  # impl → units run in probes
    compare: str = "max_abs"  # or "argmax": reduced precision is judged by its decisions
    note: str = ""

    def num_units(self, config: dict[str, Any]) -> int:
        return self.units(config) if callable(self.units) else self.units


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- text -------------------------------------------------------------------------------------

def _full_text(config):
    length = config["max_position_embeddings"]
    ids = torch.randint(ByteTokenizer.NUM_SPECIAL, config["vocab_size"], (1, length), generator=_generator(1))
    ids[0, 0], ids[0, -1] = ByteTokenizer.CLS, ByteTokenizer.SEP
    return {"ids": ids}


def _fill_mask_text(config):
    ids = _full_text(config)["ids"]
    span = torch.arange(ids.shape[1] // 2, ids.shape[1] // 2 + 16)
    ids[0, span] = ByteTokenizer.MASK
    return {"ids": ids, "positions": span}


def _short_text(config):
    text = bytes(torch.randint(32, 127, (100 if config["max_position_embeddings"] >= 1024 else 20,),
                               generator=_generator(2)).tolist())
    ids = torch.tensor([ByteTokenizer().encode(text)])
    padded = torch.zeros(1, config["max_position_embeddings"], dtype=torch.long)
    mask = torch.zeros_like(padded)
    padded[0, : ids.shape[1]], mask[0, : ids.shape[1]] = ids[0], 1
    return {"ids": ids, "padded": padded, "mask": mask}


def _ref_mlm(model, x, marks, limit):
    logits = model(inputs=x["ids"], attention_mask=torch.ones_like(x["ids"])).logits
    return {"logits": logits[:, x["positions"]] if "positions" in x else logits}


def _ours_mlm(model, x, marks, limit):
    return {"logits": model(x["ids"])}


def _ours_fill_mask(model, x, marks, limit):
    return {"logits": model.decode(model.encode(x["ids"]), x["positions"])}


def _ref_classify_padded(model, x, marks, limit):
    return {"logits": model(inputs=x["padded"], attention_mask=x["mask"]).logits}


def _ours_classify(model, x, marks, limit):
    return {"logits": model(x["ids"])}


# --- images -----------------------------------------------------------------------------------

def _image(config):
    return {"pixels": torch.randn(1, 3, config["image_size"], config["image_size"], generator=_generator(3))}


def _ref_image(model, x, marks, limit):
    return {"logits": model(inputs=x["pixels"]).logits}


def _ours_image(model, x, marks, limit):
    return {"logits": model(x["pixels"].to(model.dtype))}


# --- optical flow -----------------------------------------------------------------------------

def _frame_pair(height: int, width: int, seed: int) -> torch.Tensor:
    """Two uint8 RGB frames: smooth random shapes moved by a few pixels, like real footage."""
    g = _generator(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, height // 8 + 2, width // 8 + 2, generator=g),
                                           size=(height + 8, width + 8), mode="bilinear", align_corners=False)[0]
    first = base[:, 4:4 + height, 4:4 + width]
    second = base[:, 2:2 + height, 5:5 + width]
    return (torch.stack([first, second]).permute(0, 2, 3, 1) * 255).round().to(torch.uint8)


def _flow_train_size(config):
    from perceiver_serve.modeling import flow_patches

    h, w = config["train_size"]
    return {"patches": flow_patches(_frame_pair(h, w, 4)[None])}


def _flow_large(config):
    h, w = config["train_size"]
    height, width = (436, 1024) if h >= 368 else (h + 6, w + 8)
    return {"frames": _frame_pair(height, width, 5), "tile": (h, w)}


def _flow_units(config) -> int:
    from .flow_tiling import tile_origins

    x = _flow_large(config)
    return len(tile_origins(*x["frames"].shape[1:3], x["tile"]))


def _ref_flow(model, x, marks, limit):
    return {"flow": model(inputs=x["patches"]).logits}


def _ours_flow(model, x, marks, limit):
    return {"flow": model(x["patches"].to(model.dtype))}


def _ref_flow_tiled(model, x, marks, limit):
    return {"flow": tiled_flow(x["frames"], lambda p: model(inputs=p).logits, x["tile"], max_tiles=limit)}


def _ours_flow_tiled(model, x, marks, limit):
    return {"flow": tiled_flow(x["frames"], lambda p: model(p.to(model.dtype)), x["tile"], max_tiles=limit)}


# --- multimodal -------------------------------------------------------------------------------

def _clip(config):
    g = _generator(6)
    frames, size = config["num_frames"], config["image_size"]
    samples = frames * config["audio_samples_per_frame"]
    chunks = 128 if size >= 224 else 8
    return {
        "images": torch.rand(1, frames, 3, size, size, generator=g),
        "audio": torch.rand(1, samples, generator=g) * 2 - 1,
        "chunks": chunks,
        "image_points": frames * size * size,  # the output video has the input's size
        "audio_points": samples // config["samples_per_patch"],
        "num_labels": config["num_labels"],
    }


def _chunk_points(x, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    image_step, audio_step = x["image_points"] // x["chunks"], x["audio_points"] // x["chunks"]
    return (torch.arange(image_step * chunk, image_step * (chunk + 1)),
            torch.arange(audio_step * chunk, audio_step * (chunk + 1)))


def _assemble(images, audio, label) -> Outputs:
    return {"image": torch.cat(images, dim=1), "audio": torch.cat(audio, dim=1), "label": label}


def _ref_clip(model, x, marks, limit):
    inputs = {"image": x["images"], "audio": x["audio"][..., None], "label": torch.zeros(1, x["num_labels"])}
    images, audio, label = [], [], None
    for chunk in range(x["chunks"] if limit is None else limit):
        image_points, audio_points = _chunk_points(x, chunk)
        out = model(inputs=inputs, subsampled_output_points={"image": image_points, "audio": audio_points,
                                                             "label": None}).logits
        images.append(out["image"])
        audio.append(out["audio"])
        label = out["label"] if label is None else label
        marks.mark("first_chunk")
    return _assemble(images, audio, label)


def _ours_clip(model, x, marks, limit):
    latents = model.encode(x["images"].to(model.dtype), x["audio"].to(model.dtype))
    images, audio, label = [], [], None
    for chunk in range(x["chunks"] if limit is None else limit):
        image_points, audio_points = _chunk_points(x, chunk)
        out = model.decode(latents, image_points=image_points, audio_points=audio_points, label=chunk == 0)
        images.append(out["image"])
        audio.append(out["audio"])
        label = out.get("label", label)
        marks.mark("first_chunk")
    return _assemble(images, audio, label)


# --- the cases --------------------------------------------------------------------------------

CASES: list[Case] = [
    Case("mlm-2048", "MLM, 2,048 bytes, all 2,048 positions decoded", "language-perceiver", _full_text,
         _ref_mlm, _ours_mlm, Target(speedup=1.3, max_abs_diff=1e-4)),
    Case("mlm-fill-mask", "MLM, 2,048 bytes, only the 16 masked positions decoded (ours)",
         "language-perceiver", _fill_mask_text, _ref_mlm, _ours_fill_mask, Target(max_abs_diff=1e-4),
         note="the reference always decodes all 2,048 positions"),
    Case("mlm-2048-bf16", "MLM, 2,048 bytes, ours in bfloat16 (reference float32)", "language-perceiver",
         _full_text, _ref_mlm, _ours_mlm, Target(speedup=2.0, argmax_agreement=0.99), ours_dtype="bfloat16",
         reps=3, compare="argmax"),
    Case("mlm-2048-fp16", "MLM, 2,048 bytes, ours in float16 (reference float32)", "language-perceiver",
         _full_text, _ref_mlm, _ours_mlm, Target(argmax_agreement=0.99), ours_dtype="float16", reps=3,
         compare="argmax"),
    Case("text-short", "text classification, 100-byte text (reference padded to 2,048 with a mask)",
         "text-classifier", _short_text, _ref_classify_padded, _ours_classify, Target(speedup=1.5, max_abs_diff=1e-4)),
    Case("text-short-bf16", "text classification, 100-byte text, ours in bfloat16", "text-classifier",
         _short_text, _ref_classify_padded, _ours_classify, Target(argmax_agreement=1.0), ours_dtype="bfloat16",
         reps=3, compare="argmax"),
    Case("image-learned", "image classification 224², learned positions (conv1x1)", "vision-perceiver-learned",
         _image, _ref_image, _ours_image, Target(max_abs_diff=1e-4), reps=3),
    Case("image-fourier", "image classification 224², Fourier positions (pixels)", "vision-perceiver-fourier",
         _image, _ref_image, _ours_image, Target(max_abs_diff=1e-4), reps=3),
    Case("image-conv", "image classification 224², conv + max-pool preprocessing", "vision-perceiver-conv",
         _image, _ref_image, _ours_image, Target(max_abs_diff=1e-4), reps=3),
    Case("flow-368x496", "optical flow, one 368×496 frame pair", "optical-flow-perceiver", _flow_train_size,
         _ref_flow, _ours_flow, Target(speedup=2.0, memory=4.0, max_abs_diff=1e-4), reps=3, warmup=False),
    Case("flow-1024x436", "optical flow, one 1024×436 pair in 6 blended tiles", "optical-flow-perceiver",
         _flow_large, _ref_flow_tiled, _ours_flow_tiled, Target(max_abs_diff=1e-4), reps=1, warmup=False,
         units=_flow_units, probe_limit={"ref": 2, "ours": 2}),
    Case("multimodal-clip", "multimodal clip (16 frames 224², 30,720 audio samples), full reconstruction "
         "in 128 chunks", "multimodal-perceiver", _clip, _ref_clip, _ours_clip,
         Target(speedup=10.0, max_abs_diff=1e-4), reps=1, warmup=False, units=lambda c: _clip(c)["chunks"],
         probe_limit={"ref": 2},
         note="reference: a full forward pass per chunk (the Hugging Face colab); ours: encode once, decode "
              "128 chunks"),
]

CASES_BY_NAME = {case.name: case for case in CASES}


def case_config(case: Case, quick: bool) -> dict[str, Any]:
    return head_spec(case.head, quick).config


def compare(case: Case, ref: Outputs, ours: Outputs) -> dict[str, Any]:
    """Largest absolute difference per output (and arg-max agreement for classification logits)."""
    result: dict[str, Any] = {"max_abs_diff": 0.0, "ref_max_abs": 0.0}
    for name, r in ref.items():
        o = ours[name].float()
        if o.shape != r.shape:
            raise AssertionError(f"{case.name}: output {name!r} has shape {tuple(o.shape)}, "
                                 f"reference {tuple(r.shape)}")
        result["max_abs_diff"] = max(result["max_abs_diff"], (o - r).abs().max().item())
        result["ref_max_abs"] = max(result["ref_max_abs"], r.abs().max().item())
        if name in ("logits", "label"):
            result["argmax_agreement"] = (o.argmax(-1) == r.argmax(-1)).float().mean().item()
    return result
