"""Hypothesis caches what it learns (constants of the code under test, Unicode tables) in ./.hypothesis even
without an example database: call keep_out_of_the_tree() before any test runs Hypothesis."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir


def keep_out_of_the_tree() -> None:
    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "qa-tests-hypothesis")
