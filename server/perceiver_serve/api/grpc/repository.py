"""``inference.GRPCInferenceService``'s repository calls: the index, load and unload over gRPC.

They answer what the REST routes of :mod:`..repository` answer, from the same functions, and
are control calls: bound with the admin key when one is set.
"""

from __future__ import annotations

from ...errors import InvalidRequest, ModelControlDisabled
from ...pb.inference import grpc_service_pb2 as pb
from ..repository import load_model, repository_index
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
        call.model = request.model_name
        _no_parameters(request)
        await load_model(self.state.registry, request.model_name)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    call: RpcCall) -> pb.RepositoryModelUnloadResponse:
        self._check_control()
        call.model = request.model_name
        _no_parameters(request)
        self.state.registry.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)

    def _check_control(self) -> None:
        if not self.control:
            raise ModelControlDisabled("models change only on restart here; start the server with "
                                       "--model-control explicit or poll to load and unload them")


def _no_parameters(request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest) -> None:
    """Triton's load parameters (a config or files to load instead of the repository's) have no
    meaning here: refused, not ignored. ``unload_dependents`` (tritonclient sends it on every unload)
    is met whatever its value: no model here depends on another."""
    unknown = sorted(set(request.parameters) - {"unload_dependents"})
    if unknown:
        raise InvalidRequest(f"parameters {unknown} are not supported: a model is "
                             "loaded from its folder in the repository, as its model.toml says")
