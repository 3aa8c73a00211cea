"""Precision as a model option: float32, bfloat16, float16, int8 and auto.

* ``int8`` is dynamic quantization of the matrix products: weights are stored as int8 per
  output channel, each activation is quantized on the fly (one scale per call) and the
  product is accumulated in int32 and returned in float32. The kernels are chosen at run time
  (:func:`int8_engine`): oneDNN's where the CPU has AMX (its tile instructions multiply int8
  matrices; fbgemm does not use them), fbgemm's otherwise (AVX2, VNNI where present). Every
  :class:`~.kernels.Linear` weight gets its packed int8 twin; :func:`~.kernels.linear` and
  :func:`~.kernels.weight_matmul` use it, so the absorbed cross-attention paths, which multiply by weights directly rather than through
  a module, are quantized as well. A self-attention's query, key and value weights share one
  twin instead, so that their common input is quantized once (``QKVAttention.fuse_int8``).
  The float32 weights stay (folds of two weights and the fp32 self-check use them).
* ``auto`` picks, when the model is loaded, what the device multiplies natively: bfloat16 on
  CUDA sm80 or newer and on CPUs with AVX-512-BF16 or AMX, float16 on older GPUs, float32
  otherwise.

Every reduced-precision model is compared with its float32 self on a fixed probe input at
load (:func:`check_against_float32`); the arg-max agreement and largest difference are
logged and kept on the model as :class:`PrecisionCheck`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .chunking import in_row_chunks

FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PRECISIONS = (*FLOAT_DTYPES, "int8", "auto")



@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (empty where that file is missing: not Linux)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, colon, value = line.partition(":")
            if colon:
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_vendor() -> str:
    """The CPU's ``vendor_id`` (``GenuineIntel``, ``AuthenticAMD``, …); "" where unknown."""
    return _cpuinfo().get("vendor_id", "")


@functools.cache
def cpu_features() -> dict[str, bool]:
    """The CPU features that decide which kernels are fast here, from ``/proc/cpuinfo``.

    Where that file is missing (not Linux), torch's own dispatch level stands in for the
    vector width, and bf16/VNNI/AMX count as absent.
    """
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    if not flags:
        capability = torch.backends.cpu.get_cpu_capability()
        flags = {"avx2"} | ({"avx512f"} if capability.startswith("AVX512") else set())
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "amx": "amx_tile" in flags,
    }


def int8_engine() -> str:
    """The quantized engine whose kernels int8 uses here: ``onednn`` on CPUs with AMX, else ``fbgemm``.

    On one Emerald Rapids core oneDNN's dynamic int8 product (AMX) takes 0.93 ms for
    256 × 1280 × 1280 against fbgemm's 2.14 (AVX-512 VNNI), same answers; with oneDNN held to
    AVX-512 VNNI it is 1.73–1.79 ms against 2.01–2.19, untested on other makers' CPUs, so those
    keep fbgemm, the kernels measured there. Both need AVX2.
    """
    return "onednn" if cpu_features()["amx"] and "onednn" in torch.backends.quantized.supported_engines \
        else "fbgemm"


def describe_cpu() -> str:
    """``"AVX2 AVX-512 BF16 VNNI"``: the features of :func:`cpu_features` this CPU has."""
    names = {"avx2": "AVX2", "avx512": "AVX-512", "bf16": "BF16", "vnni": "VNNI", "amx": "AMX"}
    present = [names[key] for key, on in cpu_features().items() if on]
    return " ".join(present) or "none of AVX2, AVX-512, BF16, VNNI, AMX"


def effective_precision(requested: str, device: str | torch.device) -> str:
    """The precision a model asking for ``requested`` runs in on ``device`` (resolves ``auto``)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unsupported dtype {requested!r}; choose one of {list(PRECISIONS)}")
    device = torch.device(device)
    if requested == "int8" and device.type != "cpu":
        raise ValueError("dtype 'int8' runs on CPU only; use 'auto', 'bfloat16' or 'float16' on a GPU")
    if requested == "int8" and int8_engine() not in torch.backends.quantized.supported_engines:
        raise ValueError(f"dtype 'int8' needs the {int8_engine()} kernels (an x86 CPU with AVX2); "
                         f"this build has {torch.backends.quantized.supported_engines}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.get_device_capability(device) >= (8, 0) else "float16"
    if device.type == "cpu":
        features = cpu_features()
        return "bfloat16" if features["bf16"] or features["amx"] else "float32"
    return "float32"


# --- int8 ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Int8Weight:
    """A float weight's packed int8 twin (for :func:`int8_engine`), and of its transpose once that is needed."""

    packed: torch.ScriptObject
    bias: torch.Tensor | None
    reduce_range: bool
    engine: str = "fbgemm"  # whose kernels packed it (see _dynamic_product)
    transposed: torch.ScriptObject | None = None


def _pack(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.ScriptObject:
    """int8 per-output-channel weight, packed for :func:`int8_engine`'s dynamic linear."""
    scales = (weight.detach().abs().amax(dim=1).float() / 127).clamp_min(1e-12)
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = int8_engine()
    try:
        with warnings.catch_warnings():  # quantized tensors are deprecated; the packing ops still take them
            warnings.simplefilter("ignore")
            quantized = torch.quantize_per_channel(weight.detach().float(), scales, zero_points, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())
    finally:
        torch.backends.quantized.engine = previous


def int8_twin(weight: torch.Tensor, bias: torch.Tensor | None) -> Int8Weight:
    """The int8 twin of a linear weight (see :func:`~.loading.quantize_int8`).

    Without VNNI, fbgemm multiplies unsigned 8-bit activations by signed weights in 16-bit
    pairs that can saturate; quantizing activations to 7 bits there (``reduce_range``) avoids it.
    (oneDNN, chosen only with AMX, accumulates in 32 bits.)
    """
    return Int8Weight(_pack(weight, bias), bias, not cpu_features()["vnni"], int8_engine())


def int8_of(weight: torch.Tensor) -> Int8Weight | None:
    return getattr(weight, "int8", None)


def int8_linear(x: torch.Tensor, q: Int8Weight, bias: torch.Tensor | None) -> torch.Tensor:
    """``x Wᵀ + bias`` with the int8 weight; ``bias`` may differ from the one packed (folded biases)."""
    out = _dynamic_product(x, q.packed, q)
    if bias is not q.bias:
        out = out + ((0 if bias is None else bias) - (0 if q.bias is None else q.bias))
    return out.to(x.dtype)


def int8_matmul(x: torch.Tensor, weight: torch.Tensor, q: Int8Weight) -> torch.Tensor:
    """``x W`` (the weight used the other way round, as absorbed attention does) in int8."""
    if q.transposed is None:
        q.transposed = _pack(weight.t(), None)
    return _dynamic_product(x, q.transposed, q).to(x.dtype)


#: oneDNN's int8 products run in chunks of at most this many rows, each zero-padded to a multiple of
#: :data:`INT8_ROW_MULTIPLE` (see :func:`_dynamic_product`).
INT8_CHUNK_ROWS, INT8_ROW_MULTIPLE = 512, 64


def _dynamic_product(x: torch.Tensor, packed: torch.ScriptObject, q: Int8Weight) -> torch.Tensor:
    """The dynamic int8 product of ``x`` (float32 out, ``x``'s leading shape).

    oneDNN compiles a kernel for each shape it meets and keeps it in its primitive cache (up to
    1,024): products whose row count follows the request (a text's bytes, a batch of them) made the
    server's resident memory grow by 90–100 MiB over 1,500 varied requests (the load test, int8
    text model, AMX Xeon). So its products run in chunks of :data:`INT8_CHUNK_ROWS` rows, the last
    zero-padded to a multiple of :data:`INT8_ROW_MULTIPLE`: at most eight shapes a weight, as the
    float32 oneDNN products (``kernels._onednn_product``). Zero rows leave a product's activation
    scale as it was (the quantized range always holds 0), so a product of up to 512 rows gives what
    it gave unpadded; a longer one is quantized chunk by chunk. fbgemm compiles nothing per shape
    and multiplies ``x`` as it is.
    """
    x = x.float()
    if q.engine != "onednn":
        return torch.ops.quantized.linear_dynamic(x, packed, q.reduce_range)
    out = in_row_chunks(x.reshape(-1, x.shape[-1]), INT8_CHUNK_ROWS, INT8_ROW_MULTIPLE,
                        lambda chunk: torch.ops.quantized.linear_dynamic(chunk, packed, q.reduce_range))
    return out.reshape(*x.shape[:-1], out.shape[-1])


# --- the float32 self-check ----------------------------------------------------------------------

#: A reduced precision that moves the probe output by more than this share of its largest value
#: is broken for that model, not merely rounded: bf16 moves the demo models' outputs by 0.5-1.8%,
#: but the optical-flow demo's (its matching logits are deliberately huge) by 130%.
BROKEN_RELATIVE_DIFF = 0.25


@dataclasses.dataclass(frozen=True)
class PrecisionCheck:
    """How a reduced-precision model's probe output compares with its float32 self."""

    precision: str
    argmax_agreement: float | None  # share of probe rows with the same arg-max; None: no logits
    rows: int
    max_abs_diff: float
    relative_diff: float = 0.0  # max_abs_diff over the float32 output's largest magnitude

    def broken(self) -> bool:
        """Whether the reduced precision moved the probe output by more than :data:`BROKEN_RELATIVE_DIFF`
        of its largest value: beyond rounding, the model's answers change (``dtype = "auto"`` then
        serves float32)."""
        return self.relative_diff > BROKEN_RELATIVE_DIFF

    def as_dict(self) -> dict[str, object]:
        """The fields that are set (no arg-max agreement for regression outputs), as ``GET /models`` and
        gRPC's ``PrecisionCheck`` show them (the relative difference is in the log line)."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if value is not None and key != "relative_diff"}

    def describe(self) -> str:
        agreement = "" if self.argmax_agreement is None else (
            f"arg-max agreement {self.argmax_agreement:.1%} of {self.rows} rows, ")
        return (f"{self.precision} vs float32 on the probe input: {agreement}largest difference {self.max_abs_diff:.3g}"
                f" ({self.relative_diff:.1%} of the largest output)")


def compare(reference: tuple[torch.Tensor | None, torch.Tensor],
            candidate: tuple[torch.Tensor | None, torch.Tensor], precision: str) -> PrecisionCheck:
    """Compare two probe outputs ``(logits or None, every value)`` (see ``PerceiverTaskModel.probe``)."""
    ref_logits, ref_values = reference
    got_logits, got_values = candidate
    diff = (got_values.float() - ref_values.float()).abs().max().item() if ref_values.numel() else 0.0
    scale = ref_values.float().abs().max().item() if ref_values.numel() else 0.0
    relative = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    if ref_logits is None or got_logits is None:
        return PrecisionCheck(precision, None, 0, diff, relative)
    same = ref_logits.float().argmax(-1) == got_logits.float().argmax(-1)
    return PrecisionCheck(precision, same.float().mean().item(), same.numel(), diff, relative)


def check_against_float32(model: torch.nn.Module, reduce: Callable[[torch.nn.Module], torch.nn.Module],
                          precision: str) -> tuple[torch.nn.Module, PrecisionCheck]:
    """Run the probe on the float32 ``model``, apply ``reduce`` and run it again."""
    with torch.inference_mode():
        reference = model.probe()
        reduced = reduce(model)
        check = compare(reference, reduced.probe(), precision)
    return reduced, check
