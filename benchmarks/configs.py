"""Checkpoint configurations of the benchmarked heads: the published sizes, and tiny ones for ``--quick``.

The official values are those of the ``config.json`` files of the DeepMind checkpoints on the
Hugging Face hub (``deepmind/language-perceiver``, ``vision-perceiver-{learned,fourier,conv}``,
``optical-flow-perceiver``, ``multimodal-perceiver``) and of the transformers conversion script.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_LANGUAGE = {
    "d_model": 768, "d_latents": 1280, "num_latents": 256, "num_blocks": 1, "num_self_attends_per_block": 26,
    "num_self_attention_heads": 8, "num_cross_attention_heads": 8, "qk_channels": 256, "v_channels": 1280,
    "vocab_size": 262, "max_position_embeddings": 2048,
}
_VISION = {
    "num_latents": 512, "d_latents": 1024, "num_blocks": 8, "num_self_attends_per_block": 6,
    "num_self_attention_heads": 8, "num_cross_attention_heads": 1, "qk_channels": None, "v_channels": None,
    "image_size": 224, "num_labels": 1000,
}
_FLOW = {
    "num_latents": 2048, "d_latents": 512, "d_model": 322, "num_blocks": 1, "num_self_attends_per_block": 24,
    "num_self_attention_heads": 16, "num_cross_attention_heads": 1, "train_size": [368, 496],
}
_MULTIMODAL = {
    "num_latents": 784, "d_latents": 512, "d_model": 704, "num_blocks": 1, "num_self_attends_per_block": 8,
    "num_self_attention_heads": 8, "num_cross_attention_heads": 1, "num_frames": 16, "image_size": 224,
    "audio_samples_per_frame": 1920, "samples_per_patch": 16, "output_shape": [1, 16, 224, 224],
    "output_num_channels": 512, "num_labels": 700,
}

#: Tiny versions: same structure, every dimension small, so ``--quick`` runs in seconds.
_QUICK_COMMON = {"num_latents": 16, "d_latents": 64, "num_blocks": 1, "num_self_attends_per_block": 2,
                 "num_self_attention_heads": 4}
_QUICK = {
    "language": {**_LANGUAGE, **_QUICK_COMMON, "d_model": 48, "num_cross_attention_heads": 4, "qk_channels": 32,
                 "v_channels": 64, "max_position_embeddings": 256},
    "vision": {**_VISION, **_QUICK_COMMON, "image_size": 32, "num_labels": 10},
    "flow": {**_FLOW, **_QUICK_COMMON, "train_size": [24, 32]},
    "multimodal": {**_MULTIMODAL, **_QUICK_COMMON, "num_frames": 2, "image_size": 32, "audio_samples_per_frame": 64,
                   "output_shape": [1, 2, 32, 32], "output_num_channels": 32, "num_labels": 7},
}
_OFFICIAL = {"language": _LANGUAGE, "vision": _VISION, "flow": _FLOW, "multimodal": _MULTIMODAL}


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One checkpoint to benchmark: its architecture and the transformers config keyword arguments."""

    name: str
    architecture: str
    config: dict[str, Any]


_HEADS = {
    "language-perceiver": ("PerceiverForMaskedLM", "language", {}),
    "text-classifier": ("PerceiverForSequenceClassification", "language", {"num_labels": 2}),
    "vision-perceiver-learned": ("PerceiverForImageClassificationLearned", "vision", {"d_model": 512}),
    "vision-perceiver-fourier": ("PerceiverForImageClassificationFourier", "vision", {"d_model": 261}),
    "vision-perceiver-conv": ("PerceiverForImageClassificationConvProcessing", "vision", {"d_model": 322}),
    "optical-flow-perceiver": ("PerceiverForOpticalFlow", "flow", {}),
    "multimodal-perceiver": ("PerceiverForMultimodalAutoencoding", "multimodal", {}),
}


def head_spec(name: str, quick: bool = False) -> HeadSpec:
    architecture, family, extra = _HEADS[name]
    base = (_QUICK if quick else _OFFICIAL)[family]
    return HeadSpec(name, architecture, {**base, **extra, "attention_probs_dropout_prob": 0.0})


#: The server benchmark's headline model: a mid-size byte-level text classifier (issue 8),
#: 128 latents × 512 channels, 8 self-attention layers; and a tiny stand-in for ``--quick``.
_SERVER_TEXT = {**_LANGUAGE, "num_latents": 128, "d_latents": 512, "num_self_attends_per_block": 8,
                "qk_channels": None, "v_channels": None, "num_labels": 2}


def server_text_spec(quick: bool = False) -> HeadSpec:
    config = {**_SERVER_TEXT, **(_QUICK["language"] if quick else {}), "num_labels": 2,
              "attention_probs_dropout_prob": 0.0}
    return HeadSpec("server-text-classifier", "PerceiverForSequenceClassification", config)


#: Issue 12's mid-size text classifier: 128 latents × 512, 8 self-attention layers, widening factor 1,
#: d_model 256, qk_channels 256, 3 labels (the model behind its throughput table); v_channels must equal
#: d_latents for the self-attention residual.
_CLASSIFIER = {**_LANGUAGE, "num_latents": 128, "d_latents": 512, "num_self_attends_per_block": 8, "d_model": 256,
               "qk_channels": 256, "v_channels": 512, "self_attention_widening_factor": 1,
               "cross_attention_widening_factor": 1, "num_labels": 3}


def classifier_spec(quick: bool = False) -> HeadSpec:
    config = {**_CLASSIFIER, **(_QUICK["language"] if quick else {}), "num_labels": 3,
              "attention_probs_dropout_prob": 0.0}
    return HeadSpec("mid-text-classifier", "PerceiverForSequenceClassification", config)
