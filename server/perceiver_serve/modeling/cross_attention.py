"""Cheaper evaluation orders for single-head cross-attention, the bulk of Perceiver IO's work.

With one head, the projections on either side of the attention can be multiplied into the
other side, because softmax(s) has rows that sum to one and a score added to a whole row
changes nothing:

* **Inputs side** (the encoder: a few latents read a long input array). Instead of projecting
  every input to keys and values, ``q·(W_k x + b_k) = (W_kᵀ q)·x + const``: the latents' queries
  are mapped into the input space and attend to the normalised inputs themselves, and
  ``Σ p (W_v x + b_v) = W_v (Σ p x) + b_v``. Optical flow no longer holds two 182,528 × 322 key
  and value arrays, and the projections of every input are skipped.
* **Latents side** (the decoders: many queries read a few latents). Keys and values are mapped
  into the queries' space once per encoding, ``K̃ = K W_q`` and ``Ṽ = V W_oᵀ + b_o``, so each query
  costs ``Nk · (query width + output width)`` instead of two projections plus the attention.
  The result is remembered for the latents it came from, so decoding one encoding in many
  chunks prepares it once.
* **Padded queries** (multimodal): the decoder's queries are a few Fourier features followed by
  one learned padding vector (195 + 831 channels for video). Their layer norm only needs the
  features' sum and spread, so the scores come from the 195 feature channels alone.
* **Folded output projection**: a narrow linear map after the decoder's MLP (the final layer
  and postprocessor: 1026 → 512 → 3 for video pixels) is multiplied into the MLP's second
  layer, so per query only ``o`` and the MLP's hidden activation are projected, straight to the
  3 outputs.

Which order is used is decided per call by counting multiply-adds; the results agree with the
plain order to float32 rounding.

The functions take the blocks of :mod:`.attention` (an ``Attention``, a ``PerceiverLayer``)
typed as plain modules: that module calls into this one, so this one does not import it.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .kernels import attend, batched_linear, few_rows_matmul, linear, weight_matmul

#: Above this many scores per row chunk, explicitly computed scores are produced in row chunks.
SCORES_PER_CHUNK = 1 << 23


@dataclasses.dataclass
class PaddedQueries:
    """Queries ``cat([features, pad])``: per-query features, then one vector shared by all queries."""

    features: torch.Tensor  # (B or 1, N, F)
    pad: torch.Tensor  # (P,)
    batch_size: int

    @property
    def num_queries(self) -> int:
        return self.features.shape[1]

    def materialize(self) -> torch.Tensor:
        b, n = self.batch_size, self.num_queries
        features = self.features.expand(b, n, -1)
        return torch.cat([features, self.pad.to(features.dtype).expand(b, n, -1)], dim=-1)


Queries = torch.Tensor | PaddedQueries


# --- inputs side -------------------------------------------------------------------------------

def absorbs_inputs(attention: nn.Module, num_queries: int, num_inputs: int) -> bool:
    """Whether attending to the raw normalised inputs costs fewer multiply-adds than projecting them."""
    qkv = attention.self
    if not qkv.is_cross or qkv.num_heads != 1:
        return False
    qk, v, kv = qkv.query.out_features, qkv.value.out_features, qkv.key.in_features
    plain = num_inputs * kv * (qk + v) + num_queries * num_inputs * (qk + v)
    absorbed = num_queries * (qk * kv + 2 * num_inputs * kv + kv * v)
    return absorbed <= plain


def attend_inputs(attention: nn.Module, hidden: torch.Tensor, inputs: torch.Tensor,
                  key_mask: torch.Tensor | None) -> torch.Tensor:
    """``attention.output(attention.self(hidden, inputs))`` with the key and value projections absorbed."""
    qkv = attention.self
    query = qkv.query(qkv.layernorm1(hidden))
    query = weight_matmul(query, qkv.key.weight)  # into the inputs' space; q·b_k is constant per row
    source = qkv.layernorm2(inputs)[:, None]
    mixed = attend(query[:, None], source, source, key_mask, scale=qkv.query.out_features ** -0.5)
    return attention.output(qkv.value(mixed[:, 0]))


# --- latents side ------------------------------------------------------------------------------

@dataclasses.dataclass
class LatentState:
    """Keys and values of one encoding, already mapped into the decoder's query and output spaces."""

    keys: torch.Tensor  # (B, Nk, query width), scaled by 1/sqrt(qk width)
    key_bias: torch.Tensor  # (B, Nk), the query bias' share of every score
    values: torch.Tensor  # (B, Nk, output width), output bias included (attention rows sum to one)


def _per_query_cost(layer: nn.Module, num_latents: int, query_width: int) -> tuple[int, int, int]:
    qkv, out = layer.attention.self, layer.attention.output.dense
    qk, v, qd, qo = qkv.query.out_features, qkv.value.out_features, qkv.query.in_features, out.out_features
    plain = qd * qk + num_latents * (qk + v) + v * qo
    absorbed = num_latents * (query_width + qo)
    prepare = num_latents * (qk * qd + v * qo)
    return plain, absorbed, prepare


def prepared_latents(layer: nn.Module, queries: Queries, latents: torch.Tensor) -> LatentState | None:
    """The latents' :class:`LatentState` if decoding ``queries`` from it is cheaper, else None."""
    if layer.attention.self.num_heads != 1:
        return None
    width = queries.features.shape[-1] if isinstance(queries, PaddedQueries) else queries.shape[-1]
    plain, absorbed, prepare = _per_query_cost(layer, latents.shape[1], width)
    state = cached_state(layer, latents)
    if _num_queries(queries) * (plain - absorbed) <= (0 if state is not None else prepare):
        return None
    return state if state is not None else latent_state(layer, latents)


def _num_queries(queries: Queries) -> int:
    return queries.num_queries if isinstance(queries, PaddedQueries) else queries.shape[1]


def cached_state(layer: nn.Module, latents: torch.Tensor) -> LatentState | None:
    memo = layer.latent_memo
    if memo is None:
        return None
    seen, versions, state = memo
    same = (seen.shape == latents.shape and seen.dtype == latents.dtype and seen.device == latents.device
            and versions == _versions(layer) and torch.equal(seen, latents))
    return state if same else None


def _versions(layer: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in layer.parameters())


def latent_state(layer: nn.Module, latents: torch.Tensor) -> LatentState:
    """The latents' keys and values in query and output space, remembered for the last latents seen.

    The memo compares values, not identity, so a server that stacks the same latents anew for
    every chunk still prepares them once; it holds a copy of those latents (a few MB).
    """
    qkv, out = layer.attention.self, layer.attention.output.dense
    source = qkv.layernorm2(latents)
    keys, values = qkv.key(source), qkv.value(source)
    scale = qkv.query.out_features ** -0.5
    state = LatentState(
        keys=weight_matmul(keys, qkv.query.weight) * scale,
        key_bias=torch.matmul(keys, qkv.query.bias) * scale,
        values=linear(values, out.weight, out.bias),
    )
    layer.latent_memo = (latents.clone(), _versions(layer), state)
    return state


def _padded_scores(layer: nn.Module, queries: PaddedQueries, state: LatentState) -> torch.Tensor:
    """``layernorm1(cat([f, pad])) @ K̃ᵀ + key bias`` from the feature channels and the pad's statistics.

    With ``m``, ``r`` a query's mean and inverse deviation over all channels, the scores are
    ``r · (f·(γ_f ⊙ K̃_f) + pad·(γ_p ⊙ K̃_p) − m · γ·K̃) + β·K̃ + bias``: one product of
    ``r · [f, 1, −m]`` with ``[γ_f ⊙ K̃_f, pad term, γ term]`` per key.
    """
    norm = layer.attention.self.layernorm1
    gamma, beta = norm.weight, norm.bias
    f, pad = queries.features, queries.pad.to(state.keys.dtype)
    n_f, n = f.shape[-1], norm.normalized_shape[0]
    n_p = n - n_f
    # Statistics of cat([f, pad]) per query in float32, merged from the two parts' (no cancellation).
    var_f, mean_f = torch.var_mean(f.float(), dim=-1, correction=0)
    var_p, mean_p = torch.var_mean(pad.float(), correction=0)
    mean = (n_f * mean_f + n_p * mean_p) / n
    var = (n_f * var_f + n_p * var_p + n_f * n_p / n * (mean_f - mean_p).square()) / n
    inv_std = torch.rsqrt(var + norm.eps)[..., None]
    query_side = torch.cat([f.float(), torch.ones_like(inv_std), -mean[..., None]], dim=-1).mul_(inv_std)
    keys = state.keys
    pad_term = torch.matmul(keys[..., n_f:], gamma[n_f:] * pad)
    key_side = torch.cat([keys[..., :n_f] * gamma[:n_f], pad_term[..., None], torch.matmul(keys, gamma)[..., None]],
                         dim=-1)
    return batched_linear(query_side.to(f.dtype), key_side, torch.matmul(keys, beta) + state.key_bias)


def attend_latents(layer: nn.Module, queries: Queries, state: LatentState) -> torch.Tensor:
    """The attention block's output ``(B, Nq, query width)``, from prepared latents."""
    attention = layer.attention
    if isinstance(queries, PaddedQueries):
        weights = torch.softmax(_padded_scores(layer, queries, state), dim=-1)
        out = batched_linear(weights, state.values.transpose(1, 2))
    else:
        normed = attention.self.layernorm1(queries)[:, None]
        out = attend(normed, state.keys[:, None], state.values[:, None], scale=1.0, key_bias=state.key_bias)[:, 0]
    if attention.use_query_residual:
        out = out + (queries.materialize() if isinstance(queries, PaddedQueries) else queries)
    return out


def row_chunks(queries: Queries, num_latents: int) -> list[Queries]:
    """Split queries so that explicitly computed scores stay under ``SCORES_PER_CHUNK`` per chunk."""
    if not isinstance(queries, PaddedQueries):
        return [queries]  # fused attention: the scores are never held
    rows = max(1, SCORES_PER_CHUNK // (num_latents * queries.batch_size))
    return [PaddedQueries(queries.features[:, s:s + rows], queries.pad, queries.batch_size)
            for s in range(0, max(queries.num_queries, 1), rows)]


# --- output projection -------------------------------------------------------------------------

def mlp_then_project(layer: nn.Module, hidden: torch.Tensor,
           projection: tuple[torch.Tensor, torch.Tensor | None] | None) -> torch.Tensor:
    """The layer's residual MLP, then ``projection`` (weight, bias) if given, folded in where cheaper."""
    if projection is None:
        return hidden + layer.mlp(layer.layernorm(hidden))
    weight, bias = projection
    out, width = weight.shape
    if hidden[..., 0].numel() * (width - out) <= out * width:
        return linear(hidden + layer.mlp(layer.layernorm(hidden)), weight, bias)
    mlp = layer.mlp
    inner = mlp.hidden(layer.layernorm(hidden))
    folded_bias = torch.mv(weight, mlp.dense2.bias) + (0 if bias is None else bias)
    return linear(hidden, weight, folded_bias) + linear(inner, few_rows_matmul(weight, mlp.dense2.weight))
