"""The CPU kernel choices of ``modeling/kernels.py`` give transformers' answers and keep oneDNN's
shape set bounded (each new shape costs it memory for good).

A batch runs its latent stack in groups of ``packed_group_items`` items (packed float32 and bf16
weights: up to 16 items of at most 2,048 rows; others ``ONEDNN_MAX_BATCH``), then half, a quarter …, and other big latent products in
the same parts, so latent products reach oneDNN only at the row counts of batches 1, 2, 4 … of
those; products over inputs reach it in chunks of ``ONEDNN_CHUNK_ROWS`` rows, the
last padded to a multiple of ``ONEDNN_ROW_MULTIPLE``. Unmasked attention with queries narrower
than values runs as two batched products with an in-place softmax.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref

import pytest
import torch
import torch.nn.functional as F
from perceiver_serve.modeling import kernels, load_model, precision
from perceiver_serve.modeling.chunking import halving_parts
from perceiver_serve.modeling.kernels import ONEDNN_CHUNK_ROWS, ONEDNN_MAX_BATCH, ONEDNN_ROW_MULTIPLE, PACKED_MAX_BATCH
from torch.utils._python_dispatch import TorchDispatchMode

from .hf_models import build_reference, save_reference

#: The row counts at which products over inputs or output queries may reach oneDNN.
BUCKETS = set(range(ONEDNN_ROW_MULTIPLE, ONEDNN_CHUNK_ROWS + 1, ONEDNN_ROW_MULTIPLE))

needs_onednn = pytest.mark.skipif(not kernels.ONEDNN_LINEAR, reason="this torch build has no oneDNN linear")


class _ProductRows(TorchDispatchMode):
    """Records the row count of every product that reaches the op named ``op``, and the overload it took
    (oneDNN's linear: ``default``; ``binary``, a residual added)."""

    op = ""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []
        self.overloads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name == self.op:
            self.rows.append(args[0].numel() // args[0].shape[-1])
            self.overloads.append(func._overloadname)
        return func(*args, **(kwargs or {}))


class OneDnnRows(_ProductRows):
    """Products that reach oneDNN's linear kernel."""

    op = "mkldnn::_linear_pointwise"


class MklRows(_ProductRows):
    """Products that reach MKL's packed ``sgemm``."""

    op = "mkl::_mkl_linear"


needs_mkl_packing = pytest.mark.skipif(not (kernels.ONEDNN_PACKING and kernels._mkl_packing_works()),
                                       reason="this torch build takes no packed oneDNN or MKL weights")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    reference = build_reference("PerceiverForSequenceClassification")
    directory = save_reference(reference, tmp_path_factory.mktemp("classifier"))
    return reference, load_model(directory)


def _texts(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, 262, (batch, 30), generator=g)
    lengths = torch.randint(3, 31, (batch,), generator=g)
    return ids, torch.arange(30)[None] < lengths[:, None]


@needs_onednn
@pytest.mark.parametrize("batch", [ONEDNN_MAX_BATCH + 1, PACKED_MAX_BATCH + 13])
def test_a_big_batch_matches_transformers_and_reaches_onednn_only_at_small_batch_shapes(classifier, batch):
    reference, ours = classifier
    ids, mask = _texts(batch)
    rows = OneDnnRows()
    with torch.inference_mode():
        expected = reference(inputs=ids, attention_mask=mask).logits
        with rows:
            got = ours(ids, mask)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    latents = reference.config.num_latents
    most = kernels.packed_group_items(latents)
    groups = {latents << k for k in range(most.bit_length())}  # 1, 2, 4 … items
    latent_side = [r for r in rows.rows if r in groups]
    assert latent_side, "the latent layers never reached oneDNN"
    assert {g * latents for g in halving_parts(batch, most)} <= set(latent_side)
    assert set(rows.rows) - set(latent_side) <= BUCKETS, "an input-side product reached oneDNN at a new shape"


@needs_onednn
@pytest.mark.parametrize("shape", [(5, 16, 24), (3, 7, 24), (70, 24)])
def test_chunked_onednn_products_equal_f_linear(shape):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(*shape, generator=g), torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    rows = OneDnnRows()
    with torch.inference_mode(), rows:
        got = kernels.linear(x, w, b, onednn_max_rows=32)
    torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    assert rows.rows and max(rows.rows) <= 32


@needs_onednn
def test_products_of_any_row_count_reach_onednn_at_a_few_shapes_and_equal_f_linear():
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    counts = [63, 64, 65, 200, 511, 512, 513, 1024, 1500, 2047]
    rows = OneDnnRows()
    for n in counts:
        x = torch.randn(n, 24, generator=g)
        with torch.inference_mode(), rows:
            got = kernels.linear(x, w, b)
        torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    assert rows.rows and set(rows.rows) <= BUCKETS
    assert len(rows.rows) == sum(-(-n // ONEDNN_CHUNK_ROWS) for n in counts if n >= ONEDNN_ROW_MULTIPLE)


@pytest.fixture(params=["batched", "per head"])
def attention_order(request, monkeypatch):
    """Attention without a mask, over all heads at once or one head at a time (big heads)."""
    monkeypatch.setattr(kernels, "PER_HEAD_SCORES", 1 if request.param == "per head" else 1 << 60)
    return request.param


@pytest.mark.parametrize("geometry", [(2, 8, 16, 16, 4, 8), (1, 3, 5, 9, 32, 160), (4, 1, 33, 17, 7, 8)])
def test_unmasked_attention_with_narrow_queries_equals_sdpa(geometry, attention_order):
    b, h, nq, nk, qk, v = geometry
    g = torch.Generator().manual_seed(sum(geometry))
    q, k = (torch.randn(b, h, n, qk, generator=g) for n in (nq, nk))
    values = torch.randn(b, h, nk, v, generator=g)
    torch.testing.assert_close(kernels.attend(q, k, values), F.scaled_dot_product_attention(q, k, values),
                               rtol=1e-5, atol=1e-6)


@pytest.fixture(params=["amx", "no amx"])
def amx(request, monkeypatch):
    """A CPU with AMX tiles, or without (the bf16 attention's form follows, see ``kernels._fused_bf16``)."""
    features = {**precision.cpu_features(), "amx": request.param == "amx"}
    monkeypatch.setattr(precision, "cpu_features", lambda: features)
    return request.param == "amx"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_unmasked_attention_with_narrow_queries_in_16_bits_equals_sdpa(dtype, attention_order, amx):
    g = torch.Generator().manual_seed(7)
    q, k = (torch.randn(2, 8, 40, 32, generator=g).to(dtype) for _ in range(2))
    values = torch.randn(2, 8, 40, 160, generator=g).to(dtype)
    got = kernels.attend(q, k, values)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), F.scaled_dot_product_attention(q, k, values).float(), rtol=1e-2, atol=1e-2)



@pytest.mark.parametrize("native", [True, False])
def test_16_bit_attention_rounds_probabilities_only_where_the_cpu_multiplies_16_bits(native, monkeypatch,
                                                                                    attention_order):
    """Without AMX: scores and softmax in float32; the product with the values in bf16 where the CPU has
    native bf16 products (as SDPA's flash kernels do), in float32 where it has not (emulated bf16 is slow)."""
    monkeypatch.setitem(kernels.NATIVE_CPU_PRODUCTS, torch.bfloat16, native)
    features = {**precision.cpu_features(), "amx": False}
    monkeypatch.setattr(precision, "cpu_features", lambda: features)
    g = torch.Generator().manual_seed(8)
    q, k = (torch.randn(1, 4, 24, 8, generator=g).bfloat16() for _ in range(2))
    values = torch.randn(1, 4, 24, 40, generator=g).bfloat16()
    probabilities = torch.softmax(q.float() @ k.float().transpose(-1, -2) * 8 ** -0.5, -1)
    rounded = (probabilities.bfloat16().double() @ values.double()).bfloat16()
    full = (probabilities.double() @ values.double()).bfloat16()
    expected, other = (rounded, full) if native else (full, rounded)
    with torch.inference_mode():
        got = kernels.attend(q, k, values)
    assert got.dtype == torch.bfloat16
    # Equal to the expected computation but for the odd last-bit rounding tie; the other one differs
    # in over a third of the elements.
    assert (got != expected).sum() <= got.numel() // 100
    assert (got != other).sum() > got.numel() // 3


@pytest.mark.parametrize("masked", [False, True])
def test_bf16_attention_of_unequal_widths_takes_the_fused_kernel_where_the_cpu_has_amx(amx, masked, monkeypatch):
    """With AMX, bf16 queries narrower than the values are zero-padded to the values' width and go to
    SDPA's fused kernel (one call, equal widths); without it, they don't. Either way the answer is the
    float64 attention's within bf16 rounding."""
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        calls.append((q.shape[-1], k.shape[-1], v.shape[-1]))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    g = torch.Generator().manual_seed(10)
    q, k = (torch.randn(2, 8, 48, 32, generator=g) for _ in range(2))
    values = torch.randn(2, 8, 48, 64, generator=g)
    mask = (torch.arange(48) < torch.tensor([[48], [30]])) if masked else None
    with torch.inference_mode():
        got = kernels.attend(q.bfloat16(), k.bfloat16(), values.bfloat16(), mask)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 8, 48, 64)
    if amx:
        assert calls == [(64, 64, 64)]
    else:
        assert (64, 64, 64) not in calls
    bf = [t.bfloat16().double() for t in (q, k, values)]
    expected = sdpa(*bf, attn_mask=None if mask is None else mask[:, None, None, :])
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-2)


def test_big_heads_are_computed_one_at_a_time_into_the_layout_the_output_projection_reads():
    """Heads of at least PER_HEAD_SCORES scores go one at a time (not under autograd); the result is
    (B, H, N, C) as a view of (B, N, H, C) memory, so flattening the heads back costs no copy."""
    g = torch.Generator().manual_seed(9)
    big = kernels.PER_HEAD_SCORES // 64
    q, k = torch.randn(2, 4, 64, 8, generator=g), torch.randn(2, 4, big, 8, generator=g)
    values = torch.randn(2, 4, big, 24, generator=g)
    with torch.inference_mode():
        out = kernels.attend(q, k, values)
    assert out.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, values), rtol=1e-5, atol=1e-6)
    small = kernels.attend(q, k[:, :, :big // 2], values[:, :, :big // 2])
    assert small.is_contiguous()  # batched: (B, H, N, C)
    q.requires_grad_(True)
    assert kernels.attend(q, k, values).is_contiguous()  # batched under autograd (out= has no derivative)


class LargestScores(TorchDispatchMode):
    """Notes every SDPA call's widths and the most scores any softmax computed at once."""

    def __init__(self) -> None:
        super().__init__()
        self.sdpa_widths: list[tuple[int, int]] = []
        self.most = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if "scaled_dot_product" in func._schema.name:
            self.sdpa_widths.append((args[0].shape[-1], args[2].shape[-1]))
        if "softmax" in func._schema.name:
            self.most = max(self.most, out.numel())
        return out


@pytest.mark.parametrize("case", ["plain", "masked", "training"])
def test_big_float32_heads_of_unequal_widths_stay_unpadded_and_hold_a_bounded_number_of_scores(case, monkeypatch):
    """Past FUSED_SCORES_THRESHOLD scores, float32 queries narrower than the values go one head at a time
    in chunks of query rows (never more scores at once than the threshold), not zero-padded to SDPA's
    fused kernel; with a mask or under autograd they still go there, padded."""
    threshold = 1 << 14
    monkeypatch.setattr(kernels, "FUSED_SCORES_THRESHOLD", threshold)
    g = torch.Generator().manual_seed(12)
    nk = kernels.PER_HEAD_SCORES // 128 + 12  # 524 keys: chunks of 31 rows, the last one of 21
    q, k = torch.randn(2, 2, 300, 8, generator=g), torch.randn(2, 2, nk, 8, generator=g)
    values = torch.randn(2, 2, nk, 24, generator=g)
    mask = (torch.arange(nk) < torch.tensor([[nk], [nk // 3]])) if case == "masked" else None
    q.requires_grad_(case == "training")
    with LargestScores() as seen:
        got = kernels.attend(q, k, values, mask)
    if case == "plain":
        assert seen.sdpa_widths == [] and 0 < seen.most <= threshold
    else:
        assert seen.sdpa_widths == [(24, 24)]
    expected = F.scaled_dot_product_attention(*(t.double() for t in (q, k, values)),
                                              attn_mask=None if mask is None else mask[:, None, None, :])
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_in_a_compute_dtype_covers_big_heads_only(masked, monkeypatch):
    """``compute_dtype`` (an int8 model's bf16 attention): heads of at least PER_HEAD_SCORES scores are
    computed in that dtype, key mask and bias included, and returned in the inputs' dtype; smaller heads
    are computed as they come."""
    seen = []
    attend = kernels.attend
    monkeypatch.setattr(kernels, "attend", lambda q, *a, **k: seen.append(q.dtype) or attend(q, *a, **k))
    g = torch.Generator().manual_seed(11)
    big = kernels.PER_HEAD_SCORES // 64
    q, k = torch.randn(2, 4, 64, 8, generator=g), torch.randn(2, 4, big, 8, generator=g)
    values = torch.randn(2, 4, big, 24, generator=g)
    mask = (torch.arange(big) < torch.tensor([[big], [big // 3]])) if masked else None
    bias = torch.randn(2, big, generator=g)
    with torch.inference_mode():
        got = attend(q, k, values, mask, key_bias=bias, compute_dtype=torch.bfloat16)
        in_bf16 = attend(q.bfloat16(), k.bfloat16(), values.bfloat16(), mask, key_bias=bias)
        in_float = attend(q, k, values, mask, key_bias=bias)
        assert seen[0] == torch.bfloat16  # the inner call
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, in_bf16.float(), rtol=0, atol=0)
        assert not torch.equal(got, in_float)
        seen.clear()
        small = attend(q, k[:, :, :big // 2], values[:, :, :big // 2], compute_dtype=torch.bfloat16)
        assert not seen and torch.equal(small, attend(q, k[:, :, :big // 2], values[:, :, :big // 2]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["gelu", "gelu_new", "relu", "silu"])
def test_activations_are_applied_by_onednns_op_in_bf16_latent_products(name, dtype, monkeypatch):
    """A bf16 latent product applies the activation as oneDNN's post-op (SiLU, which the op isn't given,
    after it); float32 products and products over input rows apply it after, as a post-op is one more
    kernel oneDNN keeps per shape. Every answer is the activation of F.linear's product."""
    from perceiver_serve.modeling.attention import activation

    if dtype == torch.bfloat16 and not kernels.ONEDNN_BF16:
        pytest.skip("this CPU has no native bf16 products, or oneDNN takes none")
    if not kernels.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN linear")
    act = activation(name)
    op, post_ops = torch.ops.mkldnn._linear_pointwise, []

    class Spy:
        def __call__(self, x, weight, bias, attr, scalars, algorithm):
            post_ops.append((attr, algorithm))
            return op(x, weight, bias, attr, scalars, algorithm)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    g = torch.Generator().manual_seed(12)
    weight, bias = (torch.randn(96, 80, generator=g) / 9).to(dtype), torch.randn(96, generator=g).to(dtype)
    x = torch.randn(128, 80, generator=g).to(dtype)
    expected = act(F.linear(x.float(), weight.float(), bias.float()))
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    with torch.inference_mode():
        latent = kernels.linear(x, weight, bias, onednn_max_rows=64, activation=act)  # latent: 2 × 64 rows
        fused = set(post_ops)
        post_ops.clear()
        rows = kernels.linear(x, weight, bias, activation=act)  # rows of inputs: chunks
    assert latent.dtype == rows.dtype == dtype
    assert fused == {(act.onednn if dtype == torch.bfloat16 and act.onednn else ("none", ""))}
    assert set(post_ops) == {("none", "")}
    for got in (latent, rows):
        torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_residuals_are_added_by_onednns_op_in_bf16_latent_products(dtype):
    """A bf16 latent product adds its residual (a latent layer's attention and MLP outputs' skip connections)
    as oneDNN's binary post-op; float32 products, products over input rows, a residual that broadcasts and an
    activated product add it after. Every answer is F.linear's product (activated) plus the residual."""
    from perceiver_serve.modeling.attention import activation

    if dtype == torch.bfloat16 and not kernels.ONEDNN_BF16:
        pytest.skip("this CPU has no native bf16 products, or oneDNN takes none")
    if not kernels.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN linear")
    g = torch.Generator().manual_seed(13)
    weight, bias = (torch.randn(96, 80, generator=g) / 9).to(dtype), torch.randn(96, generator=g).to(dtype)
    x, residual = torch.randn(2, 64, 80, generator=g).to(dtype), (torch.randn(2, 64, 96, generator=g) * 4).to(dtype)
    product = F.linear(x.float(), weight.float(), bias.float())
    tolerance = 1e-5 if dtype == torch.float32 else 6e-2
    gelu = activation("gelu")
    calls = {}
    with torch.inference_mode():
        for name, kwargs, expected in (
            ("latent", {"onednn_max_rows": 64, "residual": residual}, product + residual.float()),
            ("rows", {"residual": residual}, product + residual.float()),
            ("broadcast", {"onednn_max_rows": 64, "residual": residual[:1]}, product + residual[:1].float()),
            ("activated", {"onednn_max_rows": 64, "residual": residual, "activation": gelu},
             gelu(product) + residual.float()),
        ):
            with OneDnnRows() as spy:
                got = kernels.linear(x, weight, bias, **kwargs)
            calls[name] = set(spy.overloads)
            assert got.dtype == dtype and got.shape == expected.shape, name
            torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance, msg=name)
    assert calls["latent"] == ({"binary"} if dtype == torch.bfloat16 else {"default"})
    assert all("binary" not in seen for name, seen in calls.items() if name != "latent")


@pytest.mark.skipif(not kernels.ONEDNN_BF16, reason="this CPU has no native bf16 products, or oneDNN takes none")
def test_bf16_latent_layers_add_both_residuals_in_their_products(tmp_path):
    """In a bf16 CPU model every latent layer's two skip connections (after attention, after the MLP) are added
    by the products that end them, the encoder's cross-attention's too, and the model answers as transformers
    does within bf16 rounding."""
    from perceiver_serve.modeling.attention import PerceiverEncoder

    reference = build_reference("PerceiverForSequenceClassification")
    ours = load_model(save_reference(reference, tmp_path), dtype="bfloat16")
    (encoder,) = [m for m in ours.modules() if isinstance(m, PerceiverEncoder)]
    ids, mask = _texts(2)  # a batch of two: each latent product is one call (batch 1's 8-row ones: F.linear)
    with torch.inference_mode(), OneDnnRows() as spy:
        got = ours(ids, mask)
    layers = len(encoder.self_attends) * encoder.num_blocks + 1
    assert spy.overloads.count("binary") == 2 * layers
    with torch.inference_mode():
        expected = reference(inputs=ids, attention_mask=mask).logits
    torch.testing.assert_close(got.float(), expected, rtol=5e-2, atol=5e-2)


@needs_onednn
def test_compiled_encoders_keep_the_onednn_products(tmp_path, monkeypatch):
    """Inductor would lower the layers to MKL's sgemm; the products reach oneDNN as one opaque op. A compiled
    graph runs the whole batch's latent stack at once, so its latent products take parts as big as packed
    weights' groups (a batch of up to that many items: one part, no copies), not ONEDNN_MAX_BATCH items'."""
    reference = build_reference("PerceiverForSequenceClassification")
    ours = load_model(save_reference(reference, tmp_path), compile=True)
    calls = []
    product = kernels._onednn_product
    monkeypatch.setattr(kernels, "_onednn_product",
                        lambda *args, **kwargs: calls.append((args[0].shape, args[3])) or product(*args, **kwargs))
    ids, mask = _texts(ONEDNN_MAX_BATCH + 3)
    with torch.inference_mode():
        got = ours(ids, mask)
        expected = reference(inputs=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert calls, "the compiled encoder never reached oneDNN"
    latents = reference.config.num_latents
    latent_parts = {max_rows for _, max_rows in calls if max_rows}
    assert latent_parts == {kernels.packed_group_items(latents) * latents} != {ONEDNN_MAX_BATCH * latents}


def _cross_attention(heads: int, qk: int, v: int) -> torch.nn.Module:
    from perceiver_serve.modeling.attention import QKVAttention

    torch.manual_seed(heads + qk + v)
    module = QKVAttention(q_dim=24, kv_dim=20, qk_channels=qk, v_channels=v, num_heads=heads, is_cross=True)
    for p in module.parameters():
        torch.nn.init.normal_(p, 0, 0.3)
    return module.eval()


class RowsSeen:
    """Counts the rows a linear layer is given."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.rows: list[int] = []
        layer.register_forward_pre_hook(lambda _, args: self.rows.append(args[0].numel() // args[0].shape[-1]))


def _masked_form(module: torch.nn.Module, hidden: torch.Tensor, inputs: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """The cross-attention computed over every row with the mask (what transformers does)."""
    q = module._heads(module.query(module.layernorm1(hidden)))
    source = module.layernorm2(inputs)
    k, v = module._heads(module.key(source)), module._heads(module.value(source))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    return out.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)


@pytest.mark.parametrize("geometry", [(8, 32, 64), (1, 16, 16), (4, 8, 12)])
def test_inputs_padded_at_the_end_are_skipped_and_the_answer_is_the_masked_one(geometry):
    module = _cross_attention(*geometry)
    g = torch.Generator().manual_seed(3)
    hidden, inputs = torch.randn(5, 6, 24, generator=g), torch.randn(5, 40, 20, generator=g)
    lengths = torch.tensor([40, 1, 17, 33, 2])
    mask = torch.arange(40)[None] < lengths[:, None]
    keys = RowsSeen(module.key)
    with torch.inference_mode():
        got = module(hidden, inputs, mask)
        expected = _masked_form(module, hidden, inputs, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert keys.rows[0] == int(lengths.sum()), "the padding was projected"


@pytest.mark.parametrize("case", ["holes", "an empty row", "training"])
def test_other_masks_keep_the_masked_form(case):
    module = _cross_attention(8, 32, 64)
    g = torch.Generator().manual_seed(4)
    hidden, inputs = torch.randn(3, 6, 24, generator=g), torch.randn(3, 12, 20, generator=g)
    mask = torch.arange(12)[None] < torch.tensor([12, 5, 9])[:, None]
    if case == "holes":
        mask[0, 3] = False
    elif case == "an empty row":
        mask[2] = False
    keys = RowsSeen(module.key)
    grad = case == "training"
    with torch.set_grad_enabled(grad):
        if grad:
            inputs.requires_grad_(True)
        got = module(hidden, inputs, mask)
        expected = _masked_form(module, hidden, inputs, mask)
    assert keys.rows[0] == 3 * 12, "the packed form ran on a mask it does not cover"
    rows = mask.any(1)  # an item without any key has no defined answer
    torch.testing.assert_close(got[rows], expected[rows], rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.skipif(not kernels.ONEDNN_PACKING, reason="this torch build takes no packed oneDNN weights")
def test_packed_weights_are_made_once_follow_changes_and_equal_f_linear():
    g = torch.Generator().manual_seed(5)
    w, b = torch.randn(48, 24, generator=g), torch.randn(48, generator=g)
    made = []
    reorder = torch.ops.mkldnn._reorder_linear_weight
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", lambda *a: made.append(1) or reorder(*a),
                      raising=False)
        for n in (16, 64, 100, 700):
            x = torch.randn(n, 24, generator=g)
            with torch.inference_mode():
                got = kernels.linear(x, w, b, onednn_max_rows=32)
            torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        assert len(made) == 1, "one packed copy serves every row count"
        with torch.no_grad():
            w.mul_(-2)  # an in-place change (a training step, load_state_dict) makes it stale
        x = torch.randn(64, 24, generator=g)
        with torch.inference_mode():
            got = kernels.linear(x, w, b)
        torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        assert len(made) == 2
        with torch.inference_mode():
            temporary = w * 1  # made inside inference_mode: no version to check, never packed
            torch.testing.assert_close(kernels.linear(x, temporary, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        assert len(made) == 2
        patch.setattr(kernels, "PACK_MAX_BYTES", w.numel() * 4 - 1)  # a bigger weight keeps no second copy
        big = w.clone()
        with torch.inference_mode():
            torch.testing.assert_close(kernels.linear(x, big, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        assert len(made) == 2 and not hasattr(big, "onednn_packed")


@needs_onednn
@pytest.mark.skipif(not kernels.ONEDNN_PACKING, reason="this torch build takes no packed oneDNN weights")
def test_float32_cpu_models_hold_their_self_attention_weights_packed_only(tmp_path):
    """The latent stack's weights are replaced by their packed copies (no plain copy kept beside them),
    the cross-attention's (also read directly) stay plain, and the answers stay transformers' at batch
    sizes whose latent products run through oneDNN and at batch 1, whose 8-row products do not."""
    from perceiver_serve.modeling import attention
    from perceiver_serve.modeling.attention import PerceiverEncoder

    reference = build_reference("PerceiverForSequenceClassification")
    directory = save_reference(reference, tmp_path)
    plain = []
    pack = kernels.pack_in_place
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "pack_in_place", lambda layer: plain.append(weakref.ref(layer.weight)) or pack(layer))
        patch.setattr(attention, "pack_in_place", kernels.pack_in_place)
        ours = load_model(directory)
    gc.collect()
    assert plain and all(ref() is None for ref in plain), "a plain copy of a packed weight is still held"
    (encoder,) = [m for m in ours.modules() if isinstance(m, PerceiverEncoder)]
    latent = {m for m in encoder.self_attends.modules() if isinstance(m, kernels.Linear)}
    packed = {m for m in ours.modules() if isinstance(m, kernels.Linear) and m.weight.is_mkldnn}
    assert latent and packed == latent
    assert not any(hasattr(m.weight, "onednn_packed") for m in latent)
    for batch in (1, 2, ONEDNN_MAX_BATCH + 3):
        ids, mask = _texts(batch)
        with torch.inference_mode():
            torch.testing.assert_close(ours(ids, mask), reference(inputs=ids, attention_mask=mask).logits,
                                       rtol=1e-4, atol=1e-5)
    for options in (dict(dtype="int8"), dict(dtype="bfloat16"), dict(compile=True)):
        other = load_model(directory, **options)
        packs = options == dict(dtype="bfloat16") and kernels.ONEDNN_BF16  # see the bf16 test below
        assert any(p.is_mkldnn for p in other.parameters()) == packs, options


@needs_mkl_packing
@pytest.mark.parametrize("only", [False, True], ids=["beside-onednn", "mkl-only"])
def test_float32_latent_layers_multiply_one_item_through_mkls_packed_sgemm(tmp_path, monkeypatch, only):
    """Where ``MKL_PACKING`` (Intel CPUs; forced here), a float32 model's latent self-attention weights are
    also packed for MKL's ``sgemm`` at one item's rows (the latents): a batch of one multiplies through
    it, bigger ones through oneDNN's packed copy. A weight too big for two copies (``PACK_MAX_BYTES``)
    keeps only MKL's, and every batch runs through it one item at a time. No plain copy is held, and
    the answers are transformers'."""
    from perceiver_serve.modeling.attention import PerceiverEncoder

    monkeypatch.setattr(kernels, "MKL_PACKING", True)
    if only:
        monkeypatch.setattr(kernels, "PACK_MAX_BYTES", 0)
    reference = build_reference("PerceiverForSequenceClassification")
    ours = load_model(save_reference(reference, tmp_path))
    (encoder,) = [m for m in ours.modules() if isinstance(m, PerceiverEncoder)]
    latent = {m for m in encoder.self_attends.modules() if isinstance(m, kernels.Linear)}
    assert latent and latent == {m for m in ours.modules() if isinstance(m, kernels.Linear) and m.mkl_packed is not None}
    items = reference.config.num_latents
    for layer in latent:
        assert (layer.mkl_packed.rows, layer.mkl_packed.only) == (items, only)
        assert layer.weight.is_mkldnn and layer.mkl_packed.origin.stride() == (0, 0), "a plain copy is held"
    calls_for_one = None
    for batch in (1, 2, ONEDNN_MAX_BATCH + 3):
        ids, mask = _texts(batch)
        with MklRows() as mkl, OneDnnRows() as onednn, torch.inference_mode():
            got = ours(ids, mask)
        torch.testing.assert_close(got, reference(inputs=ids, attention_mask=mask).logits, rtol=1e-4, atol=1e-5)
        if batch == 1:
            calls_for_one = len(mkl.rows)
            assert calls_for_one and set(mkl.rows) == {items}
        elif only:
            assert set(mkl.rows) == {items} and len(mkl.rows) == batch * calls_for_one
        else:  # groups of one item go to MKL, bigger ones to oneDNN
            groups = halving_parts(batch, kernels.packed_group_items(items))
            assert len(mkl.rows) == groups.count(1) * calls_for_one
            assert {g * items for g in groups if g > 1} <= set(onednn.rows)


@needs_mkl_packing
def test_mkl_products_of_any_row_count_run_in_chunks_of_the_rows_packed_for():
    """MKL's op falls back on the plain weight (here a zero-stride stand-in) for any row count but the
    one packed for: every product runs in chunks of exactly that many rows, the last zero-padded."""
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    packed = kernels.mkl_packed(w, 16)
    for rows in (0, 1, 5, 16, 37, 48):
        x = torch.randn(2, rows, 24, generator=g)
        with MklRows() as mkl, torch.inference_mode():
            got = kernels.mkl_product(x, packed, b)
        torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        assert set(mkl.rows) == {16}
    x = torch.randn(3, 24, generator=g).bfloat16()
    with torch.inference_mode():
        got = kernels.mkl_product(x, packed, b.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), F.linear(x.float(), w, b.bfloat16().float()), rtol=1e-2, atol=2e-2)


@pytest.mark.skipif(not kernels.ONEDNN_BF16, reason="this CPU has no native bf16 products, or oneDNN takes none")
def test_bf16_products_of_any_row_count_meet_a_few_shapes(monkeypatch):
    """oneDNN compiles and keeps a kernel for every shape it meets: bf16 products of 64 rows or more whose
    row count follows the input (a text's bytes) go through it in chunks of 512 rows padded to a multiple
    of 64, as float32 ones do (through F.linear, 1,500 varied requests grew a bf16 server by 124 MiB), and
    answer as F.linear does."""
    weight, bias = (torch.randn(96, 80) / 9).bfloat16(), torch.randn(96).bfloat16()
    op = torch.ops.mkldnn._linear_pointwise
    rows_seen = []

    class Spy:
        def __call__(self, x, *rest):
            rows_seen.append(x.shape[0])
            return op(x, *rest)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    with torch.inference_mode():
        for rows in (64, 100, 511, 700, 1500):
            x = torch.randn(rows, 80).bfloat16()
            got = kernels.linear(x, weight, bias)
            torch.testing.assert_close(got.float(), F.linear(x, weight, bias).float(), rtol=1e-2, atol=1e-2)
    assert rows_seen and set(rows_seen) <= {ONEDNN_ROW_MULTIPLE * k for k in range(1, ONEDNN_CHUNK_ROWS // 64 + 1)}


@pytest.mark.skipif(not kernels.NATIVE_CPU_PRODUCTS[torch.float16], reason="this CPU has no native fp16 products")
def test_fp16_products_of_any_row_count_meet_a_few_shapes(monkeypatch):
    """fp16 products go through F.linear, which reaches oneDNN on CPUs with native fp16 products: in chunks
    of a few shapes too (1,500 varied requests grew an fp16 model's process 467 -> 917 MiB before), with
    F.linear's answers."""
    weight, bias = (torch.randn(96, 80) / 9).half(), torch.randn(96).half()
    linear = F.linear
    rows_seen = []
    monkeypatch.setattr(F, "linear", lambda x, *rest: rows_seen.append(x.shape[0]) or linear(x, *rest))
    with torch.inference_mode():
        for rows in (64, 100, 511, 700, 1500):
            x = torch.randn(rows, 80).half()
            torch.testing.assert_close(kernels.linear(x, weight, bias), linear(x, weight, bias), rtol=1e-3, atol=1e-3)
    assert rows_seen and set(rows_seen) <= {ONEDNN_ROW_MULTIPLE * k for k in range(1, ONEDNN_CHUNK_ROWS // 64 + 1)}


@pytest.mark.skipif(not kernels.ONEDNN_BF16, reason="this CPU has no native bf16 products, or oneDNN takes none")
def test_bf16_cpu_models_multiply_latents_through_onednn_with_packed_weights(tmp_path, monkeypatch):
    """Where the CPU multiplies bf16 natively, a bf16 model's latent stack is packed in place as a float32
    one is (each self-attention's query, key and value weights as one), its latent products go to oneDNN's
    op directly (the MLP's activation applied by that op), and it answers as the same model does through
    F.linear (the weights reordered in every call)."""
    from perceiver_serve.modeling.attention import PerceiverEncoder

    directory = save_reference(build_reference("PerceiverForSequenceClassification"), tmp_path)
    ours = load_model(directory, dtype="bfloat16")
    (encoder,) = [m for m in ours.modules() if isinstance(m, PerceiverEncoder)]
    latent = {m for m in encoder.self_attends.modules() if isinstance(m, kernels.Linear)}
    projections = {m for layer in encoder.self_attends for m in
                   (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value)}
    assert {m for m in latent if m.fused} == projections
    assert all(layer.attention.self.qkv_packed[0].is_mkldnn for layer in encoder.self_attends)
    assert latent - projections == {m for m in ours.modules() if isinstance(m, kernels.Linear) and m.weight.is_mkldnn}
    with pytest.raises(RuntimeError, match="fused"):
        encoder.self_attends[0].attention.self.query(torch.zeros(1, 4, encoder.self_attends[0].attention.self.query.in_features))
    monkeypatch.setattr(kernels, "ONEDNN_BF16", False)
    plain = load_model(directory, dtype="bfloat16")
    assert not any(p.is_mkldnn for p in plain.parameters())
    products = []
    product = kernels._onednn_product
    monkeypatch.setattr(kernels, "_onednn_product", lambda x, *a, **k: products.append(x.dtype) or product(x, *a, **k))
    for batch in (1, 2, ONEDNN_MAX_BATCH + 3):
        ids, mask = _texts(batch)
        with torch.inference_mode():
            expected = plain(ids, mask)
            monkeypatch.setattr(kernels, "ONEDNN_BF16", True)
            got = ours(ids, mask)
            monkeypatch.setattr(kernels, "ONEDNN_BF16", False)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)
    per_pass = len(latent) - len(projections) + len(encoder.self_attends)  # one product for q, k and v
    assert products.count(torch.bfloat16) >= per_pass * 2  # batches 2 and 7 (batch 1's 8-row products: F.linear)


# A fresh interpreter: which element-wise functions run, on how many elements, before and while
# perceiver_serve.modeling is imported (each one's first call must be a one-element call).
_FIRST_CALLS = r"""
import json
import threading
import torch
from torch.utils._python_dispatch import TorchDispatchMode

first = {}

class FirstCalls(TorchDispatchMode):  # a dispatch mode holds for its own thread only
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.removeprefix("aten::")
        if args and isinstance(args[0], torch.Tensor):
            first.setdefault(f"{name}/{args[0].dtype}", args[0].numel())
        return func(*args, **(kwargs or {}))

run = threading.Thread.run

def recorded(self):  # the import's probes run on threads of their own
    with FirstCalls():
        run(self)

threading.Thread.run = recorded
with FirstCalls():
    import perceiver_serve.modeling
print(json.dumps(first))
"""


def test_vector_math_functions_are_first_called_on_one_element():
    """MKL's vector math picks each function's kernel on its first call, and a first call shared by
    several threads can pick a low-accuracy one (see ``kernels.VECTOR_MATH_FUNCTIONS``): importing
    the model code makes each first call, with one element, before any model computes."""
    out = subprocess.run([sys.executable, "-c", _FIRST_CALLS], capture_output=True, text=True, timeout=120, check=True)
    first = json.loads(out.stdout.strip().splitlines()[-1])
    for name in kernels.VECTOR_MATH_FUNCTIONS:
        for dtype in ("torch.float32", "torch.float64"):
            assert first.get(f"{name}/{dtype}") == 1, (name, dtype, first.get(f"{name}/{dtype}"))
    # the functions the models use (position features, layer norms) are among them
    assert {"sin", "cos", "rsqrt"} <= set(kernels.VECTOR_MATH_FUNCTIONS)


@pytest.mark.parametrize(("total", "largest", "parts"), [
    (0, 16, []), (1, 16, [1]), (13, 16, [8, 4, 1]), (16, 16, [16]), (37, 16, [16, 16, 4, 1]),
    (3, 4, [2, 1]), (13 * 257, 16 * 257, [8 * 257, 4 * 257, 257]), (5, 1, [1] * 5),
])
def test_halving_parts_sum_to_the_total_in_a_few_sizes(total, largest, parts):
    assert halving_parts(total, largest) == parts


def test_products_in_parts_equal_one_product():
    from perceiver_serve.modeling.chunking import in_parts

    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(13, 6, generator=g), torch.randn(5, 6, generator=g)
    seen = []
    got = in_parts(x, [8, 4, 1], lambda chunk: seen.append(chunk.shape[0]) or chunk @ w.T)
    torch.testing.assert_close(got, x @ w.T)
    assert seen == [8, 4, 1]


@pytest.mark.parametrize(("latents", "items"), [(8, 16), (128, 16), (256, 8), (512, 4), (2048, 4)])
def test_packed_latent_stacks_group_up_to_16_items_of_at_most_2048_rows(latents, items):
    assert kernels.packed_group_items(latents) == items
