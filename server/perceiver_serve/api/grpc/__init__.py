"""The gRPC front end: ``perceiver.v1.Perceiver`` (derived from the task table), health and
reflection on one grpc.aio server in the REST process."""

from .calls import RpcCall
from .perceiver import SERVICE
from .server import GrpcServer

__all__ = ["SERVICE", "GrpcServer", "RpcCall"]
