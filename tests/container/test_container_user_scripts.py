"""Scripts written for the Hugging Face inference container, run unchanged in the image: each
script of tests/fixtures/user_scripts/ with the tiny model, each request its notebook would send,
and the answer the same script gave in the Hugging Face container's stack (its toolkit 2.6.0 with
transformers 4.57.6 under Multi Model Server: tests/fixtures/make_golden_user_scripts.py).

Equal means the same status, the same content type and the same JSON (scores within 1e-4
relative). One deliberate difference: an output_fn that returns `(body, content_type)` gets that
body and type, as the AWS inference toolkit defines it; the Hugging Face stack JSON-encodes the
tuple itself (a list of the body string and the type), which the check unwraps."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import requests

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

from golden_cases import model_dir  # noqa: E402

pytestmark = pytest.mark.container

SCRIPTS = json.loads((FIXTURES / "golden" / "user_scripts.json").read_text(encoding="utf-8"))["scripts"]
RETURNS_A_TUPLE = {"output_fn_tuple"}
REL_TOL = 1e-4


def same_json(got, expected) -> bool:
    if isinstance(expected, float) and not isinstance(expected, bool):
        return isinstance(got, (int, float)) and abs(got - expected) <= REL_TOL * abs(expected) + 1e-12
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and got.keys() == expected.keys()
            and all(same_json(got[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(same_json, got, expected))
    return got == expected


def model_with_script(script: dict, out: Path) -> Path:
    shutil.copytree(model_dir(script["model"]), out)
    shutil.copytree(
        FIXTURES / "user_scripts" / script["name"],
        out / "code",
        ignore=shutil.ignore_patterns("request.json"),
    )
    return out


def expected_answer(script: dict, expected: dict) -> tuple[str, object]:
    if script["name"] in RETURNS_A_TUPLE and expected["status"] == 200:
        body, content_type = expected["json"]
        return content_type, json.loads(body)
    return expected["content_type"], expected["json"]


@pytest.mark.parametrize("script", SCRIPTS, ids=[f"{s['name']}-{s['model']}" for s in SCRIPTS])
def test_the_script_answers_as_in_the_hugging_face_container(
    image: str, containers, tmp_path, script
) -> None:
    env = {k: v for k, v in script["env"].items() if k in ("HF_TASK", "SAGEMAKER_PROGRAM")}
    target = containers(image, model_with_script(script, tmp_path / "model"), env)
    wrong = []
    for number, request in enumerate(script["requests"]):
        headers = {"Content-Type": request["content_type"]}
        if request.get("accept"):
            headers["Accept"] = request["accept"]
        resp = requests.post(
            f"{target.base_url}/invocations",
            data=request["body"].encode("utf-8"),
            headers=headers,
            timeout=60,
        )
        expected = request["expected"]
        content_type, answer = expected_answer(script, expected)
        got_type = resp.headers.get("Content-Type", "").split(";")[0]
        if resp.status_code != expected["status"]:
            wrong.append(
                f"request {number}: status {resp.status_code} {resp.text[:300]}, expected {expected['status']}"
            )
        elif resp.status_code != 200:
            continue
        elif content_type == "text/csv":
            if got_type != content_type or not same_json(_csv_rows(resp.text), _csv_rows(expected["body"])):
                wrong.append(
                    f"request {number}: got {got_type} {resp.text[:300]}, expected {expected['body']:.300}"
                )
        elif got_type != content_type or not same_json(_parsed(resp), answer):
            wrong.append(
                f"request {number}: got {got_type} {resp.text[:300]}, expected {content_type} {answer!r:.300}"
            )
    assert wrong == []
    if script["name"] == "requirements_pin":
        log = target.log_path.read_text(errors="replace")
        assert "not installing 'transformers>=4.26,<5'" in log and "pipeline('question-answering')" in log


def _parsed(resp: requests.Response):
    return resp.json()


def _csv_rows(text: str) -> list:
    """CSV cells, numbers as floats, so scores compare within the tolerance."""

    def cell(value: str):
        try:
            return float(value) if "." in value else value
        except ValueError:
            return value

    return [[cell(value) for value in row] for row in csv.reader(io.StringIO(text))]
