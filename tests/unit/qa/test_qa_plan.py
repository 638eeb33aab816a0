"""The execution plan (qa/plan.py): backend, lanes and warnings from the CPU's flags."""

from __future__ import annotations

import pytest

from qa import plan as qa_plan
from qa.backends import ALONE, ANY_WIDTH, SAME_WIDTH
from qa.cpu import cpu_flags, cpu_name
from qa.options import OptionsError, QAOptions
from serving.settings import Settings, SettingsError

ZEN4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
ZEN3 = {"avx2", "fma"}


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(str(tmp_path / "missing")) == set()
    (tmp_path / "named").write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu\n")
    assert (
        cpu_name(str(tmp_path / "named")) == "AMD EPYC 9R14"
        and cpu_name(str(tmp_path / "missing")) == "unknown"
    )


@pytest.mark.parametrize(
    "flags,precision,backend,lanes",
    [
        (ZEN4, "fp32", "openvino", 1),
        (ZEN4, "bf16", "openvino", 2),
        (ZEN4, "int8", "openvino", 2),
        # The AVX2 class keeps what was measured there.
        (ZEN3, "fp32", "onnx", 2),
        (ZEN3, "int8", "onnx", 2),
        (ZEN3, "bf16", "openvino", 2),
        (set(), "fp32", "onnx", 2),  # flags unknown: the plan that assumes least
    ],
)
def test_auto_picks_the_measured_backend_for_the_cpu_class(flags, precision, backend, lanes):
    plan = qa_plan.resolve_plan(Settings(precision=precision, inference_threads=2), flags)
    assert (plan.backend, plan.precision, plan.lanes, plan.threads) == (backend, precision, lanes, 2)
    assert "CPU class" in plan.chosen_by


def test_each_variable_overrides_its_part_of_the_plan():
    plan = qa_plan.resolve_plan(Settings(backend="onnx", precision="int8", parallel_batches=3), ZEN4)
    assert (plan.backend, plan.lanes, plan.chosen_by) == ("onnx", 3, "QA_BACKEND=onnx")


def test_a_combination_no_backend_runs_is_refused_naming_both_variables():
    with pytest.raises(OptionsError, match="QA_PRECISION=int8.*QA_BACKEND=torch"):
        QAOptions(backend="torch", precision="int8")
    with pytest.raises(SettingsError, match="QA_PRECISION=int8.*QA_BACKEND=torch"):
        Settings(backend="torch", precision="int8")


@pytest.mark.parametrize(
    "batching,says",
    [
        (ANY_WIDTH, "at most 10% padding"),
        (SAME_WIDTH, "multiple of 16 tokens"),
        (ALONE, "one window per pass"),
    ],
)
def test_the_plan_is_described_in_one_line(batching, says):
    plan = qa_plan.resolve_plan(Settings(precision="int8", inference_threads=2, parallel_batches=2), ZEN4)
    line = plan.describe(batching, Settings())
    assert line.startswith(
        "execution plan: openvino int8 (chosen by the avx512 CPU class), 2 stream(s) of 1 thread(s)"
    )
    assert says in line and "\n" not in line


@pytest.mark.parametrize(
    "flags,precision,settings,adaptive",
    [
        (ZEN4, "int8", {}, True),
        (ZEN4, "bf16", {}, True),
        (ZEN4, "fp32", {}, False),  # one stream of all the threads anyway
        (ZEN4, "int8", {"parallel_batches": 2}, False),  # QA_PARALLEL_BATCHES fixes the layout
        (ZEN4, "int8", {"inference_threads": 1}, False),  # one thread: nothing to share out
        (ZEN4, "int8", {"backend": "onnx"}, True),  # a session of all the threads, one of a share
        (ZEN4, "fp32", {"backend": "onnx"}, True),
        (ZEN4, "fp32", {"backend": "onnx", "parallel_batches": 2}, False),
        (ZEN3, "int8", {}, False),  # ONNX Runtime, the default there: not measured there
        (ZEN4, "bf16", {"backend": "torch"}, False),  # torch's threads are process-wide
    ],
)
def test_a_lone_pass_gets_all_the_threads_where_the_plan_adapts(flags, precision, settings, adaptive):
    plan = qa_plan.resolve_plan(
        Settings(**{"precision": precision, "inference_threads": 2, **settings}), flags
    )
    assert plan.adaptive is adaptive
    unit = "stream" if plan.backend == "openvino" else "lane"
    line = plan.describe(SAME_WIDTH, Settings())
    assert (
        f"1 {unit} of 2 threads for a pass alone, 2 {unit}s of 1 thread(s) for passes that overlap" in line
    ) is adaptive


@pytest.mark.parametrize(
    "precision,flags,warned",
    [
        ("bf16", {"avx2"}, "bf16 instructions"),
        ("bf16", {"avx2", "avx512_bf16"}, None),
        ("bf16", {"amx_bf16"}, None),
        ("int8", {"avx2"}, "without VNNI"),
        ("int8", {"avx2", "avx512_vnni"}, None),
        ("fp32", {"avx2"}, None),
        ("bf16", set(), None),  # flags unknown (not Linux): say nothing rather than guess
    ],
)
def test_cpu_warning_for_precisions_the_cpu_lacks(caplog, precision, flags, warned):
    with caplog.at_level("WARNING", logger=qa_plan.log.name):
        qa_plan.check_cpu(precision, flags)
    messages = [r.getMessage() for r in caplog.records]
    if warned:
        assert len(messages) == 1 and warned in messages[0] and f"QA_PRECISION={precision}" in messages[0]
    else:
        assert messages == []
