"""Attention blocks of Perceiver IO: cross-attention (queries ← inputs) and latent self-attention.

Module and parameter names follow the Hugging Face checkpoint layout
(``attention.self.query``, ``attention.output.dense``, ``mlp.dense1`` …) so official weights
load with ``strict=True``. Attention itself always goes through
``scaled_dot_product_attention`` (see :func:`attend`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import PerceiverConfig

#: Above this many attention scores per call, :func:`attend` keeps to fused kernels that
#: never hold the whole score matrix (about 16 MB of float32 scores).
FUSED_SCORES_THRESHOLD = 1 << 22

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported hidden_act {name!r}; known: {sorted(_ACTIVATIONS)}") from None


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-head attention over ``(B, H, N, C)`` tensors; ``key_mask`` is ``(B, Nk)``, True = attend.

    Fused SDPA kernels (flash on CPU and CUDA) need queries/keys and values of one width.
    Perceiver often differs (the language model uses 32-wide keys and 160-wide values per
    head). Small problems use SDPA as is; large ones zero-pad the narrower side to the wider
    one, which leaves every dot product, and so the result, unchanged while keeping the
    fused, memory-bounded kernel.
    """
    qk_dim, v_dim = q.shape[-1], v.shape[-1]
    mask = None if key_mask is None else key_mask[:, None, None, :]
    scale = 1.0 / math.sqrt(qk_dim)
    scores = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
    if qk_dim == v_dim or scores <= FUSED_SCORES_THRESHOLD:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if qk_dim < v_dim:
        pad = (0, v_dim - qk_dim)
        return F.scaled_dot_product_attention(F.pad(q, pad), F.pad(k, pad), v, attn_mask=mask, scale=scale)
    out = F.scaled_dot_product_attention(q, k, F.pad(v, (0, qk_dim - v_dim)), attn_mask=mask, scale=scale)
    return out[..., :v_dim]


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
        self.query = nn.Linear(q_dim, qk_channels)
        self.key = nn.Linear(kv_dim, qk_channels)
        self.value = nn.Linear(kv_dim, v_channels)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, inputs: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.layernorm1(hidden)
        source = self.layernorm2(inputs) if self.is_cross else hidden
        q = self._heads(self.query(hidden))
        k = self._heads(self.key(source))
        v = self._heads(self.value(source))
        out = attend(q, k, v, key_mask)
        b, h, n, c = out.shape
        return out.transpose(1, 2).reshape(b, n, h * c)


class AttentionOutput(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


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
        out = self.output(self.self(hidden, inputs, key_mask))
        return out + hidden if self.use_query_residual else out


class MLP(nn.Module):
    def __init__(self, channels: int, widening_factor: int, hidden_act: str) -> None:
        super().__init__()
        self.dense1 = nn.Linear(channels, widening_factor * channels)
        self.dense2 = nn.Linear(widening_factor * channels, channels)
        self._act = activation(hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense2(self._act(self.dense1(x)))


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

    def forward(self, hidden: torch.Tensor, inputs: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.attention(hidden, inputs, key_mask)
        return hidden + self.mlp(self.layernorm(hidden))


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

    def forward(self, latents: torch.Tensor, inputs: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        z = self.cross_attention(latents, inputs, key_mask)
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
