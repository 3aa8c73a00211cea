"""Position encodings: learned tables and fixed Fourier features over N-d index grids."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def point_positions(flat_index: torch.Tensor, index_dims: Sequence[int]) -> torch.Tensor:
    """Coordinates of chosen points of a grid, given by their flat (row-major) index.

    Uses ``-1 + 2 * i / n`` per axis: this is how subsampled decoder queries are placed in the
    reference implementation (it differs slightly from the ``linspace`` of whole grids), and what the
    released multimodal checkpoints were evaluated with.
    """
    coords = torch.stack(torch.unravel_index(flat_index, tuple(index_dims)), dim=-1)
    sizes = torch.tensor(list(index_dims), device=flat_index.device)
    return -1 + 2 * coords / sizes


#: Grid features up to this size are kept between calls (a 224² image's: 52 MB); larger grids
#: (optical flow: 188 MB) are computed each time.
GRID_CACHE_BYTES = 64 << 20


class FourierPositionEncoding(nn.Module):
    """Fixed sin/cos features at linearly spaced frequencies up to each axis' Nyquist rate."""

    def __init__(self, num_bands: int, max_resolution: Sequence[int], concat_pos: bool = True,
                 sine_only: bool = False) -> None:
        super().__init__()
        self.num_bands = num_bands
        self.max_resolution = tuple(max_resolution)
        self.concat_pos = concat_pos
        self.sine_only = sine_only
        self._grid_cache: tuple[tuple, torch.Tensor] | None = None

    @property
    def num_dimensions(self) -> int:
        return len(self.max_resolution)

    def output_size(self) -> int:
        size = self.num_bands * self.num_dimensions * (1 if self.sine_only else 2)
        return size + (self.num_dimensions if self.concat_pos else 0)

    def features(self, pos: torch.Tensor) -> torch.Tensor:
        """Features of ``(..., N, d)`` float32 positions in [-1, 1] (computed in float32)."""
        bands = torch.stack([
            torch.linspace(1.0, res / 2, self.num_bands, device=pos.device) for res in self.max_resolution
        ])
        scaled = (pos[..., :, None] * bands).flatten(-2)
        if self.sine_only:
            feats = torch.sin(math.pi * scaled)
        else:
            feats = torch.cat([torch.sin(math.pi * scaled), torch.cos(math.pi * scaled)], dim=-1)
        return torch.cat([pos, feats], dim=-1) if self.concat_pos else feats

    def _axis_channels(self, axis: int) -> list[slice]:
        """The output channels that depend on grid axis ``axis`` (each depends on exactly one)."""
        d, nb = self.num_dimensions, self.num_bands
        start = d if self.concat_pos else 0
        blocks = [slice(axis, axis + 1)] if self.concat_pos else []
        blocks.append(slice(start + axis * nb, start + (axis + 1) * nb))
        if not self.sine_only:
            blocks.append(slice(start + (d + axis) * nb, start + (d + axis + 1) * nb))
        return blocks

    def grid_features(self, index_dims: Sequence[int], out: torch.Tensor) -> None:
        """Write the features of every point of an ``index_dims`` grid (axes spanning [-1, 1]) into
        ``out`` ``(prod(index_dims), C)``.

        Every channel depends on one axis only, so each axis' features are computed for that
        axis' coordinates and broadcast over the others: the same values as evaluating every
        point, for a fraction of the sines and cosines (0.1 s instead of 0.7 s for a flow frame).
        """
        d = len(index_dims)
        grid = out.view(*index_dims, out.shape[-1])
        for axis, n in enumerate(index_dims):
            pos = torch.zeros(n, d, device=out.device)
            pos[:, axis] = torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=out.device)
            table = self.features(pos)
            shape = [1] * d
            shape[axis] = n
            for channels in self._axis_channels(axis):
                grid[..., channels] = table[:, channels].view(*shape, -1)

    def forward(self, index_dims: Sequence[int], batch_size: int, *, device: torch.device,
                dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
        """Features of every point of an ``index_dims`` grid, ``(batch_size, prod(index_dims), C)``.

        They depend on the grid's shape only, so small grids' features are computed once (200 ms
        per 224² image on 2 cores) and shared: callers must not write into the result. With
        ``out`` (a ``(batch_size, prod(index_dims), C)`` view, e.g. into a token array) they are
        written there instead.
        """
        key = (tuple(index_dims), torch.device(device), dtype)
        size = math.prod(index_dims) * self.output_size() * torch.finfo(dtype).bits // 8
        cached = self._grid_cache
        if cached is not None and cached[0] == key:
            feats = cached[1]
        elif out is not None and size > GRID_CACHE_BYTES:
            self.grid_features(index_dims, out[0])  # too large to keep: straight into the caller's array
            out[1:] = out[:1]
            return out
        else:
            feats = torch.empty(math.prod(index_dims), self.output_size(), device=device, dtype=dtype)
            self.grid_features(index_dims, feats)
            if size <= GRID_CACHE_BYTES:
                self._grid_cache = (key, feats)
        feats = feats.expand(batch_size, -1, -1)
        return feats if out is None else out.copy_(feats)


class TrainablePositionEncoding(nn.Module):
    """A learned ``(num_positions, channels)`` table."""

    def __init__(self, num_positions: int, num_channels: int) -> None:
        super().__init__()
        self.position_embeddings = nn.Parameter(torch.zeros(num_positions, num_channels))

    def output_size(self) -> int:
        return self.position_embeddings.shape[1]

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.position_embeddings.expand(batch_size, -1, -1)
