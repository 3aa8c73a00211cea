"""Optical flow as a picture: the Middlebury colour coding (Baker et al., IJCV 2011).

Hue gives a pixel's direction of motion and saturation its speed relative to the largest
one shown, so zero motion is white and the fastest pixels are fully saturated. Written
from the published description of the colour wheel: 55 hues in six segments
(red→yellow 15, yellow→green 6, green→cyan 4, cyan→blue 11, blue→magenta 13,
magenta→red 6), chosen to be roughly perceptually even. Flow is in image coordinates
(x to the right, y down); motion to the right is red.
"""

from __future__ import annotations

import numpy as np

# (hues in the segment, RGB it starts at); each segment ramps to where the next one starts.
_SEGMENTS: tuple[tuple[int, tuple[int, int, int]], ...] = (
    (15, (255, 0, 0)),
    (6, (255, 255, 0)),
    (4, (0, 255, 0)),
    (11, (0, 255, 255)),
    (13, (0, 0, 255)),
    (6, (255, 0, 255)),
)
# Middlebury's marker for "no flow known here" in .flo files; such pixels are drawn black.
UNKNOWN_FLOW_THRESHOLD = 1e9
#: The default colour scale never drops below this speed (pixels): a still scene's flow of a few
#: millionths of a pixel is drawn near white, not at full saturation as if it moved.
MIN_SCALE = 1.0


def colour_wheel() -> np.ndarray:
    """The wheel's ``(55, 3)`` RGB hues in [0, 255], starting at red (motion to the right)."""
    rows = []
    for (count, start), (_, end) in zip(_SEGMENTS, _SEGMENTS[1:] + _SEGMENTS[:1], strict=True):
        ramp = np.floor(255 * np.arange(count) / count)[:, None]
        rows.append(np.array(start) + ramp * (np.array(end) - np.array(start)) / 255)
    return np.concatenate(rows)


_WHEEL = colour_wheel()


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code an ``(H, W, 2)`` flow field into an ``(H, W, 3)`` uint8 picture.

    Speeds are divided by ``max_magnitude`` (by default the largest speed in the field, but at
    least :data:`MIN_SCALE`, so a picture of motion uses the whole saturation range and one of
    sub-pixel noise stays pale; pass a fixed value to compare pictures). Pixels faster than
    ``max_magnitude`` are drawn darker, as in the reference code.
    """
    u = flow[..., 0].astype(np.float64)
    v = flow[..., 1].astype(np.float64)
    known = (
        np.isfinite(u) & np.isfinite(v) & (np.abs(u) < UNKNOWN_FLOW_THRESHOLD) & (np.abs(v) < UNKNOWN_FLOW_THRESHOLD)
    )
    u, v = np.where(known, u, 0.0), np.where(known, v, 0.0)
    speed = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = max(float(speed.max(initial=0.0)), MIN_SCALE)
    elif not max_magnitude > 0:
        raise ValueError(f"max_magnitude must be positive, got {max_magnitude}")
    radius = (speed / max_magnitude)[..., None]

    position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (len(_WHEEL) - 1)
    lower = np.floor(position).astype(np.intp)
    upper = (lower + 1) % len(_WHEEL)
    blend = (position - lower)[..., None]
    hue = ((1 - blend) * _WHEEL[lower] + blend * _WHEEL[upper]) / 255

    colour = np.where(radius <= 1, 1 - radius * (1 - hue), hue * 0.75)
    rgb = np.floor(255 * colour).astype(np.uint8)
    rgb[~known] = 0
    return rgb
