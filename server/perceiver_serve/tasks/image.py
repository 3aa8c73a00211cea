"""Image classification: decode, centre-crop/resize/normalise off the event loop, batch, top-k."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..engine.registry import ServedModel
from ..media.image import decode_image
from ..media.limits import MediaLimits
from ..modeling import ImageProcessor, PerceiverForImageClassificationLearned, PerceiverTaskModel
from .common import Classification, TaskOptions, classification, off_loop


class ImageOptions(TaskOptions):
    crop_size: int = Field(256, ge=1, description="Centre crop keeps size/crop_size of the short side.")


class ImageClassificationRunner:
    """Payload: a preprocessed ``(3, S, S)`` float32 tensor. Result: its logits."""

    labelled = True

    def __init__(self, model: PerceiverTaskModel, options: ImageOptions) -> None:
        self.model = model
        # The learned-position model is tied to its training size; the others take 224².
        size = model.config.image_size if isinstance(model, PerceiverForImageClassificationLearned) else 224
        self.processor = ImageProcessor(size=size, crop_size=options.crop_size)

    def geometry(self) -> dict[str, Any]:
        size = self.processor.size
        return {"image_size": [size, size], "crop_size": self.processor.crop_size}

    def batch_key(self, payload: torch.Tensor) -> tuple[int, ...]:
        return tuple(payload.shape)

    def run(self, payloads: Sequence[torch.Tensor]) -> list[np.ndarray]:
        pixels = torch.stack(list(payloads)).to(self.model.device, self.model.dtype)
        return list(self.model(pixels).float().cpu().numpy())

    def warmup_payloads(self) -> list[torch.Tensor]:
        size = self.processor.size
        return [torch.zeros(3, size, size), torch.zeros(3, size, size)]


async def classify_image(served: ServedModel, data: bytes, limits: MediaLimits, *, top: int, return_logits: bool,
                         deadline: float | None = None) -> Classification:
    runner: ImageClassificationRunner = served.runner
    pixels = await off_loop(lambda: runner.processor(decode_image(data, limits, field="image")))
    logits = await served.batcher.submit(pixels, deadline=deadline)
    return classification(logits, served.model.config.id2label, top, return_logits)
