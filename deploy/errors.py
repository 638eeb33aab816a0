"""One line for every failure `python -m deploy` can meet: what failed, AWS's message or the OS
error, and how to fix it. `cli.main` is the one place that catches; this module only words it.

Each line reads `<what failed>: <why>; <how to fix>` (the fix only where there is a known one),
with an exit code: 1 for AWS and wait failures (and anything unexpected), 2 for bad options or
inputs, local files included.
"""

from __future__ import annotations

import errno
import re

from boto3.exceptions import Boto3Error, S3UploadFailedError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
    WaiterError,
)

from deploy.package import PackageError
from deploy.resources import ROLE_FIX, RequestError
from deploy.waiting import WaitError

AWS_FAILURE = 1
BAD_INPUT = 2

# Error codes that mean "what you may do" is the problem, not the request.
ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
# ... and those that mean the credentials themselves are refused.
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
    }
)
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"})
THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
    }
)
REGION_CODES = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)

CREDENTIALS_FIX = (
    "configure AWS credentials: aws configure, or AWS_PROFILE / AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or run where a role is attached"
)
ACCESS_FIX = "check the IAM policy of the credentials in use (and the execution role passed with --role)"
MAX_MESSAGE = 500  # characters of a service's message kept (some answer with whole HTML pages)

# boto3's wording of S3UploadFailedError: "Failed to upload FILE to BUCKET/KEY: <the ClientError>".
_UPLOAD = re.compile(
    r"^Failed to upload (?P<file>.+) to (?P<bucket>[^/\s]+)/(?P<key>\S*): (?P<why>.*)$", re.S
)
_ROLE_MESSAGE = re.compile(
    r"assume (the )?role|executionrolearn|\brole\b.*\b(does not exist|not found|is not valid|is invalid)",
    re.I,
)
_NOT_FOUND = re.compile(
    r"could not find (?P<kind>endpoint configuration|endpoint|model|transform job)\b"
    r"|^(?P<runtime>endpoint) \S+ of account \S+ not found",
    re.I,
)
_NOT_FOUND_FIX = {
    "endpoint configuration": "check --endpoint-config and --region (aws sagemaker list-endpoint-configs)",
    "endpoint": "check --name and --region (aws sagemaker list-endpoints)",
    "model": "check the model name (--model) and --region (aws sagemaker list-models)",
    "transform job": "check --job-name and --region (aws sagemaker list-transform-jobs)",
}
_OS_FIX = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "remove it or choose another path",
    errno.ENOSPC: "free some disk space, or write elsewhere (--output)",
    errno.EROFS: "write somewhere writable (--output)",
}


def describe(exc: BaseException, role: str | None = None) -> tuple[int, str]:
    """(exit code, one line: what failed, why, how to fix) for any exception.

    `role` is the --role given, to name it when SageMaker refuses a role without naming it."""
    code, line = _describe(exc, role)
    return code, one_line(line).replace(".; ", "; ")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(exc: BaseException, role: str | None) -> tuple[int, str]:
    if isinstance(exc, (RequestError, PackageError)):
        return BAD_INPUT, str(exc)
    if isinstance(exc, WaitError):
        return AWS_FAILURE, str(exc)
    if isinstance(exc, S3UploadFailedError):
        return AWS_FAILURE, _upload_failure(exc)
    if isinstance(exc, ClientError):
        return AWS_FAILURE, _client_error(exc, role=role)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AWS_FAILURE, f"no usable AWS credentials ({_text(exc)}); {CREDENTIALS_FIX}"
    if isinstance(exc, (SSOError, TokenRetrievalError)):
        return (
            AWS_FAILURE,
            f"AWS SSO login needed ({_text(exc)}); run aws sso login (with --profile if you use one)",
        )
    if isinstance(exc, CredentialRetrievalError):
        return (
            AWS_FAILURE,
            f"cannot get AWS credentials: {_text(exc)}; check the profile's credential settings",
        )
    if isinstance(exc, NoRegionError):
        return AWS_FAILURE, "no AWS region; pass --region, or set AWS_REGION, or a region in your profile"
    if isinstance(exc, InvalidRegionError):
        return BAD_INPUT, f"{_text(exc)}; pass --region as e.g. eu-west-1"
    if isinstance(exc, ProfileNotFound):
        return AWS_FAILURE, f"{_text(exc)}; check --profile / AWS_PROFILE against ~/.aws/config"
    if isinstance(exc, ConnectionError):  # botocore's: EndpointConnectionError, timeouts, proxy, TLS
        return AWS_FAILURE, (
            f"cannot reach AWS: {_text(exc)}; check the network (HTTPS_PROXY if you need a proxy), "
            "--region, and AWS_ENDPOINT_URL if it is set"
        )
    if isinstance(exc, HTTPClientError):  # read timeouts, connections closed mid-answer
        return AWS_FAILURE, f"AWS did not answer: {_text(exc)}; check the network and run it again"
    if isinstance(exc, ParamValidationError):
        message = _text(exc)
        fix = ROLE_FIX if "ExecutionRoleArn" in message else "check the option values"
        return BAD_INPUT, f"{message}; {fix}"
    if isinstance(exc, WaiterError):
        return AWS_FAILURE, f"{_text(exc)}; check the resource in the console or describe it"
    if isinstance(exc, (BotoCoreError, Boto3Error)):
        return AWS_FAILURE, _text(exc)
    if isinstance(exc, BrokenPipeError):
        return AWS_FAILURE, "the output was closed before the result was written (broken pipe)"
    if isinstance(exc, OSError):
        return BAD_INPUT, _os_error(exc)
    if isinstance(exc, ValueError) and str(exc).startswith("Invalid endpoint:"):
        return BAD_INPUT, f"{exc}; AWS_ENDPOINT_URL must be a URL such as https://HOST:PORT"
    return AWS_FAILURE, (
        f"unexpected {type(exc).__name__}: {_text(exc) or '(no message)'} (run with --debug for the traceback)"
    )


def _text(exc: BaseException) -> str:
    text = one_line(exc)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _upload_failure(exc: S3UploadFailedError) -> str:
    match = _UPLOAD.match(str(exc))
    cause = exc.__cause__ or exc.__context__
    if match is None:
        if isinstance(cause, ClientError):
            return _client_error(cause, what="S3 upload")
        return f"S3 upload failed: {_text(exc)}"
    bucket = match["bucket"]
    what = f"upload of {match['file']} to s3://{bucket}/{match['key']}"
    if isinstance(cause, ClientError):
        return _client_error(cause, what=what, bucket=bucket, upload=True)
    return f"{what} failed: {one_line(match['why'])}"


def _client_error(
    exc: ClientError, *, what: str | None = None, bucket: str | None = None, upload: bool = False, role=None
) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    message = one_line(error.get("Message") or "")
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    operation = exc.operation_name
    if what:
        head = f"{what} failed ({operation}, {code})"
    elif code in ACCESS_CODES:
        head = f"permission denied for {operation} ({code})"
    elif code in CREDENTIAL_CODES or code in EXPIRED_CODES:
        head = f"AWS refused the credentials for {operation} ({code})"
    else:
        head = f"{operation} failed ({code})"
    bucket = error.get("BucketName") or bucket
    if upload and str(status) == "404" and message in ("", "Not Found"):  # HeadBucket has no body
        message = f"bucket {bucket} does not exist"
    fix = _fix(code, message, status, bucket=bucket, upload=upload, role=role)
    if not message:
        message = f"HTTP {status}" if status else "no message"
    if fix:
        return f"{head}: {message.rstrip('.')}; {fix}"
    return f"{head}: {message}"


def _fix(code: str, message: str, status, *, bucket, upload: bool, role) -> str | None:
    if code in ACCESS_CODES:
        return ACCESS_FIX
    if code in EXPIRED_CODES:
        return "the credentials have expired: refresh them (aws sso login, or new session credentials)"
    if code in CREDENTIAL_CODES:
        return "check the credentials in use (aws sts get-caller-identity shows whose they are)"
    if code == "NoSuchBucket" or (upload and str(status) == "404"):
        name = bucket or "BUCKET"
        where = "pass an existing bucket to --upload" if upload else "use an S3 URI in an existing bucket"
        return f"create it (aws s3 mb s3://{name}) or {where}"
    if code in REGION_CODES:
        return (
            f"the bucket{' ' + bucket if bucket else ''} is in another region: pass --region with its region"
        )
    if code in THROTTLE_CODES:
        return (
            "AWS is throttling these requests (they were already retried with back-off): "
            "wait a minute and run it again, or ask for a higher request quota"
        )
    lowered = message.lower()
    if "could not find model data" in lowered or "could not access model data" in lowered:
        return (
            "check --model-data: upload the archive with `python -m deploy package MODEL_DIR "
            "--upload s3://BUCKET/PREFIX/`, in the endpoint's region, readable by the role"
        )
    if code == "NoSuchEntity" or _ROLE_MESSAGE.search(message):
        return f"{ROLE_FIX}, not {role}" if role and role not in message else ROLE_FIX
    if code == "ResourceLimitExceeded":
        return (
            "an account quota is reached: delete what you no longer use, or request an "
            "increase (Service Quotas, Amazon SageMaker)"
        )
    found = _NOT_FOUND.search(message)
    if found:
        return _NOT_FOUND_FIX[(found["kind"] or found["runtime"]).lower()]
    if code in ("ResourceNotFound", "ResourceNotFoundException", "ObjectNotDeployedException"):
        return "check the name and --region"
    if "already existing" in message:
        return "use `update` to change an existing endpoint, or `delete` it first, or pick another --name"
    if isinstance(status, int) and status >= 500:
        return "a failure on AWS's side: run it again later"
    return None


def _os_error(exc: OSError) -> str:
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    reason = exc.strerror or _text(exc)
    what = " -> ".join(paths) if paths else "a local file"
    fix = _OS_FIX.get(exc.errno)
    return f"{what}: {reason}; {fix}" if fix else f"{what}: {reason}"
