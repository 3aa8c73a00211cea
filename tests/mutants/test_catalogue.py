"""The mutant list stays current: every replacement applies once to today's code and breaks it for real."""

from __future__ import annotations

import ast
import re

import pytest

from .catalogue import MUTANTS
from .mutate import PACKAGE, ROOT, Mutant, StaleMutant


def test_names_are_unique_and_the_issue_minimum_is_there():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name) for name in names), "names become directory names"
    assert len(MUTANTS) >= 21  # issue 20: its six survivors, its five killed, and ten more


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_the_replacement_applies_and_still_compiles(mutant: Mutant):
    source = (PACKAGE / mutant.path).read_text(encoding="utf-8")
    mutated = mutant.mutated(source)  # raises StaleMutant when the code moved
    assert mutated != source
    ast.parse(mutated)  # a real bug, not a syntax error
    for test in mutant.tests:
        path = test.split("::")[0]
        assert (ROOT / path).is_file(), f"{mutant.name}: {path} does not exist"
        function = test.split("::")[1].split("[")[0] if "::" in test else None
        assert function is None or f"def {function}(" in (ROOT / path).read_text(), f"{mutant.name}: no {test}"


def test_a_replacement_that_no_longer_applies_is_refused():
    moved = Mutant("moved", "tasks/flow.py", "code that is not there", "x", ("tests",))
    with pytest.raises(StaleMutant, match="occurs 0 times"):
        moved.mutated((PACKAGE / "tasks/flow.py").read_text())
