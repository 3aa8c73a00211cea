"""Each committed demo checkpoint is genuine Hugging Face layout: transformers loads it, and agrees with us."""

import pytest
import torch
import transformers

from perceiver_serve.modeling import load_model

from .repository import checkpoint_of, demo_folders

#: Largest difference allowed, relative to the largest output (random-weight demo models give
#: small outputs, flow below 1e-3 px, where a plain 1e-4 would prove little).
TOLERANCE = 1e-4


def _inputs(model, generator):
    """``(transformers kwargs, our positional args)`` for one small batch of two."""
    config, arch = model.config, model.architecture
    if arch in ("PerceiverForMaskedLM", "PerceiverForSequenceClassification"):
        ids = torch.randint(6, config.vocab_size, (2, 40), generator=generator)
        mask = torch.ones_like(ids)
        ids[1, 25:], mask[1, 25:] = 0, 0
        return dict(inputs=ids, attention_mask=mask), (ids, mask)
    if arch.startswith("PerceiverForImageClassification"):
        side = config.image_size if arch == "PerceiverForImageClassificationLearned" else 64  # learned positions: one size
        pixels = torch.randn(2, 3, side, side, generator=generator)
        return dict(inputs=pixels), (pixels,)
    if arch == "PerceiverForOpticalFlow":
        patches = torch.randn(2, 2, 27, *config.train_size, generator=generator)
        return dict(inputs=patches), (patches,)
    images = torch.rand(2, config.num_frames, 3, config.image_size, config.image_size, generator=generator)
    audio = torch.rand(2, config.num_frames * config.audio_samples_per_frame, 1, generator=generator) * 2 - 1
    image_points, audio_points = torch.arange(1000, 1600), torch.arange(0, model.num_audio_points, 3)
    hf = dict(
        inputs={"image": images, "audio": audio, "label": torch.zeros(2, config.num_labels)},
        subsampled_output_points={"image": image_points, "audio": audio_points, "label": None},
    )
    return hf, (images, audio, None, image_points, audio_points)


def _as_dict(output):
    return output if isinstance(output, dict) else {"logits": output}


@pytest.mark.parametrize("folder", demo_folders(), ids=lambda p: p.name)
def test_transformers_loads_the_checkpoint_and_agrees(folder):
    checkpoint = checkpoint_of(folder)
    ours = load_model(checkpoint)
    arch = ours.config.architectures[0]
    reference, info = getattr(transformers, arch).from_pretrained(checkpoint, output_loading_info=True)
    assert not any(info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert reference.config.id2label == ours.config.id2label

    hf_kwargs, our_args = _inputs(ours, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _as_dict(reference.eval()(**hf_kwargs).logits)
        actual = _as_dict(ours(*our_args))
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert actual[name].shape == value.shape, name
        error = (actual[name] - value).abs().max().item()
        assert error <= TOLERANCE * value.abs().max().item(), (name, error)
