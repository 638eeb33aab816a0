"""The configuration tables of README.md and docs/contract.md, written from the settings' declarations.

    python -m serving.settings_docs          rewrite both tables
    python -m serving.settings_docs --check  exit 1 when either is not what the declarations say

Each table sits between BEGIN and END in its file; the text around it is the file's own.
tests/unit/serving/test_settings_docs.py fails when a table is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qa.setting import Setting
from serving.settings import SETTINGS, Settings

APP_ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- settings table: written by `python -m serving.settings_docs` from serving/settings.py -->"
END = "<!-- end of settings table -->"
# File -> the table's columns: the README says what each does, the contract also what it accepts.
TABLES = {
    "README.md": ("variable", "default", "meaning"),
    "docs/contract.md": ("variable", "default", "allowed values", "meaning"),
}
_ORDER = ("SAGEMAKER_", "HF_", "QA_")  # SageMaker's variables first, then the Hub's, then ours


def _variable(spec: Setting) -> str:
    cell = f"`{spec.var}`"
    if spec.also_read:
        cell += f" (or `{spec.also_read}`)"
    if spec.renamed_from:
        cell += f" (formerly `{spec.renamed_from}`, still read)"
    return cell


def _default(name: str, spec: Setting) -> str:
    if spec.default_doc:
        return spec.default_doc
    value = Settings.__dataclass_fields__[name].default
    if value is None:
        return "none"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _allowed(name: str, spec: Setting) -> str:
    if spec.allowed_doc:
        return spec.allowed_doc
    if spec.bounds:
        return f"{spec.bounds[0]}-{spec.bounds[1]}"
    if spec.choices:
        return ", ".join(f"`{choice}`" for choice in spec.choices)
    return "boolean" if isinstance(Settings.__dataclass_fields__[name].default, bool) else ""


def render(columns: tuple[str, ...]) -> str:
    """The table with these columns, one row per setting."""
    cells = {
        "variable": lambda name, spec: _variable(spec),
        "default": _default,
        "allowed values": _allowed,
        "meaning": lambda name, spec: spec.doc,
    }
    rows = sorted(SETTINGS.items(), key=lambda item: _ORDER.index(item[1].var.split("_")[0] + "_"))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cells[c](name, spec) for c in columns) + " |" for name, spec in rows]
    return "\n".join(lines)


def rewritten(text: str, columns: tuple[str, ...]) -> str:
    """The file's text with its table written anew."""
    head, rest = text.split(BEGIN + "\n", 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render(columns)}\n{END}{tail}"


def main(argv: list[str]) -> int:
    stale = []
    for name, columns in TABLES.items():
        path = APP_ROOT / name
        text = path.read_text()
        if rewritten(text, columns) != text:
            stale.append(name)
            if "--check" not in argv:
                path.write_text(rewritten(text, columns))
    if stale and "--check" in argv:
        print(
            f"stale settings tables in {', '.join(stale)}: run python -m serving.settings_docs",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
