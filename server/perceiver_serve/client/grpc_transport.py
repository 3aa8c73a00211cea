"""The same calls over gRPC (grpc.aio), and the channel the video stream uses."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..answers import ClassificationResponse, FillMaskResponse, Health, ModelHealth, ModelList
from ..pb.perceiver.v1 import perceiver_pb2 as pb
from ..pb.perceiver.v1 import perceiver_pb2_grpc as rpc
from .connection import Connection, with_retries
from .errors import PerceiverError, unsendable

T = TypeVar("T")

MAX_MESSAGE_BYTES = 256 << 20  # answers (a flow field) may be large; the server bounds what it sends


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    for name, value in error.trailing_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


def grpc_error(error: grpc.aio.AioRpcError, target: str, *, deadline_passed: bool = False) -> PerceiverError:
    """``error`` as a :class:`PerceiverError`; ``deadline_passed`` says the call's own deadline has.

    A stream whose deadline passes while its requests are being written can end INTERNAL
    ("Internal error from Core", grpc/grpc#36066) rather than DEADLINE_EXCEEDED: with no
    answer from the server behind it, that is the deadline.
    """
    status = error.code()
    code = _trailer(error, "x-error-code")
    message = error.details() or status.name
    if code is None and deadline_passed and status == grpc.StatusCode.INTERNAL \
            and _trailer(error, "x-request-id") is None:
        status, message = grpc.StatusCode.DEADLINE_EXCEEDED, f"Deadline Exceeded (gRPC said: {message})"
    if code is None:  # gRPC itself failed the call: no server answer behind it
        code = {grpc.StatusCode.UNAVAILABLE: "unreachable", grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
                grpc.StatusCode.CANCELLED: "cancelled"}.get(status, status.name.lower())
        if status == grpc.StatusCode.UNAVAILABLE:
            message = f"cannot reach {target}: {message}"
    retry_after = _trailer(error, "retry-after")
    return PerceiverError(code, message, status=status.name, request_id=_trailer(error, "x-request-id"),
                          retry_after=float(retry_after) if retry_after else None)


def as_dict(message: Message) -> dict[str, Any]:
    """A message as the dict REST would send (proto field names are the JSON keys)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _classification(message: pb.ClassificationResponse) -> ClassificationResponse:
    answer = as_dict(message)
    for result in answer["results"]:
        if not result.get("logits"):  # REST leaves logits out unless asked for them
            result.pop("logits", None)
    return ClassificationResponse.model_validate(answer)



def _whole_numbers(value: Any) -> Any:
    """``value`` with every integral float (a ``google.protobuf.Struct`` number) made an int, nested."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value

class GrpcTransport:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if connection.tls or connection.ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=connection.read_ca())
            self.channel = grpc.aio.secure_channel(connection.grpc_address, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(connection.grpc_address, options=options)
        self.stub = rpc.PerceiverStub(self.channel)
        self.metadata = (("authorization", f"Bearer {connection.api_key}"),) if connection.api_key else ()

    async def aclose(self) -> None:
        await self.channel.close()

    async def unary(self, method: Callable[..., Awaitable[T]], request: Message | Callable[[], Message]) -> T:
        """One call; ``request`` may be a function building it, whose encoding errors become ``invalid_request``."""
        if callable(request):
            try:
                request = request()
            except (TypeError, ValueError) as exc:  # protobuf refuses a wrong type or an out-of-range number
                raise unsendable(exc) from None
        async def once(timeout: float | None) -> T:
            try:
                return await method(request, metadata=self.metadata, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                raise grpc_error(exc, self.connection.grpc_address) from None

        return await with_retries(once, self.connection.timeout, self.connection.retries)

    async def classify_text(self, texts: list[str], top_k: int | None, model: str | None,
                            return_logits: bool) -> ClassificationResponse:
        request = functools.partial(pb.ClassifyTextRequest, texts=texts, top_k=top_k, model=model or "",
                                    return_logits=return_logits)
        return _classification(await self.unary(self.stub.ClassifyText, request))

    async def fill_mask(self, text: str, mask_spans: list[tuple[int, int]] | None, top_k: int | None,
                        model: str | None, truncate: bool) -> FillMaskResponse:
        def request() -> pb.FillMaskRequest:
            spans = [pb.ByteSpan(start=start, end=end) for start, end in mask_spans or ()]
            return pb.FillMaskRequest(text=text, mask_spans=spans, top_k=top_k, model=model or "", truncate=truncate)

        answer = as_dict(await self.unary(self.stub.FillMask, request))
        for masked in answer["masked"]:  # REST says null where gRPC leaves an optional field out
            masked.setdefault("original", None)
            for prediction in masked["predictions"]:
                prediction.setdefault("char", None)  # REST says null for a byte that is not printable
        return FillMaskResponse.model_validate(answer)

    async def classify_image(self, image: bytes, top_k: int | None, model: str | None,
                             return_logits: bool) -> ClassificationResponse:
        request = functools.partial(pb.ClassifyImageRequest, image=image, top_k=top_k, model=model or "",
                                    return_logits=return_logits)
        return _classification(await self.unary(self.stub.ClassifyImage, request))

    async def estimate_flow(self, frame1: bytes, frame2: bytes, model: str | None) -> np.ndarray:
        request = functools.partial(pb.EstimateFlowRequest, frame1=frame1, frame2=frame2, model=model or "")
        answer = await self.unary(self.stub.EstimateFlow, request)
        return np.frombuffer(answer.flow, "<f4").reshape(answer.height, answer.width, 2).copy()

    async def list_models(self) -> ModelList:
        answer = await self.unary(self.stub.ListModels, pb.ListModelsRequest())
        models = as_dict(answer)
        for info in models["models"]:  # REST leaves out what a model does not have (yet)
            for key in [key for key, value in info.items() if value == "" or value is False]:
                del info[key]
            if "labels_url" not in info:  # a label count only for models that answer with labels
                info.pop("labels", None)
            if not info.get("worker_pids"):  # only models in worker processes have them
                info.pop("worker_pids", None)
            for version in info.get("versions", []):
                if not version.get("reason"):
                    version.pop("reason", None)
            for key in ("options", "geometry"):  # a Struct's numbers are doubles: whole ones as REST sends them
                if key in info:
                    info[key] = _whole_numbers(info[key])
        return ModelList.model_validate(models)

    async def health(self) -> Health:
        """The standard health service for the server, and ListModels for each model's state."""
        check = health_pb2_grpc.HealthStub(self.channel).Check
        answer = await self.unary(check, health_pb2.HealthCheckRequest(service=""))
        serving = answer.status == health_pb2.HealthCheckResponse.SERVING
        try:
            models = await self.list_models()
        except PerceiverError as exc:  # health is open, ListModels needs the key: the server's state alone
            if exc.code != "unauthenticated":
                raise
            return Health(status="ready" if serving else "not_ready", models={})
        return Health(status="ready" if serving else "not_ready",
                      models={m.name: ModelHealth(state=m.state, **({"reason": m.reason} if m.reason else {}))
                              for m in models.models})
