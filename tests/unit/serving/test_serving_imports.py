"""The serving path is torch-free when the graph it needs exists: a worker that loads a model whose
graph is found (and answers through the built-in hooks) imports neither torch nor transformers,
nor what only makes graphs (NNCF, onnx, scipy), and maps no libtorch. Each run in a fresh
interpreter: this test process has imported them all long ago."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "tests" / "fixtures" / "models" / "distilbert-tiny-s0"
HEAVY = ("torch", "transformers", "nncf", "onnx", "scipy", "sklearn")

# A worker's start: the entrypoint's hook check, then the handler loads, warms up and answers.
WORKER = """
import json, os, sys
from serving.handler import Handler, load_hooks
from serving.settings import Settings

settings = Settings.from_env(os.environ)
handler = Handler(load_hooks(settings), settings, settings.model_dir)
handler.load_model()
handler.warm_up()
maps = open("/proc/self/maps").read()
print(json.dumps({
    "heavy": sorted(name for name in %r if name in sys.modules),
    "libtorch": "libtorch" in maps,
}))
"""


def run_worker(env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", WORKER % (HEAVY,)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_worker_serving_a_found_graph_imports_no_training_framework(tmp_path, precision):
    env = {
        "QA_MODEL_DIR": str(MODEL),
        "QA_RUN_DIR": str(tmp_path / "run"),
        "QA_GRAPH_CACHE_DIR": str(tmp_path / "graphs"),
        "QA_PRECISION": precision,
    }
    first = run_worker(env)  # no graph yet: made at start-up, which takes torch and the rest
    assert "torch" in first["heavy"], first
    found = run_worker(env)
    assert found == {"heavy": [], "libtorch": False}, found
