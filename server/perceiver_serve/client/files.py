"""A video file in, its reconstruction and labels out: what ``perceiver-client reconstruct`` does.

Outputs are written beside their final names and moved there only once everything has
succeeded, so a failure, a server gone away or Ctrl-C leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InputError, PerceiverError
from .video import StreamStarted, VideoChunk, WindowAssembler

if TYPE_CHECKING:
    from .client import Client


class ReconstructionProgress(Protocol):
    def begin(self, windows: int | None, has_audio: bool) -> None: ...
    def window_sent(self) -> None: ...
    def chunk_received(self) -> None: ...
    def window_done(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    output: Path
    model: str
    frames: int
    windows: int
    fps: float
    height: int
    width: int
    audio: bool                   # whether the input had an audio track (else it was sent as silence)
    labels: list[dict[str, Any]]  # per window: window, real_frames, padded, predictions


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A file written beside ``path`` and moved onto it only when the block succeeds."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def reconstruct_file(client: "Client", source: str | os.PathLike, output: str | os.PathLike, *,
                     labels: str | os.PathLike | None = None, model: str | None = None,
                     chunks_per_window: int | None = None, top_k: int | None = None,
                     timeout: float | None = None, progress: ReconstructionProgress | None = None
                     ) -> Reconstruction:
    """Stream ``source`` through the video model; write the reconstruction (MP4) and the labels (JSON)."""
    from .media import InputVideo, OutputVideo  # PyAV: only files need it

    video = InputVideo(source)  # a bad file fails here, before the server is asked anything
    if not Path(output).parent.is_dir():  # and an output that can't be written, before the video is streamed
        raise InputError(f"{output}: its folder does not exist")
    name, geometry = client.video_geometry(model)
    frames = video.frame_count(geometry.fps)
    # A stream over the model's limit is refused once it passes it: say so before a frame is sent, where the
    # container says how long it is (a window's worth of slack for its rounding; the server has the last word).
    if frames is not None and geometry.max_frames is not None and \
            frames > geometry.max_frames + geometry.frames_per_window:
        raise PerceiverError("too_many_frames", f"{source} is {video.duration:.1f} s, about {frames} frames at the "
                             f"model's {geometry.fps:g} fps; model {name!r} takes at most {geometry.max_frames} frames "
                             f"({geometry.max_frames / geometry.fps:g} s) a stream: cut the video into shorter parts")
    if progress is not None:
        progress.begin(video.windows(geometry), video.has_audio)

    def pieces():
        for piece in video.pieces(geometry):
            yield piece
            if progress is not None:
                progress.window_sent()

    writer: OutputVideo | None = None
    assembler: WindowAssembler | None = None
    per_window: list[dict[str, Any]] = []
    try:
        for event in client.reconstruct_video(pieces(), model=name, chunks_per_window=chunks_per_window,
                                              top_k=top_k, windows=False, timeout=timeout):
            if isinstance(event, StreamStarted):
                assembler = WindowAssembler(event)
                writer = OutputVideo(output, event.height, event.width, geometry.fps, event.sample_rate)
                continue
            if isinstance(event, VideoChunk) and progress is not None:
                progress.chunk_received()
            if assembler is not None and (window := assembler.add(event)) is not None:
                writer.write(window.frames, window.audio)
                per_window.append({"window": window.index, "real_frames": window.labels.real_frames,
                                   "padded": window.labels.padded,
                                   "predictions": [p.model_dump() for p in window.labels.predictions]})
                if progress is not None:
                    progress.window_done()
        if writer is None or assembler is None:
            raise PerceiverError("protocol_error", "the stream ended before it started")
        with contextlib.ExitStack() as stack:
            if labels is not None:
                partial = stack.enter_context(replacing(Path(labels)))
                partial.write_text(json.dumps(per_window, indent=1))
            writer.commit()  # the labels move into place after the video, on the way out
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    started = assembler.started
    return Reconstruction(Path(output), name, writer.frames, len(per_window), geometry.fps, started.height,
                          started.width, video.has_audio, per_window)
