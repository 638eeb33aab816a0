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
