"""Turning decoded media into model inputs exactly as the reference pipelines do.

* text: UTF-8 bytes shifted past six special tokens (``PerceiverTokenizer``);
* images: centre crop to 224/256 of the short side, bicubic resize, ImageNet normalisation
  (``PerceiverImageProcessor``);
* optical flow: frames scaled to [-1, 1], the 3×3 neighbourhood of every pixel stacked
  into 27 channels (the DeepMind optical-flow colab);
* video: frames in [0, 1] at the model's size, audio samples in [-1, 1] (the DeepMind
  multimodal colab).

Inputs here are already validated arrays (see ``perceiver_serve.media``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class ByteTokenizer:
    """Byte-level tokenizer with the ids of ``PerceiverTokenizer``."""

    PAD, BOS, EOS, MASK, CLS, SEP = range(6)
    NUM_SPECIAL = 6

    def __init__(self, max_length: int = 2048) -> None:
        self.max_length = max_length

    @property
    def max_text_bytes(self) -> int:
        """Longest text (in UTF-8 bytes) that fits next to [CLS] and [SEP]."""
        return self.max_length - 2

    def encode(self, text: str | bytes) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if len(data) > self.max_text_bytes:
            raise ValueError(f"text is {len(data)} bytes; the model takes at most {self.max_text_bytes}")
        return [self.CLS, *(b + self.NUM_SPECIAL for b in data), self.SEP]

    def batch(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad id lists to the longest one: ``(input_ids, attention_mask)``, both ``(B, L)``."""
        longest = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), longest), self.PAD, dtype=torch.long)
        mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return ids, mask

    def byte_of(self, token_id: int) -> int | None:
        """The byte a token id stands for, or None for a special token."""
        return token_id - self.NUM_SPECIAL if token_id >= self.NUM_SPECIAL else None


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class ImageProcessor:
    """Centre crop, bicubic resize, rescale and normalise (``PerceiverImageProcessor``)."""

    def __init__(self, size: int = 224, crop_size: int = 256) -> None:
        self.size = size
        self.crop_size = crop_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """An RGB image → ``(3, size, size)`` float32."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        crop = int(self.size / self.crop_size * side)
        top, left = (height - crop) // 2, (width - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
        image = image.resize((self.size, self.size), resample=Image.Resampling.BICUBIC)
        pixels = (np.asarray(image, dtype=np.float64) / 255.0).astype(np.float32)
        pixels = (pixels - IMAGENET_MEAN) / IMAGENET_STD
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def flow_patches(frames: torch.Tensor) -> torch.Tensor:
    """Frame pairs ``(B, 2, H, W, 3)`` uint8 → model input ``(B, 2, 27, H, W)``.

    Values are scaled to [-1, 1]; each pixel gets the 3×3 neighbourhood around it (zero
    padded at the border, TF "SAME"), ordered row, column, then colour channel.
    """
    b, t, h, w, c = frames.shape
    x = frames.to(torch.float32) / 255.0 * 2 - 1
    x = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
    x = F.pad(x, (1, 1, 1, 1))
    # (B·T, C, H, W, 3, 3) → (B·T, 3, 3, C, H, W)
    patches = x.unfold(2, 3, 1).unfold(3, 3, 1).permute(0, 4, 5, 1, 2, 3)
    return patches.reshape(b, t, 9 * c, h, w)


def video_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """Frames ``(T, H, W, 3)`` uint8 → ``(T, 3, size, size)`` in [0, 1].

    Non-square frames are centre-cropped to a square first, as the DeepMind colab does,
    then resized (bilinear) to the model's frame size.
    """
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = Image.fromarray(frame[top:top + side, left:left + side])
        if side != size:
            image = image.resize((size, size), resample=Image.Resampling.BILINEAR)
        out.append(np.asarray(image, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
