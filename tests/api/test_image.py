"""POST /classify/image against the real server."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_serve.media.image import open_image
from perceiver_serve.media.limits import MediaLimits
from perceiver_serve.tasks.image import ImageClassificationRunner, ImageOptions

from ..media.samples import png_with_header
from .conftest import assert_top_k, model_options, error_of, png_bytes

rng = np.random.default_rng(7)
PHOTO = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)


def direct_probs(model, data: bytes) -> np.ndarray:
    """The server's pipeline computed here, with the model's own options (its size and crop), decoded as
    the server decodes (a big picture box-reduced first, which moves a sharp model's answer)."""
    options = ImageOptions(**model_options("image-classification"))
    processor = ImageClassificationRunner(model, options).processor
    picture = open_image(data, MediaLimits(), min_side=max(processor.size, processor.crop_size)).decode()
    pixels = processor(picture)
    with torch.no_grad():
        return torch.softmax(model(pixels[None]).double(), -1).numpy()[0]


def test_multipart_equals_direct_pipeline(client, direct):
    data = png_bytes(PHOTO)
    r = client.post("/classify/image", files={"image": ("photo.png", data, "image/png")},
                    data={"top_k": "3", "return_logits": "true"})
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert_top_k(result["predictions"], direct_probs(direct("image-classification"), data), k=3)
    assert len(result["logits"]) == 10


def test_raw_body_with_query_parameters(client):
    data = png_bytes(PHOTO, format="JPEG", quality=90)
    raw = client.post("/classify/image?top_k=2", content=data, headers={"content-type": "image/jpeg"})
    multi = client.post("/classify/image", files={"image": ("p.jpg", data)}, data={"top_k": "2"})
    assert raw.status_code == 200 and raw.json() == multi.json()


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        (dict(files={"image": ("a.txt", b"just some text", "text/plain")}), 415, "unsupported_media_type"),
        (dict(files={"image": ("a.png", png_bytes(PHOTO)[:200], "image/png")}), 400, "invalid_input"),
        (dict(files={"image": ("a.png", b"", "image/png")}), 400, "invalid_input"),
        (dict(files={"picture": ("a.png", png_bytes(PHOTO), "image/png")}), 400, "missing_field"),
        (dict(files={"other": ("d", b"x")}, data={"image": "not a file"}), 422, "invalid_request"),
        (dict(data={"image": "not a file"}), 415, "unsupported_media_type"),
        (dict(files={"image": ("a.png", png_bytes(PHOTO))}, data={"top_k": "many"}), 422, "invalid_request"),
        (dict(files={"image": ("a.png", png_bytes(PHOTO))}, data={"top_k": "0"}), 422, "invalid_request"),
        (dict(files={"image": ("a.png", png_bytes(PHOTO))}, data={"model": "optical-flow"}), 404, "wrong_task"),
        (dict(files=[("image", ("a.png", png_bytes(PHOTO))), ("image", ("b.png", png_bytes(PHOTO[::-1])))]),
         422, "invalid_request"),  # which of two images? refused, not one of them answered
        (dict(files={"image": ("a.png", png_bytes(PHOTO))}, data={"top_k": ["1", "2"]}), 422, "invalid_request"),
        (dict(files={"image": ("a.png", png_bytes(PHOTO)), "thumbnail": ("t.png", png_bytes(PHOTO))}),
         422, "invalid_request"),
        (dict(files={"image": ("a.png", png_bytes(PHOTO))}, data={"model": "../etc/passwd"}), 404,
         "model_not_found"),
        (dict(content=b"\x89PNG\r\n\x1a\n garbage", headers={"content-type": "image/png"}), 400, "invalid_input"),
        (dict(content=b"hello", headers={"content-type": "application/json"}), 415, "unsupported_media_type"),
        (dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}), 400,
         "missing_field"),
    ],
)
def test_image_errors(client, kwargs, status, code):
    assert error_of(client.post("/classify/image", **kwargs)) == (status, code)


def test_the_415_names_both_bodies_the_route_reads(client):
    refused = client.post("/classify/image", content=b"x", headers={"content-type": "application/octet-stream"})
    assert error_of(refused) == (415, "unsupported_media_type")
    assert "multipart/form-data or a raw image/* body" in refused.json()["error"]["message"]


def test_decompression_bomb_is_refused_by_its_header(client):
    bomb = png_with_header(30_000, 30_000)  # a valid header over a tiny body: never decoded
    r = client.post("/classify/image", files={"image": ("bomb.png", bomb, "image/png")})
    assert error_of(r) == (413, "too_large")
    assert "900000000" in r.json()["error"]["message"].replace(",", "").replace("_", "")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_unusual_modes_are_accepted(client, mode):
    if mode == "I;16":
        image = Image.fromarray(np.asarray(Image.fromarray(PHOTO).convert("L")).astype(np.uint16) * 257)
    else:
        image = Image.fromarray(PHOTO).convert(mode)
    out = io.BytesIO()
    image.save(out, format="TIFF" if mode == "CMYK" else "PNG")
    r = client.post("/classify/image", files={"image": ("x", out.getvalue())})
    assert r.status_code == 200, r.text
