"""Compiled execution (``compile = true``): the encoder through ``torch.compile``.

Only the encoder is compiled: it is where the work is (the latent self-attention stack) and
its inputs have few shapes — batch size × input length. Decoders stay eager: they branch on
cached latents and query counts per call, which would only multiply graphs.

Shapes are dynamic (one graph serves many batch sizes and lengths), but dynamo still
specialises on some sizes: batch size 1, and the cost comparisons of the kernels (oneDNN
for small batches, absorbed cross-attention) become guards on batch size and length. So a
served shape may still compile on first sight; the server's warm-up therefore runs every
shape it will serve before the model is ready (batch sizes :func:`batch_sizes`, text lengths
:func:`length_buckets`), and text inputs are padded up to a length bucket.
"""

from __future__ import annotations

import bisect

import torch
import torch._dynamo

#: Enough graphs for every specialisation the kernels' guards create (see the module text).
RECOMPILE_LIMIT = 64


def compile_encoder(model: torch.nn.Module) -> None:
    """Compile ``model.perceiver.encoder`` in place; it compiles on the first call of each shape."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    model.perceiver.encoder.group_for_compiling()
    model.perceiver.encoder.compile(dynamic=True)
    model.compiled = True


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (every compilation makes one)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def batch_sizes(max_batch_size: int) -> list[int]:
    """Batch sizes a warm-up runs: 1, 2, 3, then powers of two, and the largest.

    They cross every size at which the kernels switch paths (see :mod:`.kernels`), so each
    graph the served batch sizes need is built.
    """
    sizes = {1, 2, 3, max_batch_size}
    size = 4
    while size < max_batch_size:
        sizes.update((size, size + 1))
        size *= 2
    return sorted(s for s in sizes if s <= max_batch_size)


def length_buckets(max_length: int, smallest: int = 16) -> list[int]:
    """Input lengths a compiled text model is padded to: powers of two and 1.5 × them (≤ 1.5× padding)."""
    buckets, size = set(), smallest
    while size < max_length:
        buckets.update((size, size * 3 // 2))
        size *= 2
    return sorted({b for b in buckets if b < max_length} | {max_length})


def bucket_length(length: int, max_length: int) -> int:
    """The smallest bucket of :func:`length_buckets` that holds ``length``."""
    buckets = length_buckets(max_length)
    return buckets[min(bisect.bisect_left(buckets, length), len(buckets) - 1)]
