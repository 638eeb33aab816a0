"""What this CPU is, as Linux describes it in /proc/cpuinfo. No heavy imports: the benchmark
reads it too, in a process that must not load torch."""

from __future__ import annotations


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of this CPU (x86 `flags`, Arm `Features`); empty where unknown."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_name(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, or "unknown"."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


def cpu_class(flags: set[str]) -> str:
    """The class whose measured plan applies. Unknown flags (not Linux) get the AVX2 plan, the
    one that assumes least."""
    return "avx512" if "avx512f" in flags else "avx2"


# CPU-seconds the whole stack spent per SQuAD-like request (~1 KB of JSON, about one window) at
# concurrency 4 under the auto plan, from the benchmark (BENCHMARKS.md): what a Batch Transform
# mini-batch is sized from and the queue of waiting requests
# (serving/settings.py, batch_payload_mb and waiting_requests).
CPU_S_PER_RECORD = {
    "avx512": {"fp32": 0.230, "bf16": 0.102, "int8": 0.062},  # AMD EPYC Zen 4, 2026-12-01
    "avx2": {"fp32": 0.346, "bf16": 2.384, "int8": 0.186},  # AMD EPYC Zen 3, 2026-11-30 (bf16 emulated)
}
RECORDS_PER_MB = 1000  # the benchmark's records: 86-220 words of context, ~1 KB of JSON each
