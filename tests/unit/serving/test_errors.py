"""The error table (serving/errors.py): one body shape, one status per error type, and nginx's own
error pages rendered from it."""

from __future__ import annotations

import json
import re

import pytest

from qa import errors as qa_errors
from serving import nginx
from serving.errors import NGINX_PAGES, QA_STATUS, TYPES, BadRequest, error_response
from serving.settings import Settings


def test_every_qa_error_type_has_a_status_in_the_table():
    kinds = {
        cls
        for cls in vars(qa_errors).values()
        if isinstance(cls, type) and issubclass(cls, qa_errors.QAError)
    }
    assert kinds - {qa_errors.QAError} == set(QA_STATUS)
    assert all(status in TYPES for status in QA_STATUS.values())


@pytest.mark.parametrize(
    "kind, status",
    sorted(QA_STATUS.items(), key=lambda kv: kv[1]),
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_a_qa_error_becomes_its_status_and_the_one_body(kind, status):
    error = (
        kind("the field x must be y") if kind is not qa_errors.Overloaded else kind("full", retry_after_s=4)
    )
    got, headers, body = error_response(error)
    assert got == status
    assert json.loads(body) == {"code": status, "type": TYPES[status], "message": error.message}
    assert headers == ({"Retry-After": "4"} if kind is qa_errors.Overloaded else {})


def test_an_unexpected_error_is_a_500_that_names_the_request_not_the_error():
    status, _, body = error_response(KeyError("/opt/secret/path"), request_id="rid-9")
    decoded = json.loads(body)
    assert status == 500 and decoded["type"] == "InternalServerError"
    assert "rid-9" in decoded["message"] and "secret" not in decoded["message"]


def test_a_serving_error_keeps_its_headers():
    status, headers, body = error_response(BadRequest("no", headers={"X-A": "1"}))
    assert (status, headers, json.loads(body)["type"]) == (400, {"X-A": "1"}, "BadRequest")


def test_nginx_error_pages_are_rendered_from_the_table(tmp_path):
    conf = nginx.render(Settings(run_dir=tmp_path, max_payload_mb=3, request_timeout_s=10))
    pages = dict(re.findall(r"location = /__error/(\d+) \{[^']*return (\d+) '", conf))
    bodies = dict(re.findall(r"location = /__error/(\d+) \{[^']*'(.*)\\n'; \}", conf))
    assert set(map(int, pages)) == set(NGINX_PAGES)
    for code, (status, _) in NGINX_PAGES.items():
        assert int(pages[str(code)]) == status
        assert f"error_page {code} /__error/{code};" in conf
        body = json.loads(bodies[str(code)])
        assert body["code"] == status and body["type"] == TYPES[status] and body["message"]
    assert "3 MB" in json.loads(bodies["413"])["message"]
    assert "15 s" in json.loads(bodies["504"])["message"]  # the app's budget plus nginx's margin
    assert "add_header Retry-After" in conf.split("location = /__error/503")[1].split("}")[0]
