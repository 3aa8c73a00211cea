"""The optical-flow demo model's weights, set by construction: one latent per pixel, patch matching by attention.

A fresh flow Perceiver trained for the minutes we have never left the zero-flow answer, and a
crude hand-set start (latents following feature peaks, then trained) reached 3.16 px on
held-out translations. This construction matches every pixel instead, inside an ordinary
``PerceiverForOpticalFlow`` (every weight is a checkpoint parameter):

1. ``conv_after_patches`` copies both frames' 3×3×RGB patches (54 values) into the token's
   content channels, scaled by ``GAIN`` so that the token's layer norm stays set by its
   Fourier position channels. Channel 63 stays 0: after the norm it holds −mean/std, which
   every read subtracts (``_read``) to undo the norm's centring.
2. One latent per pixel of the tile. Its initial value holds two huge flags (±``FLAG``, so
   that each later layer norm divides every latent by the same number), sines and cosines of
   16 Fourier bands per axis of its pixel (chosen for the sharpest peak), and its position.
   The cross-attention (one head) puts the latent's band features against the token's: the
   latent reads exactly its own pixel and writes the two patches ``A`` (frame 1) and ``B``
   (frame 2) into its channels. Its MLP adds ``|B|²`` (a GELU pair is nearly quadratic for
   small inputs: ``z·erf(z/√2) ≈ √(2/π)·z²``).
3. Self-attention 1 is the matching: latent ``i`` attends to every latent ``j`` with logits
   ``−β·|A_i − B_j|²`` (``2β·A_i·B_j − β·|B_j|²``), reads the matched position and patch, and
   keeps ``A − B_match``; its MLP adds the match error ``|A − B_match|²`` and ``|d|²`` of the
   shift ``d`` (matched minus own position).
4. Self-attention 2 is a vote: latent ``i`` averages the shifts of all latents, weighted by
   ``−conf·error_j − vote·|d_i − d_j|²``: good matches count, and close shifts count most.
5. The decoder's query at every pixel weighs the latents by ``−conf₂·error_j`` and reads the
   voted shift; ``final_layer`` writes it as flow (x, y) in the model's output scale.

So within a tile the model finds one robust motion near each match: exact on whole-pixel
translations, close on small rotations, and not a layered (per-object) flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

#: Flags of every latent (±FLAG): the layer norms then divide all latents by the same number.
FLAG = 1e4
#: Scale of the patch values in the token (small: the token's norm stays that of its positions).
GAIN = 0.01
#: Fourier bands (of the 64) that the cross-attention's position match uses, per axis: a random
#: search for the largest gap between a pixel's own score and any other pixel's (13.2 of 16 for
#: 48 rows; every fourth band gives 15.2 of 16 for 64 columns).
BANDS_Y = (7, 9, 13, 16, 18, 23, 27, 28, 31, 32, 35, 39, 45, 52, 56, 59)
BANDS_X = tuple(range(0, 64, 4))
#: Sharpness of the position match in the cross-attention (logit gap ≥ 50 to any other pixel).
POSITION_GAIN = 20.0
#: Input scale of the GELU pairs that square (small: ``z²/6`` relative error).
SQUARE_IN = 0.005
SHIFT_SQUARE_IN = 0.002

# Channels of a latent.
ZERO, POS, OWN, A, B, SQ, MATCH, ERR, DSQ, VOTED = 2, 3, 67, 70, 100, 130, 131, 133, 134, 135
PATCH = 27  # 3×3×RGB
POS_UNIT = 64.0  # own and matched positions are stored in pixels / POS_UNIT
TOKEN_ZERO = 63


@dataclass(frozen=True)
class Sharpness:
    """The construction's four free numbers (fitted on training pairs by ``flow.py``)."""

    beta: float = 3000.0   # of the match: logits −β·|A − B|² (patch values in [-1, 1])
    conf: float = 3000.0   # of the vote: weight of a latent's match error
    vote: float = 0.03     # of the vote: weight of |d_i − d_j|² (pixels²)
    conf2: float = 3000.0  # of the decoder: weight of a latent's match error


def _read(weight: torch.Tensor, row: int, channel: int, value: float, zero: int = ZERO) -> None:
    """``weight[row]`` reads ``channel`` of a layer-normed vector, the norm's centring undone."""
    weight[row, channel] += value
    weight[row, zero] -= value


def _token_layout() -> dict[str, int]:
    content = 64
    return dict(sin_y=content + 2, sin_x=content + 2 + 64, cos_y=content + 2 + 128, cos_x=content + 2 + 192)


def _band_features(cfg) -> torch.Tensor:
    """``(H·W, 64)``: sine and cosine of the chosen bands of each latent's pixel, as the token holds them."""
    h, w = cfg.train_size
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos_y, pos_x = torch.linspace(-1, 1, h)[ys.flatten()], torch.linspace(-1, 1, w)[xs.flatten()]
    freq_y, freq_x = torch.linspace(1, h / 2, 64), torch.linspace(1, w / 2, 64)
    columns = []
    for pos, freq, bands in ((pos_y, freq_y, BANDS_Y), (pos_x, freq_x, BANDS_X)):
        for band in bands:
            columns += [torch.sin(math.pi * freq[band] * pos), torch.cos(math.pi * freq[band] * pos)]
    return torch.stack(columns, dim=1)


def _squares(dense1: torch.Tensor, dense2: torch.Tensor, first_unit: int, reads: list[list[tuple[int, float]]],
             out: int, scale: float, size_in: float) -> int:
    """GELU pairs that add ``Σ_k (Σ reads_k)²`` to channel ``out``; returns the next free unit."""
    unit = first_unit
    for terms in reads:
        for sign in (1.0, -1.0):
            for channel, weight in terms:
                _read(dense1, unit, channel, sign * size_in * weight * scale)
            dense2[out, unit] = 1 / (math.sqrt(2 / math.pi) * size_in * size_in)
            unit += 1
    return unit


def pixel_matching(model: nn.Module, sharp: Sharpness, flow_scale: float) -> None:
    """Set every weight of ``model`` (a ``PerceiverForOpticalFlow`` of one latent per pixel, see ``flow.py``)."""
    cfg = model.config
    h, w = cfg.train_size
    d_lat = cfg.d_latents
    if cfg.num_latents != h * w or cfg.num_cross_attention_heads != 1 or cfg.num_self_attention_heads != 1 \
            or cfg.qk_channels < 64 or d_lat < VOTED + 2 or cfg.num_self_attends_per_block != 2:
        raise ValueError("pixel matching needs one latent per pixel, one head, qk ≥ 64, d_latents ≥ 137, 2 layers")
    p = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in p.items():
            tensor.fill_(1.0 if "layernorm" in name and name.endswith("weight") else 0.0)
        p["perceiver.input_preprocessor.conv_after_patches.weight"][:2 * PATCH, :2 * PATCH] = torch.eye(2 * PATCH) * GAIN
        latents = p["perceiver.embeddings.latents"]
        latents[:, 0], latents[:, 1] = FLAG, -FLAG
        latents[:, POS:POS + 64] = _band_features(cfg)
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        latents[:, OWN], latents[:, OWN + 1] = rows.flatten() / POS_UNIT, cols.flatten() / POS_UNIT
        std = float(latents[0].double().std(unbiased=False))  # every latent's layer norm divides by this
        token_std = math.sqrt(130 / 322)  # a token's: its 256 Fourier values and 2 positions, per channel
        head = math.sqrt(cfg.qk_channels)  # attention scores are divided by √(qk per head)
        _cross_attention(p, cfg, std, token_std, head)
        _matching(p, sharp, std, head)
        _vote(p, sharp, std, head)
        _decoder(p, model, sharp, std, flow_scale)


def _cross_attention(p, cfg, std: float, token_std: float, head: float) -> None:
    pre = "perceiver.encoder.cross_attention."
    q, k, v, o = (p[pre + "attention." + n] for n in ("self.query.weight", "self.key.weight", "self.value.weight",
                                                        "output.dense.weight"))
    token = _token_layout()
    row = 0
    for bands, (sin, cos) in ((BANDS_Y, (token["sin_y"], token["cos_y"])), (BANDS_X, (token["sin_x"], token["cos_x"]))):
        for band in bands:
            for channel in (sin + band, cos + band):
                _read(q, row, POS + row, POSITION_GAIN * head * std)
                _read(k, row, channel, 1.0, zero=TOKEN_ZERO)
                row += 1
    for c in range(2 * PATCH):
        _read(v, c, c, token_std / GAIN, zero=TOKEN_ZERO)
        o[(A if c < PATCH else B - PATCH) + c, c] = 1.0
    _squares(p[pre + "mlp.dense1.weight"], p[pre + "mlp.dense2.weight"], 0,
             [[(B + c, 1.0)] for c in range(PATCH)], SQ, std, SQUARE_IN)


def _matching(p, sharp: Sharpness, std: float, head: float) -> None:
    pre = "perceiver.encoder.self_attends.0."
    q, k, v, o = (p[pre + "attention." + n] for n in ("self.query.weight", "self.key.weight", "self.value.weight",
                                                        "output.dense.weight"))
    for c in range(PATCH):
        _read(q, c, A + c, 2 * sharp.beta * head * std)
        _read(k, c, B + c, std)
        _read(v, c, B + c, std)
        o[A + c, c] = -1.0  # A becomes A − B_match
    p[pre + "attention.self.query.bias"][PATCH] = -sharp.beta * head
    _read(k, PATCH, SQ, std)
    for axis in range(2):
        _read(v, PATCH + axis, OWN + axis, std)
        o[MATCH + axis, PATCH + axis] = 1.0
    d1, d2 = p[pre + "mlp.dense1.weight"], p[pre + "mlp.dense2.weight"]
    unit = _squares(d1, d2, 0, [[(A + c, 1.0)] for c in range(PATCH)], ERR, std, SQUARE_IN)
    _squares(d1, d2, unit, [[(MATCH + a, POS_UNIT), (OWN + a, -POS_UNIT)] for a in range(2)], DSQ, std, SHIFT_SQUARE_IN)


def _vote(p, sharp: Sharpness, std: float, head: float) -> None:
    pre = "perceiver.encoder.self_attends.1.attention."
    q, k, v, o = (p[pre + n] for n in ("self.query.weight", "self.key.weight", "self.value.weight", "output.dense.weight"))
    bias = p[pre + "self.query.bias"]
    bias[0] = -sharp.conf * head
    _read(k, 0, ERR, std)
    for axis in range(2):
        for weight, row, gain in ((q, 1 + axis, 2 * sharp.vote * head), (k, 1 + axis, 1.0), (v, axis, 1.0)):
            _read(weight, row, MATCH + axis, gain * POS_UNIT * std)
            _read(weight, row, OWN + axis, -gain * POS_UNIT * std)
        o[VOTED + axis, axis] = 1.0
    bias[3] = -sharp.vote * head
    _read(k, 3, DSQ, std)


def _decoder(p, model, sharp: Sharpness, std: float, flow_scale: float) -> None:
    pre = "perceiver.decoder.decoder.decoding_cross_attention.attention."
    k, v, o = (p[pre + n] for n in ("self.key.weight", "self.value.weight", "output.dense.weight"))
    p[pre + "self.query.bias"][0] = -sharp.conf2 * math.sqrt(k.shape[0])
    _read(k, 0, ERR, std)
    for axis in range(2):
        _read(v, axis, VOTED + axis, std)
        o[axis, axis] = 1.0
    final = p["perceiver.decoder.decoder.final_layer.weight"]
    rescale = model.perceiver.decoder.rescale_factor
    final[0, 1] = final[1, 0] = rescale / flow_scale  # flow x from the voted column shift, y from the row shift
