"""One setting: the environment variable behind a field, its bounds or allowed values, one line of doc.

A settings class declares each of its fields once, with `setting(...)`: the field's name, type
and default are the dataclass's own, the rest rides in the field's metadata. From these
declarations come the checks and their messages (`problems`), the parsing from the environment
(serving/settings.py) and the documentation tables (serving/settings_docs.py). Nothing here reads
the environment: the QA library only names its options by the variables users set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Setting:
    var: str
    doc: str  # one line: what it does
    bounds: tuple[int, int] | None = None  # an integer's lowest and highest values
    choices: tuple[str, ...] | None = None  # the values allowed, in the order the docs list them
    # The default as the environment resolves it, from the settings resolved before it (a mapping
    # of field names), when it is not the field's own default: e.g. threads from the CPUs.
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    default_doc: str | None = None  # the default in words, when derived or none
    allowed_doc: str | None = None  # what is accepted, in words, when neither bounds nor choices say it
    # Reads a raw value (stripped, not empty) into the field's value; raises ValueError with the reason.
    parse: Callable[[str], Any] | None = None
    renamed_from: str | None = None  # a former name, still read, with a warning naming this one
    also_read: str | None = None  # another name read when this one is unset (no warning)

    def problem(self, value: Any, *, upper_bounds: bool = True) -> str | None:
        """What is wrong with this value, in the words every message uses, or None."""
        if value is None:
            return None
        if self.bounds is not None:
            lo, hi = self.bounds
            if value < lo or (upper_bounds and value > hi):
                return f"{self.var}={value} is out of range: it must be between {lo} and {hi}"
        if self.choices is not None and value not in self.choices:
            return f"{self.var}={value!r} is not supported: allowed values are {', '.join(self.choices)}"
        return None


def setting(var: str, default: Any, doc: str, **spec: Any) -> Any:
    """A dataclass field read from `var` (the keywords: Setting's)."""
    return dataclasses.field(default=default, metadata={"setting": Setting(var, doc, **spec)})


def settings_of(cls: Any) -> dict[str, Setting]:
    """Field name -> Setting, for the fields of a dataclass (or an instance) declared with `setting`."""
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls) if "setting" in f.metadata}


def first_problem(obj: Any, *, upper_bounds: bool = True) -> str | None:
    """The first field of `obj` whose value its setting refuses, described; None when all are fine."""
    for name, spec in settings_of(obj).items():
        if (problem := spec.problem(getattr(obj, name), upper_bounds=upper_bounds)) is not None:
            return problem
    return None
