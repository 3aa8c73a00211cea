"""Pieces every task shares: CPU work off the event loop, top-k predictions, options models."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..modeling.threads import use_torch_threads
from ..media.budget import HAND_BACK_FROM_BYTES, DecodeBudget

if TYPE_CHECKING:
    from ..engine.registry import ServedModel

T = TypeVar("T")
R = TypeVar("R")

MAX_TOP_K = 1000
#: ``top_k`` of every request that has one: the default and the bound live here only.
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K, description="How many best labels to return.")]
DEFAULT_TOP_K = 5

_POOL: concurrent.futures.ThreadPoolExecutor | None = None
#: One thread for decodes that hold at least :data:`~..media.budget.HAND_BACK_FROM_BYTES` (see
#: :func:`decode_in_budget`), made on first use.
_BIG_DECODES: concurrent.futures.ThreadPoolExecutor | None = None


def configure_preprocess_pool(threads: int | None = None) -> None:
    """Size the pool that decodes and preprocesses media; called once at server start."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=False)
    _POOL = concurrent.futures.ThreadPoolExecutor(
        max_workers=threads or min(4, os.cpu_count() or 1), thread_name_prefix="preprocess",
        initializer=use_torch_threads, initargs=(1,),  # the cores are the device workers' (see modeling.threads)
    )


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound work (decoding, resizing, tiling) on the preprocessing pool, not the event loop."""
    if _POOL is None:
        configure_preprocess_pool()
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)


class Opened(Protocol):
    """Media whose header is checked, not yet decoded: it knows how many bytes decoding will hold."""

    @property
    def decoded_bytes(self) -> int: ...


OpenedT = TypeVar("OpenedT", bound=Opened)


def request_deadline(served: "ServedModel", deadline: float | None) -> float:
    """The caller's deadline, else the model's ``timeout_ms`` from now, as the batcher would use."""
    return deadline if deadline is not None else time.monotonic() + served.batcher.limits.timeout_ms / 1000


async def decode_in_budget(served: "ServedModel", budget: DecodeBudget, opener: Callable[[], OpenedT],
                           decode: Callable[[OpenedT], R], *, subject: str, deadline: float | None = None) -> R:
    """Open media off the loop, then ``decode`` it off the loop while holding its decoded bytes of the budget.

    ``decode`` returns the media already reduced to what the model needs, so the bytes go back
    as soon as it returns.
    """
    opened = await off_loop(opener)
    async with budget.hold(opened.decoded_bytes, model=served.name, subject=subject,
                           deadline=request_deadline(served, deadline)):
        if opened.decoded_bytes < HAND_BACK_FROM_BYTES:
            return await off_loop(decode, opened)
        return await asyncio.get_running_loop().run_in_executor(_big_decodes(), decode, opened)


def _big_decodes() -> concurrent.futures.ThreadPoolExecutor:
    """The thread that decodes big media, one at a time.

    glibc gives each thread its own heap (arena), and a freed decode's memory stays at the top of
    the heap that held it: ``malloc_trim`` (the budget's hand-back) returns the main heap's top and
    free chunks inside any heap, but not the top of another thread's heap, which glibc shrinks only
    when it exceeds the trim threshold (64 MiB, see :mod:`~..allocator`), as large as such a heap
    can be. Big decodes taking turns on the eight preprocessing threads so kept up to tens of MiB
    each: 32 concurrent 6000×6000 PNGs, one decode at a time under a 160 MiB budget, grew the
    server's resident memory step by step to +290 MiB between decodes (+240 to +342 MiB at the peak,
    on an Emerald Rapids Xeon). On one thread, one heap keeps it.
    """
    global _BIG_DECODES
    if _BIG_DECODES is None:
        _BIG_DECODES = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="big-decode",
                                                           initializer=use_torch_threads, initargs=(1,))
    return _BIG_DECODES


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


def classification_json(result: Classification) -> dict[str, Any]:
    # The fields' own dict, copied: dataclasses.asdict deep-copies each value (3% of a text request).
    out: dict[str, Any] = {"predictions": [dict(vars(p)) for p in result.predictions]}
    if result.logits is not None:
        out["logits"] = result.logits
    return out


def classifications_json(model: str, results: list[Classification]) -> dict[str, Any]:
    return {"model": model, "results": [classification_json(r) for r in results]}
