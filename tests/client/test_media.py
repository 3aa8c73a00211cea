"""Cutting a file into windows follows whatever geometry the server reports, the official model's too."""

from __future__ import annotations

import numpy as np
import pytest

from perceiver_serve.client.media import InputVideo
from perceiver_serve.client.video import VideoGeometry

OFFICIAL = VideoGeometry(frame_size=224, frames_per_window=16, audio_samples_per_window=30_720,
                         sample_rate=48_000, fps=25.0)
DEMO = VideoGeometry(frame_size=32, frames_per_window=4, audio_samples_per_window=256, sample_rate=1600, fps=25.0)


@pytest.mark.parametrize("geometry", [OFFICIAL, DEMO], ids=["official", "demo"])
def test_pieces_follow_the_reported_geometry(mp4, geometry):
    video = InputVideo(mp4)
    pieces = list(video.pieces(geometry))
    frames = [f for batch, _ in pieces for f in batch]
    assert len(frames) == 75  # 3 s at 25 fps from 90 frames at 30 fps
    assert {f.shape for f in frames} == {(geometry.frame_size, geometry.frame_size, 3)}
    assert len(pieces) == video.windows(geometry) == -(-75 // geometry.frames_per_window)
    per_frame = geometry.audio_samples_per_window // geometry.frames_per_window
    assert [len(audio) for batch, audio in pieces] == [len(batch) * per_frame for batch, _ in pieces]
    tone = np.concatenate([audio for _, audio in pieces])
    assert 0.3 < np.abs(tone[per_frame:-per_frame]).max() < 0.5  # the 0.4 tone, mixed to mono


def test_frames_are_centre_cropped_like_the_server_does(mp4):
    """The 96×72 input keeps its middle 72×72; the pattern's columns 12…83 survive, scaled."""
    first = next(InputVideo(mp4).frames(72, 30.0))
    from tests.client.clips import moving_pattern

    expected = moving_pattern(0, 72, 96)[:, 12:84]
    assert np.abs(first.astype(int) - expected.astype(int)).mean() < 6  # H.264 and YUV 4:2:0 on the way
