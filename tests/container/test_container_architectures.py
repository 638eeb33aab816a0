"""Every claimed architecture through the image, with its defaults (QA_BACKEND=auto): the golden
cases of tests/fixtures/golden/architectures.json (transformers 4.57.6's pipeline), sent as
/invocations requests, each answer equal. The image makes each model's graph at start-up, or
serves it with PyTorch when no graph can (Longformer), and logs why."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import requests

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

from golden_cases import answers_equal, load_architecture_cases, model_dir  # noqa: E402

pytestmark = pytest.mark.container

BY_MODEL: dict[str, list[dict]] = defaultdict(list)
for _case in load_architecture_cases():
    BY_MODEL[_case["model"]].append(_case)


@pytest.mark.parametrize("name", sorted(BY_MODEL))
def test_every_case_equals_the_reference_through_the_image(image: str, containers, name: str) -> None:
    target = containers(image, model_dir(name))
    wrong = []
    with requests.Session() as session:
        for case in BY_MODEL[name]:
            resp = session.post(f"{target.base_url}/invocations", json=case["request"], timeout=60)
            assert resp.status_code == 200, f"{case['id']}: {resp.status_code} {resp.text}"
            if not answers_equal(resp.json(), case["expected"]):
                wrong.append(f"{case['id']}: got {resp.text}, expected {json.dumps(case['expected'])}")
    assert wrong == []
    if name == "longformer-tiny":
        log = target.log_path.read_text(errors="replace")
        assert "LongformerForQuestionAnswering" in log and "serving it with PyTorch" in log
