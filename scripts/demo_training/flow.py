"""Optical flow: frame pairs synthesised from scikit-image's photos and textures.

Each training pair is a 48×64 tile (the model's ``train_size``) cut from a photo, and the
same place after a known motion: a translation of up to ±8 px, in half the pairs also a
small rotation and scaling, and in a quarter a second layer (a disc cut from another
photo) moving on its own over the first and hiding part of it. The ground-truth flow is
exact (bilinear sampling of the source photo), frames are rounded to uint8 and go through
the server's ``flow_patches``; the model's output × ``flow_scale`` (20) is flow in pixels.
The weights are set by construction (``flow_start.py``: one latent per pixel, patch
matching by attention, a vote); training pairs choose its four free numbers from a grid.

Held out completely: scikit-learn's ``china.jpg`` and ``flower.jpg`` (evaluation only),
and the Middlebury motorcycle stereo pair.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from perceiver_serve.media.flow_colour import flow_to_rgb
from perceiver_serve.modeling import flow_patches
from perceiver_serve.tasks.flow import FlowTiler

from .common import RunOptions, Trained, batching, build, checkpoint_mb, config, minutes
from .flow_start import Sharpness, pixel_matching

NAME = "optical-flow"
SUMMARY = "Demo model: optical flow of small motions (up to 8 px) by patch matching, built and fitted here on synthetic pairs."
TILE = (48, 64)
FLOW_SCALE = 20.0
MAX_SHIFT = 8.0
OVERLAP = 20
#: scikit-image pictures trained on (china.jpg and flower.jpg, from scikit-learn, are never loaded).
TRAINING_PICTURES = ("astronaut", "camera", "chelsea", "coffee", "brick", "grass", "gravel", "rocket", "moon",
                     "coins", "hubble_deep_field", "retina", "immunohistochemistry", "page", "text", "cell", "clock")
#: Torch threads the shipped model was fitted with (its choice of free numbers is scored with them).
THREADS = 2

CONFIG = config(
    "PerceiverForOpticalFlow",
    num_latents=TILE[0] * TILE[1], d_latents=192, num_blocks=1, num_self_attends_per_block=2,
    num_self_attention_heads=1, num_cross_attention_heads=1, qk_channels=64, v_channels=192,
    cross_attention_widening_factor=1, self_attention_widening_factor=1, train_size=TILE,
)
#: The construction's free numbers tried on training pairs (``flow_start.Sharpness``): β, conf, vote.
SHARPNESS_GRID = tuple(Sharpness(beta, conf, vote, conf) for beta in (1000.0, 3000.0) for conf in (1000.0, 3000.0)
                       for vote in (0.03, 0.1))
#: Training pairs each setting is scored on (made as the training pairs are: all kinds of motion).
FIT_PAIRS = 32


def pictures(names: tuple[str, ...] = TRAINING_PICTURES) -> list[torch.Tensor]:
    """scikit-image pictures as ``(1, 3, H, W)`` float32 in [0, 255]."""
    import skimage.data

    out = []
    for name in names:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        out.append(torch.from_numpy(image[..., :3].astype(np.float32)).permute(2, 0, 1)[None])
    return out


def held_out_pictures() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    return {name.rsplit("/", 1)[-1]: image for name, image in zip(data.filenames, data.images)}


def _sample(picture: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``picture`` at pixel coordinates ``points`` ``(H, W, 2)`` (x, y) → ``(H, W, 3)``."""
    h, w = picture.shape[-2:]
    grid = torch.stack([points[..., 0] / (w - 1) * 2 - 1, points[..., 1] / (h - 1) * 2 - 1], dim=-1)
    return F.grid_sample(picture, grid[None], mode="bilinear", padding_mode="border", align_corners=True)[0].permute(1, 2, 0)


def _grid() -> torch.Tensor:
    th, tw = TILE
    ys, xs = torch.meshgrid(torch.arange(th, dtype=torch.float32), torch.arange(tw, dtype=torch.float32), indexing="ij")
    return torch.stack([xs - (tw - 1) / 2, ys - (th - 1) / 2], dim=-1)  # (H, W, 2), centred


def pair(pics: list[torch.Tensor], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One training pair: frames ``(2, 48, 64, 3)`` uint8 and the flow ``(48, 64, 2)`` in pixels."""
    grid = _grid()
    picture = pics[rng.integers(len(pics))]
    h, w = picture.shape[-2:]
    margin = 60
    centre = torch.tensor([rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)], dtype=torch.float32)
    shift = torch.tensor(rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * (rng.random() ** 0.5 if rng.random() < 0.3 else 1),
                         dtype=torch.float32)
    angle, scale = 0.0, 1.0
    if rng.random() < 0.5:
        angle, scale = math.radians(rng.uniform(-5, 5)), rng.uniform(0.93, 1.07)
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    motion = torch.tensor([[c, -s], [s, c]])
    # a point at x in frame 1 is at motion·x + shift in frame 2
    frame1 = _sample(picture, centre + grid)
    inverse = torch.linalg.inv(motion)
    frame2 = _sample(picture, centre + (grid - shift) @ inverse.T)
    flow = grid @ motion.T + shift - grid
    if rng.random() < 0.25:
        frame1, frame2, flow = _add_layer(pics, rng, grid, frame1, frame2, flow)
    frames = torch.stack([frame1, frame2]).round().clamp(0, 255).to(torch.uint8).numpy()
    return frames, flow.numpy()


def _add_layer(pics, rng, grid, frame1, frame2, flow):
    """A disc of another picture at ``position`` in frame 1 moving by its own ``shift``."""
    other = pics[rng.integers(len(pics))]
    h, w = other.shape[-2:]
    source = torch.tensor([rng.uniform(60, w - 60), rng.uniform(60, h - 60)], dtype=torch.float32)
    position = torch.tensor([rng.uniform(-24, 24), rng.uniform(-16, 16)], dtype=torch.float32)
    shift = torch.tensor(rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2), dtype=torch.float32)
    radii = torch.tensor(rng.uniform(8, 20, 2), dtype=torch.float32)

    def inside(offset: torch.Tensor) -> torch.Tensor:  # soft-edged disc mask (H, W, 1)
        d = (((grid - offset) / radii) ** 2).sum(-1).sqrt()
        return (1.5 * (1 - d) * radii.min()).clamp(0, 1)[..., None]

    m1, m2 = inside(position), inside(position + shift)
    layer1 = _sample(other, source + grid - position)
    layer2 = _sample(other, source + grid - position - shift)
    return (frame1 * (1 - m1) + layer1 * m1, frame2 * (1 - m2) + layer2 * m2,
            torch.where(m1 > 0.5, shift.expand_as(flow), flow))


def estimate(model: torch.nn.Module, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
    """Flow ``(H, W, 2)`` in pixels for a frame pair of any size: the server's tiling and blending."""
    tiler = FlowTiler(TILE, OVERLAP)
    tiles, origins = tiler.split(frame1, frame2)
    flows = []
    with torch.no_grad():
        for start in range(0, len(tiles), 16):
            frames = torch.from_numpy(np.stack(tiles[start:start + 16]))
            flows.extend((model(flow_patches(frames)) * FLOW_SCALE).numpy())
    return tiler.blend(flows, origins, frame1.shape[0], frame1.shape[1])


def translated(image: np.ndarray, dx: int, dy: int, top: int, left: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two crops of ``image``; the content of the first appears ``(dx, dy)`` pixels further in the second."""
    h, w = size
    return image[top:top + h, left:left + w], image[top - dy:top - dy + h, left - dx:left - dx + w]


def epe(flow: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    error = np.linalg.norm(flow - truth, axis=-1)
    return float(error[valid].mean() if valid is not None else error.mean())


#: The held-out translation the server test sends (flower.jpg, 144×192: 20 tiles).
FLOWER_SHIFT = (3, -2)
FLOWER_CROP = (140, 220, (144, 192))  # top, left, (height, width)


def flower_pair() -> tuple[np.ndarray, np.ndarray]:
    top, left, size = FLOWER_CROP
    return translated(held_out_pictures()["flower.jpg"], *FLOWER_SHIFT, top, left, size)


def example_files() -> dict[str, bytes]:
    """The held-out flower pair of the server test, for the README's example."""
    out = {}
    for name, frame in zip(("flow-frame1.png", "flow-frame2.png"), flower_pair()):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        out[name] = buffer.getvalue()
    return out


def _flow_or_zero(model: torch.nn.Module | None, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
    """The model's flow, or with no model the zero-flow answer (the baseline every figure is set against)."""
    if model is None:
        return np.zeros((*frame1.shape[:2], 2), dtype=np.float32)
    return estimate(model, frame1, frame2)


def translation_epe(model: torch.nn.Module | None, seed: int, count: int) -> float:
    """Mean EPE over random whole-pixel translations of crops of both held-out photos (``None``: zero flow)."""
    rng, errors = np.random.default_rng(seed), []
    for i in range(count):
        image = list(held_out_pictures().values())[i % 2]
        dx, dy = (int(v) for v in rng.integers(-8, 9, 2))
        top, left = int(rng.integers(10, image.shape[0] - 110)), int(rng.integers(10, image.shape[1] - 140))
        f1, f2 = translated(image, dx, dy, top, left, (96, 128))
        errors.append(epe(_flow_or_zero(model, f1, f2), np.broadcast_to(np.float32([dx, dy]), (96, 128, 2))))
    return float(np.mean(errors))


def layered_epe(model: torch.nn.Module | None, seed: int, count: int) -> float:
    """EPE on tiles made like the layered training pairs, from the held-out photos only (``None``: zero flow)."""
    held = [torch.from_numpy(im.astype(np.float32)).permute(2, 0, 1)[None] for im in held_out_pictures().values()]
    rng, errors = np.random.default_rng(seed), []
    grid = _grid()
    for _ in range(count):
        picture = held[rng.integers(2)]
        h, w = picture.shape[-2:]
        centre = torch.tensor([rng.uniform(60, w - 60), rng.uniform(60, h - 60)], dtype=torch.float32)
        shift = torch.tensor(rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2), dtype=torch.float32)
        frame1, frame2 = _sample(picture, centre + grid), _sample(picture, centre + grid - shift)
        frame1, frame2, flow = _add_layer(held, rng, grid, frame1, frame2, shift.expand(*TILE, 2).clone())
        frames = torch.stack([frame1, frame2]).round().clamp(0, 255).to(torch.uint8).numpy()
        errors.append(epe(_flow_or_zero(model, frames[0], frames[1]), flow.numpy()))
    return float(np.mean(errors))


def motorcycle(model: torch.nn.Module) -> tuple[dict[str, float], np.ndarray]:
    """EPE on the Middlebury motorcycle pair (flow = −disparity), the zero-flow EPE, and the colour picture."""
    import skimage.data

    left, right, disparity = skimage.data.stereo_motorcycle()
    valid = np.isfinite(disparity)
    truth = np.stack([-np.where(valid, disparity, 0), np.zeros_like(disparity)], axis=-1)
    flow = estimate(model, left, right)
    figures = {
        "motorcycle_epe": epe(flow, truth, valid),
        "motorcycle_zero_epe": epe(np.zeros_like(truth), truth, valid),
        "motorcycle_max_disparity": float(disparity[valid].max()),
    }
    return figures, flow_to_rgb(flow)


def train(run: RunOptions, say=print) -> Trained:
    started = time.monotonic()
    pics = pictures()
    rng = np.random.default_rng(run.seed)
    model = build(CONFIG, run.seed + 4).eval()
    made = [pair(pics, rng) for _ in range(2 if run.quick else FIT_PAIRS)]
    inputs = flow_patches(torch.from_numpy(np.stack([m[0] for m in made])))  # once, not per setting
    truth = torch.from_numpy(np.stack([m[1] for m in made]))
    scores = {}
    for sharp in SHARPNESS_GRID[:1] if run.quick else SHARPNESS_GRID:
        pixel_matching(model, sharp, FLOW_SCALE)
        with torch.no_grad():
            flow = torch.cat([model(inputs[i:i + 8]) for i in range(0, len(inputs), 8)]) * FLOW_SCALE
        scores[sharp] = float((flow - truth).norm(dim=-1).mean())
        say(f"{NAME}: {sharp} -> {scores[sharp]:.3f} px on {len(made)} training pairs")
    best = min(scores, key=scores.get)
    pixel_matching(model, best, FLOW_SCALE)
    seconds = time.monotonic() - started
    frame1, frame2 = flower_pair()
    flower = estimate(model, frame1, frame2)
    figures = {
        "train_seconds": seconds,
        "threads": run.threads,
        "train_pairs": len(made),
        "sharpness": dataclasses.asdict(best),
        "fit_epe": scores[best],
        "flower_epe": epe(flower, np.broadcast_to(np.float32(FLOWER_SHIFT), flower.shape)),
        "translation_epe": translation_epe(model, run.seed + 300, 2 if run.quick else 16),
        "translation_zero_epe": translation_epe(None, run.seed + 300, 2 if run.quick else 16),
        "layered_epe": layered_epe(model, run.seed + 301, 2 if run.quick else 64),
        "layered_zero_epe": layered_epe(None, run.seed + 301, 2 if run.quick else 64),
        "checkpoint_mb": checkpoint_mb(model),
    }
    picture = None
    if not run.quick:
        more, picture = motorcycle(model)
        figures.update(more)
    say(f"{NAME}: {figures}")
    # Two tiles a batch: one latent per pixel costs about 30 MB of transient memory a tile (504 MB
    # at 16), and the compute per tile hardly changes with the batch on a CPU. Ten minutes a request:
    # at about two tiles a second on 2 cores, a 1024×436 pair (345 tiles) takes three.
    return Trained(model, "optical-flow", batching(2, timeout_ms=600_000),
                   dict(tile_overlap=OVERLAP, decode_chunk=16384), card(figures), figures,
                   pictures={} if picture is None else {"motorcycle-flow.png": picture})


def card(f: dict[str, float]) -> str:
    moto = (
        f"| Middlebury motorcycle stereo pair (741×500, disparities up to {f['motorcycle_max_disparity']:.0f} px) "
        f"| {f['motorcycle_epe']:.2f} px | {f['motorcycle_zero_epe']:.2f} px |"
        if "motorcycle_epe" in f else "| Middlebury motorcycle stereo pair | not measured (quick run) | |"
    )
    met = "met" if f["translation_epe"] <= 1.0 else "**not met**"
    return f"""# optical-flow: small motions (demo model)

A small `PerceiverForOpticalFlow` built and fitted on this machine on synthetic frame pairs. It
is a **demo model**: it finds one robust motion per 48×64 tile by matching every pixel's 3×3
patch, exact on held-out whole-pixel translations; the target of issue 16 (end-point error
≤ 1.0 px on held-out translations) is {met}: {f['translation_epe']:.2f} px. The official
`hf://deepmind/optical-flow-perceiver` (trained on AutoFlow, tiles of 368×496) is the real
thing (see [models/README.md](../README.md)).

- **Network:** `train_size` 48×64 (bigger frames are tiled, `tile_overlap = {OVERLAP}`), **one latent per
  pixel** (3,072 × 192), one attention head, 2 self-attention layers; checkpoint {f['checkpoint_mb']:.1f} MB.
  Output × `flow_scale` (20) = pixels.
- **How its weights were made:** by construction (`scripts/demo_training/flow_start.py`), not by
  gradient descent. Trained from `transformers`' initialisation the model never left the
  zero-flow answer in the minutes available, and an earlier hand-set start trained for 3,000
  steps reached only 3.16 px on the held-out translations below. Here each latent reads its
  own pixel's patches of both frames; the first self-attention matches every pixel's frame-1
  patch against all frame-2 patches (logits −β·squared distance) and keeps the shift and the
  match error; the second lets the latents vote (good matches and close shifts count most);
  the decoder reads the vote, weighted by match error. Its four free numbers (β, the two
  error weights and the vote width) were chosen on {f['train_pairs']} training pairs out of a grid of
  {len(SHARPNESS_GRID)}: {f['sharpness']} ({f['fit_epe']:.2f} px on those pairs). Every weight is an
  ordinary checkpoint parameter; `transformers` loads it unchanged.

## Data

{len(TRAINING_PICTURES)} photos and textures from scikit-image's `skimage/data/` ({', '.join(TRAINING_PICTURES)}),
all CC0 or public domain (scikit-image: BSD-3-Clause), shipped in its wheel. Each pair is a 48×64
tile and the same place after a random motion: translation up to ±{MAX_SHIFT:.0f} px; in half the pairs
also a rotation up to ±5° and scaling by 0.93–1.07; in a quarter a disc from another picture
moving on its own (occlusion). {f['train_pairs']} such pairs chose the construction's free numbers
(lowest mean end-point error). Frames go through the server's `flow_patches`.

**Held out completely:** scikit-learn's `china.jpg` and `flower.jpg` (CC BY 2.0, see
`sklearn/datasets/images/README.txt`), used only for evaluation, and the motorcycle pair: the
Middlebury 2014 stereo benchmark's (Scharstein et al., GCPR 2014), downsampled 4× as scikit-image
ships it (`skimage.data.stereo_motorcycle`; its docs name no licence of their own beyond
scikit-image's BSD-3-Clause), used only for evaluation.

## Training

```bash
make demo-models            # or: .venv/bin/python scripts/train_demo_models.py --only {NAME}
```

Seeded and deterministic on a given machine and thread count; it took {minutes(f['train_seconds'])} with
{f['threads']} torch thread{'s' if f['threads'] != 1 else ''}, alone on a 2-core machine.

## Held-out results

End-point error (EPE: mean distance between estimated and true flow, in pixels), frames sent
whole and tiled as the server tiles them, against the error of answering zero flow:

| held-out pair | EPE | zero-flow EPE |
| --- | --- | --- |
| `flower.jpg` 192×144 crop shifted by {FLOWER_SHIFT} px (20 tiles; the server test) | **{f['flower_epe']:.2f} px** | {math.hypot(*FLOWER_SHIFT):.2f} px |
| 16 random whole-pixel shifts (±8 px) of 128×96 crops of both photos | **{f['translation_epe']:.2f} px** | {f['translation_zero_epe']:.2f} px |
| 64 layered tiles (a disc of one photo moving over the other) | {f['layered_epe']:.2f} px | {f['layered_zero_epe']:.2f} px |
{moto}

The motorcycle pair is far outside what the model learned: its disparities reach
{f.get('motorcycle_max_disparity', 0):.0f} px, against ±{MAX_SHIFT:.0f} px in training. Its flow picture (Middlebury colour
coding, `media/flow_colour.py`; hue is direction, saturation speed):

![flow of the motorcycle pair](motorcycle-flow.png)

## Limits

Within a tile it answers one motion (the vote's), so a second layer moving on its own is not
separated from its background, rotations and zooms get their average shift, and the shift
between two matched pixels is whole-pixel-precise only (sub-pixel motion comes out rounded
toward the nearest matching pixel). Patches of 3×3 pixels match nothing on flat or repeating
regions; those tiles lean on the few pixels that do match. Motions beyond about 8 px (the tile's
matches are not limited, but a shift near the tile size leaves little overlap), motion blur,
lighting changes and real 3D scenes are outside what it was built and checked for. One latent
per pixel costs more than the old 64: about half a second per tile on 2 cores of an AVX2 EPYC,
so a 1024×436 pair (345 tiles) takes about three minutes there, a 1280×720 one (725 tiles) about
six; its `model.toml` gives a request ten minutes (`timeout_ms`), and a client must wait as long
(`perceiver-client flow --timeout 600`).
It needs float32 (its `model.toml` says so): its matching logits are deliberately huge, and in
bfloat16 they collapse (the flower pair: 7.10 px instead of 0.00 px).
"""
