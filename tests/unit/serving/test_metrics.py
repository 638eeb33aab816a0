"""The per-request line, its two formats, and the CloudWatch embedded-metric-format records."""

from __future__ import annotations

import io
import json
import logging

from emf import check_emf

from qa.accounting import RequestAccount
from serving import logs, metrics


def account() -> RequestAccount:
    a = RequestAccount(items=1, windows=2, tokens=40, submitted=10.0)
    a.rode(2, 10.004, 10.020)
    a.rode(1, 10.021, 10.030)
    a.add("parse", 0.001)
    a.add("decode", 0.002)
    return a


def test_phases_come_from_the_account():
    phases = metrics.phase_seconds(account(), 0.05)
    assert list(phases) == ["parse", "queue", "forward", "decode", "total"]
    assert round(phases["queue"], 6) == 0.004 and round(phases["forward"], 6) == 0.026


def test_emf_records_validate_and_name_their_values(capsys):
    metrics.request_served(
        account(), 200, 0.05, request_id="r1", inference_id=None, error=None, emf="QAServing"
    )
    record = json.loads(capsys.readouterr().out.strip())
    check_emf(record)
    assert record["Latency"] == 50.0 and record["Errors"] == 0 and record["Status"] == "200"


def test_without_a_namespace_no_emf_line(capsys):
    metrics.request_served(account(), 200, 0.05, request_id="r1", inference_id=None, error=None, emf=None)
    assert capsys.readouterr().out == ""


def line(log_format: str) -> str:
    stream = io.StringIO()
    logs.configure(logging.INFO, stream=stream, log_format=log_format)
    try:
        metrics.request_served(
            account(), 413, 0.05, request_id="r9", inference_id="sm-9", error="too big", emf=None
        )
    finally:
        logs.configure(logging.WARNING)
    return stream.getvalue().strip()


def test_the_request_line_in_json_has_every_field_at_the_top():
    record = json.loads(line("json"))
    assert record["logger"] == "serving.requests" and record["level"] == "INFO"
    assert (record["status"], record["items"], record["windows"], record["tokens"]) == (413, 1, 2, 40)
    assert (
        record["batch_sizes"] == [2, 1] and record["inference_id"] == "sm-9" and record["error"] == "too big"
    )
    assert {"parse_ms", "queue_ms", "forward_ms", "decode_ms", "total_ms"} <= set(record)


def test_the_request_line_in_text_carries_the_fields_as_pairs():
    text = line("text")
    assert "serving.requests: POST /invocations 413 in 50.0 ms" in text
    assert "batch_sizes=2,1" in text and 'error="too big"' in text and "total_ms=50.0" in text


def test_a_server_failure_is_a_warning_a_client_error_is_info(caplog):
    with caplog.at_level(logging.INFO, logger="serving.requests"):
        for status in (400, 503):
            metrics.request_served(
                account(), status, 0.01, request_id="r", inference_id=None, error="e", emf=None
            )
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING"]


def test_the_emf_builder_names_its_dimensions_metrics_and_properties():
    from serving.emf import emf_line

    record = json.loads(emf_line("NS", {"Model": "m"}, {"Held": (5, "Bytes")}, {"Note": "x"}))
    check_emf(record)
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive == {
        "Namespace": "NS",
        "Dimensions": [["Model"]],
        "Metrics": [{"Name": "Held", "Unit": "Bytes"}],
    }
    assert (record["Model"], record["Held"], record["Note"]) == ("m", 5, "x")
