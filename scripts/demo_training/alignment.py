"""Starting points for byte-level Perceivers: cross-attention that already looks at the right place.

A Perceiver's input cross-attention sees each byte only as LayerNorm(byte embedding + position
embedding), and a masked-LM decoder's queries are trainable position encodings that
cross-attend to the latents. From a small random start nothing ties latent ``i`` to any input
position, nor decoder query ``p`` to the latents that hold ``p``'s neighbourhood: every latent
reads a weighted bag of bytes and the fill-mask model stalled at letter frequencies (3.0 nats
a byte after 2,000 steps). Here both cross-attentions are first fitted, on their own, to attend
by position (latent ``i`` to the bytes around position ``i``, query ``p`` to the latents around
latent ``p``), so training starts from a model in which every byte reaches the latents and
every latent the decoder. Only the weights change: the checkpoint is a plain Perceiver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import generator


def _fit(parameters: list[nn.Parameter], steps: int, lr: float, loss_of) -> float:
    """Adam on ``parameters`` for ``steps`` steps of ``loss_of(step)``; the last loss."""
    optimiser = torch.optim.Adam(parameters, lr=lr)
    for step in range(steps):
        loss = loss_of(step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return float(loss.detach())


def _attention_logits(queries: torch.Tensor, keys: torch.Tensor, heads: int) -> torch.Tensor:
    """``(..., heads, Q, K)`` attention logits of ``queries (..., Q, C)`` against ``keys (..., K, C)``."""
    q = queries.unflatten(-1, (heads, -1)).transpose(-3, -2)
    k = keys.unflatten(-1, (heads, -1)).transpose(-3, -2)
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


def _places(count: int, offsets: Sequence[int], limit: int) -> torch.Tensor:
    """``(heads, count)``: head ``h`` of row ``i`` looks at ``i + offsets[h]``, within ``[0, limit)``."""
    return (torch.arange(count)[None, :] + torch.tensor(offsets)[:, None]).clamp(0, limit - 1)


def align_inputs(model: nn.Module, offsets: Sequence[int], *, seed: int, latent_std: float,
                 steps: int = 200, lr: float = 1e-2) -> None:
    """Head ``h`` of latent ``i`` attends to input position ``i + offsets[h]`` (position 0 is ``[CLS]``).

    Positions and bytes start in separate halves of the input channels, and the values read
    only the bytes' half: a latent holds the same bytes alike wherever they stand, so what is
    learnt about a word at one place holds at every other. The latents, the position table and
    the query/key projections are fitted on random bytes over every position of the table, so a
    longer text's bytes still land on the latent of their place. The latents are then scaled to
    ``latent_std``: they are also the cross-attention's residual, and keep telling the layers
    above where each latent stands.
    """
    body = model.perceiver
    embed, positions = body.input_preprocessor.embeddings, body.input_preprocessor.position_embeddings
    attention, latents = body.encoder.cross_attention.attention.self, body.embeddings.latents
    length, half = positions.num_embeddings, embed.embedding_dim // 2
    wanted = _places(latents.shape[0], offsets, length)  # (heads, latents)
    with torch.no_grad():
        embed.weight[:, :half] = 0
        positions.weight[:, half:] = 0
        attention.value.weight[:, :half] = 0
    random_bytes = generator(seed)

    def loss(_: int) -> torch.Tensor:
        ids = torch.randint(embed.num_embeddings, (length,), generator=random_bytes)
        source = attention.layernorm2(embed(ids) + positions.weight)
        logits = _attention_logits(attention.query(attention.layernorm1(latents)), attention.key(source),
                                   len(offsets))
        return F.cross_entropy(logits.reshape(-1, length), wanted.reshape(-1))

    _fit([latents, attention.query.weight, attention.key.weight, positions.weight], steps, lr, loss)
    with torch.no_grad():
        positions.weight[:, half:] = 0  # Adam's step on the zero half leaves it at zero; make sure
        latents.mul_(latent_std / latents.std())


def align_decoder(model: nn.Module, latents: torch.Tensor, offsets: Sequence[int], *,
                  steps: int = 200, lr: float = 1e-2, seed: int = 0) -> None:
    """Head ``h`` of the decoder query at position ``p`` attends to latent ``p + offsets[h]``.

    ``latents`` ``(B, N, C)`` are what the encoder makes of typical inputs; the decoder's
    position table (its first ``N`` rows) and query/key projections are fitted to them.
    """
    decoder = model.perceiver.decoder
    table = decoder.output_position_encodings.position_embeddings
    attention = decoder.decoding_cross_attention.attention.self
    count = latents.shape[1]
    wanted = _places(count, offsets, count)  # (heads, positions)
    keys_of = attention.layernorm2(latents.detach()).detach()
    rows = generator(seed)

    def loss(_: int) -> torch.Tensor:
        chosen = torch.randint(latents.shape[0], (16,), generator=rows)
        logits = _attention_logits(attention.query(attention.layernorm1(table[:count])),
                                   attention.key(keys_of[chosen]), len(offsets))  # (16, heads, N, N)
        return F.cross_entropy(logits.reshape(-1, count), wanted.expand(16, -1, -1).reshape(-1))

    _fit([table, attention.query.weight, attention.key.weight], steps, lr, loss)

