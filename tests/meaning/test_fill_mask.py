"""Held-out prose sent to POST /fill-mask: one whole word of 3–8 bytes masked, every byte predicted.

The questions are drawn by the trainer's own code (``prose.questions``: windows of the held-out
last 10% of Python's ``pydoc_data/topics.py``, one word masked in each) and asked through
``mask_spans``, as a user would. The model is below the issue's target (well above 50%), and its
card says so; these thresholds hold it to what it measured, and above letter statistics alone
(the best answer from the mask's length, about 21.6% here; random weights get about 0.03%).
"""

import pytest
from demo_training import prose

QUESTIONS = 256
#: Measured on these questions: 27.7% (the card: 28.8% over 2,048 other held-out windows).
LEAST_ACCURACY = 0.26
#: Points above letter statistics on the same questions (measured: 6.1 points).
LEAST_GAIN = 0.045


def _filled(rest, window: bytes, start: int, end: int) -> bytes:
    r = rest.post("/fill-mask", json={"text": window.decode("utf-8"), "mask_spans": [[start, end]],
                                      "model": prose.NAME, "top_k": 1})
    assert r.status_code == 200, r.text
    return bytes(m["predictions"][0]["byte"] for m in r.json()["masked"])


def _utf8(window: bytes) -> bool:
    try:
        window.decode("utf-8")
    except UnicodeDecodeError:  # cut inside a character: not a text anyone can send
        return False
    return True


@pytest.fixture(scope="module")
def asked():
    text, held = prose.corpus()
    drawn = prose.questions(held, QUESTIONS, seed=900)  # the card's figures use seed 200
    return text, held, [q for q in drawn if _utf8(q[0])]


def test_masked_words_of_held_out_prose(rest, asked):
    text, _, questions = asked
    right = total = 0
    for window, start, end in questions:
        filled = _filled(rest, window, start, end)
        right += sum(a == b for a, b in zip(filled, window[start:end]))
        total += end - start
    accuracy = right / total
    assert accuracy >= LEAST_ACCURACY
    assert accuracy - prose.letter_accuracy(text, questions) >= LEAST_GAIN


def test_masked_words_deep_in_longer_texts(rest, asked):
    """The same questions inside 262 bytes of the held-out text (100 more on each side), so that
    every mask lies beyond the 62 bytes the model reads at once: the server answers each from the
    bytes around it (``context_bytes``), not from the start of the text, and keeps the accuracy."""
    _, held, questions = asked
    right = total = 0
    for window, start, end in questions:
        at = held.find(window)
        longer = held[at - 100:at + len(window) + 100]
        if at < 100 or len(longer) != len(window) + 200 or not _utf8(longer):
            continue
        filled = _filled(rest, longer, start + 100, end + 100)
        right += sum(a == b for a, b in zip(filled, window[start:end]))
        total += end - start
    assert total >= 0.9 * sum(end - start for _, start, end in questions)
    assert right / total >= LEAST_ACCURACY
