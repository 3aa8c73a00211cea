"""perceiver-client reconstruct: a real video file through the real server, and what it leaves behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import av
import numpy as np
import pytest

from perceiver_serve.client import Client, ReconstructedWindow
from perceiver_serve.client.cli import main
from perceiver_serve.client.media import InputVideo
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..support import ServerProcess, grpc_channel
from .clips import make_clip

FPS, SIZE, FRAMES_PER_WINDOW, RATE = 25, 32, 4, 1600  # the demo model's, as the server reports them


def reconstruct(capsys, address, source, output, *extra: str) -> tuple[int, str]:
    code = main([*address, "reconstruct", str(source), "-o", str(output), *extra])
    return code, capsys.readouterr().err


def test_an_mp4_comes_back_at_the_model_geometry_with_audio_and_labels(capsys, address, mp4, tmp_path):
    output, labels = tmp_path / "out.mp4", tmp_path / "labels.json"
    code, _ = reconstruct(capsys, address, mp4, output, "--labels", str(labels))
    assert code == 0
    with av.open(str(output)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (SIZE, SIZE)
        assert float(video.average_rate) == FPS
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 75  # 3 s at 25 fps (the input: 90 frames at 30 fps)
    assert frames / FPS == pytest.approx(3.0)
    windows = json.loads(labels.read_text())
    assert len(windows) == 19 and [w["window"] for w in windows] == list(range(19))  # 18 full + 3 padded frames
    assert windows[-1]["padded"] and windows[-1]["real_frames"] == 3
    assert all(len(w["predictions"]) == 5 for w in windows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json", "out.mp4"]


def test_a_video_longer_than_the_model_takes_is_refused_before_a_frame_is_sent(capsys, address, process, tmp_path):
    """The container says how long the video is and /models the model's max_frames_per_stream (1024 here,
    41 s at 25 fps): the client refuses up front, with both numbers, instead of streaming 41 s first."""
    import time

    long = make_clip(tmp_path / "long.mp4", seconds=44.0, fps=25, height=16, width=16, audio_codec=None)
    output = tmp_path / "out.mp4"
    started = time.monotonic()
    code, err = reconstruct(capsys, address, long, output)
    assert code == 1 and "too_many_frames" in err and "1100 frames" in err and "at most 1024" in err, err
    assert time.monotonic() - started < 10 and not output.exists()


def test_the_windows_equal_the_raw_grpc_stream_of_the_same_frames(process, mp4, tmp_path):
    """The library's assembled windows are exactly the chunks a hand-built raw stream returns."""
    with Client(process.url, grpc_address=f"127.0.0.1:{process.grpc_port}") as client:
        name, geometry = client.video_geometry()
        pieces = list(InputVideo(mp4).pieces(geometry))[:3]
        got = [w for w in client.reconstruct_video(pieces) if isinstance(w, ReconstructedWindow)]

    def requests():
        yield pb.ReconstructVideoRequest(config=pb.StreamConfig(model=name))
        for frames, audio in pieces:
            yield pb.ReconstructVideoRequest(media=pb.MediaPiece(
                frames=[pb.Frame(raw=pb.RawFrame(height=SIZE, width=SIZE, rgb=f.tobytes())) for f in frames],
                audio=pb.Audio(raw=pb.RawAudio(pcm_f32le=audio.astype("<f4").tobytes(), sample_rate=RATE))))

    with grpc_channel(process.grpc_port) as channel:
        replies = list(perceiver_pb2_grpc.PerceiverStub(channel).ReconstructVideo(requests(), timeout=60))
    assert len(got) == 3
    for window in got:
        rgb = np.zeros((FRAMES_PER_WINDOW * SIZE * SIZE, 3), np.float32)
        for r in replies:
            if r.HasField("chunk") and r.chunk.window == window.index:
                values = np.frombuffer(r.chunk.rgb, "<f4").reshape(-1, 3)
                rgb[r.chunk.pixel_start:r.chunk.pixel_start + len(values)] = values
        np.testing.assert_array_equal(window.frames.reshape(-1, 3), rgb)


def test_the_mp4_shows_the_reconstructed_pixels(capsys, process, address, mp4, tmp_path):
    output = tmp_path / "out.mp4"
    assert reconstruct(capsys, address, mp4, output)[0] == 0
    with Client(process.url, grpc_address=f"127.0.0.1:{process.grpc_port}") as client:
        _, geometry = client.video_geometry()
        pieces = list(InputVideo(mp4).pieces(geometry))[:2]
        windows = [w for w in client.reconstruct_video(pieces) if isinstance(w, ReconstructedWindow)]
    expected = np.clip(np.concatenate([w.frames for w in windows]) * 255, 0, 255)
    with av.open(str(output)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(8))])
    assert np.abs(decoded.astype(np.float32) - expected).mean() < 6  # H.264 at crf 12, 4:2:0


@pytest.mark.parametrize("kind", ["webm", "no-audio"])
def test_other_containers_and_a_silent_video(capsys, address, tmp_path, kind):
    if kind == "webm":
        source = make_clip(tmp_path / "in.webm", seconds=1.0, video_codec="libvpx-vp9", audio_codec="libopus",
                           sample_rate=48_000, height=64, width=48)
    else:
        source = make_clip(tmp_path / "in.mp4", seconds=1.0, audio_codec=None)
    output = tmp_path / "out.mp4"
    code, err = reconstruct(capsys, address, source, output)
    assert code == 0
    assert ("no audio track, sending silence" in err) == (kind == "no-audio")
    with av.open(str(output)) as container:
        assert len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == FPS


@pytest.mark.parametrize("content", [b"this is not a video at all\n" * 40, "truncated"])
def test_a_file_that_is_not_a_readable_video_exits_2_and_writes_nothing(capsys, address, mp4, tmp_path, content):
    source = tmp_path / "in.mp4"
    source.write_bytes(mp4.read_bytes()[:3000] if content == "truncated" else content)
    code, err = reconstruct(capsys, address, source, tmp_path / "out.mp4", "--labels", str(tmp_path / "l.json"))
    assert code == 2
    assert err.startswith(f"perceiver-client: {source}:") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_server_that_goes_away_mid_stream_leaves_no_file(tmp_path):
    source = make_clip(tmp_path / "in.mp4", seconds=8.0, height=48, width=48)
    with ServerProcess(grpc=True) as proc:
        proc.wait()
        client = subprocess.Popen(
            [sys.executable, "-m", "perceiver_serve.client.cli", "--url", proc.url, "--grpc-address",
             f"127.0.0.1:{proc.grpc_port}", "reconstruct", str(source), "-o", str(tmp_path / "out.mp4"),
             "--chunks-per-window", "64"], stderr=subprocess.PIPE, text=True)
        first = client.stderr.readline()
        assert first.startswith("window 1/"), first
        os.kill(proc.process.pid, signal.SIGKILL)
        err = client.stderr.read()
        assert client.wait(60) == 1
    assert err.splitlines()[-1].startswith("perceiver-client: unreachable"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_deadline_on_the_stream_ends_it_cleanly(capsys, address, tmp_path):
    source = make_clip(tmp_path / "in.mp4", seconds=8.0, height=48, width=48)
    code, err = reconstruct(capsys, address, source, tmp_path / "out.mp4", "--timeout", "1",
                            "--chunks-per-window", "64")
    assert code == 1 and err.splitlines()[-1].startswith("perceiver-client: deadline_exceeded"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
