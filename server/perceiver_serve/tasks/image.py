"""Image classification: decode, centre-crop/resize/normalise off the event loop, batch, top-k."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..answers import ClassificationResponse
from ..engine import ServedModel
from ..errors import InvalidRequest
from ..media.budget import DecodeBudget
from ..media.image import open_image
from ..media.limits import MediaLimits
from ..modeling import ImageProcessor, PerceiverForImageClassificationLearned, PerceiverTaskModel
from .common import (DEFAULT_TOP_K, Classification, TaskOptions, TopK, classification, classifications_json,
                     decode_in_budget)
from .definition import Call, RequestSchema, RestRoute, Signature, Task, TensorSpec
from .text import LABEL, LOGITS, MAX_TEXTS, classification_tensors

MAX_IMAGES = MAX_TEXTS  # items of one v2 request, as for texts


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


class ClassifyImageRequest(RequestSchema):
    image: bytes = Field(description="An encoded image (PNG, JPEG, …).")
    model: str | None = None
    top_k: TopK = DEFAULT_TOP_K
    return_logits: bool = False


async def _classify(served: ServedModel, request: ClassifyImageRequest, call: Call) -> list[Classification]:
    return [await classify_image(served, request.image, call.limits, call.budget, top=request.top_k,
                                 return_logits=request.return_logits, deadline=call.deadline)]


def _images(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """One request per image: the batcher puts them back together."""
    images = arrays["IMAGE"].ravel()
    if not 1 <= len(images) <= MAX_IMAGES:
        raise InvalidRequest(f"IMAGE: give 1 to {MAX_IMAGES} images, not {len(images)}")
    return [{"image": image, "return_logits": True} for image in images]


IMAGE_CLASSIFICATION = Task(
    name="image-classification",
    architectures=("PerceiverForImageClassificationLearned", "PerceiverForImageClassificationFourier",
                   "PerceiverForImageClassificationConvProcessing"),
    options=ImageOptions,
    runner=ImageClassificationRunner,
    request=ClassifyImageRequest,
    execute=_classify,
    answer=classifications_json,
    response=ClassificationResponse,
    rest=RestRoute("/classify/image", "Classify an image (multipart field 'image', or a raw image body)",
                   files=("image",), raw=("image/", "image")),
    grpc_method="ClassifyImage",
    signature=Signature(inputs=(TensorSpec("IMAGE", "BYTES", (-1,)),), outputs=(LOGITS, LABEL), requests=_images,
                        tensors=classification_tensors, fields={"image": "IMAGE"}),
)
