"""Each subcommand against a real moto server: exactly the expected resources, with the
expected parameters, are created or removed. The CLI runs as a subprocess with
AWS_ENDPOINT_URL and dummy credentials, so its standard-configuration path is what is tested."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from deploy_testkit import IMAGE, REGION, ROLE, create_args, run_deploy

SUBCOMMANDS = ["package", "create", "update", "autoscale", "invoke", "batch", "delete"]


def inventory(aws) -> dict[str, set[str]]:
    sm = aws.client("sagemaker")
    aas = aws.client("application-autoscaling")
    return {
        "models": {m["ModelName"] for m in sm.list_models()["Models"]},
        "endpoint_configs": {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]},
        "endpoints": {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]},
        "transform_jobs": {j["TransformJobName"] for j in sm.list_transform_jobs()["TransformJobSummaries"]},
        "scalable_targets": {
            t["ResourceId"]
            for t in aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        },
        "scaling_policies": {
            p["PolicyName"]
            for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
        },
    }


def added(before: dict, after: dict) -> dict[str, set[str]]:
    return {kind: after[kind] - before[kind] for kind in after if after[kind] - before[kind]}


def removed(before: dict, after: dict) -> dict[str, set[str]]:
    return {kind: before[kind] - after[kind] for kind in before if before[kind] - after[kind]}


def deploy_ok(aws, *args: str) -> dict:
    proc = run_deploy(list(args), aws.env)
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout)


def create_endpoint(aws, name: str, *extra: str) -> dict:
    return deploy_ok(aws, "create", "--name", name, "--image", IMAGE, "--role", ROLE, "--poll", "0.2", *extra)


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_on_every_subcommand(command, offline):
    proc = run_deploy([command, "--help"] if command else ["--help"], offline)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m deploy")
    if command is None:
        assert all(sub in proc.stdout for sub in SUBCOMMANDS)


def test_package_builds_archive_and_uploads(aws, tmp_path):
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "distilbert"}')
    (model / "tokenizer.json").write_text("{}")
    (model / "code" / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    aws.client("s3").create_bucket(Bucket="models")
    out = deploy_ok(
        aws, "package", str(model), "--output", str(tmp_path / "model.tar.gz"), "--upload", "s3://models/qa/"
    )
    assert out["model_data"] == "s3://models/qa/model.tar.gz"
    assert out["files"] == ["code/inference.py", "config.json", "tokenizer.json"]
    s3 = aws.client("s3")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"]] == ["qa/model.tar.gz"]
    body = s3.get_object(Bucket="models", Key="qa/model.tar.gz")["Body"].read()
    assert body == (tmp_path / "model.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        assert tar.getnames() == ["code/inference.py", "config.json", "tokenizer.json"]


def test_package_with_graphs_made_by_the_image(aws, tmp_path):
    """--graphs-from-image runs the image's graph maker, then its precision report, under Docker
    (here a stand-in `docker` that writes what they would) and puts both in graphs/."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "distilbert"}')
    (model / "model.safetensors").write_bytes(b"\0" * 8)
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"question": "Who?", "context": "Ada."}\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in *:/out) out="${arg%:/out}";; esac; done\n'
        'case "$*" in\n'
        '  *precision-report*) echo "$*" > "$out/precision-report.json"; echo "| int8 | openvino |";;\n'
        '  *) echo "$*" > "$out/qa-int8-static-feed.xml"; echo bin > "$out/qa-int8-static-feed.bin";;\n'
        "esac\n"
    )
    (bin_dir / "docker").chmod(0o755)
    env = {**aws.env, "PATH": f"{bin_dir}{os.pathsep}{aws.env.get('PATH', os.defpath)}"}
    proc = run_deploy(
        [
            "package",
            str(model),
            "--output",
            str(tmp_path / "model.tar.gz"),
            "--graphs-from-image",
            "qa:7",
            "--precision",
            "int8",
            "--samples",
            str(samples),
        ],
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == [
        "config.json",
        "graphs/precision-report.json",
        "graphs/qa-int8-static-feed.bin",
        "graphs/qa-int8-static-feed.xml",
        "model.safetensors",
    ]
    assert "| int8 | openvino |" in proc.stderr  # the report's table is shown
    with tarfile.open(tmp_path / "model.tar.gz", "r:gz") as tar:
        made = tar.extractfile("graphs/qa-int8-static-feed.xml").read().decode()
        reported = tar.extractfile("graphs/precision-report.json").read().decode()
    assert (
        "qa:7 python -m qa.graphs export /opt/ml/model /out --precision int8 --samples /samples.jsonl" in made
    )
    assert f"{samples}:/samples.jsonl:ro" in made and "QA_GRAPH_CACHE_DIR=/out" in made
    assert "qa:7 precision-report /samples.jsonl --json /out/precision-report.json" in reported


def test_create_instance_endpoint(aws):
    before = inventory(aws)
    out = create_endpoint(
        aws,
        "qa",
        "--model-data",
        "s3://models/qa/model.tar.gz",
        "--instance-type",
        "ml.c5.2xlarge",
        "--instance-count",
        "2",
        "--env",
        "SAGEMAKER_MODEL_SERVER_WORKERS=2",
        "--env",
        "SAGEMAKER_CONTAINER_LOG_LEVEL=INFO",
        "--startup-timeout",
        "600",
    )
    stamped = out["model"]
    assert stamped.startswith("qa-") and out["endpoint_config"] == stamped
    assert out["status"] == "InService"
    assert added(before, inventory(aws)) == {
        "models": {stamped},
        "endpoint_configs": {stamped},
        "endpoints": {"qa"},
    }

    sm = aws.client("sagemaker")
    model = sm.describe_model(ModelName=stamped)
    assert model["ExecutionRoleArn"] == ROLE
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["ModelDataUrl"] == "s3://models/qa/model.tar.gz"
    assert container["Environment"] == {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "INFO",
    }
    [variant] = sm.describe_endpoint_config(EndpointConfigName=stamped)["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["ModelName"] == stamped
    assert variant["InstanceType"] == "ml.c5.2xlarge"
    assert variant["InitialInstanceCount"] == 2
    assert variant["InitialVariantWeight"] == 1.0
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 600
    assert "ServerlessConfig" not in variant
    endpoint = sm.describe_endpoint(EndpointName="qa")
    assert endpoint["EndpointConfigName"] == stamped


def test_create_serverless_endpoint_from_hub_model(aws):
    before = inventory(aws)
    out = create_endpoint(
        aws,
        "qa-serverless",
        "--hf-model-id",
        "distilbert/distilbert-base-uncased-distilled-squad",
        "--serverless-memory",
        "4096",
        "--serverless-concurrency",
        "5",
    )
    assert added(before, inventory(aws)) == {
        "models": {out["model"]},
        "endpoint_configs": {out["endpoint_config"]},
        "endpoints": {"qa-serverless"},
    }
    sm = aws.client("sagemaker")
    container = sm.describe_model(ModelName=out["model"])["PrimaryContainer"]
    assert "ModelDataUrl" not in container
    assert container["Environment"] == {"HF_MODEL_ID": "distilbert/distilbert-base-uncased-distilled-squad"}
    [variant] = sm.describe_endpoint_config(EndpointConfigName=out["endpoint_config"])["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 5}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant


def test_create_async_endpoint(aws):
    out = create_endpoint(
        aws,
        "qa-async",
        "--model-data",
        "s3://models/qa/model.tar.gz",
        "--async-output",
        "s3://answers/out/",
        "--async-failure",
        "s3://answers/failed/",
        "--async-max-concurrent",
        "4",
    )
    config = aws.client("sagemaker").describe_endpoint_config(EndpointConfigName=out["endpoint_config"])
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://answers/out/", "S3FailurePath": "s3://answers/failed/"},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.xlarge"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--serverless-memory", "3000"], "--serverless-memory must be one of"),
        (["--serverless-memory", "2048", "--async-output", "s3://a/b/"], "cannot be combined"),
        (["--env", "NOT VALID=1"], "--env 'NOT VALID=1'"),
    ],
)
def test_create_rejects_bad_options_before_any_call(aws, args, message):
    before = inventory(aws)
    proc = run_deploy(create_args(ROLE, *args), aws.env)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1
    assert inventory(aws) == before


def test_create_needs_model_data_or_hub_id(aws):
    proc = run_deploy(["create", "--name", "qa", "--image", IMAGE, "--role", ROLE], aws.env)
    assert proc.returncode == 2
    assert all(option in proc.stderr for option in ("--model-data", "--hf-model-id", "--model-in-image"))
    assert inventory(aws)["models"] == set()


def test_create_with_model_baked_into_image(aws):
    out = create_endpoint(aws, "qa", "--model-in-image")
    container = aws.client("sagemaker").describe_model(ModelName=out["model"])["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert "ModelDataUrl" not in container and not container.get("Environment")


def test_create_multi_model_endpoint(aws):
    out = create_endpoint(aws, "mme", "--multi-model", "--model-data", "s3://models/qa/")
    container = aws.client("sagemaker").describe_model(ModelName=out["model"])["PrimaryContainer"]
    assert (container["Mode"], container["ModelDataUrl"]) == ("MultiModel", "s3://models/qa/")
    # moto answers with a canned body; TargetModel reaching the container is SageMaker's part.
    proc = run_deploy(
        [
            "invoke",
            "--name",
            "mme",
            "--target-model",
            "squad.tar.gz",
            "--question",
            "Who?",
            "--context",
            "Ann did.",
        ],
        aws.env,
    )
    assert proc.returncode == 0, proc.stderr


def test_multi_model_needs_an_s3_prefix(aws):
    before = inventory(aws)
    proc = run_deploy(
        [
            "create",
            "--name",
            "mme",
            "--image",
            IMAGE,
            "--role",
            ROLE,
            "--multi-model",
            "--model-data",
            "s3://models/qa/model.tar.gz",
        ],
        aws.env,
    )
    assert proc.returncode == 2 and "s3://BUCKET/PREFIX/" in proc.stderr, proc.stderr
    assert inventory(aws) == before


def test_autoscale_target_tracking(aws):
    create_endpoint(aws, "qa", "--model-data", "s3://models/qa/model.tar.gz")
    before = inventory(aws)
    out = deploy_ok(
        aws,
        "autoscale",
        "--name",
        "qa",
        "--min",
        "2",
        "--max",
        "6",
        "--target",
        "120",
        "--scale-in-cooldown",
        "600",
        "--scale-out-cooldown",
        "30",
    )
    resource_id = "endpoint/qa/variant/AllTraffic"
    assert added(before, inventory(aws)) == {
        "scalable_targets": {resource_id},
        "scaling_policies": {out["policy"]},
    }
    aas = aws.client("application-autoscaling")
    [target] = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    [policy] = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["ResourceId"] == resource_id
    assert policy["PolicyType"] == "TargetTrackingScaling"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 120.0
    assert config["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    assert (config["ScaleInCooldown"], config["ScaleOutCooldown"]) == (600, 30)

    deploy_ok(aws, "autoscale", "--name", "qa", "--off")
    assert inventory(aws)["scalable_targets"] == set()


def test_autoscale_refuses_serverless(aws):
    create_endpoint(aws, "qa-sl", "--hf-model-id", "x/y", "--serverless-memory", "2048")
    proc = run_deploy(["autoscale", "--name", "qa-sl", "--max", "3"], aws.env)
    assert proc.returncode == 2 and "is serverless" in proc.stderr
    assert inventory(aws)["scalable_targets"] == set()


def test_invoke_sends_the_qa_request(aws):
    create_endpoint(aws, "qa", "--model-data", "s3://models/qa/model.tar.gz")
    # moto answers invoke_endpoint with a canned body; the container's answer is tested elsewhere.
    proc = run_deploy(
        ["invoke", "--name", "qa", "--question", "Who?", "--context", "Ann did.", "--param", "top_k=2"],
        aws.env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    proc = run_deploy(
        ["invoke", "--name", "qa", "--body-file", "-"],
        aws.env,
        stdin=json.dumps({"inputs": {"question": "Who?", "context": "Ann did."}}),
    )
    assert proc.returncode == 0, proc.stderr


def test_batch_transform_with_existing_model(aws):
    out = create_endpoint(aws, "qa", "--model-data", "s3://models/qa/model.tar.gz")
    before = inventory(aws)
    job = deploy_ok(
        aws,
        "batch",
        "--model",
        out["model"],
        "--input",
        "s3://data/requests/",
        "--output",
        "s3://data/answers/",
        "--instance-type",
        "ml.c5.xlarge",
        "--instance-count",
        "2",
        "--max-concurrent",
        "4",
        "--max-payload-mb",
        "6",
        "--job-name",
        "qa-nightly",
    )
    assert added(before, inventory(aws)) == {"transform_jobs": {"qa-nightly"}}
    described = aws.client("sagemaker").describe_transform_job(TransformJobName="qa-nightly")
    assert described["ModelName"] == out["model"] == job["model"]
    assert described["BatchStrategy"] == "MultiRecord"
    assert described["MaxPayloadInMB"] == 6
    assert described["MaxConcurrentTransforms"] == 4
    transform_input = described["TransformInput"]
    assert transform_input["SplitType"] == "Line"
    assert transform_input["ContentType"] == "application/jsonlines"
    assert transform_input["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": "s3://data/requests/",
    }
    assert described["TransformOutput"]["S3OutputPath"] == "s3://data/answers/"
    assert described["TransformOutput"]["Accept"] == "application/jsonlines"
    assert described["TransformOutput"]["AssembleWith"] == "Line"
    assert described["TransformResources"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 2}


def test_batch_creates_its_model(aws):
    before = inventory(aws)
    job = deploy_ok(
        aws,
        "batch",
        "--image",
        IMAGE,
        "--role",
        ROLE,
        "--model-data",
        "s3://models/qa/model.tar.gz",
        "--input",
        "s3://data/in/",
        "--output",
        "s3://data/out/",
    )
    assert job["model"].startswith("qa-batch-")
    assert added(before, inventory(aws)) == {
        "models": {job["model"]},
        "transform_jobs": {job["transform_job"]},
    }
    assert aws.client("sagemaker").describe_model(ModelName=job["model"])["ExecutionRoleArn"] == ROLE


def test_delete_removes_endpoint_config_model_and_scaling(aws):
    keep = create_endpoint(aws, "other", "--model-data", "s3://models/qa/model.tar.gz")
    out = create_endpoint(aws, "qa", "--model-data", "s3://models/qa/model.tar.gz")
    deploy_ok(aws, "autoscale", "--name", "qa", "--max", "3")
    before = inventory(aws)
    deleted = deploy_ok(aws, "delete", "--name", "qa")
    assert removed(before, inventory(aws)) == {
        "endpoints": {"qa"},
        "endpoint_configs": {out["endpoint_config"]},
        "models": {out["model"]},
        "scalable_targets": {"endpoint/qa/variant/AllTraffic"},
        "scaling_policies": {"qa-AllTraffic-invocations"},
    }
    assert deleted["models"] == [out["model"]]
    after = inventory(aws)
    assert after["endpoints"] == {"other"} and keep["model"] in after["models"]


def test_delete_keep_flags(aws):
    out = create_endpoint(aws, "qa", "--model-data", "s3://models/qa/model.tar.gz")
    before = inventory(aws)
    deploy_ok(aws, "delete", "--name", "qa", "--keep-model", "--keep-config")
    assert removed(before, inventory(aws)) == {"endpoints": {"qa"}}
    assert out["model"] in inventory(aws)["models"]


def test_delete_unknown_endpoint_is_one_line_error(aws):
    proc = run_deploy(["delete", "--name", "nowhere"], aws.env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: DescribeEndpoint failed (")
    assert proc.stderr.count("\n") == 1


def test_missing_credentials_is_one_line_error(offline):
    env = {**offline, "AWS_REGION": REGION}
    proc = run_deploy(["delete", "--name", "qa"], env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no usable AWS credentials")
    assert "; configure AWS credentials: aws configure, or AWS_PROFILE / AWS_ACCESS_KEY_ID" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_missing_region_is_one_line_error(offline):
    env = {**offline, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = run_deploy(["delete", "--name", "qa"], env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no AWS region") and proc.stderr.count("\n") == 1
