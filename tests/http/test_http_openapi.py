"""docs/openapi.yaml against the live stack: the description is a valid OpenAPI document, and
schemathesis's generated requests (the document's examples, its coverage cases: boundary values,
missing and unknown keys, other content types, undeclared methods; then fuzzing with valid and
invalid data) get only documented statuses, content types, headers and bodies, and never a 5xx.

One test per operation and target (the `server` fixture: host and container), at most MAX_EXAMPLES
fuzzed examples each, a fixed seed and no example database, so a run is reproducible and leaves no
`.hypothesis` directory. All traffic goes to the fixture's 127.0.0.1 URL."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis_home
import pytest
import schemathesis
from http_checks import assert_error
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

hypothesis_home.keep_out_of_the_tree()

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
MAX_EXAMPLES = 25
SEED = 20261201
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    unsupported_method,
    allow_header_conformance,
]


@schemathesis.serializer("application/jsonlines")
def _jsonlines_body(ctx, value) -> bytes:
    """The document describes jsonlines bodies as text; a negative case may be any JSON value."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        value = json.dumps(value)
    return value.encode("utf-8", "surrogatepass")


@schemathesis.deserializer("application/jsonlines")
def _jsonlines_answer(ctx, response) -> list:
    """A jsonlines answer as the list of its lines' values, for the schema's `items`; each line
    must be compact JSON ending with a newline."""
    text = response.content.decode("utf-8")
    if not text.endswith("\n"):
        raise ValueError(f"a jsonlines answer must end with a newline: {text[-80:]!r}")
    return [json.loads(line) for line in text[:-1].split("\n")]


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "request-timeout": 30,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "phases": {
                "examples": {"enabled": True},
                "fuzzing": {"enabled": True},
                # Boundary values, missing and unknown keys, other content types, and each undeclared
                # method of GET PUT POST DELETE OPTIONS PATCH TRACE QUERY (405 with Allow).
                "coverage": {"enabled": True},
                "stateful": {"enabled": False},
            },
        }
    )


def test_openapi_document_is_valid():
    document, _ = read_from_filename(str(SPEC))
    validate(document)
    assert document["paths"].keys() == {"/ping", "/invocations", "/execution-parameters", "/metrics"}


# Loaded at import, without a base URL: each case is sent to the `server` fixture's URL, known only
# once the stack runs. (schemathesis.pytest.from_fixture, the lazy loader, would take it from a
# fixture, but 4.32.5's sets `Function._nodeid`, which pytest 9.2 no longer has.)
schema = schemathesis.openapi.from_path(SPEC, config=_config())


@schema.parametrize()
def test_stack_conforms_to_openapi(case, server):
    base_url = server.base_url
    assert base_url.startswith("http://127.0.0.1:"), base_url  # loopback only
    response = case.call_and_validate(base_url=base_url, checks=CHECKS)
    assert response.request.url.startswith(base_url + "/"), response.request.url


# ---- statuses the generated cases do not reach --------------------------------------------------------


@pytest.mark.parametrize("path", ["/ping", "/invocations", "/execution-parameters", "/metrics"])
def test_trace_is_a_405_with_allow(client, path):
    """nginx refuses TRACE itself; its 405 still lists what the route serves (RFC 9110)."""
    response = client.request("TRACE", path)
    assert_error(response, 405)
    assert response.headers.get("Allow"), dict(response.headers)


@pytest.mark.parametrize(
    "charset, body",
    [
        ("base64", b'{"question": "Who built it?", "context": "Ada built it."}'),
        ("idna", b"xn--"),
        ("undefined", b"{}"),
    ],
    ids=["base64", "idna", "undefined"],
)
def test_a_charset_that_cannot_decode_text_is_a_4xx(client, charset, body):
    """The document's 415 (unknown charset) or 400 (undecodable body), not a 500: a codec that is not
    a text encoding, or whose decoder fails with a bare UnicodeError."""
    response = client.invoke(body, content_type=f"application/json; charset={charset}")
    assert response.status_code in (400, 415), response.text
    assert_error(response, response.status_code)
