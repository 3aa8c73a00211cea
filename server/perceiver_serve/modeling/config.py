"""Perceiver configuration: the fields of ``transformers.PerceiverConfig``, read from ``config.json``.

Only the fields that shape the network are typed and validated; the many generic keys that
Hugging Face writes into every ``config.json`` (``transformers_version``, ``dtype`` …) are
ignored, so checkpoints written by any transformers release load unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class PerceiverConfig:
    num_latents: int = 256
    d_latents: int = 1280
    d_model: int = 768
    num_blocks: int = 1
    num_self_attends_per_block: int = 26
    num_self_attention_heads: int = 8
    num_cross_attention_heads: int = 8
    qk_channels: int | None = None
    v_channels: int | None = None
    cross_attention_shape_for_attention: str = "kv"
    self_attention_widening_factor: int = 1
    cross_attention_widening_factor: int = 1
    hidden_act: str = "gelu"
    use_query_residual: bool = True
    vocab_size: int = 262
    max_position_embeddings: int = 2048
    image_size: int = 56
    train_size: tuple[int, int] = (368, 496)
    num_frames: int = 16
    audio_samples_per_frame: int = 1920
    samples_per_patch: int = 16
    output_shape: tuple[int, ...] = (1, 16, 224, 224)
    output_num_channels: int = 512
    label_trainable_num_channels: int = 1024
    id2label: dict[int, str] = dataclasses.field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    architectures: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> "PerceiverConfig":
        """Build a config from a ``config.json`` mapping, checking the type of every known field."""
        if not isinstance(raw, dict):
            raise CheckpointError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        values: dict[str, Any] = {}
        renamed = {"_label_trainable_num_channels": "label_trainable_num_channels"}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            name = renamed.get(key, key)
            if name not in fields or name in ("id2label", "architectures"):
                continue
            values[name] = _coerce(name, value, source)
        if "id2label" in raw and raw["id2label"] is not None:
            values["id2label"] = _labels(raw["id2label"], source)
        elif isinstance(raw.get("num_labels"), int) and raw["num_labels"] > 0:
            values["id2label"] = {i: f"LABEL_{i}" for i in range(raw["num_labels"])}
        archs = raw.get("architectures") or ()
        if not isinstance(archs, (list, tuple)) or not all(isinstance(a, str) for a in archs):
            raise CheckpointError(f"{source}: 'architectures' must be a list of class names")
        values["architectures"] = tuple(archs)
        config = cls(**values)
        config._validate(source)
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> "PerceiverConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: config.json not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The config as transformers writes it (so a checkpoint we save loads there too)."""
        out = dataclasses.asdict(self)
        out["_label_trainable_num_channels"] = out.pop("label_trainable_num_channels")
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = {v: k for k, v in self.id2label.items()}
        out["train_size"] = list(self.train_size)
        out["output_shape"] = list(self.output_shape)
        out["architectures"] = list(self.architectures)
        out["model_type"] = "perceiver"
        return out

    def _validate(self, source: str) -> None:
        positive = (
            "num_latents", "d_latents", "d_model", "num_blocks", "num_self_attention_heads",
            "num_cross_attention_heads", "self_attention_widening_factor",
            "cross_attention_widening_factor", "vocab_size", "max_position_embeddings",
            "image_size", "num_frames", "audio_samples_per_frame", "samples_per_patch",
            "output_num_channels", "label_trainable_num_channels",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise CheckpointError(f"{source}: '{name}' must be positive, got {getattr(self, name)}")
        if self.num_self_attends_per_block < 0:
            raise CheckpointError(f"{source}: 'num_self_attends_per_block' must not be negative")
        if self.cross_attention_shape_for_attention not in ("q", "kv"):
            raise CheckpointError(
                f"{source}: 'cross_attention_shape_for_attention' must be 'q' or 'kv', "
                f"got {self.cross_attention_shape_for_attention!r}"
            )
        for heads in ("num_self_attention_heads", "num_cross_attention_heads"):
            if self.d_latents % getattr(self, heads):
                raise CheckpointError(f"{source}: d_latents ({self.d_latents}) must be divisible by {heads}")
        if len(self.train_size) != 2 or len(self.output_shape) != 4:
            raise CheckpointError(f"{source}: 'train_size' needs 2 entries and 'output_shape' 4")
        if not self.id2label:
            raise CheckpointError(f"{source}: the checkpoint defines no labels")


_INT_OR_NONE = ("qk_channels", "v_channels")


def _coerce(name: str, value: Any, source: str) -> Any:
    default = {f.name: f.default for f in dataclasses.fields(PerceiverConfig)}[name]
    if name in _INT_OR_NONE:
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        raise CheckpointError(f"{source}: '{name}' must be a positive integer or null, got {value!r}")
    if name in ("train_size", "output_shape"):
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and v > 0 for v in value):
            return tuple(value)
        raise CheckpointError(f"{source}: '{name}' must be a list of positive integers, got {value!r}")
    if name == "image_size" and isinstance(value, (list, tuple)):
        if len(value) == 2 and value[0] == value[1] and isinstance(value[0], int):
            return value[0]
        raise CheckpointError(f"{source}: only square 'image_size' is supported, got {value!r}")
    expected = type(default)
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, expected):
        return value
    raise CheckpointError(f"{source}: '{name}' must be {expected.__name__}, got {value!r}")


def _labels(raw: Any, source: str) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(f"{source}: 'id2label' must be a non-empty object")
    try:
        labels = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}: 'id2label' keys must be integers") from None
    if sorted(labels) != list(range(len(labels))):
        raise CheckpointError(f"{source}: 'id2label' keys must be 0..{len(labels) - 1}")
    return labels
