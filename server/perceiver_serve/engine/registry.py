"""The registry of served models: load, warm up, track state, hand out ready models.

Each model is loaded, checked against its task, run once on a warm-up batch and only then
marked ready with its own batcher and device worker. A model that fails at any step is
marked failed with the reason and the others carry on; the server is ready when every
model is.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from pydantic import ValidationError

from ..errors import ModelNotFound, NotReady
from ..modeling import PerceiverTaskModel, load_model
from .batcher import BatchObserver, DynamicBatcher
from .devices import asked_for_gpu, configure_tf32, resolve_device
from .repository import ModelRepository, ModelSpec, describe_validation_error
from .warmup import warm_up

log = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"


@dataclasses.dataclass(eq=False)
class ServedModel:
    name: str
    spec: ModelSpec | None
    state: str = LOADING
    reason: str | None = None
    model: PerceiverTaskModel | None = None
    runner: Any = None  # the task's runner: a BatchRunner with ``labelled`` and ``geometry()`` for describe()
    batcher: DynamicBatcher | None = None
    device: str | None = None
    device_fallback: str | None = None  # why the model runs on the CPU although it asked for a GPU
    load_seconds: float | None = None

    @property
    def task(self) -> str | None:
        return self.spec.task if self.spec else None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "task": self.task, "state": self.state}
        if self.reason:
            info["reason"] = self.reason
        if self.spec:
            info.update(device=self.device or self.spec.device, requested_device=self.spec.device,
                        dtype=self.spec.dtype, batching=self.spec.batching.model_dump(), options=self.spec.options)
            if self.device_fallback:
                info["device_fallback"] = self.device_fallback
            if self.spec.tf32:
                info["tf32"] = True
        if self.model is not None:
            info.update(architecture=self.model.architecture, load_seconds=round(self.load_seconds or 0.0, 3),
                        dtype=self.model.precision, requested_dtype=self.spec.dtype, geometry=self.runner.geometry())
            if self.runner.labelled:
                info.update(labels=self.model.config.num_labels, labels_url=f"/models/{self.name}/labels")
            if self.model.compiled:
                info["compile"] = True
            if self.model.precision_check is not None:
                info["precision_check"] = self.model.precision_check.as_dict()
        return info

    def label_names(self) -> list[str]:
        """The names of the labels this model answers with, in index order."""
        if self.model is None:
            raise NotReady(f"model {self.name!r} is not loaded" + (f": {self.reason}" if self.reason else ""))
        if not self.runner.labelled:
            raise ModelNotFound(f"model {self.name!r} ({self.task}) answers without labels", code="no_labels")
        labels = self.model.config.id2label
        return [labels[i] for i in range(len(labels))]


class ModelRegistry:
    def __init__(self, repository: ModelRepository, observer: BatchObserver | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.repository = repository
        self.observer = observer
        self.progress = progress or log.info
        self.models: dict[str, ServedModel] = {}
        for spec in repository.specs:
            self.models[spec.name] = ServedModel(spec.name, spec)
        for problem in repository.problems:
            self.models[problem.name] = ServedModel(problem.name, None, FAILED, problem.message)
        self.defaults: dict[str, str] = {}
        for spec in sorted(repository.specs, key=lambda s: (not s.default, s.name)):
            self.defaults.setdefault(spec.task, spec.name)
        for problem in repository.problems:
            log.error("model %r cannot be served: %s", problem.name, problem.message)
            self._report(self.models[problem.name])

    # -- lifecycle ------------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load every model in turn (blocking; run it off the event loop)."""
        pending = [m for m in self.models.values() if m.state == LOADING]
        configure_tf32({m.name: m.spec.tf32 for m in pending if m.spec and asked_for_gpu(m.spec.device)})
        for position, served in enumerate(pending, start=1):
            self.progress(f"[{position}/{len(pending)}] loading model {served.name!r} ({served.task})")
            self._load(served)

    def _load(self, served: ServedModel) -> None:
        spec = served.spec
        assert spec is not None
        started = time.monotonic()
        try:
            definition = self.repository.tasks[spec.task]
            try:
                options = definition.options(**spec.options)
            except ValidationError as exc:
                raise ValueError(f"{spec.toml_path}: {describe_validation_error(exc, prefix='options.')}") from None
            placement = resolve_device(spec.device)
            served.device, served.device_fallback = placement.device, placement.fallback
            say = lambda message: self.progress(f"{served.name}: {message}")  # noqa: E731
            model = load_model(spec.checkpoint_dir(), device=served.device, dtype=spec.dtype, progress=say,
                               compile=spec.compile)
            if model.architecture not in definition.architectures:
                raise ValueError(
                    f"{spec.toml_path}: checkpoint is a {model.architecture}, which cannot serve task "
                    f"{spec.task!r} (needs one of {', '.join(definition.architectures)})"
                )
            runner = definition.runner(model, options)
            batcher = DynamicBatcher(served.name, runner, spec.batching, self.observer, device=served.device)
            # On the worker thread, whose device, stream and cuBLAS/cuDNN handles requests then find ready.
            batcher.start(warm_up=lambda: warm_up(runner, spec.batching.max_batch_size, model.compiled, say))
        except Exception as exc:  # noqa: BLE001 - any failure marks this model failed, never the server
            plain = isinstance(exc, (ValueError, OSError))  # our own messages name file and field
            served.state, served.reason = FAILED, str(exc) if plain else f"{type(exc).__name__}: {exc}"
            served.load_seconds = time.monotonic() - started
            log.error("model %r failed to load: %s", served.name, served.reason)
            self._report(served)
            return
        served.model, served.runner, served.batcher = model, runner, batcher
        served.load_seconds = time.monotonic() - started
        served.state = READY
        self.progress(f"model {served.name!r} ready on {served.device} in {served.load_seconds:.1f} s")
        self._report(served)

    def gpu_models_on_cpu(self) -> list[str]:
        """Models that asked for a GPU (``auto`` or ``cuda``) and would find none (the CPU, or failure)."""
        if torch.cuda.is_available():
            return []
        return sorted(m.name for m in self.models.values() if m.spec is not None and asked_for_gpu(m.spec.device))

    def _report(self, served: ServedModel) -> None:
        if self.observer is not None and hasattr(self.observer, "observe_model_state"):
            self.observer.observe_model_state(served.name, served.state == READY, served.load_seconds)

    def stop(self, timeout: float | None = None) -> None:
        """Finish queued work on every model and stop their workers."""
        for served in self.models.values():
            if served.batcher is not None:
                served.batcher.stop(timeout)

    # -- lookups ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.state == READY for m in self.models.values())

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(f"no model named {name!r}") from None

    def resolve(self, task: str, name: str | None = None) -> ServedModel:
        """The ready model that serves ``task``: the named one, or the task's default."""
        if name is None:
            if task not in self.defaults:
                raise ModelNotFound(f"no model in this repository serves {task}", code="no_model_for_task")
            name = self.defaults[task]
        served = self.get(name)
        if served.task != task:
            if served.task is None:
                raise NotReady(f"model {name!r} is not available: {served.reason}")
            raise ModelNotFound(f"model {name!r} serves {served.task}, not {task}", code="wrong_task")
        if served.state == LOADING:
            raise NotReady(f"model {name!r} is still loading", headers={"Retry-After": "5"})
        if served.state == FAILED:
            raise NotReady(f"model {name!r} failed to load: {served.reason}")
        return served
