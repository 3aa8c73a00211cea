"""What every demo-model trainer shares: seeding, the training loop, and writing a model folder.

A trained model is written exactly like a downloaded one: ``checkpoint/config.json`` (sorted
keys, labels in ``id2label``) and ``checkpoint/model.safetensors`` in Hugging Face layout, next
to its ``model.toml`` and a model card (``README.md``) filled with the figures measured on
held-out data in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from perceiver_serve.modeling import ARCHITECTURES, PerceiverConfig

#: ``initializer_range`` of ``transformers.PerceiverConfig``.
INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How one training run goes: ``quick`` runs a few steps on a sliver of the data (tests)."""

    seed: int = 0
    quick: bool = False
    threads: int = 1

    def steps(self, full: int) -> int:
        return 3 if self.quick else full


@dataclasses.dataclass
class Trained:
    """A trained model with what its folder needs: serving settings and the card's figures."""

    model: nn.Module
    task: str
    batching: dict[str, int]
    options: dict[str, int]
    card: str  # the model card, figures filled in
    figures: dict[str, float]
    pictures: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # shown by the card


def config(architecture: str, labels: tuple[str, ...] | None = None, **fields: Any) -> PerceiverConfig:
    if labels is not None:
        fields["id2label"] = dict(enumerate(labels))
    return PerceiverConfig(architectures=(architecture,), **fields)


def batching(max_batch_size: int, max_queue: int = 256, timeout_ms: int = 30000) -> dict[str, int]:
    return dict(max_batch_size=max_batch_size, max_delay_ms=5, max_queue=max_queue, timeout_ms=timeout_ms)


def _drawn_parameters(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Parameter]]:
    """``(module, name, parameter)`` of every parameter an initialiser draws, in a fixed order;
    layer and batch norms are reset to the identity on the way instead."""
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            module.reset_parameters()
            continue
        for name, param in module.named_parameters(recurse=False):
            yield module, name, param


def init_weights(model: nn.Module, seed: int, std: float = INIT_STD) -> None:
    """Initialise as ``transformers`` does for a new Perceiver, from a platform-independent stream.

    Every weight is drawn from N(0, std²) by NumPy's legacy ``RandomState`` (frozen across
    releases and platforms, unlike torch's CPU kernels), biases are zero and norms start as
    the identity.
    """
    rng = np.random.RandomState(seed)
    with torch.no_grad():
        for _, name, param in _drawn_parameters(model):
            if name == "bias":
                param.zero_()
            else:
                values = rng.standard_normal(tuple(param.shape)) * std
                param.copy_(torch.from_numpy(values.astype(np.float32)))


def init_unit(model: nn.Module, seed: int, embedding_std: float = 1.0) -> None:
    """Xavier-uniform matrices and N(0, ``embedding_std``²) embeddings, latents and position tables.

    With ``transformers``' std of 0.02 every attention starts uniform and a byte-level model
    spends hundreds of steps at chance before its latents learn where to look (measured on the
    sentiment model: loss still 0.693 after 400 steps); at unit scale they look somewhere from
    the first step and the same model leaves chance within 100. The matrices matter most: the
    video model learned no audio in 1,200 steps with ``transformers``' matrices and unit-scale
    embeddings, and learns it with Xavier matrices; it keeps its embeddings at 0.02, the
    setting its video was measured with (``demo_training/video.py``).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module, name, param in _drawn_parameters(model):
            if name == "bias":
                param.zero_()
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(param, generator=generator)
            else:
                param.normal_(0.0, embedding_std, generator=generator)


def build(cfg: PerceiverConfig, seed: int, unit_scale: bool = False, embedding_std: float = 1.0) -> nn.Module:
    """A new model of ``cfg``: initialised as ``transformers`` does, or at unit scale (see ``init_unit``)."""
    model = ARCHITECTURES[cfg.architectures[0]](cfg)
    if unit_scale:
        init_unit(model, seed, embedding_std)
    else:
        init_weights(model, seed)
    return model


def align_inputs(model: nn.Module, *, stride: int, steps: int = 300, lr: float = 1e-2,
                 latent_std: float = INIT_STD) -> None:
    """Point head ``h`` of latent ``i``'s input cross-attention at position ``stride * i + 1 + h - heads // 2``.

    A Perceiver's input cross-attention sees each byte only as LayerNorm(byte embedding +
    position embedding), so a latent that does not attend by position reads a bag of bytes, and
    a byte model stalls at letter frequencies. Here each latent starts as a window of
    neighbouring bytes, one per head (``+ 1``: the ``[CLS]`` byte), and the layers above can read
    words off the latent sequence. Nothing of the architecture changes: only where training starts.

    Positions and bytes start in separate halves of the input channels, each row with zero mean
    and the same norm, so that the layer norm is the same linear map for every byte at every
    place; keys read only the positions' half and values only the bytes' half. Where a latent
    attends then does not depend on the text, and a word reads the same in every latent, so what
    is learnt about it at one place holds at every other. The latents, queries and keys are fitted
    to the wanted positions; where that position is padding (masked), a head falls back on
    ``[CLS]`` (position 0), so a latent past the end of a text holds nothing. The latents are
    then shrunk to ``INIT_STD``: they are also the cross-attention's residual, and at the size the
    fit leaves them they would drown what was read from the input (the query's layer norm reads
    them scale-free, so where they attend stays).
    """
    body = model.perceiver
    embed, positions = body.input_preprocessor.embeddings, body.input_preprocessor.position_embeddings
    attention, latents = body.encoder.cross_attention.attention.self, body.embeddings.latents
    heads, count, length = attention.num_heads, latents.shape[0], positions.num_embeddings
    offsets = torch.arange(heads) + 1 - heads // 2
    targets = (stride * torch.arange(count)[:, None] + offsets).clamp(0, length - 1)  # (latents, heads)
    half = embed.embedding_dim // 2
    with torch.no_grad():
        for table, zeroed in ((positions.weight, slice(half, None)), (embed.weight, slice(None, half))):
            table[:, zeroed] = 0
            kept = table[:, half:] if zeroed.start is None else table[:, :half]
            kept.sub_(kept.mean(1, keepdim=True))
            kept.mul_(math.sqrt(half) / kept.norm(dim=1, keepdim=True))
        attention.key.weight[:, half:] = 0
        attention.value.weight[:, :half] = 0
    key_half = torch.zeros_like(attention.key.weight)
    key_half[:, :half] = 1
    optimiser = torch.optim.Adam([latents, attention.query.weight, attention.key.weight], lr=lr)
    source = attention.layernorm2(embed.weight[6] + positions.weight).detach()  # any byte: it no longer matters
    wanted = targets.T.reshape(-1)
    for _ in range(steps):
        q = attention.query(attention.layernorm1(latents)).view(count, heads, -1).transpose(0, 1)
        k = F.linear(source, attention.key.weight * key_half, attention.key.bias).view(length, heads, -1)
        logits = q @ k.transpose(0, 1).transpose(1, 2) / math.sqrt(q.shape[-1])  # (heads, latents, positions)
        flat = logits.reshape(-1, length)
        fallback = flat.masked_fill(F.one_hot(wanted, length).bool(), float("-inf"))[wanted > 0]
        loss = F.cross_entropy(flat, wanted) + F.cross_entropy(fallback, torch.zeros_like(wanted[wanted > 0]))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        attention.key.weight.mul_(key_half)
        latents.mul_(latent_std / latents.std())


def align_self_attention(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         offsets: tuple[tuple[int, ...], ...], *, steps: int = 100, lr: float = 1e-2) -> None:
    """Point head ``h`` of latent self-attention layer ``l`` from latent ``i`` at latent ``i + offsets[l][h]``.

    After ``align_inputs`` each latent is a window of bytes; with its self-attention heads
    looking at neighbouring latents, each layer widens what a latent sees (a convolution, in
    effect), so that "not" reaches the adjective after it and "but" the clause it opens
    wherever they stand. Queries and keys of each layer in turn are fitted on the latents of
    real text (``input_ids``), which carry where they are in what ``align_inputs`` left of the
    latent array (its ``latent_std`` must leave enough of it). Heads at the ends of the array
    look at its first or last latent instead.
    """
    body = model.perceiver
    with torch.no_grad():
        tokens, _ = body.input_preprocessor(input_ids)
        hidden = body.encoder.cross_attention(body.embeddings(input_ids.shape[0]), tokens, attention_mask.bool())
    count = hidden.shape[1]
    for layer, layer_offsets in zip(body.encoder.self_attends, offsets, strict=True):
        targets = (torch.arange(count)[:, None] + torch.tensor(layer_offsets)).clamp(0, count - 1).T.reshape(-1)
        attention = layer.attention.self
        optimiser = torch.optim.Adam([*attention.query.parameters(), *attention.key.parameters()], lr=lr)
        normed = attention.layernorm1(hidden).detach()
        for _ in range(steps):
            q = attention._heads(attention.query(normed))
            k = attention._heads(attention.key(normed))
            logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (batch, heads, latents, latents)
            loss = F.cross_entropy(logits.reshape(-1, count), targets.repeat(hidden.shape[0]))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            hidden = layer(hidden)


def fit(model: nn.Module, batches: Iterator[Any], loss_of: Callable[[nn.Module, Any], torch.Tensor], *,
        steps: int, lr: float, name: str, say: Callable[[str], None] = print, weight_decay: float = 0.01) -> None:
    """AdamW with a short warm-up and a cosine decay to 5% of ``lr``: enough for these small models."""
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, min(200, steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: min(1.0, (s + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))),
    )
    started, running = time.monotonic(), None
    for step in range(steps):
        loss = loss_of(model, next(batches))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            say(f"{name}: step {step + 1}/{steps} loss {running:.4f} ({time.monotonic() - started:.0f} s)")
    model.eval()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def model_toml(task: str, batching: dict[str, int], options: dict[str, int], header: list[str]) -> str:
    """A ``model.toml`` serving ``checkpoint/`` as the task's default model, under ``header`` comments."""
    lines = [
        *(f"# {line}" for line in header),
        f"task = {_toml_value(task)}",
        'source = "checkpoint"',
        'device = "auto"',
        'dtype = "float32"',
        "default = true",
        "",
        "[batching]",
        *(f"{key} = {_toml_value(value)}" for key, value in batching.items()),
        "",
        "[options]",
        *(f"{key} = {_toml_value(value)}" for key, value in options.items()),
    ]
    return "\n".join(lines) + "\n"


def write_checkpoint(model: nn.Module, checkpoint: Path) -> int:
    """``config.json`` (sorted keys) and ``model.safetensors`` (fixed metadata); returns their size in bytes."""
    checkpoint.mkdir(parents=True, exist_ok=True)
    text = json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"
    (checkpoint / "config.json").write_text(text, encoding="utf-8")
    state = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    return sum(p.stat().st_size for p in checkpoint.iterdir())


def write_folder(trained: Trained, folder: Path, summary: str) -> int:
    """Write the model folder with its card and pictures; returns the checkpoint's size in bytes."""
    size = write_checkpoint(trained.model, folder / "checkpoint")
    header = ["Written by scripts/train_demo_models.py: edit the script and retrain, not this file.",
              f"{summary} See README.md beside this file."]
    (folder / "model.toml").write_text(model_toml(trained.task, trained.batching, trained.options, header),
                                       encoding="utf-8")
    (folder / "README.md").write_text(trained.card, encoding="utf-8")
    for name, picture in trained.pictures.items():
        Image.fromarray(picture).save(folder / name, optimize=True)
    return size


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def checkpoint_mb(model: nn.Module) -> float:
    """Size of the weights as written (float32), in MB."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
