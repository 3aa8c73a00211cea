"""Shared inputs for running a transformers head and ours on the same data."""

from __future__ import annotations

import torch


def text_batch():
    """Two byte sequences of different lengths, the shorter one padded with a mask."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, 262, (2, 30), generator=g)
    mask = torch.ones(2, 30, dtype=torch.long)
    ids[1, 17:], mask[1, 17:] = 0, 0
    return ids, mask


def run_pair(arch: str, ref, ours, dtype=torch.float32,
             device: str = "cpu") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``name → (reference output, our output)`` for one forward pass on shared inputs (made on the
    CPU, then moved to ``device``, where both models are)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        if arch in ("PerceiverForMaskedLM", "PerceiverForSequenceClassification"):
            ids, mask = (t.to(device) for t in text_batch())
            return {"logits": (ref(inputs=ids, attention_mask=mask).logits, ours(ids, mask))}
        if arch.startswith("PerceiverForImageClassification"):
            size = 32 if arch.endswith("ConvProcessing") else 16
            x = torch.randn(2, 3, size, size, generator=g).to(device)
            return {"logits": (ref(inputs=x).logits, ours(x.to(dtype)))}
        if arch == "PerceiverForOpticalFlow":
            x = torch.randn(2, 2, 27, 12, 16, generator=g).to(device)
            return {"flow": (ref(inputs=x).logits, ours(x.to(dtype)))}
        images = torch.rand(2, 2, 3, 16, 16, generator=g).to(device)
        audio = (torch.rand(2, 64, 1, generator=g) * 2 - 1).to(device)
        image_points, audio_points = torch.arange(100, 300, device=device), torch.arange(2, 6, device=device)
        ref_out = ref(
            inputs={"image": images, "audio": audio, "label": torch.zeros(2, 5, device=device)},
            subsampled_output_points={"image": image_points, "audio": audio_points, "label": None},
        ).logits
        our_out = ours(images.to(dtype), audio.to(dtype), None, image_points, audio_points)
        return {name: (ref_out[name], our_out[name]) for name in ("image", "audio", "label")}
