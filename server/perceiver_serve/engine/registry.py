"""The registry of served models: load, warm up, track state, lend ready models to requests.

Each model is loaded, checked against its task, run once on a warm-up batch and only then
marked ready with its own batcher and device worker. A model that fails at any step is
marked failed with the reason and the others carry on; the server is ready when every
model meant to serve has a ready copy (see :attr:`ModelRegistry.ready`).

Models change while the server runs (``load``, ``unload``): a reload builds and warms a new
copy beside the one serving, and requests switch only once it is ready. Requests hold the
copy they resolved through :meth:`ModelRegistry.lease`, so a replaced or unloaded copy
finishes the work it has and is freed (worker stopped, weights dropped) when its last lease
ends, never before and never later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from pydantic import ValidationError

from .. import allocator
from ..allocator import trim_heap
from ..errors import ModelNotFound, NotReady, ServeError
from ..modeling import PerceiverTaskModel, load_model, model_outline
from ..modeling.threads import in_fresh_thread, threads_per_instance
from .batcher import BatchObserver, DynamicBatcher, join_until
from .devices import asked_for_gpu, configure_tf32, resolve_device
from .repository import ModelRepository, ModelSpec, RepositoryError, SpecProblem, describe_validation_error
from .warmup import warm_up
from .worker_process import ProcessRunner, WorkerSetup

log = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"
UNLOADING, UNAVAILABLE = "unloading", "unavailable"  # refused to new requests; in-flight ones finish


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
    worker: str = "thread"  # where its instances compute: "thread" or "process" (see worker_process)
    load_seconds: float | None = None
    version: str = "1"
    leases: int = 0  # requests holding this copy now
    retired: bool = False  # replaced or unloaded: freed as its last lease ends
    freed: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def task(self) -> str | None:
        return self.spec.task if self.spec else None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "version": self.version, "task": self.task, "state": self.state}
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
            if self.batcher is not None:
                info.update(instances=self.batcher.instances, threads_per_instance=self.batcher.threads,
                            worker=self.worker)
                if self.worker == "process":
                    info["worker_pids"] = [executor.pid for executor in self.batcher.executors]
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
                 progress: Callable[[str], None] | None = None, load_only: Iterable[str] | None = None) -> None:
        """``load_only``: the names to load at start (``--load-model``); ``None`` loads every model."""
        self.repository = repository
        self.observer = observer
        self.progress = progress or log.info
        self.models: dict[str, ServedModel] = {}  # per name: the copy answering requests that name no version
        self.versions: dict[str, dict[str, ServedModel]] = {}  # per name: every version loaded, by version
        self.defaults: dict[str, str] = {}
        self._lock = threading.Lock()  # models, defaults and every copy's leases change under it
        self._changing: dict[str, threading.Lock] = {}  # one load/unload of a name at a time
        self._releases: list[threading.Thread] = []
        self._meant: set[str] = set()  # the names readiness waits for (see ``ready``); changes under _lock
        chosen = None if load_only is None else set(load_only)
        if chosen is not None:
            known = {spec.name for spec in repository.specs} | {problem.name for problem in repository.problems}
            if unknown := sorted(chosen - known):
                raise RepositoryError(f"--load-model {', '.join(unknown)}: no such model in {repository.root}")
        for spec in repository.specs:
            self.models[spec.name] = ServedModel(spec.name, spec, LOADING if chosen is None or spec.name in chosen
                                                 else UNAVAILABLE)
        for problem in repository.problems:
            if chosen is None or problem.name in chosen:
                self.models[problem.name] = ServedModel(problem.name, None, FAILED, problem.message)
                log.error("model %r cannot be served: %s", problem.name, problem.message)
                self._count(problem.name, "load", False)
        self._choose_defaults()
        for served in self.models.values():
            if served.state != UNAVAILABLE:
                self._meant.add(served.name)
                self._report(served)
        if observer is not None and hasattr(observer, "label_models"):
            observer.label_models(self.knows)

    # -- lifecycle ------------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load every model in turn (blocking; run it off the event loop)."""
        pending = [m for m in self.models.values() if m.state == LOADING]
        configure_tf32({m.name: m.spec.tf32 for m in pending if m.spec and asked_for_gpu(m.spec.device)})
        for position, served in enumerate(pending, start=1):
            self.progress(f"[{position}/{len(pending)}] loading model {served.name!r} ({served.task})")
            try:
                self.load(served.name)
            except ServeError as exc:  # its folder went away since the scan
                served.state, served.reason = FAILED, str(exc)
                self._count(served.name, "load", False)

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
            checkpoint = spec.checkpoint_dir(served.version)
            served.worker = "process" if spec.worker == "process" and served.device == "cpu" else "thread"
            if served.worker != spec.worker:
                log.warning("model %r runs on %s, where its instances compute in threads (worker = \"process\" "
                            "is for CPU models)", served.name, served.device)
            # A process worker loads the weights itself: this process needs only the model's outline.
            model = (model_outline(checkpoint) if served.worker == "process" else
                     load_model(checkpoint, device=served.device, dtype=spec.dtype, progress=say, compile=spec.compile))
            if model.architecture not in definition.architectures:
                raise ValueError(
                    f"{spec.toml_path}: checkpoint is a {model.architecture}, which cannot serve task "
                    f"{spec.task!r} (needs one of {', '.join(definition.architectures)})"
                )
            runner = definition.runner(model, options)
            threads = threads_per_instance(spec.instances, spec.threads)
            executors = None
            if served.worker == "process":
                setup = WorkerSetup(served.name, checkpoint, served.device, spec.dtype, spec.compile, definition.runner,
                                    options, threads, spec.batching.max_batch_size, allocator.fixed_mmap_threshold,
                                    allocator.limited_arenas)
                executors = [ProcessRunner(setup, say) for _ in range(spec.instances)]
            batcher = DynamicBatcher(served.name, runner, spec.batching, self.observer, device=served.device,
                                     hand_back=trim_heap, instances=spec.instances, threads=threads, executors=executors)
            if executors is None:
                # On the worker thread, whose device, stream and cuBLAS/cuDNN handles requests then find ready.
                batcher.start(warm_up=lambda executor: warm_up(executor, spec.batching.max_batch_size, model.compiled,
                                                               say))
            else:
                batcher.start(warm_up=lambda executor: executor.start())  # loads and warms in its process
                facts = executors[0].facts
                model.precision, model.precision_check, model.compiled = (facts.precision, facts.precision_check,
                                                                          facts.compiled)
        except Exception as exc:  # noqa: BLE001 - any failure marks this model failed, never the server
            plain = isinstance(exc, (ValueError, OSError))  # our own messages name file and field
            served.state, served.reason = FAILED, str(exc) if plain else f"{type(exc).__name__}: {exc}"
            served.load_seconds = time.monotonic() - started
            log.error("model %r failed to load: %s", served.name, served.reason)
            return
        served.model, served.runner, served.batcher = model, runner, batcher
        served.load_seconds = time.monotonic() - started
        served.state = READY
        self.progress(f"model {served.name!r} version {served.version} ready on {served.device} in "
                      f"{served.load_seconds:.1f} s")

    def gpu_models_on_cpu(self) -> list[str]:
        """Models that asked for a GPU (``auto`` or ``cuda``) and would find none (the CPU, or failure)."""
        if torch.cuda.is_available():
            return []
        return sorted(m.name for m in self.models.values() if m.spec is not None and asked_for_gpu(m.spec.device))

    def load(self, name: str) -> ServedModel:
        """Load ``name`` from disk, or reload it; blocking (run it off the event loop).

        Each version the model's policy picks is built beside the copy serving it, which keeps
        answering until the new copy is warm; then new requests go to the new copy and the
        old one is freed once the requests holding it are done. A version whose new copy
        fails keeps its old copy serving, with the failure as its ``reason``; versions the
        policy no longer picks are unloaded. Returns the copy that now answers requests naming
        no version (the newest ready one); its state and reason say how this load went.

        Each failed load counts once in the metrics: a version whose copy failed, or the whole
        model when its ``model.toml`` cannot be used (then no version is even tried).
        """
        entry = self.repository.read(name)  # refuses names outside the repository
        with self._changing_lock(name):
            held = dict(self.versions.get(name, {}))
            if isinstance(entry, ModelSpec):
                try:
                    wanted = entry.versions()
                except (OSError, ValueError) as exc:
                    entry = SpecProblem(name, entry.toml_path, str(exc))
            fresh: dict[str, ServedModel] = {}
            if isinstance(entry, SpecProblem):
                log.error("model %r cannot be served: %s", name, entry.message)
                self._count(name, "reload" if held else "load", False)
            else:
                for version in wanted:
                    fresh[version] = self._load_version(entry, version, held)
            with self._lock:
                serving = self._switch(name, entry, fresh, held)
                self._choose_defaults()
            return serving

    def _load_version(self, spec: ModelSpec, version: str, held: dict[str, ServedModel]) -> ServedModel:
        copy = ServedModel(spec.name, spec, LOADING, version=version)
        if not any(c.state == READY for c in held.values()):
            with self._lock:
                shown, self.models[spec.name] = self.models.get(spec.name), copy  # shown as loading meanwhile
            if shown is not None and shown.spec is None:
                self._forget(shown)  # a broken model.toml's stand-in ("1"): each version now reports its own
        event = "reload" if version in held else "load"
        self.progress(f"{event}ing model {spec.name!r} version {version} ({spec.task})")
        # Loading computes with the process's threads, on a thread that then ends (see ..modeling.threads).
        in_fresh_thread(self._load, copy, name=f"load:{spec.name}")
        self._count(spec.name, event, copy.state == READY)
        return copy

    def _switch(self, name: str, entry: ModelSpec | SpecProblem, fresh: dict[str, ServedModel],
                held: dict[str, ServedModel]) -> ServedModel:
        """Called under ``_lock``: new requests go to the fresh copies that came up; the rest is retired.

        The readiness reported for each version is its serving copy's, decided here: a failed
        new copy beside a previous one that keeps serving leaves the version ready (an alert on
        ``perceiver_model_ready == 0`` means that nothing serves it). A model that comes up is
        one the server is meant to serve from now on (see ``ready``).
        """
        serving: dict[str, ServedModel] = {}
        for version, copy in fresh.items():
            old = held.pop(version, None)
            if copy.state != READY and old is not None and old.state == READY:
                old.reason = f"reload failed, still serving the previous copy: {copy.reason}"
                serving[version] = old
                continue
            serving[version] = copy
            if old is not None:
                self._retire(old)
        if isinstance(entry, SpecProblem):  # a broken model.toml: whatever serves keeps serving
            for old in held.values():
                old.reason = f"reload failed, still serving the previous copy: {entry.message}"
            serving, held = held, {}
        for version, old in held.items():  # versions the policy no longer picks
            self.progress(f"unloading model {name!r} version {version}: version_policy no longer picks it")
            old.state = UNLOADING
            self._retire(old)
            self._count(name, "unload", True)
        self.versions[name] = serving
        ready = [c for c in serving.values() if c.state == READY]
        candidates = ready or list(serving.values())
        if candidates:
            self.models[name] = max(candidates, key=lambda c: int(c.version))
        else:
            self.models[name] = ServedModel(name, None, FAILED, entry.message)  # type: ignore[union-attr]
        for copy in serving.values() if serving else (self.models[name],):
            self._report(copy)
        if self.models[name].state == READY:
            self._meant.add(name)
        return self.models[name]

    def unload(self, name: str) -> ServedModel:
        """Refuse new requests for every version of ``name`` at once; in-flight ones finish, then each is freed."""
        self.repository.folder(name)  # the same name check as load, whether or not the folder still exists
        with self._changing_lock(name):
            current = self.models.get(name)
            if current is None:
                raise ModelNotFound(f"no model named {name!r} is loaded")
            with self._lock:
                self._meant.discard(name)
                copies = {id(c): c for c in (current, *self.versions.pop(name, {}).values())}
                in_flight = sum(c.leases for c in copies.values())
                for copy in copies.values():
                    if copy.state != UNAVAILABLE:
                        copy.state = UNLOADING
                    if not copy.retired:
                        self._retire(copy)
                self._choose_defaults()
            self.progress(f"unloading model {name!r} ({in_flight} requests in flight)")
            self._count(name, "unload", True)
            return current

    def _changing_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._changing.setdefault(name, threading.Lock())

    def _retire(self, served: ServedModel) -> None:
        """Called under ``_lock``: free ``served`` now if no request holds it, else at its last release."""
        served.retired = True
        if served.leases == 0:
            self._free(served)

    def _free(self, served: ServedModel) -> None:
        """Stop the copy's worker (its queue is empty: no request holds it) and drop its weights.

        Runs on a thread of its own: stopping joins the worker, which may still be finishing a
        batch whose caller went away, and the event loop must not wait for that.
        """
        def release() -> None:
            if served.batcher is not None:
                served.batcher.stop()
            had_model = served.model is not None
            served.model = served.runner = served.batcher = None
            gc.collect()
            trim_heap()
            with self._lock:
                if served.state == UNLOADING:
                    served.state = UNAVAILABLE
                if self.models.get(served.name) is served and not self.repository.holds(served.name):
                    del self.models[served.name]  # its folder is gone: nothing left to list
                    self.versions.pop(served.name, None)
                    self._choose_defaults()
            if had_model:
                self.progress(f"model {served.name!r} version {served.version} released")
            if self.versions.get(served.name, {}).get(served.version) in (None, served):
                self._forget(served)  # no copy of this version serves any more: its series go
            served.freed.set()

        thread = threading.Thread(target=release, name=f"release:{served.name}", daemon=True)
        self._releases = [t for t in self._releases if t.is_alive()] + [thread]
        thread.start()

    def _choose_defaults(self) -> None:
        """Called under ``_lock``: each task's model for requests that name none (``default = true`` first).

        A model that failed to load is chosen only where no other serves the task (its requests then
        learn why): otherwise a broken copy marked ``default`` would turn away every request that names
        no model while a good one serves."""
        candidates = [m for m in self.models.values() if m.spec is not None and m.state not in (UNLOADING, UNAVAILABLE)]
        self.defaults = {}
        for served in sorted(candidates, key=lambda m: (m.state == FAILED, not m.spec.default, m.spec.name)):
            self.defaults.setdefault(served.spec.task, served.spec.name)

    def _report(self, served: ServedModel) -> None:
        if self.observer is not None and hasattr(self.observer, "observe_model_state"):
            self.observer.observe_model_state(served.name, served.version, served.state == READY, served.load_seconds)

    def _forget(self, served: ServedModel) -> None:
        """A version unloaded on purpose has no readiness to report (an alert on ready == 0 stays quiet)."""
        if self.observer is not None and hasattr(self.observer, "forget_model_version"):
            self.observer.forget_model_version(served.name, served.version)

    def _count(self, name: str, event: str, succeeded: bool) -> None:
        if self.observer is not None and hasattr(self.observer, "observe_model_event"):
            self.observer.observe_model_event(name, event, "success" if succeeded else "failure")

    def stop(self, timeout: float | None = None) -> list[str]:
        """Finish queued work on every model and stop their workers, waiting at most ``timeout`` seconds in
        all. The names of the threads still running then (a batch still computing, an unload under way)."""
        ends = None if timeout is None else time.monotonic() + timeout
        running = [name for served in list(self.models.values()) if served.batcher is not None
                   for name in served.batcher.stop(ends)]
        return running + join_until(self._releases, ends)

    # -- lookups ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Every model the server is meant to serve has a ready copy.

        Meant to serve: each model it was started with (all of them, or ``load_only``) and each
        loaded successfully since, until it is unloaded. A start-up model that failed keeps the
        server unready (``--strict`` exits instead), as does one that served and has no ready
        copy left. A model added while serving that fails to load is reported (index, log,
        metrics) and does not: readiness takes the whole replica out of its load balancer,
        every model it serves with it, for a model that never served there.
        """
        with self._lock:
            return bool(self.models) and all(name in self.models and self.models[name].state == READY
                                             for name in self._meant)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a model of this registry, in any state (metrics label requests with it only then)."""
        return name in self.models

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(f"no model named {name!r}") from None

    def resolve(self, task: str, name: str | None = None, version: str | None = None) -> ServedModel:
        """The ready model that serves ``task``: the named one, or the task's default; its newest ready
        version, or the one asked for."""
        if name is None:
            if task not in self.defaults:
                raise ModelNotFound(f"no model in this repository serves {task}", code="no_model_for_task")
            name = self.defaults[task]
        served = self.get(name)
        if version is not None and served.state not in (UNLOADING, UNAVAILABLE):
            versions = self.versions.get(name, {})
            if version not in versions:
                raise ModelNotFound(f"model {name!r} has no version {version[:40]!r} loaded (loaded: "
                                    f"{', '.join(sorted(versions, key=int)) or 'none'})", code="version_not_found")
            served = versions[version]
        if served.state in (UNLOADING, UNAVAILABLE):
            raise ModelNotFound(f"model {name!r} is not loaded (unloaded or never loaded); load it with "
                                f"POST /v2/repository/models/{name}/load")
        if served.task != task:
            if served.task is None:
                raise NotReady(f"model {name!r} is not available: {served.reason}")
            raise ModelNotFound(f"model {name!r} serves {served.task}, not {task}", code="wrong_task")
        if served.state == LOADING:
            raise NotReady(f"model {name!r} is still loading", headers={"Retry-After": "5"})
        if served.state == FAILED:
            raise NotReady(f"model {name!r} failed to load: {served.reason}")
        return served

    @contextlib.contextmanager
    def lease(self, task: str, name: str | None = None, version: str | None = None) -> Iterator[ServedModel]:
        """The model for a request, held until the request is done with it.

        A copy replaced or unloaded meanwhile keeps serving its lease holders and is freed
        when the last of them leaves the ``with`` block.
        """
        with self._lock:
            served = self.resolve(task, name, version)
            served.leases += 1
        try:
            yield served
        finally:
            with self._lock:
                served.leases -= 1
                if served.retired and served.leases == 0:
                    self._free(served)
