"""The README's and the contract's configuration tables are the settings' declarations, and the
docs name no variable the container does not read (but those exempted below, with why)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serving import settings_docs
from serving.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[3]
# Variables the docs name that no setting reads, and why.
NOT_READ = {"MMS_JOB_QUEUE_SIZE": "written by serving/mms_launch.py for Multi Model Server to read"}
VARIABLE = re.compile(r"\b(?:QA|SAGEMAKER|HF|MMS)_[A-Z][A-Z0-9_]*\b")


def table(name: str) -> str:
    text = (ROOT / name).read_text()
    return text.split(settings_docs.BEGIN, 1)[1].split(settings_docs.END, 1)[0]


@pytest.mark.parametrize("name", settings_docs.TABLES)
def test_the_docs_tables_are_written_from_the_settings(name):
    text = (ROOT / name).read_text()
    assert settings_docs.rewritten(text, settings_docs.TABLES[name]) == text, (
        "run python -m serving.settings_docs"
    )


@pytest.mark.parametrize("name", settings_docs.TABLES)
def test_every_setting_has_a_row_and_every_row_a_setting(name):
    rows = [line for line in table(name).splitlines() if line.startswith("| `")]
    documented = [re.match(r"\| `([A-Z0-9_]+)`", row).group(1) for row in rows]
    assert sorted(documented) == sorted(spec.var for spec in SETTINGS.values())


@pytest.mark.parametrize("name", settings_docs.TABLES)
def test_the_docs_name_only_variables_the_container_reads(name):
    read = {name for spec in SETTINGS.values() for name in (spec.var, spec.renamed_from, spec.also_read)}
    named = set(VARIABLE.findall((ROOT / name).read_text()))
    assert named - read - set(NOT_READ) == set()


def test_a_stale_table_is_found(tmp_path):
    text = (ROOT / "README.md").read_text()
    stale = text.replace("| `QA_PRELOAD` |", "| `QA_PRELOAD_ALL` |")
    assert settings_docs.rewritten(stale, settings_docs.TABLES["README.md"]) == text


def test_defaults_are_written_as_they_resolve():
    readme = table("README.md")
    assert "| `SAGEMAKER_BIND_TO_PORT` | `8080` |" in readme
    assert "| `QA_REQUEST_METRICS` | `true` |" in readme
    assert "| `QA_MEMORY_CHECK` | `refuse` on multi-model endpoints, else `warn` |" in readme
    assert "| `QA_BATCH_WAIT_MS` | `2` | 0-1000 |" in table("docs/contract.md")
