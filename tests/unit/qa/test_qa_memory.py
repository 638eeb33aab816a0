"""qa/memory.py: the container's limit and free memory from cgroup v1 and v2 files, a process's
memory, the load estimate and the check; and load_model refusing a load before reading weights."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from qa import memory
from qa.graph_files import graph_kind
from qa.loading import load_model
from qa.memory import MB, InsufficientMemory
from qa.options import BACKEND_PRECISIONS, QAOptions

GB = 1 << 30


def cgroup_v2(root: Path, limit: str, current: int, inactive_file: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "memory.max").write_text(limit + "\n")
    (root / "memory.current").write_text(f"{current}\n")
    (root / "memory.stat").write_text(f"anon 123\nfile 999\ninactive_file {inactive_file}\nactive_file 5\n")
    return root


def cgroup_v1(root: Path, limit: int, usage: int, inactive_file: int) -> Path:
    (root / "memory").mkdir(parents=True, exist_ok=True)
    (root / "memory" / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (root / "memory" / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (root / "memory" / "memory.stat").write_text(
        f"cache 1\ninactive_file 7\ntotal_cache 1\ntotal_inactive_file {inactive_file}\n"
    )
    return root


def meminfo(tmp_path: Path, available_kb: int) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       99999999 kB\nMemFree:  1 kB\nMemAvailable:   {available_kb} kB\n")
    return path


def test_cgroup_v2_limit_less_working_set_is_free(tmp_path):
    root = cgroup_v2(tmp_path / "cg", str(2 * GB), current=GB, inactive_file=256 * MB)
    assert memory.memory_limit_bytes(root) == 2 * GB
    # Page cache it could drop does not count as used.
    assert memory.free_bytes(root, meminfo(tmp_path, 50 * GB // 1024)) == GB + 256 * MB


def test_the_machines_available_memory_bounds_a_generous_limit(tmp_path):
    root = cgroup_v2(tmp_path / "cg", str(64 * GB), current=GB, inactive_file=0)
    assert memory.free_bytes(root, meminfo(tmp_path, 3 * GB // 1024)) == 3 * GB


def test_no_limit_means_the_machines_available_memory(tmp_path):
    root = cgroup_v2(tmp_path / "cg", "max", current=GB, inactive_file=0)
    assert memory.memory_limit_bytes(root) is None
    assert memory.free_bytes(root, meminfo(tmp_path, 5 * GB // 1024)) == 5 * GB


def test_cgroup_v1_files_and_its_no_limit_value(tmp_path):
    root = cgroup_v1(tmp_path / "cg", limit=GB, usage=900 * MB, inactive_file=100 * MB)
    assert memory.memory_limit_bytes(root) == GB
    assert memory.free_bytes(root, meminfo(tmp_path, 50 * GB // 1024)) == 224 * MB
    unlimited = cgroup_v1(tmp_path / "cg1", limit=9223372036854771712, usage=MB, inactive_file=0)
    assert memory.memory_limit_bytes(unlimited) is None


def test_over_the_limit_is_no_memory_free_and_nothing_known_is_none(tmp_path):
    root = cgroup_v2(tmp_path / "cg", str(GB), current=2 * GB, inactive_file=0)
    assert memory.free_bytes(root, meminfo(tmp_path, 50 * GB // 1024)) == 0
    assert memory.free_bytes(tmp_path / "nothing", tmp_path / "no-meminfo") is None


def test_process_memory_is_pss_else_rss(tmp_path):
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "smaps_rollup").write_text("Rss:  2048 kB\nPss:  1024 kB\nPss_Anon: 10 kB\n")
    assert memory.process_bytes(42, proc) == 1024 * 1024
    (proc / "43").mkdir()
    (proc / "43" / "statm").write_text("1000 300 20 1 0 50 0\n")
    assert memory.process_bytes(43, proc) == 300 * os.sysconf("SC_PAGE_SIZE")
    assert memory.process_bytes(44, proc) == 0  # gone
    held = memory.process_bytes()  # this test process, from the real /proc
    assert 10 * MB < held < 64 * GB


def test_every_graph_a_backend_runs_has_an_estimate_and_making_one_costs_more():
    kinds = {graph_kind(b, p) for b, precisions in BACKEND_PRECISIONS.items() for p in precisions}
    weights = 250 * MB
    for kind in kinds:
        found = memory.load_need_bytes(weights, kind, graph_found=True)
        assert found > weights * 0.8, kind  # at least the weights' own copy
        if kind is not None:
            assert memory.load_need_bytes(weights, kind, graph_found=False) > 2 * found, kind
    assert memory.load_need_bytes(2 * weights, "fp32", False) > memory.load_need_bytes(weights, "fp32", False)


def test_weight_bytes_add_up_the_shards(tmp_path):
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 300)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x" * 200)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 1000)
    assert memory.weight_bytes(tmp_path) == 500


@pytest.fixture
def free_mb(monkeypatch):
    def set_free(mb: int | None, limit_mb: int | None = 1024) -> None:
        monkeypatch.setattr(memory, "free_bytes", lambda *a, **k: None if mb is None else mb * MB)
        monkeypatch.setattr(memory, "memory_limit_bytes", lambda *a, **k: limit_mb and limit_mb * MB)

    return set_free


def test_a_load_over_the_free_memory_is_refused_naming_both_figures(free_mb):
    free_mb(300)
    with pytest.raises(InsufficientMemory) as caught:
        memory.check_load_fits("/opt/ml/models/big", 1500 * MB, "refuse", ": unload a model")
    message = str(caught.value)
    assert message == (
        "/opt/ml/models/big: the load needs about 1,500 MB and the container has 300 MB free "
        "(of 1,024 MB): unload a model"
    )
    assert (caught.value.need_bytes, caught.value.free_bytes) == (1500 * MB, 300 * MB)


def test_warn_logs_and_loads_and_off_reads_nothing(free_mb, caplog, monkeypatch):
    free_mb(300)
    with caplog.at_level(logging.INFO, logger="qa.memory"):
        memory.check_load_fits("m", 1500 * MB, "warn")
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "1,500 MB" in caplog.text and "QA_MEMORY_CHECK=warn" in caplog.text

    monkeypatch.setattr(memory, "free_bytes", lambda *a, **k: pytest.fail("read with the check off"))
    memory.check_load_fits("m", 1500 * MB, "off")


def test_a_load_that_fits_is_logged_and_unknown_memory_is_said(free_mb, caplog):
    free_mb(3000, limit_mb=None)
    with caplog.at_level(logging.INFO, logger="qa.memory"):
        memory.check_load_fits("m", 1500 * MB, "refuse")
    assert "needs about 1,500 MB; 3,000 MB free" in caplog.text
    free_mb(None)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qa.memory"):
        memory.check_load_fits("m", 1500 * MB, "refuse")
    assert "not checked" in caplog.text and caplog.records[0].levelname == "WARNING"


def test_load_model_refuses_before_reading_the_weights(qa_model_dir, free_mb, monkeypatch, tmp_path):
    free_mb(1)
    import qa.loading

    monkeypatch.setattr(qa.loading, "load_torch_model", lambda *a: pytest.fail("weights read"))
    options = QAOptions(backend="onnx", memory_check="refuse", graph_cache=tmp_path)
    with pytest.raises(InsufficientMemory, match=r"needs about [\d,]+ MB .* 1 MB free .*qa.graphs export"):
        load_model(qa_model_dir, options)


def test_load_model_warns_and_serves_when_told_to(qa_model_dir, free_mb, caplog, tmp_path):
    free_mb(1)
    options = QAOptions(backend="torch", memory_check="warn", graph_cache=tmp_path)
    with caplog.at_level(logging.WARNING, logger="qa.memory"):
        model = load_model(qa_model_dir, options)
    assert model is not None
    assert "1 MB free" in caplog.text and "qa.graphs export" not in caplog.text  # torch makes no graph


def test_resident_memory_is_rss_even_where_pss_is_known(tmp_path):
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "smaps_rollup").write_text("Pss:  1024 kB\n")
    (proc / "42" / "statm").write_text("1000 300 20 1 0 50 0\n")
    assert memory.resident_bytes(42, proc) == 300 * os.sysconf("SC_PAGE_SIZE")
    assert memory.resident_bytes(44, proc) == 0  # gone
    assert 10 * MB < memory.resident_bytes() < 64 * GB
