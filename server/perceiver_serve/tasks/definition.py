"""What a task is, written once: every protocol is derived from these definitions.

A :class:`Task` names its request schema (fields, limits, defaults), its runner (what the
engine batches), the coroutine that answers one request, the builder of its answer and its
Open Inference Protocol tensor signature. REST, ``perceiver.v1`` gRPC and the v2 protocol
each turn their wire format into the schema's fields, so the three validate alike and fail
with the same messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engine import ServedModel
from ..errors import InvalidInput, InvalidRequest
from ..media.budget import DecodeBudget
from ..media.limits import MediaLimits
from .common import TaskOptions


class RequestSchema(BaseModel):
    """Base of every task's request: unknown fields are errors and no type is guessed.

    Every request may name a model version (``models/<name>/<N>/``); without one it gets the
    newest ready version of its model.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    version: str | None = Field(None, pattern=r"^[1-9][0-9]{0,8}$",
                                description="Model version; default: the newest ready one.")


def describe(error: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """One line naming each bad field; ``names`` renames fields by what a protocol calls them (the Open
    Inference Protocol's tensors and parameters)."""
    names = names or {}
    parts = (f"{'.'.join(str(names.get(p, p)) if i == 0 else str(p) for i, p in enumerate(e['loc'])) or 'body'}: "
             f"{e['msg']}" for e in error.errors()[:10])
    return "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor of the Open Inference Protocol signature.

    ``shape`` holds ``-1`` for a free dimension; a string names a model property resolved
    when the signature is shown (``"labels"``: the model's number of labels).
    """

    name: str
    datatype: str
    shape: tuple[int | str, ...]
    optional: bool = False  # an input that may be left out; an output sent only when asked for by name


@dataclasses.dataclass(frozen=True)
class Signature:
    """A task's tensors, and how they map to its requests and from its answers."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: The task requests (as fields) that checked input arrays stand for: one, or one per item.
    requests: Callable[[Mapping[str, np.ndarray]], list[dict[str, Any]]]
    #: The output arrays, by name, of the answers to those requests.
    tensors: Callable[[Sequence[Any]], dict[str, np.ndarray]]
    #: The input tensors' names, by the request field each becomes (error messages name the tensor).
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Request fields that shape only REST's answer (its encoding), by why: refused as v2 parameters.
    rest_only: Mapping[str, str] = dataclasses.field(default_factory=dict)


def utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{where} is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                           code="invalid_utf8") from None


@dataclasses.dataclass(frozen=True)
class Call:
    """What one request brings besides its fields: media limits, the decode budget, its deadline.

    ``encode`` is how the protocol wants a dense answer (flow) encoded; the task runs it
    inside the request's decode budget, counting ``encode_bytes_per_pixel``.
    """

    limits: MediaLimits
    budget: DecodeBudget
    deadline: float | None = None
    encode: Callable[[Any], Any] | None = None
    encode_bytes_per_pixel: int = 0


@dataclasses.dataclass(frozen=True)
class RestRoute:
    """How REST reaches a task: a JSON body by default, or uploads.

    ``files`` are multipart file fields (then the body is multipart, other fields come from
    the form or the query string); ``raw`` is ``(media type prefix, field)``: a body of that
    type is that one field, the others come from the query string.
    """

    path: str
    summary: str
    files: tuple[str, ...] = ()
    raw: tuple[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    architectures: tuple[str, ...]
    options: type[TaskOptions]
    runner: Callable[[Any, Any], Any]  # (model, options) -> the engine's BatchRunner
    request: type[RequestSchema]
    #: Answers one validated request; ``None`` for a streaming task, which its protocol drives.
    execute: Callable[[ServedModel, Any, Call], Awaitable[Any]] | None = None
    #: The answer as REST sends it as JSON (and gRPC parses into its message).
    answer: Callable[[str, Any], dict[str, Any]] | None = None
    response: type[BaseModel] | None = None  # the answer's schema, for documentation
    rest: RestRoute | None = None
    grpc_method: str | None = None
    signature: Signature | None = None
    #: Why a task has no v2 signature, shown in its v2 model metadata.
    v2_note: str | None = None

    def parse(self, fields: Mapping[str, Any], names: Mapping[str, str] | None = None) -> Any:
        """The validated request, or :class:`InvalidRequest` naming every bad field (as ``names`` calls
        them, see :func:`describe`)."""
        try:
            return self.request.model_validate(dict(fields))
        except ValidationError as exc:
            raise InvalidRequest(describe(exc, names)) from None

    def parse_json(self, raw: bytes) -> Any:
        try:
            return self.request.model_validate_json(raw)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise InvalidInput("request body is not valid JSON", code="malformed_json") from None
            raise InvalidRequest(describe(exc)) from None
