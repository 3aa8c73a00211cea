"""The evaluation orders the benchmark measures agree with the plain ones they replace.

Parity with transformers (tests/modeling) covers the paths each head takes by default; these
tests pin the alternatives against each other on the same weights: absorbed vs projected
cross-attention (with padding masks), padded vs materialised decoder queries, folded vs
separate output layers, the latent memo when latents change, and the Fourier grid features.
"""

import pytest
import torch
from perceiver_serve.modeling import (
    PerceiverConfig,
    PerceiverForMaskedLM,
    PerceiverForMultimodalAutoencoding,
    PerceiverForOpticalFlow,
    PerceiverForSequenceClassification,
    cross_attention,
)

from benchmarks.checkpoints import randomize

SMALL = {
    "num_latents": 8, "d_latents": 32, "d_model": 24, "num_blocks": 1, "num_self_attends_per_block": 2,
    "num_self_attention_heads": 4, "num_cross_attention_heads": 1, "max_position_embeddings": 40, "image_size": 16,
    "train_size": (12, 16), "num_frames": 2, "audio_samples_per_frame": 32, "samples_per_patch": 8,
    "output_shape": (1, 2, 16, 16), "output_num_channels": 24, "id2label": {i: str(i) for i in range(5)},
}


def _model(cls, **overrides):
    torch.manual_seed(0)
    model = cls(PerceiverConfig(**{**SMALL, **overrides})).eval().requires_grad_(False)
    for p in model.parameters():  # tables our constructors leave at zero (latents, paddings, positions)
        p.normal_()
    randomize(model)
    return model


@pytest.fixture()
def plain(monkeypatch):
    """Run with every cheaper evaluation order switched off."""
    def switch_off():
        monkeypatch.setattr(cross_attention, "absorbs_inputs", lambda *a: False)
        monkeypatch.setattr(cross_attention, "prepared_latents", lambda *a: None)
    return switch_off


def test_encoder_with_absorbed_inputs_equals_projected_inputs_under_a_padding_mask(plain):
    model = _model(PerceiverForSequenceClassification)
    ids = torch.randint(6, 262, (2, 30), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, 11:] = 0
    with torch.inference_mode():
        assert cross_attention.absorbs_inputs(model.perceiver.encoder.cross_attention.attention, 8, 30)
        fast = model(ids, mask)
        plain()
        slow = model(ids, mask)
    assert (fast - slow).abs().max() <= 1e-5


def test_multimodal_padded_queries_and_folded_heads_equal_the_plain_decoder(plain):
    model = _model(PerceiverForMultimodalAutoencoding)
    g = torch.Generator().manual_seed(2)
    images, audio = torch.rand(2, 2, 3, 16, 16, generator=g), torch.rand(2, 64, generator=g) * 2 - 1
    with torch.inference_mode():
        latents = model.encode(images, audio)
        points = torch.arange(0, 500, 3)
        fast = model.decode(latents, points, torch.arange(8), label=True)
        plain()
        slow = model.decode(latents, points, torch.arange(8), label=True)
    for name in ("image", "audio", "label"):
        assert fast[name].shape == slow[name].shape
        assert (fast[name] - slow[name]).abs().max() <= 1e-4 * max(1.0, slow[name].abs().max().item()), name


def test_flow_decoder_equals_the_plain_decoder(plain):
    model = _model(PerceiverForOpticalFlow)
    x = torch.randn(1, 2, 27, 12, 16, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        fast = model(x)
        plain()
        slow = model(x)
    assert (fast - slow).abs().max() <= 1e-5 * max(1.0, slow.abs().max().item())


def test_latent_memo_notices_changed_latents():
    """Outside inference mode a tensor counts its in-place changes, and the memo reads that count."""
    model = _model(PerceiverForMultimodalAutoencoding)
    g = torch.Generator().manual_seed(4)
    images, audio = torch.rand(1, 2, 3, 16, 16, generator=g), torch.rand(1, 64, generator=g)
    points = torch.arange(300)
    with torch.no_grad():
        latents = model.encode(images, audio)
        first = model.decode(latents, points)["image"]
        latents.add_(torch.randn(latents.shape, generator=g))  # same tensor, new values
        changed = model.decode(latents, points)["image"]
        fresh = model.decode(latents.clone(), points)["image"]
    assert not torch.allclose(first, changed)
    assert torch.equal(changed, fresh)


def test_latent_memo_hits_by_identity_without_reading_values(monkeypatch):
    """Decoding one encoding in chunks prepares it once and never compares values (a device sync)."""
    model = _model(PerceiverForMultimodalAutoencoding)
    g = torch.Generator().manual_seed(5)
    images, audio = torch.rand(1, 2, 3, 16, 16, generator=g), torch.rand(1, 64, generator=g)
    prepared = []
    monkeypatch.setattr(cross_attention, "latent_state",
                        lambda *a, real=cross_attention.latent_state: prepared.append(1) or real(*a))
    monkeypatch.setattr(torch, "equal", lambda *a: pytest.fail("the memo compared values"))
    with torch.inference_mode():
        latents = model.encode(images, audio)
        chunks = [model.decode(latents, torch.arange(s, s + 100))["image"] for s in range(0, 500, 100)]
        whole = model.decode(latents.clone(), torch.arange(500))["image"]
    assert len(prepared) == 2  # once for the five chunks, once for the new tensor
    assert (torch.cat(chunks, dim=1) - whole).abs().max() <= 1e-5


@pytest.mark.parametrize("heads", [1, 2])
def test_queries_of_learned_arrays_are_computed_once_and_follow_changes(heads, monkeypatch):
    """The latent array's queries (in the inputs' space where the encoder absorbs its keys) and the MLM
    decoder's learned queries depend on no request: computed once per model, for one batch item, and
    again after a parameter they come from changes; with gradients on, every call computes them."""
    model = _model(PerceiverForMaskedLM, num_cross_attention_heads=heads)
    layers = {"encoder": model.perceiver.encoder.cross_attention.attention.self.query,
              "decoder": model.perceiver.decoder.decoding_cross_attention.attention.self.query}
    calls = []
    for name, layer in layers.items():
        layer.register_forward_hook(lambda m, a, o, name=name: calls.append((name, a[0].shape[0])))
    ids = torch.randint(6, 262, (3, 30), generator=torch.Generator().manual_seed(6))

    def direct():
        with monkeypatch.context() as m:
            m.setattr(cross_attention, "fixed_queries", lambda module, kind, hidden, compute: compute(hidden))
            return model(ids)

    with torch.no_grad():
        first = model(ids)
        assert torch.equal(model(ids[:2]), first[:2]) and sorted(calls) == [("decoder", 1), ("encoder", 1)]
        assert (first - direct()).abs().max() <= 1e-5
        calls.clear()
        model.perceiver.embeddings.latents.mul_(1.5)
        layers["decoder"].weight.mul_(1.5)
        changed = model(ids)
        assert sorted(calls) == [("decoder", 1), ("encoder", 1)]
        assert (changed - first).abs().max() > 1e-2
        assert (changed - direct()).abs().max() <= 1e-5
    calls.clear()
    model(ids)
    assert sorted(calls) == [("decoder", 3), ("encoder", 3)]
    calls.clear()
    with torch.no_grad():
        model.to(torch.bfloat16)  # swaps every parameter's data: nothing remembered in float32 is used
        low = model(ids)
    assert low.dtype == torch.bfloat16 and sorted(calls) == [("decoder", 1), ("encoder", 1)]
    assert (low.float() - changed).abs().max() <= 0.05 * changed.abs().max()


def test_fourier_grid_features_equal_features_of_every_point():
    from perceiver_serve.modeling.position import FourierPositionEncoding

    for bands, dims, resolution in [(8, (5, 7), (10, 12)), (4, (3, 4, 6), (3, 8, 8))]:
        encoding = FourierPositionEncoding(bands, resolution)
        axes = [torch.linspace(-1.0, 1.0, n) for n in dims]
        points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(dims))
        grid = encoding(dims, 2, device=torch.device("cpu"), dtype=torch.float32)
        assert grid.shape == (2, points.shape[0], encoding.output_size())
        assert torch.equal(grid[1], encoding.features(points))
