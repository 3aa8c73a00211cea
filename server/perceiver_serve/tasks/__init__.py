"""One pipeline per task: preprocess → engine → postprocess, shared by REST and gRPC."""

from __future__ import annotations

import dataclasses
from typing import Any

from .common import TaskOptions
from .flow import FlowOptions, OpticalFlowRunner
from .image import ImageClassificationRunner, ImageOptions
from .text import FillMaskRunner, TextClassificationRunner, TextOptions
from .video import VideoOptions, VideoRunner


@dataclasses.dataclass(frozen=True)
class TaskDefinition:
    architectures: tuple[str, ...]
    options: type[TaskOptions]
    runner: Any  # a class: runner(model, options) with batch_key/run/warmup_payloads


IMAGE_CLASSIFIERS = (
    "PerceiverForImageClassificationLearned",
    "PerceiverForImageClassificationFourier",
    "PerceiverForImageClassificationConvProcessing",
)

TASKS: dict[str, TaskDefinition] = {
    "text-classification": TaskDefinition(("PerceiverForSequenceClassification",), TextOptions,
                                          TextClassificationRunner),
    "fill-mask": TaskDefinition(("PerceiverForMaskedLM",), TextOptions, FillMaskRunner),
    "image-classification": TaskDefinition(IMAGE_CLASSIFIERS, ImageOptions, ImageClassificationRunner),
    "optical-flow": TaskDefinition(("PerceiverForOpticalFlow",), FlowOptions, OpticalFlowRunner),
    "video-autoencoding": TaskDefinition(("PerceiverForMultimodalAutoencoding",), VideoOptions, VideoRunner),
}
