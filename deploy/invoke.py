"""Send one request to an endpoint (real-time, or async through S3) and return the answer."""

from __future__ import annotations

import json
from dataclasses import dataclass

from deploy.resources import RequestError


def build_body(*, question: str | None, context: str | None, body: str | None, parameters: dict) -> bytes:
    if body is not None:
        if question is not None or context is not None:
            raise RequestError("give --body/--body-file, or --question and --context, not both")
        if parameters:
            raise RequestError(
                '--param only goes with --question and --context: put "parameters" in the body yourself'
            )
        return body.encode("utf-8")
    if not question or not context:
        raise RequestError("give --question and --context, or --body / --body-file")
    request: dict = {"inputs": {"question": question, "context": context}}
    if parameters:
        request["parameters"] = parameters
    return json.dumps(request).encode("utf-8")


def parse_params(pairs: list[str] | None) -> dict:
    """key=value with JSON values where they parse (top_k=3 -> 3), strings otherwise."""
    params = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise RequestError(f"--param {pair!r}: expected key=value, e.g. top_k=3")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


@dataclass
class Target:
    """The endpoint a request goes to, and the media types it is sent and answered in."""

    name: str
    content_type: str = "application/json"
    accept: str = "application/json"

    def params(self) -> dict:
        return {"EndpointName": self.name, "ContentType": self.content_type, "Accept": self.accept}


def invoke(
    clients,
    target: Target,
    body: bytes,
    *,
    custom_attributes: str | None = None,
    target_model: str | None = None,
):
    """The decoded answer: parsed JSON when the endpoint answered JSON, else text."""
    args = {**target.params(), "Body": body}
    if custom_attributes:
        args["CustomAttributes"] = custom_attributes
    if target_model:
        args["TargetModel"] = target_model
    response = clients("sagemaker-runtime").invoke_endpoint(**args)
    payload = response["Body"].read().decode("utf-8")
    if "json" in response.get("ContentType", target.accept) and "jsonlines" not in target.accept:
        try:
            return json.loads(payload)
        except json.JSONDecodeError:
            return payload
    return payload


def invoke_async(clients, target: Target, input_location: str) -> dict:
    """Queue a request whose body already lies in S3; the answer lands under the async output path."""
    response = clients("sagemaker-runtime").invoke_endpoint_async(
        **target.params(), InputLocation=input_location
    )
    return {
        "inference_id": response.get("InferenceId"),
        "output": response.get("OutputLocation"),
        "failure": response.get("FailureLocation"),
    }
