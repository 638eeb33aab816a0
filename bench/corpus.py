"""The benchmark's requests: the serving code's built-in SQuAD-like corpus (code/qa_corpus.py),
which also calibrates int8 graphs (on another seed than the benchmark's)."""

from __future__ import annotations

import sys
from pathlib import Path

_CODE = str(Path(__file__).resolve().parents[1] / "code")
if _CODE not in sys.path:  # code/ is laid out flat, as in the image's /opt/program/code
    sys.path.insert(0, _CODE)

from qa_corpus import MAX_WORDS, MIN_WORDS, SEED, QARequest, make_requests  # noqa: E402

__all__ = ["MAX_WORDS", "MIN_WORDS", "SEED", "QARequest", "make_requests"]
