"""``inference.GRPCInferenceService``'s repository calls: the index, load and unload over gRPC.

They answer what the REST routes of :mod:`..repository` answer, from the same functions, and
are control calls: bound with the admin key when one is set.
"""

from __future__ import annotations

import asyncio

from ...errors import ModelControlDisabled
from ...pb.inference import grpc_service_pb2 as pb
from ..repository import load_model, refuse_overrides, repository_index
from ..state import ServerState
from .calls import Handler, RpcCall


class RepositoryService:
    def __init__(self, state: ServerState, control: bool) -> None:
        self.state = state
        self.control = control

    def handlers(self) -> dict[str, Handler]:
        return {"RepositoryIndex": self.RepositoryIndex, "RepositoryModelLoad": self.RepositoryModelLoad,
                "RepositoryModelUnload": self.RepositoryModelUnload}

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, call: RpcCall) -> pb.RepositoryIndexResponse:
        entries = repository_index(self.state.registry, ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  call: RpcCall) -> pb.RepositoryModelLoadResponse:
        self._check_control()
        call.model = name = _model_name(request)
        refuse_overrides(request.parameters)
        await load_model(self.state.registry, name)
        return pb.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    call: RpcCall) -> pb.RepositoryModelUnloadResponse:
        self._check_control()
        call.model = name = _model_name(request)
        refuse_overrides(request.parameters)
        await asyncio.to_thread(self.state.registry.unload, name)  # it waits for a load of the same model
        return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)

    def _check_control(self) -> None:
        if not self.control:
            raise ModelControlDisabled("models change only on restart here; start the server with "
                                       "--model-control explicit or poll to load and unload them")


def _model_name(request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest) -> str:
    """The model a load or unload names, in either layout: Triton's (``repository_name`` = 1, ``model_name``
    = 2; tritonclient sends both) or KServe's (``model_name`` = 1, which this proto reads as
    ``repository_name``, and nothing at 2)."""
    return request.model_name or request.repository_name
