"""Multi-model endpoints: the memory each loaded model holds, and which process the kernel stops
when the container runs out.

- A worker loading a model is the kernel's first choice of process to stop while it loads
  (`first_to_go_while_loading`): if a load outgrows its estimate, the OOM killer ends that load
  (MMS answers it with an error) instead of a worker serving another model, or MMS's front end,
  whose death would take the whole container down.
- The launcher reports the memory of every loaded model (`ModelMemoryReporter`): MMS runs each
  model in its own Python processes, whose command line names the model.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from qa.memory import process_bytes
from serving.emf import emf_line as emf_record

log = logging.getLogger(__name__)

WORKER_SCRIPT = "model_service_worker.py"  # MMS's Python worker: `... --model-name NAME ...`
OOM_FIRST = 1000  # the highest oom_score_adj: chosen before any other process


@contextlib.contextmanager
def first_to_go_while_loading(path: Path = Path("/proc/self/oom_score_adj")) -> Iterator[None]:
    """Make this process the OOM killer's choice until the block ends. Raising the score needs no
    privilege, and a process may lower it back to where it was (but not below) without one."""
    try:
        before = path.read_text().strip()
        path.write_text(str(OOM_FIRST))
    except OSError as exc:  # not Linux, or /proc read-only: the load goes on unprotected
        log.warning("cannot raise this worker's oom_score_adj while it loads: %s", exc)
        yield
        return
    try:
        yield
    finally:
        try:
            path.write_text(before)
        except OSError as exc:
            log.warning("cannot restore this worker's oom_score_adj to %s: %s", before, exc)


def model_memory(proc: Path = Path("/proc")) -> dict[str, int]:
    """Bytes held by each model MMS has loaded: the proportional set sizes of its processes (a
    model's server process and the workers it forks share pages), added up."""
    held: dict[str, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone since the listing
            continue
        if not any(arg.endswith(WORKER_SCRIPT) for arg in argv) or "--model-name" not in argv:
            continue
        index = argv.index("--model-name") + 1
        if index < len(argv):
            held[argv[index]] = held.get(argv[index], 0) + process_bytes(entry.name, proc)
    return held


def emf_line(namespace: str, model: str, held_bytes: int) -> str:
    """One CloudWatch embedded-metric-format record of a model's memory."""
    return emf_record(namespace, {"Model": model}, {"ModelMemory": (held_bytes, "Bytes")})


class ModelMemoryReporter(threading.Thread):
    """Every `interval_s`, one EMF line per loaded model on the container's stdout (the launcher's
    own: MMS prefixes what its workers print, which CloudWatch would not parse)."""

    def __init__(self, namespace: str, interval_s: float, proc: Path = Path("/proc")):
        super().__init__(name="model-memory", daemon=True)
        self.namespace = namespace
        self.interval_s = interval_s
        self.proc = proc
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                lines = [emf_line(self.namespace, m, b) for m, b in sorted(model_memory(self.proc).items())]
            except OSError as exc:
                log.warning("cannot read the models' memory: %s", exc)
                continue
            for line in lines:  # a write per line (under PIPE_BUF): never cut by MMS's output
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    def stop(self) -> None:
        self.stopped.set()
