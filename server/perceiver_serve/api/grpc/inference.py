"""``inference.GRPCInferenceService``: the Open Inference Protocol over gRPC, on the perceiver.v1 port.

Tensors arrive in ``raw_input_contents`` (as tritonclient sends them) or in typed
``contents``; outputs always go out in ``raw_output_contents``, which every client reads
(tritonclient's ``as_numpy`` cannot read typed contents of numeric outputs). ServerLive and
ServerReady need no API key, like the REST health routes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from google.protobuf import json_format

from ...errors import InvalidInput, ModelNotFound, PayloadTooLarge
from ...pb.inference import grpc_service_pb2 as pb
from ..oip import infer as v2
from ..oip.tensors import DTYPES, Tensor, check_datatype, element_count, from_raw, to_raw
from ..state import ServerState
from .calls import Handler, RpcCall

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})
# Which typed list of InferTensorContents carries each datatype (FP16 has none: raw only).
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _parameters(parameters: Any) -> dict[str, Any]:
    out = {}
    for name, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is not None:
            out[name] = getattr(parameter, kind)
    return out


def _from_contents(tensor: Any) -> Tensor:
    name, shape = tensor.name, list(tensor.shape)
    datatype = check_datatype(name, tensor.datatype)
    count = element_count(name, shape, v2.MAX_ELEMENTS)
    field = _CONTENTS.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} has no typed contents; send it in raw_input_contents",
                           code="bad_tensor_data")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: contents hold {len(values)} elements but shape {shape} holds {count}",
                           code="shape_mismatch")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return Tensor(name, datatype, array.reshape(shape))
    wide = np.asarray(values)
    dtype = DTYPES[datatype]
    if dtype.kind in "iu" and count:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(f"input {name!r}: a value is outside the range of {datatype}", code="bad_tensor_data")
    return Tensor(name, datatype, wide.astype(dtype).reshape(shape))


def _inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    raw = request.raw_input_contents
    if not raw:
        return [_from_contents(tensor) for tensor in request.inputs]
    if len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: with raw contents, "
                           "every input is given there, in order", code="bad_tensor_data")
    for tensor in request.inputs:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input {tensor.name!r} has typed contents beside raw_input_contents",
                               code="bad_tensor_data")
    return [from_raw(tensor.name, tensor.datatype, list(tensor.shape), data, v2.MAX_ELEMENTS)
            for tensor, data in zip(request.inputs, raw)]


class InferenceService:
    def __init__(self, state: ServerState, max_message_bytes: int) -> None:
        self.state = state
        self.max_message_bytes = max_message_bytes

    def handlers(self) -> dict[str, Handler]:
        """The protocol's own RPCs; the repository calls are :class:`.repository.RepositoryService`'s."""
        return {name: getattr(self, name) for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                                        "ModelMetadata", "ModelConfig", "ModelStatistics", "ModelInfer")}

    async def ServerLive(self, request: pb.ServerLiveRequest, call: RpcCall) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, call: RpcCall) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=v2.server_ready(self.state))

    async def ModelReady(self, request: pb.ModelReadyRequest, call: RpcCall) -> pb.ModelReadyResponse:
        """``ready: false`` for a model or version that isn't there too, as Triton answers (a readiness
        question, not a lookup)."""
        call.model = request.name
        try:
            return pb.ModelReadyResponse(ready=v2.model_ready(self.state, request.name, request.version))
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, call: RpcCall) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**v2.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, call: RpcCall) -> pb.ModelMetadataResponse:
        served = v2.find_model(self.state.registry, request.name, request.version)
        call.model = served.name
        metadata = v2.model_metadata(self.state.registry, served)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        properties = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata["parameters"].items()}
        return pb.ModelMetadataResponse(
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"],
            inputs=[tensor(**t) for t in metadata["inputs"]], outputs=[tensor(**t) for t in metadata["outputs"]],
            properties=properties)

    async def ModelConfig(self, request: pb.ModelConfigRequest, call: RpcCall) -> pb.ModelConfigResponse:
        served = v2.find_model(self.state.registry, request.name, request.version)
        call.model = served.name
        return json_format.ParseDict({"config": v2.model_config(served)}, pb.ModelConfigResponse())

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              call: RpcCall) -> pb.ModelStatisticsResponse:
        call.model = request.name
        return json_format.ParseDict(v2.model_statistics(self.state.registry, request.name, request.version),
                                     pb.ModelStatisticsResponse())

    async def ModelInfer(self, request: pb.ModelInferRequest, call: RpcCall) -> pb.ModelInferResponse:
        call.model = request.model_name
        for kind, tensors in (("input", request.inputs), ("output", request.outputs)):
            for tensor in tensors:
                v2.refuse_unsupported(kind, tensor.name, tensor.parameters)
        names = [o.name for o in request.outputs] if request.outputs else None
        infer = v2.InferRequest(request.model_name, request.model_version, _inputs(request),
                                _parameters(request.parameters), names, request.id)
        answer = await v2.infer(self.state, infer, call.deadline())
        call.model = answer.model
        raw = [to_raw(t) for t in answer.outputs]
        size = sum(len(data) for data in raw)
        if size > self.max_message_bytes:  # else grpc fails the send with a message about itself
            raise PayloadTooLarge(f"the answer's tensors are {size} bytes, more than this server's gRPC message "
                                  f"limit of {self.max_message_bytes} bytes; send smaller inputs or use REST")
        tensor = pb.ModelInferResponse.InferOutputTensor
        return pb.ModelInferResponse(
            model_name=answer.model, model_version=answer.version, id=answer.id,
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in answer.outputs],
            raw_output_contents=raw)
