"""Small random-weight transformers Perceiver checkpoints for the parity tests (test-only)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

SMALL = dict(
    num_latents=8, d_latents=32, d_model=24, num_blocks=2, num_self_attends_per_block=2,
    num_self_attention_heads=4, num_cross_attention_heads=2, max_position_embeddings=40,
    image_size=16, train_size=[12, 16], num_frames=2, audio_samples_per_frame=32, samples_per_patch=8,
    output_shape=[1, 2, 16, 16], output_num_channels=24, num_labels=5, attention_probs_dropout_prob=0.0,
)

#: Per head: config overrides (one flow config uses shape-for-attention 'q' and explicit widths).
HEAD_CONFIGS = {
    "PerceiverForMaskedLM": dict(qk_channels=16, v_channels=32),
    "PerceiverForSequenceClassification": {},
    "PerceiverForImageClassificationLearned": {},
    "PerceiverForImageClassificationFourier": dict(cross_attention_shape_for_attention="q", num_cross_attention_heads=1),
    "PerceiverForImageClassificationConvProcessing": dict(self_attention_widening_factor=2),
    "PerceiverForOpticalFlow": dict(num_cross_attention_heads=1, cross_attention_widening_factor=2),
    "PerceiverForMultimodalAutoencoding": dict(num_cross_attention_heads=1),
}


def build_reference(arch: str, seed: int = 0) -> torch.nn.Module:
    """A transformers head with every parameter and buffer randomised (so no weight is a no-op)."""
    torch.manual_seed(seed)
    config = transformers.PerceiverConfig(**{**SMALL, **HEAD_CONFIGS[arch]})
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "norm" in name else 0.05))
        for _name, b in model.named_buffers():
            if b.is_floating_point():
                b.copy_(torch.rand_like(b) + 0.5)
    return model


def save_reference(model: torch.nn.Module, directory: Path, fmt: str = "safetensors") -> Path:
    """Save in Hugging Face layout; ``fmt='bin'`` writes ``pytorch_model.bin`` as older releases did."""
    model.save_pretrained(directory)
    if fmt == "bin":
        (directory / "model.safetensors").unlink()
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory
