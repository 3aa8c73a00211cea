"""Held-out handwritten digits sent as PNG files to POST /classify/image."""

import pytest
from demo_training import digits


def _accuracy(rest, files: list[bytes], labels) -> float:
    right = 0
    for data, label in zip(files, labels):
        r = rest.post("/classify/image", files={"image": ("digit.png", data, "image/png")}, data={"top_k": "1"})
        assert r.status_code == 200, r.text
        right += r.json()["results"][0]["predictions"][0]["label"] == str(label)
    return right / len(files)


@pytest.fixture(scope="module")
def held_out():
    images, labels, split = digits.load()
    return images[split:], labels[split:]


def test_digits_as_8x8_pngs(rest, held_out):
    images, labels = held_out
    assert len(images) == 360
    assert _accuracy(rest, [digits.png(im) for im in images], labels) >= 0.95


def test_digits_upscaled_to_64x64(rest, held_out):
    images, labels = held_out
    assert _accuracy(rest, [digits.png(im, 64) for im in images], labels) >= 0.90
