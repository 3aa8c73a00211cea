"""What the REST and gRPC front ends share: request limits and the shape of every answer.

REST sends these dicts as JSON; gRPC parses them into its messages, whose field names are
the JSON keys, so the two front ends answer alike by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..engine import ModelRegistry
from ..errors import InvalidRequest
from ..tasks.common import Classification
from ..tasks.text import FillMaskResult

MAX_TOP_K = 1000
MAX_TEXTS = 256


def check_top_k(top_k: int) -> int:
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequest(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    return top_k


def classification_json(result: Classification) -> dict[str, Any]:
    out: dict[str, Any] = {"predictions": [dataclasses.asdict(p) for p in result.predictions]}
    if result.logits is not None:
        out["logits"] = result.logits
    return out


def fill_mask_json(model: str, result: FillMaskResult) -> dict[str, Any]:
    def char(byte: int) -> str | None:
        return chr(byte) if 32 <= byte < 127 else None

    return {
        "model": model,
        "text": result.filled.decode("utf-8", errors="replace"),
        "masked": [
            {"position": m.position, "original": m.original,
             "predictions": [{"byte": b, "char": char(b), "score": s} for b, s in m.candidates]}
            for m in result.masked
        ],
    }


def models_json(registry: ModelRegistry) -> dict[str, Any]:
    return {"models": [m.describe() for m in registry.models.values()], "defaults": registry.defaults}
