"""Optical flow on frames of any size, by overlapping tiles of the model's training size.

Following the DeepMind optical-flow pipeline: tiles of the training size are laid on a grid
with at least ``tile_overlap`` pixels of overlap, the last row/column flush with the frame
border (unlike the colab's grid, no other tile may overhang the border on any frame size); each tile's flow is weighted by its distance to the tile edge (``min(x+1, w-x,
y+1, h-y)``) and the weighted flows are averaged. Frames smaller than a tile in a dimension
are padded to the tile size by repeating their edge pixels and the flow is cropped back;
frames under ``min_frame_side`` pixels on a side are refused, as padding would dominate.

Every tile is one work item, so tiles of one request and of concurrent requests share
forward passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import Field

from ..engine import ServedModel
from ..errors import InvalidInput, PayloadTooLarge
from ..media.budget import DecodeBudget
from ..media.flow_formats import FLOW_FORMATS
from ..media.image import check_image_size, check_same_size, decode_opened_pair, open_frame_pair, rgb_frame_from_raw
from ..media.limits import MediaLimits
from ..modeling import PerceiverForOpticalFlow, flow_patches
from .common import TaskOptions, off_loop, request_deadline
from .definition import Call, RequestSchema, RestRoute, Signature, Task, TensorSpec

# Host memory of one request per frame pixel at its peak: the two uint8 frames and their
# padded stack (12 bytes), then the blend's float64 sums, weights and quotient and the float32
# result (48); and per tile pixel: the uint8 tile pair (6) and its float32 flow (8).
FRAME_PIXEL_BYTES = 60
TILE_PIXEL_BYTES = 14

T = TypeVar("T")


def _field(flow: np.ndarray) -> np.ndarray:
    return flow


class FlowOptions(TaskOptions):
    tile_overlap: int = Field(20, ge=0, description="Minimum overlap of neighbouring tiles, in pixels.")
    decode_chunk: int = Field(16384, ge=1, description="Output pixels decoded per chunk (bounds memory).")
    flow_scale: float = Field(20.0, gt=0, description="Model output × flow_scale = flow in pixels.")
    min_frame_side: int = Field(32, ge=1, description="Smaller frames are refused: padding would dominate them.")
    max_tiles: int = Field(4096, ge=1, description="Most tiles one frame pair may need; larger pairs are refused "
                                                   "(413). Pairs of more tiles than the queue holds are admitted in "
                                                   "parts as room frees up, within the request's deadline.")


@dataclasses.dataclass(frozen=True)
class FlowTiler:
    tile: tuple[int, int]
    min_overlap: int

    def __post_init__(self) -> None:
        if self.min_overlap >= min(self.tile):
            raise ValueError(f"tile_overlap {self.min_overlap} must be smaller than the tile {self.tile}")

    def origins(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corners of the tiles covering a ``height × width`` frame (at least tile-sized)."""
        def axis(size: int, tile: int) -> list[int]:
            starts = list(range(0, size - tile, tile - self.min_overlap)) + [size - tile]
            return sorted(set(starts))
        th, tw = self.tile
        return [(y, x) for y in axis(height, th) for x in axis(width, tw)]

    def weights(self) -> np.ndarray:
        th, tw = self.tile
        wy = np.minimum(np.arange(th) + 1, th - np.arange(th))
        wx = np.minimum(np.arange(tw) + 1, tw - np.arange(tw))
        return np.minimum(wy[:, None], wx[None, :]).astype(np.float32)

    def pad(self, frames: np.ndarray) -> np.ndarray:
        """``(2, H, W, 3)`` frames padded by edge repetition to at least the tile size."""
        th, tw = self.tile
        extra_h, extra_w = max(0, th - frames.shape[1]), max(0, tw - frames.shape[2])
        if not (extra_h or extra_w):
            return frames
        return np.pad(frames, ((0, 0), (0, extra_h), (0, extra_w), (0, 0)), mode="edge")

    def tile_count(self, height: int, width: int) -> int:
        """How many tiles cover a ``height × width`` frame (padded to the tile size if smaller)."""
        th, tw = self.tile
        return len(self.origins(max(height, th), max(width, tw)))

    def working_bytes(self, height: int, width: int) -> int:
        """The host memory a request for ``height × width`` frames holds at its peak (see the constants)."""
        th, tw = self.tile
        frame_pixels = max(height, th) * max(width, tw)
        return frame_pixels * FRAME_PIXEL_BYTES + self.tile_count(height, width) * th * tw * TILE_PIXEL_BYTES

    def split(self, frame1: np.ndarray, frame2: np.ndarray) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
        """Tiles of a (padded) frame pair, each ``(2, h, w, 3)``, and their top-left corners."""
        frames = self.pad(np.stack([frame1, frame2]))
        th, tw = self.tile
        origins = self.origins(frames.shape[1], frames.shape[2])
        return [np.ascontiguousarray(frames[:, y:y + th, x:x + tw]) for y, x in origins], origins

    def blend(self, flows: Sequence[np.ndarray], origins: Sequence[tuple[int, int]], height: int,
              width: int) -> np.ndarray:
        """Weighted average of tile flows, cropped to the original ``height × width``."""
        th, tw = self.tile
        # In float64 every product of a float32 flow and a small integer weight is exact, so
        # where all tiles agree (a constant field, a ramp) the average gives back that value exactly.
        weights = self.weights()[..., None].astype(np.float64)
        full_h, full_w = max(height, th), max(width, tw)
        total = np.zeros((full_h, full_w, 2), dtype=np.float64)
        count = np.zeros((full_h, full_w, 1), dtype=np.float64)
        for flow, (y, x) in zip(flows, origins):
            total[y:y + th, x:x + tw] += flow * weights
            count[y:y + th, x:x + tw] += weights
        return (total / count)[:height, :width].astype(np.float32)


class OpticalFlowRunner:
    """Payload: one tile pair ``(2, h, w, 3)`` uint8. Result: its flow ``(h, w, 2)`` in pixels."""

    labelled = False

    def __init__(self, model: PerceiverForOpticalFlow, options: FlowOptions) -> None:
        self.model = model
        self.options = options
        self.tiler = FlowTiler(tuple(model.config.train_size), options.tile_overlap)

    def batch_key(self, payload: np.ndarray) -> tuple[int, ...]:
        return payload.shape

    def geometry(self) -> dict[str, Any]:
        return {"tile_size": list(self.tiler.tile), "tile_overlap": self.options.tile_overlap,
                "min_frame_side": self.options.min_frame_side, "max_tiles": self.options.max_tiles}

    def run(self, payloads: Sequence[np.ndarray]) -> list[np.ndarray]:
        frames = torch.from_numpy(np.stack(payloads)).to(self.model.device)
        patches = flow_patches(frames).to(self.model.dtype)
        encoding = self.model.encode(patches)
        flow = self.model.decode_all(encoding, chunk_size=self.options.decode_chunk).float() * self.options.flow_scale
        return list(flow.cpu().numpy())

    def warmup_payloads(self) -> list[np.ndarray]:
        th, tw = self.tiler.tile
        return [np.zeros((2, th, tw, 3), dtype=np.uint8)]


class RawFrame(RequestSchema):
    """An RGB24 frame as it is, row-major (the v2 protocol's UINT8 ``[H, W, 3]`` tensor)."""

    rgb: bytes
    height: int
    width: int


async def estimate_flow(served: ServedModel, first: bytes | RawFrame, second: bytes | RawFrame, limits: MediaLimits,
                        budget: DecodeBudget, deadline: float | None = None, *,
                        answer: Callable[[np.ndarray], T] = _field, answer_bytes_per_pixel: int = 0) -> T:
    """``answer`` of the flow ``(H, W, 2)`` float32 in pixels (x then y) from two encoded (or raw) frames.

    Flow needs the frames at full size, so the request holds its whole working memory of the
    decode budget, from before the frames are decoded until ``answer`` (which encodes the
    field for the client, holding ``answer_bytes_per_pixel``) has returned.
    """
    runner: OpticalFlowRunner = served.runner
    tiler = runner.tiler
    if isinstance(first, bytes) and isinstance(second, bytes):
        frames = await off_loop(open_frame_pair, first, second, limits)
        width, height = frames[0].size

        def decode() -> tuple[np.ndarray, np.ndarray]:
            return decode_opened_pair(frames)
    elif isinstance(first, RawFrame) and isinstance(second, RawFrame):
        height, width = first.height, first.width
        check_same_size((width, height), (second.width, second.height))
        check_image_size(width, height, limits, field="frame1")

        def decode() -> tuple[np.ndarray, np.ndarray]:
            return tuple(rgb_frame_from_raw(f.rgb, f.height, f.width, limits, field=name)  # type: ignore[return-value]
                         for f, name in ((first, "frame1"), (second, "frame2")))
    else:
        raise InvalidInput("give both frames encoded, or both raw", code="frame_kinds_differ")
    smallest = runner.options.min_frame_side
    if min(height, width) < smallest:
        raise InvalidInput(f"frames are {width}×{height}; this model needs at least {smallest} pixels on each side",
                           code="frame_too_small")
    tiles_needed = tiler.tile_count(height, width)
    if tiles_needed > runner.options.max_tiles:  # before decoding frames that would need too many
        raise PayloadTooLarge(f"frames of {width}×{height} need {tiles_needed} tiles of {tiler.tile[1]}×{tiler.tile[0]}; "
                              f"model {served.name!r} takes at most {runner.options.max_tiles} per request")
    deadline = request_deadline(served, deadline)
    working = tiler.working_bytes(height, width) + height * width * answer_bytes_per_pixel
    async with budget.hold(working, model=served.name, deadline=deadline,
                           subject=f"a flow request for {width}×{height} frames"):
        frame1, frame2 = await off_loop(decode)
        height, width = frame1.shape[:2]  # upright: EXIF may have turned both
        tiles, origins = await off_loop(tiler.split, frame1, frame2)
        del frame1, frame2
        flows = await served.batcher.submit_all(tiles, deadline=deadline, gradual=True)
        del tiles
        return await off_loop(lambda: answer(tiler.blend(flows, origins, height, width)))


FlowFormat = Literal.__getitem__(tuple(FLOW_FORMATS))


class EstimateFlowRequest(RequestSchema):
    frame1: bytes | RawFrame = Field(description="The first frame, encoded (PNG, JPEG, …).")
    frame2: bytes | RawFrame = Field(description="The second frame, the same size as the first.")
    model: str | None = None
    format: FlowFormat = Field("npy", description="How REST encodes the answer.")  # type: ignore[valid-type]


async def _estimate(served: ServedModel, request: EstimateFlowRequest, call: Call) -> Any:
    return await estimate_flow(served, request.frame1, request.frame2, call.limits, call.budget, call.deadline,
                               answer=call.encode or _field, answer_bytes_per_pixel=call.encode_bytes_per_pixel)


def flow_json(model: str, flow: np.ndarray) -> dict[str, Any]:
    """The flow and its size; REST encodes ``flow`` in the requested format, gRPC as float32 bytes."""
    return {"model": model, "height": flow.shape[0], "width": flow.shape[1], "flow": flow}


def _frames(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    def raw(frame: np.ndarray) -> RawFrame:
        return RawFrame(rgb=np.ascontiguousarray(frame).tobytes(), height=frame.shape[0], width=frame.shape[1])

    return [{"frame1": raw(arrays["FRAME1"]), "frame2": raw(arrays["FRAME2"])}]


def _flow(results: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    (flow,) = results
    return {"FLOW": flow}


OPTICAL_FLOW = Task(
    name="optical-flow",
    architectures=("PerceiverForOpticalFlow",),
    options=FlowOptions,
    runner=OpticalFlowRunner,
    request=EstimateFlowRequest,
    execute=_estimate,
    answer=flow_json,
    rest=RestRoute("/flow", "Dense optical flow between two frames of any (equal) size", files=("frame1", "frame2")),
    grpc_method="EstimateFlow",
    signature=Signature(
        inputs=(TensorSpec("FRAME1", "UINT8", (-1, -1, 3)), TensorSpec("FRAME2", "UINT8", (-1, -1, 3))),
        outputs=(TensorSpec("FLOW", "FP32", (-1, -1, 2)),),
        requests=_frames,
        tensors=_flow,
        fields={"frame1": "FRAME1", "frame2": "FRAME2"},
        rest_only={"format": "it picks REST's encoding of the field (npy, flo, png, json); v2 answers the FLOW tensor"},
    ),
)
