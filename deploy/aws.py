"""AWS clients from the standard configuration, and one-line messages for AWS failures."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

# Error codes that mean "who you are" or "what you may do" is the problem, not the request.
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


class Clients:
    """Lazily built, cached boto3 clients sharing one session (profile and region)."""

    def __init__(self, profile: str | None = None, region: str | None = None):
        self._session = boto3.Session(profile_name=profile, region_name=region)
        # Standard retry mode backs off on throttling, which SageMaker control-plane calls hit.
        self._config = Config(retries={"mode": "standard", "max_attempts": 5})
        self._cache: dict[str, object] = {}

    def __call__(self, service: str):
        if service not in self._cache:
            self._cache[service] = self._session.client(service, config=self._config)
        return self._cache[service]


def describe_failure(exc: BaseException) -> str | None:
    """One line for an AWS-side failure, or None when `exc` is not one."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return (
            "no usable AWS credentials: set AWS_PROFILE (see `aws configure`), or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a role is attached"
        )
    if isinstance(exc, NoRegionError):
        return "no AWS region: pass --region, or set AWS_REGION, or a region in your profile"
    if isinstance(exc, ProfileNotFound):
        return f"{exc}: check --profile / AWS_PROFILE against ~/.aws/config"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        message = " ".join(str(error.get("Message", "")).split())
        operation = exc.operation_name
        if code in AUTH_CODES:
            return (
                f"permission denied for {operation} ({code}): {message} -- check the IAM "
                "policy of the credentials in use (and the execution role passed with --role)"
            )
        return f"{operation} failed ({code}): {message}"
    if isinstance(exc, BotoCoreError):
        return " ".join(str(exc).split())
    return None
