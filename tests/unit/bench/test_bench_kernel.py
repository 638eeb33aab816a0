"""The kernel alone (bench/kernel.py): the windows' forward passes with the server's settings."""

from bench import kernel


def test_the_kernel_runs_the_answered_requests_windows_with_one_workers_share_in_flight(qa_model_dir):
    env = {"QA_BACKEND": "torch", "SAGEMAKER_MODEL_SERVER_WORKERS": "2", "QA_TORCH_THREADS": "1"}
    levels = [{"concurrency": 4, "answered": [0, 1, 2, 3, 4, 5]}, {"concurrency": 1, "answered": []}]
    busy, idle = kernel.measure(qa_model_dir, env, 8, levels)
    assert busy["concurrency"] == 4 and busy["kernel_in_flight"] == 2  # 4 clients over 2 workers
    assert busy["kernel_windows"] >= 6 and busy["kernel_cpu_s_per_req"] > 0
    assert idle["kernel_cpu_s_per_req"] is None and idle["kernel_windows"] == 0
