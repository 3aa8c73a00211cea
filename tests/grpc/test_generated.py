"""The committed generated code is what `make proto` makes of the committed .proto."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from ..support import REPO

COMMITTED = REPO / "server" / "perceiver_serve" / "pb"

# The generator stamps its own version into the code; another grpcio-tools release writing the
# same messages is not staleness, so these stamps are compared as placeholders.
_VERSION_STAMPS = (
    (re.compile(r"# Protobuf Python Version: .*"), "# Protobuf Python Version: X"),
    (re.compile(r"ValidateProtobufRuntimeVersion\([^)]*\)"), "ValidateProtobufRuntimeVersion(X)"),
    (re.compile(r"GRPC_GENERATED_VERSION = '[^']*'"), "GRPC_GENERATED_VERSION = 'X'"),
)


def _normalised(path: Path) -> str:
    text = path.read_text()
    for pattern, placeholder in _VERSION_STAMPS:
        text = pattern.sub(placeholder, text)
    return text


def _generator():
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path):
    fresh = _generator().generate(tmp_path)
    assert fresh, "the generator wrote nothing"
    for path in fresh:
        committed = COMMITTED / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert _normalised(committed) == _normalised(path), f"{committed} is stale: run `make proto`"


def test_generated_code_imports_as_a_package():
    from perceiver_serve.pb.perceiver.v1 import perceiver_pb2, perceiver_pb2_grpc

    service = perceiver_pb2.DESCRIPTOR.services_by_name["Perceiver"]
    assert service.full_name == "perceiver.v1.Perceiver"
    assert {m.name for m in service.methods} == {
        "ClassifyText", "FillMask", "ClassifyImage", "EstimateFlow", "ListModels", "ReconstructVideo"}
    assert perceiver_pb2_grpc.PerceiverStub
