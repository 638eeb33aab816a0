"""One line for every failure `python -m deploy` can meet: what failed, AWS's message or the OS
error, and how to fix it. `cli.main` is the one place that catches; this module only words it.

Each line reads `<what failed>: <why>; <how to fix>`, with an exit code: 1 for AWS and wait
failures (and anything unexpected), 2 for bad options or inputs, local files included. An AWS
error is worded from its operation, code and message; the fix is named only for the failures
in FIXES, the ones a newcomer meets and cannot read the fix off the message.
"""

from __future__ import annotations

import errno

from boto3.exceptions import Boto3Error, S3UploadFailedError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)

from deploy.package import PackageError
from deploy.resources import ROLE_FIX, RequestError
from deploy.waiting import WaitError

AWS_FAILURE = 1
BAD_INPUT = 2
MAX_MESSAGE = 500  # characters of a message kept (some services answer with whole HTML pages)

ACCESS_CODES = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")
CREDENTIAL_CODES = ("UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch")
EXPIRED_CODES = ("ExpiredToken", "ExpiredTokenException", "RequestExpired")
THROTTLE_CODES = ("Throttling", "ThrottlingException", "TooManyRequestsException", "SlowDown")
VALIDATION = ("ValidationException",)

ACCESS_FIX = "check the IAM policy of the credentials in use (and the execution role passed with --role)"
CREDENTIALS_FIX = (
    "configure AWS credentials: aws configure, or AWS_PROFILE / AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or run where a role is attached"
)
ENDPOINT_FIX = "check --name and --region (aws sagemaker list-endpoints)"

# The fixes worth naming: (error codes, a piece of the message or "" for any, the fix). The first
# match wins, so a longer piece goes before a shorter one it contains. {bucket} is the S3 bucket.
FIXES: list[tuple[tuple[str, ...], str, str]] = [
    (ACCESS_CODES, "", ACCESS_FIX),
    (
        EXPIRED_CODES,
        "",
        "the credentials have expired: refresh them (aws sso login, or new session credentials)",
    ),
    (CREDENTIAL_CODES, "", "check the credentials in use (aws sts get-caller-identity shows whose they are)"),
    (
        THROTTLE_CODES,
        "",
        "AWS is throttling these requests (they were already retried with back-off): "
        "wait a minute and run it again, or ask for a higher request quota",
    ),
    (
        ("ResourceLimitExceeded",),
        "",
        "an account quota is reached: delete what you no longer use, or request an "
        "increase (Service Quotas, Amazon SageMaker)",
    ),
    (("NoSuchEntity",), "", ROLE_FIX),
    (VALIDATION, "assume role", ROLE_FIX),
    (
        VALIDATION,
        "model data",  # "Could not find model data at ...", "Could not access model data at ..."
        "check --model-data: upload the archive with `python -m deploy package MODEL_DIR "
        "--upload s3://BUCKET/PREFIX/`, in the endpoint's region, readable by the role",
    ),
    (
        VALIDATION + ("ImageNotFoundException",),
        "image",  # "Requested image ... not found", ECR's ImageNotFoundException
        "check --image: push it to ECR first, in the endpoint's region, readable by the role",
    ),
    (
        VALIDATION,
        "already existing",
        "use `update` to change an existing endpoint, or `delete` it first, or pick another --name",
    ),
    (
        VALIDATION,
        "could not find endpoint configuration",
        "check --endpoint-config and --region (aws sagemaker list-endpoint-configs)",
    ),
    (VALIDATION, "could not find endpoint", ENDPOINT_FIX),
    (
        VALIDATION,
        "could not find model",
        "check the model name (--model) and --region (aws sagemaker list-models)",
    ),
    (("ValidationError",), "not found", ENDPOINT_FIX),  # InvokeEndpoint: "Endpoint X of account Y not found"
    (("NoSuchBucket",), "", "create it (aws s3 mb s3://{bucket}) or use an S3 URI in an existing bucket"),
]
UPLOAD_BUCKET_FIX = "create it (aws s3 mb s3://{bucket}) or pass an existing bucket to --upload"

# Failures outside AWS's answers: (exception types, exit code, the line; {text} is the exception's).
EXCEPTIONS: list[tuple[tuple[type[BaseException], ...], int, str]] = [
    ((RequestError, PackageError), BAD_INPUT, "{text}"),
    ((WaitError,), AWS_FAILURE, "{text}"),
    (
        (NoCredentialsError, PartialCredentialsError),
        AWS_FAILURE,
        "no usable AWS credentials ({text}); " + CREDENTIALS_FIX,
    ),
    ((SSOError, TokenRetrievalError), AWS_FAILURE, "AWS SSO login needed ({text}); run aws sso login"),
    (
        (NoRegionError,),
        AWS_FAILURE,
        "no AWS region; pass --region, or set AWS_REGION, or a region in your profile",
    ),
    ((InvalidRegionError,), BAD_INPUT, "{text}; pass --region as e.g. eu-west-1"),
    ((ProfileNotFound,), AWS_FAILURE, "{text}; check --profile / AWS_PROFILE against ~/.aws/config"),
    (
        (ConnectionError,),  # botocore's: EndpointConnectionError, timeouts, proxy, TLS
        AWS_FAILURE,
        "cannot reach AWS: {text}; check the network (HTTPS_PROXY if you need a proxy), --region, "
        "and AWS_ENDPOINT_URL if it is set",
    ),
    ((BotoCoreError, Boto3Error), AWS_FAILURE, "{text}"),
    ((BrokenPipeError,), AWS_FAILURE, "the output was closed before the result was written (broken pipe)"),
]
OS_FIXES = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.ENOSPC: "free some disk space, or write elsewhere (--output)",
}


def describe(exc: BaseException, role: str | None = None) -> tuple[int, str]:
    """(exit code, one line: what failed, why, how to fix) for any exception.

    `role` is the --role given, to name it when SageMaker refuses a role without naming it."""
    code, line = _describe(exc, role)
    return code, one_line(line).replace(".; ", "; ")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _describe(exc: BaseException, role: str | None) -> tuple[int, str]:
    if isinstance(exc, S3UploadFailedError):
        return AWS_FAILURE, _upload_failure(exc)
    if isinstance(exc, ClientError):
        return AWS_FAILURE, _client_error(exc, role=role)
    if isinstance(exc, ParamValidationError):
        fix = ROLE_FIX if "ExecutionRoleArn" in str(exc) else "check the option values"
        return BAD_INPUT, f"{_text(exc)}; {fix}"
    for types, code, line in EXCEPTIONS:
        if isinstance(exc, types):
            return code, line.format(text=_text(exc))
    if isinstance(exc, OSError):
        return BAD_INPUT, _os_error(exc)
    return AWS_FAILURE, (
        f"unexpected {type(exc).__name__}: {_text(exc) or '(no message)'} (run with --debug for the traceback)"
    )


def _text(exc: BaseException | str) -> str:
    text = one_line(exc)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _upload_failure(exc: S3UploadFailedError) -> str:
    """deploy.package names the archive and its target on the error (`exc.upload`)."""
    archive, bucket, key = getattr(exc, "upload", (None, None, None))
    what = f"upload of {archive} to s3://{bucket}/{key}" if archive else "S3 upload"
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ClientError):
        return _client_error(cause, what=what, bucket=bucket, upload=True)
    return f"{what} failed: {_text(exc)}"


def _client_error(
    exc: ClientError, *, what: str | None = None, bucket: str | None = None, upload: bool = False, role=None
) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    message = _text(error.get("Message") or "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    bucket = error.get("BucketName") or bucket
    operation = exc.operation_name
    if what:
        head = f"{what} failed ({operation}, {code})"
    elif code in ACCESS_CODES:
        head = f"permission denied for {operation} ({code})"
    elif code in CREDENTIAL_CODES + EXPIRED_CODES:
        head = f"AWS refused the credentials for {operation} ({code})"
    else:
        head = f"{operation} failed ({code})"
    if upload and code in ("404", "NoSuchBucket"):
        message = message if message not in ("", "Not Found") else f"bucket {bucket} does not exist"
        fix: str | None = UPLOAD_BUCKET_FIX
    else:
        fix = _fix(code, message, status, role)
    if not message:
        message = f"HTTP {status}" if status else "no message"
    if not fix:
        return f"{head}: {message}"
    return f"{head}: {message.rstrip('.')}; {fix.format(bucket=bucket or 'BUCKET')}"


def _fix(code: str, message: str, status, role: str | None) -> str | None:
    lowered = message.lower()
    for codes, piece, fix in FIXES:
        if code in codes and piece in lowered:
            if fix == ROLE_FIX and role and role not in message:
                return f"{ROLE_FIX}, not {role}"  # SageMaker's message does not say which role
            return fix
    if isinstance(status, int) and status >= 500:
        return "a failure on AWS's side: run it again later"
    return None


def _os_error(exc: OSError) -> str:
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    what = " -> ".join(paths) if paths else "a local file"
    fix = OS_FIXES.get(exc.errno or 0)
    reason = exc.strerror or _text(exc)
    return f"{what}: {reason}; {fix}" if fix else f"{what}: {reason}"
