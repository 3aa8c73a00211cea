"""dtype = "int8" / "auto" in model.toml: the effective precision and its float32 check are reported."""

import pytest
from google.protobuf import json_format

from perceiver_serve.tasks import TASKS
from perceiver_serve.engine import ModelRegistry, ModelRepository
from perceiver_serve.modeling import precision
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb

from .test_repository import GOOD, write_model


@pytest.fixture(scope="module")
def registry(tmp_path_factory, text_checkpoint):
    root = tmp_path_factory.mktemp("precision-repo")
    for dtype in ("int8", "auto", "float32"):
        write_model(root, dtype, GOOD.replace('dtype = "float32"', f'dtype = "{dtype}"'), text_checkpoint)
    messages: list[str] = []
    registry = ModelRegistry(ModelRepository.scan(root, TASKS), progress=messages.append)
    registry.load_all()
    yield registry, messages
    registry.stop()


def test_models_show_the_effective_dtype_and_the_float32_check(registry):
    registry, messages = registry
    native_bf16 = precision.cpu_features()["bf16"] or precision.cpu_features()["amx"]
    expected = {"int8": "int8", "auto": "bfloat16" if native_bf16 else "float32", "float32": "float32"}
    for requested, effective in expected.items():
        info = registry.get(requested).describe()
        assert info["state"] == "ready", info.get("reason")
        assert (info["dtype"], info["requested_dtype"]) == (effective, requested)
        if effective == "float32":
            assert "precision_check" not in info
        else:
            check = info["precision_check"]
            assert check["precision"] == effective and check["rows"] == 4
            assert check["argmax_agreement"] >= 0.75 and check["max_abs_diff"] < 0.5
            assert any(f"{requested}: {effective} vs float32 on the probe input: arg-max agreement" in m
                       for m in messages)


def test_grpc_list_models_carries_them(registry):
    registry, _ = registry
    models = [registry.get(name).describe() for name in ("int8", "float32")]
    reply = json_format.ParseDict({"models": models}, pb.ListModelsResponse())
    assert reply.models[0].dtype == "int8" and reply.models[0].precision_check.argmax_agreement >= 0.75
    assert json_format.MessageToDict(reply, preserving_proto_field_name=True)["models"] == models
