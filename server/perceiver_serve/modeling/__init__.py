"""Perceiver IO in plain PyTorch, loading Hugging Face checkpoints unchanged."""

from .config import PerceiverConfig
from .errors import CheckpointError
from .heads import (
    ARCHITECTURES,
    FlowEncoding,
    PerceiverForImageClassificationConvProcessing,
    PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationLearned,
    PerceiverForMaskedLM,
    PerceiverForMultimodalAutoencoding,
    PerceiverForOpticalFlow,
    PerceiverForSequenceClassification,
    PerceiverTaskModel,
)
from .loading import load_model, model_outline, resolve_dtype
from .processing import ByteTokenizer, ImageProcessor, flow_patches, video_frames

__all__ = [
    "ARCHITECTURES",
    "ByteTokenizer",
    "CheckpointError",
    "FlowEncoding",
    "ImageProcessor",
    "PerceiverConfig",
    "PerceiverForImageClassificationConvProcessing",
    "PerceiverForImageClassificationFourier",
    "PerceiverForImageClassificationLearned",
    "PerceiverForMaskedLM",
    "PerceiverForMultimodalAutoencoding",
    "PerceiverForOpticalFlow",
    "PerceiverForSequenceClassification",
    "PerceiverTaskModel",
    "flow_patches",
    "load_model",
    "model_outline",
    "resolve_dtype",
    "video_frames",
]
