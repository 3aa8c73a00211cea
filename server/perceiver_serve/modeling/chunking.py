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
    if 0 < rows <= chunk_rows and rows % multiple == 0:
        return product(flat)
    out = None
    for start in range(0, max(rows, 1), chunk_rows):
        chunk = flat[start:start + chunk_rows]
        n = chunk.shape[0]
        padded = -(-max(n, 1) // multiple) * multiple
        result = product(F.pad(chunk, (0, 0, 0, padded - n)) if padded != n else chunk)
        if rows <= chunk_rows:
            return result[:n]
        if out is None:
            out = result.new_empty(rows, result.shape[-1])
        out[start:start + n] = result[:n]
    return out
