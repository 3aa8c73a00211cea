"""Position encodings: learned tables and fixed Fourier features over N-d index grids."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def grid_positions(index_dims: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Coordinates of every point of an N-d grid, each axis spanning [-1, 1]: ``(prod(dims), N)``."""
    axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=device) for n in index_dims]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(index_dims))


def point_positions(flat_index: torch.Tensor, index_dims: Sequence[int]) -> torch.Tensor:
    """Coordinates of chosen points of a grid, given by their flat (row-major) index.

    Uses ``-1 + 2 * i / n`` per axis: this is how subsampled decoder queries are placed in the
    reference implementation (it differs slightly from :func:`grid_positions`), and what the
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

    def forward(self, index_dims: Sequence[int], batch_size: int, *, device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
        """Features of every point of an ``index_dims`` grid, ``(batch_size, prod(index_dims), C)``.

        They depend on the grid's shape only, so small grids' features are computed once (200 ms
        per 224² image on 2 cores) and shared: callers must not write into the result.
        """
        key = (tuple(index_dims), torch.device(device), dtype)
        cached = self._grid_cache
        if cached is not None and cached[0] == key:
            feats = cached[1]
        else:
            feats = self.features(grid_positions(index_dims, device)).to(dtype)
            if feats.numel() * feats.element_size() <= GRID_CACHE_BYTES:
                self._grid_cache = (key, feats)
        return feats.expand(batch_size, -1, -1)


class TrainablePositionEncoding(nn.Module):
    """A learned ``(num_positions, channels)`` table."""

    def __init__(self, num_positions: int, num_channels: int) -> None:
        super().__init__()
        self.position_embeddings = nn.Parameter(torch.zeros(num_positions, num_channels))

    def output_size(self) -> int:
        return self.position_embeddings.shape[1]

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.position_embeddings.expand(batch_size, -1, -1)
