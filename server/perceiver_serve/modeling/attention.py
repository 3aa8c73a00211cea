"""Attention blocks of Perceiver IO: cross-attention (queries ← inputs) and latent self-attention.

Module and parameter names follow the Hugging Face checkpoint layout
(``attention.self.query``, ``attention.output.dense``, ``mlp.dense1`` …) so official weights
load with ``strict=True``. Attention itself always goes through
``scaled_dot_product_attention`` (see :func:`attend`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import cross_attention, kernels
from .config import PerceiverConfig
from .cross_attention import LatentState, Queries
from .chunking import halving_parts
from .kernels import ONEDNN_MAX_BATCH, Activation, Linear, attend, launch_bound, pack_in_place, packed_group_items
from .precision import Int8Weight, int8_linear, int8_twin

_GELU_TANH = Activation(lambda x: F.gelu(x, approximate="tanh"), ("gelu", "tanh"))
_SILU = Activation(F.silu)
_ACTIVATIONS = {
    "gelu": Activation(F.gelu, ("gelu", "none")),
    "gelu_new": _GELU_TANH,
    "gelu_pytorch_tanh": _GELU_TANH,
    "gelu_fast": _GELU_TANH,
    "relu": Activation(F.relu, ("relu", "")),
    "silu": _SILU,
    "swish": _SILU,
}


def activation(name: str) -> Activation:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported hidden_act {name!r}; known: {sorted(_ACTIVATIONS)}") from None


class QKVAttention(nn.Module):
    """Layer norms, Q/K/V projections and multi-head attention (HF: ``PerceiverSelfAttention``)."""

    def __init__(
        self, *, q_dim: int, kv_dim: int, qk_channels: int, v_channels: int, num_heads: int, is_cross: bool
    ) -> None:
        super().__init__()
        if qk_channels % num_heads or v_channels % num_heads:
            raise ValueError(
                f"qk_channels ({qk_channels}) and v_channels ({v_channels}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.is_cross = is_cross
        self.layernorm1 = nn.LayerNorm(q_dim)
        self.layernorm2 = nn.LayerNorm(kv_dim) if is_cross else nn.Identity()
        self.query = Linear(q_dim, qk_channels)
        self.key = Linear(kv_dim, qk_channels)
        self.value = Linear(kv_dim, v_channels)
        #: Self-attention in int8: the three projections as one int8 weight (see :meth:`fuse_int8`).
        self.qkv_int8: Int8Weight | None = None
        #: Self-attention in bf16 on a CPU: the three projections as one packed weight and its bias (see
        #: :meth:`fuse_packed`).
        self.qkv_packed: tuple[torch.Tensor, torch.Tensor] | None = None
        #: Queries computed from a learned array, by kind (see :func:`.cross_attention.fixed_queries`).
        self.query_memo: dict[str, tuple] = {}
        #: The dtype attention is computed in, if not its inputs' (an int8 model's: see
        #: :func:`.kernels.bf16_attention_pays`).
        self.attention_dtype: torch.dtype | None = None

    def fuse_int8(self) -> bool:
        """Self-attention of an int8 model: multiply by ``[W_q; W_k; W_v]`` in one int8 product, whose
        shared input is quantized once instead of three times; the three layers then need no int8 twins
        of their own (nothing else multiplies by a self-attention's weights). On one Zen 4 core the
        published MLM's projections (256 × 1280 → 256 + 256 + 1280) take 2.86 ms against 3.04, the
        mid-size text classifier's (512 × 512 → 256 + 256 + 512) 1.40 against 1.53. Returns whether it
        fused (cross-attentions don't: their keys and values read the inputs)."""
        if self.is_cross:
            return False
        layers = (self.query, self.key, self.value)
        biases = [layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
                  for layer in layers]
        self.qkv_int8 = int8_twin(torch.cat([layer.weight for layer in layers]), torch.cat(biases))
        return True

    def fuse_packed(self) -> bool:
        """Self-attention of a bf16 CPU model: multiply by ``[W_q; W_k; W_v]`` as one weight packed for
        oneDNN (:func:`~.kernels.pack_in_place`), which replaces the three (no second copy; the three
        layers can't be called after). Their narrow products use the CPU poorly: on an AMX Xeon (two
        threads, 26 distinct weights read from memory as in a pass) the published MLM's 256 × 1280 →
        256 + 256 + 1280 took 600–655 µs as one product against 872–924 as three. (In float32 one product
        measured the same as three, so float32 models keep theirs.) Call it before the packing, once the
        model is placed and converted. Returns whether it fused (cross-attentions don't: their keys and
        values read the inputs)."""
        layers = (self.query, self.key, self.value)
        if self.is_cross or any(layer.weight.dtype != torch.bfloat16 or layer.weight.is_mkldnn for layer in layers):
            return False
        with torch.device("meta"):
            fused = Linear(self.query.in_features, sum(layer.out_features for layer in layers))
        biases = [layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
                  for layer in layers]
        fused.weight = nn.Parameter(torch.cat([layer.weight for layer in layers]), requires_grad=False)
        fused.bias = nn.Parameter(torch.cat(biases), requires_grad=False)
        fused.onednn_max_rows, fused.item_rows = self.query.onednn_max_rows, self.query.item_rows
        if not pack_in_place(fused):
            return False
        self.qkv_packed = (fused.weight, fused.bias)
        for layer in layers:
            layer.weight = nn.Parameter(layer.weight.new_zeros(()).expand(layer.weight.shape), requires_grad=False)
            layer.fused = True
        return True

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, inputs: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (inputs is not None and key_mask is not None and hidden.shape[0] == inputs.shape[0]
                and (lengths := kernels.packable_lengths(inputs, key_mask))):
            return self._forward_packed(hidden, inputs, lengths)
        if self.is_cross:
            source = self.layernorm2(inputs)
            q, k, v = map(self._heads, (self.queries(hidden), self.key(source), self.value(source)))
        else:
            hidden = self.layernorm1(hidden)
            q, k, v = map(self._heads, self._project(hidden, hidden))
        out = attend(q, k, v, key_mask, compute_dtype=self.attention_dtype)
        b, h, n, c = out.shape
        return out.transpose(1, 2).reshape(b, n, h * c)

    def queries(self, hidden: torch.Tensor) -> torch.Tensor:
        """``query(layernorm1(hidden))``; once per model where ``hidden`` is a learned array (the latents, a
        decoder's learned queries: see :func:`.cross_attention.fixed_queries`)."""
        return cross_attention.fixed_queries(self, "projected", hidden, lambda h: self.query(self.layernorm1(h)))

    def _project(self, hidden: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries from ``hidden``, keys and values from ``source`` (the same tensor in self-attention),
        both already normalised."""
        widths = (self.query.out_features, self.key.out_features, self.value.out_features)
        if self.qkv_int8 is not None and not hidden.requires_grad:
            return int8_linear(hidden, self.qkv_int8, self.qkv_int8.bias).split(widths, -1)
        if self.qkv_packed is not None:
            weight, bias = self.qkv_packed
            return kernels.linear(hidden, weight, bias, onednn_max_rows=self.query.onednn_max_rows).split(widths, -1)
        return self.query(hidden), self.key(source), self.value(source)

    def _forward_packed(self, hidden: torch.Tensor, inputs: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """:meth:`forward` for inputs padded at the end (``lengths`` real rows each): only the real rows
        are normalised and projected, and each item attends to its own keys without a mask. Equal to the
        masked form (masked keys get no weight), without the padding's work: for texts of 50 to 400 bytes
        in one batch about 45% of the input rows."""
        q = self._heads(self.queries(hidden))
        real = torch.cat([item[:n] for item, n in zip(inputs, lengths)]) if len(lengths) > 1 else inputs[0, :lengths[0]]
        source = self.layernorm2(real)
        keys, values = self.key(source).split(lengths), self.value(source).split(lengths)
        out = torch.cat([attend(q[i:i + 1], self._heads(k[None]), self._heads(v[None]), compute_dtype=self.attention_dtype)
                         for i, (k, v) in enumerate(zip(keys, values))])
        b, h, n, c = out.shape
        return out.transpose(1, 2).reshape(b, n, h * c)


class AttentionOutput(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.dense = Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.dense(x, residual=residual)


class Attention(nn.Module):
    """Attention plus output projection and optional query residual (HF: ``PerceiverAttention``)."""

    def __init__(self, *, q_dim: int, kv_dim: int, qk_channels: int, v_channels: int, num_heads: int,
                 is_cross: bool, use_query_residual: bool) -> None:
        super().__init__()
        self.self = QKVAttention(
            q_dim=q_dim, kv_dim=kv_dim, qk_channels=qk_channels, v_channels=v_channels,
            num_heads=num_heads, is_cross=is_cross,
        )
        self.output = AttentionOutput(v_channels, q_dim if is_cross else v_channels)
        self.use_query_residual = use_query_residual

    def forward(self, hidden: torch.Tensor, inputs: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if inputs is not None and cross_attention.absorbs_inputs(self, hidden.shape[1], inputs.shape[1]):
            out = cross_attention.attend_inputs(self, hidden, inputs, key_mask)
            return out + hidden if self.use_query_residual else out
        # The residual, if any, is added by the output product (oneDNN's post-op where that pays: kernels.linear).
        return self.output(self.self(hidden, inputs, key_mask), residual=hidden if self.use_query_residual else None)


class MLP(nn.Module):
    def __init__(self, channels: int, widening_factor: int, hidden_act: str) -> None:
        super().__init__()
        self.dense1 = Linear(channels, widening_factor * channels)
        self.dense2 = Linear(widening_factor * channels, channels)
        self._act = activation(hidden_act)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense1(x, self._act)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.dense2(self.hidden(x), residual=residual)


class PerceiverLayer(nn.Module):
    """Attention block followed by a residual MLP block."""

    def __init__(
        self,
        config: PerceiverConfig,
        *,
        is_cross: bool,
        q_dim: int,
        kv_dim: int,
        num_heads: int,
        widening_factor: int,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        use_query_residual: bool = True,
    ) -> None:
        super().__init__()
        # Channel defaults, as in the reference: a cross-attention without explicit widths
        # projects queries and keys to the width named by cross_attention_shape_for_attention.
        if is_cross and qk_channels is None:
            qk_channels = q_dim if config.cross_attention_shape_for_attention == "q" else kv_dim
        qk_channels = qk_channels or q_dim
        v_channels = v_channels or qk_channels
        self.attention = Attention(
            q_dim=q_dim, kv_dim=kv_dim, qk_channels=qk_channels, v_channels=v_channels,
            num_heads=num_heads, is_cross=is_cross, use_query_residual=use_query_residual,
        )
        self.layernorm = nn.LayerNorm(q_dim)
        self.mlp = MLP(q_dim, widening_factor, config.hidden_act)
        #: (latents, their version, parameter versions, prepared state) of the last :meth:`decode`
        #: (see cross_attention.cached_state).
        self.latent_memo: tuple[torch.Tensor, int | None, tuple, LatentState] | None = None

    def forward(self, hidden: torch.Tensor, inputs: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.attention(hidden, inputs, key_mask)
        return self.mlp(self.layernorm(hidden), residual=hidden)

    def decode(self, queries: Queries, latents: torch.Tensor,
               projection: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Many ``queries`` read ``latents`` (a decoder), then the optional linear ``projection`` (weight, bias).

        Equals ``linear(self(queries, latents), *projection)``, in whichever evaluation order
        costs least (see :mod:`.cross_attention`).
        """
        rows = latents.shape[0] * cross_attention.count_queries(queries)
        out_map = cross_attention.output_map(self, projection, rows)
        state = cross_attention.prepared_latents(self, queries, latents)
        if state is not None:
            return cross_attention.decode_prepared(self, queries, state, out_map)
        if isinstance(queries, cross_attention.PaddedQueries):
            queries = queries.materialize()
        return cross_attention.mlp_then_project(self, self.attention(queries, latents), out_map)


class PerceiverEncoder(nn.Module):
    """Cross-attend latents to the inputs once, then run the latent self-attention stack."""

    def __init__(self, config: PerceiverConfig, kv_dim: int) -> None:
        super().__init__()
        self.num_blocks = config.num_blocks
        self.cross_attention = PerceiverLayer(
            config, is_cross=True, q_dim=config.d_latents, kv_dim=kv_dim,
            num_heads=config.num_cross_attention_heads, widening_factor=config.cross_attention_widening_factor,
            qk_channels=config.qk_channels, v_channels=config.v_channels,
            use_query_residual=config.use_query_residual,
        )
        self.self_attends = nn.ModuleList(
            PerceiverLayer(
                config, is_cross=False, q_dim=config.d_latents, kv_dim=config.d_latents,
                num_heads=config.num_self_attention_heads, widening_factor=config.self_attention_widening_factor,
                qk_channels=config.qk_channels, v_channels=config.v_channels,
            )
            for _ in range(config.num_self_attends_per_block)
        )
        # Latent-side products have batch × num_latents rows, whatever the inputs: few shapes,
        # so small batches may take oneDNN's kernels (see kernels.py). The cross-attention's
        # keys and values read the inputs and stay on F.linear.
        cross = self.cross_attention
        latent_side = [*self.self_attends.modules(), cross.attention.self.query, *cross.attention.output.modules(),
                       *cross.mlp.modules()]
        self._latent_side = [m for m in latent_side if isinstance(m, Linear)]
        self.num_latents = config.num_latents
        self._group(ONEDNN_MAX_BATCH)
        for module in self._latent_side:
            module.item_rows = config.num_latents

    def _group(self, items: int) -> None:
        """Run the latent stack on a CPU in groups of ``items`` (see :meth:`forward`), and its products
        at the row counts of such groups."""
        self.group_items = items
        for module in self._latent_side:
            module.onednn_max_rows = items * self.num_latents

    def pack_latent_weights(self) -> int:
        """Pack the self-attention layers' weights in place for oneDNN (:func:`kernels.pack_in_place`):
        nothing else reads them (the cross-attention's are read directly too, and stay plain). In bf16 each
        layer's query, key and value weights become one (:meth:`QKVAttention.fuse_packed`).
        Returns how many were packed.

        Packed weights also take bigger groups of a batch (:func:`~.kernels.packed_group_items`:
        up to 16 items of at most 2,048 rows, instead of :data:`~.kernels.ONEDNN_MAX_BATCH`)."""
        packed = sum(layer.attention.self.fuse_packed() for layer in self.self_attends)
        packed += sum(pack_in_place(m) for m in self.self_attends.modules() if isinstance(m, Linear) and not m.fused)
        if packed:
            self._group(packed_group_items(self.num_latents))
        return packed

    def group_for_compiling(self) -> None:
        """Latent products in the parts packed weights take (:func:`~.kernels.packed_group_items`), for an
        encoder about to be compiled (``compile = true``), whose weights stay plain. A compiled graph runs a
        batch's latent stack whole, and each latent product cuts its rows into parts of ``onednn_max_rows``
        whose outputs are copied into one: in groups of :data:`~.kernels.ONEDNN_MAX_BATCH` items a batch of
        16 texts made 4 parts and 3 copies a product. On an AVX2 EPYC (family 25, two threads; A/B in one
        process, four rounds) the compiled mid-size classifier went from 27.6–29.9 to 30.4–32.4 texts/s at
        batch 16 (1.02–1.12× round by round; eager 31.8–34.2), the same answers; with a test run sharing the
        two cores, where the copies cost most, from 4.1–4.9 to 6.6–7.7."""
        self._group(packed_group_items(self.num_latents))

    def forward(self, latents: torch.Tensor, inputs: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        z = self.cross_attention(latents, inputs, key_mask)
        groups = halving_parts(z.shape[0], self.group_items)
        if len(groups) <= 1 or launch_bound(z.device) or torch.compiler.is_compiling():
            return self._self_attend(z)
        # On a CPU a batch runs the latent stack in groups of group_items, half of it, a quarter …
        # (13 = 8 + 4 + 1): every product keeps one of a few shapes oneDNN has kernels for (kernels.py).
        return torch.cat([self._self_attend(group) for group in z.split(groups)])

    def _self_attend(self, z: torch.Tensor) -> torch.Tensor:
        for _ in range(self.num_blocks):
            for layer in self.self_attends:
                z = layer(z)
        return z


class Latents(nn.Module):
    """The learned initial latent array (HF: ``PerceiverEmbeddings``)."""

    def __init__(self, num_latents: int, channels: int) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(num_latents, channels))

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.latents.expand(batch_size, -1, -1)
