"""Reduced precision runs on CPU for every head and keeps the decisions of float32."""

from pathlib import Path

import pytest
import torch

from perceiver_serve.modeling import ByteTokenizer, cross_attention, load_model, precision
from perceiver_serve.modeling.attention import QKVAttention
from perceiver_serve.modeling.kernels import Linear, attend
from perceiver_serve.modeling.precision import int8_linear, int8_matmul, int8_of, int8_twin

from ..numerics import BF16, FP16
from .hf_models import HEAD_CONFIGS
from .inputs import run_pair


def _decisions(name: str, out: torch.Tensor) -> torch.Tensor:
    return out.float().argmax(-1)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("arch", list(HEAD_CONFIGS))
def test_reduced_precision_agrees_with_float32(arch, dtype, reference_models, checkpoint_dirs):
    low = load_model(checkpoint_dirs[arch, "safetensors"], dtype=dtype)
    assert low.dtype == getattr(torch, dtype)
    for name, (ref, got) in run_pair(arch, reference_models[arch], low, dtype=low.dtype).items():
        assert got.dtype == low.dtype
        assert torch.isfinite(got).all(), name
        got = got.float()
        if name in ("logits", "label"):
            assert torch.equal(_decisions(name, got), _decisions(name, ref)), name
        else:  # regression outputs (flow, pixels, audio): close relative to their scale
            tolerance = BF16 if dtype == "bfloat16" else FP16
            assert (got - ref).norm() <= tolerance * ref.norm(), (name, ((got - ref).norm() / ref.norm()).item())


def _features(**flags: bool) -> dict[str, bool]:
    return dict.fromkeys(("avx2", "avx512", "bf16", "vnni", "amx"), False) | {"avx2": True} | flags


#: CPU features that pick each int8 engine (both run on any AVX2 CPU, oneDNN's without AMX there). The
#: host's VNNI flag stays as it is: without VNNI, 8-bit activations would saturate the 16-bit pair sums
#: of the AVX2 products (which is why such CPUs quantize them to 7 bits), so faking VNNI on one would
#: test a product this CPU never computes.
HOST_VNNI = precision.cpu_features()["vnni"]
ENGINES = {"fbgemm": _features(avx512=True, vnni=HOST_VNNI),
           "onednn": _features(avx512=True, vnni=HOST_VNNI, amx=True)}


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("arch", list(HEAD_CONFIGS))
def test_int8_agrees_with_float32(arch, engine, monkeypatch, caplog, reference_models, checkpoint_dirs):
    monkeypatch.setattr(precision, "cpu_features", lambda: ENGINES[engine])
    assert precision.int8_engine() == engine
    with caplog.at_level("INFO", logger="perceiver_serve.modeling.loading"):
        model = load_model(checkpoint_dirs[arch, "safetensors"], dtype="int8")
    assert f"converting to int8 ({engine} kernels)" in caplog.text  # the start-up log says which
    assert model.precision == "int8" and model.dtype == torch.float32  # activations stay float
    for name, (ref, got) in run_pair(arch, reference_models[arch], model).items():
        assert torch.isfinite(got).all(), name
        if name in ("logits", "label"):
            assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9, name
        else:
            assert (got - ref).norm() <= 0.1 * ref.norm(), name


def test_int8_covers_the_absorbed_cross_attention(checkpoint_dirs):
    """The single-head encoder attends with its key weight folded into the queries: that product is int8 too."""
    model = load_model(checkpoint_dirs["PerceiverForImageClassificationFourier", "safetensors"], dtype="int8")
    fused = _fused_weights(model)
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    assert linears and fused and all((int8_of(m.weight) is None) == (id(m.weight) in fused) for m in linears)
    key = model.perceiver.encoder.cross_attention.attention.self.key
    assert int8_of(key.weight).transposed is not None  # packed when the absorbed path ran (the probe)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        int8_out = model(x)
        int8_of(key.weight).transposed = _pack_rounded_up(key.weight)
        model.perceiver.encoder.cross_attention.attention.self.query_memo.clear()  # computed once per model
        assert not torch.equal(model(x), int8_out)  # the absorbed product reads the packed weight


def test_int8_mlm_quantizes_its_output_layer(checkpoint_dirs):
    """MLM multiplies by its byte embedding, transposed, outside any Linear module: an int8 model quantizes
    that weight too and keeps it apart from the decoder's MLP (a weight folded into the MLP per call would
    have no int8 twin), and the logits read its twin."""
    model = load_model(checkpoint_dirs["PerceiverForMaskedLM", "safetensors"], dtype="int8")
    embedding, bias = model.output_projections()[0]
    assert embedding is model.perceiver.input_preprocessor.embeddings.weight and int8_of(embedding) is not None
    ids, mask = ByteTokenizer().batch([ByteTokenizer().encode("fill in what is missing")])
    with torch.no_grad():
        logits = model(ids, mask)
        embedding.int8 = int8_twin(embedding * 1.5, bias)
        assert not torch.equal(model(ids, mask), logits)  # the output layer reads the int8 twin
    # An output layer narrower than its input, over many queries, is folded into the MLP; in int8 only
    # if it is narrower than a quarter of its input (the folded product runs in float32).
    layer = model.perceiver.decoder.decoding_cross_attention
    width = layer.mlp.dense2.out_features
    for out, folded_in_int8 in ((width // 2, False), (width // 8, True)):
        projection = torch.randn(out, width)
        assert cross_attention.output_map(layer, (projection, None), rows=1 << 20).folded is not None
        projection.int8 = int8_twin(projection, None)
        assert (cross_attention.output_map(layer, (projection, None), rows=1 << 20).folded is not None) == folded_in_int8


@pytest.mark.parametrize("pays", [True, False])
def test_int8_attention_is_computed_in_bf16_where_that_pays(pays, monkeypatch, reference_models, checkpoint_dirs):
    """Where bf16 attention pays (CPUs with AMX), an int8 model computes its big attention heads in bf16 and
    still decides as float32 does; elsewhere its attention stays float32."""
    from perceiver_serve.modeling import kernels, loading

    monkeypatch.setattr(loading, "bf16_attention_pays", lambda: pays)
    monkeypatch.setattr(kernels, "PER_HEAD_SCORES", 1)  # every head counts as big (the test models are tiny)
    arch = "PerceiverForSequenceClassification"
    model = load_model(checkpoint_dirs[arch, "safetensors"], dtype="int8")
    attentions = [m for m in model.modules() if isinstance(m, QKVAttention)]
    assert attentions and all(m.attention_dtype == (torch.bfloat16 if pays else None) for m in attentions)
    seen = []
    attend_ = kernels.attend
    monkeypatch.setattr(kernels, "attend", lambda q, *a, **k: seen.append(q.dtype) or attend_(q, *a, **k))
    for name, (ref, got) in run_pair(arch, reference_models[arch], model).items():
        assert got.dtype == torch.float32
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9, name
    assert (torch.bfloat16 in seen) == pays


def _fused_weights(model) -> set[int]:
    """ids of the weights an int8 model multiplies through a self-attention's shared twin."""
    return {id(layer.weight) for m in model.modules() if isinstance(m, QKVAttention) and m.qkv_int8 is not None
            for layer in (m.query, m.key, m.value)}


def test_int8_self_attention_quantizes_its_input_once(checkpoint_dirs):
    """Every self-attention multiplies by its three weights in one int8 product (one quantization of their
    shared input), which equals the three products it replaces; cross-attentions keep theirs apart."""
    model = load_model(checkpoint_dirs["PerceiverForSequenceClassification", "safetensors"], dtype="int8")
    attentions = [m for m in model.modules() if isinstance(m, QKVAttention)]
    assert all((m.qkv_int8 is None) == m.is_cross for m in attentions) and any(m.is_cross for m in attentions)
    attention = next(m for m in attentions if not m.is_cross)
    layers = (attention.query, attention.key, attention.value)
    x = torch.randn(3, 8, attention.query.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        separate = [int8_linear(x, int8_twin(m.weight, m.bias), m.bias) for m in layers]
        for fused, alone in zip(attention._project(x, x), separate, strict=True):
            assert torch.allclose(fused, alone, rtol=0, atol=1e-5)
        got = attention(x)  # layer norm, the shared product, attention
        normed = attention.layernorm1(x)
        expected = attend(*(attention._heads(int8_linear(normed, int8_twin(m.weight, m.bias), m.bias)) for m in layers))
        assert torch.allclose(got, expected.transpose(1, 2).flatten(2), rtol=0, atol=1e-5)
        attention.qkv_int8 = int8_twin(torch.cat([m.weight for m in layers]) * 1.5,
                                       torch.cat([m.bias for m in layers]))
        assert not torch.allclose(attention(x), got, atol=1e-3)  # the forward reads the shared twin


def _pack_rounded_up(weight):
    from perceiver_serve.modeling.precision import _pack

    return _pack((weight * 1.5).t(), None)


@pytest.mark.parametrize("arch", ["PerceiverForSequenceClassification", "PerceiverForOpticalFlow"])
@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_load_compares_with_float32(arch, dtype, checkpoint_dirs):
    model = load_model(checkpoint_dirs[arch, "safetensors"], dtype=dtype)
    check = model.precision_check
    assert check.precision == dtype and 0 < check.max_abs_diff < 0.5
    if arch == "PerceiverForOpticalFlow":
        assert check.argmax_agreement is None  # a regression: no arg-max to compare
    else:
        assert check.rows == 4 and check.argmax_agreement >= 0.75
    assert load_model(checkpoint_dirs[arch, "safetensors"]).precision_check is None


@pytest.mark.parametrize(("flags", "device", "expected"), [
    ({"bf16": True}, "cpu", "bfloat16"),
    ({"amx": True}, "cpu", "bfloat16"),
    ({}, "cpu", "float32"),
])
def test_auto_follows_the_cpu(monkeypatch, flags, device, expected):
    features = dict.fromkeys(("avx2", "avx512", "bf16", "vnni", "amx"), False) | flags
    monkeypatch.setattr(precision, "cpu_features", lambda: features)
    assert precision.effective_precision("auto", device) == expected


def test_auto_on_this_cpu(checkpoint_dirs):
    model = load_model(checkpoint_dirs["PerceiverForSequenceClassification", "safetensors"], dtype="auto")
    native = precision.cpu_features()["bf16"] or precision.cpu_features()["amx"]
    assert model.precision == ("bfloat16" if native else "float32")
    assert (model.precision_check is None) == (not native)


DEMO_FLOW = Path(__file__).resolve().parents[2] / "models" / "optical-flow" / "checkpoint"


def _native_bf16(monkeypatch) -> None:
    features = dict.fromkeys(("avx2", "avx512", "bf16", "vnni", "amx"), False) | {"bf16": True}
    monkeypatch.setattr(precision, "cpu_features", lambda: features)


def test_auto_serves_float32_where_bf16_changes_the_answers(monkeypatch, caplog):
    """The optical-flow demo's matching logits are deliberately huge (its card: it needs float32): bf16
    moves its probe output by more than its own size. ``auto`` loads it again in float32 and keeps the
    failed check; an explicit ``bfloat16`` is served as asked, with a warning."""
    _native_bf16(monkeypatch)
    with caplog.at_level("WARNING"):
        auto = load_model(DEMO_FLOW, dtype="auto")
    assert auto.precision == "float32" and auto.dtype == torch.float32
    assert auto.precision_check.precision == "bfloat16" and auto.precision_check.broken()
    assert auto.precision_check.relative_diff > 1.0
    assert "dtype 'auto' serves float32" in caplog.text
    patches = torch.randn(1, 2, 27, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(auto(patches), load_model(DEMO_FLOW)(patches))
    explicit = load_model(DEMO_FLOW, dtype="bfloat16")
    assert explicit.precision == "bfloat16" and explicit.precision_check.broken()
    assert "dtype 'auto' would serve float32" in caplog.text


def test_auto_keeps_bf16_where_it_only_rounds(monkeypatch, checkpoint_dirs):
    _native_bf16(monkeypatch)
    model = load_model(checkpoint_dirs["PerceiverForSequenceClassification", "safetensors"], dtype="auto")
    assert model.precision == "bfloat16" and not model.precision_check.broken()
    assert 0 < model.precision_check.relative_diff < precision.BROKEN_RELATIVE_DIFF


@pytest.mark.parametrize(("reference", "got", "broken"), [
    ([1.0, -4.0], [1.0, -4.0], False),
    ([1.0, -4.0], [2.0, -4.0], False),   # 1 of the largest 4: 25%, the limit
    ([1.0, -4.0], [1.0, -2.9], True),    # 27.5%
    ([0.0, 0.0], [0.0, 0.1], True),      # any change of an all-zero output
])
def test_broken_is_relative_to_the_largest_output(reference, got, broken):
    check = precision.compare((None, torch.tensor(reference)), (None, torch.tensor(got)), "bfloat16")
    assert check.broken() == broken


def test_int8_without_vnni_uses_seven_bit_activations(monkeypatch, checkpoint_dirs):
    monkeypatch.setattr(precision, "cpu_features", lambda: {"avx2": True, "avx512": False, "bf16": False,
                                                            "vnni": False, "amx": False})
    model = load_model(checkpoint_dirs["PerceiverForSequenceClassification", "safetensors"], dtype="int8")
    twins = [int8_of(m.weight) for m in model.modules() if isinstance(m, Linear)]
    twins += [m.qkv_int8 for m in model.modules() if isinstance(m, QKVAttention)]
    assert all(twin.reduce_range for twin in twins if twin is not None) and len(twins) > 4
    assert model.precision_check.argmax_agreement >= 0.75


def test_int8_engines_compute_the_same_product(monkeypatch):
    """oneDNN (chosen with AMX) and fbgemm quantize alike: per-channel int8 weights, one 8-bit scale
    per call for the activations; their products agree to float rounding, and both are the int8
    answer, not the float one."""
    weight, bias, x, y = torch.randn(96, 80) / 9, torch.randn(96), torch.randn(2, 33, 80), torch.randn(40, 96)
    outputs = {}
    for engine, features in ENGINES.items():
        monkeypatch.setattr(precision, "cpu_features", lambda features=features: features)
        twin = int8_twin(weight, bias)
        assert twin.reduce_range == (not HOST_VNNI)
        outputs[engine] = int8_linear(x, twin, bias), int8_matmul(y, weight, twin)  # x Wᵀ + b, y W
    exact = torch.nn.functional.linear(x, weight, bias), y @ weight
    for got, fbgemm, want in zip(outputs["onednn"], outputs["fbgemm"], exact):
        assert torch.allclose(got, fbgemm, atol=1e-5, rtol=1e-5)
        assert 1e-4 < (got - want).abs().max() < 0.05 * want.abs().max()


def test_onednn_int8_products_meet_few_shapes(monkeypatch):
    """oneDNN keeps a compiled kernel per shape: its products run in chunks of at most 512 rows, padded
    to a multiple of 64, so that inputs of any length meet a few shapes; the padding changes no answer
    beyond float rounding (zero rows leave the activation scale as it was), and a longer input is a
    product per chunk."""
    monkeypatch.setattr(precision, "cpu_features", lambda: ENGINES["onednn"])
    weight, bias = torch.randn(48, 40) / 7, torch.randn(48)
    twin = int8_twin(weight, bias)
    dynamic = torch.ops.quantized.linear_dynamic
    seen = []

    def spy(x, packed, reduce_range):
        seen.append(x.shape[0])
        return dynamic(x, packed, reduce_range)

    monkeypatch.setattr(torch.ops.quantized, "linear_dynamic", spy)
    for rows in (1, 66, 128, 511, 700, 1500):
        x = torch.randn(rows, 40) * 3
        got = int8_linear(x[None], twin, bias)[0]
        expected = torch.cat([dynamic(x[i:i + 512], twin.packed, twin.reduce_range) for i in range(0, rows, 512)])
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), rows  # another kernel: float rounding
        assert got.shape == (rows, 48)
    assert set(seen) <= {64 * k for k in range(1, 9)} and 512 in seen


def test_bad_precisions(checkpoint_dirs):
    directory = checkpoint_dirs["PerceiverForSequenceClassification", "safetensors"]
    with pytest.raises(ValueError, match="unsupported dtype"):
        load_model(directory, dtype="int4")
    with pytest.raises(ValueError, match="CPU only"):
        precision.effective_precision("int8", "cuda")
