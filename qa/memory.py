"""Memory: what a model load will take at its peak, what the container has free, and what a
process holds. Linux facts only, read from /proc and the cgroup files; no heavy imports (the
multi-model launcher reads process memory too).

A multi-model endpoint loads models while others serve. A load the container cannot hold would
end with the kernel's OOM killer stopping some process, perhaps one serving another model, so
the load is checked first against its estimate (`check_load_fits`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from qa.errors import ModelLoadError

log = logging.getLogger(__name__)

MB = 1 << 20
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# Peak memory of a load, from after the libraries are imported to the end of its warm-up, as a
# fixed part (the backend's own libraries and buffers) plus a part per byte of fp32 weights, by
# what the load does. Fitted on this project's tiny test model (3 MB) and a 66M-parameter
# DistilBERT (253 MB), taking the higher of OpenVINO and ONNX Runtime, plus about 15%. Measured
# (fixed MB + per byte):
#   PyTorch module only            175 + 0.71
#   graph found, fp32 or bf16      104 + 1.82 (openvino), 71 + 1.28 (onnx)
#   graph found, int8              109 + 0.83 (openvino int8-static), 71 + 0.80 (onnx int8-dynamic)
#   graph made at start-up         274 + 3.8 (openvino fp32), 214 + 4.0 (onnx fp32),
#                                  375 + 4.5 (int8-static), 225 + 6.1 (int8-dynamic)
# Making a graph holds the module, the traced graph and the backend's copy at once.
LOAD_PEAK = {  # (graph kind, found or made) -> (fixed bytes, bytes per weight byte)
    (None, "found"): (200 * MB, 0.8),
    ("fp32", "found"): (120 * MB, 2.1),
    ("int8-static", "found"): (125 * MB, 1.0),
    ("int8-dynamic", "found"): (85 * MB, 0.95),
    ("fp32", "made"): (320 * MB, 4.6),
    ("int8-static", "made"): (450 * MB, 5.2),
    ("int8-dynamic", "made"): (280 * MB, 7.0),
}


class InsufficientMemory(ModelLoadError):
    """The load would need more memory than the container has free."""

    def __init__(self, message: str, *, need_bytes: int, free_bytes: int):
        super().__init__(message)
        self.need_bytes = need_bytes
        self.free_bytes = free_bytes


def weight_bytes(model_dir: Path) -> int:
    """The size of the model's weight files (safetensors, or pickles), shards added up."""
    return sum(p.stat().st_size for pattern in WEIGHT_PATTERNS for p in Path(model_dir).glob(pattern))


def load_need_bytes(weights: int, graph_kind: str | None, graph_found: bool) -> int:
    """What loading weights of this size will take at its peak, over what the process holds."""
    step = "found" if graph_found or graph_kind is None else "made"
    fixed, per_weight_byte = LOAD_PEAK[(graph_kind, step)]
    return int(fixed + weights * per_weight_byte)


def check_load_fits(what: str, need: int, policy: str, hint: str = "") -> None:
    """Refuse (InsufficientMemory) or warn when `need` bytes are more than the container has free."""
    if policy == "off":
        return
    free = free_bytes()
    if free is None:
        log.warning("%s: the free memory is unknown (no /proc/meminfo); not checked", what)
        return
    limit = memory_limit_bytes()
    of_limit = f" (of {limit / MB:,.0f} MB)" if limit else ""
    if need <= free:
        log.info(
            "%s: the load needs about %s MB; %s MB free%s",
            what,
            f"{need / MB:,.0f}",
            f"{free / MB:,.0f}",
            of_limit,
            extra={"fields": {"load_need_bytes": need, "free_bytes": free}},
        )
        return
    message = (
        f"{what}: the load needs about {need / MB:,.0f} MB and the container has "
        f"{free / MB:,.0f} MB free{of_limit}{hint}"
    )
    if policy == "refuse":
        raise InsufficientMemory(message, need_bytes=need, free_bytes=free)
    log.warning("%s; loading anyway (QA_MEMORY_CHECK=warn)", message)


def memory_limit_bytes(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The container's memory limit (cgroup v2 or v1); None when there is none."""
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        value = _read(path)
        if value is not None and value.strip() != "max":
            limit = int(value)
            # cgroup v1 writes "no limit" as the largest page-aligned number.
            return limit if limit < 1 << 60 else None
    return None


def free_bytes(cgroup: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """What a new allocation can still get: the smaller of the machine's available memory and the
    container's limit less its working set (the page cache it could drop does not count)."""
    candidates = []
    available = _meminfo_field(meminfo, "MemAvailable")
    if available is not None:
        candidates.append(available)
    limit = memory_limit_bytes(cgroup)
    if limit is not None:
        candidates.append(max(0, limit - _working_set_bytes(cgroup)))
    return min(candidates) if candidates else None


def process_bytes(pid: int | str = "self", proc: Path = Path("/proc")) -> int:
    """The memory a process holds: its proportional set size (pages shared with other processes,
    such as a forked parent's, count in part), else its resident set size."""
    rollup = _read(proc / str(pid) / "smaps_rollup")
    if rollup is not None:
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return resident_bytes(pid, proc)


def resident_bytes(pid: int | str = "self", proc: Path = Path("/proc")) -> int:
    """A process's resident set size (0 once it is gone): cheaper to read than its PSS, for a
    figure taken on every request."""
    statm = _read(proc / str(pid) / "statm")
    if statm is None:
        return 0
    return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _working_set_bytes(cgroup: Path) -> int:
    for usage_file, stat_file, inactive_key in (
        (cgroup / "memory.current", cgroup / "memory.stat", "inactive_file"),
        (
            cgroup / "memory" / "memory.usage_in_bytes",
            cgroup / "memory" / "memory.stat",
            "total_inactive_file",
        ),
    ):
        usage = _read(usage_file)
        if usage is None:
            continue
        inactive = 0
        for line in (_read(stat_file) or "").splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
        return max(0, int(usage) - inactive)
    return 0


def _meminfo_field(meminfo: Path, name: str) -> int | None:
    for line in (_read(meminfo) or "").splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0]) * 1024
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None
