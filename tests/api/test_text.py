"""POST /classify/text and /fill-mask against the real server."""

import numpy as np
import pytest
import torch

from perceiver_serve.modeling import ByteTokenizer

from ..numerics import FP32, assert_close, assert_distinct, distinguishable
from ..reactive import reactive_models
from ..text_windows import answering_window, context_bytes
from .conftest import PROB_TOLERANCE, assert_top_k, error_of

rng = np.random.default_rng(17)

TEXTS = ["I loved this film.", "Terrible, would not watch again!", "ünïcödé ☃ text", "x"]


def direct_logits(model, text: str) -> np.ndarray:
    ids = torch.tensor([ByteTokenizer(model.config.max_position_embeddings).encode(text)])
    with torch.no_grad():
        return model(ids).double().numpy()[0]


def direct_probs(model, text: str) -> np.ndarray:
    return torch.softmax(torch.from_numpy(direct_logits(model, text)), -1).numpy()


def test_classify_one_text_equals_direct_pipeline(client, direct):
    model = direct("text-classification")
    r = client.post("/classify/text", json={"text": TEXTS[0], "top_k": 2, "return_logits": True})
    assert r.status_code == 200, r.text
    body = r.json()
    (result,) = body["results"]
    probs = direct_probs(model, TEXTS[0])
    assert_top_k(result["predictions"], probs, k=2)
    for p in result["predictions"]:
        assert p["label"] == model.config.id2label[p["index"]]
    assert len(result["logits"]) == model.config.num_labels
    assert r.headers["x-request-id"]


def test_classify_many_texts_in_order(client, direct):
    model = direct("text-classification")
    r = client.post("/classify/text", json={"texts": TEXTS, "top_k": 1, "return_logits": True})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == len(TEXTS)
    expected = np.stack([direct_logits(model, text) for text in TEXTS])
    assert distinguishable(expected, FP32 * np.abs(expected).max()) == 1.0  # an answer in the wrong place shows
    for text, want, result in zip(TEXTS, expected, results):
        assert_top_k(result["predictions"], direct_probs(model, text), k=1)
        assert_close(result["logits"], want, FP32, text)
    r = client.post("/classify/text", json={"texts": TEXTS, "top_k": 1})
    assert all("logits" not in result for result in r.json()["results"])


def test_classify_plain_text_body(client):
    r = client.post("/classify/text?top_k=1", content="I loved this film.".encode(),
                    headers={"content-type": "text/plain; charset=utf-8"})
    j = client.post("/classify/text", json={"text": "I loved this film.", "top_k": 1})
    assert r.status_code == 200 and r.json() == j.json()


def test_request_id_is_echoed(client):
    r = client.post("/classify/text", json={"text": "hi"}, headers={"x-request-id": "my-trace-42"})
    assert r.headers["x-request-id"] == "my-trace-42"
    r = client.post("/classify/text", json={"text": "hi"}, headers={"x-request-id": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        (dict(json={"text": ""}), 400, "empty_text"),
        (dict(json={"texts": ["fine", ""]}), 400, "empty_text"),
        (dict(content=b"\xff\xfe bad", headers={"content-type": "text/plain"}), 400, "invalid_utf8"),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "malformed_json"),
        (dict(content=b"", headers={"content-type": "application/json"}), 400, "malformed_json"),
        (dict(json={"text": 42}), 422, "invalid_request"),
        (dict(json={"texts": "not a list"}), 422, "invalid_request"),
        (dict(json={"text": "a", "texts": ["b"]}), 422, "invalid_request"),
        (dict(json={}), 422, "invalid_request"),
        (dict(json={"text": "a", "top_k": "5"}), 422, "invalid_request"),
        (dict(json={"text": "a", "top_k": 0}), 422, "invalid_request"),
        (dict(json={"text": "a", "top_k": 10**30}), 422, "invalid_request"),
        (dict(json={"text": "a", "surprise": 1}), 422, "invalid_request"),
        (dict(json={"texts": []}), 422, "invalid_request"),
        (dict(json={"text": "a", "model": "no-such-model"}), 404, "model_not_found"),
        (dict(json={"text": "a", "model": "language-mlm"}), 404, "wrong_task"),
        (dict(json={"text": "x" * 5000}), 413, "text_too_long"),
        (dict(content=b"hi", headers={"content-type": "application/xml"}), 415, "unsupported_media_type"),
        (dict(content=b"hi"), 415, "unsupported_media_type"),
    ],
)
def test_classify_text_errors(client, kwargs, status, code):
    assert error_of(client.post("/classify/text", **kwargs)) == (status, code)


def test_text_at_the_byte_limit_is_accepted(client, direct):
    limit = direct("text-classification").config.max_position_embeddings - 2
    assert client.post("/classify/text", json={"text": "é" * (limit // 2)}).status_code == 200
    r = client.post("/classify/text", json={"text": "a" * (limit + 1)})
    assert error_of(r) == (413, "text_too_long") and str(limit) in r.json()["error"]["message"]


def direct_fill(model, data: bytes, positions: list[int]) -> np.ndarray:
    ids = ByteTokenizer(model.config.max_position_embeddings).encode(data)
    for p in positions:
        ids[p + 1] = ByteTokenizer.MASK
    with torch.no_grad():
        return torch.softmax(model(torch.tensor([ids])).double(), -1).numpy()[0]


def test_fill_mask_spans_equal_direct_pipeline(client, direct):
    model = direct("fill-mask")
    text = "The quick brown fox"
    r = client.post("/fill-mask", json={"text": text, "mask_spans": [[4, 6], [16, 17]], "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    probs = direct_fill(model, text.encode(), [4, 5, 16])
    for p in (4, 5, 16):  # the byte before or after would be told apart
        assert_distinct(probs[p + 1][6:], probs[p][6:], PROB_TOLERANCE, f"position {p} decoded one early")
        assert_distinct(probs[p + 1][6:], probs[p + 2][6:], PROB_TOLERANCE, f"position {p} decoded one late")
    assert [m["position"] for m in body["masked"]] == [4, 5, 16]
    filled = bytearray(text.encode())
    for m in body["masked"]:
        assert_top_k(m["predictions"], probs[m["position"] + 1][6:], index_key="byte", k=3)
        assert m["original"] == text.encode()[m["position"]]
        filled[m["position"]] = m["predictions"][0]["byte"]
    assert body["text"] == filled.decode("utf-8", errors="replace")


def test_fill_mask_of_a_long_text_reads_the_bytes_around_each_mask(client, direct):
    """The demo model reads ``context_bytes`` (62) bytes: in a 150-byte text the masks at 10, 100–104
    and 140 are answered from three windows (the masks that fall in a window are masked there too)."""
    model = direct("fill-mask")
    width = context_bytes(reactive_models())
    assert width == 62
    text = bytes(rng.integers(97, 123, 150, dtype=np.uint8)).decode()
    r = client.post("/fill-mask", json={"text": text, "mask_spans": [[10, 11], [100, 105], [140, 141]], "top_k": 3})
    assert r.status_code == 200, r.text
    masked = {m["position"]: m["predictions"] for m in r.json()["masked"]}
    assert sorted(masked) == [10, 100, 101, 102, 103, 104, 140]
    data, every = text.encode(), [10, 100, 101, 102, 103, 104, 140]
    for group in ([10], [100, 101, 102, 103, 104], [140]):
        start, end = answering_window(len(data), group[0], group[-1], width)
        probs = direct_fill(model, data[start:end], [p - start for p in every if start <= p < end])
        whole = direct_fill(model, data, every)
        for p in group:
            assert_top_k(masked[p], probs[p - start + 1][6:], index_key="byte", k=3)
            if p - start != p:  # where the window moved, reading the whole text would answer otherwise
                assert_distinct(probs[p - start + 1][6:], whole[p + 1][6:], PROB_TOLERANCE, f"position {p} from the whole text")
    assert answering_window(150, 100, 104, width) == (72, 134) and answering_window(150, 140, 140, width) == (88, 150)


def test_fill_mask_of_every_byte_of_the_longest_text(client, direct):
    """2046 bytes, every one masked: 66 windows of 62 bytes (at most), each a batch item; one answer a byte."""
    limit = direct("fill-mask").config.max_position_embeddings - 2
    r = client.post("/fill-mask", json={"text": "a" * limit, "mask_spans": [[0, limit]], "top_k": 1})
    assert r.status_code == 200, r.text
    assert [m["position"] for m in r.json()["masked"]] == list(range(limit))


def test_fill_mask_markers(client, direct):
    r = client.post("/fill-mask", json={"text": "Hello w[MASK]rld[MASK]", "top_k": 1})
    assert r.status_code == 200
    masked = r.json()["masked"]
    assert [m["position"] for m in masked] == [7, 11]
    assert [m["original"] for m in masked] == [None, None]  # a marker stood for no byte of the text
    probs = direct_fill(direct("fill-mask"), b"Hello w rld ", [7, 11])
    assert_distinct(probs[8][6:], probs[7][6:], PROB_TOLERANCE, "the neighbouring position")
    assert_top_k(masked[0]["predictions"], probs[8][6:], index_key="byte", k=1)
    assert_top_k(masked[1]["predictions"], probs[12][6:], index_key="byte", k=1)


def test_fill_mask_truncate(client, direct):
    limit = direct("fill-mask").config.max_position_embeddings - 2
    long = "ab" * limit
    assert error_of(client.post("/fill-mask", json={"text": long, "mask_spans": [[0, 1]]})) == (413, "text_too_long")
    r = client.post("/fill-mask", json={"text": long, "mask_spans": [[0, 1]], "truncate": True})
    assert r.status_code == 200 and len(r.json()["text"]) == limit
    # A cut at the limit would split the 4-byte emoji after limit - 2 bytes: the text keeps whole characters.
    emoji = "a" * (limit - 2) + "\U0001f600bbb"
    r = client.post("/fill-mask", json={"text": emoji, "mask_spans": [[0, 1]], "truncate": True, "top_k": 1})
    assert r.status_code == 200, r.text
    assert r.json()["text"][1:] == "a" * (limit - 3)  # the first byte is the model's
    r = client.post("/fill-mask", json={"text": "a" * limit + "[MASK]", "truncate": True})
    assert error_of(r) == (400, "invalid_input") and "[MASK] marker 1 of 1 lies beyond" in r.json()["error"]["message"]


def test_fill_mask_spans_keep_characters_whole(client):
    """A span that starts or ends inside a multi-byte character is refused, saying where; one that
    covers whole characters is answered."""
    text = "h\u00e9llo"  # é is bytes 1-2
    for span in ([2, 3], [1, 2], [0, 2]):
        r = client.post("/fill-mask", json={"text": text, "mask_spans": [span]})
        assert error_of(r) == (400, "invalid_input") and "cuts a character" in r.json()["error"]["message"], span
    assert client.post("/fill-mask", json={"text": text, "mask_spans": [[1, 3]]}).status_code == 200


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"text": "abc"}, 400, "no_mask"),
        ({"text": "abc", "mask_spans": [[2, 9]]}, 400, "invalid_input"),
        ({"text": "abc", "mask_spans": [[2, 2]]}, 400, "invalid_input"),
        ({"text": "abc", "mask_spans": [[-1, 1]]}, 400, "invalid_input"),
        ({"text": "a[MASK]c", "mask_spans": [[0, 1]]}, 400, "invalid_input"),
        ({"text": "abc", "mask_spans": [[1]]}, 422, "invalid_request"),
        ({"text": "abc", "mask_spans": "0-1"}, 422, "invalid_request"),
        ({"text": "", "mask_spans": [[0, 1]]}, 400, "empty_text"),
        ({"text": "abc", "mask_spans": [[0, 1]], "model": "text-sentiment"}, 404, "wrong_task"),
    ],
)
def test_fill_mask_errors(client, body, status, code):
    assert error_of(client.post("/fill-mask", json=body)) == (status, code)
