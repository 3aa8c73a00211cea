"""Serving engine: model repository, warm model registry, dynamic batching on device workers."""

from .batcher import BatchRunner, DynamicBatcher
from .registry import ModelRegistry, ServedModel
from .repository import BatchingConfig, ModelRepository, ModelSpec, RepositoryError, SpecProblem
from .tasks import ServableTask, TaskTable

__all__ = [
    "BatchRunner",
    "BatchingConfig",
    "DynamicBatcher",
    "ModelRegistry",
    "ModelRepository",
    "ModelSpec",
    "RepositoryError",
    "ServableTask",
    "ServedModel",
    "SpecProblem",
    "TaskTable",
]
