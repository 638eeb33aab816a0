"""Settings.from_env: defaults, parsing, derived values, and errors that name the variable."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import pytest

from qa.options import OptionsError, QAOptions
from serving.settings import RESOLVED_SETTINGS, Settings, SettingsError, container_cpu_limit


def test_defaults_from_an_empty_environment():
    s = Settings.from_env({}, cpu_limit=2.0)
    assert (s.port, s.request_timeout_s, s.max_payload_mb, s.bind_host) == (8080, 60, 6, "0.0.0.0")
    assert s.model_dir == Path("/opt/ml/model")
    assert s.workers == 1 and s.inference_threads == 2
    assert (s.backend, s.precision) == ("auto", "fp32")  # the backend from the CPU: qa/plan.py
    assert s.max_concurrent_transforms == s.workers
    assert s.batch_strategy == "MULTI_RECORD"
    assert s.shutdown_timeout_s == 25


@pytest.mark.parametrize(
    "cpus, workers, inference_threads", [(1.0, 1, 1), (1.5, 1, 1), (2.0, 1, 2), (8.0, 2, 4), (16.0, 4, 4)]
)
def test_default_workers_never_oversubscribe_the_cpu_limit(cpus, workers, inference_threads):
    s = Settings.from_env({}, cpu_limit=cpus)
    assert (s.workers, s.inference_threads) == (workers, inference_threads)


def test_every_variable_is_read():
    env = {
        "SAGEMAKER_BIND_TO_PORT": "9000",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4",
        "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "7",
        "SAGEMAKER_MULTI_MODEL": "false",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "debug",
        "HF_MODEL_ID": "org/model",
        "HF_MODEL_REVISION": "abc123",
        "HF_API_TOKEN": "secret",
        "HF_TASK": "question-answering",
        "QA_BIND_HOST": "127.0.0.1",
        "QA_MODEL_DIR": "/m",
        "QA_RUN_DIR": "/r",
        "QA_THREADS_PER_WORKER": "8",
        "QA_PRELOAD": "yes",
        "QA_INSTALL_USER_REQUIREMENTS": "0",
        "QA_SHUTDOWN_TIMEOUT_S": "20",
    }
    s = Settings.from_env(env, cpu_limit=4.0)
    assert (s.port, s.workers, s.request_timeout_s, s.max_payload_mb) == (9000, 3, 30, 4)
    assert s.batch_strategy == "SINGLE_RECORD" and s.max_concurrent_transforms == 7
    assert s.log_level == logging.DEBUG
    assert (s.hf_model_id, s.hf_model_revision, s.hf_token) == ("org/model", "abc123", "secret")
    assert (s.bind_host, s.model_dir, s.run_dir) == ("127.0.0.1", Path("/m"), Path("/r"))
    assert s.requests_per_worker == 8 and s.preload and not s.install_user_requirements
    assert s.shutdown_timeout_s == 20


def test_hf_token_wins_over_the_legacy_name_and_is_hidden_in_logs():
    s = Settings.from_env({"HF_TOKEN": "new", "HF_API_TOKEN": "old"}, cpu_limit=1.0)
    assert s.hf_token == "new"
    assert s.to_log_dict()["hf_token"] == "***"


@pytest.mark.parametrize(
    "variable, value",
    [
        ("SAGEMAKER_BIND_TO_PORT", "http"),
        ("SAGEMAKER_BIND_TO_PORT", "70000"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "1.5"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "-1"),
        ("SAGEMAKER_BATCH_STRATEGY", "ALL"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "loud"),
        ("HF_TASK", "text-generation"),
        ("QA_THREADS_PER_WORKER", "0"),
        ("QA_SHUTDOWN_TIMEOUT_S", "never"),
    ],
)
def test_a_malformed_value_names_its_variable(variable, value):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: value}, cpu_limit=2.0)
    assert variable in str(raised.value)
    assert "\n" not in str(raised.value)


def test_cpu_limit_reads_the_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert container_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert container_cpu_limit(tmp_path) >= 1.0


def test_cpu_limit_reads_the_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert container_cpu_limit(tmp_path) == 1.0


def test_multi_model_mode_is_a_setting():
    assert Settings.from_env({"SAGEMAKER_MULTI_MODEL": "true"}, cpu_limit=2.0).multi_model is True
    assert Settings.from_env({}, cpu_limit=2.0).multi_model is False


def test_multi_model_endpoints_run_one_pass_at_a_time_per_model_unless_told():
    """Density first: no adaptive second form of each model (a fixed one-stream layout)."""
    assert Settings.from_env({"SAGEMAKER_MULTI_MODEL": "true"}, cpu_limit=2.0).qa.parallel_batches == 1
    assert Settings.from_env({}, cpu_limit=2.0).qa.parallel_batches is None  # the plan's
    told = Settings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "QA_PARALLEL_BATCHES": "2"}, cpu_limit=2.0)
    assert told.qa.parallel_batches == 2


def test_a_load_that_would_not_fit_is_refused_on_multi_model_endpoints_and_logged_otherwise():
    assert Settings.from_env({"SAGEMAKER_MULTI_MODEL": "true"}, cpu_limit=2.0).qa.memory_check == "refuse"
    assert Settings.from_env({}, cpu_limit=2.0).qa.memory_check == "warn"
    told = Settings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "QA_MEMORY_CHECK": "off"}, cpu_limit=2.0)
    assert told.qa.memory_check == "off"
    assert Settings.from_env({}, cpu_limit=2.0).model_memory_report_s == 60
    with pytest.raises(
        SettingsError, match="QA_MEMORY_CHECK='never' is not supported: allowed values are refuse, warn, off"
    ):
        Settings.from_env({"QA_MEMORY_CHECK": "never"}, cpu_limit=2.0)
    with pytest.raises(SettingsError, match="QA_MODEL_MEMORY_REPORT_S=0 is out of range"):
        Settings.from_env({"QA_MODEL_MEMORY_REPORT_S": "0"}, cpu_limit=2.0)


def test_model_servers_jvm_sizes_its_heap_from_the_container_unless_told_otherwise():
    default = Settings.from_env({}, cpu_limit=2.0).mms_jvm_options.split()
    assert "-XX:+UseContainerSupport" in default and "-XX:MaxRAMPercentage=10" in default
    own = Settings.from_env({"SAGEMAKER_MODEL_SERVER_VMARGS": " -Xmx512m "}, cpu_limit=2.0)
    assert own.mms_jvm_options == "-Xmx512m"
    with pytest.raises(SettingsError, match="SAGEMAKER_MULTI_MODEL"):
        Settings.from_env({"SAGEMAKER_MULTI_MODEL": "maybe"}, cpu_limit=2.0)


@pytest.mark.parametrize(
    "field, value, variable",
    [
        ("port", 0, "SAGEMAKER_BIND_TO_PORT"),
        ("workers", 65, "SAGEMAKER_MODEL_SERVER_WORKERS"),
        ("batch_max_padding_percent", 101, "QA_BATCH_MAX_PADDING_PERCENT"),
        ("batch_strategy", "ALL", "SAGEMAKER_BATCH_STRATEGY"),
        ("precision", "fp8", "QA_PRECISION"),
        ("backend", "tensorrt", "QA_BACKEND"),
        ("memory_check", "maybe", "QA_MEMORY_CHECK"),
        ("model_memory_report_s", 0, "QA_MODEL_MEMORY_REPORT_S"),
    ],
)
def test_settings_built_directly_check_themselves(field, value, variable):
    with pytest.raises(SettingsError, match=variable):
        Settings(**{field: value})


def test_derived_values_are_properties_of_the_settings(tmp_path):
    s = Settings(
        run_dir=tmp_path,
        shutdown_timeout_s=3,
        log_level=logging.WARNING,
        precision="int8",
        inference_threads=2,
    )
    assert s.graph_cache == tmp_path / "graphs" and s.qa.graph_cache == tmp_path / "graphs"
    assert Settings(graph_cache_dir=tmp_path / "g").qa.graph_cache == tmp_path / "g"
    assert s.gunicorn_stop_s == 3 and Settings().gunicorn_stop_s == 5
    assert s.log_level_name == "warning" and Settings(log_level=5).log_level_name == "debug"
    assert (s.qa.precision, s.qa.inference_threads, s.qa.request_timeout_s) == ("int8", 2, 60)


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("QA_TORCH_THREADS", "QA_INFERENCE_THREADS", "inference_threads"),
        ("QA_THREADS_PER_WORKER", "QA_REQUESTS_PER_WORKER", "requests_per_worker"),
    ],
)
def test_a_renamed_variable_is_still_read_with_a_warning_naming_the_new_one(old, new, field, caplog):
    with caplog.at_level(logging.WARNING, logger="serving.settings"):
        assert getattr(Settings.from_env({old: "3"}, cpu_limit=2.0), field) == 3
    assert f"{old} is renamed {new}" in caplog.text
    caplog.clear()
    assert getattr(Settings.from_env({new: "5", old: "3"}, cpu_limit=2.0), field) == 5
    assert getattr(Settings.from_env({new: "5"}, cpu_limit=2.0), field) == 5
    assert caplog.text == ""
    with pytest.raises(SettingsError, match=f"^{old}=0 is out of range: it must be between 1 and 256$"):
        Settings.from_env({old: "0"}, cpu_limit=2.0)


def test_the_qa_options_check_themselves_with_the_settings_bounds_and_words():
    with pytest.raises(
        OptionsError, match="^QA_INFERENCE_THREADS=0 is out of range: it must be between 1 and 256$"
    ):
        QAOptions(inference_threads=0)
    with pytest.raises(
        OptionsError, match="^QA_PARALLEL_BATCHES=0 is out of range: it must be between 1 and 64$"
    ):
        QAOptions(parallel_batches=0)
    # The upper bounds are the container's: a script may lift them (qa/pipeline.py has no limits).
    assert QAOptions(parallel_batches=65, max_items_per_request=sys.maxsize).parallel_batches == 65
    with pytest.raises(
        SettingsError, match="^QA_PARALLEL_BATCHES=65 is out of range: it must be between 1 and 64$"
    ):
        Settings(parallel_batches=65)
    with pytest.raises(SettingsError, match="^QA_PARALLEL_BATCHES=65 is out of range"):
        Settings.from_env({"QA_PARALLEL_BATCHES": "65"}, cpu_limit=2.0)
    with pytest.raises(
        OptionsError,
        match="^QA_JSONLINES_ERRORS='line' is not supported: allowed values are request, record$",
    ):
        QAOptions(jsonlines_errors="line")


def test_every_qa_option_is_a_setting_of_the_same_name_and_default():
    qa_fields = {f.name: f.default for f in dataclasses.fields(QAOptions) if f.name != "graph_cache"}
    settings_fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert {name: settings_fields[name] for name in qa_fields} == qa_fields
    assert Settings().qa == QAOptions(graph_cache=Path("/tmp/qa-serving/graphs"))


def test_batch_transform_and_multi_model_derive_their_defaults():
    batch = Settings.from_env({"SAGEMAKER_BATCH": "true"}, cpu_limit=2.0)
    assert (batch.request_timeout_s, batch.jsonlines_errors, batch.memory_check) == (600, "record", "warn")
    told = Settings.from_env(
        {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90"}, cpu_limit=2.0
    )
    assert told.request_timeout_s == 90
    assert Settings.from_env({"SAGEMAKER_MULTI_MODEL": "on"}, cpu_limit=2.0).memory_check == "refuse"


def test_empty_means_the_default_but_an_empty_boolean_is_false():
    s = Settings.from_env(
        {"QA_RUN_DIR": " ", "QA_REQUEST_METRICS": "", "HF_TOKEN": "", "HF_API_TOKEN": "t"}, cpu_limit=2.0
    )
    assert s.run_dir == Path("/tmp/qa-serving") and s.request_metrics is False and s.hf_token == "t"


def test_the_resolved_settings_travel_whole_to_the_processes_started_after(tmp_path):
    resolved = Settings.from_env(
        {"QA_RUN_DIR": str(tmp_path), "QA_GRAPH_CACHE_DIR": str(tmp_path / "g"), "HF_TOKEN": "secret"},
        cpu_limit=6.0,
    )
    resolved = dataclasses.replace(resolved, workers_run_as="nobody")
    path = resolved.save()
    assert path == resolved.resolved_file and path.stat().st_mode & 0o077 == 0
    # Another process, on another CPU count and with other variables, gets the same values.
    loaded = Settings.load({RESOLVED_SETTINGS: str(path), "SAGEMAKER_MODEL_SERVER_WORKERS": "9"})
    assert loaded == resolved and loaded.cpu_limit == 6.0 and loaded.graph_cache == tmp_path / "g"
    # Without the file (a test, a script), the environment.
    assert Settings.load({"QA_RUN_DIR": str(tmp_path)}).workers_run_as is None
