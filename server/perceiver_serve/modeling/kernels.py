"""Compute kernels: matrix products and attention, each on the fastest path available.

Attention goes through fused ``scaled_dot_product_attention`` kernels (never a materialised
score matrix for large problems), see :func:`attend`.

On x86 CPUs, oneDNN's fp32 matrix-product kernels beat MKL's ``sgemm`` (which ``F.linear``
uses): MKL keeps to its AVX2 code on AMD processors, so on an AVX-512 EPYC oneDNN is 2–3×
faster on one core (220–250 against 60–110 GFLOP/s on this model's 512 × 768 × 256 …
512 × 1280 × 1280 products). oneDNN is reached through the op PyTorch's own compiler uses for
CPU linear layers; it is checked against ``F.linear`` once, and not used if it is missing or
disagrees.

oneDNN builds (and keeps) kernels and buffers for every distinct product shape it meets, so
a process fed texts of every length grows without end (measured: 490 → 990 MiB over 2,000
random-length batches), and even one shape per batch size costs memory (the demo text model:
+80 MiB for batch sizes 1–32; the official one: ~25 MiB per batch size). Products therefore
reach it only at a few row counts per weight:

* the encoder's latent layers (:class:`Linear` given an ``onednn_max_rows``), whose rows are
  batch size × number of latents, at the shapes of batches of 1, 2, 4 … :data:`PACKED_MAX_BATCH`
  items (packed weights, and compiled encoders) or :data:`ONEDNN_MAX_BATCH` (others): a batch runs its latent stack in
  groups of those sizes (``PerceiverEncoder``; 13 = 8 + 4 + 1), any other latent product in the
  same parts of ``onednn_max_rows`` rows;
* every other product of at least :data:`ONEDNN_ROW_MULTIPLE` rows (inputs, output queries,
  whose row counts follow the request) in chunks of :data:`ONEDNN_CHUNK_ROWS` rows, the last
  one zero-padded to a multiple of ``ONEDNN_ROW_MULTIPLE``: at most eight row counts.

Weights of at most :data:`PACK_MAX_BYTES` are packed once in oneDNN's blocked layout
(:func:`packed_weight`) instead of being reordered in every call; the latent self-attention
weights of a float32 CPU model (and of a bf16 one where the CPU multiplies bf16 natively, see
:data:`ONEDNN_BF16`) are replaced by their packed form at load (:func:`pack_in_place`; in bf16 a
self-attention's query, key and value weights become one, ``attention.QKVAttention.fuse_packed``).
A bf16 latent product through oneDNN's op applies the MLP's activation as it writes its output
(:class:`Activation`), and adds a layer's residual the same way (:func:`_fuses_residual`). A
cross-attention over inputs padded at the end (a batch of texts) projects and attends only the real
rows (:func:`packable_lengths`, used by ``attention.QKVAttention``).

On Intel CPUs (:data:`MKL_PACKING`) the latent layers of a float32 text model also hold their
weights packed for MKL's ``sgemm`` at one item's rows: with its weights read afresh from memory in
every layer, as a pass reads them, MKL's packed product beats oneDNN's by 5–25% at these shapes
(:func:`pack_in_place`).

Thinner products stay with ``F.linear``. Measured on the mid-size text classifier at batch 16
on one core: 1.86× transformers with the groups, 1.19× with MKL (ONNX Runtime fp32 in the same
run: 2.0×).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..allocator import own_mappings
from . import precision
from .chunking import halving_parts, in_parts, in_row_chunks
from .precision import int8_linear, int8_matmul, int8_of
from .threads import on_own_thread

#: Element-wise functions that PyTorch hands to MKL's vector math library (VML) on x86. VML picks
#: its kernel for each function and precision lazily, on the first call; when that first call
#: comes from several intra-op threads at once (a large tensor on a multi-core CPU), a thread can
#: run VML's low-accuracy kernel on its chunk (about 11 correct bits) although PyTorch asks for high
#: accuracy (pytorch/pytorch#188792, oneMKL 2024.2). The Fourier position features are computed once
#: per grid and cached, so one such first call would skew every later answer of that process: a CI
#: run's server gave flow fields 3e-4 to 5e-4 (relative) away from the same model computed in the
#: test process, 50 times the float32 rounding of that model; sin and cos at 11 bits on half a grid
#: move its flow by 3e-3 (simulated here). :func:`resolve_vector_math` makes every first call a
#: one-element one, which no second thread shares.
VECTOR_MATH_FUNCTIONS = ("sin", "cos", "tan", "exp", "expm1", "log", "log1p", "log2", "log10", "sqrt",
                         "rsqrt", "tanh", "erf", "erfc", "erfinv", "sigmoid", "atan", "asin", "acos")


def resolve_vector_math() -> None:
    """Call each of :data:`VECTOR_MATH_FUNCTIONS` once on one element, in float32 and float64, so that
    VML settles its kernel choice before any multi-threaded call (run when this module is imported,
    before any model exists)."""
    with torch.no_grad():
        for dtype in (torch.float32, torch.float64):
            one = torch.full((1,), 0.5, dtype=dtype)
            for name in VECTOR_MATH_FUNCTIONS:
                getattr(torch, name)(one)


# The probes at import run on threads of their own, which end: oneDNN computes even their tiny
# products with the calling thread's OpenMP team, and a team that outlives its use slows the parallel
# work of every other thread (see .threads), here a server's device workers.
on_own_thread(resolve_vector_math)

#: Above this many attention scores per call, :func:`attend` keeps to kernels that never hold more
#: than this many scores at once (16 MiB of float32): SDPA's fused ones, or one head at a time in
#: row chunks (:func:`_attention_per_head`).
FUSED_SCORES_THRESHOLD = 1 << 22

#: Products with fewer rows than this stay with ``F.linear`` (oneDNN is slower on thin ones).
ONEDNN_MIN_ROWS = 16

#: Latent layers use oneDNN in groups of up to this many items (a bounded set of shapes, see above).
ONEDNN_MAX_BATCH = 4
#: Latent stacks whose weights are packed (:func:`pack_in_place`: float32, and bf16 where the CPU
#: multiplies it natively) run in groups of up to this many items and :data:`PACKED_GROUP_ROWS` rows
#: (:func:`packed_group_items`), then half, a quarter … (a batch of 13 is 8 + 4 + 1): at most five
#: shapes a weight. On an AMX Xeon, two threads, the mid-size text classifier (128 latents) at batch
#: 16: bf16 156 → 261 texts/s, fp32 79 → 88 (one thread 42 → 45) against groups of four, the same
#: answers; the learned-position image classifier (512 latents) at batch 8 gained nothing from
#: groups of 16 (0.61 against 0.62 images/s), hence the cap on rows. int8 products are not packed this
#: way and keep groups of four (16 was 8% slower).
PACKED_MAX_BATCH = 16
PACKED_GROUP_ROWS = 2048


def packed_group_items(latents: int) -> int:
    """Items per group of a packed latent stack of ``latents`` latents: doubled from
    :data:`ONEDNN_MAX_BATCH` while a group stays within :data:`PACKED_MAX_BATCH` items and
    :data:`PACKED_GROUP_ROWS` rows."""
    items = ONEDNN_MAX_BATCH
    while items * 2 <= PACKED_MAX_BATCH and items * 2 * latents <= PACKED_GROUP_ROWS:
        items *= 2
    return items

#: Other products reach oneDNN in chunks of this many rows, the last one zero-padded to a multiple
#: of ``ONEDNN_ROW_MULTIPLE``: at most eight row counts per weight, whatever the requests' sizes.
ONEDNN_CHUNK_ROWS = 512
ONEDNN_ROW_MULTIPLE = 64


def _onednn_linear_works(dtype: torch.dtype = torch.float32) -> bool:
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=g).to(dtype) for shape in ((2, 33, 24), (40, 24), (40,)))
    try:
        with torch.no_grad():
            got, expected = op(x, w, b, "none", [], "").float(), F.linear(x, w, b).float()
    except RuntimeError:
        return False
    return torch.allclose(got, expected, atol=1e-5 if dtype == torch.float32 else 5e-2)


ONEDNN_LINEAR = on_own_thread(_onednn_linear_works)


def _packing_works(dtype: torch.dtype = torch.float32) -> bool:
    try:
        reorder = torch.ops.mkldnn._reorder_linear_weight
    except (AttributeError, RuntimeError):
        return False
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(33, 24, generator=g).to(dtype), torch.randn(40, 24, generator=g).to(dtype)
    try:
        with torch.no_grad():
            got = torch.ops.mkldnn._linear_pointwise(x, reorder(w), None, "none", [], "").float()
    except RuntimeError:
        return False
    return torch.allclose(got, F.linear(x, w).float(), atol=1e-5 if dtype == torch.float32 else 5e-2)


#: Whether oneDNN takes weights packed ahead of time (see :func:`packed_weight`).
ONEDNN_PACKING = ONEDNN_LINEAR and on_own_thread(_packing_works)


def _mkl_packing_works() -> bool:
    """Whether MKL's packed ``sgemm`` (the op PyTorch's compiler uses for frozen float32 CPU graphs) is
    here and agrees with ``F.linear``."""
    try:
        reorder, op = torch.ops.mkl._mkl_reorder_linear_weight, torch.ops.mkl._mkl_linear
    except (AttributeError, RuntimeError):
        return False
    if not torch.backends.mkl.is_available():
        return False
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=g) for shape in ((8, 24), (40, 24), (40,)))
    try:
        with torch.no_grad():
            got = op(x, reorder(w, 8), w, b, 8)
    except RuntimeError:
        return False
    return torch.allclose(got, F.linear(x, w, b), atol=1e-5)


#: Whether a float32 model's latent layers also run one item's products through MKL's packed ``sgemm``
#: (:func:`pack_in_place`): on Intel CPUs. MKL keeps to its AVX2 code on AMD processors (see above),
#: where oneDNN stays in charge.
MKL_PACKING = precision.cpu_vendor() == "GenuineIntel" and on_own_thread(_mkl_packing_works)
#: ... for latent arrays of at most this many rows (the text models', where it was measured: 128, 256).
MKL_MAX_ROWS = 256


def _native_cpu_support(name: str) -> bool:
    check = getattr(getattr(torch.ops, "mkldnn", None), name, None)
    try:
        return bool(check()) if check is not None else True
    except RuntimeError:
        return True


#: Whether this CPU multiplies bf16 / fp16 matrices in hardware (AVX-512 BF16/FP16, AMX). Without
#: it, oneDNN's reduced-precision kernels run about ten times slower than fp32 ones (AVX2 CPUs).
NATIVE_CPU_PRODUCTS = {
    torch.bfloat16: _native_cpu_support("_is_mkldnn_bf16_supported"),
    torch.float16: _native_cpu_support("_is_mkldnn_fp16_supported"),
}

#: Whether a bf16 model's latent products go to oneDNN's op directly, its self-attention weights packed
#: in place, as float32 ones do (where the CPU multiplies bf16 natively). ``F.linear`` reaches oneDNN
#: for bf16 too, but reorders the weight in every call: on one Zen 4 core the published MLM's
#: 256 × 1280 × 1280 product takes 3.75 ms packed against 4.09 (the same bits).
ONEDNN_BF16 = (ONEDNN_PACKING and NATIVE_CPU_PRODUCTS[torch.bfloat16]
               and on_own_thread(_onednn_linear_works, torch.bfloat16) and on_own_thread(_packing_works, torch.bfloat16))


def _onednn_latent_dtype(x: torch.Tensor) -> bool:
    """Whether latent-shaped products of ``x``'s dtype go through oneDNN's op (float32; bf16 where
    :data:`ONEDNN_BF16`)."""
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and ONEDNN_BF16)


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation function that a bf16 latent product through oneDNN's op applies as it writes its
    output (``onednn``: the op's post-op name and algorithm), saving a pass over the output: on one AMX
    Xeon core pair, 26 distinct bf16 256 × 1280 × 1280 products with GELU took 537–542 µs each fused
    against 639–669 separately. Other products apply it after (see :func:`linear`). Call it to apply it
    to a tensor."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    onednn: tuple[str, str] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           onednn_max_rows: int = 0, activation: Activation | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``; through oneDNN for fp32 CPU inference products of ``ONEDNN_MIN_ROWS`` to
    ``onednn_max_rows`` rows (0: never; only for products whose shapes come from a small set).
    ``activation``: applied to the product (by oneDNN as it writes it, for bf16 latent products).

    bf16/fp16 products on a CPU without hardware support for them are computed in fp32 and
    rounded back: exact products of the low-precision values accumulated in fp32, which is what
    a native kernel computes, at fp32 speed (the weights stay in low precision in memory).

    A weight with an int8 twin (``dtype = "int8"``, see :mod:`.precision`) is multiplied in int8.

    ``residual``: added to the (activated) product; by oneDNN as it writes the product, where the
    activation would be fused (bf16 latent products, :func:`_fuses_residual`).
    """
    if residual is not None:
        if activation is None and _fuses_residual(residual, x, weight, onednn_max_rows):
            return _onednn_product(x, weight, bias, onednn_max_rows, residual=residual)
        return linear(x, weight, bias, onednn_max_rows=onednn_max_rows, activation=activation) + residual
    if activation is not None:
        if _fuses(activation, x, weight, onednn_max_rows):
            return _onednn_product(x, weight, bias, onednn_max_rows, activation=activation)
        return activation(linear(x, weight, bias, onednn_max_rows=onednn_max_rows))
    q = int8_of(weight)
    if q is not None and not x.requires_grad:
        return int8_linear(x, q, bias)
    if weight.is_mkldnn and not (_onednn_latent_dtype(x) and x.device.type == "cpu"
                                 and _latent_shaped(x.numel() // max(x.shape[-1], 1), onednn_max_rows)):
        weight = weight.to_dense()  # packed in place (see pack_in_place), met off its usual path
    if (
        x.device.type == "cpu"
        and not NATIVE_CPU_PRODUCTS.get(x.dtype, True)
        and not (weight.requires_grad or x.requires_grad)
    ):
        return linear(x.float(), weight.float(), None if bias is None else bias.float(),
                      onednn_max_rows=onednn_max_rows).to(x.dtype)
    if (
        ONEDNN_LINEAR
        and _onednn_latent_dtype(x)
        and x.device.type == "cpu"
        and weight.dtype == x.dtype
        and not (weight.requires_grad or x.requires_grad)
    ):
        rows = x.numel() // max(x.shape[-1], 1)
        latent = _latent_shaped(rows, onednn_max_rows)
        if x.dtype == torch.float32 and (latent or rows >= ONEDNN_ROW_MULTIPLE):
            if torch.compiler.is_compiling():
                return torch.ops.perceiver_serve.onednn_linear(x, weight, bias, onednn_max_rows)
            return _onednn_product(x, weight, bias, onednn_max_rows)
        if (latent or rows >= ONEDNN_ROW_MULTIPLE) and not torch.compiler.is_compiling():
            # bf16 (compiled: inductor's own). Other products too, in chunks of a few shapes: F.linear reaches
            # oneDNN as well, which compiles a kernel for every row count it meets and keeps it.
            return _onednn_product(x, weight, bias, onednn_max_rows)
    if (x.dtype == torch.float16 and x.device.type == "cpu" and not (weight.requires_grad or x.requires_grad)
            and x.numel() // max(x.shape[-1], 1) >= ONEDNN_ROW_MULTIPLE and not torch.compiler.is_compiling()):
        # fp16 (CPUs with native fp16 products): F.linear reaches oneDNN, so a few shapes for it too.
        return _onednn_product(x, weight, bias, 0, lambda chunk: F.linear(chunk, weight, bias))
    return F.linear(x, weight, bias)


def _fuses(activation: Activation, x: torch.Tensor, weight: torch.Tensor, max_rows: int) -> bool:
    """Whether :func:`linear` applies ``activation`` as oneDNN's post-op: only in bf16 latent products (a few
    shapes, where it was measured; a post-op is one more kernel oneDNN keeps per shape, and float32 products
    fused everywhere grew the load test's server by 4-10%)."""
    return activation.onednn is not None and _post_op_fuses(x, weight, max_rows)


def _fuses_residual(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, max_rows: int) -> bool:
    """Whether :func:`linear` adds ``residual`` as oneDNN's binary post-op: in the products where an activation
    would be fused (:func:`_fuses`), to a residual of the product's own shape and dtype. On an AMX Xeon (family
    6, model 167, two threads; 26 distinct bf16 256 × 1280 × 1280 weights read from memory as in a pass) a
    product with its residual added took 563-600 µs against 707-718 for the product and a separate addition
    (the product alone: 512-547): a latent layer adds two residuals (attention's and the MLP's). Summed in
    float32 before the one rounding to bf16, so the fused sum is as close to the exact one or closer. float32
    products add it after: fused there, A/B in one process, the classifier gained 1.7–4% at batch 16 and MLM-2048
    0.9% (oneDNN's products, MKL's off), too little for one more kernel per shape (see :func:`_fuses`)."""
    # The shapes last: under torch.compile (no post-ops) comparing them would add guards.
    return (_post_op_fuses(x, weight, max_rows) and residual.dtype == x.dtype and not residual.requires_grad
            and residual.shape == (*x.shape[:-1], weight.shape[0]))


def _post_op_fuses(x: torch.Tensor, weight: torch.Tensor, max_rows: int) -> bool:
    """Whether a product of ``x`` and ``weight`` takes oneDNN's post-ops (:func:`_fuses`, :func:`_fuses_residual`)."""
    return (ONEDNN_LINEAR and x.dtype == weight.dtype == torch.bfloat16
            and _onednn_latent_dtype(x) and x.device.type == "cpu" and int8_of(weight) is None
            and not (x.requires_grad or weight.requires_grad) and not torch.compiler.is_compiling()
            and _latent_shaped(x.numel() // max(x.shape[-1], 1), max_rows))


def _latent_shaped(rows: int, max_rows: int) -> bool:
    """Whether a product of ``rows`` rows runs at latent shapes (chunks of ``max_rows``, unpadded)."""
    return max_rows >= ONEDNN_MIN_ROWS and rows >= ONEDNN_MIN_ROWS


def _onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, max_rows: int,
                    product: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                    activation: Activation | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """oneDNN's product in chunks, so that it meets only a few row counts per weight.

    Latent layers (``max_rows``, see :class:`Linear`) run in parts of ``max_rows`` rows, half of
    it, a quarter … (:func:`~.chunking.halving_parts`): a batch becomes products of the shapes of a
    few batch sizes (on 2 cores 1.7–2× MKL's ``sgemm`` for a 16 × 128-latent batch). Any other product runs in chunks of
    :data:`ONEDNN_CHUNK_ROWS`, the last zero-padded up to a multiple of :data:`ONEDNN_ROW_MULTIPLE`
    (at most 63 rows of extra work). Chunks are copied into one output, so the peak memory stays
    that of ``F.linear``. ``product`` (a chunk → its product) replaces oneDNN's op with the packed weight;
    ``activation`` goes to oneDNN's op as its post-op, and ``residual`` (latent products, the product's
    shape) as its binary one: added (without ``product`` only).
    """
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    alongside = () if residual is None else (residual.reshape(rows, weight.shape[0]),)  # cut as ``flat`` is
    if product is None:
        op, packed = torch.ops.mkldnn._linear_pointwise, packed_weight(weight)
        attr, algorithm = activation.onednn if activation is not None else ("none", "")
        if residual is None:
            product = lambda chunk: op(chunk, packed, bias, attr, [], algorithm)  # noqa: E731
        else:
            product = lambda chunk, other: op.binary(chunk, other, packed, bias, "add")  # noqa: E731
    if _latent_shaped(rows, max_rows):
        out = in_parts(flat, halving_parts(rows, max_rows), product, *alongside)
    else:
        out = in_row_chunks(flat, ONEDNN_CHUNK_ROWS, ONEDNN_ROW_MULTIPLE, product)
    return out.view(*x.shape[:-1], weight.shape[0])


#: Weights up to this size get a packed copy (see :func:`packed_weight`).
PACK_MAX_BYTES = 2 << 20


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in oneDNN's own blocked layout, made on first use and kept beside it (remade if the weight
    changes in place): the product then reads it as it is instead of reordering it in every call. One
    packed copy serves every row count.

    The copy costs memory (the fp32 weight stays for everything else), so only weights of at most
    :data:`PACK_MAX_BYTES` get one. Measured on one Zen 4 core: the mid-size text classifier's
    512 × 512 layers made batch-1 passes 12% faster and batches of 16 2–3%; packing all of MLM-2048's
    weights (1280 × 1280 layers, 6.25 MiB each) gained 3% for +775 MiB of resident memory (1.16 →
    1.93 GiB), which the cap avoids. The latent self-attention layers of a float32 CPU model are packed
    in place instead, whatever their size (:func:`pack_in_place`): no second copy.
    """
    if weight.is_mkldnn:
        return weight  # packed in place
    if (not ONEDNN_PACKING or weight.is_inference()  # made inside inference_mode: a temporary, or kept without a version
            or weight.numel() * weight.element_size() > PACK_MAX_BYTES):
        return weight
    form = tensor_form([weight])
    cached = getattr(weight, "onednn_packed", None)
    if cached is not None and same_form(cached[0], form):
        return cached[1]
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
    weight.onednn_packed = (form, packed)
    return packed


def tensor_version(tensor: torch.Tensor) -> int | None:
    """How often ``tensor`` was changed in place; None for an inference tensor, which keeps no count."""
    return None if tensor.is_inference() else tensor._version


def tensor_form(tensors: list[torch.Tensor]) -> tuple:
    """What a result remembered from ``tensors`` depends on beyond their identity: their dtype, device,
    version and storage (so changes in place and ``.to``, which swaps a parameter's data without
    bumping its version, are seen), and their int8 twins (``dtype = "int8"`` adds them to unchanged
    parameters). Compare two with :func:`same_form`."""
    return tuple((t.dtype, t.device, tensor_version(t), None if t.is_mkldnn else t.data_ptr(), int8_of(t))
                 for t in tensors)


def same_form(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x[:4] == y[:4] and x[4] is y[4] for x, y in zip(a, b))


@dataclasses.dataclass(frozen=True)
class MklPacked:
    """A float32 weight in MKL's packed form for products of exactly ``rows`` rows (one item's latents)."""

    rows: int
    weight: torch.Tensor  # opaque (MKL's layout)
    #: A zero-stride stand-in for the plain weight: MKL's op falls back on it for any other row count,
    #: which never reaches it (:func:`mkl_product` runs every product in chunks of exactly ``rows`` rows).
    origin: torch.Tensor
    #: The layer holds no other form of its weight (bigger than :data:`PACK_MAX_BYTES`): every product,
    #: of any batch, runs here, one item at a time. Otherwise its oneDNN form serves batches of several.
    only: bool


def mkl_packed(weight: torch.Tensor, rows: int) -> MklPacked:
    """``weight`` packed by MKL for products of ``rows`` rows. The packed buffer reserves far more than
    it fills (7.9 MB for a 128 × 128 weight, 17 MB for 1280 × 1280), so it gets a mapping of its own."""
    dense = weight.detach()
    with own_mappings(1 << 20):
        packed = torch.ops.mkl._mkl_reorder_linear_weight(dense, rows)
    return MklPacked(rows, packed, dense.new_zeros(()).expand(dense.shape),
                     dense.numel() * dense.element_size() > PACK_MAX_BYTES)


def mkl_product(x: torch.Tensor, packed: MklPacked, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` through MKL's packed ``sgemm``, in chunks of exactly ``packed.rows`` rows (the last
    one zero-padded), computed in float32."""
    if x.dtype != torch.float32:
        return mkl_product(x.float(), packed, None if bias is None else bias.float()).to(x.dtype)
    op, rows = torch.ops.mkl._mkl_linear, packed.rows
    flat = x.reshape(-1, x.shape[-1])
    out = in_row_chunks(flat, rows, rows, lambda chunk: op(chunk, packed.weight, packed.origin, bias, rows))
    return out.view(*x.shape[:-1], out.shape[-1])


def pack_in_place(layer: Linear) -> bool:
    """Replace ``layer``'s float32 CPU weight (or bf16, where :data:`ONEDNN_BF16`) by its packed
    (oneDNN-blocked) copy, and drop the plain one.

    For layers whose products always run at latent shapes (``onednn_max_rows`` set, never fewer than
    ``ONEDNN_MIN_ROWS`` rows), in a model that serves in float32 (or bf16) on a CPU: the product then reads the
    weight as oneDNN wants it, without a reorder per call and without a second copy in memory (ONNX
    Runtime's pre-packing does the same). On one Zen 4 core the published MLM's 1280 × 1280 layers,
    packed, made a forward pass 3.3% faster (1,205 → 1,167 ms); in bf16, packed with their products sent
    to oneDNN's op directly instead of ``F.linear``, 4.2% (1.52 → 1.58 passes a second; the mid-size text
    classifier 3.7% at batch 16, 6.9% at batch 1; the same answers). A packed weight is no longer an
    ordinary tensor (no views, no ``.to``): call this last, once the model is placed and converted.

    Where :data:`MKL_PACKING` (Intel CPUs), a float32 layer of a latent array of at most
    :data:`MKL_MAX_ROWS` rows is also packed for MKL's ``sgemm`` at one item's rows
    (:class:`MklPacked`), and a batch of one multiplies through it. Measured on one core of an AMX Xeon
    (family 6, model 167), A/B in one process, same answers to 3e-6: the mid-size text classifier at
    batch 1 +10.0–12.6% (2 threads: +9.3%), the published MLM at 2,048 bytes +7.6–11.7% (+8.6%). In a chain of
    40 distinct 128 × 512 × 512 products (weights read from memory, as in a pass) MKL's takes 371 µs
    against oneDNN's 430 (ONNX Runtime's, in its own pass of that model: 397); with one weight read over
    and over, oneDNN's is as fast. A weight of at most :data:`PACK_MAX_BYTES` keeps its oneDNN form
    too, for batches of several items (MKL's, one item at a time, made the classifier 12% slower at
    batch 16 on 2 threads); a bigger one (the MLM's 1280 × 1280) keeps MKL's only and every batch runs
    through it one item at a time (batches of three MLM texts: the same speed as oneDNN's, 1.00–1.01×).
    Returns whether it packed.
    """
    weight = layer.weight
    if (not ONEDNN_PACKING or weight.is_mkldnn or weight.device.type != "cpu" or not _onednn_latent_dtype(weight)
            or weight.requires_grad or int8_of(weight) is not None or layer.onednn_max_rows < ONEDNN_MIN_ROWS):
        return False
    if MKL_PACKING and weight.dtype == torch.float32 and 0 < layer.item_rows <= MKL_MAX_ROWS:
        layer.mkl_packed = mkl_packed(weight, layer.item_rows)
        if layer.mkl_packed.only:
            layer.weight = nn.Parameter(layer.mkl_packed.weight, requires_grad=False)
            return True
    layer.weight = nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(weight.detach()), requires_grad=False)
    return True


@torch.library.custom_op("perceiver_serve::onednn_linear", mutates_args=())
def _onednn_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, max_rows: int) -> torch.Tensor:
    """The oneDNN product as one opaque op inside ``torch.compile``d code (``compile = true``): inductor
    would otherwise lower the layer to MKL's ``sgemm``, half as fast on AMD processors, and trace
    the chunk loops into guards on every row count."""
    return _onednn_product(x, weight, bias, max_rows)


@_onednn_linear_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, max_rows: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def weight_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight`` for a layer's ``weight`` used the other way round (absorbed attention), in int8
    where the weight has an int8 twin."""
    q = int8_of(weight)
    if q is not None and not x.requires_grad:
        return int8_matmul(x, weight, q)
    return torch.matmul(x, weight)


def launch_bound(device: torch.device) -> bool:
    """Whether work on ``device`` costs kernel launches more than arithmetic (every accelerator).

    There, one batched operation replaces per-item loops and a few large chunks replace many
    small ones; a CPU runs the loops as fast and wants chunks that fit its caches.
    """
    return device.type != "cpu"


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`linear` with one weight per batch item: ``x`` ``(B or 1, N, K)``, ``weight`` ``(B, M, K)``,
    ``bias`` ``(B, M)`` → ``(B, N, M)``: one batched product on accelerators, one product per item
    on a CPU (where each is as fast and keeps to :func:`linear`'s kernels)."""
    if launch_bound(weight.device):
        x = x.expand(weight.shape[0], -1, -1)
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias[:, None], x, weight.transpose(1, 2))
    outs = [linear(x[min(i, x.shape[0] - 1)], weight[i], None if bias is None else bias[i])
            for i in range(weight.shape[0])]
    return outs[0][None] if len(outs) == 1 else torch.stack(outs)


def few_rows_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for an ``a`` of a few rows; on a CPU as matrix-vector products: MKL's ``sgemm`` takes 25×
    longer on a 3 × 1026 × 1026 product than three ``mv`` calls on this kind of CPU."""
    if a.shape[0] > 16 or launch_bound(a.device):
        return torch.matmul(a, b)
    bt = b.t()
    return torch.stack([torch.mv(bt, row) for row in a])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict keys) computed by :func:`linear`.

    ``onednn_max_rows``: set by the owner when this layer's row counts come from a small set
    (see :func:`linear`).
    """

    onednn_max_rows = 0
    #: One item's rows, for a layer whose rows are batch size × this (the latents; 0: not so).
    item_rows = 0
    #: Its weight in MKL's packed form (:func:`pack_in_place`), or None.
    mkl_packed: MklPacked | None = None
    #: Its weight is part of a fused product that replaced it (``attention.QKVAttention.fuse_packed``).
    fused = False

    def forward(self, x: torch.Tensor, activation: Activation | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """The product, ``activation`` applied to it and ``residual`` added to that (see :func:`linear`)."""
        if self.fused:
            raise RuntimeError("this layer's weight was fused into its attention's one product; that product computes it")
        mkl = self.mkl_packed
        if mkl is not None and x.device.type == "cpu" and (mkl.only or (
                x.numel() == mkl.rows * x.shape[-1] and not x.requires_grad and not torch.compiler.is_compiling())):
            out = mkl_product(x, mkl, self.bias)  # float32: never fused (see _fuses)
            out = out if activation is None else activation(out)
            return out if residual is None else out + residual
        return linear(x, self.weight, self.bias, onednn_max_rows=self.onednn_max_rows, activation=activation,
                      residual=residual)


def packable_lengths(inputs: torch.Tensor, key_mask: torch.Tensor) -> list[int] | None:
    """Each item's count of real rows, where ``key_mask`` ``(B, L)`` marks a prefix of every item (padding
    at the end, as the tokenizer makes it) and skipping the padding pays: on a CPU, without gradients,
    outside ``torch.compile``. None otherwise (a row with no real key, any other mask), and the caller
    keeps the masked form.
    """
    if (launch_bound(inputs.device) or torch.compiler.is_compiling()
            or (torch.is_grad_enabled() and inputs.requires_grad) or key_mask.dtype != torch.bool):
        return None
    lengths = key_mask.sum(1)
    if not bool(lengths.all()):
        return None
    if not torch.equal(key_mask, torch.arange(key_mask.shape[1])[None] < lengths[:, None]):
        return None
    return lengths.tolist()


def sdpa_width_multiple(x: torch.Tensor) -> int:
    """The head width CUDA's fused SDPA kernels need a multiple of for ``x``'s dtype (1: any width).

    The memory-efficient kernel takes widths divisible by 4 in float32 and by 8 in 16-bit
    types; anything else falls back to the math kernel, which materialises the score matrix
    (upcast to float32 for bf16/fp16) several times over. CPU kernels take any width.
    """
    if x.device.type != "cuda":
        return 1
    return 4 if x.dtype == torch.float32 else 8


def _fused_bf16(q: torch.Tensor) -> bool:
    """Whether bf16 attention of unequal widths goes to SDPA's fused kernel, its narrower side zero-padded:
    on CPUs with AMX, whose tiles that kernel's products use.

    On one core of an AMX Xeon (family 6, model 167; A/B in one process), against
    :func:`_unmasked_attention`'s float32 scores: the mid-size classifier's latent attention (8 heads ×
    128², 32-wide keys, 64-wide values) 174 µs against 307, the published MLM's (256², 160-wide values)
    0.87 ms against 1.40, its decoder (2,048 queries over 256 latents, 256-wide keys, 768-wide values)
    2.2 against 3.2, with answers as close to float64 ones or closer (largest error 0.0021 against
    0.0032 on the classifier's). In the models: the classifier +9.5% at batch 16 and +5.5% at batch 1,
    MLM-2048 +7%. Elsewhere (AVX-512 BF16 without AMX: Zen 4) the unfused form is the one measured."""
    return (q.dtype == torch.bfloat16 and q.device.type == "cpu" and not q.requires_grad
            and precision.cpu_features()["amx"])


def bf16_attention_pays() -> bool:
    """Whether an int8 model computes its attention in bf16 (:func:`attend`'s ``compute_dtype``): on CPUs
    with AMX, where bf16 attention takes :func:`_fused_bf16`'s fused kernel.

    int8 quantizes the matrix products with weights; attention multiplies activations by activations
    and stayed float32, a quarter of an int8 MLM-2048 pass on one AMX Xeon (family 6, model 167, two
    threads). There, A/B in one process: an int8 MLM-2048 pass 6.2–6.5 items/s with float32 attention,
    7.3–7.8 with bf16 (+20%); arg-max agreement with float32 on four texts' 8,192 positions 60.5% and
    89.6% (this random-weight model's top logits lie within rounding of each other). ONNX Runtime's
    int8 quantizes those products to 8 bits. Smaller heads keep float32 (:func:`attend`): the mid-size
    text classifier's 128² latent heads gained nothing in bf16 (batch 16) and lost about 5% to the casts
    (batch 1)."""
    return NATIVE_CPU_PRODUCTS[torch.bfloat16] and precision.cpu_features()["amx"]


def _pad_width(x: torch.Tensor, width: int) -> torch.Tensor:
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


#: :func:`_unmasked_attention` computes heads of at least this many scores one at a time.
PER_HEAD_SCORES = 1 << 16


def _attention_per_head(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`_unmasked_attention` one head at a time, for large heads: one ``(Nq, Nk)`` score buffer
    serves every head and item, so the scores stay in cache between their product, the softmax and
    the product with the values (for the published MLM's cross-attentions 2 MiB, against 16 MiB for
    all eight heads at once), and each head's output goes straight into its columns of a
    ``(B, Nq, H, C)`` array, so the usual transpose back to ``(B, Nq, H·C)`` is a view, not a copy.

    On one Zen 4 core (8 heads, 32-wide keys; the server's allocator setting, A/B in one process): the
    encoder's 256 latents over 2,048 bytes (160-wide values) 21.5 ms against 23.2 batched; the
    decoder's 2,048 queries over 256 latents (96-wide) 15.7 against 18.7; the latent self-attention
    (256², 160-wide) 2.94 against 3.14 (without the allocator setting, batched scores are also
    faulted in afresh: 29.3 and 18.6 ms for the first two). Below
    :data:`PER_HEAD_SCORES` scores a head (the mid-size classifier's 128² latents: 0.48 against 0.41 ms)
    the batched products win. A head of more than :data:`FUSED_SCORES_THRESHOLD` scores goes in
    chunks of query rows, so that no problem holds more scores than SDPA's fused kernels would.
    Returns ``(B, H, Nq, C)`` in ``v``'s dtype, as a view."""
    b, h, n, _ = q.shape
    rows = max(1, min(n, FUSED_SCORES_THRESHOLD // k.shape[2]))
    out = v.new_empty(b, n, h, v.shape[3])
    buffer = q.new_empty(rows, k.shape[2])
    q = q * scale
    for i in range(b):
        for j in range(h):
            keys, values = k[i, j].t(), v[i, j]
            for start in range(0, n, rows):
                scores = buffer[:min(rows, n - start)]
                torch.mm(q[i, j, start:start + rows], keys, out=scores)
                torch.softmax(scores, -1, out=scores)
                torch.mm(scores.to(v.dtype), values, out=out[i, start:start + rows, j])
    return out.transpose(1, 2)


def _training(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _per_head(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether :func:`_unmasked_attention` computes these heads one at a time (:func:`_attention_per_head`)."""
    return q.shape[2] * k.shape[2] >= PER_HEAD_SCORES and not _training(q, k, v)


def _big_heads_unfused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether a float32 CPU attention of more than :data:`FUSED_SCORES_THRESHOLD` scores whose queries
    and values differ in width stays unpadded, one head at a time in row chunks (heads of at least
    :data:`PER_HEAD_SCORES` scores, no mask or key bias, not under autograd), rather than zero-padded to
    one width for SDPA's fused kernel, which then multiplies the padding too (64-wide queries and keys
    padded to 192: three times the products of the scores).
    (At equal widths the fused kernel is the faster: 1.4× on the published flow model's 16 heads × 2,048²
    of 32 wide, 1.1× on the flow demo's decoder, 3,072² of 192 wide.)

    Two threads of an AVX2 EPYC (family 23), A/B in one process: the optical-flow demo's cross- and
    self-attentions (3,072 × 3,072, 64-wide keys, 192-wide values, a batch of two tiles) 181 ms against
    239 each, its whole pass 1.075× faster; the published MLM's decoder at batch 2 (2,048 queries over
    256 latents, 8 heads, 96-wide values) 47 against 58 ms (its encoder attends each text alone, see
    ``attention.QKVAttention``)."""
    return mask is None and q.dtype == torch.float32 and not launch_bound(q.device) and _per_head(q, k, v)


def _unmasked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention without a mask as two batched products and an in-place softmax, for the widths that
    SDPA's CPU kernels can't fuse (queries narrower than values): SDPA's own fallback scales both
    sides, copies, and guards against fully masked rows that can't occur here; this takes 1.3 ms
    where it takes 1.8 ms on the mid-size classifier's latent attention (4 × 8 heads × 128², one core).

    Scores and softmax are computed in ``q``'s dtype; the probabilities are cast to ``v``'s dtype
    for the second product (see :func:`attend` for 16-bit values)."""
    b, h, n, _ = q.shape
    if _per_head(q, k, v):
        return _attention_per_head(q, k, v, scale)
    q3, k3, v3 = (t.reshape(b * h, t.shape[2], t.shape[3]) for t in (q, k, v))
    scores = torch.baddbmm(q3.new_empty(b * h, n, k3.shape[1]), q3, k3.transpose(1, 2), beta=0, alpha=scale)
    if _training(q, k, v):
        scores = torch.softmax(scores, -1)  # training (scripts/demo_training): out= has no derivative
    else:
        torch.softmax(scores, -1, out=scores)
    return torch.bmm(scores.to(v3.dtype), v3).view(b, h, n, v3.shape[2])


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None, *,
    scale: float | None = None, key_bias: torch.Tensor | None = None, width_multiple: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Multi-head attention over ``(B, H, N, C)`` tensors.

    ``key_mask`` is ``(B, Nk)``, True = attend; ``key_bias`` ``(B, Nk)`` is added to every
    query's scores for that key; ``scale`` defaults to 1/sqrt(query width). ``compute_dtype``: heads
    of at least :data:`PER_HEAD_SCORES` scores are computed in that dtype and their output returned in
    ``q``'s (an int8 model's attention in bf16, see :func:`bf16_attention_pays`).

    Fused SDPA kernels (flash on CPU and CUDA) need queries/keys and values of one width.
    Perceiver often differs (the language model uses 32-wide keys and 160-wide values per
    head). Small problems use SDPA as is; large ones zero-pad the narrower side to the wider
    one, which leaves every dot product, and so the result, unchanged while keeping the
    fused, memory-bounded kernel. For the same reason, widths are zero-padded up to
    ``width_multiple`` (default: what the device's fused kernels need, see
    :func:`sdpa_width_multiple`): the flow and conv classifiers attend 322 wide, the Fourier
    classifier 261 wide.
    """
    if (compute_dtype is not None and compute_dtype != q.dtype and not q.requires_grad
            and q.shape[2] * k.shape[2] >= PER_HEAD_SCORES):
        out = attend(q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype), key_mask, scale=scale,
                     key_bias=key_bias, width_multiple=width_multiple)
        return out.to(q.dtype)
    qk_dim, v_dim = q.shape[-1], v.shape[-1]
    mask = None if key_mask is None else key_mask[:, None, None, :]
    if key_bias is not None:
        bias = key_bias[:, None, None, :].to(q.dtype)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    scale = 1.0 / math.sqrt(qk_dim) if scale is None else scale
    scores = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
    if torch.compiler.is_compiling():
        # Inductor fuses the attention itself, and fails to lower the zero-padded fused kernel for some
        # dynamic shapes (LoweringException in its SDPA layout constraint, seen at batch 16 × 402 bytes).
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    qk_width, v_width = qk_dim, v_dim
    if qk_dim != v_dim and (_fused_bf16(q) or scores > FUSED_SCORES_THRESHOLD and not _big_heads_unfused(q, k, v, mask)):
        qk_width = v_width = max(qk_dim, v_dim)
    multiple = sdpa_width_multiple(q) if width_multiple is None else width_multiple
    qk_width, v_width = (-(-width // multiple) * multiple for width in (qk_width, v_width))
    if qk_width != v_width and mask is None and not launch_bound(q.device):
        if q.dtype == torch.float32:
            return _unmasked_attention(q, k, v, scale)
        if q.dtype in (torch.bfloat16, torch.float16) and not q.requires_grad:
            # Scores and softmax in float32, as SDPA's CPU kernels compute them for 16-bit inputs (without
            # the math fallback's guards for fully masked rows: three passes over the scores). Where the
            # CPU multiplies the dtype natively, the probabilities are then rounded to 16 bits for the
            # product with the values, as SDPA's fused (flash) CPU and CUDA kernels do: on one Zen 4
            # core, bf16, the language model's latent attention (8 heads × 256², 32-wide keys, 160-wide
            # values) takes 1.6 ms against 3.1 ms in float32, and MLM-2048 goes from 1.96× to 2.10×
            # transformers fp32. Elsewhere that product stays in float32.
            values = v if NATIVE_CPU_PRODUCTS[q.dtype] else v.float()
            return _unmasked_attention(q.float(), k.float(), values, scale).to(q.dtype)
    out = F.scaled_dot_product_attention(_pad_width(q, qk_width), _pad_width(k, qk_width), _pad_width(v, v_width),
                                         attn_mask=mask, scale=scale)
    return out if v_width == v_dim else out[..., :v_dim]
