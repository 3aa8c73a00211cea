"""FillMaskRunner on its own: each item of a padded batch gets the probabilities at its own masked positions."""

import numpy as np
import pytest
import torch

from perceiver_serve.modeling import ByteTokenizer, load_model
from perceiver_serve.tasks.text import FillMaskOptions, FillMaskRunner, MaskedText, context_windows

from ..numerics import FP32, assert_close, assert_distinct
from ..reactive import reactive_models


@pytest.fixture(scope="module")
def runner() -> FillMaskRunner:
    return FillMaskRunner(load_model(reactive_models() / "language-mlm" / "checkpoint"), FillMaskOptions())


def masked(runner: FillMaskRunner, text: bytes, positions: list[int]) -> MaskedText:
    """``text`` with the bytes at ``positions`` masked; positions count the [CLS] token, as the runner's do."""
    ids = runner.tokenizer.encode(text)
    for p in positions:
        ids[p] = ByteTokenizer.MASK
    return MaskedText(ids, positions)


def direct(runner: FillMaskRunner, item: MaskedText) -> np.ndarray:
    """Logits at every position of the item, run alone and unpadded (the runner answers logits;
    the softmax belongs to the answer, so the v2 LOGITS output can be the raw ones)."""
    with torch.no_grad():
        return runner.model(torch.tensor([item.ids])).double().numpy()[0]


def test_each_item_gets_its_own_positions_in_order(runner):
    items = [
        masked(runner, b"The quick brown fox jumps", [5, 6, 17]),
        masked(runner, b"over the lazy dog", [2]),  # shorter: padded, and fewer positions
        masked(runner, b"Pack my box with five dozen liquor jugs.", [30, 1, 12, 13]),  # not in order
    ]
    results = runner.run(items)
    assert len(results) == len(items)
    for item, got in zip(items, results):
        assert got.shape == (len(item.positions), runner.model.config.vocab_size)
        alone = direct(runner, item)
        assert_close(got, alone[item.positions], FP32, f"{item.positions}")
        for p in item.positions:  # the neighbouring positions would show
            assert_distinct(alone[p], alone[p - 1], FP32, f"position {p} against {p - 1}")
            assert_distinct(alone[p], alone[p + 1], FP32, f"position {p} against {p + 1}")


def test_a_batch_equals_its_items_run_one_by_one(runner):
    items = [masked(runner, b"abcdefgh", [3, 4]), masked(runner, b"a much longer text than the first", [7])]
    together = runner.run(items)
    for item, got in zip(items, together):
        (alone,) = runner.run([item])
        assert_close(got, alone, FP32)
    assert_distinct(together[0][0], together[1][0], FP32, "the other item's answer")


@pytest.mark.parametrize("length, positions, width, expected", [
    (150, [3, 70], 0, [(0, 150, [3, 70])]),               # 0: the whole text, however long
    (62, [0, 61], 62, [(0, 62, [0, 61])]),                # fits: the whole text
    (150, [10], 62, [(0, 62, [10])]),                     # near the start: moved inside the text
    (150, [100, 101, 102, 103, 104], 62, [(72, 134, [100, 101, 102, 103, 104])]),  # centred: 28 bytes each side
    (150, [140], 62, [(88, 150, [140])]),                 # near the end
    (150, [40, 70, 71], 62, [(25, 87, [40, 70]), (41, 103, [71])]),  # a group spans at most 31 bytes
    (2046, list(range(0, 2046, 100)), 62, [(max(0, min(p - 30, 2046 - 62)), max(0, min(p - 30, 2046 - 62)) + 62, [p])
                                           for p in range(0, 2046, 100)]),
])
def test_context_windows(length, positions, width, expected):
    windows = context_windows(length, positions, width)
    assert windows == expected
    assert sorted(p for _, _, answered in windows for p in answered) == positions  # each answered once
    assert all(end - start == min(width or length, length) for start, end, _ in windows)
