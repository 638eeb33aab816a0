"""Client and assertions shared by the HTTP suite (imported as `http_checks`)."""

from __future__ import annotations

import json

import requests

TIMEOUT_S = 30
ERROR_KEYS = {"code", "type", "message"}


class Client:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.session = requests.Session()

    def invoke(
        self, body, content_type: str | None = "application/json", accept: str | None = None, headers=None
    ):
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        if accept is not None:
            sent["Accept"] = accept
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        return self.session.post(f"{self.base_url}/invocations", data=body, headers=sent, timeout=TIMEOUT_S)

    def get(self, path: str, **kwargs):
        return self.session.get(f"{self.base_url}{path}", timeout=TIMEOUT_S, **kwargs)

    def request(self, method: str, path: str, **kwargs):
        return self.session.request(method, f"{self.base_url}{path}", timeout=TIMEOUT_S, **kwargs)


def assert_error(response: requests.Response, status: int, *fragments: str) -> dict:
    """The one error shape: JSON {"code", "type", "message"}, code == status, no traceback."""
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.text[:500]}"
    )
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["code"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    for fragment in fragments:
        assert fragment.lower() in body["message"].lower(), f"{fragment!r} not in {body['message']!r}"
    return body


def assert_answer(answer: dict, context: str) -> None:
    assert set(answer) == {"score", "start", "end", "answer"}, answer
    assert isinstance(answer["score"], float) and 0.0 <= answer["score"] <= 1.0
    assert isinstance(answer["start"], int) and isinstance(answer["end"], int)
    assert answer["answer"] == context[answer["start"] : answer["end"]]
