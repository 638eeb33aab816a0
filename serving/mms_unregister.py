"""Multi-model endpoints: take a model whose load failed for lack of memory off MMS's list.

MMS 1.1.11 answers such a load 507, as SageMaker expects, but leaves the model registered with
no worker: its worker thread interrupts itself while unregistering the model
(WorkLoadManager.modelChanged, then shutdownServerThread's interrupted wait). SageMaker's next
load of that model, after it has unloaded others to make room, would then get 409 "already
registered" and its invocations 503, for good. The failed worker cannot fix this itself (MMS
ends it once it has answered), so it starts this process, which waits for MMS to settle and
unregisters the model through MMS's own management API:

    python -m serving.mms_unregister MODEL_NAME PORT
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from serving import logs
from serving.settings import Settings

log = logging.getLogger("serving.mms_unregister")

LAUNCHER_PID = "QA_LAUNCHER_PID"  # set by serving/mms_launch.py for MMS and its workers
SETTLE_TIMEOUT_S = 30
POLL_S = 0.05


def start(model_name: str, port: int) -> None:
    """Run `main` in its own process, which outlives the failed worker. It prints on the
    launcher's stdout, the container's log: the worker's own goes through MMS, which stops reading
    it when the worker ends."""
    launcher = os.environ.get(LAUNCHER_PID)
    try:
        out = open(f"/proc/{launcher}/fd/1", "ab", buffering=0) if launcher else subprocess.DEVNULL
    except OSError:
        out = subprocess.DEVNULL
    subprocess.Popen(
        [sys.executable, "-m", "serving.mms_unregister", model_name, str(port)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
    )


def main(argv: list[str]) -> int:
    settings = Settings.load(os.environ)
    logs.configure(settings.log_level, stream=sys.stdout, log_format=settings.log_format)
    model_name, port = argv[0], int(argv[1])
    url = f"http://127.0.0.1:{port}/models/{urllib.parse.quote(model_name, safe='')}"
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        status, described = _call(url, "GET")
        if status == 404:
            return 0  # MMS unregistered it itself
        if status == 200 and _settled(described):
            status, _ = _call(url, "DELETE")
            if status in (200, 404):
                log.info("model %s unregistered: its load failed for lack of memory", model_name)
                return 0
        time.sleep(POLL_S)
    log.error(
        "model %s is still registered %d s after its load failed: unregister it (DELETE /models/%s)",
        model_name,
        SETTLE_TIMEOUT_S,
        model_name,
    )
    return 1


def _settled(described: object) -> bool:
    """MMS has finished failing the load: no worker left, none wanted."""
    entries = described if isinstance(described, list) else [described]
    return all(isinstance(e, dict) and not e.get("workers") and e.get("minWorkers") == 0 for e in entries)


def _call(url: str, method: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except (OSError, ValueError):
        return 0, None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
