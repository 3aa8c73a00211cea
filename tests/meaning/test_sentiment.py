"""Sentiment of hand-written and of held-out generated sentences, through POST /classify/text.

The thresholds sit a few points below what the shipped model measured (its card) and far above
the 50% a model that guesses gets.
"""

import dataclasses
import random

from demo_training import sentiment

#: The shipped model measured 91.7% (44 of 48) and 70.3% (its card; 73.8% on this test's 400); a
#: model that guesses gets 50%. The hand-written threshold is the issue's target itself.
HAND_WRITTEN_AT_LEAST = 0.85
HELD_OUT_AT_LEAST = 0.68


def _labels(rest, texts: list[str]) -> list[str]:
    labels = []
    for start in range(0, len(texts), 200):  # a request takes at most 256 texts
        r = rest.post("/classify/text", json={"texts": texts[start:start + 200], "top_k": 1})
        assert r.status_code == 200, r.text
        labels += [result["predictions"][0]["label"] for result in r.json()["results"]]
    return labels


def _accuracy(rest, labelled: list[tuple[str, int]]) -> tuple[float, list[str]]:
    predicted = _labels(rest, [text for text, _ in labelled])
    wrong = [text for (text, label), got in zip(labelled, predicted) if got != sentiment.LABELS[label]]
    return 1 - len(wrong) / len(labelled), wrong


def test_hand_written_sentences(rest):
    labelled = sentiment.hand_written()
    assert len(labelled) >= 40 and {label for _, label in labelled} == {0, 1}
    right, wrong = _accuracy(rest, labelled)
    assert right >= HAND_WRITTEN_AT_LEAST, wrong


def test_held_out_generated_sentences(rest):
    _, held, _ = sentiment.vocabularies()
    right, wrong = _accuracy(rest, sentiment.sentences(held, 400, seed=2024))
    assert right >= HELD_OUT_AT_LEAST, wrong[:20]


def test_held_out_pieces_are_never_trained_on():
    train, held, unseen = sentiment.vocabularies()
    for field in dataclasses.fields(sentiment.Vocabulary):
        if field.name not in ("adjectives", "verbs"):
            assert not set(getattr(train, field.name)) & set(getattr(held, field.name)) - {"", ".", "!"}, field.name
    trained_words = {w for ws in train.adjectives.values() for w in ws}
    assert not trained_words & {w for ws in unseen.adjectives.values() for w in ws}
    hand_written = {text for text, _ in sentiment.hand_written()}
    rng = random.Random(0)
    for progress in (0.0, 0.1, 0.5):
        drawn = {text for text, _ in sentiment.training_sentences(train, rng, progress, 20000)}
        assert not hand_written & drawn


def test_neutral_fillers_are_no_held_out_word_and_carry_no_sentiment():
    train, held, unseen = sentiment.vocabularies()
    fillers = set(train.fillers)
    assert len(fillers) > 500 and held.fillers == unseen.fillers == ()
    assert not fillers & (held.piece_words() | unseen.piece_words())
    assert not fillers & sentiment.STEERING
    assert not fillers & set(sentiment.lexicon())
