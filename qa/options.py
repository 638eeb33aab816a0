"""The options the QA library runs with: how to run the model, and how much one request may ask.

The serving layer builds them from its settings (`Settings.qa`, from the QA_* variables); a script
or a test builds `QAOptions(...)` directly. They check themselves when built. Messages name the
options by their environment variables, the names users set: each field is declared once, with its
variable, bounds and doc (qa/setting.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qa.setting import first_problem, setting

# Inference backends and the precisions each runs (backends.py); "auto" picks one per precision
# from the CPU (plan.py).
BACKEND_PRECISIONS = {
    "torch": ("fp32", "bf16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
BACKENDS = ("auto", *BACKEND_PRECISIONS)
PRECISIONS = ("fp32", "bf16", "int8")
JSONLINES_ERRORS = ("request", "record")
MEMORY_CHECKS = ("refuse", "warn", "off")


class OptionsError(ValueError):
    """An option is out of range or a combination no backend runs; the message names it."""


def unsupported_combination(backend: str, precision: str) -> str | None:
    """What is wrong with running this precision on this backend, or None when it runs."""
    if precision in BACKEND_PRECISIONS[backend]:
        return None
    return (
        f"QA_PRECISION={precision} is not supported with QA_BACKEND={backend}: combinations are "
        + ", ".join(f"{b} with {'/'.join(p)}" for b, p in BACKEND_PRECISIONS.items())
    )


@dataclasses.dataclass(frozen=True)
class QAOptions:
    """Each option is declared once, here, with the variable that sets it in the container
    (qa/setting.py); the serving layer reads them from the environment into its Settings."""

    backend: str = setting(
        "QA_BACKEND",
        "auto",
        "`auto`: the backend measured fastest for the precision on this CPU class (start-up logs the "
        "plan); or force `openvino` (fp32/bf16/int8), `onnx` (ONNX Runtime: fp32, dynamic int8) or "
        "`torch` (fp32, bf16 autocast)",
        choices=BACKENDS,
    )
    precision: str = setting(
        "QA_PRECISION",
        "fp32",
        "`fp32` (exact: the golden answers), `bf16` or `int8` (static, calibrated once when the graph "
        "is made); a forced backend runs only its own (see `QA_BACKEND`)",
        choices=PRECISIONS,
    )
    inference_threads: int = setting(
        "QA_INFERENCE_THREADS",
        1,
        "inference threads per worker, whatever the backend: OpenVINO (and ONNX Runtime on AVX-512 "
        "CPUs) gives them all to a forward pass that runs alone and shares them out among the passes "
        "that overlap (one stream or lane each, `QA_PARALLEL_BATCHES`); ONNX Runtime on AVX2 CPUs and "
        "torch give each of their parallel passes all of them",
        bounds=(1, 256),
        renamed_from="QA_TORCH_THREADS",
    )
    parallel_batches: int | None = setting(
        "QA_PARALLEL_BATCHES",
        None,
        "forward passes at once per worker (the batcher's lanes); set, it fixes the layout (by default "
        "OpenVINO bf16 and int8, and ONNX Runtime on AVX-512 CPUs, adapt: a pass alone on all the "
        "threads, overlapping passes on a share each; fixed, ONNX Runtime lanes each get all the threads)",
        bounds=(1, 64),
        default_doc="from the plan: OpenVINO fp32 1, OpenVINO bf16/int8 2 (adaptive), ONNX Runtime 2 (adaptive on AVX-512), torch 2",
    )
    graph_cache: Path = Path("/tmp/qa-serving/graphs")  # where graphs made at start-up are kept
    allow_pickle_weights: bool = setting(
        "QA_ALLOW_PICKLE_WEIGHTS",
        False,
        "load `pytorch_model.bin` (with `weights_only`) when no safetensors exist",
    )
    max_items_per_request: int = setting(
        "QA_MAX_ITEMS_PER_REQUEST", 64, "questions per request (413 past it)", bounds=(1, 100_000)
    )
    max_windows_per_request: int = setting(
        "QA_MAX_WINDOWS_PER_REQUEST",
        256,
        "windows (model inputs) per request (413 past it)",
        bounds=(1, 1_000_000),
    )
    forward_batch_size: int = setting(
        "QA_FORWARD_BATCH_SIZE", 16, "windows per forward pass", bounds=(1, 1024)
    )
    batch_wait_ms: int = setting(
        "QA_BATCH_WAIT_MS",
        2,
        "dynamic batching: the longest a window waits for other requests' windows",
        bounds=(0, 1000),
    )
    # ONNX Runtime gains nothing per window from bigger batches on CPU, and at 4096 throughput at
    # concurrency 16 halved (BENCHMARKS.md).
    batch_max_tokens: int = setting(
        "QA_BATCH_MAX_TOKENS", 1024, "padded tokens per forward pass", bounds=(1, 10_000_000)
    )
    # On an AVX2 CPU, a batch of 4 mixed-length windows (25% padding) cost 1.3x their time one by
    # one (BENCHMARKS.md).
    batch_max_padding_percent: int = setting(
        "QA_BATCH_MAX_PADDING_PERCENT",
        10,
        "most of a batch's tokens that may be padding; a window that would pad more waits for the "
        "next pass (padding costs as much as real tokens)",
        bounds=(0, 100),
    )
    # A window still queued after this long is dropped.
    request_timeout_s: int = setting(
        "SAGEMAKER_MODEL_SERVER_TIMEOUT",
        60,
        "per-request budget in **seconds** (504 past it); nginx's timeouts derive from it",
        bounds=(1, 3600),
    )
    # A jsonlines request of any size within the payload limit streams through the batcher record
    # by record (qa/model.py); the item and window limits then bound each record, not the request.
    batch_transform: bool = setting(
        "SAGEMAKER_BATCH",
        False,
        "set by SageMaker in a Batch Transform container: jsonlines mini-batches of any size stream "
        "through the batcher, a 600 s budget, per-record errors (`docs/contract.md#batch-transform`)",
    )
    jsonlines_errors: str = setting(
        "QA_JSONLINES_ERRORS",
        "request",
        "`record`: a bad jsonlines line is answered by an error object on its own output line and "
        "the other lines are served (Batch Transform over millions of records); `request`: the "
        "whole request is a 400 naming the line",
        choices=JSONLINES_ERRORS,
    )
    memory_check: str = setting(
        "QA_MEMORY_CHECK",
        "warn",
        "a model load estimated to need more memory than the container has free (qa/memory.py): "
        "`refuse` fails it (a multi-model endpoint answers 507), `warn` logs and loads, `off` does "
        "not check",
        choices=MEMORY_CHECKS,
    )

    def __post_init__(self) -> None:
        # The upper bounds are the container's (serving/settings.py checks them): a script may go
        # past them, as qa/pipeline.py does with no limit on items and windows.
        if (problem := first_problem(self, upper_bounds=False)) is not None:
            raise OptionsError(problem)
        if self.backend != "auto" and (problem := unsupported_combination(self.backend, self.precision)):
            raise OptionsError(problem)
