"""The Open Inference Protocol's meaning, shared by its REST and gRPC forms.

A model's v2 signature is its task's (:class:`~perceiver_serve.tasks.Signature`). An
inference request's tensors are checked against it (names, datatypes, ranks, fixed
dimensions), turned into the task's own requests, validated by the task's schema and run
through the same batcher as the REST and perceiver.v1 twins; the answers come back as the
signature's output tensors.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import numpy as np

from ... import __version__
from ...engine import ModelRegistry, ServedModel
from ...engine.registry import READY
from ...errors import InvalidInput, InvalidRequest, ModelNotFound, NotReady, ServeError
from ...tasks import TASKS, Call, Task, TensorSpec
from ..state import ServerState
from .tensors import Tensor

SERVER_NAME = "perceiver-serve"
EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration", "statistics")
PLATFORM = "pytorch_perceiver"
MAX_ELEMENTS = 1 << 26  # per tensor: 64 Mi elements, checked before any is decoded
#: Parameters the protocol itself uses (binary outputs, client bookkeeping); never task fields.
PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "binary_data", "binary_data_size", "headers", "priority",
                                 "timeout", "sequence_id", "sequence_start", "sequence_end"})


#: Tensor parameters of Triton extensions this server does not offer: refused, since a client that sends
#: them expects another answer (class strings, data left in shared memory) than it would get.
UNSUPPORTED_TENSOR_PARAMETERS = {
    "classification": "the classification extension is not offered: request LOGITS and take its largest entries, "
                      "or LABEL, or set the top_k parameter",
    **dict.fromkeys(("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"),
                    "shared memory is not offered: tensors travel in the request and the answer"),
}


def refuse_unsupported(kind: str, name: str, parameters: Mapping[str, Any]) -> None:
    """:class:`InvalidRequest` for an input's or output's parameter of an extension not offered here."""
    for parameter in parameters:
        if parameter in UNSUPPORTED_TENSOR_PARAMETERS:
            raise InvalidRequest(f"{kind} {name[:64]!r}: parameter {parameter!r}: "
                                 f"{UNSUPPORTED_TENSOR_PARAMETERS[parameter]}")


@dataclasses.dataclass(frozen=True)
class InferRequest:
    model: str
    version: str
    inputs: list[Tensor]
    parameters: dict[str, Any]
    outputs: list[str] | None  # the outputs asked for by name; None: the task's default outputs
    id: str = ""


@dataclasses.dataclass(frozen=True)
class InferAnswer:
    model: str
    outputs: list[Tensor]
    id: str = ""
    version: str = "1"


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def server_ready(state: ServerState) -> bool:
    return state.registry.ready and not state.draining


def find_model(registry: ModelRegistry, name: str, version: str = "") -> ServedModel:
    """The named model (its newest version, or the one asked for) in any state; 404 for an unknown one."""
    served = registry.get(name)
    if not version:
        return served
    versions = registry.versions.get(name, {})
    if version not in versions:
        raise ModelNotFound(f"model {name!r} has no version {version[:40]!r} loaded (loaded: "
                            f"{', '.join(sorted(versions, key=int)) or 'none'})", code="version_not_found")
    return versions[version]


def model_ready(state: ServerState, name: str, version: str = "") -> bool:
    return find_model(state.registry, name, version).state == READY and not state.draining


def _task(served: ServedModel) -> Task | None:
    return TASKS.get(served.task) if served.task else None


def _dims(spec: TensorSpec, served: ServedModel) -> list[int]:
    """The spec's shape with model properties filled in (``labels``: -1 until the model is loaded)."""
    labels = served.model.config.num_labels if served.model is not None else -1
    return [labels if dim == "labels" else int(dim) for dim in spec.shape]


def model_metadata(registry: ModelRegistry, served: ServedModel) -> dict[str, Any]:
    """Name, versions, platform, tensor signature; the task and labels ride in ``parameters``."""
    task = _task(served)
    signature = task.signature if task else None
    parameters: dict[str, Any] = {"task": served.task or ""}
    if task is not None and signature is None and task.v2_note:
        parameters["note"] = task.v2_note
    if served.model is not None and getattr(served.runner, "labelled", False):
        parameters["labels"] = served.label_names()

    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": _dims(s, served)} for s in specs]

    return {
        "name": served.name, "versions": sorted(registry.versions.get(served.name, {}) or [served.version], key=int),
        "platform": PLATFORM,
        "inputs": tensors(signature.inputs) if signature else [],
        "outputs": tensors(signature.outputs) if signature else [],
        "parameters": parameters,
    }


def _config_tensor(spec: TensorSpec, served: ServedModel, output: bool) -> dict[str, Any]:
    data_type = "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"
    tensor: dict[str, Any] = {"name": spec.name, "data_type": data_type, "dims": _dims(spec, served)}
    if spec.optional and not output:
        tensor["optional"] = True
    return tensor


def _instance_group(served: ServedModel) -> dict[str, Any]:
    """Where the model computes, as Triton's ``instance_group`` says it (``KIND_AUTO`` before it is placed)."""
    device = served.device or (served.spec.device if served.spec else "auto")
    kind = "KIND_GPU" if device.startswith("cuda") else "KIND_CPU" if device == "cpu" else "KIND_AUTO"
    if served.batcher is not None:
        count = served.batcher.instances
    else:
        count = served.spec.instances if served.spec else 1
    group: dict[str, Any] = {"name": served.name, "kind": kind, "count": count}
    if kind == "KIND_GPU":
        group["gpus"] = [int(device.partition(":")[2] or 0)]
    return group


def model_config(served: ServedModel) -> dict[str, Any]:
    """The model configuration extension (Triton's ``ModelConfig``, in its JSON form): name, platform, tensors,
    instances, and how the server batches it.

    ``max_batch_size`` is 0, Triton's "the dims are whole shapes": each tensor's ``dims`` are its full shape
    as the metadata gives it, batch dimension included (-1 where free), so a client that prepends a batch
    dimension only when ``max_batch_size`` is above 0 sends the shapes this server takes. The server's own
    dynamic batching (of work items across requests, see :mod:`...engine.batcher`) is told in ``parameters``,
    as ``ModelParameter`` strings, with the task and the effective dtype and device.
    """
    task = _task(served)
    signature = task.signature if task else None
    parameters: dict[str, str] = {"task": served.task or ""}
    if task is not None and signature is None and task.v2_note:
        parameters["note"] = task.v2_note
    if served.spec is not None:
        batching = served.spec.batching
        parameters.update(dtype=served.model.precision if served.model is not None else served.spec.dtype,
                          device=served.device or served.spec.device,
                          max_batch_items=str(batching.max_batch_size), max_delay_ms=f"{batching.max_delay_ms:g}",
                          max_queue=str(batching.max_queue), timeout_ms=f"{batching.timeout_ms:g}")
    return {
        "name": served.name, "platform": PLATFORM, "max_batch_size": 0,
        "input": [_config_tensor(s, served, False) for s in signature.inputs] if signature else [],
        "output": [_config_tensor(s, served, True) for s in signature.outputs] if signature else [],
        "instance_group": [_instance_group(served)],
        "parameters": {name: {"string_value": value} for name, value in parameters.items()},
    }


def model_statistics(registry: ModelRegistry, name: str = "", version: str = "") -> dict[str, Any]:
    """The statistics extension (Triton's ``ModelStatisticsResponse``, JSON form): every loaded version of
    every model, of the named model, or the named version (see :mod:`...engine.statistics`)."""
    if name:
        served = find_model(registry, name, version)  # 404 for an unknown model or version
        chosen = [served] if version else list(registry.versions.get(name, {}).values())
    else:
        chosen = [served for versions in list(registry.versions.values()) for served in list(versions.values())]
    stats = [{"name": served.name, "version": served.version, **served.batcher.statistics.as_dict()}
             for served in sorted(chosen, key=lambda s: (s.name, int(s.version))) if served.batcher is not None]
    return {"model_stats": stats}


def _check_inputs(served: ServedModel, specs: Sequence[TensorSpec], inputs: Sequence[Tensor]) -> dict[str, np.ndarray]:
    by_name = {spec.name: spec for spec in specs}
    arrays: dict[str, np.ndarray] = {}
    for tensor in inputs:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise InvalidInput(f"model {served.name!r} has no input {tensor.name[:64]!r}; its inputs are "
                               f"{', '.join(by_name)}", code="unknown_input")
        if tensor.name in arrays:
            raise InvalidInput(f"input {tensor.name!r} is given twice", code="duplicate_input")
        if tensor.datatype != spec.datatype:
            raise InvalidInput(f"input {tensor.name!r} must be {spec.datatype}, not {tensor.datatype}",
                               code="wrong_datatype")
        expected = _dims(spec, served)
        shape = tensor.shape
        if len(shape) != len(expected) or any(e != -1 and e != d for e, d in zip(expected, shape)):
            raise InvalidInput(f"input {tensor.name!r} has shape {shape}; this model takes {expected} "
                               "(-1: any size)", code="wrong_shape")
        arrays[tensor.name] = tensor.array
    missing = [spec.name for spec in specs if spec.name not in arrays and not spec.optional]
    if missing:
        raise InvalidInput(f"model {served.name!r} needs input {', '.join(missing)}", code="missing_input")
    return arrays


def _requested(served: ServedModel, specs: Sequence[TensorSpec], names: list[str] | None) -> list[TensorSpec]:
    if names is None:
        return [spec for spec in specs if not spec.optional]
    by_name = {spec.name: spec for spec in specs}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise InvalidInput(f"model {served.name!r} has no output {unknown[0][:64]!r}; its outputs are "
                           f"{', '.join(by_name)}", code="unknown_output")
    return [by_name[name] for name in dict.fromkeys(names)]


async def _all(works: Sequence[Awaitable[Any]]) -> list[Any]:
    """Every answer, or the first failure with the rest cancelled (their queued work is dropped)."""
    jobs = [asyncio.ensure_future(work) for work in works]
    try:
        return await asyncio.gather(*jobs)
    finally:
        for job in jobs:
            job.cancel()


async def _item(work: Awaitable[Any], tensor: str, index: int, count: int) -> Any:
    """One item's answer; where a tensor holds several items (images), its error names which one."""
    try:
        return await work
    except ServeError as exc:
        if count > 1:
            exc.message = f"{tensor}[{index}]: {exc.message}"
        raise


async def infer(state: ServerState, request: InferRequest, deadline: float | None = None) -> InferAnswer:
    served = find_model(state.registry, request.model, request.version)
    task = _task(served)
    if served.task is None or task is None:
        raise NotReady(f"model {served.name!r} is not available: {served.reason}")
    with state.registry.lease(served.task, served.name, request.version or None) as served:  # ready, or why not
        return await _infer(state, served, task, request, deadline)


async def _infer(state: ServerState, served: ServedModel, task: Task, request: InferRequest,
                 deadline: float | None) -> InferAnswer:
    signature = task.signature
    if signature is None or task.execute is None:
        raise InvalidInput(f"model {served.name!r} ({served.task}) has no v2 inference: {task.v2_note}",
                           code="no_v2_signature")
    arrays = _check_inputs(served, signature.inputs, request.inputs)
    outputs = _requested(served, signature.outputs, request.outputs)
    for name in request.parameters.keys() & signature.rest_only.keys():
        raise InvalidRequest(f"parameter {name!r} is not taken over v2: {signature.rest_only[name]}")
    settable = set(task.request.model_fields) - {"model", "version"}
    parameters = {k: v for k, v in request.parameters.items() if k in settable and k not in PROTOCOL_PARAMETERS}
    names = {**{name: f"parameters.{name}" for name in parameters}, **signature.fields}
    bodies = [task.parse({**parameters, **fields}, names) for fields in signature.requests(arrays)]
    call = Call(state.limits, state.budget, deadline)
    results = await _all([_item(task.execute(served, body, call), signature.inputs[0].name, i, len(bodies))
                          for i, body in enumerate(bodies)])
    produced = signature.tensors(results)
    return InferAnswer(served.name, [Tensor(spec.name, spec.datatype, produced[spec.name]) for spec in outputs],
                       request.id, served.version)
