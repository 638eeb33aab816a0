"""serving/logs.py's relay: lines other programs print (MMS's command-line tool, its JVM) in the
stack's JSON shape."""

from __future__ import annotations

import io
import json
import logging
import os
import threading

from serving import logs


def test_a_json_object_passes_as_it_is_and_any_other_line_becomes_one():
    ours = b'{"time": "t", "level": "INFO", "logger": "qa.loading", "message": "loaded"}\n'
    assert logs.as_json_line(ours, "multi-model-server", logging.INFO) == ours
    for raw in (
        b"Model server started.\n",
        b'{"not": "closed"\n',
        b"[1, 2]\n",
        b"\tat java.base/Foo(Foo.java:1)\r\n",
    ):
        record = json.loads(logs.as_json_line(raw, "multi-model-server", logging.WARNING))
        assert record["message"] == raw.decode().rstrip("\r\n")
        assert (record["logger"], record["level"], record["pid"]) == ("multi-model-server", "WARNING", None)
        assert record["time"].endswith("+00:00")


def test_undecodable_bytes_do_not_stop_the_line():
    record = json.loads(logs.as_json_line(b"caf\xe9\n", "x", logging.INFO))
    assert record["message"] == "caf\ufffd"


def test_the_relay_copies_every_line_until_the_writers_close_and_survives_a_broken_sink():
    read_fd, write_fd = os.pipe()
    sink = io.BytesIO()
    relay = threading.Thread(
        target=logs.relay_as_json_lines, args=(os.fdopen(read_fd, "rb"), sink, "mms", logging.INFO)
    )
    relay.start()
    with os.fdopen(write_fd, "wb") as writer:
        writer.write(b'{"a": 1}\nplain text\n\n')
    relay.join(timeout=5)
    assert not relay.is_alive()
    lines = sink.getvalue().decode().splitlines()
    assert lines[0] == '{"a": 1}' and json.loads(lines[1])["message"] == "plain text" and len(lines) == 2

    class Broken(io.RawIOBase):
        def write(self, data):
            raise OSError("stdout is gone")

    read_fd, write_fd = os.pipe()
    relay = threading.Thread(
        target=logs.relay_as_json_lines, args=(os.fdopen(read_fd, "rb"), Broken(), "mms", logging.INFO)
    )
    relay.start()
    with os.fdopen(write_fd, "wb") as writer:
        writer.write(b"line\n" * 20000)  # far more than a pipe holds: the writer must not block
    relay.join(timeout=5)
    assert not relay.is_alive()
