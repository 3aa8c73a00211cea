"""Products in row chunks of a few shapes, for kernels that compile and keep one kernel per shape (oneDNN)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def in_row_chunks(flat: torch.Tensor, chunk_rows: int, multiple: int,
                  product: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``product`` of the 2-D ``flat`` (rows → rows), in chunks of at most ``chunk_rows`` rows, each
    zero-padded to a multiple of ``multiple`` (an empty input to one padded chunk), so that ``product``
    meets at most ``chunk_rows / multiple`` row counts. Chunks are copied into one output: the peak
    memory stays that of one whole product."""
    rows = flat.shape[0]

    def padded(chunk: torch.Tensor) -> torch.Tensor:
        n = chunk.shape[0]
        size = -(-max(n, 1) // multiple) * multiple
        return product(F.pad(chunk, (0, 0, 0, size - n)) if size != n else chunk)[:n]

    return in_parts(flat, [min(chunk_rows, rows - start) for start in range(0, rows, chunk_rows)] or [0], padded)


def halving_parts(total: int, largest: int) -> list[int]:
    """``total`` as a sum of ``largest``, ``largest // 2``, ``largest // 4`` … (biggest first, each
    halving exact while it divides): a batch of 13 with ``largest`` 16 is 8 + 4 + 1. Whatever
    ``total``, the parts take at most ``log2(largest) + 1`` sizes."""
    parts, size = [], max(largest, 1)
    while total > 0:
        while size > total:
            size //= 2
        count = total // size
        parts += [size] * count
        total -= count * size
    return parts


def in_parts(flat: torch.Tensor, parts: list[int], product: Callable[..., torch.Tensor],
             *alongside: torch.Tensor) -> torch.Tensor:
    """``product`` of the 2-D ``flat`` (rows → rows), one call per part of ``parts`` rows (they sum to
    ``flat``'s rows), copied into one output. Each of ``alongside`` (2-D, as many rows) is cut into the
    same parts, and ``product`` gets its part after ``flat``'s."""
    if len(parts) <= 1:
        return product(flat, *alongside)
    out, start = None, 0
    for n in parts:
        result = product(flat[start:start + n], *(a[start:start + n] for a in alongside))
        if out is None:
            out = result.new_empty(flat.shape[0], result.shape[-1])
        out[start:start + n] = result
        start += n
    return out
