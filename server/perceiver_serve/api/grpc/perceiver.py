"""``perceiver.v1.Perceiver``: one unary RPC per task, derived from the task table.

The request message becomes the task's fields, the task validates and answers them, and the
answer is the same dict REST sends as JSON, made into the reply message (:mod:`.messages`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from google.protobuf import json_format, message_factory
from google.protobuf.message import Message

from ...pb.perceiver.v1 import perceiver_pb2 as pb
from ...tasks import TASKS, Call, Task
from ..state import ServerState
from .calls import Handler, RpcCall
from .messages import fields_of, to_message
from .video import reconstruct_video

SERVICE = pb.DESCRIPTOR.services_by_name["Perceiver"]


class PerceiverService:
    def __init__(self, state: ServerState, max_message_bytes: int) -> None:
        self.state = state
        self.max_message_bytes = max_message_bytes

    def handlers(self) -> dict[str, Handler]:
        tasks = {task.grpc_method: self._task_rpc(task) for task in TASKS.values() if task.grpc_method}
        return {**tasks, "ListModels": self.ListModels, "ReconstructVideo": self.ReconstructVideo}

    def _task_rpc(self, task: Task) -> Handler:
        assert task.grpc_method is not None and task.execute is not None and task.answer is not None
        execute, answer = task.execute, task.answer
        reply = message_factory.GetMessageClass(SERVICE.methods_by_name[task.grpc_method].output_type)

        async def handle(request: Message, call: RpcCall) -> Message:
            body = task.parse(fields_of(request))
            served = call.resolve(self.state.registry, task.name, body.model, body.version or "")
            result = await execute(served, body, Call(self.state.limits, self.state.budget, call.deadline()))
            return to_message(answer(served.name, result), reply, self.max_message_bytes)

        return handle

    async def ListModels(self, request: pb.ListModelsRequest, call: RpcCall) -> pb.ListModelsResponse:
        return json_format.ParseDict(self.state.models_json(), pb.ListModelsResponse())

    async def ReconstructVideo(self, requests: AsyncIterator[pb.ReconstructVideoRequest], call: RpcCall) -> None:
        await reconstruct_video(self.state, requests, call)
