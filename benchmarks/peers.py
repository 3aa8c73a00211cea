"""ONNX Runtime, the peer a performance-minded user would pick: the transformers model exported
with ``torch.onnx.export`` and run by ONNX Runtime in float32, and after
``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantized per call).

Exports are cached beside the checkpoints (``results/tmp/onnx/``). ONNX Runtime, onnx and
onnxscript are benchmark and test dependencies only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .checkpoints import DEFAULT_CACHE

ONNX_CACHE = DEFAULT_CACHE.parent / "onnx"
#: Dynamic axes of an exported text model: any batch size and length.
TEXT_AXES = {"inputs": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}}


class OnnxModel:
    """An ONNX Runtime session that takes the same named tensors as the exported transformers model."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {name: np.ascontiguousarray(x.numpy()) for name, x in zip(self.names, inputs)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def export(reference: torch.nn.Module, example: Sequence[torch.Tensor], names: Sequence[str],
           dynamic: dict[str, dict[int, str]], path: Path) -> Path:
    """``reference`` (a transformers head) as ONNX at ``path`` (kept if it exists), logits as output.

    The TorchScript-based exporter (``dynamo=False``) handles the Perceiver heads as they are;
    dynamic axes let one export take every batch size and length.
    """
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_LogitsOnly(reference), tuple(example), str(partial), input_names=list(names),
                          output_names=["logits"], dynamic_axes=dynamic, opset_version=17, dynamo=False)
    partial.rename(path)
    return path


def quantized(path: Path) -> Path:
    """The int8 dynamic quantization of an exported model (kept if it exists)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name(path.stem + "-int8.onnx")
    if not target.is_file():
        partial = target.with_suffix(".partial")
        quantize_dynamic(str(path), str(partial), weight_type=QuantType.QInt8)
        partial.rename(target)
    return target


class _LogitsOnly(torch.nn.Module):
    """The transformers head, called positionally, returning only its logits tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            return self.model(inputs=inputs).logits
        return self.model(inputs=inputs, attention_mask=attention_mask).logits
