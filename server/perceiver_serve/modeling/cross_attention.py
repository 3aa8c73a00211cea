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
  The result is remembered for the latents tensor it came from, so decoding one encoding in
  many chunks prepares it once.
* **Padded queries** (multimodal): the decoder's queries are a few Fourier features followed by
  one learned padding vector (195 + 831 channels for video). Their layer norm only needs the
  features' sum and spread, so the scores come from the 195 feature channels alone.
* **Folded output projection**: a narrow linear map after the decoder's MLP (the final layer
  and postprocessor: 1026 → 512 → 3 for video pixels) is multiplied into the MLP's second
  layer, so per query only ``o`` and the MLP's hidden activation are projected, straight to the
  3 outputs.

Which order is used is decided per call by counting multiply-adds; the results agree with the
plain order to float32 rounding. Whatever depends only on the latents and the weights (prepared
keys, folded projections) is computed once per call, not per row chunk; on accelerators
(:func:`~.kernels.launch_bound`) a chunk is one batched operation per step, whatever the batch
size, and chunks are large, so a decode chunk costs about a hundred kernel launches, not thousands.

The functions take the blocks of :mod:`.attention` (an ``Attention``, a ``PerceiverLayer``)
typed as plain modules: that module calls into this one, so this one does not import it.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .kernels import (
    attend,
    batched_linear,
    few_rows_matmul,
    launch_bound,
    linear,
    same_form,
    tensor_form,
    tensor_version,
    weight_matmul,
)
from .precision import int8_of

#: Explicitly computed scores are produced in row chunks of at most this many scores: on a CPU,
#: what its caches hold; on accelerators, enough work per launch that a 50,176-pixel video chunk
#: (a window in 16) at batch 8 is one piece (2 GiB of float32 scores).
CPU_SCORES_PER_CHUNK = 1 << 23
DEVICE_SCORES_PER_CHUNK = 1 << 29


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
    # Into the inputs' space (q·b_k is constant per row, so dropped); once per model for the latent array.
    query = fixed_queries(qkv, "absorbed", hidden, lambda h: weight_matmul(qkv.queries(h), qkv.key.weight))
    source = qkv.layernorm2(inputs)[:, None]
    mixed = attend(query[:, None], source, source, key_mask, scale=qkv.query.out_features ** -0.5,
                   compute_dtype=qkv.attention_dtype)
    return attention.output(qkv.value(mixed[:, 0]))


# --- queries from a learned array ---------------------------------------------------------------

def learned_array(x: torch.Tensor) -> nn.Parameter | None:
    """The ``(N, C)`` parameter that ``x`` ``(B, N, C)`` repeats for every batch item without a copy (the
    latent array, a decoder's learned queries: ``expand``-ed views), or None."""
    base = x._base
    if (not isinstance(base, nn.Parameter) or base.ndim != 2 or x.ndim != 3 or x.shape[1:] != base.shape
            or x.stride()[1:] != base.stride() or x.data_ptr() != base.data_ptr()
            or (x.shape[0] > 1 and x.stride(0) != 0)):
        return None
    return base


def fixed_queries(module: nn.Module, kind: str, hidden: torch.Tensor, compute) -> torch.Tensor:
    """``compute(hidden)``, for a ``hidden`` that is a :func:`learned_array`: computed for one batch item,
    remembered in ``module.query_memo[kind]`` while that array and the module's parameters keep their
    form (:func:`.kernels.tensor_form`: an int8 conversion, a new dtype or device, or a change in place computes them
    afresh), and expanded to the batch. Such queries are the same for every request: the latents'
    projection into the inputs' space (the encoder) and the published MLM's 2,048 × 768 → 256 query
    projection (its decoder, ~8 ms of a 1.2 s pass on one core) are then computed once per model.

    Anything else, with gradients, or inside ``torch.compile``, is computed as it comes."""
    base = None if torch.is_grad_enabled() or torch.compiler.is_compiling() else learned_array(hidden)
    if base is None:
        return compute(hidden)
    form = tensor_form([base, *module.parameters()])
    memo = module.query_memo.get(kind)
    if memo is None or memo[0] is not base or not same_form(memo[1], form):
        memo = module.query_memo[kind] = (base, form, compute(hidden[:1]))
    out = memo[2]
    return out.expand(hidden.shape[0], *out.shape[1:])


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
    if count_queries(queries) * (plain - absorbed) <= (0 if state is not None else prepare):
        return None
    return state if state is not None else latent_state(layer, latents)


def count_queries(queries: Queries) -> int:
    return queries.num_queries if isinstance(queries, PaddedQueries) else queries.shape[1]


def cached_state(layer: nn.Module, latents: torch.Tensor) -> LatentState | None:
    """The state last prepared by ``layer`` if it came from this very ``latents`` tensor, unchanged.

    Identity, version counters and the layer's parameters' form (:func:`.kernels.tensor_form`), never values: comparing values on a GPU waits for the device
    (11 times per flow ``decode_all``). Inference tensors keep no version counter, so one
    changed in place inside ``inference_mode`` after a decode is taken as unchanged; decode new
    latents from a new tensor (as every head and the server do).
    """
    memo = layer.latent_memo
    if memo is None:
        return None
    seen, version, params, state = memo
    same = seen is latents and version == tensor_version(latents) and same_form(params, tensor_form([*layer.parameters()]))
    return state if same else None


def latent_state(layer: nn.Module, latents: torch.Tensor) -> LatentState:
    """The latents' keys and values in query and output space, remembered for the last latents seen
    (the memo holds that tensor, so its identity cannot pass to another while remembered)."""
    qkv, out = layer.attention.self, layer.attention.output.dense
    source = qkv.layernorm2(latents)
    keys, values = qkv.key(source), qkv.value(source)
    scale = qkv.query.out_features ** -0.5
    state = LatentState(
        keys=weight_matmul(keys, qkv.query.weight) * scale,
        key_bias=torch.matmul(keys, qkv.query.bias) * scale,
        values=linear(values, out.weight, out.bias),
    )
    layer.latent_memo = (latents, tensor_version(latents), tensor_form([*layer.parameters()]), state)
    return state


@dataclasses.dataclass
class PaddedKeys:
    """The keys' side of the scores of :class:`PaddedQueries` (see :func:`padded_keys`)."""

    keys: torch.Tensor  # (B, Nk, F + 2): γ_f ⊙ K̃_f, the pad's term, the γ term
    bias: torch.Tensor  # (B, Nk): β·K̃ + key bias


def padded_keys(layer: nn.Module, queries: PaddedQueries, state: LatentState) -> PaddedKeys:
    """With ``m``, ``r`` a query's mean and inverse deviation over all channels of ``cat([f, pad])``,
    ``layernorm1(cat([f, pad])) @ K̃ᵀ + key bias`` is ``r · (f·(γ_f ⊙ K̃_f) + pad·(γ_p ⊙ K̃_p) − m · γ·K̃)
    + β·K̃ + bias``: one product of ``r · [f, 1, −m]`` (per query) with these keys (once per call)."""
    norm = layer.attention.self.layernorm1
    gamma, beta = norm.weight, norm.bias
    n_f, keys = queries.features.shape[-1], state.keys
    pad_term = torch.matmul(keys[..., n_f:], gamma[n_f:] * queries.pad.to(keys.dtype))
    side = torch.cat([keys[..., :n_f] * gamma[:n_f], pad_term[..., None], torch.matmul(keys, gamma)[..., None]],
                     dim=-1)
    return PaddedKeys(side, torch.matmul(keys, beta) + state.key_bias)


def _padded_scores(layer: nn.Module, queries: PaddedQueries, keys: PaddedKeys) -> torch.Tensor:
    """``layernorm1(cat([f, pad])) @ K̃ᵀ + key bias`` from the feature channels and the pad's statistics."""
    norm = layer.attention.self.layernorm1
    f, pad = queries.features, queries.pad
    n_f, n = f.shape[-1], norm.normalized_shape[0]
    n_p = n - n_f
    # Statistics of cat([f, pad]) per query in float32, merged from the two parts' (no cancellation).
    var_f, mean_f = torch.var_mean(f.float(), dim=-1, correction=0)
    var_p, mean_p = torch.var_mean(pad.float(), correction=0)
    mean = (n_f * mean_f + n_p * mean_p) / n
    var = (n_f * var_f + n_p * var_p + n_f * n_p / n * (mean_f - mean_p).square()) / n
    inv_std = torch.rsqrt(var + norm.eps)[..., None]
    query_side = torch.cat([f.float(), torch.ones_like(inv_std), -mean[..., None]], dim=-1).mul_(inv_std)
    return batched_linear(query_side.to(f.dtype), keys.keys, keys.bias)


def attend_latents(layer: nn.Module, queries: Queries, state: LatentState,
                   keys: PaddedKeys | None = None) -> torch.Tensor:
    """The attention block's output ``(B, Nq, query width)``, from prepared latents (and, for
    :class:`PaddedQueries`, the :func:`padded_keys` of those latents)."""
    attention = layer.attention
    if isinstance(queries, PaddedQueries):
        weights = torch.softmax(_padded_scores(layer, queries, keys or padded_keys(layer, queries, state)), dim=-1)
        out = batched_linear(weights, state.values.transpose(1, 2))
    else:
        normed = attention.self.layernorm1(queries)[:, None]
        out = attend(normed, state.keys[:, None], state.values[:, None], scale=1.0, key_bias=state.key_bias,
                     compute_dtype=attention.self.attention_dtype)[:, 0]
    if attention.use_query_residual:
        out = out + (queries.materialize() if isinstance(queries, PaddedQueries) else queries)
    return out


def row_chunks(queries: Queries, num_latents: int, device: torch.device) -> list[Queries]:
    """Split queries so that explicitly computed scores stay within a chunk's share on ``device``."""
    if not isinstance(queries, PaddedQueries):
        return [queries]  # fused attention: the scores are never held
    budget = DEVICE_SCORES_PER_CHUNK if launch_bound(device) else CPU_SCORES_PER_CHUNK
    rows = max(1, budget // (num_latents * queries.batch_size))
    return [PaddedQueries(queries.features[:, s:s + rows], queries.pad, queries.batch_size)
            for s in range(0, max(queries.num_queries, 1), rows)]


def decode_prepared(layer: nn.Module, queries: Queries, state: LatentState,
                    projection: OutputMap | None) -> torch.Tensor:
    """``layer.decode`` from prepared latents: keys once, then the queries in row chunks."""
    keys = padded_keys(layer, queries, state) if isinstance(queries, PaddedQueries) else None
    parts = [mlp_then_project(layer, attend_latents(layer, chunk, state, keys), projection)
             for chunk in row_chunks(queries, state.keys.shape[1], state.keys.device)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


# --- output projection -------------------------------------------------------------------------

#: About how many times fewer a CPU's int8 products cost per multiply than float32 ones (see output_map).
INT8_GAIN = 4


@dataclasses.dataclass
class OutputMap:
    """A linear map after the decoder's MLP, and (when cheaper) that map multiplied into the MLP's
    second layer: ``(weight · W₂, weight · b₂ + bias)``, computed once per decode call."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    folded: tuple[torch.Tensor, torch.Tensor] | None = None


def output_map(layer: nn.Module, projection: tuple[torch.Tensor, torch.Tensor | None] | None,
               rows: int) -> OutputMap | None:
    """``projection`` (weight, bias), folded into the layer's MLP if that costs less for ``rows`` queries.

    In an int8 model the folded weight, made per call, has no int8 twin: its product runs in float32,
    at about :data:`INT8_GAIN` times an int8 product's cost per multiply, in place of the MLP's second
    int8 product. So an int8 projection at least ``1 / INT8_GAIN`` as wide as its input stays apart
    (the published MLM-2048's 262-wide byte projection: two float32 products of 2,048 × 768 × 262 took
    about 10 ms of a 217 ms int8 pass on one Xeon core, 210 ms unfolded), and a narrow one (optical
    flow's 2-wide) is folded, cheaper either way and closer to float32."""
    if projection is None:
        return None
    weight, bias = projection
    out, width = weight.shape
    if rows * (width - out) <= out * width or (int8_of(weight) is not None and INT8_GAIN * out >= width):
        return OutputMap(weight, bias)
    dense2 = layer.mlp.dense2
    folded_bias = torch.mv(weight, dense2.bias) + (0 if bias is None else bias)
    return OutputMap(weight, bias, (few_rows_matmul(weight, dense2.weight), folded_bias))


def mlp_then_project(layer: nn.Module, hidden: torch.Tensor, projection: OutputMap | None) -> torch.Tensor:
    """The layer's residual MLP, then ``projection`` if given (through its folded form if it has one)."""
    if projection is None:
        return hidden + layer.mlp(layer.layernorm(hidden))
    if projection.folded is None:
        return linear(hidden + layer.mlp(layer.layernorm(hidden)), projection.weight, projection.bias)
    weight, bias = projection.folded
    inner = layer.mlp.hidden(layer.layernorm(hidden))
    return linear(hidden, projection.weight, bias) + linear(inner, weight)
