"""Load a checkpoint directory in Hugging Face layout into one of our task heads.

The directory holds ``config.json`` and the weights as ``model.safetensors`` (preferred),
a sharded ``model.safetensors.index.json``, or ``pytorch_model.bin`` — the latter read with
``torch.load(weights_only=True)`` so a checkpoint can never run code. Every failure raises
:class:`CheckpointError` naming the file, and the key where one is at fault.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..allocator import trim_heap
from .attention import PerceiverEncoder, QKVAttention
from .config import PerceiverConfig
from .errors import CheckpointError
from .heads import ARCHITECTURES, PerceiverTaskModel
from .kernels import Linear, bf16_attention_pays
from .precision import FLOAT_DTYPES, PRECISIONS, check_against_float32, effective_precision, int8_engine, int8_twin

log = logging.getLogger(__name__)

DTYPES = FLOAT_DTYPES

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"


def quantize_int8(model: torch.nn.Module) -> int:
    """Give each self-attention's three projections one shared int8 twin
    (:meth:`~.attention.QKVAttention.fuse_int8`), every other :class:`~.kernels.Linear` weight of
    ``model`` its own, and so the weights a task model multiplies outside a module (MLM's byte embedding
    as its output layer: :meth:`~.heads.PerceiverTaskModel.output_projections`); on CPUs where it pays
    (:func:`~.kernels.bf16_attention_pays`) attention is computed in bf16. Returns how many weights
    were quantized."""
    fused = {id(layer) for module in model.modules() if isinstance(module, QKVAttention) and module.fuse_int8()
             for layer in (module.query, module.key, module.value)}
    count = len(fused)
    for module in model.modules():
        if isinstance(module, Linear) and id(module) not in fused:
            module.weight.int8 = int8_twin(module.weight, module.bias)
            count += 1
    if isinstance(model, PerceiverTaskModel):
        for weight, bias in model.output_projections():
            weight.int8 = int8_twin(weight, bias)
            count += 1
    if bf16_attention_pays():
        for module in model.modules():
            if isinstance(module, QKVAttention):
                module.attention_dtype = torch.bfloat16
    return count


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; choose one of {sorted(DTYPES)}")
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


def architecture_of(config: PerceiverConfig, source: str) -> type[PerceiverTaskModel]:
    if not config.architectures:
        raise CheckpointError(f"{source}: 'architectures' is missing; cannot tell which task head to build")
    for name in config.architectures:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise CheckpointError(
        f"{source}: unknown architecture {list(config.architectures)}; supported: {sorted(ARCHITECTURES)}"
    )


def load_config(directory: str | Path) -> PerceiverConfig:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    return PerceiverConfig.from_file(directory / "config.json")


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint directory, on the CPU, from whichever weight format it holds."""
    directory = Path(directory)
    if (directory / SAFETENSORS).is_file():
        return _read_safetensors(directory / SAFETENSORS)
    if (directory / SAFETENSORS_INDEX).is_file():
        return _read_sharded(directory / SAFETENSORS_INDEX)
    if (directory / PYTORCH_BIN).is_file():
        return _read_bin(directory / PYTORCH_BIN)
    raise CheckpointError(
        f"{directory}: no weights found (looked for {SAFETENSORS}, {SAFETENSORS_INDEX}, {PYTORCH_BIN})"
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, copied out of safetensors' memory map.

    A mapped tensor reads the file whenever its pages are touched; a served model's weights
    must not depend on a file that an operator may overwrite while it serves (a rewrite
    shorter than the mapping kills the process with SIGBUS). One tensor is copied at a time.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as weights:
            return {key: weights.get_tensor(key).clone() for key in weights.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from None


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index_path}: malformed shard index ({exc})") from None
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        shard_path = (index_path.parent / shard).resolve()
        if index_path.parent.resolve() not in shard_path.parents:
            raise CheckpointError(f"{index_path}: shard {shard!r} lies outside the checkpoint directory")
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path}: shard file {shard!r} is missing")
        state.update(_read_safetensors(shard_path))
    return state


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged or unsafe pickles
        raise CheckpointError(f"{path}: cannot read weights safely ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of tensor names to tensors")
    return state


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Missing, unexpected and mis-shaped tensors, reported by key before anything is assigned."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: missing weight {missing[0]!r}" + _more(missing))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected weight {unexpected[0]!r}" + _more(unexpected))
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: weight {key!r} has shape {tuple(state[key].shape)}, "
                f"the config implies {tuple(tensor.shape)}"
            )


def _more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


def load_model(
    directory: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    progress: Callable[[str], None] | None = None,
    compile: bool = False,
) -> PerceiverTaskModel:
    """Build the task head named by ``config.json`` and load its weights onto ``device``.

    ``dtype``: a float dtype, ``"int8"`` (dynamic quantization, CPU) or ``"auto"`` (see
    :mod:`.precision`). A reduced-precision model is compared with its float32 self on a fixed
    probe input; ``model.precision`` names the effective precision and ``model.precision_check``
    holds the comparison (None in float32). Where that comparison shows the reduced precision
    changing the answers (:meth:`~.precision.PrecisionCheck.broken`), ``"auto"`` loads the model
    again in float32 (keeping the failed check); an explicit dtype is kept, with a warning.
    ``compile``: the encoder runs through ``torch.compile`` (see :mod:`.compiled`); the first calls
    of each shape compile it.
    """
    directory = Path(directory)
    say = progress or log.info
    if isinstance(dtype, torch.dtype):
        dtype = str(resolve_dtype(dtype)).removeprefix("torch.")
    if dtype not in PRECISIONS:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {list(PRECISIONS)}")
    precision = effective_precision(dtype, device)
    config = load_config(directory)
    cls = architecture_of(config, str(directory / "config.json"))
    say(f"reading {cls.architecture} weights from {directory}")
    state = read_state_dict(directory)
    with torch.device("meta"):
        model = cls(config)
    check_state_dict(model, state, str(directory))
    model.load_state_dict(state, strict=True, assign=True)
    del state  # the model holds the tensors now; packing below frees some of them
    say(f"placing weights on {device}" + (f" ({precision} chosen for dtype 'auto')" if dtype == "auto" else ""))
    model = model.to(device=device, dtype=torch.float32).eval()
    model.requires_grad_(False)
    model.precision, model.precision_check = precision, None
    if precision != "float32":
        kernels = f" ({int8_engine()} kernels)" if precision == "int8" else ""
        say(f"converting to {precision}{kernels} and comparing with float32 on the probe input")
        model, model.precision_check = check_against_float32(model, lambda m: _reduce(m, precision), precision)
        say(model.precision_check.describe())
        if (check := model.precision_check).broken():
            log.warning("%s: %s changes this model's answers (%s)%s", directory, precision, check.describe(),
                        ": dtype 'auto' serves float32" if dtype == "auto" else "; dtype 'auto' would serve float32")
            if dtype == "auto":  # the reduced copy replaced the float32 weights: read them again (rare)
                model = load_model(directory, device, "float32", progress, compile)
                model.precision_check = check  # why it is float32 (GET /models shows it)
                return model
    if compile:
        from .compiled import compile_encoder

        compile_encoder(model)
    elif precision in ("float32", "bfloat16") and pack_latent_weights(model):
        trim_heap()  # the plain weights' pages, freed in the middle of the heap, go back to the system
    return model


def model_outline(directory: str | Path) -> PerceiverTaskModel:
    """The task head named by ``config.json``, built without reading its weights (on the meta device).

    Its config, architecture and geometry, for a process that prepares requests for a model that
    computes in another process (``worker = "process"``); it cannot compute.
    """
    config = load_config(directory)
    cls = architecture_of(config, str(Path(directory) / "config.json"))
    with torch.device("meta"):
        model = cls(config)
    return model.eval().requires_grad_(False)


def pack_latent_weights(model: torch.nn.Module) -> int:
    """Pack every encoder's self-attention weights in place for oneDNN where the model serves on a CPU in
    float32, or in bf16 where that CPU multiplies it natively (see :func:`kernels.pack_in_place`;
    elsewhere nothing changes). The last step of loading:
    a packed weight can't be moved or converted. Returns how many weights were packed."""
    return sum(m.pack_latent_weights() for m in model.modules() if isinstance(m, PerceiverEncoder))


def _reduce(model: PerceiverTaskModel, precision: str) -> PerceiverTaskModel:
    if precision == "int8":
        quantize_int8(model)
        return model
    return model.to(DTYPES[precision])
