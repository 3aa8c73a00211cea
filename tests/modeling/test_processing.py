"""Our input processing equals the reference processors."""

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import PerceiverTokenizer
from transformers.models.perceiver.image_processing_pil_perceiver import PerceiverImageProcessorPil

from perceiver_serve.modeling import ByteTokenizer, ImageProcessor, flow_patches, video_frames

TEXTS = ["", "hello world", "Grüße, 世界! 🙂", "line\nbreak\ttab\x00nul", "x" * 500]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_ids_equal_perceiver_tokenizer(text):
    assert ByteTokenizer().encode(text) == PerceiverTokenizer()(text)["input_ids"]


def test_batch_padding_equals_perceiver_tokenizer():
    ref = PerceiverTokenizer()(TEXTS[:3], padding="longest", return_tensors="pt")
    ids, mask = ByteTokenizer().batch([ByteTokenizer().encode(t) for t in TEXTS[:3]])
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])


def test_special_ids_match():
    tok = PerceiverTokenizer()
    assert (tok.pad_token_id, tok.mask_token_id, tok.cls_token_id, tok.sep_token_id) == (
        ByteTokenizer.PAD, ByteTokenizer.MASK, ByteTokenizer.CLS, ByteTokenizer.SEP)


def test_text_over_the_limit_is_refused():
    tok = ByteTokenizer(max_length=10)
    assert len(tok.encode("x" * 8)) == 10
    with pytest.raises(ValueError, match="at most 8"):
        tok.encode("x" * 9)


@pytest.mark.parametrize("size", [(300, 400), (224, 224), (517, 203), (64, 80), (1, 1)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_image_processor_equals_reference(size, mode):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).convert(mode).convert("RGB")
    ref = PerceiverImageProcessorPil()(image, return_tensors="pt")["pixel_values"][0]
    ours = ImageProcessor()(image)
    assert ours.shape == ref.shape == (3, 224, 224)
    assert (ours - ref).abs().max() <= 1e-5


def _tf_same_patches(frame: np.ndarray) -> np.ndarray:
    """3×3 patches per pixel written out with loops, as TF extract_patches lays them out."""
    h, w, c = frame.shape
    padded = np.zeros((h + 2, w + 2, c), dtype=np.float32)
    padded[1:-1, 1:-1] = frame
    out = np.zeros((9 * c, h, w), dtype=np.float32)
    for y, x in itertools.product(range(h), range(w)):
        out[:, y, x] = padded[y:y + 3, x:x + 3].reshape(-1)
    return out


def test_flow_patches_follow_the_deepmind_layout():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    got = flow_patches(torch.from_numpy(frames)[None])
    assert got.shape == (1, 2, 27, 5, 7)
    for t in range(2):
        expected = _tf_same_patches(frames[t].astype(np.float32) / 255.0 * 2 - 1)
        assert np.abs(got[0, t].numpy() - expected).max() <= 1e-6
    assert got.min() >= -1 and got.max() <= 1


def test_video_frames_crop_resize_and_scale():
    frames = np.zeros((3, 40, 60, 3), dtype=np.uint8)
    frames[:, :, 10:50] = 255  # the centre square is white, the side bars black
    out = video_frames(frames, 16)
    assert out.shape == (3, 3, 16, 16)
    assert torch.allclose(out, torch.ones_like(out))
    same = video_frames(np.full((1, 8, 8, 3), 51, dtype=np.uint8), 8)
    assert math.isclose(same[0, 0, 0, 0].item(), 0.2, abs_tol=1e-6)
