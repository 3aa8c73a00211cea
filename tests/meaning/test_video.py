"""Held-out synthetic clips through the ReconstructVideo stream: reconstruction quality and labels.

One stream carries a clip of every shape (each clip is one window), sent at the size the
trainer draws them (64×64, shrunk by the server) with their tones; the reassembled chunks are
compared with what the server was sent (its frames at the model's size, the audio as is).
"""

import numpy as np
from demo_training import video

from perceiver_serve.client import Client
from perceiver_serve.modeling import video_frames
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..grpc.test_video import config, media, raw_audio, raw_frame, reassemble
from ..support import REPO

CLIPS_PER_SHAPE = 4


def test_reconstruction_and_labels_over_the_stream(channel):
    rng = np.random.default_rng(777)  # training draws from seed 0, the model card's figures from 400
    labels = [label for _ in range(CLIPS_PER_SHAPE) for label in range(len(video.SHAPES))]
    clips = [video.clip(label, rng) for label in labels]
    requests = [config(model=video.NAME)]
    requests += [media([raw_frame(f) for f in frames], raw_audio(audio)) for frames, audio in clips]
    stub = perceiver_pb2_grpc.PerceiverStub(channel)
    started, windows = reassemble(stub.ReconstructVideo(iter(requests), timeout=300))
    assert started.sample_rate == video.FPS * video.SAMPLES_PER_FRAME and len(windows) == len(clips)

    video_errors, audio_errors, right = [], [], 0
    for (frames, audio), label, window in zip(clips, labels, windows):
        assert not np.isnan(window["image"]).any() and not np.isnan(window["audio"]).any()  # every chunk came
        sent = video_frames(frames, video.SIZE).permute(0, 2, 3, 1).reshape(-1, 3).numpy()
        video_errors.append(np.mean((window["image"] - sent) ** 2))
        audio_errors.append(np.mean((window["audio"] - audio) ** 2))
        right += window["labels"].predictions[0].label == video.SHAPES[label]
    assert video.psnr(float(np.mean(video_errors))) >= 20.0
    assert video.psnr(float(np.mean(audio_errors))) >= 20.0
    assert right / len(clips) >= 0.9


def test_the_readme_clip_is_named_shape_by_shape(process, tmp_path):
    """``perceiver-client reconstruct examples/shapes.mov`` (the README's example) names its six windows in order."""
    with Client(process.url, grpc_address=f"127.0.0.1:{process.grpc_port}") as client:
        done = client.reconstruct_file(REPO / "examples" / "shapes.mov", tmp_path / "out.mp4")
    assert [window["predictions"][0]["label"] for window in done.labels] == list(video.SHAPES)
