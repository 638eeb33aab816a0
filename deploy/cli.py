"""`python -m deploy SUBCOMMAND ...`: argument parsing, dispatch, and one-line errors.

Results go to stdout as JSON (scriptable); progress goes to stderr. A failure ends with one
line on stderr, `error: <what failed>: <why>; <how to fix>` (deploy.errors words it), and no
traceback unless --debug. Exit codes: 0 done, 1 AWS or wait failure (or an unexpected error),
2 bad options or inputs (local files included), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from deploy import aws, endpoint, errors, invoke, package, resources, scaling, waiting
from deploy.batch import batch

DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
DEBUG_HELP = "on a failure, also show the Python traceback (after the one-line error)"


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("AWS configuration (default: the standard chain)")
    group.add_argument("--profile", help="named profile from ~/.aws/config (default: AWS_PROFILE)")
    group.add_argument("--region", help="AWS region (default: AWS_REGION or the profile's region)")
    # Also accepted after the subcommand; SUPPRESS keeps the subcommand from resetting a
    # --debug given before it.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return common


def _model_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--image",
        required=required,
        help="serving image URI in ECR (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG)",
    )
    group.add_argument("--model-data", help="s3://.../model.tar.gz from `deploy package`")
    group.add_argument(
        "--hf-model-id",
        help="load this Hub model at start-up instead "
        "(sets HF_MODEL_ID), e.g. distilbert/distilbert-base-uncased-distilled-squad",
    )
    group.add_argument(
        "--model-in-image",
        action="store_true",
        help="the image has a model baked in (build.sh --model/--model-id): no model data needed",
    )
    group.add_argument(
        "--role",
        required=required,
        help="execution role ARN that SageMaker assumes to pull the image and read the model data",
    )
    group.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="container environment, repeatable (e.g. SAGEMAKER_MODEL_SERVER_WORKERS=2)",
    )


def _capacity_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    group = parser.add_argument_group("capacity (instances, or serverless)")
    group.add_argument(
        "--instance-type",
        default=DEFAULT_INSTANCE_TYPE if defaults else None,
        help=f"instance type (default: {DEFAULT_INSTANCE_TYPE})" if defaults else "new instance type",
    )
    group.add_argument(
        "--instance-count",
        type=int,
        default=1 if defaults else None,
        help="initial instance count" + (" (default: 1)" if defaults else ""),
    )
    group.add_argument(
        "--serverless-memory",
        type=int,
        metavar="MB",
        help=f"serverless endpoint instead of instances: memory, one of "
        f"{', '.join(map(str, resources.SERVERLESS_MEMORY_MB))}",
    )
    group.add_argument(
        "--serverless-concurrency",
        type=int,
        metavar="N",
        help="serverless max concurrency, 1-200 (default: 1)",
    )
    group.add_argument(
        "--startup-timeout",
        type=int,
        metavar="SECONDS",
        help="container start-up health check timeout (instances only; raise it "
        "with --hf-model-id, the download counts)",
    )


def _wait_options(parser: argparse.ArgumentParser, *, timeout: int, poll: int) -> None:
    group = parser.add_argument_group("waiting")
    group.add_argument("--no-wait", action="store_true", help="return once the request is accepted")
    group.add_argument("--timeout", type=float, default=timeout, help=f"seconds (default: {timeout})")
    group.add_argument("--poll", type=float, default=poll, help=f"seconds between checks (default: {poll})")


def _transform_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "mini-batches (default: unset, so SageMaker takes the container's GET /execution-parameters)"
    )
    group.add_argument(
        "--max-payload-mb",
        type=int,
        metavar="MB",
        help="MaxPayloadInMB, 1-100 (default: the container's, sized to answer a mini-batch well "
        "inside the invocation timeout on its instance)",
    )
    group.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="MaxConcurrentTransforms (default: the container's workers)",
    )
    group.add_argument(
        "--batch-strategy",
        choices=resources.BATCH_STRATEGIES,
        help="BatchStrategy (default: the container's, MultiRecord; MultiRecord when "
        "--max-payload-mb or --max-concurrent is given)",
    )
    group.add_argument(
        "--invocation-timeout",
        type=int,
        metavar="SECONDS",
        help="ModelClientConfig.InvocationsTimeoutInSeconds, 1-3600 (default: SageMaker's 600); when "
        "batch creates the model it also sets the model's env SAGEMAKER_MODEL_SERVER_TIMEOUT to it, "
        "so the container's budget and mini-batch size match (with --model, that model's own stays)",
    )
    group.add_argument(
        "--invocation-retries",
        type=int,
        metavar="N",
        help="ModelClientConfig.InvocationsMaxRetries, 0-3 (default: SageMaker's 3)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy",
        description="Deploy the QA serving image to Amazon SageMaker.",
        epilog="Credentials and region come from the standard AWS chain; AWS_ENDPOINT_URL "
        "points every client at another endpoint (e.g. a local test stand-in).",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    common = _common()
    subcommands = (
        _package_parser,
        _create_parser,
        _update_parser,
        _autoscale_parser,
        _invoke_parser,
        _batch_parser,
        _delete_parser,
    )
    for add_subcommand in subcommands:  # in the order --help lists them
        add_subcommand(sub, common)
    return parser


# Each subcommand's line in `--help`, and the description its own --help opens with.
SUBCOMMAND_HELP = {
    "package": (
        "model dir (+ code/) -> model.tar.gz, optionally uploaded to S3",
        "Build model.tar.gz laid out as SageMaker extracts it into /opt/ml/model, and optionally upload it.",
    ),
    "create": (
        "model + endpoint config + endpoint",
        "Create a model, an endpoint config and an endpoint from an "
        "image URI and model data, and wait until it is InService.",
    ),
    "update": (
        "new endpoint config, no downtime",
        "Create a new endpoint config (and a new model when image, "
        "model data, role or env change) and update the endpoint to it. SageMaker "
        "updates blue/green: the old fleet serves until the new one is InService. "
        "The variant name is kept, so autoscaling stays attached.",
    ),
    "autoscale": (
        "target tracking on invocations per instance",
        "Register the endpoint variant with Application Auto Scaling "
        "and put a target-tracking policy on SageMakerVariantInvocationsPerInstance.",
    ),
    "invoke": (
        "send one request, print the answer",
        "Send a QA request to an endpoint and print the answer.",
    ),
    "batch": (
        "Batch Transform over JSON Lines in S3",
        "Start a Batch Transform job over JSON Lines files in S3 "
        "(SplitType Line, application/jsonlines): one request object per line in, one answer "
        'per line out, or an {"error": ...} line for a record that failed. Mini-batch size, '
        "concurrency and strategy are the container's (GET /execution-parameters: a mini-batch "
        "that fits its invocation budget) unless given. With --wait, the answered and failed "
        "records are counted from the .out files.",
    ),
    "delete": (
        "endpoint, its config and its models",
        "Deregister autoscaling, then delete the endpoint, its endpoint config and its models.",
    ),
}


def _subcommand(sub, common: argparse.ArgumentParser, runner):
    """A subcommand named after its runner (_run_NAME), with the common options."""
    name = runner.__name__.removeprefix("_run_")
    summary, description = SUBCOMMAND_HELP[name]
    parser = sub.add_parser(name, parents=[common], help=summary, description=description)
    parser.set_defaults(handler=runner)
    return parser


def _package_parser(sub, common: argparse.ArgumentParser) -> None:
    p = _subcommand(sub, common, _run_package)
    p.add_argument(
        "model_dir",
        type=Path,
        help="a save_pretrained directory (config.json, weights, "
        "tokenizer files), optionally with code/inference.py",
    )
    p.add_argument(
        "--code",
        type=Path,
        help="directory to put at code/ in the archive "
        "(inference.py, requirements.txt); replaces MODEL_DIR/code",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path(package.ARCHIVE_NAME),
        help="where to write the archive (default: ./model.tar.gz)",
    )
    p.add_argument("--upload", metavar="S3_URI", help="s3://bucket/prefix/ (or a full key) to upload to")
    p.add_argument(
        "--graphs-from-image",
        metavar="IMAGE",
        help="make the model's graphs with this "
        "serving image (the one you deploy; needs Docker) into graphs/, with the precision "
        "report beside them, so instances skip making them at start-up",
    )
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16", "int8"],
        choices=("fp32", "bf16", "int8"),
        help="precisions to make graphs for with --graphs-from-image (default: all)",
    )
    p.add_argument(
        "--samples",
        type=Path,
        help="with --graphs-from-image: your own requests to calibrate int8 on and to report on, as JSON "
        "Lines of request bodies or a labeled SQuAD file (exact match and F1 in the report); default: a "
        "built-in SQuAD-like corpus",
    )
    p.add_argument(
        "--no-precision-report",
        action="store_true",
        help="with --graphs-from-image: skip the precision report (it loads every precision)",
    )


def _create_parser(sub, common: argparse.ArgumentParser) -> None:
    p = _subcommand(sub, common, _run_create)
    p.add_argument(
        "--name", required=True, help="endpoint name; the model and endpoint config get NAME-<UTC time>"
    )
    _model_options(p, required=True)
    p.add_argument(
        "--multi-model",
        action="store_true",
        help="a multi-model endpoint: --model-data "
        "is the S3 prefix of the model.tar.gz files; pick one per request with "
        "`invoke --target-model`",
    )
    _capacity_options(p, defaults=True)
    group = p.add_argument_group("asynchronous inference")
    group.add_argument(
        "--async-output",
        metavar="S3_URI",
        help="make it an async endpoint writing answers under this S3 path",
    )
    group.add_argument("--async-failure", metavar="S3_URI", help="S3 path for async failures")
    group.add_argument(
        "--async-max-concurrent", type=int, metavar="N", help="async: concurrent invocations per instance"
    )
    _wait_options(p, timeout=1800, poll=15)


def _update_parser(sub, common: argparse.ArgumentParser) -> None:
    p = _subcommand(sub, common, _run_update)
    p.add_argument("--name", required=True, help="endpoint name")
    _model_options(p, required=False)
    _capacity_options(p, defaults=False)
    p.add_argument("--endpoint-config", help="switch to this existing endpoint config instead (roll back)")
    p.add_argument(
        "--delete-old",
        action="store_true",
        help="after success, delete the previous endpoint config and models no longer in use",
    )
    _wait_options(p, timeout=1800, poll=15)


def _autoscale_parser(sub, common: argparse.ArgumentParser) -> None:
    p = _subcommand(sub, common, _run_autoscale)
    p.add_argument("--name", required=True, help="endpoint name")
    p.add_argument("--variant", help="variant name (default: the endpoint's first variant)")
    p.add_argument("--min", type=int, default=1, dest="min_capacity", help="min instances (default: 1)")
    p.add_argument("--max", type=int, dest="max_capacity", help="max instances (required unless --off)")
    p.add_argument(
        "--target", type=float, default=70.0, help="invocations per instance per minute to hold (default: 70)"
    )
    p.add_argument("--scale-in-cooldown", type=int, default=300, help="seconds (default: 300)")
    p.add_argument("--scale-out-cooldown", type=int, default=60, help="seconds (default: 60)")
    p.add_argument("--off", action="store_true", help="deregister the variant instead")


def _invoke_parser(sub, common: argparse.ArgumentParser) -> None:
    p = _subcommand(sub, common, _run_invoke)
    p.add_argument("--name", required=True, help="endpoint name")
    p.add_argument("--question")
    p.add_argument("--context")
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="request parameter, repeatable (e.g. top_k=3, max_answer_len=30)",
    )
    p.add_argument("--body", help="the raw request body instead (JSON text)")
    p.add_argument("--body-file", type=Path, help="read the raw body from this file ('-': stdin)")
    p.add_argument(
        "--async-input",
        metavar="S3_URI",
        help="async endpoint: the request body already in S3; prints where the answer will land",
    )
    p.add_argument("--content-type", default="application/json")
    p.add_argument("--accept", default="application/json")
    p.add_argument("--custom-attributes", help="X-Amzn-SageMaker-Custom-Attributes value")
    p.add_argument(
        "--target-model", help="multi-model endpoint: the archive under its S3 prefix, e.g. squad-v1.tar.gz"
    )


def _batch_parser(sub, common: argparse.ArgumentParser) -> None:
    p = _subcommand(sub, common, _run_batch)
    p.add_argument(
        "--input", required=True, dest="input_uri", metavar="S3_URI", help="s3:// prefix of .jsonl files"
    )
    p.add_argument(
        "--output", required=True, dest="output_uri", metavar="S3_URI", help="s3:// prefix for the .out files"
    )
    p.add_argument(
        "--model",
        dest="model_name",
        help="an existing SageMaker model (e.g. the one "
        "`create` made); otherwise give --image/--role to create one",
    )
    p.add_argument("--job-name", help="transform job name (default: MODEL-<UTC time>)")
    _model_options(p, required=False)
    p.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE, help=f"default: {DEFAULT_INSTANCE_TYPE}")
    p.add_argument("--instance-count", type=int, default=1, help="default: 1")
    _transform_options(p)
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job to finish, then count its answered and failed records",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds (default: 3600)")
    p.add_argument("--poll", type=float, default=30, help="seconds between checks (default: 30)")


def _delete_parser(sub, common: argparse.ArgumentParser) -> None:
    p = _subcommand(sub, common, _run_delete)
    p.add_argument("--name", required=True, help="endpoint name")
    p.add_argument("--keep-config", action="store_true", help="keep the endpoint config")
    p.add_argument("--keep-model", action="store_true", help="keep the models")


def _model_spec(args) -> endpoint.ModelSpec:
    env = resources.parse_env(args.env)
    if args.hf_model_id:
        env["HF_MODEL_ID"] = args.hf_model_id
    return endpoint.ModelSpec(
        image=args.image,
        model_data=args.model_data,
        role=args.role,
        env=env,
        in_image=args.model_in_image,
        multi_model=getattr(args, "multi_model", False),
    )


def _endpoint_specs(args) -> tuple[endpoint.ModelSpec, endpoint.CapacitySpec, waiting.WaitSpec]:
    """create's and update's model, capacity and waiting, as given."""
    capacity = endpoint.CapacitySpec(
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        serverless_memory=args.serverless_memory,
        serverless_concurrency=args.serverless_concurrency,
        startup_timeout=args.startup_timeout,
    )
    wait = waiting.WaitSpec(wait=not args.no_wait, timeout=args.timeout, poll=args.poll)
    return _model_spec(args), capacity, wait


def _given(args, *names: str) -> dict:
    """The named options as keyword arguments: each option's dest is its parameter's name."""
    return {name: getattr(args, name) for name in names}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_package(args, clients) -> dict:
    if args.upload:
        package.check_bucket(clients("s3"), args.upload, args.output)
    with tempfile.TemporaryDirectory(prefix="qa-graphs-") as graphs_dir:
        graphs = {}
        if args.graphs_from_image:
            _log(f"making graphs ({', '.join(args.precision)}) with {args.graphs_from_image}")
            graphs = package.export_graphs(
                args.graphs_from_image,
                args.model_dir,
                Path(graphs_dir),
                args.precision,
                samples=args.samples,
                report=not args.no_precision_report,
                log=_log,
            )
        members = package.build_archive(args.model_dir, args.output, args.code, graphs)
    _log(f"{args.output}: {len(members)} files")
    result = {"archive": str(args.output), "files": members}
    if args.upload:
        result["model_data"] = package.upload(clients("s3"), args.output, args.upload)
        _log(f"uploaded: {result['model_data']}")
    return result


def _run_create(args, clients) -> dict:
    if args.serverless_memory is not None or args.serverless_concurrency is not None:
        args.instance_type = None
    asynchronous = _given(args, "async_output", "async_failure", "async_max_concurrent")
    return endpoint.create(clients, args.name, *_endpoint_specs(args), **asynchronous, log=_log)


def _run_update(args, clients) -> dict:
    specs = _endpoint_specs(args)
    return endpoint.update(
        clients, args.name, *specs, endpoint_config=args.endpoint_config, delete_old=args.delete_old, log=_log
    )


def _run_autoscale(args, clients) -> dict:
    if args.off:
        return scaling.remove_autoscaling(clients, args.name, variant=args.variant, log=_log)
    if args.max_capacity is None:
        raise resources.RequestError("autoscale needs --max (or --off)")
    policy = _given(
        args, "variant", "min_capacity", "max_capacity", "target", "scale_in_cooldown", "scale_out_cooldown"
    )
    return scaling.autoscale(clients, args.name, **policy, log=_log)


def _run_invoke(args, clients):
    target = invoke.Target(args.name, content_type=args.content_type, accept=args.accept)
    if args.async_input:
        return invoke.invoke_async(clients, target, args.async_input)
    body = invoke.build_body(
        question=args.question,
        context=args.context,
        body=_read_body(args.body_file) if args.body_file is not None else args.body,
        parameters=invoke.parse_params(args.param),
    )
    return invoke.invoke(
        clients, target, body, custom_attributes=args.custom_attributes, target_model=args.target_model
    )


def _read_body(path: Path) -> str:
    """--body-file's text ('-': stdin)."""
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise resources.RequestError(
            f"--body-file {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc


def _run_batch(args, clients) -> dict:
    job = resources.TransformSpec(**_given(args, *(field.name for field in fields(resources.TransformSpec))))
    return batch(
        clients,
        job,
        model_name=args.model_name,
        model=_model_spec(args),
        job_name=args.job_name,
        wait=waiting.WaitSpec(wait=args.wait, timeout=args.timeout, poll=args.poll),
        log=_log,
    )


def _run_delete(args, clients) -> dict:
    return endpoint.delete(
        clients, args.name, keep_config=args.keep_config, keep_model=args.keep_model, log=_log
    )


def main(argv: list[str] | None = None, clients=None, environ=os.environ) -> int:
    """Entry point. `clients` (service name -> boto3 client) is injectable for tests.

    The one place failures are caught: each becomes one `error:` line on stderr and an exit
    code (deploy.errors); with --debug the exception is raised again after that line.
    """
    args = build_parser().parse_args(argv)
    try:
        # AWS_REGION first, as the AWS CLI does: boto3 itself reads only AWS_DEFAULT_REGION.
        region = args.region or environ.get("AWS_REGION") or None
        clients = clients or aws.Clients(profile=args.profile, region=region)
        result = args.handler(args, clients)  # the subcommand's _run_NAME: what to print on stdout
        if isinstance(result, str):
            print(result)
        else:
            print(json.dumps(result, indent=2, ensure_ascii=False))
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("interrupted: requests already sent go on in AWS", file=sys.stderr)
        return 130
    except Exception as exc:
        try:
            code, line = errors.describe(exc, role=getattr(args, "role", None))
        except Exception:  # the wording must never hide the failure behind its own traceback
            message = " ".join(str(exc).split())
            code, line = 1, f"unexpected {type(exc).__name__}: {message} (run with --debug for the traceback)"
        detail = getattr(exc, "detail", None)
        if detail and isinstance(detail, str):
            print("\n".join(f"  {row}" for row in detail.splitlines()), file=sys.stderr)
        print(f"error: {line}", file=sys.stderr, flush=True)
        if getattr(args, "debug", False):
            raise
        if isinstance(exc, BrokenPipeError):
            _quiet_stdout()
        return code
    return 0


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
