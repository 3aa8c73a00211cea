"""Encoders for flow fields, the ``(H, W, 2)`` float32 output of the flow task.

Channel 0 is the horizontal displacement u (pixels, positive to the right), channel 1 the
vertical v (pixels, positive down), of each pixel of the first frame. A client picks one
encoding by name from :data:`FLOW_FORMATS`:

- ``npy``: NumPy's ``.npy`` file of the float32 array; exact, one ``np.load`` away;
- ``flo``: the Middlebury ``.flo`` file read by every flow toolkit; exact;
- ``png``: the Middlebury colour-coded picture, for eyes, not for numbers;
- ``json``: ``{"height", "width", "u", "v"}`` with ``u[y][x]`` and ``v[y][x]`` nested row
  lists, rounded to 1/10 000 pixel to keep the body small; use npy or flo for exact values.

The readers (:func:`from_npy`, :func:`from_flo`) serve clients and tests; they raise only
:class:`InvalidInput` for bad bytes. The encoders raise ``ValueError`` for an array that is
not a flow field: that is a bug in the server, not the client's fault.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..errors import InvalidInput
from .flow_colour import flow_to_rgb
from .untrusted import translated_errors

# .flo starts with the float32 202021.25, whose little-endian bytes spell "PIEH".
FLO_MAGIC = b"PIEH"
_FLO_HEADER = struct.Struct("<4sii")
JSON_DECIMALS = 4


def to_npy(flow: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, _as_flow(flow), allow_pickle=False)
    return stream.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    """Read a ``.npy`` flow field; pickled objects are refused, not executed."""
    with translated_errors("flow (npy)"):
        flow = np.load(io.BytesIO(data), allow_pickle=False)
    if not isinstance(flow, np.ndarray) or flow.dtype != np.float32 or flow.ndim != 3 or flow.shape[2] != 2:
        raise InvalidInput("flow (npy) does not hold a float32 (H, W, 2) array")
    return flow


def to_flo(flow: np.ndarray) -> bytes:
    flow = _as_flow(flow)
    height, width, _ = flow.shape
    return _FLO_HEADER.pack(FLO_MAGIC, width, height) + flow.astype("<f4").tobytes()


def from_flo(data: bytes) -> np.ndarray:
    """Read a Middlebury ``.flo`` file: magic, int32 width, int32 height, then u, v interleaved per pixel.

    Unknown-flow markers (values of 1e9 and more) are returned as they are.
    """
    if len(data) < _FLO_HEADER.size:
        raise InvalidInput(f"flow (flo) is {len(data)} bytes, shorter than the {_FLO_HEADER.size}-byte .flo header")
    magic, width, height = _FLO_HEADER.unpack_from(data)
    if magic != FLO_MAGIC:
        raise InvalidInput(f"flow (flo) starts with {magic!r}, not the .flo magic number {FLO_MAGIC!r}")
    if width < 1 or height < 1:
        raise InvalidInput(f"flow (flo) header says the field is {width}×{height}")
    expected = _FLO_HEADER.size + width * height * 8
    if len(data) != expected:
        raise InvalidInput(f"flow (flo) is {len(data)} bytes, but a {width}×{height} field takes {expected}")
    return np.frombuffer(data, dtype="<f4", offset=_FLO_HEADER.size).reshape(height, width, 2).astype(np.float32)


def to_png(flow: np.ndarray, max_magnitude: float | None = None) -> bytes:
    """The colour-coded picture of ``flow`` (see :func:`flow_to_rgb`) as an RGB PNG."""
    stream = io.BytesIO()
    Image.fromarray(flow_to_rgb(_as_flow(flow), max_magnitude)).save(stream, format="PNG")
    return stream.getvalue()


def to_json(flow: np.ndarray) -> dict[str, object]:
    flow = np.round(_as_flow(flow).astype(np.float64), JSON_DECIMALS)
    height, width, _ = flow.shape
    return {"height": height, "width": width, "u": flow[..., 0].tolist(), "v": flow[..., 1].tolist()}


def _json_bytes(flow: np.ndarray) -> bytes:
    return json.dumps(to_json(flow), separators=(",", ":")).encode()


def _as_flow(flow: np.ndarray) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"a flow field has shape (H, W, 2), not {flow.shape}")
    return flow.astype(np.float32, copy=False)


class FlowFormat(NamedTuple):
    media_type: str
    encode: Callable[[np.ndarray], bytes]
    # Memory encoding holds per flow pixel at its peak (measured): the float64 colour maths of
    # PNG and the Python floats of JSON cost far more than the field itself.
    bytes_per_pixel: int


FLOW_FORMATS: Mapping[str, FlowFormat] = MappingProxyType(
    {
        "npy": FlowFormat("application/x-npy", to_npy, 20),
        "flo": FlowFormat("application/octet-stream", to_flo, 20),
        "png": FlowFormat("image/png", to_png, 180),
        "json": FlowFormat("application/json", _json_bytes, 160),
    }
)
