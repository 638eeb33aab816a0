"""Comparing answers with golden ones (tests/fixtures/golden/*.json): the same text and character span, the
score to a relative tolerance (other backends, other float orders), and no other keys."""

from __future__ import annotations

import pytest

REL_TOL = 1e-4


def assert_same_answers(got, expected, where: str = "") -> None:
    """`got` is `expected`: one answer (a dict) or a list of them (or of lists, for a batch)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{where}: expected a dict, got {got!r}"
        assert (got["answer"], got["start"], got["end"]) == (
            expected["answer"],
            expected["start"],
            expected["end"],
        ), f"{where}: got {got!r}, expected {expected!r}"
        assert got["score"] == pytest.approx(expected["score"], rel=REL_TOL, abs=1e-12), where
        assert set(got) == {"score", "start", "end", "answer"}, where
    else:
        assert isinstance(got, list), f"{where}: expected a list, got {got!r}"
        assert len(got) == len(expected), f"{where}: got {got!r}, expected {expected!r}"
        for index, (g, e) in enumerate(zip(got, expected)):
            assert_same_answers(g, e, f"{where}[{index}]")
