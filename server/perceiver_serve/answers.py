"""The server's answers as pydantic models: what REST sends as JSON and gRPC mirrors field by field.

They live here, apart from the FastAPI app and the tasks, because two sides use them: the
REST front end documents its responses with them, and :mod:`perceiver_serve.client` parses
answers into them. This module imports pydantic only, so the client installs without torch
or FastAPI (``pip install perceiver-serve[client]``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    # A newer server may add fields; a client keeps working and ignores them.
    model_config = ConfigDict(extra="ignore")


class Prediction(Answer):
    label: str
    index: int
    score: float


class ClassificationResult(Answer):
    predictions: list[Prediction]
    logits: list[float] | None = None


class ClassificationResponse(Answer):
    model: str
    results: list[ClassificationResult]


class BytePrediction(Answer):
    byte: int
    char: str | None = Field(None, description="The byte as a character when it is printable ASCII.")
    score: float


class MaskedBytePrediction(Answer):
    position: int
    original: int | None = Field(None, description="The text's byte at this position; null for a [MASK] marker.")
    predictions: list[BytePrediction]


class FillMaskResponse(Answer):
    model: str
    text: str = Field(description="The text with each masked byte replaced by its best prediction.")
    masked: list[MaskedBytePrediction]


class ErrorBody(Answer):
    code: str
    message: str


class ErrorResponse(Answer):
    error: ErrorBody


class BatchingConfig(Answer):
    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    timeout_ms: float


class PrecisionCheck(Answer):
    """A reduced-precision model's probe output compared with its float32 self at load."""

    precision: str
    argmax_agreement: float | None = None
    rows: int
    max_abs_diff: float


class VersionState(Answer):
    version: str
    state: str
    reason: str | None = None


class ModelInfo(Answer):
    name: str
    task: str | None = None
    version: str | None = Field(None, description="The version of the copy described (\"1\" without versions).")
    state: str = Field(description="loading, ready, failed, unloading (in-flight requests finishing) or "
                                   "unavailable (unloaded, or not loaded at start).")
    reason: str | None = None
    device: str | None = None
    requested_device: str | None = Field(None, description="The device model.toml asks for: auto, cpu, cuda or cuda:N.")
    device_fallback: str | None = Field(
        None, description="Why a model that asked for a GPU runs on the CPU (device auto, CUDA unavailable).")
    tf32: bool | None = Field(None, description="model.toml lets CUDA float32 products use TF32.")
    dtype: str | None = None
    batching: BatchingConfig | None = None
    options: dict[str, Any] | None = None
    architecture: str | None = None
    labels: int | None = Field(None, description="How many labels a classifier (or video window) answers with.")
    labels_url: str | None = Field(None, description="Where REST serves the label names.")
    load_seconds: float | None = None
    requested_dtype: str | None = Field(None, description="The dtype model.toml asks for (may be auto).")
    compile: bool | None = None
    instances: int | None = Field(None, description="Worker threads running its batches side by side "
                                  "(model.toml instances), once loaded.")
    threads_per_instance: int | None = Field(None, description="torch threads of each instance, once loaded.")
    worker: str | None = Field(None, description="Where its instances compute: thread (in the server process) or "
                               "process (model.toml worker), once loaded.")
    worker_pids: list[int] | None = Field(None, description="The worker processes, one per instance (worker = process).")
    precision_check: PrecisionCheck | None = None
    geometry: dict[str, Any] | None = Field(None, description="The task's shapes, once the model is loaded.")
    versions: list[VersionState] = Field(default_factory=list, description="Every version loaded (or failing).")


class ModelList(Answer):
    models: list[ModelInfo]
    defaults: dict[str, str] = Field(description="Task → the model a request for it gets when it names none.")


class ModelHealth(Answer):
    state: str
    reason: str | None = None


class Health(Answer):
    status: str = Field(description="ready, not_ready or draining.")
    models: dict[str, ModelHealth]
