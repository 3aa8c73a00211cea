"""tritonclient's side of tests/oip/test_tritonclient.py, run in a child process.

tritonclient registers its own ``inference.*`` protobuf messages in the process-wide
descriptor pool, as the server's generated code does, and the pool refuses a second file
defining the same names: the two cannot share one process. So the test runs this script
and compares what it prints (JSON) with the server's REST answers.

    python -m tests.oip.triton_calls http|grpc HOST:PORT INPUTS.npz
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np


def _tensor(module: Any, kind: str, name: str, array: np.ndarray, datatype: str, binary: bool) -> Any:
    tensor = module.InferInput(name, list(array.shape), datatype)
    if kind == "http":
        tensor.set_data_from_numpy(array, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)  # gRPC: always raw_input_contents
    return tensor


def _output(module: Any, kind: str, name: str, binary: bool) -> Any:
    return module.InferRequestedOutput(name, binary_data=binary) if kind == "http" else module.InferRequestedOutput(name)


def _text(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.ravel()]


def run(kind: str, address: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    if kind == "http":
        import tritonclient.http as module
        client = module.InferenceServerClient(address, network_timeout=120)
    else:
        import tritonclient.grpc as module
        client = module.InferenceServerClient(address)
    from tritonclient.utils import InferenceServerException

    out: dict[str, Any] = {"live": client.is_server_live(), "ready": client.is_server_ready(),
                           "models_ready": {m: client.is_model_ready(m) for m in inputs["models"]}}
    server = client.get_server_metadata()
    out["extensions"] = list(server["extensions"] if kind == "http" else server.extensions)
    meta = client.get_model_metadata("text-sentiment")
    if kind == "grpc":
        meta = {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs],
                "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs]}
    out["metadata"] = {"inputs": meta["inputs"], "outputs": meta["outputs"]}
    config = client.get_model_config("language-mlm")
    if kind == "grpc":  # its messages and enums, as a tritonclient.grpc user reads them
        from tritonclient.grpc import model_config_pb2 as mc
        config = config.config
        config = {"max_batch_size": config.max_batch_size,
                  "input": [{"name": t.name, "data_type": mc.DataType.Name(t.data_type), "dims": list(t.dims),
                             "optional": t.optional} for t in config.input],
                  "output": [{"name": t.name, "data_type": mc.DataType.Name(t.data_type), "dims": list(t.dims)}
                             for t in config.output],
                  "kind": mc.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind),
                  "parameters": {k: v.string_value for k, v in config.parameters.items()}}
    else:
        config = {**config, "kind": config["instance_group"][0]["kind"],
                  "parameters": {k: v["string_value"] for k, v in config["parameters"].items()}}
        config["input"] = [{"optional": False, **t} for t in config["input"]]
    out["config"] = {key: config[key] for key in ("max_batch_size", "input", "output", "kind", "parameters")}

    for binary in (True, False):
        result = client.infer("text-sentiment", [_tensor(module, kind, "TEXT", inputs["texts"], "BYTES", binary)],
                              outputs=[_output(module, kind, "LOGITS", binary), _output(module, kind, "LABEL", binary)])
        out[f"text_{'binary' if binary else 'json'}"] = {"logits": result.as_numpy("LOGITS").tolist(),
                                                           "labels": _text(result.as_numpy("LABEL"))}
    result = client.infer("image-classifier", [_tensor(module, kind, "IMAGE", inputs["image"], "BYTES", True)])
    out["image"] = {"logits": result.as_numpy("LOGITS").tolist(), "labels": _text(result.as_numpy("LABEL"))}
    result = client.infer("language-mlm", [_tensor(module, kind, "TEXT", inputs["mlm_text"], "BYTES", True),
                                           _tensor(module, kind, "MASK_SPANS", inputs["spans"], "INT64", True)],
                          outputs=[_output(module, kind, "TEXT", True), _output(module, kind, "LOGITS", True)])
    out["fill_mask"] = {"text": _text(result.as_numpy("TEXT")), "logits": result.as_numpy("LOGITS").tolist()}
    result = client.infer("optical-flow", [_tensor(module, kind, "FRAME1", inputs["frame1"], "UINT8", True),
                                           _tensor(module, kind, "FRAME2", inputs["frame2"], "UINT8", True)])
    out["flow"] = result.as_numpy("FLOW").tolist()

    def statistics(*name: str) -> dict[str, Any]:
        stats = client.get_inference_statistics(*name)
        if kind == "grpc":
            from google.protobuf import json_format
            stats = json_format.MessageToDict(stats, preserving_proto_field_name=True,
                                              always_print_fields_with_no_presence=True)
        return stats

    text_stats = statistics("text-sentiment")["model_stats"][0]
    out["stats"] = {key: int(text_stats[key]) for key in ("inference_count", "execution_count")}
    out["stats"]["success"] = int(text_stats["inference_stats"]["success"]["count"])
    out["all_stats"] = sorted(m["name"] for m in statistics()["model_stats"])

    out["errors"] = []
    for call in (lambda: client.get_model_metadata("no-such-model"), lambda: client.get_model_config("no-such-model"),
                 lambda: client.get_inference_statistics("no-such-model"),
                 lambda: client.infer("text-sentiment", [_tensor(module, kind, "WRONG", inputs["texts"], "BYTES", True)])):
        try:
            call()
            out["errors"].append(None)
        except InferenceServerException as exc:
            out["errors"].append(str(exc))
    client.close()
    return out


if __name__ == "__main__":
    kind, address, path = sys.argv[1:4]
    with np.load(path, allow_pickle=True) as data:
        arrays = {name: data[name] for name in data.files}
    print(json.dumps(run(kind, address, arrays)))
