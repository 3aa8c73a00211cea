"""The tasks, each defined once (:class:`Task`); every protocol is derived from this table."""

from __future__ import annotations

from .definition import Call, RestRoute, Signature, Task, TensorSpec
from .flow import OPTICAL_FLOW
from .image import IMAGE_CLASSIFICATION
from .text import FILL_MASK, TEXT_CLASSIFICATION
from .video import VIDEO_AUTOENCODING

TASKS: dict[str, Task] = {task.name: task for task in (
    TEXT_CLASSIFICATION, FILL_MASK, IMAGE_CLASSIFICATION, OPTICAL_FLOW, VIDEO_AUTOENCODING)}

__all__ = ["TASKS", "Call", "RestRoute", "Signature", "Task", "TensorSpec"]
