"""The options the QA library runs with: how to run the model, and how much one request may ask.

The serving layer builds them from its settings (`Settings.qa`, from the QA_* variables); a script
or a test builds `QAOptions(...)` directly. They check themselves when built. Messages name the
options by their environment variables, the names users set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

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
    backend: str = "auto"
    precision: str = "fp32"
    torch_threads: int = 1  # intra-op threads per forward pass
    parallel_batches: int | None = None  # forward passes at once; None: the plan's (plan.py)
    graph_cache: Path = Path("/tmp/qa-serving/graphs")  # where graphs made at start-up are kept
    allow_pickle_weights: bool = False
    max_items_per_request: int = 64
    max_windows_per_request: int = 256
    forward_batch_size: int = 16
    batch_wait_ms: int = 2
    # Padded tokens per forward pass: ONNX Runtime gains nothing per window from bigger batches on
    # CPU, and at 4096 throughput at concurrency 16 halved (BENCHMARKS.md).
    batch_max_tokens: int = 1024
    # Padding as a share of a batch's tokens: on an AVX2 CPU, a batch of 4 mixed-length windows
    # (25% padding) cost 1.3x their time one by one (BENCHMARKS.md).
    batch_max_padding_percent: int = 10
    request_timeout_s: float = 60  # a window still queued after this long is dropped
    # Batch Transform (SAGEMAKER_BATCH): a jsonlines request of any size within the payload limit
    # streams through the batcher record by record (qa/model.py); the item and window limits then
    # bound each record, not the request.
    batch_transform: bool = False
    # A bad jsonlines record: "request" fails the whole request (400 naming the line); "record"
    # answers it with an error object on its own output line and serves the others.
    jsonlines_errors: str = "request"
    # A model load estimated to need more memory than the container has free (qa/memory.py):
    # "refuse" fails it (a multi-model endpoint answers 507), "warn" logs and loads, "off".
    memory_check: str = "warn"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise OptionsError(
                f"QA_BACKEND={self.backend!r} is not supported: allowed values are {', '.join(BACKENDS)}"
            )
        if self.precision not in PRECISIONS:
            raise OptionsError(
                f"QA_PRECISION={self.precision!r} is not supported: allowed values are {', '.join(PRECISIONS)}"
            )
        if self.backend != "auto" and (problem := unsupported_combination(self.backend, self.precision)):
            raise OptionsError(problem)
        if self.jsonlines_errors not in JSONLINES_ERRORS:
            raise OptionsError(
                f"QA_JSONLINES_ERRORS={self.jsonlines_errors!r} is not supported: allowed values are request, record"
            )
        if self.memory_check not in MEMORY_CHECKS:
            raise OptionsError(
                f"QA_MEMORY_CHECK={self.memory_check!r} is not supported: allowed values are refuse, warn, off"
            )
        positive = {
            "QA_TORCH_THREADS": self.torch_threads,
            "QA_PARALLEL_BATCHES": self.parallel_batches or 1,
            "QA_MAX_ITEMS_PER_REQUEST": self.max_items_per_request,
            "QA_MAX_WINDOWS_PER_REQUEST": self.max_windows_per_request,
            "QA_FORWARD_BATCH_SIZE": self.forward_batch_size,
            "QA_BATCH_MAX_TOKENS": self.batch_max_tokens,
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": self.request_timeout_s,
        }
        for name, value in positive.items():
            if value < 1:
                raise OptionsError(f"{name}={value} is out of range: it must be >= 1")
        if self.batch_wait_ms < 0:
            raise OptionsError(f"QA_BATCH_WAIT_MS={self.batch_wait_ms} is out of range: it must be >= 0")
        if not 0 <= self.batch_max_padding_percent <= 100:
            raise OptionsError(
                f"QA_BATCH_MAX_PADDING_PERCENT={self.batch_max_padding_percent} is out of range: it must be between 0 and 100"
            )
