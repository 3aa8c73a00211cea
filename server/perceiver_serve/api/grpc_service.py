"""The RPCs of ``perceiver.v1.Perceiver``: parse a message, call the task, shape the answer.

Each unary RPC is its REST route's twin: the same task call with the same checks, and the
answer built from the same dicts (:mod:`.common`) that REST sends as JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import json_format

from ..errors import InvalidRequest, PayloadTooLarge
from ..pb.perceiver.v1 import perceiver_pb2 as pb
from ..tasks.flow import estimate_flow
from ..tasks.image import classify_image
from ..tasks.text import classify_texts, fill_mask
from .common import MAX_TEXTS, classification_json, fill_mask_json, models_json
from .grpc import RpcCall, top_k_of
from .grpc_video import reconstruct_video
from .rest import ServerState

MAX_MASK_SPANS = 4096


def _classifications(model: str, results: list) -> pb.ClassificationResponse:
    return json_format.ParseDict({"model": model, "results": [classification_json(r) for r in results]},
                                 pb.ClassificationResponse())


class PerceiverService:
    def __init__(self, state: ServerState, max_message_bytes: int) -> None:
        self.state = state
        self.registry = state.registry
        self.max_message_bytes = max_message_bytes

    async def ClassifyText(self, request: pb.ClassifyTextRequest, call: RpcCall) -> pb.ClassificationResponse:
        texts = list(request.texts)
        if not 1 <= len(texts) <= MAX_TEXTS:
            raise InvalidRequest(f"texts: give 1 to {MAX_TEXTS} texts, not {len(texts)}")
        top = top_k_of(request)
        served = call.resolve(self.registry, "text-classification", request.model)
        results = await classify_texts(served, texts, top=top, return_logits=request.return_logits,
                                       deadline=call.deadline())
        return _classifications(served.name, results)

    async def FillMask(self, request: pb.FillMaskRequest, call: RpcCall) -> pb.FillMaskResponse:
        if len(request.mask_spans) > MAX_MASK_SPANS:
            raise InvalidRequest(f"mask_spans: at most {MAX_MASK_SPANS} spans, not {len(request.mask_spans)}")
        top = top_k_of(request)
        served = call.resolve(self.registry, "fill-mask", request.model)
        spans = [(span.start, span.end) for span in request.mask_spans]
        result = await fill_mask(served, request.text, spans, top=top, truncate=request.truncate,
                                 deadline=call.deadline())
        return json_format.ParseDict(fill_mask_json(served.name, result), pb.FillMaskResponse())

    async def ClassifyImage(self, request: pb.ClassifyImageRequest, call: RpcCall) -> pb.ClassificationResponse:
        top = top_k_of(request)
        served = call.resolve(self.registry, "image-classification", request.model)
        result = await classify_image(served, request.image, self.state.limits, self.state.budget, top=top,
                                      return_logits=request.return_logits, deadline=call.deadline())
        return _classifications(served.name, [result])

    async def EstimateFlow(self, request: pb.EstimateFlowRequest, call: RpcCall) -> pb.EstimateFlowResponse:
        served = call.resolve(self.registry, "optical-flow", request.model)
        flow = await estimate_flow(served, request.frame1, request.frame2, self.state.limits, self.state.budget,
                                   deadline=call.deadline())
        height, width, _ = flow.shape
        if flow.nbytes > self.max_message_bytes:  # else grpc fails the send with a message about itself
            raise PayloadTooLarge(
                f"the flow field of {width}×{height} frames is {flow.nbytes} bytes, more than this server's gRPC "
                f"message limit of {self.max_message_bytes} bytes; send smaller frames or use REST")
        return pb.EstimateFlowResponse(model=served.name, height=height, width=width, flow=flow.astype("<f4").tobytes())

    async def ListModels(self, request: pb.ListModelsRequest, call: RpcCall) -> pb.ListModelsResponse:
        return json_format.ParseDict(models_json(self.registry), pb.ListModelsResponse())

    async def ReconstructVideo(self, requests: AsyncIterator[pb.ReconstructVideoRequest], call: RpcCall) -> None:
        await reconstruct_video(self.state, requests, call)
