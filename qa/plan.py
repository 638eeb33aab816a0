"""The execution plan: which backend serves a precision on this CPU, with how many threads and
lanes, and which windows may share a forward pass. Chosen at start-up from the CPU's
instruction-set flags (`QA_BACKEND=auto`, the default); each variable set overrides its part.

What each CPU class runs comes from BENCHMARKS.md, measured there, never carried over from another
class: a default tuned on one class must not cost another.
"""

from __future__ import annotations

import dataclasses
import logging

from qa.backends import ALONE, SAME_WIDTH, WIDTH_STEP
from qa.cpu import cpu_class
from qa.options import BACKEND_PRECISIONS, QAOptions

log = logging.getLogger(__name__)

# CPU class -> precision -> backend.
AUTO_BACKENDS = {
    # AMD EPYC Zen 4 (avx512f, avx512_vnni, avx512_bf16), 2026-12-01, per window on 2 threads:
    # OpenVINO fp32 105 ms vs ONNX Runtime 120 ms; OpenVINO bf16 55 ms vs PyTorch autocast ~80 ms;
    # OpenVINO static int8 32-42 ms vs ONNX Runtime dynamic int8 59 ms.
    "avx512": {"fp32": "openvino", "bf16": "openvino", "int8": "openvino"},
    # AMD EPYC Zen 3 (avx2 only), 2026-11-30: ONNX Runtime fp32 and dynamic int8 measured
    # (1.04x and 1.94x the peer); OpenVINO not yet measured there. bf16 has no instructions on
    # this class (PyTorch's emulation ran 0.15x the peer); OpenVINO is the least bad guess.
    "avx2": {"fp32": "onnx", "bf16": "openvino", "int8": "onnx"},
}
# Forward passes at once per worker (backend -> precision -> lanes). ONNX Runtime leaves a core
# idle between small operators (1.2 of 2 CPUs busy with one lane, AVX2 host): two lanes (sharing
# the threads out where ADAPTIVE says so). OpenVINO runs one stream per lane and shares the
# threads out: for fp32 one stream of 2 threads was fastest (9.3 vs 8.7 windows/s); for int8 two streams of one thread gave
# 10% more at concurrency 4 and 15% at 16 (the benchmark, AVX-512 EPYC, 2026-12-01), and for bf16
# 23% more windows/s, at twice a lone window's latency (int8: 65 ms p50 at c=1, the peer's 206).
LANES = {
    "torch": {"fp32": 2, "bf16": 2},
    "onnx": {"fp32": 2, "int8": 2},
    "openvino": {"fp32": 1, "bf16": 2, "int8": 2},
}
# CPU class -> backend -> the precisions where a lone pass gets all the worker's threads (one
# stream or session) and overlapping passes a share each (qa/backends.py). OpenVINO int8 and bf16,
# whose streams trade a lone window's latency for throughput under load (fp32 runs one stream of
# all the threads in any case). ONNX Runtime's lanes each had all the threads, more busy threads
# than CPUs; int8 on the avx512 class (2026-12-03, same run): 2 lanes x 2 threads 6.70x / 4.81x /
# 4.46x the peer at c=1 / 4 / 16, 1 lane x 2 threads 8.21x / 4.90x / 4.50x, 2 lanes x 1 thread
# 4.49x / 5.29x / 5.00x; adaptive, in a later run, 7-14% over 2 x 2 for int8 and fp32, for a
# second session's memory once passes overlap (peak: int8 +187 MiB, fp32 +351 MiB). Where ONNX
# Runtime is the default (avx2) it stays fixed until measured there.
ADAPTIVE = {
    "avx512": {"openvino": ("bf16", "int8"), "onnx": ("fp32", "int8")},
    "avx2": {"openvino": ("bf16", "int8")},
}


@dataclasses.dataclass(frozen=True)
class Plan:
    backend: str
    precision: str
    threads: int  # intra-op threads per forward pass
    lanes: int  # forward passes at once per worker
    cpu_class: str
    chosen_by: str  # why this backend: "QA_BACKEND=onnx" or "the avx512 class"
    adaptive: bool = False  # a lone pass on all the threads, overlapping ones on the lanes' streams

    def describe(self, batching: str, options: QAOptions) -> str:
        """One log line: what runs, and how windows share passes."""
        if batching == ALONE:
            rule = "one window per pass"
        elif batching == SAME_WIDTH:
            rule = (
                f"up to {options.forward_batch_size} windows / {options.batch_max_tokens} tokens per pass, "
                f"padded to a multiple of {WIDTH_STEP} tokens and batched only at one width"
            )
        else:
            rule = (
                f"up to {options.forward_batch_size} windows / {options.batch_max_tokens} tokens per pass, "
                f"at most {options.batch_max_padding_percent}% padding"
            )
        per_stream = max(1, self.threads // self.lanes)
        unit = "stream" if self.backend == "openvino" else "lane"
        if self.adaptive:
            passes = (
                f"1 {unit} of {self.threads} threads for a pass alone, "
                f"{self.lanes} {unit}s of {per_stream} thread(s) for passes that overlap"
            )
        elif self.backend == "openvino":  # lanes are streams sharing the threads (qa/backends.py)
            passes = f"{self.lanes} stream(s) of {per_stream} thread(s)"
        else:
            passes = f"{self.lanes} lane(s) of {self.threads} thread(s)"
        return (
            f"execution plan: {self.backend} {self.precision} (chosen by {self.chosen_by}), {passes}, {rule}"
        )


def resolve_plan(options: QAOptions, flags: set[str]) -> Plan:
    """The plan for these options on a CPU with these flags (QAOptions refused the combinations
    no backend runs when they were built)."""
    klass = cpu_class(flags)
    if options.backend == "auto":
        backend, chosen_by = AUTO_BACKENDS[klass][options.precision], f"the {klass} CPU class"
    else:
        backend, chosen_by = options.backend, f"QA_BACKEND={options.backend}"
    lanes = options.parallel_batches or LANES[backend][options.precision]
    # QA_PARALLEL_BATCHES fixes the layout; a thread per lane at least, or nothing to adapt.
    adaptive = (
        options.parallel_batches is None
        and options.precision in ADAPTIVE[klass].get(backend, ())
        and lanes > 1
        and options.inference_threads >= lanes
    )
    return Plan(backend, options.precision, options.inference_threads, lanes, klass, chosen_by, adaptive)


def check_cpu(precision: str, flags: set[str]) -> None:
    """Warn where the CPU runs this precision without the instructions that make it pay."""
    if not flags:
        return
    if precision == "bf16" and not flags & {"avx512_bf16", "amx_bf16"}:
        # Measured on an AVX2-only EPYC: bf16 autocast 5x slower than fp32, not 2x faster.
        log.warning(
            "QA_PRECISION=bf16 on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16 flag): "
            "it is emulated or run as fp32, no faster than fp32; use QA_PRECISION=fp32 or int8 here"
        )
    if precision == "int8" and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        log.warning(
            "QA_PRECISION=int8 on a CPU without VNNI (no avx512_vnni, avx_vnni or amx_int8 flag): "
            "int8 runs on AVX2 kernels, expect well under the speed-up of VNNI CPUs"
        )


def torch_plan(plan: Plan, options: QAOptions, reason: str) -> Plan:
    """PyTorch in place of `plan`'s backend for a model no graph can serve: its precision where
    PyTorch runs it (bf16), else fp32 (int8 needs a graph)."""
    precision = plan.precision if plan.precision in BACKEND_PRECISIONS["torch"] else "fp32"
    lanes = options.parallel_batches or LANES["torch"][precision]
    return Plan("torch", precision, plan.threads, lanes, plan.cpu_class, chosen_by=reason)
