"""Warm-up before a model is ready: one batch, or, for a compiled model, every shape it serves.

A compiled model builds a graph the first time it meets a shape dynamo has not covered yet.
Running each served shape here (each batch size of ``compiled.batch_sizes`` and, for text,
each length bucket) means no request ever waits for a compilation; ``/health/ready`` waits
for this, since a model is ready only after its warm-up.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..modeling.compiled import batch_sizes, compiled_graphs


def warmup_batches(runner: Any, max_batch_size: int) -> list[Sequence[Any]]:
    """The batches that run every shape ``runner`` serves up to ``max_batch_size`` items.

    A runner that knows its shapes (text: one per length bucket) offers ``warmup_shapes()``,
    one payload per shape; otherwise its first warm-up payload stands for all.
    """
    shapes = runner.warmup_shapes() if hasattr(runner, "warmup_shapes") else runner.warmup_payloads()[:1]
    return [[payload] * size for payload in shapes for size in batch_sizes(max_batch_size)]


def warm_up(runner: Any, max_batch_size: int, compiled: bool, progress: Callable[[str], None]) -> None:
    """Run the warm-up batch, or every served shape of a compiled model, reporting progress."""
    with torch.inference_mode():
        if not compiled:
            # Consecutive payloads of one batch key make one batch (video: encode, a decode chunk, labels).
            for _, batch in itertools.groupby(runner.warmup_payloads(), key=runner.batch_key):
                runner.run(list(batch))
            return
        batches = warmup_batches(runner, max_batch_size)
        started, graphs = time.monotonic(), compiled_graphs()
        progress(f"compiling: warming {len(batches)} served shapes")
        for position, batch in enumerate(batches, start=1):
            before = compiled_graphs()
            runner.run(batch)
            if compiled_graphs() != before or position == len(batches):
                progress(f"compiling: shape {position}/{len(batches)} done after {time.monotonic() - started:.1f} s "
                         f"({compiled_graphs() - graphs} graphs)")
