"""Poll a SageMaker resource until it reaches a final status, printing each status change."""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitError(RuntimeError):
    """The resource failed or did not finish in time; the message says which and why."""


def wait_for(
    describe: Callable[[], dict],
    *,
    what: str,
    status_key: str,
    done: set[str],
    failed: set[str],
    timeout: float,
    poll: float,
    log: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    start = time.monotonic()
    last = None
    while True:
        described = describe()
        status = described[status_key]
        elapsed = time.monotonic() - start
        if status != last:
            log(f"{what}: {status} ({elapsed:.0f} s)")
            last = status
        if status in done:
            return described
        if status in failed:
            reason = described.get("FailureReason", "no reason given")
            raise WaitError(f"{what} is {status}: {reason}")
        if elapsed >= timeout:
            raise WaitError(
                f"{what} still {status} after {timeout:.0f} s: it goes on in AWS; "
                "check the console or describe it later"
            )
        sleep(poll)


def wait_for_endpoint(sm, name: str, *, timeout: float, poll: float, log) -> dict:
    return wait_for(
        lambda: sm.describe_endpoint(EndpointName=name),
        what=f"endpoint {name}",
        status_key="EndpointStatus",
        done={"InService"},
        # RollingBack is not final: a failed update returns to InService on the old
        # config, which `update` reports as a failure.
        failed={"Failed", "OutOfService", "UpdateRollbackFailed"},
        timeout=timeout,
        poll=poll,
        log=log,
    )


def wait_for_transform(sm, name: str, *, timeout: float, poll: float, log) -> dict:
    return wait_for(
        lambda: sm.describe_transform_job(TransformJobName=name),
        what=f"transform job {name}",
        status_key="TransformJobStatus",
        done={"Completed"},
        failed={"Failed", "Stopped"},
        timeout=timeout,
        poll=poll,
        log=log,
    )
