"""Image classification: decode, centre-crop/resize/normalise off the event loop, batch, top-k."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..engine.registry import ServedModel
from ..media.budget import DecodeBudget
from ..media.image import open_image
from ..media.limits import MediaLimits
from ..modeling import ImageProcessor, PerceiverForImageClassificationLearned, PerceiverTaskModel
from .common import Classification, TaskOptions, classification, decode_in_budget


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


async def classify_image(served: ServedModel, data: bytes, limits: MediaLimits, budget: DecodeBudget, *, top: int,
                         return_logits: bool, deadline: float | None = None) -> Classification:
    runner: ImageClassificationRunner = served.runner
    processor = runner.processor
    # The centre crop keeps size/crop_size of the short side and is resized to size: a short
    # side of crop_size holds every detail the resize keeps.
    min_side = max(processor.size, processor.crop_size)
    pixels = await decode_in_budget(served, budget, lambda: open_image(data, limits, field="image", min_side=min_side),
                                    lambda opened: processor(opened.decode()), subject="image", deadline=deadline)
    logits = await served.batcher.submit(pixels, deadline=deadline)
    return classification(logits, served.model.config.id2label, top, return_logits)
