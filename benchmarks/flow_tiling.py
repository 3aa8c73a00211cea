"""Optical flow on frames larger than the model's training size, the DeepMind way.

The released optical-flow Perceiver sees frames of its training size only (368×496). Larger
frames are covered by tiles of that size, at least ``min_overlap`` pixels apart from each
other's borders, the last tile in each direction flush with the frame's border (for 436×1024
Sintel frames: 2 × 3 tiles). Each tile's
flow is weighted by its distance to the tile border, ``min(x + 1, W - x, y + 1, H - y)``,
and the weighted flows are normalised by the summed weights (the DeepMind Perceiver IO
optical-flow colab). The 3×3 patch features are taken per tile, as the colab does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from perceiver_serve.modeling import flow_patches


def tile_origins(height: int, width: int, tile: tuple[int, int], min_overlap: int = 20) -> list[tuple[int, int]]:
    """Top-left corners of the tiles covering a ``height`` × ``width`` frame."""
    th, tw = tile
    if height < th or width < tw:
        raise ValueError(f"frame {height}x{width} is smaller than the tile {th}x{tw}")
    if min_overlap >= min(th, tw):
        raise ValueError(f"min_overlap {min_overlap} must be smaller than the tile {th}x{tw}")
    ys = [*range(0, height - th, th - min_overlap), height - th]
    xs = [*range(0, width - tw, tw - min_overlap), width - tw]
    return list(itertools.product(ys, xs))


def tile_weights(tile: tuple[int, int]) -> torch.Tensor:
    """Blending weights ``(H, W)``: distance to the nearest tile border, counted from 1."""
    th, tw = tile
    y = torch.arange(th, dtype=torch.float32)[:, None]
    x = torch.arange(tw, dtype=torch.float32)[None, :]
    return torch.minimum(torch.minimum(x + 1, tw - x), torch.minimum(y + 1, th - y))


FlowFn = Callable[[torch.Tensor], torch.Tensor]


def tiled_flow(frames: torch.Tensor, flow_fn: FlowFn, tile: tuple[int, int], min_overlap: int = 20,
               max_tiles: int | None = None) -> torch.Tensor:
    """Flow ``(H, W, 2)`` for a uint8 frame pair ``(2, H, W, 3)``.

    ``flow_fn`` maps one tile's patch features ``(1, 2, 27, th, tw)`` to its flow ``(1, th, tw, 2)``.
    ``max_tiles`` stops early (memory probes: every tile costs the same).
    """
    _, height, width, _ = frames.shape
    th, tw = tile
    weights = tile_weights(tile)[..., None]
    flow = torch.zeros(height, width, 2)
    total = torch.zeros(height, width, 1)
    for y, x in tile_origins(height, width, tile, min_overlap)[:max_tiles]:
        piece = flow_fn(flow_patches(frames[None, :, y:y + th, x:x + tw]))
        flow[y:y + th, x:x + tw] += piece[0].float() * weights
        total[y:y + th, x:x + tw] += weights
    return flow / total.clamp_min(1e-12)
