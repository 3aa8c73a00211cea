"""encode/decode split: decoding any subset of output points equals decoding them all at once."""

import pytest
import torch

from perceiver_serve.modeling import load_model

from .inputs import text_batch


@pytest.fixture(scope="module")
def models(checkpoint_dirs):
    return lambda arch: load_model(checkpoint_dirs[arch, "safetensors"])


def test_multimodal_chunks_equal_one_piece(models):
    model = models("PerceiverForMultimodalAutoencoding")
    g = torch.Generator().manual_seed(3)
    images, audio = torch.rand(2, 2, 3, 16, 16, generator=g), torch.rand(2, 64, generator=g) * 2 - 1
    with torch.no_grad():
        latents = model.encode(images, audio)
        whole = model.decode(latents, torch.arange(model.num_image_points), torch.arange(model.num_audio_points),
                             label=True)
        image_chunks = [model.decode(latents, image_points=idx)["image"]
                        for idx in torch.arange(model.num_image_points).chunk(7)]
        audio_chunks = [model.decode(latents, audio_points=idx)["audio"]
                        for idx in torch.arange(model.num_audio_points).chunk(3)]
        label = model.decode(latents, label=True)["label"]
    assert whole["image"].shape == (2, 2 * 16 * 16, 3)
    assert whole["audio"].shape == (2, 64)
    assert (torch.cat(image_chunks, 1) - whole["image"]).abs().max() <= 1e-5
    assert (torch.cat(audio_chunks, 1) - whole["audio"]).abs().max() <= 1e-5
    assert (label - whole["label"]).abs().max() <= 1e-5


def test_multimodal_per_item_points_equal_shared_points(models):
    """Chunks of different streams can share a batch: per-item point indices."""
    model = models("PerceiverForMultimodalAutoencoding")
    g = torch.Generator().manual_seed(4)
    images, audio = torch.rand(2, 2, 3, 16, 16, generator=g), torch.rand(2, 64, generator=g)
    with torch.no_grad():
        latents = model.encode(images, audio)
        first, second = torch.arange(0, 50), torch.arange(300, 350)
        mixed = model.decode(latents, image_points=torch.stack([first, second]))["image"]
        alone0 = model.decode(latents[:1], image_points=first)["image"]
        alone1 = model.decode(latents[1:], image_points=second)["image"]
    assert (mixed[0] - alone0[0]).abs().max() <= 1e-5
    assert (mixed[1] - alone1[0]).abs().max() <= 1e-5


def test_masked_lm_decodes_only_requested_positions(models):
    model = models("PerceiverForMaskedLM")
    ids, mask = text_batch()
    with torch.no_grad():
        latents = model.encode(ids, mask)
        everything = model.decode(latents)
        some = model.decode(latents, torch.tensor([3, 7, 29]))
        per_item = model.decode(latents, torch.tensor([[1, 2], [5, 9]]))
    assert everything.shape == (2, model.config.max_position_embeddings, 262)
    assert (some - everything[:, [3, 7, 29]]).abs().max() <= 1e-5
    assert (per_item[0] - everything[0, [1, 2]]).abs().max() <= 1e-5
    assert (per_item[1] - everything[1, [5, 9]]).abs().max() <= 1e-5


def test_unpadded_text_equals_padded_text(models):
    """Padding is a key mask: a text alone gives the same logits as inside a padded batch."""
    model = models("PerceiverForSequenceClassification")
    ids, mask = text_batch()
    with torch.no_grad():
        batched = model(ids, mask)
        alone = model(ids[1:, :17])
    assert (batched[1] - alone[0]).abs().max() <= 1e-5


def test_flow_chunk_size_does_not_change_the_field(models):
    model = models("PerceiverForOpticalFlow")
    x = torch.randn(1, 2, 27, 12, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        encoding = model.encode(x)
        small = model.decode_all(encoding, chunk_size=7)
        big = model.decode_all(encoding, chunk_size=10_000)
    assert small.shape == (1, 12, 16, 2)
    assert (small - big).abs().max() <= 1e-6
