"""Pieces every task shares: CPU work off the event loop, top-k predictions, options models."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def configure_preprocess_pool(threads: int | None = None) -> None:
    """Size the pool that decodes and preprocesses media; called once at server start."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=False)
    _POOL = concurrent.futures.ThreadPoolExecutor(
        max_workers=threads or min(4, os.cpu_count() or 1), thread_name_prefix="preprocess"
    )


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound work (decoding, resizing, tiling) on the preprocessing pool, not the event loop."""
    if _POOL is None:
        configure_preprocess_pool()
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)


class TaskOptions(BaseModel):
    """Base of each task's ``[options]`` table: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclasses.dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclasses.dataclass(frozen=True)
class Classification:
    predictions: list[Prediction]
    logits: list[float] | None = None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(scores: np.ndarray, k: int, candidates: np.ndarray | None = None) -> list[tuple[int, float]]:
    """The ``k`` best ``(index, score)`` pairs, best first, ties broken by lower index."""
    if candidates is None:
        candidates = np.arange(scores.shape[-1])
    order = candidates[np.lexsort((candidates, -scores[candidates]))]
    return [(int(i), float(scores[i])) for i in order[:k]]


def classification(logits: np.ndarray, labels: Mapping[int, str], k: int, return_logits: bool) -> Classification:
    probs = softmax(logits)
    predictions = [Prediction(labels[i], i, score) for i, score in top_k(probs, k)]
    return Classification(predictions, [float(x) for x in logits] if return_logits else None)
