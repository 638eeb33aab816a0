"""Wait for a SageMaker resource by boto3's own waiter rules, printing each status change.

boto3's waiters report nothing while they wait and return nothing when done, so this calls the
waiter's describe operation itself (for the progress lines and the final description) and lets
the waiter's acceptors decide which status is success and which is failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore import xform_name

# Final states the waiters' rules do not call failures: a transform job someone stopped did not do
# what was asked (the waiter counts it a success), and an endpoint out of service or whose update
# rollback failed stays so (the waiter would go on polling until the timeout).
ALSO_FAILED = {"Stopped", "OutOfService", "UpdateRollbackFailed"}


class WaitError(RuntimeError):
    """The resource failed or did not finish in time; the message says which and why."""


@dataclass
class WaitSpec:
    wait: bool = True
    timeout: float = 1800.0  # seconds
    poll: float = 15.0  # seconds between describe calls


def wait_until(
    client,
    waiter_name: str,
    what: str,
    spec: WaitSpec,
    log: Callable[[str], None],
    **params,
) -> dict:
    """The final description once `waiter_name` (e.g. "endpoint_in_service") accepts it as success.

    `params` are the describe call's (EndpointName=...). A failure state, or `spec.timeout`
    seconds without a final state, raise WaitError naming `what`."""
    config = client.get_waiter(waiter_name).config
    describe = getattr(client, xform_name(config.operation))
    status_key = next(acceptor.argument for acceptor in config.acceptors if acceptor.matcher == "path")
    start = time.monotonic()
    last = None
    while True:
        described = describe(**params)
        status = described[status_key]
        elapsed = time.monotonic() - start
        if status != last:
            log(f"{what}: {status} ({elapsed:.0f} s)")
            last = status
        state = next((a.state for a in config.acceptors if a.matcher_func(described)), "retry")
        if status in ALSO_FAILED:
            state = "failure"
        if state == "success":
            return described
        if state == "failure":
            raise WaitError(f"{what} is {status}: {described.get('FailureReason', 'no reason given')}")
        if elapsed >= spec.timeout:
            raise WaitError(
                f"{what} still {status} after {spec.timeout:.0f} s: it goes on in AWS; "
                "check the console or describe it later"
            )
        time.sleep(spec.poll)
