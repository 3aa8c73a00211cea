"""Video + audio autoencoding: synthetic clips of moving shapes, each shape class with its own tone.

A clip is 4 frames of 32×32 at 25 fps (the model's window) on a background of two colours
blended in a random direction, with one shape of random colour and size moving in a straight
line, and 256 samples of audio at 1,600 Hz: the shape's tone (one frequency per class) at a
random phase and loudness. Frames go through the server's ``video_frames`` (they are drawn at
64×64 and shrunk, as a client's bigger frames are); the label input is masked, as the server
always masks it, so the label is predicted from the picture and the sound.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from perceiver_serve.modeling import video_frames

from .common import RunOptions, Trained, batching, build, checkpoint_mb, config, fit, minutes

NAME = "video-autoencoder"
SUMMARY = "Demo model: autoencodes synthetic clips of moving shapes with their tones, trained here."
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
TONES_HZ = (100.0, 160.0, 230.0, 320.0, 430.0, 560.0)
FPS = 25
SAMPLES_PER_FRAME = 64
FRAMES = 4
SIZE = 32
LOSS_PIXELS = 512  # of the 4,096 per clip, a fresh sample each step
DRAWN = 64  # clips are drawn at this size, as a client's frames would be, then resized by the server's code

CONFIG = config(
    "PerceiverForMultimodalAutoencoding", SHAPES,
    num_latents=64, d_latents=64, num_blocks=1, num_self_attends_per_block=2,
    num_self_attention_heads=4, num_cross_attention_heads=1, qk_channels=64, v_channels=64,
    num_frames=FRAMES, image_size=SIZE, output_shape=(1, FRAMES, SIZE, SIZE), audio_samples_per_frame=SAMPLES_PER_FRAME,
    samples_per_patch=16, output_num_channels=64, label_trainable_num_channels=64,
)


def _mask(shape: str, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Where ``shape`` of ``radius`` centred at the origin covers the points ``(x, y)``."""
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return x**2 + y**2 <= radius**2
    if shape == "square":
        return np.maximum(ax, ay) <= radius * 0.85
    if shape == "triangle":
        return (y <= radius * 0.7) & (y >= 2 * ax - radius * 1.1)
    if shape == "cross":
        return (np.minimum(ax, ay) <= radius * 0.3) & (np.maximum(ax, ay) <= radius)
    if shape == "ring":
        r2 = x**2 + y**2
        return (r2 <= radius**2) & (r2 >= (radius * 0.55) ** 2)
    return ax + ay <= radius  # diamond


def clip(label: int, rng: np.random.Generator, frames: int = FRAMES, size: int = DRAWN) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(T, size, size, 3)`` uint8 and mono audio ``(T · 64,)`` float32 of one moving shape."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    a, b = rng.uniform(0, 0.6, 3), rng.uniform(0, 0.6, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = ((xs * math.cos(angle) + ys * math.sin(angle)) / size * 0.7 + 0.5).clip(0, 1)[..., None]
    background = a * (1 - t) + b * t
    colour = rng.uniform(0.35, 1.0, 3)
    colour[rng.integers(3)] = rng.uniform(0.85, 1.0)  # a bright shape on the darker background
    radius = rng.uniform(0.14, 0.24) * size
    start = rng.uniform(radius, size - radius, 2)
    velocity = rng.uniform(-0.06, 0.06, 2) * size
    pictures = []
    for f in range(frames):
        cx, cy = np.clip(start + velocity * f, radius * 0.5, size - radius * 0.5)
        inside = _mask(SHAPES[label], xs - cx, ys - cy, radius)[..., None]
        pictures.append(np.where(inside, colour, background))
    video = (np.stack(pictures) * 255).round().astype(np.uint8)
    n = frames * SAMPLES_PER_FRAME
    seconds = np.arange(n) / (FPS * SAMPLES_PER_FRAME)
    audio = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * TONES_HZ[label] * seconds + rng.uniform(0, 2 * np.pi))
    return video, audio.astype(np.float32)


def batch(rng: np.random.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = rng.integers(len(SHAPES), size=count)
    clips = [clip(int(label), rng) for label in labels]
    images = torch.stack([video_frames(v, SIZE) for v, _ in clips])
    audio = torch.from_numpy(np.stack([a for _, a in clips]))
    return images, audio, torch.from_numpy(labels)


def reconstruct(model: torch.nn.Module, images: torch.Tensor, audio: torch.Tensor,
                image_points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``image`` ``(B, P, 3)`` at ``image_points`` (default: every pixel), ``audio`` ``(B, S)``, ``label`` logits."""
    points = torch.arange(model.num_image_points) if image_points is None else image_points
    return model(images, audio, image_points=points, audio_points=torch.arange(model.num_audio_points))


def loss(model: torch.nn.Module, data) -> torch.Tensor:
    images, audio, labels, points = data
    out = reconstruct(model, images, audio, points)
    target_image = images.permute(0, 1, 3, 4, 2).reshape(images.shape[0], -1, 3)[:, points]
    return (F.mse_loss(out["image"], target_image) + F.mse_loss(out["audio"], audio)
            + 0.02 * F.cross_entropy(out["label"], labels))


def psnr(mse: float, peak: float = 1.0) -> float:
    return 10 * math.log10(peak**2 / max(mse, 1e-12))


def evaluate(model: torch.nn.Module, seed: int, count: int) -> dict[str, float]:
    """PSNR (peak 1) of video and audio and label accuracy on fresh clips."""
    images, audio, labels = batch(np.random.default_rng(seed), count)
    with torch.no_grad():
        out = reconstruct(model, images, audio)
    target = images.permute(0, 1, 3, 4, 2).reshape(count, -1, 3)
    return {
        "video_psnr": psnr(F.mse_loss(out["image"], target).item()),
        "audio_psnr": psnr(F.mse_loss(out["audio"], audio).item()),
        "label_accuracy": float((out["label"].argmax(-1) == labels).float().mean()),
    }


def strip(model: torch.nn.Module, seed: int) -> np.ndarray:
    """Input frames above their reconstruction, one clip per shape, 4× enlarged."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in range(len(SHAPES)):
        video, audio = clip(label, rng)
        images = video_frames(video, SIZE)[None]
        with torch.no_grad():
            out = reconstruct(model, images, torch.from_numpy(audio)[None])["image"].reshape(FRAMES, SIZE, SIZE, 3)
        given = images[0].permute(0, 2, 3, 1)
        rows.append(torch.cat([torch.cat(list(given), 1), torch.cat(list(out.clamp(0, 1)), 1)], 1))
    picture = (torch.cat(rows, 0).numpy() * 255).round().astype(np.uint8)
    return picture.repeat(4, axis=0).repeat(4, axis=1)


def train(run: RunOptions, say=print) -> Trained:
    started = time.monotonic()
    rng = np.random.default_rng(run.seed)
    points = torch.Generator().manual_seed(run.seed)

    def batches():
        while True:  # the loss needs a sample of the pixels, not every one (decoding is most of the work)
            yield *batch(rng, 8), torch.randperm(FRAMES * SIZE * SIZE, generator=points)[:LOSS_PIXELS]

    model = build(CONFIG, run.seed + 5)
    steps = run.steps(1500)
    fit(model, batches(), loss, steps=steps, lr=1e-3, name=NAME, say=say)
    seconds = time.monotonic() - started
    figures = {"train_seconds": seconds, "train_clips": steps * 8, "checkpoint_mb": checkpoint_mb(model),
               **evaluate(model, run.seed + 400, 32 if run.quick else 512)}
    say(f"{NAME}: {figures}")
    options = dict(chunks_per_window=8, fps=FPS, sample_rate=FPS * SAMPLES_PER_FRAME)
    return Trained(model, "video-autoencoding", batching(2, max_queue=32, timeout_ms=60000), options,
                   card(figures), figures, pictures={"frames.png": strip(model, run.seed + 401)})


def card(f: dict[str, float]) -> str:
    tones = ", ".join(f"{s} {hz:.0f} Hz" for s, hz in zip(SHAPES, TONES_HZ))
    return f"""# video-autoencoder: moving shapes with their tones (demo model)

A small `PerceiverForMultimodalAutoencoding` trained on this machine to reconstruct short
synthetic clips (video + audio) through 64 latents and to name the shape in them. It is a
**demo model**: it shows the streaming `ReconstructVideo` RPC doing its job offline. The
official `hf://deepmind/multimodal-perceiver` (Kinetics-700) is the real thing (see
[models/README.md](../README.md)).

- **Window:** {FRAMES} frames of {SIZE}×{SIZE} at {FPS} fps with {FRAMES * SAMPLES_PER_FRAME} audio samples at {FPS * SAMPLES_PER_FRAME} Hz
  (`sample_rate = {FPS * SAMPLES_PER_FRAME}`); bigger frames are centre-cropped square and resized by the server.
- **Labels:** {', '.join(f'`{s}`' for s in SHAPES)} (`checkpoint/config.json`); the label input is masked, so the
  label is predicted from picture and sound.
- **Network:** 64 latents × 64, 2 self-attention layers; checkpoint {f['checkpoint_mb']:.1f} MB.

## Data

Generated by `scripts/demo_training/video.py` (no files): a two-colour gradient background, one
bright shape of random colour and size moving in a straight line, and its tone at a random
phase and loudness ({tones}). {f['train_clips']:,} clips were drawn for training; the figures
below come from fresh clips of another seed.

## Training

```bash
make demo-models            # or: .venv/bin/python scripts/train_demo_models.py --only {NAME}
```

Seeded and deterministic on a given machine and thread count; it took {minutes(f['train_seconds'])} with one torch
thread on a 2-core machine shared with other work.

## Held-out results

| measure (fresh clips) | value |
| --- | --- |
| video PSNR (peak 1) | {f['video_psnr']:.1f} dB |
| audio PSNR (peak 1) | {f['audio_psnr']:.1f} dB |
| label accuracy | {f['label_accuracy']:.1%} |

`tests/meaning/` checks video PSNR ≥ 20 dB and the labels over the gRPC stream. Input frames
(odd rows) and their reconstruction (even rows), one clip per shape:

![input and reconstructed frames](frames.png)

## Limits

It knows one shape on a smooth background with a pure tone. Real video comes back as a blur
of its average colours, real sound as a hum, and the label is one of the six shapes.
"""
