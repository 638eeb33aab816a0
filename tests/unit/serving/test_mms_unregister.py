"""serving/mms_unregister.py against a stand-in for MMS's management API on 127.0.0.1: it waits
for the failed load to settle, then unregisters the model; it leaves alone a model MMS removed
itself, and says so when the model never settles."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving import mms_unregister


class FakeMMS:
    """GET /models/<name> answers `described` in turn (the last one again and again)."""

    def __init__(self, described: list[object]):
        self.described = described
        self.calls: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - the standard library's name
                fake.calls.append(("GET", self.path))
                body = fake.described.pop(0) if len(fake.described) > 1 else fake.described[0]
                self._answer(404 if body is None else 200, body or {"code": 404})

            def do_DELETE(self):  # noqa: N802
                fake.calls.append(("DELETE", self.path))
                fake.described = [None]
                self._answer(200, {"status": "unregistered"})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def model(min_workers: int, workers: list) -> dict:
    return {"modelName": "big model", "minWorkers": min_workers, "workers": workers}


@pytest.fixture
def mms(request):
    fake = FakeMMS(request.param)
    yield fake
    fake.close()


@pytest.mark.parametrize("mms", [[model(1, [{"status": "UNLOADING"}]), model(0, [])]], indirect=True)
def test_the_model_is_unregistered_once_the_failed_load_settles(mms):
    assert mms_unregister.main(["big model", str(mms.port)]) == 0
    assert mms.calls[0] == ("GET", "/models/big%20model")
    assert mms.calls[-1] == ("DELETE", "/models/big%20model")
    assert ("DELETE", "/models/big%20model") not in mms.calls[:2]  # not while a worker was left


@pytest.mark.parametrize("mms", [[None]], indirect=True)
def test_a_model_mms_removed_itself_is_left_alone(mms):
    assert mms_unregister.main(["big model", str(mms.port)]) == 0
    assert [method for method, _ in mms.calls] == ["GET"]


@pytest.mark.parametrize("mms", [[model(1, [{"status": "READY"}])]], indirect=True)
def test_a_model_that_never_settles_is_reported(mms, monkeypatch, capsys):
    monkeypatch.setattr(mms_unregister, "SETTLE_TIMEOUT_S", 0.3)
    assert mms_unregister.main(["big model", str(mms.port)]) == 1
    assert "DELETE" not in [method for method, _ in mms.calls]
    assert "still registered" in capsys.readouterr().out
