"""Sentiment of hand-written and of held-out generated sentences, through POST /classify/text.

The thresholds sit a few points below what the shipped model measured (its card) and far above
the 50% a model that guesses gets.
"""

import dataclasses
import random

from demo_training import sentiment

#: The shipped model measured 97.9% (47 of 48) and 92.7% (its card; 91.25% on this test's 400); a
#: model that guesses gets 50%. Both thresholds are the issue's targets, less a few sentences for
#: the held-out one (these 400 are not the card's 2,000).
HAND_WRITTEN_AT_LEAST = 0.85
HELD_OUT_AT_LEAST = 0.88


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
        drawn = {text for text, _, _ in sentiment.training_sentences(train, rng, progress, 20000)}
        assert not hand_written & drawn


def test_neutral_fillers_are_no_held_out_word_and_carry_no_sentiment():
    train, held, unseen = sentiment.vocabularies()
    fillers = set(train.fillers)
    assert len(fillers) > 500 and held.fillers == unseen.fillers == ()
    assert not fillers & (held.piece_words() | unseen.piece_words())
    assert not fillers & sentiment.STEERING
    assert not fillers & set(sentiment.lexicon())


def _latents_reading(text: str, word: str) -> set[int]:
    """Latents whose middle bytes (``align_inputs``: latent ``i`` starts at byte ``2i - 4``) cover ``word``."""
    start = text.index(word)
    return {i for i in range(sentiment.CONFIG.num_latents)
            if start <= 2 * i + 1 and 2 * i - 2 <= start + len(word) - 1}


def test_each_latent_is_taught_the_clause_of_the_sentiment_word_it_reads():
    text = "The food was good, but the staff was not nice."
    targets = sentiment.word_targets(text, (1, -1), sentiment.CONFIG.num_latents)
    good, nice = _latents_reading(text, "good"), _latents_reading(text, "nice")
    assert good and nice
    classes = sentiment.WORD_CLASSES
    for i, target in enumerate(targets):
        expected = ("earlier positive" if i in good else "last negative" if i in nice else "none")
        if 2 * i - 4 > len(text):
            assert target == -100, i  # past the end: not taught
        else:
            assert classes[target] == expected, (i, classes[target], expected)


def test_sentences_whose_words_do_not_pair_with_their_clauses_are_not_taught():
    assert set(sentiment.word_targets("good and great and awful", (1, 1), 80)) == {-100}
    assert set(sentiment.word_targets("the staff", (1,), 80)) == {-100}
    train, _, _ = sentiment.vocabularies()
    drawn = sentiment.training_sentences(train, random.Random(3), 1.0, 2000)
    untaught = sum(set(sentiment.word_targets(t, c, 80)) == {-100} for t, _, c in drawn)
    assert untaught <= 10, untaught
