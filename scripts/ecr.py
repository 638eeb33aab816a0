"""The few Amazon ECR calls build.sh --push needs, through boto3, for machines without the aws CLI.

    python3 scripts/ecr.py account                      -> the account id (STS)
    python3 scripts/ecr.py ensure-repository NAME       -> "created" or "exists" (scan on push when created)
    python3 scripts/ecr.py login-password               -> the docker login password for the account's registry

Region and credentials come from the usual AWS places (AWS_REGION, AWS_PROFILE, ~/.aws, instance
role); AWS_ENDPOINT_URL points every call elsewhere (a local stand-in in the tests). Exit code 3
means no usable credentials; any other failure exits 1 with the service's message.
"""

from __future__ import annotations

import base64
import sys

EXIT_NO_CREDENTIALS = 3


def _account(session) -> str:
    return session.client("sts").get_caller_identity()["Account"]


def _ensure_repository(session, name: str) -> str:
    ecr = session.client("ecr")
    try:
        ecr.describe_repositories(repositoryNames=[name])
        return "exists"
    except ecr.exceptions.RepositoryNotFoundException:
        ecr.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": True})
        return "created"


def _login_password(session) -> str:
    data = session.client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    if user != "AWS":
        raise RuntimeError(f"unexpected ECR token user {user!r}")
    return password


def main(argv: list[str]) -> int:
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        print(
            "ecr.py: boto3 is not installed (pip install boto3), and neither is the aws CLI", file=sys.stderr
        )
        return 1
    if not argv or argv[0] not in {"account", "ensure-repository", "login-password"}:
        print(__doc__, file=sys.stderr)
        return 2
    session = boto3.session.Session()
    try:
        if argv[0] == "account":
            print(_account(session))
        elif argv[0] == "ensure-repository":
            print(_ensure_repository(session, argv[1]))
        else:
            print(_login_password(session))
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
        print(f"ecr.py: {exc}", file=sys.stderr)
        return EXIT_NO_CREDENTIALS
    except botocore.exceptions.NoRegionError:
        print("ecr.py: no AWS region: pass --region or set AWS_REGION", file=sys.stderr)
        return 1
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, RuntimeError) as exc:
        print(f"ecr.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
