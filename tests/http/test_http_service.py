"""Readiness, /execution-parameters, and concurrency over HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from http_checks import Client

QUESTIONS = [
    (
        "Where is the harbour?",
        "The old harbour lies south of the town, beside the fish market and the ferry pier.",
    ),
    ("Who wrote the letter?", "The letter was written by Maria Lindqvist in the winter of 1921 in Uppsala."),
    (
        "What colour is the door?",
        "Behind the bakery there is a narrow lane, and at its end a green door with a brass knocker.",
    ),
    (
        "When did the bridge open?",
        "Construction began in 1880; the bridge finally opened to traffic in May 1883.",
    ),
]
# Within what one worker serves at once (QA_THREADS_PER_WORKER, default 16): none waits, none is
# refused.
PARALLEL = 12
ROUNDS = 3


def body(index: int) -> dict:
    question, context = QUESTIONS[index % len(QUESTIONS)]
    return {"inputs": {"question": question, "context": context}, "parameters": {"top_k": 1 + index % 3}}


def test_ping_is_200_and_fast(client):
    started = time.monotonic()
    response = client.get("/ping")
    assert response.status_code == 200
    assert time.monotonic() - started < 2.0


def test_head_ping_answers_like_get_without_a_body(client):
    got, head = client.get("/ping"), client.request("HEAD", "/ping")
    assert head.status_code == got.status_code == 200
    assert head.content == b"" and head.headers["Content-Type"] == got.headers["Content-Type"]


def test_execution_parameters(client):
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    params = response.json()
    assert set(params) == {"MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"}
    assert params["BatchStrategy"] == "MULTI_RECORD"
    assert params["MaxPayloadInMB"] == 6
    assert isinstance(params["MaxConcurrentTransforms"], int) and params["MaxConcurrentTransforms"] >= 1


def test_parallel_requests_match_serial_answers(server, client):
    count = PARALLEL * ROUNDS
    serial = [client.invoke(body(i)).json() for i in range(count)]

    def call(i: int):
        c = Client(server.base_url)
        try:
            r = c.invoke(body(i))
            return r.status_code, r.json()
        finally:
            c.session.close()

    with ThreadPoolExecutor(PARALLEL) as pool:
        parallel = list(pool.map(call, range(count)))
    assert [status for status, _ in parallel] == [200] * count
    assert [answer for _, answer in parallel] == serial


def test_bad_requests_do_not_disturb_concurrent_good_ones(server, client):
    good_expected = client.invoke(body(0)).json()

    def call(i: int):
        c = Client(server.base_url)
        try:
            if i % 2:
                r = c.invoke(b'{"inputs": {"question": "", "context": 5}}')
                return "bad", r.status_code, r.json()
            r = c.invoke(body(0))
            return "good", r.status_code, r.json()
        finally:
            c.session.close()

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(call, range(PARALLEL * 2)))
    for kind, status, payload in results:
        if kind == "good":
            assert (status, payload) == (200, good_expected)
        else:
            assert status == 400 and payload["code"] == 400


def test_ping_answers_while_requests_run(server, client):
    long_context = " ".join(["The harbour lies south of the town near the fish market."] * 60)
    heavy = {"inputs": [{"question": "Where is the harbour?", "context": long_context}] * 4}

    def call(_):
        c = Client(server.base_url)
        try:
            return c.invoke(heavy).status_code
        finally:
            c.session.close()

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call, i) for i in range(4)]
        started = time.monotonic()
        ping = client.get("/ping")
        took = time.monotonic() - started
        statuses = [f.result() for f in futures]
    assert ping.status_code == 200
    assert took < 2.0, f"/ping took {took:.2f} s under load"
    assert statuses == [200] * 4
