"""Comparisons of numbers that can fail: relative tolerances, and proof that a wrong answer would show.

An equality check with a tolerance proves something only when the plausible wrong answers
(the neighbouring position, the frames swapped, another caller's text) lie farther from the
right one than the tolerance. ``assert_distinct`` and ``distinguishable`` check that first.

Tolerances are relative to the largest magnitude compared. The real error of our fp32 paths
against a direct computation or transformers is float rounding: 1e-7 to 9e-7 relative on most
outputs, 2.6e-6 for a text batched with padding next to longer ones, 4.7e-6 for a flow field
(a small difference of larger activations). ``FP32`` allows 1e-5, still 4000 times below
a 4 % error such as a head scaled by 1/1.04. Half precisions round every matmul
input: bf16 keeps 8 mantissa bits (relative step 2^-8 ≈ 4e-3) and fp16 11 bits (2^-11 ≈ 5e-4);
through a dozen layers a few steps accumulate, hence ``BF16`` 5e-2 and ``FP16`` 1e-2.
"""

from __future__ import annotations

import numpy as np

FP32 = 1e-5
#: An fp32 answer computed in a batch padded to longer texts, against the same text alone:
#: every masked softmax sums in another order. Measured up to 3e-5 relative on the reactive
#: text model (batches of 16 texts of 12 to 250 bytes).
FP32_PADDED = 1e-4
FP16 = 1e-2
BF16 = 5e-2

#: How many tolerances apart a wrong answer must lie for a check to count as discriminating.
MARGIN = 100.0


def _array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def relative_error(actual, expected) -> float:
    """Largest absolute difference over the largest magnitude of ``expected``."""
    actual, expected = _array(actual), _array(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.abs(expected).max()
    assert scale > 0, "the expected values are all zero: a relative comparison would prove nothing"
    return float(np.abs(actual - expected).max() / scale)


def assert_close(actual, expected, rtol: float = FP32, what: str = "") -> None:
    error = relative_error(actual, expected)
    assert error <= rtol, f"{what} differs by {error:.3g} relative (allowed {rtol:.3g})"


def assert_distinct(right, wrong, rtol: float = FP32, what: str = "") -> None:
    """``wrong`` (a plausible mistake) is at least ``MARGIN`` tolerances away from ``right``."""
    error = relative_error(wrong, right)
    assert error > MARGIN * rtol, (
        f"{what}: the wrong answer is only {error:.3g} (relative) from the right one, under "
        f"{MARGIN:g} × the tolerance {rtol:.3g}: the check could not tell them apart"
    )


def distinguishable(answers: np.ndarray, tolerance: float) -> float:
    """The share of inputs whose answer is farther than ``2 × tolerance`` (absolute) from every other's."""
    flat = _array(answers).reshape(len(answers), -1)
    distance = np.abs(flat[:, None] - flat[None]).max(-1)
    np.fill_diagonal(distance, np.inf)
    return float((distance.min(1) > 2 * tolerance).mean())
