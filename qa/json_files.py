"""A model directory's JSON files (config.json, the tokenizer's), read one way everywhere."""

from __future__ import annotations

import json
from pathlib import Path


def read_json_object(path: Path, error: type[Exception], *, missing_ok: bool = False) -> dict:
    """The JSON object in `path` ({} for a missing file when `missing_ok`); `error(message)` naming
    the file when it cannot be read or holds something else than an object."""
    if missing_ok and not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise error(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value
