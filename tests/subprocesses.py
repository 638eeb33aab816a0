"""Running the project's command-line tools from tests: captured, as text, never raising on failure."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_captured(
    cmd: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """`cmd` run to its end; the caller asserts on returncode, stdout and stderr."""
    return subprocess.run(
        list(cmd),
        cwd=cwd,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
