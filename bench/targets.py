"""The targets (bench/targets.json, data), checked generically on a bench.run document: each
names a configuration, a concurrency, a figure, a comparison and a threshold, and the
instruction-set class it holds on."""

from __future__ import annotations

import json
import operator
from pathlib import Path

from bench.tables import Column, table

TARGETS_FILE = Path(__file__).with_name("targets.json")
COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def load(path: Path = TARGETS_FILE) -> dict:
    return json.loads(Path(path).read_text())


def find_config(results: list[dict], name: str, configurations: dict[str, list[dict]]) -> dict | None:
    """Ours named `name`, else the one configuration run with one of the name's envs."""
    ours = [r for r in results if r["kind"] != "peer"]
    named = next((r for r in ours if r["name"] == name), None)
    if named is not None:
        return named
    by_env = [r for r in ours if (r.get("env") or {}) in configurations.get(name, [])]
    return by_env[0] if len(by_env) == 1 else None


def figure(doc: dict, result: dict, name: str, concurrency: int):
    """A figure of one configuration: `ratio.<key>`, `level.<key>` or `result.<key>`."""
    source, _, key = name.partition(".")
    if result["error"]:
        return None
    if source == "result":
        return result.get(key)
    if source == "ratio":
        rows = [x for x in doc.get("ratios") or [] if x["name"] == result["name"]]
    else:
        rows = result.get("levels") or []
    row = next((x for x in rows if x["concurrency"] == concurrency), {})
    return row.get(key)


def check(doc: dict, spec: dict | None = None) -> list[dict]:
    """The targets for the doc's class, each with this run's value and whether it is met."""
    spec = spec or load()
    out = []
    for t in spec["targets"]:
        if t.get("isa_class") not in (None, doc["isa_class"]):
            continue
        result = find_config(doc["results"], t["config"], spec["configurations"])
        if result is None:
            continue
        value = figure(doc, result, t["figure"], t["concurrency"])
        what = spec["figures"][t["figure"]]
        label = t["config"] if result["name"] == t["config"] else f"{t['config']} (run as `{result['name']}`)"
        out.append(
            {
                **t,
                "target": f"{label}, c={t['concurrency']}: {what['label']}",
                "format": what["format"],
                "run_as": result["name"],
                "value": value,
                "met": None if value is None else COMPARISONS[t["comparison"]](value, t["threshold"]),
            }
        )
    return out


def _met(met: bool) -> str:
    return "yes" if met else "**no**"


COLUMNS = [
    Column("target", "target", left=True),
    Column("this run", lambda t: None if t["value"] is None else format(t["value"], t["format"])),
    Column("bound", lambda t: f"{t['comparison']} {t['threshold']:{t['format']}}"),
    Column("met", "met", _met),
]


def markdown(rows: list[dict]) -> list[str]:
    return table(rows, COLUMNS)
