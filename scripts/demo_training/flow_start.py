"""The optical-flow demo model's starting point: weights set by hand so that it already matches content.

From ``transformers``' initialisation (or a unit-scale one) the small flow Perceiver never
left the zero-flow answer in the minutes we have: after 250–560 steps its error equalled that
of answering zero, even on pure shifts of 1.5 px, because nothing in a fresh network compares
the two frames (its keys are dominated by the 258 Fourier position channels). So training
starts from weights that do a crude match, and learns from there. Every weight is an ordinary
parameter of ``PerceiverForOpticalFlow``; nothing outside the checkpoint changes.

The construction, layer by layer (channels of the 322-wide input token: 64 content, then y,
x, then sines and cosines of the 64 bands of each axis):

1. ``conv_after_patches`` writes five features of each frame's 3×3 patch (brightness, two
   colour opponents, horizontal and vertical gradient) into content channels 0–4 (frame 1)
   and 5–9 (frame 2). Channel 63 stays 0, so after the layer norm it holds −mean/std of the
   token, which the keys and values subtract to undo the norm's centring.
2. Encoder cross-attention, two heads. Each latent is a detector: in head 1 it attends to
   the pixels of frame 1 where one feature (with a sign) is highest, in head 2 to the same
   feature of frame 2, tempered by a window (a random centre, and a penalty near the tile's
   border built from the cosine bands). The values are the pixel positions, and the output
   is head 1 minus head 2: the shift of that feature's peak between the frames, in every
   latent its own estimate.
3. The cross-attention MLP adds the squared length of that estimate (``x·erf(x/√2)`` of
   the GELU pair is nearly quadratic for small ``x``), and the first self-attention lets each
   latent average the estimates close to its own (logits ``−λ·|d_i − d_j|²``): a vote that
   keeps a few wild detectors from dragging the rest.
4. The decoder attends to all latents alike and reads the voted shift; ``final_layer`` is
   fitted by least squares on pure translations of the training pictures.

Everything else (the second self-attention, the MLPs' second layers) starts as an identity
residual with its last layer at zero, so training can use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from perceiver_serve.modeling import flow_patches

#: Size of the latents' one-hot identities (large, so the estimates hardly move their layer norm).
FLAG = 10.0
#: Standard deviation of a latent after its layer norm's input: ``FLAG / √d_latents`` ≈ 0.884.
LATENT_STD = 0.884
#: Detectors: (feature, sign). The colour opponents are left out: on grey pictures they see nothing.
DETECTORS = ((0, 1.0), (0, -1.0), (3, 1.0), (3, -1.0), (4, 1.0), (4, -1.0))
N_FEATURES = 5
BETA = 10.0          # sharpness of a detector's peak
WINDOW = 1.0         # weight of its random window centre
BORDER = 3.0         # weight of the border penalty
MARGIN = 10.0        # pixels from the border where the penalty starts
CONTENT_GAIN = 3.0   # scale of the content features in the token
VOTE = 10.0          # λ of the vote


def _features() -> torch.Tensor:
    """``(5, 27)`` maps of one frame's 3×3×RGB patch (row, column, colour): brightness, R−G, (R+G)/2−B, d/dx, d/dy."""
    w = torch.zeros(N_FEATURES, 3, 3, 3)
    w[0] = 1 / 27
    w[1, :, :, 0], w[1, :, :, 1] = 1 / 9, -1 / 9
    w[2, :, :, 0], w[2, :, :, 1], w[2, :, :, 2] = 0.5 / 9, 0.5 / 9, -1 / 9
    w[3, :, 2, :], w[3, :, 0, :] = 1 / 9, -1 / 9
    w[4, 2, :, :], w[4, 0, :, :] = 1 / 9, -1 / 9
    return w.reshape(N_FEATURES, 27)


def _border_window(size: int, bands: int) -> torch.Tensor:
    """Coefficients of an axis' cosine bands whose sum is flat inside and falls off within ``MARGIN`` of the border."""
    pos = torch.linspace(-1, 1, size)
    basis = torch.cos(math.pi * pos[:, None] * torch.linspace(1.0, size / 2, bands)[None])
    dist = torch.minimum(torch.arange(size), size - 1 - torch.arange(size)).float()
    target = -4 * torch.clamp((MARGIN - dist) / MARGIN, min=0) ** 2
    target = target - target.mean()
    return torch.linalg.solve(basis.T @ basis + 1e-3 * torch.eye(bands), basis.T @ target)


def _zero(*tensors: torch.Tensor) -> None:
    for t in tensors:
        t.zero_()


def _encoder_detectors(p: dict[str, nn.Parameter], cfg, rng: np.random.Generator) -> None:
    pre = "perceiver.encoder.cross_attention.attention."
    n_lat, d_lat = p["perceiver.embeddings.latents"].shape
    hq = p[pre + "self.query.weight"].shape[0] // 2
    hv = p[pre + "self.value.weight"].shape[0] // 2
    conv = p["perceiver.input_preprocessor.conv_after_patches.weight"]
    _zero(conv, p["perceiver.input_preprocessor.conv_after_patches.bias"])
    conv[:N_FEATURES, :27] = conv[N_FEATURES:2 * N_FEATURES, 27:] = _features() * CONTENT_GAIN
    c_dim, bands = conv.shape[0], 64
    zero_ch, pos_y, pos_x = c_dim - 1, c_dim, c_dim + 1
    sin_y, sin_x, cos_y, cos_x = (c_dim + 2 + k * bands for k in range(4))
    key, val, out = p[pre + "self.key.weight"], p[pre + "self.value.weight"], p[pre + "output.dense.weight"]
    _zero(key, val, out, p[pre + "self.key.bias"], p[pre + "self.value.bias"], p[pre + "output.dense.bias"])
    th, tw = cfg.train_size
    for h in range(2):
        rows = [(h * hq + j, {h * N_FEATURES + j: 1.0}) for j in range(N_FEATURES)]
        rows += [(h * hq + N_FEATURES + j, {ch: 1.0}) for j, ch in enumerate((sin_y, sin_x, cos_y, cos_x))]
        for row, weights in rows:
            for ch, w in weights.items():
                key[row, ch] = w
            key[row, zero_ch] = -sum(weights.values())
        border = h * hq + N_FEATURES + 4
        key[border, cos_y:cos_y + bands] = _border_window(th, bands)
        key[border, cos_x:cos_x + bands] = _border_window(tw, bands)
        key[border, zero_ch] = -key[border, cos_y:cos_x + bands].sum()
        for k, ch in enumerate((pos_y, pos_x)):
            val[h * hv + k, ch], val[h * hv + k, zero_ch] = 1.0, -1.0
    for k in range(2):  # latent channels d_lat-2, d_lat-1: peak in frame 1 minus peak in frame 2 (y, x)
        out[d_lat - 2 + k, k], out[d_lat - 2 + k, hv + k] = 1.0, -1.0
    latents = p["perceiver.embeddings.latents"]
    latents.zero_()
    latents[torch.arange(n_lat), torch.arange(n_lat)] = FLAG
    wanted = torch.zeros(n_lat, 2 * hq)
    for lat in range(n_lat):
        feature, sign = DETECTORS[lat % len(DETECTORS)]
        y0, x0 = rng.uniform(-0.5, 0.5, 2)
        window = torch.tensor([math.sin(math.pi * y0), math.sin(math.pi * x0), math.cos(math.pi * y0), math.cos(math.pi * x0)])
        for h in range(2):
            wanted[lat, h * hq + feature] = sign * BETA
            wanted[lat, h * hq + N_FEATURES:h * hq + N_FEATURES + 4] = WINDOW * window
            wanted[lat, h * hq + N_FEATURES + 4] = BORDER
    # The minimum-norm solution of normed · Wᵀ = wanted, written out: torch's lstsq (gelsy) on this
    # underdetermined system gave different answers from one process to the next.
    normed = nn.functional.layer_norm(latents, (d_lat,)).double()
    solution = normed.T @ torch.linalg.solve(normed @ normed.T, wanted.double() * math.sqrt(hq))
    p[pre + "self.query.weight"].copy_(solution.T.float())
    p[pre + "self.query.bias"].zero_()


def _vote(p: dict[str, nn.Parameter], cfg, d_lat: int) -> dict[str, int]:
    y, x, sq, zero, one, ey, ex = d_lat - 2, d_lat - 1, d_lat - 3, d_lat - 28, d_lat - 27, d_lat - 6, d_lat - 5
    mlp = "perceiver.encoder.cross_attention.mlp."
    m1, m2 = p[mlp + "dense1.weight"], p[mlp + "dense2.weight"]
    _zero(m1, m2, p[mlp + "dense1.bias"], p[mlp + "dense2.bias"])
    a = 0.5
    for unit, (ch, sign) in enumerate(((y, 1), (y, -1), (x, 1), (x, -1))):
        m1[unit, ch], m1[unit, zero] = sign * a, -sign * a
        m2[sq, unit] = 1 / (math.sqrt(2 / math.pi) * a * a)
    s0 = "perceiver.encoder.self_attends.0.attention."
    p[s0 + "self.layernorm1.weight"][one], p[s0 + "self.layernorm1.bias"][one] = 0.0, 1.0
    q, k, v = (p[s0 + f"self.{name}.weight"] for name in ("query", "key", "value"))
    _zero(q, k, v, *(p[s0 + f"self.{name}.bias"] for name in ("query", "key", "value")))
    scale = math.sqrt(q.shape[0] // cfg.num_self_attention_heads)
    for i, ch in enumerate((y, x)):
        q[i, ch], q[i, zero] = 2 * VOTE * scale, -2 * VOTE * scale
        k[i, ch], k[i, zero] = 1.0, -1.0
        v[i, ch], v[i, zero] = 1.0, -1.0
    q[2, one] = -VOTE * scale
    k[2, sq], k[2, zero] = LATENT_STD, -LATENT_STD
    return dict(ey=ey, ex=ex, zero=zero)


def _identity_rest(p: dict[str, nn.Parameter], cfg, voted: dict[str, int]) -> None:
    for i in range(cfg.num_self_attends_per_block):
        s = f"perceiver.encoder.self_attends.{i}."
        _zero(*(p[s + name] for name in ("attention.output.dense.weight", "attention.output.dense.bias",
                                          "mlp.dense2.weight", "mlp.dense2.bias")))
    o = p["perceiver.encoder.self_attends.0.attention.output.dense.weight"]
    o[voted["ey"], 0], o[voted["ex"], 1] = 1.0, 1.0
    d = "perceiver.decoder.decoder.decoding_cross_attention."
    dv, do = p[d + "attention.self.value.weight"], p[d + "attention.output.dense.weight"]
    _zero(dv, do, *(p[d + name] for name in ("attention.self.query.weight", "attention.self.query.bias",
                                              "attention.self.value.bias", "attention.output.dense.bias",
                                              "mlp.dense2.weight", "mlp.dense2.bias")))
    for k, ch in enumerate((voted["ey"], voted["ex"])):
        dv[k, ch], dv[k, voted["zero"]] = 1.0, -1.0
        do[k, k] = 1.0


def _fit_final_layer(model: nn.Module, frames: torch.Tensor, shifts: torch.Tensor, flow_scale: float) -> None:
    """Least squares of the decoded vote (channel 0: y, 1: x) against the true shift, per axis."""
    final = model.perceiver.decoder.decoder.final_layer
    rescale = model.perceiver.decoder.rescale_factor
    with torch.no_grad():
        final.weight.zero_()
        final.bias.zero_()
        final.weight[0, 0] = final.weight[1, 1] = 1.0
        raw = (model(flow_patches(frames)) * rescale).mean(dim=(1, 2))  # (N, 2): vote y, vote x
        final.weight.zero_()
        for axis, channel in ((0, 1), (1, 0)):  # flow u from the x vote, v from the y vote
            design = torch.stack([raw[:, channel], torch.ones(len(raw))], dim=1)
            gain, offset = torch.linalg.lstsq(design, shifts[:, axis:axis + 1]).solution[:, 0]
            final.weight[axis, channel] = gain * rescale / flow_scale
            final.bias[axis] = offset * rescale / flow_scale


def matching_start(model: nn.Module, rng: np.random.Generator,
                   translations: Callable[[int], tuple[torch.Tensor, torch.Tensor]], flow_scale: float) -> None:
    """Set ``model`` (2 cross-attention heads) to the construction above; ``translations(n)`` gives
    ``n`` training pairs of pure shifts (frames ``(n, 2, H, W, 3)`` uint8, shifts ``(n, 2)`` px) to fit its output."""
    cfg = model.config
    if cfg.num_cross_attention_heads != 2:
        raise ValueError("the matching start needs num_cross_attention_heads = 2 (one head per frame)")
    p = dict(model.named_parameters())
    with torch.no_grad():
        _encoder_detectors(p, cfg, rng)
        _identity_rest(p, cfg, _vote(p, cfg, cfg.d_latents))
    model.eval()
    _fit_final_layer(model, *translations(48), flow_scale)
