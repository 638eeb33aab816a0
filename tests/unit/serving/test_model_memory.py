"""serving/model_memory.py: each model's memory from the processes MMS runs for it, the EMF lines
the launcher prints, and the OOM score a loading worker takes and gives back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from emf import check_emf

from qa.memory import MB
from serving import model_memory

A, B = f"model-a-{os.getpid()}", f"model-b-{os.getpid()}"
HOLD = "import sys, time; ballast = bytearray(int(sys.argv[1]) << 20); print('ready', flush=True); time.sleep(60)"


@pytest.fixture
def fake_workers():
    """Processes whose command line reads like MMS's workers: two for model A, one for B (names
    of this test's own: a container's MMS workers show in the host's /proc too)."""
    started = []
    for name, mb in ((A, 40), (A, 20), (B, 30)):
        argv = [sys.executable, "-c", HOLD, str(mb), "model_service_worker.py", "--model-name", name]
        started.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    for process in started:
        assert process.stdout.readline().strip() == "ready"
    yield
    for process in started:
        process.kill()
        process.wait()
        process.stdout.close()


def test_each_models_processes_are_added_up(fake_workers):
    held = model_memory.model_memory()
    assert held[A] > 60 * MB and 30 * MB < held[B] < held[A]


def test_the_reporter_prints_one_valid_emf_line_per_model(fake_workers, capsys):
    reporter = model_memory.ModelMemoryReporter("QAServing", interval_s=0.05)
    reporter.start()
    time.sleep(0.4)
    reporter.stop()
    reporter.join(timeout=5)
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {A, B} <= {r["Model"] for r in records}
    for record in records:
        check_emf(record)
        assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Model"]]
    assert max(r["ModelMemory"] for r in records if r["Model"] == A) > 60 * MB


def test_a_loading_worker_is_the_oom_killers_first_choice_until_it_is_done(tmp_path):
    score = tmp_path / "oom_score_adj"
    score.write_text("0\n")
    with model_memory.first_to_go_while_loading(score):
        assert score.read_text() == "1000"
    assert score.read_text() == "0"
    with pytest.raises(RuntimeError), model_memory.first_to_go_while_loading(score):
        raise RuntimeError("a failed load gives the score back too")
    assert score.read_text() == "0"


def test_the_real_score_goes_up_and_back_without_privileges():
    # In a child process, so this test's own score stays as it was.
    script = (
        "from pathlib import Path\n"
        "from serving.model_memory import first_to_go_while_loading\n"
        "path = Path('/proc/self/oom_score_adj')\n"
        "before = path.read_text().strip()\n"
        "with first_to_go_while_loading():\n"
        "    during = path.read_text().strip()\n"
        "print(before, during, path.read_text().strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, during, after = out.stdout.split()
    assert (during, after) == ("1000", before), out.stderr
