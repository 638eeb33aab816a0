"""The targets are data (bench/targets.json), checked generically on a run's document."""

import json

import pytest

from bench import document, targets
from bench.render import markdown, section

SPEC = {
    "configurations": {"int8": [{"QA_PRECISION": "int8"}]},
    "figures": {
        "ratio.rps": {"label": "throughput / peer", "format": ".2f"},
        "result.match_default": {"label": "answers", "format": ".1%"},
        "level.serving_overhead": {"label": "serving overhead", "format": ".1%"},
    },
    "targets": [
        {
            "config": "int8",
            "concurrency": 4,
            "figure": "ratio.rps",
            "comparison": ">=",
            "threshold": 4.0,
            "isa_class": "avx2",
        },
        {
            "config": "int8",
            "concurrency": 4,
            "figure": "ratio.rps",
            "comparison": ">=",
            "threshold": 9.0,
            "isa_class": "avx512",
        },
        {
            "config": "int8",
            "concurrency": 4,
            "figure": "result.match_default",
            "comparison": ">=",
            "threshold": 0.97,
            "isa_class": None,
        },
        {
            "config": "int8",
            "concurrency": 4,
            "figure": "level.serving_overhead",
            "comparison": "<",
            "threshold": 0.1,
            "isa_class": None,
        },
        {
            "config": "bf16",
            "concurrency": 4,
            "figure": "ratio.rps",
            "comparison": ">=",
            "threshold": 2.5,
            "isa_class": None,
        },
    ],
}


def level(concurrency: int, rps: float, cpu: float, kernel: float | None = None) -> dict:
    figures = {"concurrency": concurrency, "rps": rps, "p50_ms": 100.0, "p99_ms": 200.0, "cpu_s_per_req": cpu}
    figures.update(errors=0, requests=100, peak_memory_bytes=2**30)
    return figures if kernel is None else {**figures, "kernel_cpu_s_per_req": kernel}


def run_doc(cls: str = "avx2", kernel: float = 0.05) -> dict:
    results = [
        {"name": "peer", "kind": "peer", "env": {}, "error": None, "levels": [level(4, 6.0, 0.3)]},
        {
            "name": "fast",
            "kind": "image",
            "env": {"QA_PRECISION": "int8"},
            "error": None,
            "levels": [level(4, 30.0, 0.06, kernel)],
            "match_default": 0.96,
        },
    ]
    doc = {"isa_class": cls, "results": results, "ratios": document.ratios(results)}
    document.add_derived_figures(doc)
    return doc


def test_each_target_of_the_class_is_checked_on_the_configuration_it_names_by_env():
    rows = {t["figure"]: t for t in targets.check(run_doc(), SPEC)}
    assert set(rows) == {
        "ratio.rps",
        "result.match_default",
        "level.serving_overhead",
    }  # avx512's and bf16's left out
    assert rows["ratio.rps"]["value"] == 5.0 and rows["ratio.rps"]["met"] is True
    assert rows["result.match_default"]["met"] is False
    assert rows["ratio.rps"]["target"] == "int8 (run as `fast`), c=4: throughput / peer"


def test_the_serving_overhead_is_the_server_cpu_over_the_kernel_cpu_less_one():
    doc = run_doc(kernel=0.05)
    assert doc["results"][1]["levels"][0]["serving_overhead"] == pytest.approx(0.2)
    overhead = next(t for t in targets.check(doc, SPEC) if t["figure"] == "level.serving_overhead")
    assert overhead["met"] is False
    within = next(
        t for t in targets.check(run_doc(kernel=0.058), SPEC) if t["figure"] == "level.serving_overhead"
    )
    assert within["met"] is True and within["value"] == pytest.approx(0.06 / 0.058 - 1, abs=1e-4)


def test_a_figure_the_run_did_not_measure_is_shown_but_neither_met_nor_missed():
    doc = run_doc()
    del doc["results"][1]["levels"][0]["kernel_cpu_s_per_req"]
    document.add_derived_figures(doc)
    overhead = next(t for t in targets.check(doc, SPEC) if t["figure"] == "level.serving_overhead")
    assert overhead["value"] is None and overhead["met"] is None
    assert (
        targets.markdown([overhead])[2] == "| int8 (run as `fast`), c=4: serving overhead | — | < 10.0% | — |"
    )


def test_the_targets_file_names_only_figures_and_comparisons_the_checker_knows():
    spec = targets.load()
    for t in spec["targets"]:
        assert t["figure"] in spec["figures"] and t["comparison"] in targets.COMPARISONS
        assert t["figure"].partition(".")[0] in ("ratio", "level", "result")


def test_every_committed_results_file_renders(tmp_path):
    runs = document.load_runs(document.RESULTS_DIR)
    sides = document.load_side_runs(document.RESULTS_DIR)
    assert runs and all(json.loads(json.dumps(d))["isa_class"] for d in runs)
    text = markdown(runs, sides, tmp_path / "BENCHMARKS.md", tmp_path)
    assert "| configuration | concurrency | req/s |" in text and "serving overhead" in text
    for title in ("Image size, start-up and memory", "Batch Transform against real time", "Overload"):
        assert f"### {title}" in text


def test_the_isa_class_is_finer_than_the_plans_cpu_class():
    assert document.isa_class(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]) == "avx512-vnni-bf16"
    assert document.isa_class(["avx2", "avx512f"]) == "avx512"
    assert document.isa_class(["avx2", "avx_vnni"]) == "avx2-vnni"
    assert document.isa_class([], "aarch64") == "aarch64"


def test_a_section_shows_the_overhead_beside_the_cpu_and_says_when_the_kernel_failed():
    doc = next(d for d in document.load_runs(document.RESULTS_DIR) if d["isa_class"] == "avx2")
    ours = next(r for r in doc["results"] if r["kind"] != "peer" and not r["error"])
    ours["levels"][0]["kernel_cpu_s_per_req"] = ours["levels"][0]["cpu_s_per_req"] / 1.25
    document.add_derived_figures(doc)
    doc["results"].append({**ours, "name": "broken", "kernel_error": "RuntimeError: exit 1: no graph"})
    lines = section(doc, None)
    assert any(line.startswith(f"| {ours['name']} |") and "| 25.0% |" in line for line in lines)
    assert "- broken: kernel not measured: RuntimeError: exit 1: no graph" in lines
